"""Forecasting the next value of a time series (the time-series lesson, seed 004).

Data: ``generate_time_series`` (two sines with random frequencies and offsets plus noise), 10,000
series of 50 steps plus the value to predict, split 7,000 / 2,000 / 1,000. Models, as in the lesson:

1. naive forecast: the last observed value;
2. linear model: Flatten -> Dense(1) (51 parameters);
3. SimpleRNN(1) (3 parameters);
4. deep RNN: SimpleRNN(20, return_sequences=True) -> SimpleRNN(20) -> Dense(1).

Each network is trained with Adam (learning rate 0.001) on the mean squared error, 20 epochs,
batch size 32, as the Keras code of the lesson does. The script prints the validation MSE next to the
lesson's published figures, the seconds per epoch, and saves a plot of a forecast.

    python examples/time_series.py            # full run (a few minutes on 2 cores)
    python examples/time_series.py --demo     # the quick version run by `python -m fastrnn demo`
    python examples/time_series.py --smoke    # seconds, for tests
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import fastrnn
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
from fastrnn import layers, losses, optim
from fastrnn.data import generate_time_series, train_valid_test_split
from fastrnn.models import Sequential

PUBLISHED = {"naive": 0.020, "linear": 0.004, "simple_rnn": 0.011, "deep_rnn": 0.003}
TITLES = {"naive": "naive forecast", "linear": "linear (Flatten -> Dense(1))",
          "simple_rnn": "SimpleRNN(1)", "deep_rnn": "deep RNN (SimpleRNN(20) x2 -> Dense(1))"}

# (series, steps, epochs, deep-RNN units, learning rate) per mode
MODES = {
    "full": dict(n_series=10_000, n_steps=50, epochs=20, units=20, lr=1e-3),
    # the demo keeps the data and the architectures, trains fewer epochs at a higher learning rate
    "demo": dict(n_series=10_000, n_steps=50, epochs=4, units=20, lr=5e-3),
    "smoke": dict(n_series=600, n_steps=20, epochs=2, units=8, lr=5e-3),
}


# --8<-- [start:model]
def build_model(name, n_steps, units):
    """The lesson's Keras models written with fastrnn."""
    if name == "linear":
        body = [layers.Flatten(input_shape=(n_steps, 1)), layers.Dense(1)]
    elif name == "simple_rnn":
        body = [layers.SimpleRNN(1, input_shape=(None, 1))]
    elif name == "deep_rnn":
        body = [layers.SimpleRNN(units, return_sequences=True, input_shape=(None, 1)),
                layers.SimpleRNN(units),
                layers.Dense(1)]
    else:
        raise ValueError(f"unknown model {name!r}")
    return Sequential(body, name=name)
# --8<-- [end:model]


def mse(y_true, y_pred):
    """The lesson's np.mean(keras.losses.mean_squared_error(y_true, y_pred)), in float64."""
    return float(np.mean(losses.mean_squared_error(np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64))))


def plot_forecast(path, series, y_true, forecasts, histories, naive_mse):
    """Left: one validation series, its true next value and each model's forecast. Right: each
    trained model's training and validation MSE per epoch, beside the naive forecast's."""
    plt = pyplot()
    n = len(series)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(14, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    ax.plot(np.arange(n), series, ".-", color="0.3", label="series")
    ax.plot(n, y_true, "o", color="black", markersize=9, label=f"actual next value: {y_true:+.3f}")
    markers = {"naive": "s", "linear": "^", "simple_rnn": "v", "deep_rnn": "x"}
    for name, value in forecasts.items():
        ax.plot(n, value, markers.get(name, "o"), markersize=8, label=f"{TITLES[name]}: {value:+.3f}")
    ax.set_xlabel("time step")
    ax.set_ylabel("value")
    ax.set_title("Forecasting one step ahead (a validation series)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", title=f"next value (step {n})", title_fontsize=7)
    for i, (name, h) in enumerate(histories.items()):
        epochs = np.arange(1, len(h["loss"]) + 1)
        ax2.plot(epochs, h["val_loss"], "o-", color=f"C{i + 1}", markersize=3, label=f"{name} validation")
        ax2.plot(epochs, h["loss"], "--", color=f"C{i + 1}", alpha=0.6, label=f"{name} training")
    ax2.axhline(naive_mse, color="C0", linestyle=":", label=f"naive forecast validation ({naive_mse:.4f})")
    ax2.set_yscale("log")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("MSE")
    ax2.set_title("Training and validation loss")
    ax2.xaxis.get_major_locator().set_params(integer=True)
    ax2.grid(alpha=0.3, which="both")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_mode_args(p, epochs_help="epochs per network (default by mode)",
                  demo_help="all data, fewer epochs (seconds; the full run is 5-11 s on two cores)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=42)
    add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    threads = apply_threads(args.threads)
    mode, cfg = mode_config(args, MODES)
    n_series, n_steps = cfg["n_series"], cfg["n_steps"]

    set_seed(args.seed)
    series = generate_time_series(n_series, n_steps + 1, seed=args.seed)
    n_valid, n_test = n_series // 5, n_series // 10  # 7,000 / 2,000 / 1,000 for 10,000 series
    train, valid, test = train_valid_test_split(series, valid=n_valid, test=n_test)
    X_train, y_train = train[:, :n_steps], train[:, -1]
    X_valid, y_valid = valid[:, :n_steps], valid[:, -1]
    X_test, y_test = test[:, :n_steps], test[:, -1]
    print(f"fastrnn {fastrnn.__version__} | mode: {mode} | {n_series} series of {n_steps} steps "
          f"(train {len(X_train)}, valid {len(X_valid)}, test {len(X_test)}) | epochs {cfg['epochs']}, "
          f"batch {args.batch_size}, Adam lr {cfg['lr']:g} | threads {threads}")

    results = {"naive": {"val_mse": mse(y_valid, X_valid[:, -1]), "test_mse": mse(y_test, X_test[:, -1]),
                         "params": 0, "sec_per_epoch": 0.0}}
    predictions = {"naive": X_valid[:, -1, 0]}
    histories = {}
    for name in ("linear", "simple_rnn", "deep_rnn"):
        model = build_model(name, n_steps, cfg["units"])
        model.compile(optimizer=optim.Adam(learning_rate=cfg["lr"]), loss="mse")
        history, sec = fit_timed(model, X_train, y_train, cfg["epochs"], batch_size=args.batch_size,
                                 validation_data=(X_valid, y_valid), verbose=0, seed=args.seed)
        histories[name] = history.history
        pred_valid = model.predict(X_valid, verbose=0)
        pred_test = model.predict(X_test, verbose=0)
        results[name] = {"val_mse": mse(y_valid, pred_valid), "test_mse": mse(y_test, pred_test),
                         "params": int(model.count_params()), "sec_per_epoch": sec}
        predictions[name] = np.asarray(pred_valid).reshape(-1)
        print(f"  trained {TITLES[name]:<42s} {sec:6.2f} s/epoch  val MSE {results[name]['val_mse']:.4f}",
              flush=True)

    print()
    print(f"{'model':<42s} {'params':>7s} {'val MSE':>9s} {'published':>10s} {'test MSE':>9s} {'s/epoch':>8s}")
    for name, r in results.items():
        print(f"{TITLES[name]:<42s} {r['params']:>7d} {r['val_mse']:>9.4f} {PUBLISHED[name]:>10.3f} "
              f"{r['test_mse']:>9.4f} {r['sec_per_epoch']:>8.2f}")
    if mode != "full":
        print(f"(published figures are for the full run: 20 epochs at lr 0.001; this is the {mode} mode)")

    if not args.no_plot and can_plot():
        k = 0
        path = os.path.join(args.out, "time_series_forecast.png")
        plot_forecast(path, X_valid[k, :, 0], float(y_valid[k, 0]),
                      {name: float(p[k]) for name, p in predictions.items()}, histories,
                      results["naive"]["val_mse"])
        print(f"plot saved to {path}")
    print_results(args, "time_series", mode, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
