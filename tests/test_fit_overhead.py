"""fit and train_on_batch do per batch only what someone uses: the per-batch hooks of callbacks
that implement them, one parameter lookup per update, and the same logs as before."""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import callbacks, layers


def _model(seed=0):
    model = fr.Sequential([layers.LSTM(4, seed=seed), layers.Dense(1, activation="sigmoid", seed=seed + 1)])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def _data(n=20):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 3, 2)).astype(np.float32), (rng.random((n, 1)) > 0.5).astype(np.float32)


def test_callback_list_says_which_hooks_are_used():
    class EndOnly(callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    plain, end = callbacks.Callback(), EndOnly()
    attr = callbacks.Callback()
    attr.on_train_batch_begin = lambda batch, logs=None: None
    m = _model()
    assert not callbacks.CallbackList([plain, callbacks.History()], m, {}).wants("on_train_batch_end")
    cl = callbacks.CallbackList([plain, end], m, {})
    assert cl.wants("on_train_batch_end") and not cl.wants("on_train_batch_begin")
    assert callbacks.CallbackList([attr], m, {}).wants("on_train_batch_begin")


def test_batch_hooks_see_every_batch_and_the_epoch_logs_match():
    seen = []

    class Spy(callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(("begin", batch))

        def on_train_batch_end(self, batch, logs=None):
            seen.append(("end", batch, dict(logs)))

        def on_epoch_end(self, epoch, logs=None):
            seen.append(("epoch", epoch, dict(logs)))

    x, y = _data()
    model = _model()
    hist = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False, callbacks=[Spy()])
    for epoch in range(2):
        part = seen[epoch * 7:(epoch + 1) * 7]  # 3 batches x (begin, end), then the epoch
        assert [s[:2] for s in part] == [("begin", 0), ("end", 0), ("begin", 1), ("end", 1), ("begin", 2),
                                         ("end", 2), ("epoch", epoch)]
        last, ep = part[5][2], part[6][2]
        assert set(last) == {"loss", "accuracy"} and last == ep  # the last batch's logs are the epoch's
        assert hist.history["loss"][epoch] == ep["loss"]


def test_no_batch_hook_gives_the_same_history_as_a_batch_hook():
    x, y = _data()

    class End(callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    h1 = _model().fit(x, y, batch_size=8, epochs=3, verbose=0, seed=1)
    h2 = _model().fit(x, y, batch_size=8, epochs=3, verbose=0, seed=1, callbacks=[End()])
    assert h1.history == h2.history


def test_an_update_looks_the_parameters_up_once(monkeypatch):
    x, y = _data(8)
    model = _model()
    model.train_on_batch(x, y)  # builds
    calls = []
    real = type(model).parameters
    monkeypatch.setattr(type(model), "parameters", lambda self: calls.append(1) or real(self))
    model.train_on_batch(x, y)
    assert len(calls) == 1
    fresh = _model(seed=3)  # not built yet: the parameters are looked up again after the forward
    fresh.train_on_batch(x, y)
    assert len(calls) == 3 and fresh.optimizer.iterations == 1


def test_a_model_with_its_own_zero_grad_keeps_it():
    x, y = _data(8)
    zeroed = []

    class Mine(fr.Sequential):
        def zero_grad(self):
            zeroed.append(1)
            super().zero_grad()

    model = Mine([layers.LSTM(4, seed=0), layers.Dense(1, seed=1)])
    model.compile(optimizer="sgd", loss="mse")
    model.train_on_batch(x, y)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert len(zeroed) == 3


@pytest.mark.parametrize("verbose", [1, 2])
def test_verbose_fit_still_shows_the_figures(verbose, capsys):
    x, y = _data()
    _model().fit(x, y, batch_size=8, epochs=1, verbose=verbose)
    out = capsys.readouterr()
    assert "loss" in out.out + out.err and "accuracy" in out.out + out.err
