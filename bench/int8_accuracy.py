"""int8 and bf16 accuracy on the lessons' trained models: the sentiment LSTM's test accuracy and
the character LM's validation loss, float32 against fastrnn.quantize's int8 and bf16 copies of the
same model.

    python bench/int8_accuracy.py [--char-epochs 5] [--seed 0]

The sentiment model is examples/sentiment.py's (Embedding(mask_zero) -> LSTM(128) -> Dense(1,
sigmoid), Adam, early stopping on the validation loss); the character LM is examples/char_lm.py's
(Embedding -> LSTM(256) -> Dense(V), Adam with global-norm clipping), trained for --char-epochs.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))

import char_lm  # noqa: E402
import fastrnn as fr  # noqa: E402
import sentiment  # noqa: E402
from fastrnn import callbacks, layers, losses, optim  # noqa: E402
from fastrnn.data import CharVectorizer, WordVectorizer, train_valid_test_split  # noqa: E402
from fastrnn.datasets import load_sentiment, load_tinyshakespeare  # noqa: E402


def sentiment_accuracy(seed):
    cfg = sentiment.MODES["full"]
    fr.set_seed(seed)
    sentences, labels, source = load_sentiment()
    idx = np.random.default_rng(seed).permutation(len(sentences))
    sentences = [sentences[i] for i in idx]
    labels = labels[idx].astype(np.float32).reshape(-1, 1)
    (s_tr, y_tr, _), (s_va, y_va, _), (s_te, y_te, _) = train_valid_test_split(
        np.asarray(sentences, dtype=object), labels, np.asarray(source)[idx], valid=0.15, test=0.15)
    vec = WordVectorizer().fit(list(s_tr))

    def encode(s):
        return vec(list(s), maxlen=cfg["maxlen"], padding="post", truncating="post")

    x_tr, x_va, x_te = encode(s_tr), encode(s_va), encode(s_te)
    model = sentiment.build_model("LSTM", vec.vocab_size, cfg, seed)
    model.compile(optimizer=optim.Adam(learning_rate=cfg["lr"]), loss="binary_crossentropy", metrics=["accuracy"])
    stop = callbacks.EarlyStopping(monitor="val_loss", patience=cfg["patience"], restore_best_weights=True)
    model.fit(x_tr, y_tr, epochs=cfg["epochs"], batch_size=32, validation_data=(x_va, y_va), callbacks=[stop],
              verbose=0)
    acc = {}
    for name, m in (("float32", model), ("int8", fr.quantize(model)), ("bf16", fr.quantize(model, "bf16"))):
        p = m.predict(x_te).reshape(-1)
        acc[name] = float(((p > 0.5) == (y_te.reshape(-1) > 0.5)).mean())
    return acc, len(x_te)


def char_lm_loss(seed, epochs):
    cfg = dict(char_lm.MODES["full"], epochs=epochs)
    fr.set_seed(seed)
    text = load_tinyshakespeare(cfg["max_chars"])
    vec = CharVectorizer(pad_token=None, oov_token=None).fit(text)
    ids = vec.encode(text).astype(np.int64)
    cut = int(len(ids) * 0.9)
    x_tr, y_tr = char_lm.make_windows(ids[:cut], cfg["seq_len"])
    x_va, y_va = char_lm.make_windows(ids[cut:], cfg["seq_len"])
    V = vec.vocab_size
    model = fr.Sequential([layers.Embedding(V, cfg["embed"], input_length=cfg["seq_len"]),
                           layers.LSTM(cfg["units"], return_sequences=True), layers.Dense(V)])
    model.compile(optimizer=optim.Adam(learning_rate=cfg["lr"], global_clipnorm=5.0),
                  loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_tr, y_tr, epochs=epochs, batch_size=cfg["batch"], verbose=0, seed=seed)
    out = {}
    for name, m in (("float32", model), ("int8", fr.quantize(model)), ("bf16", fr.quantize(model, "bf16"))):
        if name != "float32":
            m.compile(loss=losses.SparseCategoricalCrossentropy(from_logits=True))
        out[name] = float(m.evaluate(x_va, y_va, verbose=0, batch_size=cfg["batch"]))
    return out, len(x_va)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--char-epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    acc, n_te = sentiment_accuracy(a.seed)
    print(f"sentiment LSTM(128), {n_te} test sentences: accuracy float32 {acc['float32']:.4f}, "
          + ", ".join(f"{mode} {acc[mode]:.4f} ({100 * (acc[mode] - acc['float32']):+.2f} points)"
                      for mode in ("int8", "bf16"))
          + f" [{time.perf_counter() - t0:.0f} s]", flush=True)
    t0 = time.perf_counter()
    loss, n_va = char_lm_loss(a.seed, a.char_epochs)
    print(f"char-LM LSTM(256), {a.char_epochs} epochs, {n_va} validation windows: loss float32 {loss['float32']:.4f}, "
          + ", ".join(f"{mode} {loss[mode]:.4f} ({loss[mode] - loss['float32']:+.4f})" for mode in ("int8", "bf16"))
          + f" nats/char [{time.perf_counter() - t0:.0f} s]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
