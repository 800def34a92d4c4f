"""Data-parallel training on this machine: 1 process at 2 threads against 2 MPI ranks at 1 thread
each, and the all-reduce time against its size.

    python bench/distributed_bench.py                 # starts itself under mpiexec -n 2; prints the tables
    python bench/distributed_bench.py --quick         # fewer rounds (a smoke run)

Everything runs inside ONE ``mpiexec -n 2`` job, the variants interleaved in blocks (A C B E D,
A C B E D, ...; the quickest block median of each is kept, as fastrnn._bench.timeit_interleaved does):

  A  one process, 2 threads, the whole batch (rank 1 sleeps, polling an Ibarrier every 5 ms)
  B  2 ranks x 1 thread, each half of the same batch (DistributedOptimizer: the same update as A)
  C  one process, 1 thread, the whole batch (the base of the scaling efficiency)
  D  2 ranks x 1 thread, each a full batch (Horovod's usual weak scaling: twice the samples/step)
  E  as B with DistributedOptimizer(overlap=False): every bucket reduced after the backward pass

Models (the lessons'): sentiment = Embedding(10000, 100, mask_zero) -> LSTM(128) -> Dense(1,
sigmoid), Adam, batch 64, the UCI sentences padded to 40 words (examples/sentiment.py); char-LM =
Embedding(V, 32) -> LSTM(256, return_sequences) -> Dense(V), Adam (global_clipnorm 5), batch 32,
windows of 64 characters of tiny-shakespeare (examples/char_lm.py). "comm" is the time per step
spent in the gradient reduction that the backward pass did not hide (DistributedOptimizer's wait).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _launch(args):
    exe = Path(sys.executable).parent / "mpiexec"
    cmd = [str(exe if exe.exists() else "mpiexec")]
    if "HYDRA" in subprocess.run(cmd + ["--version"], capture_output=True, text=True).stdout:
        cmd += ["-launcher", "fork"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "python"),
                                                                      os.environ.get("PYTHONPATH")]))}
    cmd += ["-n", "2", sys.executable, __file__, "--worker"] + args
    return subprocess.run(cmd, env=env).returncode


# ------------------------------------------------------------------------------ the ranks
def _data(name):
    from fastrnn.data import CharVectorizer, WordVectorizer, pad_sequences
    from fastrnn.datasets import load_sentiment, load_tinyshakespeare

    if name == "sentiment":
        sentences, labels, _ = load_sentiment()
        vec = WordVectorizer(max_tokens=10000).fit(sentences)
        x = pad_sequences(vec.encode(sentences), maxlen=40, padding="post", truncating="post").astype(np.int32)
        return x, np.asarray(labels, dtype=np.float32)
    text = load_tinyshakespeare(300_000)
    vec = CharVectorizer(pad_token=None, oov_token=None).fit(text)
    ids = vec.encode(text).astype(np.int32)
    n = (len(ids) - 1) // 64
    return ids[:n * 64].reshape(n, 64), ids[1:n * 64 + 1].reshape(n, 64)


def _model(name, optimizer, vocab):
    import fastrnn as fr
    from fastrnn import layers, losses, optim
    from fastrnn.models import Sequential

    fr.set_seed(0)
    if name == "sentiment":
        m = Sequential([layers.Embedding(10000, 100, mask_zero=True), layers.LSTM(128),
                        layers.Dense(1, activation="sigmoid")])
        m.compile(optimizer=optimizer(optim.Adam(1e-3)), loss="binary_crossentropy")
        m.build((40,))
    else:
        m = Sequential([layers.Embedding(vocab, 32), layers.LSTM(256, return_sequences=True), layers.Dense(vocab)])
        m.compile(optimizer=optimizer(optim.Adam(2e-3, global_clipnorm=5.0)),
                  loss=losses.SparseCategoricalCrossentropy(from_logits=True))
        m.build((64,))
    return m


class _Ranks:
    def __init__(self):
        from mpi4py import MPI

        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()

    def quiet_barrier(self):
        """A barrier that sleeps instead of spinning (MPICH's Barrier busy-polls a core)."""
        req = self.comm.Ibarrier()
        while not req.Test():
            time.sleep(0.005)

    def max(self, value):
        return self.comm.allreduce(value, op=self.MPI.MAX)


def _time_steps(fn, steps):
    ts = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _bench_model(name, args, R, waits):
    """Block medians of the four variants for one model (see the module docstring)."""
    import fastrnn as fr
    import fastrnn.distributed as dist

    x, y = _data(name)
    vocab = int(x.max()) + 1
    B = 64 if name == "sentiment" else 32
    single = _model(name, lambda o: o, vocab)
    dp = _model(name, dist.DistributedOptimizer, vocab)
    dp_serial = _model(name, lambda o: dist.DistributedOptimizer(o, overlap=False), vocab)
    nb = len(x) // B
    state = {"A": 0, "B": 0, "C": 0, "D": 0, "E": 0}

    def batch(key, size, part=None):
        i = state[key] % nb
        state[key] += 1
        xb, yb = x[i * B:i * B + size], y[i * B:i * B + size]
        return (xb, yb) if part is None else dist.shard(xb, yb)

    best = {k: float("inf") for k in "ABCDE"}
    comm_s = {"B": float("inf"), "D": float("inf"), "E": float("inf")}
    for _ in range(args.rounds):
        for key in "ACBED":
            R.quiet_barrier()
            if key in "AC":
                if R.rank == 0:
                    fr.set_num_threads(2 if key == "A" else 1)
                    single.train_on_batch(*batch(key, B))  # untimed first call
                    best[key] = min(best[key], _time_steps(lambda k=key: single.train_on_batch(*batch(k, B)),
                                                           args.steps))
                continue
            fr.set_num_threads(1)

            def step(k=key):
                # B, E: each rank half of the batch; D: each rank a whole batch (of a window of 2 B)
                xb, yb = batch(k, 2 * B if k == "D" else B, part=True)
                (dp_serial if k == "E" else dp).train_on_batch(xb, yb)

            step()  # untimed first call
            waits.clear()
            R.comm.Barrier()
            t = R.max(_time_steps(step, args.steps))
            best[key] = min(best[key], t)
            comm_s[key] = min(comm_s[key], R.max(statistics.median(waits)))
    grad_bytes = dp.optimizer._reducer.nbytes
    return name, B, best, comm_s, grad_bytes, dp.count_params()


def worker(args):
    import fastrnn as fr
    import fastrnn.distributed as dist
    from fastrnn.distributed import _buckets

    dist.init()
    R = _Ranks()
    waits = []
    finish = _buckets.BucketReducer.finish

    def timed_finish(self):
        t0 = time.perf_counter()
        out = finish(self)
        waits.append(time.perf_counter() - t0)
        return out

    _buckets.BucketReducer.finish = timed_finish
    rows = [_bench_model(name, args, R, waits) for name in args.models]
    sizes = [1 << k for k in range(10, 25, 2)]  # 1 KiB .. 16 MiB
    fr.set_num_threads(1)
    bufs = {nb: np.ones(nb // 4, dtype=np.float32) for nb in sizes}
    calls = {nb: [] for nb in sizes}
    for _ in range(args.rounds):  # sizes interleaved, so a burst of load hits all of them alike
        for nb in sizes:
            buf = bufs[nb]
            R.comm.Allreduce(R.MPI.IN_PLACE, buf)  # untimed first call
            R.comm.Barrier()
            for _ in range(max(3, min(40, (1 << 20) // nb * 3))):
                t0 = time.perf_counter()
                R.comm.Allreduce(R.MPI.IN_PLACE, buf)
                calls[nb].append(time.perf_counter() - t0)
    # per size: the median and the fastest single call, each the slower of the two ranks'
    ar = [(nb, R.max(statistics.median(calls[nb])), R.max(min(calls[nb]))) for nb in sizes]
    if R.rank == 0:
        report(rows, ar)


def report(rows, ar):
    import fastrnn as fr

    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    import mpi4py
    from mpi4py import MPI

    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {cpu}, {os.cpu_count()} cores; "
          f"Python {platform.python_version()}, fastrnn {fr.__version__}, mpi4py {mpi4py.__version__}, "
          f"{MPI.Get_library_version().splitlines()[0].strip()}; load: {load}\n")
    print("| model | global batch | A: 1 proc x 2 thr | B: 2 ranks x 1 thr | B / A | C: 1 proc x 1 thr | "
          "2-rank efficiency C / (2 B) | comm not hidden (B) | E: B without overlap (comm) | "
          "D: 2 ranks x full batch | D samples/s vs A | gradient bytes / step |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, B, best, comm_s, grad_bytes, nparams in rows:
        a, b, c, d, e = (best[k] * 1e3 for k in "ABCDE")
        print(f"| {name} ({nparams:,} params) | {B} | {a:.1f} ms | {b:.1f} ms | {b / a:.2f} | {c:.1f} ms | "
              f"{c / (2 * b):.0%} | {comm_s['B'] * 1e3:.2f} ms | {e:.1f} ms ({comm_s['E'] * 1e3:.2f} ms) | "
              f"{d:.1f} ms | {(2 * B / d) / (B / a):.2f}x | "
              f"{grad_bytes / 2**20:.2f} MiB |")
    print("\n| all-reduce size | median call (2 ranks, MPI_Allreduce in place) | fastest call | "
          "bandwidth at the median (= bus bandwidth for 2 ranks) | at the fastest |")
    print("|---|---|---|---|---|")
    for nbytes, med, fast in ar:
        size = f"{nbytes // 1024} KiB" if nbytes < 2**20 else f"{nbytes // 2**20} MiB"
        print(f"| {size} | {med * 1e6:.1f} µs | {fast * 1e6:.1f} µs | {nbytes / med / 1e9:.2f} GB/s | "
              f"{nbytes / fast / 1e9:.2f} GB/s |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="2 rounds of 3 steps")
    ap.add_argument("--models", nargs="+", default=["sentiment", "char_lm"], choices=["sentiment", "char_lm"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per block")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.steps = 2, 3
    if args.worker:
        worker(args)
        return 0
    return _launch(["--models", *args.models, "--rounds", str(args.rounds), "--steps", str(args.steps)])


if __name__ == "__main__":
    sys.exit(main())
