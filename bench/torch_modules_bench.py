"""fastrnn.torch.LSTM / GRU in place of torch.nn.LSTM / GRU in a torch training step.

    python bench/torch_modules_bench.py [--threads 2] [--shapes small,text,...] [--rounds 3]

A training step is forward, MSE loss against a fixed target, backward and an SGD step, on the
shapes of fastrnn._bench.SHAPES (T, B, I, H; time-major input, one layer). Both modules hold the
same weights and are timed in alternating blocks (fastrnn._bench.timeit_interleaved: the median of
each block, the quietest block kept). Also the bridge's per-call overhead: the module's forward
(no_grad) and training step against the bare fastrnn.ops calls on NumPy arrays, on a tiny shape.
Not a test: run it by hand and copy the table into bench/RESULTS.md with the machine's load.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess

import numpy as np
import torch

import fastrnn
import fastrnn.torch as frt
from fastrnn import _bench, ops
from fastrnn._bench import SHAPES


def timeit_interleaved(fns, min_time=0.5, rounds=3, min_runs=3):
    """fastrnn._bench.timeit_interleaved with the fastest single call of each function as well:
    returns (quietest block medians, minima)."""
    return _bench.timeit_interleaved(fns, min_time=min_time, rounds=rounds, min_runs=min_runs, with_fastest=True)


def train_step(mod, x, target, opt):
    def step():
        opt.zero_grad(set_to_none=True)
        y, _ = mod(x)
        loss = torch.nn.functional.mse_loss(y, target)
        loss.backward()
        opt.step()
    return step


def bench_shape(cell, name, rounds, min_time):
    T, B, I, H = SHAPES[name]
    torch.manual_seed(0)
    ref = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(I, H)
    mod = (frt.LSTM if cell == "lstm" else frt.GRU)(I, H)
    mod.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, I)
    target = torch.randn(T, B, H)
    fns = [train_step(m, x, target, torch.optim.SGD(m.parameters(), lr=1e-3)) for m in (ref, mod)]
    return timeit_interleaved(fns, min_time=min_time, rounds=rounds, min_runs=3)


def overhead(rounds, min_time):
    """Seconds per call on a tiny LSTM (T=2, B=1, I=H=4): module vs bare ops, forward and train."""
    T, B, I, H = 2, 1, 4, 4
    torch.manual_seed(0)
    mod = frt.LSTM(I, H)
    ref = torch.nn.LSTM(I, H)
    ref.load_state_dict(mod.state_dict())
    x = torch.randn(T, B, I)
    xn = x.numpy()
    w_ih, w_hh = mod.weight_ih_l0.detach().numpy(), mod.weight_hh_l0.detach().numpy()
    b = (mod.bias_ih_l0 + mod.bias_hh_l0).detach().numpy()
    dy = np.ones((T, B, H), np.float32)

    def mod_fwd():
        with torch.no_grad():
            mod(x)

    def ref_fwd():
        with torch.no_grad():
            ref(x)

    def ops_fwd():
        ops.lstm_forward(xn, w_ih, w_hh, b, batch_first=False, training=False)

    xg = x.clone().requires_grad_(True)

    def mod_train():
        y, _ = mod(xg)
        y.sum().backward()

    def ref_train():
        y, _ = ref(xg)
        y.sum().backward()

    def ops_train():
        _, _, cache = ops.lstm_forward(xn, w_ih, w_hh, b, batch_first=False, training=True)
        ops.lstm_backward(cache, dy)

    def op_train():  # through the custom operator, as under torch.compile
        frt._EAGER_FUNCTION = False
        try:
            mod_train()
        finally:
            frt._EAGER_FUNCTION = True

    fwd = timeit_interleaved([ops_fwd, mod_fwd, ref_fwd], min_time=min_time, rounds=rounds)[1]
    train = timeit_interleaved([ops_train, mod_train, ref_train, op_train], min_time=min_time, rounds=rounds)[1]
    return fwd, train


def machine():
    cpu = next((ln.split(":", 1)[1].strip() for ln in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if ln.startswith("Model name")), platform.processor())
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return cpu, load


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--cells", default="gru,lstm")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--min-time", type=float, default=1.0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    fastrnn.set_num_threads(args.threads)
    cpu, load = machine()
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; {cpu}; fastrnn "
          f"{fastrnn.__version__} ISA {fastrnn.isa()}; torch {torch.__version__}; numpy {np.__version__}; "
          f"{args.threads} threads (torch and fastrnn); OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print(f"load before: {load}")
    print("\ntraining step (forward, MSE loss, backward, SGD step), ms per step: quietest-block median "
          "(fastest call)")
    print(f"{'cell':5} {'shape':8} {'T,B,I,H':16} {'torch.nn':>18} {'fastrnn.torch':>18} {'speedup':>14}")
    for cell in args.cells.split(","):
        for name in args.shapes.split(","):
            (m_torch, m_frt), (f_torch, f_frt) = bench_shape(cell, name, args.rounds, args.min_time)
            shape = ",".join(map(str, SHAPES[name]))
            print(f"{cell:5} {name:8} {shape:16} {m_torch * 1e3:9.2f} ({f_torch * 1e3:6.2f}) "
                  f"{m_frt * 1e3:9.2f} ({f_frt * 1e3:6.2f}) {m_torch / m_frt:5.2f}x ({f_torch / f_frt:4.2f}x)",
                  flush=True)
    print(f"load after shapes: {machine()[1]}")
    fwd, train = overhead(args.rounds, min(args.min_time, 0.5))
    print("\nper-call overhead, LSTM T=2 B=1 I=H=4, us per call (fastest call): bare fastrnn.ops / "
          "fastrnn.torch / torch.nn")
    print(f"forward (no_grad):          {fwd[0] * 1e6:8.1f} {fwd[1] * 1e6:8.1f} {fwd[2] * 1e6:8.1f}   "
          f"bridge overhead {(fwd[1] - fwd[0]) * 1e6:.1f} us")
    print(f"forward + backward (train): {train[0] * 1e6:8.1f} {train[1] * 1e6:8.1f} {train[2] * 1e6:8.1f}   "
          f"bridge overhead {(train[1] - train[0]) * 1e6:.1f} us")
    print(f"forward + backward through the custom operator (eager): {train[3] * 1e6:.1f} us")
    print(f"load after: {machine()[1]}")


if __name__ == "__main__":
    main()
