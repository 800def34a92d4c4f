"""Seq2Seq with Bahdanau attention (seed 002) on a toy task: reverse a sequence of digits.

The source is 4 to 7 random digits, right-padded with 0; the target is the same digits in reverse
order followed by an end token. Token ids: 0 padding, 1 start, 2 end, 3..12 the digits 0..9.
The model is fastrnn.Seq2Seq: Embedding(mask_zero) -> bidirectional LSTM encoder; an LSTM decoder
that at every step attends over the encoder's annotations with the previous decoder state
(e_ij = v^T tanh(W1 s_{i-1} + W2 h_j), alpha = softmax over the unpadded steps, c_i = sum_j alpha_ij
h_j) and reads [embedding(y_{i-1}); c_i]. Training uses teacher forcing; the script then decodes
held-out sequences greedily, prints a few of them and the attention weights of one (for a reversal
the weights run along the anti-diagonal: output i looks at source digit L-1-i).

    python examples/seq2seq_attention.py            # full run
    python examples/seq2seq_attention.py --smoke    # seconds, for tests
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import fastrnn
from _common import (
    add_common_args,
    add_mode_args,
    apply_threads,
    can_plot,
    mode_config,
    print_results,
    pyplot,
    save_figure,
    set_seed,
)
from fastrnn import optim

MODES = {
    "full": dict(train=6000, test=1000, embed=32, units=64, epochs=8, batch=64, lr=5e-3),
    "smoke": dict(train=1200, test=200, embed=16, units=32, epochs=9, batch=32, lr=1e-2),
}
PAD, START, END, DIGIT0 = 0, 1, 2, 3
MIN_LEN, MAX_LEN = 4, 7


def make_data(n, rng):
    """(x [n, MAX_LEN] digit ids right-padded with 0, y [n, MAX_LEN + 1] reversed digits + END)."""
    x = np.zeros((n, MAX_LEN), np.int64)
    y = np.zeros((n, MAX_LEN + 1), np.int64)
    for k in range(n):
        L = int(rng.integers(MIN_LEN, MAX_LEN + 1))
        d = rng.integers(DIGIT0, DIGIT0 + 10, size=L)
        x[k, :L], y[k, :L], y[k, L] = d, d[::-1], END
    return x, y


def text(ids):
    """Digits of a row of ids, up to the first padding or end token."""
    out = []
    for t in ids:
        if t in (PAD, END):
            break
        out.append(str(t - DIGIT0) if t >= DIGIT0 else "?")
    return "".join(out)


def plot_attention(path, rows):
    """Heat maps of the attention weights: one panel per (source, decoded output, weights [out, src])."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(rows), figsize=(3.4 * len(rows), 3.4), gridspec_kw={"wspace": 0.5})
    for ax, (src, out_labels, w) in zip(np.atleast_1d(axes), rows):
        im = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(len(src)), list(src))
        ax.set_yticks(range(len(out_labels)), out_labels)
        ax.set_xlabel("source digit")
        ax.set_ylabel("output step")
        ax.set_title(f"{src} -> {''.join(out_labels[:-1])}", fontsize=9)
    fig.colorbar(im, ax=list(np.atleast_1d(axes)), shrink=0.8, label="attention weight")
    fig.suptitle("Bahdanau attention of the reversal model (the anti-diagonal: output i reads digit L-1-i)",
                 fontsize=9)
    save_figure(fig, path)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_mode_args(p, epochs_help="training epochs (default by mode)")
    p.add_argument("--seed", type=int, default=0)
    add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    apply_threads(args.threads)
    mode, cfg = mode_config(args, MODES)
    set_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x_tr, y_tr = make_data(cfg["train"], rng)
    x_te, y_te = make_data(cfg["test"], rng)

    # --8<-- [start:model]
    model = fastrnn.Seq2Seq(src_vocab=DIGIT0 + 10, tgt_vocab=DIGIT0 + 10, embed_dim=cfg["embed"],
                            units=cfg["units"], cell="lstm", bidirectional=True, attention="bahdanau",
                            start_id=START, end_id=END, max_output_len=MAX_LEN + 1, seed=args.seed)
    model.compile(optimizer=optim.Adam(learning_rate=cfg["lr"], global_clipnorm=5.0), metrics=["accuracy"])
    # --8<-- [end:model]
    print(f"reverse {MIN_LEN}..{MAX_LEN} digits: {len(x_tr)} training, {len(x_te)} test sequences; "
          f"Seq2Seq(bidirectional LSTM {cfg['units']}, Bahdanau attention), {model.count_params()} parameters, "
          f"{cfg['epochs']} epochs, threads {fastrnn.get_num_threads()}")
    t0 = time.perf_counter()
    model.fit(x_tr, y_tr, epochs=cfg["epochs"], batch_size=cfg["batch"], verbose=2 if mode == "full" else 0,
              seed=args.seed)
    seconds = time.perf_counter() - t0
    loss, token_acc = model.evaluate(x_te, y_te, verbose=0)
    # --8<-- [start:decode]
    pred, att = model.predict(x_te, return_attention=True)
    # --8<-- [end:decode]
    exact = float(np.mean([text(p) == text(t) for p, t in zip(pred, y_te)]))
    print(f"trained in {seconds:.1f} s; test loss {loss:.4f}, teacher-forced token accuracy {token_acc:.3f}, "
          f"greedy exact-sequence accuracy {exact:.3f}")

    print("\nsource -> decoded (target)")
    for k in range(6):
        print(f"  {text(x_te[k]):>8} -> {text(pred[k]):<8} ({text(y_te[k])})")

    def weights(k):
        """(source digits, output labels up to and with <end>, weights [outputs, source steps])."""
        src, L = text(x_te[k]), int((x_te[k] != PAD).sum())
        n_out = len(text(pred[k])) + 1
        labels = ["<end>" if pred[k, i] == END else str(pred[k, i] - DIGIT0) for i in range(n_out)]
        return src, labels, att[k, :n_out, :L]

    src, labels, w = weights(0)
    print(f"\nattention weights for {src} (rows: output steps, columns: source digits)")
    print("        " + " ".join(f"{c:>5}" for c in src))
    for label, row in zip(labels, w):
        print(f"  {label:>5} " + " ".join(f"{v:5.2f}" for v in row))
    if not args.no_plot and can_plot():
        path = os.path.join(args.out, "seq2seq_attention.png")
        plot_attention(path, [weights(k) for k in range(3)])
        print(f"plot saved to {path}")

    print_results(args, "seq2seq_attention", mode, {
        "exact_sequence_accuracy": exact, "token_accuracy": float(token_acc), "test_loss": float(loss),
        "seconds": seconds, "epochs": cfg["epochs"], "params": int(model.count_params()),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
