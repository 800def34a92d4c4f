"""The benchmark table: ``python -m fastrnn bench``.

Times, side by side in one run, fastrnn's kernels against the NumPy reference and (when installed)
PyTorch at the same thread count: forward (inference) and training (forward + full backward,
input gradient included) for LSTM and GRU on the DeepBench-style shapes below, plus fastrnn's GEMM
against numpy's matmul on the input-projection shapes. FLOP convention: LSTM forward =
2*T*B*4H*(I+H), GRU the same with 3H, training = 3x forward; GEMM 2*M*N*K.

The machines this runs on are shared and noisy: fastrnn and torch are timed in alternating
blocks, so that load bursts hit both, and each of their figures is the median of its quietest
block (load only ever adds time); the NumPy reference and the GEMM table are medians over all
their runs. Read the ratios of one run, not absolute figures across runs. For numpy comparisons
unset OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for the command.

Each table states the machine's data caches and the FMA peak of the ISA path in use, measured at
the start of the run with the run's thread count (``backend.fma_peak``), and each fastrnn figure's
share of it. ``--isa avx2`` (or ``scalar``) runs fastrnn's narrower path and holds PyTorch to the
same instruction set (``ONEDNN_MAX_CPU_ISA``, ``ATEN_CPU_CAPABILITY``, set before torch is
imported), so that the AVX2 tier is measured at equal instruction sets on any x86 machine.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import time

import numpy as np

from ._cells import cell_spec

SHAPES = {  # name: (T, B, I, H)
    "small": (50, 32, 1, 20),
    "text": (256, 32, 100, 128),
    "medium": (100, 64, 256, 256),
    "large": (50, 64, 512, 1024),
    "latency": (100, 1, 128, 512),
}


def flops(cell, T, B, I, H, train):
    """DeepBench convention: forward 2*T*B*G*H*(I+H); training 3x forward."""
    f = 2.0 * T * B * cell_spec(cell).gates * H * (I + H)
    return 3.0 * f if train else f


def timeit(fn, min_time=0.5, min_runs=3, max_runs=50):
    """Median seconds of fn() after one warm-up call."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < min_time and len(times) < max_runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timeit_interleaved(fns, min_time=0.5, rounds=5, min_runs=3, with_fastest=False):
    """Seconds of each function, timed in alternating blocks (f1 block, f2 block, ..., repeated
    `rounds` times): the median of each block, then the smallest of these block medians. Load
    from other tenants of a shared machine only ever adds time and comes in bursts, so the
    quietest block is the best estimate of what each function costs, and every function gets the
    same treatment. Each block starts after a 20 ms pause and one untimed call: the thread pools
    of the other library (libgomp, OpenBLAS, torch's OpenMP) spin for a while after their last
    call and would otherwise steal the second core from the first calls of the block.

    With ``with_fastest`` it returns (block medians, fastest single call of each function): on a
    loaded machine the medians still carry the load, the fastest call is closest to the unloaded
    figure."""
    best = [math.inf for _ in fns]
    fastest = [math.inf for _ in fns]
    per_block = max(min_time / rounds, 0.0)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            time.sleep(0.02)
            fn()
            ts = []
            start = time.perf_counter()
            while len(ts) < min_runs or time.perf_counter() - start < per_block:
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            best[i] = min(best[i], statistics.median(ts))
            fastest[i] = min(fastest[i], min(ts))
    return (best, fastest) if with_fastest else best


def _problem(cell, T, B, I, H, seed=0):
    rng = np.random.default_rng(seed)
    G = cell_spec(cell).gates
    k = 1.0 / np.sqrt(H)
    p = {
        "x": rng.standard_normal((B, T, I)).astype(np.float32),
        "w_ih": rng.uniform(-k, k, (G * H, I)).astype(np.float32),
        "w_hh": rng.uniform(-k, k, (G * H, H)).astype(np.float32),
        "b_ih": rng.uniform(-k, k, G * H).astype(np.float32),
        "b_hh": rng.uniform(-k, k, G * H).astype(np.float32),
    }
    p["dy"] = rng.standard_normal((B, T, H)).astype(np.float32)
    return p


def _fr_calls(mod, cell, p):
    """(forward, train) closures for fastrnn.ops or fastrnn.reference."""
    x, wi, wh = p["x"], p["w_ih"], p["w_hh"]
    fwd = getattr(mod, f"{cell}_forward")
    bwd = getattr(mod, f"{cell}_backward")
    if len(cell_spec(cell).bias_names) == 2:  # GRU: b_ih and b_hh
        args = (x, wi, wh, p["b_ih"], p["b_hh"])
    else:  # one bias, torch's two summed
        args = (x, wi, wh, p["b_ih"] + p["b_hh"])

    def forward():
        return fwd(*args, training=False)

    def train():
        _y, _, cache = fwd(*args, training=True)
        return bwd(cache, p["dy"])

    return forward, train


def _torch_calls(torch, cell, p, T, B, I, H):
    mod = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](I, H, batch_first=True)
    with torch.no_grad():
        mod.weight_ih_l0.copy_(torch.from_numpy(p["w_ih"]))
        mod.weight_hh_l0.copy_(torch.from_numpy(p["w_hh"]))
        mod.bias_ih_l0.copy_(torch.from_numpy(p["b_ih"]))
        mod.bias_hh_l0.copy_(torch.from_numpy(p["b_hh"]))
    x = torch.from_numpy(p["x"])
    dy = torch.from_numpy(p["dy"])

    def forward():
        with torch.no_grad():
            return mod(x)

    def train():
        xg = x.detach().requires_grad_(True)
        mod.zero_grad(set_to_none=True)
        y, _ = mod(xg)
        y.backward(dy)
        return xg.grad

    return forward, train


# fastrnn's ISA path -> what holds PyTorch to the same instructions (oneDNN's RNNs and GEMMs,
# ATen's vectorised kernels); None: the native build, nothing to hold
TORCH_ISA_ENV = {
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    "scalar": {"ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default"},
}


def hold_isa(name):
    """Run fastrnn on ISA path ``name`` and hold PyTorch (if not imported yet) to the same
    instruction set; returns a note on what was held."""
    import sys

    from . import backend

    backend.set_isa(name)
    env = TORCH_ISA_ENV.get(name)
    if not env:
        return f"fastrnn ISA path {name}; torch native"
    if "torch" in sys.modules:
        return f"fastrnn ISA path {name}; torch NOT held (imported before the option was applied)"
    os.environ.update(env)
    return f"fastrnn ISA path {name}; torch held with " + " ".join(f"{k}={v}" for k, v in env.items())


def peak_line(peak_flops, threads):
    """The FMA peak line of the environment block."""
    from . import backend

    return (f"FMA peak of the {backend.isa()} path, {threads} thread(s), measured: {peak_flops / 1e9:.1f} GFLOP/s "
            "(independent FMA chains on registers; backend.fma_peak)")


def environment(threads):
    """Lines describing the machine and versions."""
    import fastrnn
    from fastrnn import backend

    lines = [f"date: {datetime.date.today().isoformat()}",
             f"machine: {platform.machine()}, {_cpu_name()}, {os.cpu_count()} logical CPUs; threads used: {threads}",
             f"caches: {backend._cache_line(backend.cache_info())}",
             f"fastrnn {fastrnn.__version__} (ISA path {fastrnn.isa()}), numpy {np.__version__}, "
             f"python {platform.python_version()}"]
    try:
        import torch

        cap = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", lambda: "unknown")()
        lines.append(f"torch {torch.__version__} (oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'}; "
                     f"ATen CPU capability {cap}; ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')})")
    except ImportError:
        lines.append("torch: not installed")
    try:
        from threadpoolctl import threadpool_info

        # the runs limit the BLAS to `threads` (threadpoolctl); this reports its own default beside it
        blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}; threads: {threads} in the "
                f"runs, {i.get('num_threads')} by default)"
                for i in threadpool_info() if i.get("user_api") == "blas"]
        lines.append("numpy BLAS: " + ("; ".join(blas) or "unknown"))
    except ImportError:
        lines.append("numpy BLAS: threadpoolctl not installed")
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            lines.append(f"note: {var}={os.environ[var]} is set (slows numpy's matmul)")
    return lines


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run(shapes, cells, threads, with_torch=True, with_reference=True, min_time=0.5, log=print, peak=None):
    """Run the table; returns a list of row dicts (``peak``: FLOP/s to state each figure's share of)."""
    import fastrnn
    from fastrnn import ops, reference

    fastrnn.set_num_threads(threads)
    torch = None
    if with_torch:
        try:
            import torch as _torch

            _torch.set_num_threads(threads)
            torch = _torch
        except ImportError:
            torch = None
    try:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=threads, user_api="blas")
    except ImportError:
        limiter = None
    rows = []
    for name in shapes:
        T, B, I, H = SHAPES[name]
        for cell in cells:
            p = _problem(cell, T, B, I, H)
            fr_f, fr_t = _fr_calls(ops, cell, p)
            rf = rt = tf = tt = None
            if with_reference:
                rf, rt = _fr_calls(reference, cell, p)
            if torch is not None:
                tf, tt = _torch_calls(torch, cell, p, T, B, I, H)
            for mode, fr_fn, t_fn, r_fn in (("forward", fr_f, tf, rf), ("train", fr_t, tt, rt)):
                row = {"shape": name, "T": T, "B": B, "I": I, "H": H, "cell": cell, "mode": mode}
                if t_fn is not None:  # fastrnn and torch in alternation
                    t_fr, t_t = timeit_interleaved([fr_fn, t_fn], min_time)
                    row["fastrnn_ms"], row["torch_ms"] = 1e3 * t_fr, 1e3 * t_t
                else:
                    row["fastrnn_ms"] = 1e3 * timeit(fr_fn, min_time)
                if r_fn is not None:
                    row["numpy_ms"] = 1e3 * timeit(r_fn, min_time, min_runs=1, max_runs=3)
                row["gflops"] = flops(cell, T, B, I, H, mode == "train") / (row["fastrnn_ms"] * 1e6)
                if peak:
                    row["peak_pct"] = 100.0 * row["gflops"] * 1e9 / peak
                rows.append(row)
                log(_format_row(row))
    if limiter is not None:
        limiter.restore_original_limits()
    return rows


def run_gemm(shapes, threads, min_time=0.3, log=print, peak=None):
    """fastrnn's GEMM vs numpy matmul on the input projections x[T*B, I] @ W_ih^T[I, 4H]."""
    import fastrnn
    from fastrnn import backend

    fastrnn.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=threads, user_api="blas")
    except ImportError:
        limiter = None
    core = backend.core()
    rows = []
    for name in shapes:
        T, B, I, H = SHAPES[name]
        M, K, N = T * B, I, cell_spec("lstm").gates * H  # the LSTM's input projection
        rng = np.random.default_rng(1)
        A = rng.standard_normal((M, K)).astype(np.float32)
        W = rng.standard_normal((N, K)).astype(np.float32)
        # Not interleaved: OpenBLAS's threads keep polling for ~0.1 s after a call, which would
        # take the second core from the GEMM timed right after it; a pause separates the two.
        time.sleep(0.3)
        t_fr = timeit(lambda A=A, W=W: core.gemm(A, W, False, True), min_time)
        time.sleep(0.3)
        t_np = timeit(lambda A=A, W=W: A @ W.T, min_time)
        f = 2.0 * M * N * K
        row = {"shape": name, "M": M, "N": N, "K": K, "fastrnn_gflops": f / t_fr / 1e9, "numpy_gflops": f / t_np / 1e9}
        if peak:
            row["peak_pct"] = 100.0 * f / t_fr / peak
        rows.append(row)
        log(f"gemm {name:8s} M={M:6d} N={N:5d} K={K:4d}  fastrnn {row['fastrnn_gflops']:7.1f} GFLOP/s"
            + (f" ({row['peak_pct']:.0f}% of peak)" if peak else "")
            + f"  numpy {row['numpy_gflops']:7.1f} GFLOP/s  ratio {row['fastrnn_gflops'] / row['numpy_gflops']:.2f}")
    if limiter is not None:
        limiter.restore_original_limits()
    return rows


def _format_row(r):
    s = (f"{r['cell']:4s} {r['mode']:7s} {r['shape']:8s} (T={r['T']},B={r['B']},I={r['I']},H={r['H']})  "
         f"fastrnn {r['fastrnn_ms']:9.3f} ms {r['gflops']:7.1f} GFLOP/s")
    if "peak_pct" in r:
        s += f" ({r['peak_pct']:4.0f}% of peak)"
    if "numpy_ms" in r:
        s += f"  numpy {r['numpy_ms']:9.2f} ms (x{r['numpy_ms'] / r['fastrnn_ms']:.1f})"
    if "torch_ms" in r:
        s += f"  torch {r['torch_ms']:9.3f} ms (x{r['torch_ms'] / r['fastrnn_ms']:.2f})"
    return s


def markdown(rows, gemm_rows, env_lines):
    """The results as a Markdown section (for bench/RESULTS.md)."""
    out = ["", *[f"- {line}" for line in env_lines], "",
           "| cell | mode | shape (T,B,I,H) | fastrnn ms | GFLOP/s | % of FMA peak | numpy ms | numpy/fastrnn "
           "| torch ms | torch/fastrnn |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        np_ms = f"{r['numpy_ms']:.2f}" if "numpy_ms" in r else "-"
        np_ratio = f"{r['numpy_ms'] / r['fastrnn_ms']:.1f}" if "numpy_ms" in r else "-"
        t_ms = f"{r['torch_ms']:.3f}" if "torch_ms" in r else "-"
        t_ratio = f"{r['torch_ms'] / r['fastrnn_ms']:.2f}" if "torch_ms" in r else "-"
        pct = f"{r['peak_pct']:.0f}" if "peak_pct" in r else "-"
        out.append(f"| {r['cell']} | {r['mode']} | {r['shape']} ({r['T']},{r['B']},{r['I']},{r['H']}) | "
                   f"{r['fastrnn_ms']:.3f} | {r['gflops']:.1f} | {pct} | {np_ms} | {np_ratio} | {t_ms} | {t_ratio} |")
    if gemm_rows:
        out += ["", "| GEMM (input projection) | M | N | K | fastrnn GFLOP/s | % of FMA peak | numpy GFLOP/s | ratio |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for g in gemm_rows:
            pct = f"{g['peak_pct']:.0f}" if "peak_pct" in g else "-"
            out.append(f"| {g['shape']} | {g['M']} | {g['N']} | {g['K']} | {g['fastrnn_gflops']:.1f} | {pct} | "
                       f"{g['numpy_gflops']:.1f} | {g['fastrnn_gflops'] / g['numpy_gflops']:.2f} |")
    return "\n".join(out) + "\n"


def add_arguments(p):
    """The benchmark's options, on ``p`` (the ``bench`` subcommand's parser or a parser of its own)."""
    from . import backend

    p.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated: " + ",".join(SHAPES))
    p.add_argument("--cells", default="lstm,gru", help="comma-separated: lstm,gru")
    p.add_argument("--threads", type=int, default=backend.default_num_threads(),
                   help="threads for fastrnn, torch and numpy's BLAS (default: %(default)s)")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    p.add_argument("--no-reference", action="store_true", help="skip the NumPy reference")
    p.add_argument("--no-gemm", action="store_true", help="skip the GEMM table")
    p.add_argument("--isa", choices=sorted(set(backend.available_isas())),
                   help="fastrnn's ISA path (default: the widest); avx2 / scalar also hold torch to that ISA")
    p.add_argument("--no-peak", action="store_true", help="skip measuring the FMA peak")
    p.add_argument("--min-time", type=float, default=0.5, help="seconds of timing per measurement")
    p.add_argument("--markdown", metavar="FILE", help="append the results as Markdown to FILE")
    return p


def run_from_args(a, p):
    """Run the benchmark for the parsed options ``a`` (``p`` reports usage errors)."""
    shapes = [s for s in a.shapes.split(",") if s]
    cells = [c for c in a.cells.split(",") if c]
    for s in shapes:
        if s not in SHAPES:
            p.error(f"--shapes: unknown shape {s!r}; expected some of {', '.join(SHAPES)}")
    for c in cells:
        if c not in ("lstm", "gru"):
            p.error(f"--cells: unknown cell {c!r}; expected lstm and/or gru")
    if a.threads < 1:
        p.error(f"--threads: expected >= 1, got {a.threads}")
    held = hold_isa(a.isa) if a.isa else None
    import fastrnn
    from fastrnn import backend

    fastrnn.set_num_threads(a.threads)
    peak = None if a.no_peak else backend.fma_peak(a.threads, seconds=0.5)
    env_lines = environment(a.threads)
    if held:
        env_lines.append(held)
    if peak:
        env_lines.append(peak_line(peak, a.threads))
    for line in env_lines:
        print(line)
    rows = run(shapes, cells, a.threads, not a.no_torch, not a.no_reference, a.min_time, peak=peak)
    gemm_rows = [] if a.no_gemm else run_gemm(shapes, a.threads, peak=peak)
    if a.markdown:
        with open(a.markdown, "a") as f:
            f.write(markdown(rows, gemm_rows, env_lines))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="fastrnn bench", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run_from_args(p.parse_args(argv), p)
