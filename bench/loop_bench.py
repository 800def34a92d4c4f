"""The CPU time loops of two builds side by side: this tree's ``fastrnn._core`` against another
tree's (``--before``, default /work/main), both loaded into ONE process and timed interleaved
(``fastrnn._bench.timeit_interleaved``).

    PYTHONPATH=python python bench/loop_bench.py                          # every case below
    PYTHONPATH=python python bench/loop_bench.py --isa avx2,avx512 --threads 1,2 --shapes large
    PYTHONPATH=python python bench/loop_bench.py --loop-only              # I = 1: the time loop alone

Each case calls the extension's ``forward`` (inference) or ``forward`` + ``backward`` (training,
input gradient included) directly, so the figures are the kernels' alone (no Python layer). With
``--loop-only`` the input size is 1: the x projection and the weight GEMMs shrink to nothing and
what is left is the recurrent product and the pointwise pass of every step (FLOPs counted as
2*T*B*G*H*H forward, 3x that training). The outputs of both builds are compared first (max abs
difference printed; the two builds must agree bit for bit where only the loop tiling differs).

Prints the machine line, load (``uptime``) and a markdown table: ms of each build, before/after
(> 1: this tree is faster), the same ratio of the fastest single calls, and the share of the FMA
peak (``--peak-gflops`` per thread, default that of this Zen 4 measured quiet; a loaded machine
measures less, so it is given, not measured). 1 thread is timed in process CPU time
(``time.process_time``), 2 threads in wall time.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.machinery
import importlib.util
import os
import platform
import subprocess
import sys
import time

import numpy as np

import fastrnn as fr
from fastrnn import _bench, backend
from fastrnn._cells import cell_spec


def _load_core(tree):
    """Loads TREE/python/fastrnn/_core*.so as a module of its own name (beside this tree's)."""
    pkg = os.path.join(tree, "python", "fastrnn")
    so = [f for f in os.listdir(pkg) if f.startswith("_core") and f.endswith(".so")]
    if not so:
        raise SystemExit(f"no _core*.so in {pkg}: build that tree first")
    path = os.path.realpath(os.path.join(pkg, so[0]))
    loader = importlib.machinery.ExtensionFileLoader("fastrnn_before._core", path)
    spec = importlib.util.spec_from_file_location("fastrnn_before._core", path, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def _calls(core, cell, p, train):
    spec = cell_spec(cell)
    gru = spec.base == "gru"
    b_ih = p["b_ih"] if gru else p["b_ih"] + p["b_hh"]
    b_hh = p["b_hh"] if gru else None
    args = (spec.kernel_id, p["x"], p["w_ih"], p["w_hh"], b_ih, b_hh, None, None, None, False, True)

    def forward():
        return core.forward(*args, False)

    def training():
        y, _h, _c, gates, hprev, aux = core.forward(*args, True)
        return core.backward(spec.kernel_id, p["x"], p["w_ih"], p["w_hh"], None, False, True, gates, hprev, aux,
                             p["dy"], None, None, 0, True)

    return training if train else forward


def _max_diff(a, b):
    worst = 0.0
    for u, v in zip(a, b):
        if u is not None and v is not None:
            worst = max(worst, float(np.max(np.abs(np.asarray(u) - np.asarray(v)))))
    return worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default="/work/main", help="the other tree (built), default /work/main")
    ap.add_argument("--shapes", default="medium,large,text,latency")
    ap.add_argument("--cells", default="lstm,gru")
    ap.add_argument("--isa", default="avx2,avx512")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--modes", default="forward,train")
    ap.add_argument("--loop-only", action="store_true", help="I = 1: the time loop without the GEMMs")
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--peak-gflops", type=float, default=117.5,
                    help="FMA peak per thread, GFLOP/s (default 117.5: Zen 4 here, 235 at 2 threads measured "
                         "quiet by backend.fma_peak, the same for AVX2 and AVX-512 on Zen 4's 256-bit pipes)")
    args = ap.parse_args(argv)

    after = backend.core()
    before = _load_core(args.before)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or 'cpu'}, "
          f"caches: {backend._cache_line(backend.cache_info())}, fastrnn {fr.__version__}, numpy {np.__version__}")
    print(f"before: {args.before}  after: {os.path.dirname(os.path.dirname(os.path.dirname(fr.__file__)))}")
    print(f"load at start: {uptime}")
    print()
    print("| ISA | thr | cell | shape (T,B,I,H) | mode | before ms | after ms | before/after | fastest calls "
          "| after % peak | diff |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for isa in args.isa.split(","):
        for core in (after, before):
            core.set_isa(isa)
        for nt in [int(t) for t in args.threads.split(",")]:
            for core in (after, before):
                core.set_num_threads(nt)
            peak = args.peak_gflops * 1e9 * nt
            for cell in args.cells.split(","):
                for shape in args.shapes.split(","):
                    T, B, I, H = _bench.SHAPES[shape]
                    if args.loop_only:
                        I = 1
                    p = _bench._problem(cell, T, B, I, H)
                    for mode in args.modes.split(","):
                        train = mode == "train"
                        fa, fb = _calls(after, cell, p, train), _calls(before, cell, p, train)
                        diff = _max_diff(fa(), fb())
                        timer = time.process_time if nt == 1 else None  # 1 thread: CPU time, less load
                        (tb, ta), (qb, qa) = _bench.timeit_interleaved([fb, fa], min_time=args.min_time,
                                                                       with_fastest=True, timer=timer)
                        f = _bench.flops(cell, T, B, 0, H, train) if args.loop_only else \
                            _bench.flops(cell, T, B, I, H, train)
                        share = 100.0 * f / ta / peak
                        print(f"| {isa} | {nt} | {cell} | ({T},{B},{I},{H}) | {mode} | {tb * 1e3:.2f} | "
                              f"{ta * 1e3:.2f} | {tb / ta:.3f} | {qb / qa:.3f} | {share:.0f} % | {diff:.1e} |",
                              flush=True)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"\nload at end: {uptime}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
