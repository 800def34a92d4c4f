"""Seconds per epoch of the seed lesson's sentiment model, fastrnn against Keras 3 on TensorFlow,
and where fastrnn's epoch goes.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python python bench/sentiment_bench.py

The model of the lessons (issue 12): Embedding(10,000, 100, mask_zero=True) -> LSTM(128) ->
Dense(1, sigmoid), Adam (Keras defaults), binary cross-entropy, batch 64, shuffled, on the same
int32 arrays for both libraries. Data: the sentences of ``fastrnn.datasets.load_sentiment``
(3,000 labelled review sentences), ids from a WordVectorizer capped at 10,000 words, padded at
the end to ``--maxlen`` 56; the rows are cycled to ``--rows`` 9,617 so that an epoch has the
issue's 151 batches of 64 x 56 (one epoch of either library costs the same per row whatever the
text, so the repetition does not flatter either). Threads: 2 for both (fastrnn.set_num_threads;
TF intra-op and inter-op pools of 2).

Timing: one untimed warm-up epoch per variant (Keras traces its step function there), then
``--rounds`` rounds that each time one epoch of every variant in turn (fastrnn before / fastrnn
now / Keras), so that load from other tenants of a shared machine falls on all of them; each
figure is the fastest and the median over the rounds. "fastrnn before" is this build with the
optimizer's NumPy reference and the unfused Dense (the code before the fused optimizer and Dense
kernels); "fastrnn now" is the default.

Profile: one more epoch of "fastrnn now" with timers around each layer's forward and backward,
the loss (value and gradient) and the optimizer step; the rest of the epoch is fit's own Python
(batching, shuffling, metrics, callbacks, zero_grad).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import time
from collections import defaultdict

import numpy as np

VOCAB, EMBED, UNITS, BATCH = 10000, 100, 128, 64


def load_data(rows, maxlen):
    from fastrnn.data import WordVectorizer
    from fastrnn.datasets import load_sentiment

    sentences, labels, _ = load_sentiment()
    vec = WordVectorizer(max_tokens=VOCAB).fit(sentences)
    ids = np.asarray(vec(sentences, maxlen=maxlen, padding="post"), dtype=np.int32)
    idx = np.arange(rows) % len(sentences)
    return ids[idx], labels[idx].astype(np.float32)[:, None], len(sentences), vec.vocab_size


def fastrnn_model(seed=0):
    import fastrnn as fr
    from fastrnn import layers

    fr.set_seed(seed)
    model = fr.Sequential([layers.Embedding(VOCAB, EMBED, mask_zero=True), layers.LSTM(UNITS),
                           layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


@contextlib.contextmanager
def before_kernels(model):
    """The optimizer's NumPy reference and the unfused Dense (ops.matmul, then NumPy for the
    bias, the activation, dW's addition and the bias gradient), as before the fused kernels."""
    from fastrnn import ops

    saved = (ops._dense_forward, ops._matmul_acc, ops._colsum_acc)

    def matmul_acc(a, b, out):
        out += ops.matmul(a, b)

    def colsum_acc(m, out):
        out += m.sum(axis=0)

    ops._dense_forward = lambda *a: (None, False)
    ops._matmul_acc, ops._colsum_acc = matmul_acc, colsum_acc
    model.optimizer._use_fused = False
    try:
        yield
    finally:
        ops._dense_forward, ops._matmul_acc, ops._colsum_acc = saved
        model.optimizer._use_fused = True


def keras_model(threads, seed=0):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(VOCAB, EMBED, mask_zero=True),
                              keras.layers.LSTM(UNITS), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model, tf.__version__, keras.__version__


def profile_epoch(model, x, y):
    """Seconds per part of one epoch of fit (see the module docstring)."""
    parts = defaultdict(float)

    def timed(key, fn):
        def run(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                parts[key] += time.perf_counter() - t0
        return run

    names = {"Embedding": "embedding", "LSTM": "LSTM", "Dense": "Dense"}
    patched = []
    for lay in model.layers:
        kind = names.get(type(lay).__name__, type(lay).__name__)
        for meth, what in (("call", "forward"), ("_backward", "backward")):
            setattr(lay, meth, timed(f"{kind} {what}", getattr(lay, meth)))
            patched.append((lay, meth))
    loss = model.loss
    loss.sum_and_grad = timed("loss (value + gradient)", loss.sum_and_grad)
    opt = model.optimizer
    opt.step = timed("optimizer (Adam step)", opt.step)
    t0 = time.perf_counter()
    model.fit(x, y, epochs=1, batch_size=BATCH, shuffle=True, verbose=0)
    total = time.perf_counter() - t0
    for lay, meth in patched:
        delattr(lay, meth)
    del loss.sum_and_grad, opt.step
    parts["fit's Python (batching, metrics, callbacks, zero_grad)"] = total - sum(parts.values())
    return total, dict(parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=9617)
    ap.add_argument("--maxlen", type=int, default=56)
    ap.add_argument("--no-keras", action="store_true", help="time fastrnn only")
    args = ap.parse_args()

    import fastrnn as fr

    fr.set_num_threads(args.threads)
    x, y, n_sent, vocab = load_data(args.rows, args.maxlen)
    nb = -(-len(x) // BATCH)
    variants = {}
    fm_before, fm_now = fastrnn_model(), fastrnn_model()

    def before_epoch():
        with before_kernels(fm_before):
            fm_before.fit(x, y, epochs=1, batch_size=BATCH, shuffle=True, verbose=0)

    variants["fastrnn before"] = before_epoch
    variants["fastrnn now"] = lambda: fm_now.fit(x, y, epochs=1, batch_size=BATCH, shuffle=True, verbose=0)
    versions = f"fastrnn {fr.__version__} ({fr.backend.isa()}), numpy {np.__version__}"
    if not args.no_keras:
        km, tf_v, k_v = keras_model(args.threads)
        variants["Keras"] = lambda: km.fit(x, y, epochs=1, batch_size=BATCH, shuffle=True, verbose=0)
        versions += f", Keras {k_v} on TensorFlow {tf_v}"

    load0 = os.getloadavg()
    times = {k: [] for k in variants}
    for fn in variants.values():  # warm-up: Keras traces its step function, caches fill
        fn()
    for _ in range(args.rounds):
        for k, fn in variants.items():
            time.sleep(0.05)
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    total, parts = profile_epoch(fm_now, x, y)
    load1 = os.getloadavg()

    print(f"# sentiment_bench {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads, {versions}")
    print(f"# data: {n_sent} sentences (vocabulary {vocab}) cycled to {len(x)} rows x {args.maxlen} tokens, "
          f"{nb} batches of {BATCH}; load average {load0[0]:.1f} before, {load1[0]:.1f} after "
          f"({load1[1]:.1f} over 5 min)")
    best = {k: min(v) for k, v in times.items()}
    print("\n| variant | s / epoch (fastest) | s / epoch (median) | Keras / variant (fastest) |")
    print("|---|---:|---:|---:|")
    for k, v in times.items():
        ratio = f"{best['Keras'] / best[k]:.2f}x" if "Keras" in best else "-"
        print(f"| {k} | {min(v):.2f} | {statistics.median(v):.2f} | {ratio} |")
    print(f"\nProfile of one 'fastrnn now' epoch ({total:.2f} s, {nb} batches):\n")
    print("| part | s / epoch | ms / batch | share |")
    print("|---|---:|---:|---:|")
    for k, v in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v:.3f} | {1e3 * v / nb:.2f} | {100 * v / total:.0f} % |")


if __name__ == "__main__":
    main()
