"""Dropout and recurrent dropout: what they cost in a training step.

    python bench/dropout_bench.py [--threads 2,1] [--rounds 5] [--min-time 1.0]

1. A training step of LSTM(64) (forward with training=True, then backward of a fixed dy) on
   batch 32, 20 steps, 16 features, at recurrent_dropout 0, 0.2 and 0.25: the mask inside the
   kernels' time loop. Beside it, at 0.25, the way it ran before (one kernel call per sequence,
   the mask folded into that sequence's w_hh), rebuilt here from the ops.
2. The Dropout layer (rate 0.5) on a [64, 56, 128] float32 array: fastrnn's (Philox mask drawn
   and applied in one C++ pass) against the NumPy version it replaces (Generator.random, compare,
   scale, multiply), forward and forward + backward.

Everything is timed interleaved in one process (fastrnn._bench.timeit_interleaved: the median of
each block, the quietest block kept). Prints the machine, the load (uptime) and a markdown table.
Not a test: run it by hand and copy the table into bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess

import numpy as np

import fastrnn
from fastrnn import _bench, layers, ops

T, B, F, H = 20, 32, 16, 64
SHAPE = (64, 56, 128)
PEAK_PER_CORE = 115e9  # Zen 4 FP32: 2 FMA pipes x 16 lanes x 2 FLOP x ~1.8 GHz sustained (about 230 GFLOP/s for 2)


def lstm_step(rate, x, dy, weights):
    layer = layers.LSTM(H, return_sequences=True, recurrent_dropout=rate, seed=0)
    layer.build((None, F))
    layer.set_weights(weights)

    def step():
        layer(x, training=True)
        layer.backward(dy)
    return step


def lstm_step_per_row(rate, x, dy, weights):
    """The old path: one forward and one backward call per sequence, w_hh scaled by its mask."""
    w_ih, w_hh, b = weights
    rng = np.random.default_rng(0)

    def step():
        m = (rng.random((B, H)) >= rate).astype(np.float32) / np.float32(1 - rate)
        caches = []
        for r in range(B):
            _, _, c = ops._run_forward("lstm", x[r:r + 1], w_ih, np.ascontiguousarray(w_hh * m[r][None, :]), b)
            caches.append(c)
        gw = np.zeros_like(w_hh)
        for r, c in enumerate(caches):
            g = ops._run_backward(c, np.ascontiguousarray(dy[r:r + 1]))
            gw += g["w_hh"] * m[r][None, :]
    return step


def dropout_fastrnn(x, dy, backward):
    layer = layers.Dropout(0.5, seed=0)

    def run():
        layer(x, training=True)
        if backward:
            layer.backward(dy)
    return run


def dropout_numpy(x, dy, backward):
    rng = np.random.default_rng(0)

    def run():
        m = (rng.random(x.shape) >= 0.5).astype(np.float32) / np.float32(0.5)
        y = x * m
        if backward:
            y = dy * m
        return y
    return run


def machine():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    except OSError:
        out = []
    return next((ln.split(":", 1)[1].strip() for ln in out if ln.startswith("Model name")), platform.processor())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="2,1")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=1.0)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    dy = rng.standard_normal((B, T, H)).astype(np.float32)
    base = layers.LSTM(H, seed=0)
    base.build((None, F))
    weights = base.get_weights()
    xd = rng.standard_normal(SHAPE).astype(np.float32)
    dyd = rng.standard_normal(SHAPE).astype(np.float32)
    flop = 3 * 2 * T * B * 4 * H * (F + H)  # training step, DeepBench convention
    print(f"# dropout_bench: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {machine()}, "
          f"ISA {fastrnn.isa()}, fastrnn {fastrnn.__version__}, numpy {np.__version__}")
    print(f"# load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1/5/15 min)")
    rows = []
    for th in (int(t) for t in args.threads.split(",")):
        fastrnn.set_num_threads(th)
        names = ["rd 0", "rd 0.2", "rd 0.25", "rd 0.25 per-row (before)"]
        fns = [lstm_step(0.0, x, dy, weights), lstm_step(0.2, x, dy, weights), lstm_step(0.25, x, dy, weights),
               lstm_step_per_row(0.25, x, dy, weights)]
        t = _bench.timeit_interleaved(fns, min_time=args.min_time, rounds=args.rounds)
        for n, s in zip(names, t):
            rows.append((th, f"LSTM({H}) train step B{B} T{T} F{F}, {n}", s * 1e3, s / t[0], "",
                         f"{flop / s / (PEAK_PER_CORE * th) * 100:.1f} % of FMA peak"))
        for bw in (False, True):
            fns = [dropout_fastrnn(xd, dyd, bw), dropout_numpy(xd, dyd, bw)]
            t = _bench.timeit_interleaved(fns, min_time=args.min_time, rounds=args.rounds)
            what = "fwd+bwd" if bw else "fwd"
            nbytes = xd.nbytes * (4 if bw else 2)  # read x (dy), write y (dx)
            for n, s in zip(("fastrnn (Philox, C++)", "NumPy (Generator.random)"), t):
                rows.append((th, f"Dropout(0.5) {what} {list(SHAPE)}, {n}", s * 1e3, s / t[0],
                             f"{t[1] / t[0]:.2f}x" if n.startswith("fastrnn") else "",
                             f"{nbytes / s / 1e9:.1f} GB/s"))
    print(f"# load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1/5/15 min)")
    print()
    print("| threads | case | ms | / first of group | speed-up vs NumPy | rate |")
    print("|---:|---|---:|---:|---:|---|")
    for th, name, ms, rel, sp, extra in rows:
        print(f"| {th} | {name} | {ms:.3f} | {rel:.2f} | {sp} | {extra} |")


if __name__ == "__main__":
    main()
