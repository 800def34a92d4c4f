"""The fused optimizer step and the Dense layer's kernels against their NumPy twins, timed
interleaved in one process (fastrnn._bench.timeit_interleaved).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python python bench/train_ops_bench.py [--threads 2]

Optimizer: one step over all parameters of two models, the fused C++ step against the NumPy
reference (the same optimizer with ``_use_fused = False``): the word LM of issue 12 (Embedding
18,328 x 200, two LSTM(200), Dense(18,328): 11.7 M parameters) and the sentiment model
(Embedding 10,000 x 100, LSTM(128), Dense(1): 1.1 M). The step is memory-bound: the table gives
GB/s moved (Adam reads w, g, m, v and writes w, m, v: 28 bytes per parameter; SGD with global
clipping reads g twice and w once and writes w: 16 bytes).

Dense: the forward y = act(x W + b) and the backward (dW += x^T dZ, db += colsum(dZ),
dX = dZ W^T) of the word LM's decoder (700 x 200 -> 20,000) and of the sentiment head
(64 x 128 -> 1, sigmoid), three ways: numpy (``@``, ``+ b``, the activation; numpy's own BLAS),
fastrnn before this change (ops.matmul, then the bias and activation passes in NumPy) and
fastrnn now (bias and activation in the GEMM's write-back, dW accumulated in the GEMM, the bias
gradient one vectorised pass). FLOP: 2*M*N*K per product. numpy's OpenBLAS runs its default
thread count (one per core: 2 on the 2-core machine of bench/RESULTS.md; set OPENBLAS_NUM_THREADS
to match --threads elsewhere).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform

import numpy as np

import fastrnn as fr
from fastrnn import _bench, ops, optim
from fastrnn.layers import Parameter
from fastrnn.layers._core_common import ACTIVATIONS

PEAK = 228.0  # GFLOP/s: replaced at the start of a run by backend.fma_peak (register-only FMA chains)

MODELS = {
    "word LM (11.7 M)": [(18328, 200), (800, 200), (800, 200), (800,), (800, 200), (800, 200), (800,),
                         (200, 18328), (18328,)],
    "sentiment (1.1 M)": [(10000, 100), (512, 100), (512, 128), (512,), (128, 1), (1,)],
}


def _params(shapes, seed=0):
    rng = np.random.default_rng(seed)
    ps = [Parameter(f"p{i}/w", rng.standard_normal(s).astype(np.float32) * 0.1) for i, s in enumerate(shapes)]
    for p in ps:
        p.grad[...] = rng.standard_normal(p.value.shape).astype(np.float32)
    return ps


def bench_optim(min_time):
    rows = []
    for model, shapes in MODELS.items():
        n = sum(int(np.prod(s)) for s in shapes)
        for label, make, nbytes in (("Adam", lambda: optim.Adam(1e-3), 28),
                                    ("SGD + global_clipnorm", lambda: optim.SGD(20.0, global_clipnorm=0.25), 16)):
            fused, ref = make(), make()
            ref._use_fused = False
            pf, pr = _params(shapes), _params(shapes)
            t_f, t_r = _bench.timeit_interleaved([lambda o=fused, p=pf: o.step(p), lambda o=ref, p=pr: o.step(p)],
                                                 min_time=min_time)
            rows.append((model, label, t_f * 1e3, t_r * 1e3, t_r / t_f, nbytes * n / t_f / 1e9))
    print("\n| model | optimizer | fused ms | NumPy ms | speedup | fused GB/s |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.2f} | {r[3]:.2f} | {r[4]:.1f}x | {r[5]:.1f} |")


def _dense_ways(x, w, b, act, dz, gw, gb):
    f_act = ACTIVATIONS[act][0]

    def np_fwd():
        return f_act(x @ w + b)

    def fr_before_fwd():
        z = ops.matmul(x, w)
        z += b
        return f_act(z)

    def fr_now_fwd():
        y, applied = ops._dense_forward(x, w, b, act)
        return y if applied else f_act(y)

    def np_bwd():
        gw[...] += x.T @ dz
        gb[...] += dz.sum(axis=0)
        return dz @ w.T

    def fr_before_bwd():
        gw[...] += ops.matmul(x.T, dz)
        gb[...] += dz.sum(axis=0)
        return ops.matmul(dz, w.T)

    def fr_now_bwd():
        ops._matmul_acc(x.T, dz, gw)
        ops._colsum_acc(dz, gb)
        return ops.matmul(dz, w.T)

    return (np_fwd, fr_before_fwd, fr_now_fwd), (np_bwd, fr_before_bwd, fr_now_bwd)


def bench_dense(min_time):
    rng = np.random.default_rng(0)
    print("\n| shape (M x K -> N, act) | pass | numpy ms | fastrnn before ms | fastrnn now ms | now vs numpy | "
          "now vs before | now GFLOP/s (% of peak) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for M, K, N, act in ((700, 200, 20000, "linear"), (700, 200, 20000, "tanh"), (64, 128, 1, "sigmoid")):
        x = rng.standard_normal((M, K)).astype(np.float32)
        w = (rng.standard_normal((K, N)) * 0.05).astype(np.float32)
        b = rng.standard_normal(N).astype(np.float32)
        dz = rng.standard_normal((M, N)).astype(np.float32)
        gw, gb = np.zeros((K, N), np.float32), np.zeros(N, np.float32)
        fwd, bwd = _dense_ways(x, w, b, act, dz, gw, gb)
        for name, fns, flop in (("forward", fwd, 2.0 * M * N * K), ("backward", bwd, 4.0 * M * N * K)):
            t = _bench.timeit_interleaved(list(fns), min_time=min_time)
            gf = flop / t[2] / 1e9
            print(f"| {M} x {K} -> {N}, {act} | {name} | {t[0] * 1e3:.3f} | {t[1] * 1e3:.3f} | {t[2] * 1e3:.3f} | "
                  f"{t[0] / t[2]:.2f}x | {t[1] / t[2]:.2f}x | {gf:.0f} ({100 * gf / PEAK:.0f} %) |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--only", choices=("optim", "dense"), default=None)
    args = ap.parse_args()
    global PEAK
    fr.set_num_threads(args.threads)
    PEAK = fr.backend.fma_peak(args.threads, seconds=0.5) / 1e9
    load = os.getloadavg()
    print(f"# train_ops_bench {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{platform.processor() or platform.machine()}, fastrnn {fr.__version__} ({fr.backend.isa()}), "
          f"numpy {np.__version__}, {args.threads} threads, FMA peak measured {PEAK:.0f} GFLOP/s, "
          f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    if args.only in (None, "optim"):
        bench_optim(args.min_time)
    if args.only in (None, "dense"):
        bench_dense(args.min_time)


if __name__ == "__main__":
    main()
