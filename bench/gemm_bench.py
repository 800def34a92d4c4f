"""fastrnn's CPU GEMM against numpy's matmul (OpenBLAS) on the shapes the layers run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/gemm_bench.py [--isa avx2,avx512]
        [--threads 2,1] [--min-time 0.6] [--rounds 3] [--shapes NAME,...]

Shapes (M x K x N, "^T" = A read transposed, as the weight gradients read X^T): the input
projections and weight gradients of the large and medium LSTM benchmarks, the word-level LM's
decoder (forward, weight gradient, input gradient), and the text / latency shapes' input
projections x[T*B, I] @ W_ih^T and weight gradients dG^T x.

Each shape is timed interleaved in one process (fastrnn._bench.timeit_interleaved: alternating
blocks, the median of each block, the quietest block kept): numpy, a pause, fastrnn. The pause
(a block of sleeps, wall clock) lets OpenBLAS's threads, which poll for about 0.1 s after a
call, stop before fastrnn's block. With one thread both run single-threaded (OpenBLAS limited by
threadpoolctl) and the clock is the process's CPU time, which load from other processes inflates
less. Prints the date, machine, caches, the GEMM blocks derived from them, the FMA peak measured
for each ISA path and thread count, the load (uptime) before and after, and a markdown table:
GFLOP/s, share of the FMA peak, numpy's GFLOP/s, ratio. Not a test: run it by hand, copy the
table into bench/RESULTS.md. A build without backend.gemm_blocking (before the blocking was
derived from the caches) runs too, with "constants" as its blocks.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import time

import numpy as np

import fastrnn
from fastrnn import _bench, backend, ops

SHAPES = {  # name: (M, K, N, A transposed)
    "proj large": (3200, 512, 4096, False),
    "dW large": (512, 3200, 4096, True),
    "proj medium": (6400, 256, 1024, False),
    "dW medium": (256, 6400, 1024, True),
    "dec fwd": (700, 200, 18328, False),
    "dec dW": (200, 700, 18328, True),
    "dec dx": (700, 18328, 200, False),
    "text proj": (8192, 100, 512, False),
    "text dW": (512, 8192, 100, True),
    "latency proj": (100, 128, 2048, False),
    "latency dW": (2048, 100, 128, True),
}


def _uptime():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "uptime unavailable"


def _blocking():
    if not hasattr(backend, "gemm_blocking"):
        return "constants (this build does not derive them from the caches)"
    return backend._blocking_line(backend.gemm_blocking())


def run(isa, threads, shapes, min_time, rounds, log=print):
    """Rows of {shape, M, K, N, fastrnn, numpy (GFLOP/s), peak_pct, ratio} for one ISA path and thread count."""
    from threadpoolctl import threadpool_limits

    backend.set_isa(isa)
    fastrnn.set_num_threads(threads)
    peak = backend.fma_peak(threads, seconds=0.5)  # measured again after the shapes: the larger counts
    log(f"\n### {isa}, {threads} thread(s): GEMM blocks {_blocking()}")
    timer = time.process_time if threads == 1 else None
    rng = np.random.default_rng(0)
    rows = []
    with threadpool_limits(limits=threads, user_api="blas"):
        for name in shapes:
            M, K, N, ta = SHAPES[name]
            a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
            a = a.T if ta else a
            b = rng.standard_normal((K, N), dtype=np.float32)
            pause = (lambda: time.sleep(0.04)) if timer is None else (lambda: None)
            fns = [lambda a=a, b=b: a @ b, pause, lambda a=a, b=b: ops.matmul(a, b)]
            t_np, _, t_fr = _bench.timeit_interleaved(fns, min_time=min_time, rounds=rounds, timer=timer)
            f = 2.0 * M * N * K
            row = {"shape": name, "M": M, "K": K, "N": N, "ta": ta, "fastrnn": f / t_fr / 1e9,
                   "numpy": f / t_np / 1e9, "ratio": t_np / t_fr}
            rows.append(row)
            log(f"  {name:13s} {M:5d}x{K:5d}x{N:5d}{'^T' if ta else '  '}  fastrnn {row['fastrnn']:6.1f} GFLOP/s  "
                f"numpy {row['numpy']:6.1f}  ratio {row['ratio']:.2f}")
    peak = max(peak, backend.fma_peak(threads, seconds=0.5))
    log(f"  FMA peak ({isa}, {threads} thread(s)), the larger of two measurements (backend.fma_peak): "
        f"{peak / 1e9:.1f} GFLOP/s; a loaded machine lowers it")
    for row in rows:
        row["peak_pct"] = 100.0 * row["fastrnn"] * 1e9 / peak
    return rows


def markdown(results):
    out = ["| ISA | threads | shape | M x K x N | fastrnn GFLOP/s | % of FMA peak | numpy GFLOP/s | fastrnn / numpy |",
           "|---|---|---|---|---|---|---|---|"]
    for (isa, threads), rows in results.items():
        for r in rows:
            out.append(f"| {isa} | {threads} | {r['shape']} | {r['M']}x{r['K']}x{r['N']}{' (A^T)' if r['ta'] else ''} "
                       f"| {r['fastrnn']:.1f} | {r['peak_pct']:.0f} % | {r['numpy']:.1f} | {r['ratio']:.2f} |")
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--isa", default=None, help="comma-separated ISA paths (default: avx2 and avx512 where supported)")
    p.add_argument("--threads", default="2,1", help="comma-separated thread counts (default 2,1)")
    p.add_argument("--min-time", type=float, default=0.6, help="seconds per function and shape (default 0.6)")
    p.add_argument("--rounds", type=int, default=3, help="alternating blocks per function (default 3)")
    p.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated shape names (default: all)")
    a = p.parse_args(argv)
    isas = a.isa.split(",") if a.isa else [i for i in ("avx2", "avx512") if i in backend.available_isas()]
    shapes = [s.strip() for s in a.shapes.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        p.error(f"unknown shapes {unknown}; known: {', '.join(SHAPES)}")
    print(f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {platform.machine()}, {_bench._cpu_name()}, {os.cpu_count()} logical CPUs")
    print(f"caches: {backend._cache_line(backend.cache_info())}")
    print(f"fastrnn {fastrnn.__version__} from {os.path.dirname(fastrnn.__file__)}, numpy {np.__version__}")
    print(f"load before: {_uptime()}")
    results = {}
    for isa in isas:
        for threads in (int(t) for t in a.threads.split(",")):
            results[(isa, threads)] = run(isa, threads, shapes, a.min_time, a.rounds)
    print(f"\nload after: {_uptime()}\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
