"""Sentiment of review sentences with Embedding -> SimpleRNN / LSTM / GRU -> Dense (seeds 000 and 004).

The lessons' Keras models,

    model = Sequential([Embedding(vocab, 100, mask_zero=True), LSTM(128), Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])

trained on real data shipped with fastrnn: the UCI "Sentiment Labelled Sentences" data set, 3,000
review sentences (1,000 each from IMDb, Amazon and Yelp, half positive, half negative) from

    D. Kotzias, M. Denil, N. de Freitas, P. Smyth. "From Group to Individual Labels using Deep
    Features". KDD 2015.

The sentences are shuffled and split 70 / 15 / 15 % into train / validation / test; the word
vocabulary is fitted on the training sentences only; sentences are padded at the end to 40 words
(longer ones, under 1 %, are cut) and ``mask_zero=True`` makes the recurrent layers skip the padding.
Each cell trains with early stopping on the validation loss (best weights restored). The script
prints the test accuracy and the seconds per epoch for each cell and saves the validation curves.

    python examples/sentiment.py            # full run
    python examples/sentiment.py --smoke    # seconds, for tests
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from _common import (
    add_common_args,
    add_mode_args,
    apply_threads,
    can_plot,
    fit_timed,
    mode_config,
    print_results,
    pyplot,
    save_figure,
    set_seed,
)
from fastrnn import callbacks, layers, optim
from fastrnn.data import WordVectorizer, train_valid_test_split
from fastrnn.datasets import SENTIMENT_CITATION, load_sentiment
from fastrnn.models import Sequential

CELLS = {"SimpleRNN": layers.SimpleRNN, "LSTM": layers.LSTM, "GRU": layers.GRU}

MODES = {
    "full": dict(n_sentences=None, maxlen=40, embed=100, units=128, epochs=10, patience=2, lr=1e-3),
    "smoke": dict(n_sentences=400, maxlen=20, embed=16, units=16, epochs=2, patience=1, lr=3e-3),
}


# --8<-- [start:model]
def build_model(cell, vocab_size, cfg, seed):
    """Embedding(mask_zero=True) -> cell(units) -> Dense(1, sigmoid), as in the lessons."""
    return Sequential([
        layers.Embedding(vocab_size, cfg["embed"], mask_zero=True, input_length=cfg["maxlen"]),
        CELLS[cell](cfg["units"]),
        layers.Dense(1, activation="sigmoid"),
    ], name=f"sentiment_{cell.lower()}")
# --8<-- [end:model]


def plot_curves(path, curves, test_acc, n_sentences):
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (cell, h) in enumerate(curves.items()):
        epochs = np.arange(1, len(h["val_loss"]) + 1)
        color = f"C{i}"
        ax1.plot(epochs, h["val_loss"], "o-", color=color, label=f"{cell} validation")
        ax1.plot(epochs, h["loss"], "--", color=color, alpha=0.6, label=f"{cell} training")
        if h.get("val_accuracy"):
            ax2.plot(epochs, h["val_accuracy"], "o-", color=color, label=f"{cell} (test {test_acc[cell]:.3f})")
    ax1.set_title("binary cross-entropy")
    ax2.set_title("validation accuracy (test accuracy in the legend)")
    for ax in (ax1, ax2):
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Sentiment of {n_sentences:,} review sentences (Kotzias et al., KDD 2015)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_mode_args(p, epochs_help="maximum epochs per cell (default by mode)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--cells", default="SimpleRNN,LSTM,GRU", help="comma-separated subset of SimpleRNN,LSTM,GRU")
    p.add_argument("--seed", type=int, default=0)
    add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    threads = apply_threads(args.threads)
    mode, cfg = mode_config(args, MODES)
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    for c in cells:
        if c not in CELLS:
            raise SystemExit(f"--cells: unknown cell {c!r}; choose from {', '.join(CELLS)}")

    set_seed(args.seed)
    sentences, labels, source = load_sentiment()
    idx = np.random.default_rng(args.seed).permutation(len(sentences))
    if cfg["n_sentences"]:
        idx = idx[:cfg["n_sentences"]]
    sentences = [sentences[i] for i in idx]
    labels = labels[idx].astype(np.float32).reshape(-1, 1)
    source = np.asarray(source)[idx]

    (s_tr, y_tr, _src_tr), (s_va, y_va, _), (s_te, y_te, src_te) = train_valid_test_split(
        np.asarray(sentences, dtype=object), labels, source, valid=0.15, test=0.15)
    vec = WordVectorizer().fit(list(s_tr))
    encode = lambda s: vec(list(s), maxlen=cfg["maxlen"], padding="post", truncating="post")  # noqa: E731
    x_tr, x_va, x_te = encode(s_tr), encode(s_va), encode(s_te)
    print(f"Sentiment Labelled Sentences: {len(sentences)} sentences (train {len(x_tr)}, valid {len(x_va)}, "
          f"test {len(x_te)}), vocabulary {vec.vocab_size} words from the training part, maxlen {cfg['maxlen']}")
    print(f"  data: {SENTIMENT_CITATION}")
    print(f"  model: Embedding({vec.vocab_size}, {cfg['embed']}, mask_zero=True) -> <cell>({cfg['units']}) -> "
          f"Dense(1, sigmoid); Adam lr {cfg['lr']:g}, batch {args.batch_size}, up to {cfg['epochs']} epochs, "
          f"early stopping (patience {cfg['patience']}); threads {threads}")

    results, curves, models = {}, {}, {}
    for cell in cells:
        model = build_model(cell, vec.vocab_size, cfg, args.seed)
        model.compile(optimizer=optim.Adam(learning_rate=cfg["lr"]), loss="binary_crossentropy",
                      metrics=["accuracy"])
        stop = callbacks.EarlyStopping(monitor="val_loss", patience=cfg["patience"], restore_best_weights=True)
        history, sec = fit_timed(model, x_tr, y_tr, cfg["epochs"], batch_size=args.batch_size,
                                 validation_data=(x_va, y_va), callbacks=[stop], verbose=0, seed=args.seed)
        p_te = model.predict(x_te).reshape(-1)
        correct = (p_te > 0.5) == (y_te.reshape(-1) > 0.5)
        h = history.history
        val_acc = h.get("val_accuracy") or h.get("val_acc") or []
        results[cell] = {
            "test_accuracy": float(correct.mean()),
            "test_accuracy_by_source": {s: float(correct[src_te == s].mean()) for s in ("imdb", "amazon", "yelp")
                                        if np.any(src_te == s)},
            "best_val_loss": float(min(h["val_loss"])),
            "epochs_run": len(h["val_loss"]),
            "sec_per_epoch": sec,
            "params": int(model.count_params()),
        }
        curves[cell] = {"loss": list(map(float, h["loss"])), "val_loss": list(map(float, h["val_loss"])),
                        "val_accuracy": list(map(float, val_acc))}
        models[cell] = model
        print(f"  trained {cell:<9s} {results[cell]['epochs_run']:2d} epochs, {sec:6.2f} s/epoch, "
              f"test accuracy {results[cell]['test_accuracy']:.3f}", flush=True)

    print()
    print(f"{'cell':<10s} {'params':>8s} {'test acc':>9s} {'imdb':>6s} {'amazon':>7s} {'yelp':>6s} "
          f"{'epochs':>7s} {'s/epoch':>8s}")
    for cell, r in results.items():
        by = r["test_accuracy_by_source"]
        print(f"{cell:<10s} {r['params']:>8d} {r['test_accuracy']:>9.3f} {by.get('imdb', float('nan')):>6.3f} "
              f"{by.get('amazon', float('nan')):>7.3f} {by.get('yelp', float('nan')):>6.3f} {r['epochs_run']:>7d} "
              f"{r['sec_per_epoch']:>8.2f}")
    print(f"(chance level 0.5; {mode} mode)")

    best = max(results, key=lambda c: results[c]["test_accuracy"])
    demo = ["The food was absolutely wonderful and the staff were friendly.",
            "Terrible battery life, it broke after two days.",
            "Not worth the money."]
    probs = models[best].predict(encode(demo)).reshape(-1)
    print(f"\n{best} on new sentences (probability of positive):")
    for s, p in zip(demo, probs):
        print(f"  {p:.2f}  {s}")

    if not args.no_plot and can_plot():
        path = os.path.join(args.out, "sentiment_curves.png")
        plot_curves(path, curves, {c: r["test_accuracy"] for c, r in results.items()}, len(sentences))
        print(f"plot saved to {path}")
    print_results(args, "sentiment", mode, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
