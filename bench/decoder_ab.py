"""The word-level LM decoder's kernels (issue 12), one build of fastrnn's C++ module against another
in ONE process: Dense(18328) forward on [700, 200] rows (bias in the write-back, into a kept
buffer), the sparse softmax cross-entropy's value and gradient of the mean, the weight gradient
with the bias gradient, and the input gradient, as each build's training step runs them.

    python bench/decoder_ab.py --before BUILD/_core.cpython-311-x86_64-linux-gnu.so [--threads 1,2]
        [--min-time 2] [--rounds 3]

"before" is another build's _core module (e.g. the main branch's: `cmake -S MAIN -B /tmp/b -G
Ninja -DCMAKE_BUILD_TYPE=Release ... && cmake --build /tmp/b`), loaded beside this tree's under
another name. Per part the two builds run alternately (fastrnn._bench.timeit_interleaved); with
one thread the clock is CPU time (less inflated by other processes' load), with two wall time.
The before build runs the step as it did: loss gradient into a buffer of its own, divided by the
count in a NumPy pass, the bias gradient in a column-sum pass. Prints a markdown table with
each part's time, GFLOP/s and share of the FMA peak for the GEMMs, and the ratio.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import time

import numpy as np

import fastrnn
from fastrnn import _bench, backend

N, H, V = 700, 200, 18328


def load(path):
    spec = importlib.util.spec_from_file_location("before._core", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def parts(core, now):
    """name -> (function, FLOP) for one build; ``now``: this tree's calls (else the old ones)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, H), dtype=np.float32)
    w = (rng.standard_normal((H, V)) * 0.1).astype(np.float32)
    b = np.zeros(V, np.float32)
    z = np.empty((N, V), np.float32)
    ids = rng.integers(0, V, N)
    g = (rng.standard_normal((N, V)) * 1e-4).astype(np.float32)
    dw, db, dx = np.zeros((H, V), np.float32), np.zeros(V, np.float32), np.empty((N, H), np.float32)
    gbuf = np.empty((N, V), np.float32)
    zf = (rng.standard_normal((N, V)) * 2).astype(np.float32)
    f = 2.0 * N * H * V
    if now:
        scratch = zf.copy()

        def loss():  # over the logits (the training step's buffer), the mean in the kernel's pass
            np.copyto(scratch, zf)
            core.xent(scratch, ids, None, None, None, True, scratch, 1.0 / N)

        def dwdb():
            core.dense_gemm(x, g, True, False, None, 0, dw, True, db)
    else:
        def loss():
            np.copyto(gbuf, zf)  # the same copy as the other build's, for equal work
            _, grad = core.xent(zf, ids, None, None, None, True, gbuf)
            np.divide(grad, N, out=grad)

        def dwdb():
            core.dense_gemm(x, g, True, False, None, 0, dw, True)
            core.colsum(g, db, True)
    return {
        "forward z = x W + b [700 x 200 x 18328]": (lambda: core.dense_gemm(x, w, False, False, b, 0, z), f),
        "softmax CE value + gradient of the mean (copy of the logits included)": (loss, None),
        "dW += x^T dz, db += colsum(dz)": (dwdb, f),
        "dx = dz W^T": (lambda: core.dense_gemm(g, w, False, True, None, 0, dx), f),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", required=True, help="path of the other build's _core module")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--min-time", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    new = backend.core()
    old = load(a.before)
    print(f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; load average "
          f"{'/'.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"machine: {_bench._cpu_name()}; ISA path {new.get_isa()}; fastrnn {fastrnn.__version__}; "
          f"before: {a.before}")
    print("\n| threads | part | before (ms) | now (ms) | now GFLOP/s | % of FMA peak | before / now |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for th in (int(t) for t in a.threads.split(",")):
        for m in (old, new):
            m.set_num_threads(th)
        fastrnn.set_num_threads(th)
        peak = backend.fma_peak(th, seconds=0.5)
        po, pn = parts(old, False), parts(new, True)
        timer = time.process_time if th == 1 else None
        for name in pn:
            (fo, _), (fn, flop) = po[name], pn[name]
            t_old, t_new = _bench.timeit_interleaved([fo, fn], min_time=a.min_time, rounds=a.rounds, timer=timer)
            rate = f"{flop / t_new / 1e9:.1f}" if flop else ""
            share = f"{100 * flop / t_new / peak:.1f} %" if flop and peak else ""
            print(f"| {th} | {name} | {t_old * 1e3:.2f} | {t_new * 1e3:.2f} | {rate} | {share} | "
                  f"{t_old / t_new:.3f} |")
        print(f"| {th} | (FMA peak, backend.fma_peak) | | | {peak / 1e9:.1f} | | |")
    print(f"\nload average after: {'/'.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
