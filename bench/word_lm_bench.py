"""A word-level language model's training step, fastrnn against PyTorch (the setup of PyTorch's
examples/word_language_model): Embedding(V, 200) -> dropout 0.2 -> two LSTM(200) layers (dropout
0.2 between and after) -> Linear(V) decoder, sparse softmax cross-entropy from logits, plain SGD
lr 20 with global gradient-norm clipping 0.25, bptt 35, batch 20, the LSTM state carried across
chunks (not backpropagated through).

    python bench/word_lm_bench.py [--vocab 18328] [--threads 2] [--rounds 5] [--min-time 6]

fastrnn runs as a user writes it: Sequential layers with stateful LSTMs and train_on_batch on
each chunk. It is timed three times in the same process: as it is now; with the decoder + loss
path as it was before issue 12's decoder work (fresh logits arrays, the loss gradient in a buffer
of its own divided by the count in a NumPy pass, the bias gradient in a column-sum pass:
decoder_path); and with that path and the C++ loss and Embedding kernels switched off (their
NumPy forms), interleaved with PyTorch
(fastrnn._bench.timeit_interleaved: alternating blocks, the quietest block's median kept, and
the fastest single step). The corpus is synthetic: Zipf-distributed word ids (exponent 1.1) over
V words, the shape of a real corpus's frequencies, fixed seed.

FLOPs per step (2 per multiply-add): LSTMs 3 x 2 x T B 4H (I + H) per layer (forward, and a
backward of twice the forward); decoder 3 x 2 N H V (forward, weight gradient, input gradient),
N = T B = 700 rows; the softmax, embedding and optimizer are memory-bound and not counted. The
FMA peak: measured (fastrnn.backend.fma_peak, the run's thread count), and the nominal figure
beside it: Zen 4 issues two 256-bit FMAs per cycle per core (AVX-512 double-pumped), 32 float
FLOP/cycle/core; the share of peak uses the larger of the two.
Also a per-part profile of fastrnn's step (each layer's forward and backward, loss, zero_grad,
optimizer step with the clipping; "rest" = Python and glue). Not a test: run by hand and copy the
printed table into bench/RESULTS.md with the load (uptime) it prints.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")  # before numpy: the BLAS at the bench's thread count

import datetime
import platform
import subprocess
import time

import numpy as np
import torch

import fastrnn
import fastrnn._crossentropy as _xent
import fastrnn.layers.core as _layers_core
from fastrnn import _bench, backend, layers, losses, models, ops, optim

T, B, E, H = 35, 20, 200, 200  # bptt, batch, embedding size, hidden size
LR, CLIP, DROPOUT = 20.0, 0.25, 0.2


def corpus(vocab, n_tokens, seed=0):
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, vocab + 1, dtype=np.float64)
    p = ranks ** -1.1
    return rng.choice(vocab, size=n_tokens, p=p / p.sum()).astype(np.int64)


def flops_per_step(vocab):
    lstm = 2 * 3 * 2.0 * T * B * 4 * H * (E + H)  # two layers (I = E = H here)
    decoder = 3 * 2.0 * T * B * H * vocab
    return lstm, decoder


# ---- fastrnn --------------------------------------------------------------------------------
def fastrnn_model(vocab, seed=0):
    model = models.Sequential([
        layers.Embedding(vocab, E, seed=seed),
        layers.Dropout(DROPOUT),
        layers.LSTM(H, return_sequences=True, stateful=True),
        layers.Dropout(DROPOUT),
        layers.LSTM(H, return_sequences=True, stateful=True),
        layers.Dropout(DROPOUT),
        layers.Dense(vocab),
    ])
    model.compile(optimizer=optim.SGD(learning_rate=LR, global_clipnorm=CLIP),
                  loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def kernels(on, decoder=True):
    """Switch fastrnn's C++ loss and Embedding kernels on or off (the NumPy forms); with
    ``decoder`` off, the decoder and the loss take the path they took before the decoder work of
    issue 12 (see decoder_path)."""
    _xent._fused_core = _FUSED_CORE if on else (lambda y_pred: None)
    _layers_core._f32_numpy = _F32_NUMPY if on else (lambda a: False)
    decoder_path(decoder)


_FUSED_CORE = _xent._fused_core
_F32_NUMPY = _layers_core._f32_numpy
_MEAN_IN_KERNEL = _xent._MeanInKernel._sum_and_mean_grad
_MATMUL_ACC = ops._matmul_acc
_DENSE_POOL = _layers_core.POOL


class _NoPool:
    """A buffer pool that keeps nothing (the Dense layer's outputs freshly allocated, as before)."""

    @staticmethod
    def take(shape):
        return None

    @staticmethod
    def give(a):
        return None


def _mean_after_the_kernel(self, y_true, y_pred, mask=None, sample_weight=None, into=None):
    """The training step's mean as it was: the loss's gradient of the sum (in a buffer of its own,
    never over the logits: ``into`` is ignored), then divided by the count (in place when the
    buffer is the fused kernel's pooled one)."""
    total, count, grad = self.sum_and_grad(y_true, y_pred, mask, sample_weight)
    if count and _xent.grad_from_pool(grad):
        return total, count, np.divide(grad, count, out=grad)
    return total, count, (grad / count if count else np.zeros_like(grad))


def _matmul_acc_then_colsum(a, b, out, colsum=None):
    """The weight gradient's GEMM, then the bias gradient in a pass of its own (as before)."""
    _MATMUL_ACC(a, b, out)
    if colsum is not None:
        ops._colsum_acc(b, colsum)


def decoder_path(now):
    """The decoder and loss as they are now (``now``: the Dense output from the buffer pool, the
    mean's 1 / count inside the loss kernel, its gradient written over the logits, the bias
    gradient from the weight gradient GEMM's packed blocks) or as before (a fresh output array per
    step, the gradient in a buffer of its own, a division pass over it, a column-sum pass over
    it). The GEMM kernels themselves are this build's in both."""
    _xent._MeanInKernel._sum_and_mean_grad = _MEAN_IN_KERNEL if now else _mean_after_the_kernel
    ops._matmul_acc = _MATMUL_ACC if now else _matmul_acc_then_colsum
    _layers_core.POOL = _DENSE_POOL if now else _NoPool


def chunks(data):
    """Endless (x, y) chunks of [B, T] ids, batch-major, in corpus order."""
    cols = data.size // B
    stream = data[:cols * B].reshape(B, cols)
    while True:
        for i in range(0, cols - T - 1, T):
            yield stream[:, i:i + T], stream[:, i + 1:i + 1 + T]


def fastrnn_step(model, data, use_kernels, decoder=True):
    it = chunks(data)

    def step():
        kernels(use_kernels, decoder)
        x, y = next(it)
        return model.train_on_batch(x, y)
    return step


# ---- PyTorch, as in examples/word_language_model ------------------------------------------------
class RNNModel(torch.nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.drop = torch.nn.Dropout(DROPOUT)
        self.encoder = torch.nn.Embedding(vocab, E)
        self.rnn = torch.nn.LSTM(E, H, 2, dropout=DROPOUT)
        self.decoder = torch.nn.Linear(H, vocab)
        torch.nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        torch.nn.init.zeros_(self.decoder.bias)
        torch.nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, x, hidden):
        emb = self.drop(self.encoder(x))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        return self.decoder(output).view(-1, self.decoder.out_features), hidden


def torch_step(model, data):
    cols = data.size // B
    stream = torch.from_numpy(data[:cols * B].reshape(B, cols).T.copy())  # [L, B], as batchify
    criterion = torch.nn.CrossEntropyLoss()
    state = {"i": 0, "hidden": (torch.zeros(2, B, H), torch.zeros(2, B, H))}

    def step():
        i = state["i"]
        if i + T + 1 >= cols:
            i = 0
        x, y = stream[i:i + T], stream[i + 1:i + 1 + T].reshape(-1)
        state["i"] = i + T
        hidden = tuple(h.detach() for h in state["hidden"])  # repackage_hidden
        model.zero_grad()
        output, hidden = model(x, hidden)
        loss = criterion(output, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(p.grad, alpha=-LR)
        state["hidden"] = hidden
        return loss.item()
    return step


# ---- the FMA peak ---------------------------------------------------------------------------------
def nominal_fma_peak():
    """32 float FLOP/cycle/core (Zen 4: two 256-bit FMA pipes) x 2 cores x the highest clock the
    kernel reports (cpuinfo_max_freq, else /proc/cpuinfo's MHz)."""
    ghz = None
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as f:
            ghz = int(f.read()) / 1e6
    except OSError:
        try:
            with open("/proc/cpuinfo") as f:
                mhz = [float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")]
            ghz = max(mhz) / 1e3 if mhz else None
        except OSError:
            pass
    return (32 * 2 * ghz * 1e9, ghz) if ghz else (None, None)


# ---- the per-part profile of fastrnn's step -------------------------------------------------------
def profile(model, data, steps, use_kernels, decoder=True):
    """Seconds per step spent in each part of train_on_batch (medians over `steps` steps)."""
    kernels(use_kernels, decoder)
    parts = {}
    wrapped = []

    def wrap(obj, attr, name):
        fn = getattr(obj, attr)

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                parts[name] = parts.get(name, 0.0) + time.perf_counter() - t0
        setattr(obj, attr, timed)
        wrapped.append((obj, attr))

    names = {id(ly): type(ly).__name__.lower() for ly in model.layers}
    counts = {}
    for ly in model.layers:
        base = names[id(ly)]
        counts[base] = counts.get(base, 0) + 1
        label = base if base == "embedding" or base == "dense" else f"{base}{counts[base]}"
        label = {"dense": "decoder"}.get(label, label)
        wrap(ly, "call", f"{label} fwd")
        wrap(ly, "_backward", f"{label} bwd")
    wrap(model.loss, "_sum_and_mean_grad", "loss (softmax CE + grad of the mean)")
    wrap(model.optimizer, "step", "optimizer (clip + SGD)")
    wrap(model, "zero_grad", "zero_grad")
    it = chunks(data)
    per_step = []
    totals = []
    for _ in range(steps):
        parts.clear()
        x, y = next(it)
        t0 = time.perf_counter()
        model.train_on_batch(x, y)
        totals.append(time.perf_counter() - t0)
        per_step.append(dict(parts))
    for obj, attr in wrapped:
        delattr(obj, attr)
    keys = list(per_step[0])
    med = {k: float(np.median([p.get(k, 0.0) for p in per_step])) for k in keys}
    total = float(np.median(totals))
    # dropout layers: folded into one line
    drop = sum(v for k, v in med.items() if k.startswith("dropout"))
    out = {k: v for k, v in med.items() if not k.startswith("dropout")}
    out["dropout (3 layers, fwd + bwd)"] = drop
    out["rest (Python, glue)"] = total - sum(out.values())
    return total, out


def parts_bench(vocab, min_time, rounds):
    """The loss and the Embedding alone, on the step's shapes: fastrnn's kernels against their NumPy
    forms and PyTorch's (forward + gradient), interleaved. Returns rows (name, kernel, numpy, torch)."""
    rng = np.random.default_rng(1)
    N = T * B
    z = (rng.normal(size=(N, vocab)) * 2).astype(np.float32)
    ids = rng.integers(0, vocab, N)
    loss = losses.SparseCategoricalCrossentropy(from_logits=True)
    zt, idst = torch.from_numpy(z.copy()).requires_grad_(), torch.from_numpy(ids)

    def torch_loss():
        zt.grad = None
        torch.nn.functional.cross_entropy(zt, idst, reduction="sum").backward()

    def fr_loss(on):
        def f():
            kernels(on)
            loss.sum_and_grad(ids, z)
        return f

    rows = []
    t = _bench.timeit_interleaved([fr_loss(True), fr_loss(False), torch_loss], min_time=min_time, rounds=rounds)
    rows.append((f"sparse softmax CE from logits [{N}, {vocab}], value + gradient", *t))
    table = rng.normal(size=(vocab, E)).astype(np.float32)
    ids2 = rng.integers(0, vocab, (B, T))
    dy = rng.normal(size=(B, T, E)).astype(np.float32)
    emb = layers.Embedding(vocab, E, seed=0)
    emb.embeddings.value[...] = table
    temb = torch.nn.Embedding(vocab, E)
    tids, tdy = torch.from_numpy(ids2), torch.from_numpy(dy)

    def fr_emb(on):
        def f():
            kernels(on)
            emb(ids2, training=True)
            emb.backward(dy)
        return f

    def torch_emb():
        temb.weight.grad = None
        temb(tids).backward(tdy)

    t = _bench.timeit_interleaved([fr_emb(True), fr_emb(False), torch_emb], min_time=min_time, rounds=rounds)
    rows.append((f"Embedding({vocab}, {E}) on [{B}, {T}] ids, forward + backward (grad accumulated)", *t))
    # the decoder and its loss: Dense(V) forward on [N, 200], softmax CE of the mean, backward
    # (dW, db accumulated, dx), as now and as before; PyTorch's Linear + cross_entropy the same
    x = rng.normal(size=(N, H)).astype(np.float32)
    dec = layers.Dense(vocab, seed=0)
    dec.build((H,))

    def fr_dec(now):
        def f():
            kernels(True, now)
            out = dec(x, training=True)
            _, _, g = loss._sum_and_mean_grad(ids, out, into=out)  # over the logits, as the step (now)
            dec.backward(g)
            if _xent.grad_from_pool(g):
                _xent.POOL.give(g)
        return f

    tlin = torch.nn.Linear(H, vocab)
    xt = torch.from_numpy(x)

    def torch_dec():
        tlin.zero_grad()
        torch.nn.functional.cross_entropy(tlin(xt), idst).backward()

    t = _bench.timeit_interleaved([fr_dec(True), fr_dec(False), torch_dec], min_time=min_time, rounds=rounds)
    rows.append((f"Dense({vocab}) on [{N}, {H}] + softmax CE (mean): forward, loss, backward (dW, db, dx); "
                 "fastrnn now / the path before / PyTorch", *t))
    kernels(True)
    # the sentiment model's loss: binary crossentropy on [64, 1] sigmoid outputs (NumPy form)
    bce = losses.BinaryCrossentropy()
    yp = rng.random((64, 1)).astype(np.float32)
    yt = (rng.random((64, 1)) < 0.5).astype(np.float32)
    t_bce = _bench.timeit(lambda: bce.sum_and_grad(yt, yp), min_time=0.3)
    rows.append(("BinaryCrossentropy on [64, 1] (the sentiment model's loss; NumPy only)", t_bce, None, None))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", type=int, default=18328)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-time", type=float, default=6.0, help="seconds of timed steps per function in all")
    p.add_argument("--profile-steps", type=int, default=7)
    a = p.parse_args(argv)
    V = a.vocab
    fastrnn.set_num_threads(a.threads)
    torch.set_num_threads(a.threads)
    data = corpus(V, 200_000)
    fr_model = fastrnn_model(V)
    th_model = RNNModel(V)
    th_model.train()
    fns = [fastrnn_step(fr_model, data, True), fastrnn_step(fr_model, data, True, False),
           fastrnn_step(fr_model, data, False, False), torch_step(th_model, data)]
    for f in fns:  # warm up: buffers, thread pools, first-call costs
        f()
        f()
    load_before = os.getloadavg()
    medians, fastest = _bench.timeit_interleaved(fns, min_time=a.min_time, rounds=a.rounds, min_runs=3,
                                                  with_fastest=True)
    load_after = os.getloadavg()
    lstm_f, dec_f = flops_per_step(V)
    total_f = lstm_f + dec_f
    meas = backend.fma_peak(a.threads, seconds=2.0)
    nom, ghz = nominal_fma_peak()
    part_rows = parts_bench(V, max(1.0, a.min_time / 4), a.rounds)
    prof_after = profile(fr_model, data, a.profile_steps, True)
    prof_unfused = profile(fr_model, data, a.profile_steps, True, False)
    prof_before = profile(fr_model, data, a.profile_steps, False, False)
    kernels(True)

    print("\n".join(_bench.environment(a.threads)))
    print(f"lscpu: {_cpu_flags_summary()}")
    print(f"date/time: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='minutes')}; "
          f"load average (1/5/15 min) before {_fmt_load(load_before)}, after {_fmt_load(load_after)}")
    print(f"shape: V = {V}, embedding {E}, 2 x LSTM({H}), bptt T = {T}, batch B = {B}; threads {a.threads} "
          f"(fastrnn, torch, OpenBLAS)")
    print(f"FLOP per step: LSTMs {lstm_f / 1e9:.2f} G + decoder {dec_f / 1e9:.2f} G = {total_f / 1e9:.2f} G "
          "(2 FLOP per multiply-add)")
    peak_line = []
    if meas:
        peak_line.append(f"measured {meas / 1e9:.0f} GFLOP/s (backend.fma_peak: {a.threads} threads of FMA chains, "
                         "the fastest 20 ms run; under load it reads low)")
    if nom:
        peak_line.append(f"nominal {nom / 1e9:.0f} GFLOP/s (32 FLOP/cycle/core x 2 cores x {ghz:.2f} GHz)")
    print("FMA peak: " + "; ".join(peak_line or ["unknown"]))
    peak = max(nom or 0.0, meas or 0.0) or None
    print()
    print("| step (2 threads) | quietest-block median (ms) | fastest step (ms) | vs PyTorch (median) "
          "| share of FMA peak (median, fastest) |")
    print("|---|---:|---:|---:|---:|")
    names = ["fastrnn now", "fastrnn, the decoder + loss path before issue 12's decoder work",
             "fastrnn, NumPy loss + Embedding (and the decoder path before)", f"PyTorch {torch.__version__}"]
    for name, m, f in zip(names, medians, fastest):
        share = f"{100 * total_f / m / peak:.1f} %, {100 * total_f / f / peak:.1f} %" if peak else "n/a"
        print(f"| {name} | {m * 1e3:.1f} | {f * 1e3:.1f} | {medians[-1] / m:.2f}x | {share} |")
    print()
    print("| part alone (2 threads) | fastrnn (ms) | fastrnn before: NumPy form / old path (ms) | PyTorch (ms) "
          "| speed-up vs before, vs PyTorch |")
    print("|---|---:|---:|---:|---:|")
    for name, k, npy, th in part_rows:
        if npy is None:
            print(f"| {name} | | {k * 1e3:.3f} | | |")
        else:
            print(f"| {name} | {k * 1e3:.2f} | {npy * 1e3:.2f} | {th * 1e3:.2f} | {npy / k:.2f}x, {th / k:.2f}x |")
    print()
    print("fastrnn step, per part (medians of "
          f"{a.profile_steps} profiled steps, ms): now | decoder path before | NumPy loss + Embedding")
    print("| part | now (ms) | decoder path before (ms) | NumPy loss + Embedding (ms) |")
    print("|---|---:|---:|---:|")
    (ta, pa), (tu, pu), (tb, pb) = prof_after, prof_unfused, prof_before
    for k in pa:
        print(f"| {k} | {pa[k] * 1e3:.1f} | {pu.get(k, 0.0) * 1e3:.1f} | {pb.get(k, 0.0) * 1e3:.1f} |")
    print(f"| whole step | {ta * 1e3:.1f} | {tu * 1e3:.1f} | {tb * 1e3:.1f} |")


def _fmt_load(t):
    return "/".join(f"{x:.1f}" for x in t)


def _cpu_flags_summary():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return platform.processor()
    keep = ("Model name", "CPU(s):", "Thread(s) per core", "L2 cache", "L3 cache", "CPU max MHz")
    return "; ".join(" ".join(line.split()) for line in out.splitlines() if line.strip().startswith(keep))


if __name__ == "__main__":
    main()
