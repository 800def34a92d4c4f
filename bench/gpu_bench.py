"""GPU benchmark: fastrnn's CUDA kernels against torch.nn.LSTM / torch.nn.GRU on CUDA (cuDNN).

    python bench/gpu_bench.py [--shapes small,text,...] [--cells lstm,gru] [--reps 30]
                              [--markdown FILE] [--no-reference] [--tiles]

Shapes are the CPU benchmark's (fastrnn._bench.SHAPES, (T, B, I, H)). For each shape and cell it
times, on CuPy/torch float32 arrays of the same values:
  * forward: inference (fastrnn training=False; torch under no_grad);
  * train:   a training forward + full backward with a given dy, input gradient included
             (torch: y.backward(dy) with x.requires_grad).
torch is timed twice: as it comes (cuDNN may use TF32 tensor cores for float32 RNNs,
torch.backends.cudnn.allow_tf32 defaults to True) and with TF32 off (plain float32, what fastrnn
computes). Optionally also the array-generic NumPy reference run through CuPy (fastrnn.reference
on CuPy float32), the path CuPy arrays took before the CUDA kernels.

Timing: each call is bracketed by CUDA events after a device synchronize, so a figure is the
latency of one call on an idle GPU, host launch overhead included; the median over --reps calls
after warm-up calls is reported. Before timing, fastrnn's outputs are compared with torch's
(TF32 off); the largest relative error is printed. FLOP convention (DeepBench): forward =
2*T*B*G*H*(I+H), train = 3x forward.

--tiles also times every tile size of the per-step kernels (forward and backward separately) and
the time loop as one launch per step instead of one persistent launch, which is how the automatic
choices in csrc/cuda/step.cuh were checked.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile

import cupy
import numpy as np
import torch

import fastrnn
from fastrnn import _cuda_ops, backend, ops, reference
from fastrnn._bench import SHAPES, flops


def time_call(fn, reps, warmup=3):
    """Median milliseconds of fn() over reps calls, each on an idle GPU between CUDA events."""
    for _ in range(warmup):
        fn()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    times = []
    for _ in range(reps):
        cupy.cuda.Device().synchronize()
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        end.synchronize()
        torch.cuda.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end))
    return statistics.median(times)


def make_problem(cell, T, B, I, H, seed=0):
    """float32 host arrays: x [B, T, I], weights like torch's init (U(-1/sqrt(H), 1/sqrt(H))), dy."""
    rng = np.random.default_rng(seed)
    G = 4 if cell == "lstm" else 3
    k = 1.0 / np.sqrt(H)

    def u(*shape, s=k):
        return rng.uniform(-s, s, size=shape).astype(np.float32)

    p = {"x": u(B, T, I, s=1.0), "w_ih": u(G * H, I), "w_hh": u(G * H, H), "dy": u(B, T, H, s=1.0)}
    if cell == "lstm":
        p["b"] = u(G * H)
    else:
        p["b_ih"], p["b_hh"] = u(G * H), u(G * H)
    return p


def fastrnn_calls(mod, cell, d):
    """(forward, train) closures over device arrays d for fastrnn.ops or fastrnn.reference."""
    biases = (d["b"],) if cell == "lstm" else (d["b_ih"], d["b_hh"])
    fwd = getattr(mod, f"{cell}_forward")
    bwd = getattr(mod, f"{cell}_backward")

    def forward():
        return fwd(d["x"], d["w_ih"], d["w_hh"], *biases, training=False)

    def train():
        y, _, cache = fwd(d["x"], d["w_ih"], d["w_hh"], *biases, training=True)
        return bwd(cache, d["dy"])

    return forward, train


def torch_module(cell, p, I, H):
    cls = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
    m = cls(I, H, batch_first=True).cuda()
    with torch.no_grad():
        m.weight_ih_l0.copy_(torch.from_numpy(p["w_ih"]))
        m.weight_hh_l0.copy_(torch.from_numpy(p["w_hh"]))
        if cell == "lstm":
            m.bias_ih_l0.copy_(torch.from_numpy(p["b"]))
            m.bias_hh_l0.zero_()
        else:
            m.bias_ih_l0.copy_(torch.from_numpy(p["b_ih"]))
            m.bias_hh_l0.copy_(torch.from_numpy(p["b_hh"]))
    return m


def torch_calls(m, p):
    x = torch.from_numpy(p["x"]).cuda()
    xg = x.clone().requires_grad_(True)
    dy = torch.from_numpy(p["dy"]).cuda()

    def forward():
        with torch.no_grad():
            return m(x)

    def train():
        m.zero_grad(set_to_none=True)
        xg.grad = None
        y, _ = m(xg)
        y.backward(dy)

    return forward, train


def check_against_torch(cell, m, p, d):
    """Largest relative error of fastrnn's y and dW_hh against torch (TF32 off)."""
    biases = (d["b"],) if cell == "lstm" else (d["b_ih"], d["b_hh"])
    y, _, cache = getattr(ops, f"{cell}_forward")(d["x"], d["w_ih"], d["w_hh"], *biases)
    g = getattr(ops, f"{cell}_backward")(cache, d["dy"])
    x = torch.from_numpy(p["x"]).cuda().requires_grad_(True)
    m.zero_grad(set_to_none=True)
    yt, _ = m(x)
    yt.backward(torch.from_numpy(p["dy"]).cuda())
    pairs = [(y, yt), (g["w_hh"], m.weight_hh_l0.grad), (g["x"], x.grad)]
    errs = []
    for a, b in pairs:
        a = cupy.asnumpy(a).astype(np.float64)
        b = b.detach().cpu().numpy().astype(np.float64)
        errs.append(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)))
    return max(errs)


def versions():
    dev = cupy.cuda.runtime.getDeviceProperties(0)
    name = dev["name"].decode() if isinstance(dev["name"], bytes) else dev["name"]
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        smi = "n/a"
    rt = cupy.cuda.runtime.runtimeGetVersion()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": f"{name} ({dev['multiProcessorCount']} SMs), nvidia-smi: {smi}",
        "software": (f"fastrnn {fastrnn.__version__}, CuPy {cupy.__version__} "
                     f"(CUDA runtime {rt // 1000}.{rt % 1000 // 10}), "
                     f"torch {torch.__version__} (cuDNN {torch.backends.cudnn.version()}), numpy {np.__version__}, "
                     f"python {platform.python_version()}"),
    }


def fmt(v, spec=".3f"):
    return "-" if v is None else format(v, spec)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--cells", default="lstm,gru")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--ref-reps", type=int, default=3)
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--tiles", action="store_true", help="also time every step-kernel tile size")
    ap.add_argument("--markdown", default=None, help="write the tables to this file")
    args = ap.parse_args(argv)
    if not backend.cuda_kernels_available():
        sys.exit("fastrnn's CUDA kernels are not available (module not built or no device)")

    info = versions()
    rows, tile_rows, loop_rows = [], [], []
    for name in args.shapes.split(","):
        T, B, I, H = SHAPES[name]
        for cell in args.cells.split(","):
            p = make_problem(cell, T, B, I, H)
            d = {k: cupy.asarray(v) for k, v in p.items()}
            m = torch_module(cell, p, I, H)
            torch.backends.cudnn.allow_tf32 = False
            err = check_against_torch(cell, m, p, d)
            f_fwd, f_train = fastrnn_calls(ops, cell, d)
            t_fwd, t_train = torch_calls(m, p)
            for mode, ffn, tfn in (("forward", f_fwd, t_fwd), ("train", f_train, t_train)):
                n0 = _cuda_ops.calls["forward"]
                ms_fr = time_call(ffn, args.reps)
                assert _cuda_ops.calls["forward"] > n0, "fastrnn did not run its CUDA kernels"
                torch.backends.cudnn.allow_tf32 = False
                ms_t32 = time_call(tfn, args.reps)
                torch.backends.cudnn.allow_tf32 = True
                ms_tf = time_call(tfn, args.reps)
                ms_ref = None
                if not args.no_reference:
                    r_fwd, r_train = fastrnn_calls(reference, cell, d)
                    ms_ref = time_call(r_fwd if mode == "forward" else r_train, args.ref_reps, warmup=1)
                gf = flops(cell, T, B, I, H, mode == "train") / (ms_fr * 1e-3) / 1e9
                row = dict(shape=name, T=T, B=B, I=I, H=H, cell=cell, mode=mode, fastrnn=ms_fr, gflops=gf,
                           cudnn_fp32=ms_t32, cudnn_tf32=ms_tf, ref=ms_ref, err=err)
                rows.append(row)
                print(f"{name:8s} {cell:4s} {mode:7s} fastrnn {ms_fr:9.3f} ms ({gf:7.1f} GFLOP/s)  "
                      f"cuDNN fp32 {ms_t32:8.3f}  cuDNN tf32 {ms_tf:8.3f}  ratio {ms_fr / ms_t32:6.2f}  "
                      f"ref {fmt(ms_ref, '.1f')}  err {err:.1e}", flush=True)
            if args.tiles:
                mod = backend.cuda()
                for which in ("forward", "backward"):
                    for tiles in (0, 1):
                        mod.set_step_tiles(tiles if which == "forward" else -1,
                                           tiles if which == "backward" else -1, -1)
                        ms = time_call(f_fwd if which == "forward" else f_train, max(5, args.reps // 3))
                        tile_rows.append(dict(shape=name, cell=cell, which=which, tiles=tiles, ms=ms))
                        print(f"   tiles {which:8s} {['large', 'small'][tiles]:6s} {ms:9.3f} ms", flush=True)
                mod.set_step_tiles(-1, -1, 0)  # the time loop as one launch per step
                for which, fn in (("forward", f_fwd), ("train", f_train)):
                    ms = time_call(fn, max(5, args.reps // 3))
                    loop_rows.append(dict(shape=name, cell=cell, which=which, ms=ms,
                                          default=next(r for r in rows if r["shape"] == name and r["cell"] == cell
                                                   and r["mode"] == which)["fastrnn"]))
                    print(f"   launch per step {which:8s} {ms:9.3f} ms", flush=True)
                mod.set_step_tiles(-1, -1, -1)
            del m
            torch.cuda.empty_cache()

    lines = [f"- date: {info['date']}", f"- device: {info['device']}", f"- software: {info['software']}", "",
             "| shape | T, B, I, H | cell | mode | fastrnn ms | fastrnn GFLOP/s | cuDNN fp32 ms | cuDNN TF32 ms "
             "| fastrnn / cuDNN fp32 | CuPy reference ms | reference / fastrnn | max rel. err vs torch |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['T']}, {r['B']}, {r['I']}, {r['H']} | {r['cell']} | {r['mode']} | {r['fastrnn']:.3f} "
            f"| {r['gflops']:.0f} | {r['cudnn_fp32']:.3f} | {r['cudnn_tf32']:.3f} "
            f"| {r['fastrnn'] / r['cudnn_fp32']:.2f} "
            f"| {fmt(r['ref'], '.1f')} | {fmt(None if r['ref'] is None else r['ref'] / r['fastrnn'], '.0f')} "
            f"| {r['err']:.1e} |")
    if tile_rows:
        lines += ["", "| shape | cell | kernel timed | large tiles ms | small tiles ms |", "|---|---|---|---:|---:|"]
        for i in range(0, len(tile_rows), 2):
            a, b = tile_rows[i:i + 2]
            lines.append(f"| {a['shape']} | {a['cell']} | {a['which']} | {a['ms']:.3f} | {b['ms']:.3f} |")
    if loop_rows:
        lines += ["", "| shape | cell | mode | default ms | one launch per step ms |", "|---|---|---|---:|---:|"]
        for r in loop_rows:
            lines.append(f"| {r['shape']} | {r['cell']} | {r['which']} | {r['default']:.3f} | {r['ms']:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        folder = os.path.dirname(os.path.abspath(args.markdown))
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, args.markdown)


if __name__ == "__main__":
    main()
