"""ReduceLROnPlateau, CSVLogger, TerminateOnNaN and History.plot: against Keras's callbacks fed the
same epoch logs, and inside fastrnn's fit."""
from __future__ import annotations

import math

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import callbacks, layers, optim

VAL_LOSSES = [1.0, 0.9, 0.9, 0.95, 0.91, 0.89995, 0.7, 0.71, 0.72, 0.73, 0.74, 0.75, 0.6, 0.61, 0.62, 0.63]


class _Model:
    """What a callback sees of a model: an optimizer and stop_training."""

    def __init__(self, lr=0.1):
        self.optimizer = optim.SGD(learning_rate=lr)
        self.stop_training = False


def _keras_lrs(kw, values, metric="val_loss"):
    import keras

    km = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    km.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")
    cb = keras.callbacks.ReduceLROnPlateau(monitor=metric, **kw)
    cb.set_model(km)
    cb.on_train_begin()
    out = []
    for epoch, v in enumerate(values):
        cb.on_epoch_end(epoch, {metric: v})
        out.append(float(km.optimizer.learning_rate.numpy()))
    return out


@pytest.mark.parametrize("kw", [dict(patience=2, factor=0.5),
                                dict(patience=1, factor=0.2, cooldown=2, min_lr=0.005),
                                dict(patience=0, factor=0.5, min_delta=0.05),
                                dict(patience=3, factor=0.1, min_delta=0.0)])
def test_reduce_lr_on_plateau_follows_keras(kw):
    m = _Model(0.1)
    cb = callbacks.ReduceLROnPlateau(**kw)
    cb.set_model(m)
    cb.on_train_begin()
    ours = []
    for epoch, v in enumerate(VAL_LOSSES):
        logs = {"val_loss": v}
        cb.on_epoch_end(epoch, logs)
        ours.append(m.optimizer.current_learning_rate)
        assert logs["learning_rate"] == pytest.approx(ours[-2] if epoch else 0.1)  # the rate this epoch used
    theirs = _keras_lrs(kw, VAL_LOSSES)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    assert min(ours) < 0.1  # the sequence does reduce the rate


def test_reduce_lr_on_plateau_max_mode_for_accuracy():
    accs = [0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7]
    m = _Model(0.1)
    cb = callbacks.ReduceLROnPlateau(monitor="val_accuracy", patience=1, factor=0.5)
    cb.set_model(m)
    cb.on_train_begin()
    ours = []
    for epoch, v in enumerate(accs):
        cb.on_epoch_end(epoch, {"val_accuracy": v})
        ours.append(m.optimizer.current_learning_rate)
    np.testing.assert_allclose(ours, _keras_lrs(dict(patience=1, factor=0.5, mode="max"), accs, "val_accuracy"),
                               rtol=1e-6)


def test_reduce_lr_on_plateau_errors():
    with pytest.raises(ValueError, match="factor"):
        callbacks.ReduceLROnPlateau(factor=1.0)
    with pytest.raises(ValueError, match="patience"):
        callbacks.ReduceLROnPlateau(patience=-1)
    with pytest.raises(ValueError, match="min_lr"):
        callbacks.ReduceLROnPlateau(min_lr=float("nan"))
    m = _Model()
    m.optimizer = optim.SGD(learning_rate=optim.ExponentialDecay(0.1, 10, 0.5))
    cb = callbacks.ReduceLROnPlateau()
    cb.set_model(m)
    with pytest.raises(TypeError, match="schedule"):
        cb.on_train_begin()
    m = _Model()
    cb.set_model(m)
    cb.on_train_begin()
    with pytest.warns(RuntimeWarning, match="val_loss"):
        cb.on_epoch_end(0, {"loss": 1.0})


def _epoch_logs(n):
    rng = np.random.default_rng(0)
    return [{"loss": float(rng.random()), "val_loss": float(rng.random()), "accuracy": np.float32(rng.random())}
            for _ in range(n)]


@pytest.mark.parametrize("append", [False, True])
def test_csv_logger_writes_what_keras_writes(tmp_path, append):
    import keras

    ours, theirs = tmp_path / "ours.csv", tmp_path / "theirs.csv"
    for path in (ours, theirs):
        path.write_text("epoch,accuracy,loss,val_loss\n0,0.5,0.5,0.5\n" if append else "stale\n")
    logs = _epoch_logs(3)
    for cb in (callbacks.CSVLogger(ours, append=append), keras.callbacks.CSVLogger(str(theirs), append=append)):
        cb.set_model(_Model() if isinstance(cb, callbacks.Callback) else None)
        cb.on_train_begin()
        for epoch, lg in enumerate(logs):
            cb.on_epoch_end(epoch, dict(lg))
        cb.on_train_end()
    assert ours.read_text() == theirs.read_text()
    rows = ours.read_text().splitlines()
    assert rows[0] == "epoch,accuracy,loss,val_loss" and len(rows) == (5 if append else 4)


def test_csv_logger_and_history_plot_after_fit(tmp_path):
    fr.set_seed(0) if hasattr(fr, "set_seed") else fr.layers.set_seed(0)
    x = np.random.default_rng(0).random((64, 5, 2)).astype(np.float32)
    y = x.sum(axis=(1, 2))[:, None]
    model = fr.Sequential([layers.LSTM(4), layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    log = tmp_path / "log.csv"
    hist = model.fit(x, y, epochs=3, batch_size=16, validation_split=0.25, verbose=0,
                     callbacks=[callbacks.CSVLogger(log)], seed=0)
    rows = log.read_text().splitlines()
    assert rows[0].split(",") == ["epoch", "loss", "mae", "val_loss", "val_mae"]
    got = np.array([[float(v) for v in r.split(",")] for r in rows[1:]])
    np.testing.assert_allclose(got[:, 0], [0, 1, 2])
    np.testing.assert_allclose(got[:, 1], hist.history["loss"])
    np.testing.assert_allclose(got[:, 3], hist.history["val_loss"])

    pytest.importorskip("matplotlib")  # a test dependency: present in CI
    import matplotlib

    matplotlib.use("Agg")
    fig = hist.plot(path=tmp_path / "curves.png")
    assert [a.get_title() for a in fig.axes] == ["loss", "mae"]
    line = fig.axes[0].get_lines()[1]  # validation loss
    np.testing.assert_allclose(line.get_ydata(), hist.history["val_loss"])
    np.testing.assert_allclose(line.get_xdata(), [1, 2, 3])
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig2 = hist.plot(keys="loss")
    assert len(fig2.axes) == 1
    with pytest.raises(ValueError, match="not recorded"):
        hist.plot(keys=["accuracy"])
    with pytest.raises(ValueError, match="nothing recorded"):
        callbacks.History().plot()
    import matplotlib.pyplot as plt

    plt.close("all")
def test_terminate_on_nan_stops_fit_after_the_bad_batch():
    fr.layers.set_seed(0)
    x = np.random.default_rng(1).random((64, 4, 1)).astype(np.float32)
    y = np.ones((64, 1), np.float32)
    y[40] = np.nan  # batch 2 of 4 (batch size 16) has a NaN target
    model = fr.Sequential([layers.SimpleRNN(3), layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    seen = []

    class Batches(callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append((batch, logs["loss"]))

    hist = model.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0,
                     callbacks=[callbacks.TerminateOnNaN(), Batches()])
    assert [b for b, _ in seen] == [0, 1, 2] and not math.isfinite(seen[-1][1])
    assert len(hist.epoch) <= 1
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())  # the bad batch made no update
    # without the callback the bad batch is an error that names it
    with pytest.raises(FloatingPointError, match="batch 3"):
        model.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
