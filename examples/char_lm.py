"""Character-level language models (seed 001): the 'hello' RNN, then an LSTM on Shakespeare.

Part 1, 'hello': the characters h, e, l, o as one-hot vectors; a SimpleRNN reads "hell" and is
trained to output the next character at every step, "ello". After training it predicts "ello".

Part 2: an LSTM language model on the first ~300 KB of tiny-shakespeare (shipped with fastrnn):
Embedding -> LSTM(return_sequences=True) -> Dense(vocabulary) trained with the per-step sparse
categorical cross-entropy on windows of consecutive characters; the last 10 % of the text is the
validation set. The script prints the validation loss in nats per character (and bits per
character), and a sample drawn with temperature sampling: the logits are divided by the temperature
before the softmax, so low temperatures give safe, repetitive text and high ones more surprising text.

    python examples/char_lm.py            # full run
    python examples/char_lm.py --smoke    # seconds, for tests
"""
from __future__ import annotations

import argparse
import math
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
from fastrnn import callbacks, layers, losses, optim
from fastrnn.data import CharVectorizer, to_categorical
from fastrnn.datasets import load_tinyshakespeare
from fastrnn.models import Sequential

MODES = {
    "full": dict(max_chars=None, seq_len=64, embed=32, units=256, epochs=20, batch=32, lr=2e-3,
                 sample_len=400),
    "smoke": dict(max_chars=30_000, seq_len=50, embed=16, units=32, epochs=1, batch=32, lr=3e-3,
                  sample_len=80),
}
HELLO = dict(units=8, epochs=60, lr=0.05)


# ----------------------------------------------------------------------------------- part 1
def hello(seed):
    """Train the 'hello' model; returns (prediction for "hell", final loss)."""
    vec = CharVectorizer(pad_token=None, oov_token=None).fit("hello")   # e, h, l, o
    V = vec.vocab_size
    x = to_categorical(vec.encode("hell"), V)[None]                     # [1, 4, 4] one-hot
    y = vec.encode("ello")[None]                                         # [1, 4] next-character ids
    set_seed(seed)
    model = Sequential([
        layers.SimpleRNN(HELLO["units"], return_sequences=True, input_shape=(None, V)),
        layers.Dense(V),                                                 # logits at every step
    ], name="hello")
    model.compile(optimizer=optim.Adam(learning_rate=HELLO["lr"]),
                  loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, epochs=HELLO["epochs"], batch_size=1, verbose=0, shuffle=False)
    pred = vec.decode(model.predict(x)[0].argmax(-1))
    return pred, float(history.history["loss"][-1]), model.count_params()


# ----------------------------------------------------------------------------------- part 2
def make_windows(ids, seq_len):
    """Non-overlapping windows: inputs ids[k : k+L], targets ids[k+1 : k+L+1]."""
    n = (len(ids) - 1) // seq_len
    x = ids[: n * seq_len].reshape(n, seq_len)
    y = ids[1: n * seq_len + 1].reshape(n, seq_len)
    return x, y


def sample(model, vec, prime, length, temperature, rng):
    """Generate ``length`` characters after ``prime``, one step at a time with the state carried.

    The LSTM keeps its state between calls (``carry_state``), so each step costs one time step.
    """
    lstm = next(lay for lay in model.layers if isinstance(lay, layers.LSTM))
    old = lstm.carry_state
    lstm.carry_state = True
    lstm.reset_states()
    try:
        def step(ids):
            out = np.asarray(ids, dtype=np.int64)[None]
            for lay in model.layers:
                out = lay(out)
            return out[0, -1].astype(np.float64)                        # logits of the next character

        logits = step(vec.encode(prime))
        chars = []
        for _ in range(length):
            z = logits / temperature
            p = np.exp(z - z.max())
            p /= p.sum()
            c = int(rng.choice(len(p), p=p))
            chars.append(c)
            logits = step([c])
        return prime + vec.decode(np.asarray(chars, dtype=np.int64))
    finally:
        lstm.carry_state = old
        lstm.reset_states()


class BatchLosses(callbacks.Callback):
    """Records the running mean training loss after every batch, so that a short run (one epoch)
    still draws a curve."""

    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float((logs or {})["loss"]))


def plot_losses(path, history, batch_losses):
    """Training loss over the batches (the epoch's running mean, as the progress bar shows it) and
    the validation loss after each epoch, on an axis of epochs."""
    plt = pyplot()
    h = history.history
    epochs = len(h["loss"])
    per_epoch = len(batch_losses) / max(epochs, 1)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(np.arange(1, len(batch_losses) + 1) / per_epoch, batch_losses, "-", alpha=0.8,
            label="training (running mean within the epoch)")
    ax.plot(np.arange(1, epochs + 1), h["val_loss"], "o-", label="validation (end of epoch)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy (nats per character)")
    ax.set_title("Character LSTM on tiny-shakespeare")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_mode_args(p, epochs_help="epochs for the Shakespeare LSTM (default by mode)")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (> 0)")
    p.add_argument("--prime", default="ROMEO:\n", help="text the sample starts from")
    p.add_argument("--seed", type=int, default=0)
    add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    threads = apply_threads(args.threads)
    mode, cfg = mode_config(args, MODES)
    if not args.temperature > 0:
        raise SystemExit("--temperature must be > 0")

    # part 1 ---------------------------------------------------------------------------------
    pred, loss, n_params = hello(args.seed)
    print(f"'hello' model: SimpleRNN({HELLO['units']}) -> Dense(4), {n_params} parameters, "
          f"{HELLO['epochs']} epochs, final loss {loss:.4f}")
    print(f"  input 'hell' -> predicted {pred!r} (target 'ello')")

    # part 2 ---------------------------------------------------------------------------------
    set_seed(args.seed)
    text = load_tinyshakespeare(cfg["max_chars"])
    vec = CharVectorizer(pad_token=None, oov_token=None).fit(text)
    unknown = sorted(set(args.prime) - set(vec.vocabulary))
    if not args.prime or unknown:
        raise SystemExit(f"--prime must be non-empty text made of the corpus's characters; unknown: {unknown}")
    ids = vec.encode(text).astype(np.int64)
    cut = int(len(ids) * 0.9)
    x_tr, y_tr = make_windows(ids[:cut], cfg["seq_len"])
    x_va, y_va = make_windows(ids[cut:], cfg["seq_len"])
    V = vec.vocab_size
    print(f"\ntiny-shakespeare: {len(text)} characters, vocabulary {V}; {len(x_tr)} training and {len(x_va)} "
          f"validation windows of {cfg['seq_len']} characters")
    # --8<-- [start:model]
    model = Sequential([
        layers.Embedding(V, cfg["embed"], input_length=cfg["seq_len"]),
        layers.LSTM(cfg["units"], return_sequences=True),
        layers.Dense(V),
    ], name="char_lstm")
    model.compile(optimizer=optim.Adam(learning_rate=cfg["lr"], global_clipnorm=5.0),
                  loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    # --8<-- [end:model]
    print(f"  model: Embedding({V}, {cfg['embed']}) -> LSTM({cfg['units']}) -> Dense({V}); "
          f"{model.count_params()} parameters; Adam lr {cfg['lr']:g}, batch {cfg['batch']}, {cfg['epochs']} epochs; "
          f"threads {threads}")
    # the full run takes minutes: one line per epoch (training and validation loss in nats/char)
    batch_losses = BatchLosses()
    history, sec = fit_timed(model, x_tr, y_tr, cfg["epochs"], batch_size=cfg["batch"],
                             validation_data=(x_va, y_va), verbose=2 if mode == "full" else 0, seed=args.seed,
                             callbacks=[batch_losses])
    val = float(model.evaluate(x_va, y_va, verbose=0, batch_size=cfg["batch"]))
    uniform = math.log(V)
    print(f"validation loss {val:.4f} nats per character ({val / math.log(2):.3f} bits; uniform guess "
          f"{uniform:.3f} nats); {sec:.2f} s per epoch")

    rng = np.random.default_rng(args.seed)
    text_out = sample(model, vec, args.prime, cfg["sample_len"], args.temperature, rng)
    print(f"\nsample (temperature {args.temperature:g}):\n{'-' * 60}\n{text_out}\n{'-' * 60}")

    if not args.no_plot and can_plot():
        path = os.path.join(args.out, "char_lm_loss.png")
        plot_losses(path, history, batch_losses.losses)
        print(f"plot saved to {path}")
    print_results(args, "char_lm", mode, {
        "hello": {"prediction": pred, "loss": loss},
        "shakespeare": {"val_loss_nats_per_char": val, "uniform_nats_per_char": uniform, "vocab": V,
                        "sec_per_epoch": sec, "epochs": cfg["epochs"], "params": int(model.count_params()),
                        "sample": text_out},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
