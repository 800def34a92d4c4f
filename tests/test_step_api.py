"""The recurrent layers' step API (step / step_backward / reset_steps), the attention layers'
padding_finite, losses.log_softmax and the model registry of saving."""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import layers, losses, saving
from fastrnn.models import Model, Sequential

CELLS = [("SimpleRNN", {}), ("SimpleRNN", {"activation": "relu"}), ("LSTM", {}), ("GRU", {}),
         ("GRU", {"use_bias": False})]


def _layer(kind, kw, dtype="float64", units=4, features=3, **more):
    return getattr(layers, kind)(units, dtype=dtype, seed=1, input_shape=(None, features), **kw, **more)


def _data(dtype, B=2, T=5, F=3, H=4, n_states=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, T, F)).astype(dtype)
    init = [rng.normal(size=(B, H)).astype(dtype) for _ in range(n_states)]
    dy = rng.normal(size=(B, T, H)).astype(dtype)
    dlast = [rng.normal(size=(B, H)).astype(dtype) for _ in range(n_states)]
    return x, init, dy, dlast


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind,kw", CELLS)
def test_steps_equal_the_sequence_forward_and_backward(kind, kw, dtype):
    seq = _layer(kind, kw, dtype, return_sequences=True, return_state=True)
    stp = _layer(kind, kw, dtype)
    stp.set_weights(seq.get_weights())
    n = 2 if kind == "LSTM" else 1
    x, init, dy, dlast = _data(dtype, n_states=n)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=2e-5, atol=2e-6)

    out = seq(x, training=True, initial_state=init)
    dx_ref = seq.backward([dy] + dlast)
    seq_grads = [p.grad for p in seq.parameters()]

    states, hs = init, []
    for t in range(x.shape[1]):
        h, states = stp.step(x[:, t], states, training=True)
        assert len(states) == n and h is states[0]
        hs.append(h)
    np.testing.assert_allclose(np.stack(hs, axis=1), out[0], **tol)
    for a, b in zip(states, out[1:]):
        np.testing.assert_allclose(a, b, **tol)

    dstates, dxs = dlast, []
    for t in reversed(range(x.shape[1])):
        dx_t, dstates = stp.step_backward(dy[:, t], dstates)
        assert dx_t.shape == (x.shape[0], x.shape[2])
        dxs.append(dx_t)
    np.testing.assert_allclose(np.stack(dxs[::-1], axis=1), dx_ref, **tol)
    for a, b in zip(dstates, seq.initial_state_grads):
        np.testing.assert_allclose(a, b, **tol)
    for p, g in zip(stp.parameters(), seq_grads):
        np.testing.assert_allclose(p.grad, g, **tol)
    with pytest.raises(RuntimeError, match="step_backward\\(\\) called without a pending step"):
        stp.step_backward(dy[:, 0])


def test_step_from_zeros_and_inference_keeps_nothing():
    lstm = _layer("LSTM", {})
    x = np.ones((2, 3))
    h, (h2, c) = lstm.step(x)
    h0, (_, c0) = lstm.step(x, [np.zeros((2, 4)), np.zeros((2, 4))])
    np.testing.assert_array_equal(h, h0)
    np.testing.assert_array_equal(c, c0)
    with pytest.raises(RuntimeError, match="pending step"):
        lstm.step_backward(np.ones((2, 4)))


def test_step_backward_accumulates_like_backward():
    gru = _layer("GRU", {})
    x = np.random.default_rng(2).normal(size=(2, 3))
    gru.step(x, training=True)
    gru.step_backward(np.ones((2, 4)))
    once = [p.grad.copy() for p in gru.parameters()]
    gru.step(x, training=True)
    gru.step_backward(np.ones((2, 4)))
    for p, g in zip(gru.parameters(), once):
        np.testing.assert_allclose(p.grad, 2 * g)


def test_steps_are_consumed_last_first_and_can_be_dropped():
    rnn = _layer("SimpleRNN", {})
    rng = np.random.default_rng(3)
    x1, x2 = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    h1, s1 = rnn.step(x1, training=True)
    h2, s2 = rnn.step(x2, s1, training=True)
    dx2, ds1 = rnn.step_backward(np.ones((2, 4)))
    dx1, ds0 = rnn.step_backward(None, ds1)
    # the same two steps backpropagated through a sequence of two
    ref = _layer("SimpleRNN", {}, return_sequences=True)
    ref.set_weights(rnn.get_weights())
    ref(np.stack([x1, x2], axis=1), training=True)
    dx = ref.backward(np.stack([np.zeros((2, 4)), np.ones((2, 4))], axis=1))
    np.testing.assert_allclose(dx1, dx[:, 0], rtol=1e-12)
    np.testing.assert_allclose(dx2, dx[:, 1], rtol=1e-12)
    np.testing.assert_allclose(ds0[0], ref.initial_state_grads[0], rtol=1e-12)

    rnn.step(x1, training=True)
    rnn.reset_steps()
    with pytest.raises(RuntimeError, match="pending step"):
        rnn.step_backward(np.ones((2, 4)))
    rnn.step(x1, training=True)
    rnn(np.stack([x1, x2], axis=1))  # a call on a sequence drops the pending steps
    with pytest.raises(RuntimeError, match="pending step"):
        rnn.step_backward(np.ones((2, 4)))


def test_step_checks_its_arguments():
    lstm = _layer("LSTM", {})
    with pytest.raises(ValueError, match="step expects x_t of shape \\[batch, features\\]"):
        lstm.step(np.ones((2, 1, 3)))
    with pytest.raises(ValueError, match="step expects x_t with 3 features"):
        lstm.step(np.ones((2, 5)))
    with pytest.raises(ValueError, match="states must be a list of 2"):
        lstm.step(np.ones((2, 3)), [np.zeros((2, 4))])
    lstm.step(np.ones((2, 3)), training=True)
    with pytest.raises(ValueError, match="dstates must be None or a list of 2"):
        lstm.step_backward(np.ones((2, 4)), [np.ones((2, 4))])
    with pytest.raises(ValueError, match="dh_t must have shape \\(2, 4\\)"):
        lstm.step_backward(np.ones((3, 4)))
    lstm.step_backward(np.ones((2, 4)))  # the failed calls consumed nothing
    drop = _layer("GRU", {}, dropout=0.5)
    drop.step(np.ones((2, 3)))  # inference: dropout does not apply
    with pytest.raises(ValueError, match="does not apply dropout"):
        drop.step(np.ones((2, 3)), training=True)


def test_unbuilt_layer_builds_on_its_first_step():
    gru = layers.GRU(3, seed=0)
    h, states = gru.step(np.ones((2, 5), dtype=np.float32))
    assert gru.built and gru.input_shape == (None, 5) and h.shape == (2, 3) and h.dtype == np.float32


@pytest.mark.parametrize("cls", [layers.BahdanauAttention, layers.LuongAttention])
def test_padding_finite_skips_the_padding_check(cls):
    attn = cls(4, seed=0) if cls is layers.BahdanauAttention else cls("general", seed=0)
    rng = np.random.default_rng(0)
    q, v = rng.normal(size=(2, 4)), rng.normal(size=(2, 3, 4))
    mask = np.array([[True, True, False], [True, True, True]])
    ctx, w, _ = attn.forward_step(q, v, mask=mask, training=False)
    bad = v.copy()
    bad[0, 2] = np.nan
    ctx2, w2, _ = attn.forward_step(q, bad, mask=mask, training=False)
    np.testing.assert_allclose(ctx2, ctx)  # checked: the NaN padding is zeroed
    ctx3, _, _ = attn.forward_step(q, v, mask=mask, training=False, padding_finite=True)
    np.testing.assert_array_equal(ctx3, ctx)
    ctx4, _, _ = attn.forward_step(q, bad, mask=mask, training=False, padding_finite=True)
    assert np.isnan(ctx4[0]).all() and np.isfinite(ctx4[1]).all()  # not checked


def test_log_softmax_is_public():
    z = np.array([[1.0, 2.0, 3.0], [1000.0, 0.0, -1000.0]])
    out = losses.log_softmax(z)
    np.testing.assert_allclose(np.exp(out).sum(axis=-1), 1.0)
    np.testing.assert_allclose(out[0], z[0] - np.log(np.exp(z[0]).sum()))
    assert np.isfinite(out).all() and "log_softmax" in losses.__all__


def test_model_registry_holds_model_and_sequential(tmp_path):
    assert saving._model_class("Sequential", None) is Sequential
    assert saving._model_class("Model", None) is Model
    for name in ("Seq2Seq", "Nope", None):
        with pytest.raises(ValueError, match="custom model class"):
            saving._model_class(name, None)

    class Registered(Sequential):
        pass

    try:
        saving.register_model(Registered)
        m = Registered([layers.Dense(2, input_shape=(3,), seed=0)])
        m.save(tmp_path / "r.fastrnn")
        back = fr.load_model(tmp_path / "r.fastrnn")
        assert type(back) is Registered
        np.testing.assert_array_equal(back.get_weights()[0], m.get_weights()[0])
    finally:
        saving._MODEL_CLASSES.pop("Registered", None)
