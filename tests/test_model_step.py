"""Sequential.step: streaming inference one time step at a time, with the states held by the
model or by the caller, equal to predict on the whole sequence."""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import layers

CELLS = [("SimpleRNN", {}), ("SimpleRNN", {"activation": "relu"}), ("LSTM", {}), ("GRU", {}),
         ("GRU", {"use_bias": False})]
IDS = ["rnn_tanh", "rnn_relu", "lstm", "gru", "gru_nobias"]
TOL = dict(rtol=1e-5, atol=1e-6)


def _rnn(kind, kw, units, seed, **more):
    return getattr(layers, kind)(units, seed=seed, **kw, **more)


def _steps(model, x, **kw):
    return np.stack([model.step(x[:, t], **kw) for t in range(x.shape[1])], axis=1)


@pytest.mark.parametrize("kind,kw", CELLS, ids=IDS)
def test_stacked_steps_equal_predict(kind, kw):
    rng = np.random.default_rng(0)
    model = fr.Sequential([
        _rnn(kind, kw, 7, 1, return_sequences=True, dropout=0.2, recurrent_dropout=0.3),
        layers.Dropout(0.5, seed=0),
        _rnn(kind, kw, 5, 2, return_sequences=True),
        layers.Dense(3, seed=3),
        layers.Activation("tanh"),
    ])
    x = rng.standard_normal((4, 9, 6)).astype(np.float32)
    want = model.predict(x)
    np.testing.assert_allclose(_steps(model, x), want, **TOL)
    # the model held the states: a second pass continues from them, reset_states starts over
    assert not np.allclose(model.step(x[:, 0]), want[:, 0], **TOL)
    model.reset_states()
    np.testing.assert_allclose(_steps(model, x), want, **TOL)


@pytest.mark.parametrize("kind,kw", CELLS, ids=IDS)
def test_caller_held_states_equal_model_held_ones(kind, kw):
    rng = np.random.default_rng(1)
    model = fr.Sequential([_rnn(kind, kw, 6, 1, return_sequences=True), _rnn(kind, kw, 4, 2)])
    x = rng.standard_normal((3, 5, 2)).astype(np.float32)
    states, ys = None, []
    for t in range(5):
        y, states = model.step(x[:, t], states=states)
        ys.append(y)
    n = 2 if kind == "LSTM" else 1
    assert len(states) == 2 and [len(s) for s in states] == [n, n]
    assert model._held_step_states is None  # the caller's states are not the model's
    # the last step of a model that ends without return_sequences is predict's output
    np.testing.assert_allclose(ys[-1], model.predict(x), **TOL)
    for t in range(1, 5):
        np.testing.assert_allclose(ys[t - 1], model.predict(x[:, :t]), **TOL)
    # the same through the model-held states, and the states can be picked up again
    held = _steps(model, x)
    np.testing.assert_allclose(held, np.stack(ys, axis=1), rtol=0, atol=0)
    more = rng.standard_normal((3, 2)).astype(np.float32)
    y_held = model.step(more)
    y_caller, _ = model.step(more, states=states)
    np.testing.assert_array_equal(y_held, y_caller)


@pytest.mark.parametrize("kind,kw", CELLS, ids=IDS)
def test_embedding_tokens_and_masks(kind, kw):
    rng = np.random.default_rng(2)
    model = fr.Sequential([
        layers.Embedding(20, 6, mask_zero=True, seed=0),
        _rnn(kind, kw, 8, 1, return_sequences=True),
        _rnn(kind, kw, 5, 2, return_sequences=True),
        layers.Dense(4, seed=3),
        layers.Activation("softmax"),
    ])
    x = rng.integers(1, 20, (5, 8))
    x[1, 3:] = 0       # right padding
    x[2, :3] = 0       # left padding: 0 output before the first valid step
    x[3, 4] = 0        # a hole
    x[4, :] = 0        # nothing valid
    np.testing.assert_allclose(_steps(model, x), model.predict(x), **TOL)
    last = fr.Sequential([layers.Embedding(20, 6, mask_zero=True, seed=0), _rnn(kind, kw, 8, 1),
                          layers.Dense(2, seed=3)])
    ys = _steps(last, x)
    for t in range(8):
        np.testing.assert_allclose(ys[:, t], last.predict(x[:, :t + 1]), **TOL)


def test_masking_layer_and_time_distributed():
    rng = np.random.default_rng(3)
    model = fr.Sequential([layers.Masking(0.0), layers.LSTM(5, return_sequences=True, seed=1),
                           layers.TimeDistributed(layers.Dense(2, seed=2))])
    x = rng.standard_normal((3, 6, 4)).astype(np.float32)
    x[0, 2] = 0.0
    x[1, 4:] = 0.0
    np.testing.assert_allclose(_steps(model, x), model.predict(x), **TOL)


def test_float64_model_steps_equal_predict():
    rng = np.random.default_rng(4)
    model = fr.Sequential([layers.GRU(5, return_sequences=True, seed=1, dtype="float64"),
                           layers.Dense(2, seed=2, dtype="float64")])
    x = rng.standard_normal((2, 4, 3))
    np.testing.assert_allclose(_steps(model, x), model.predict(x), rtol=1e-12, atol=1e-12)


def test_an_unbuilt_model_builds_on_its_first_step():
    model = fr.Sequential([layers.LSTM(4, seed=0), layers.Dense(1, seed=1)])
    y = model.step(np.ones((2, 3), np.float32))
    assert y.shape == (2, 1) and model.layers[0].input_shape == (None, 3)


def test_layers_that_cannot_stream_are_refused():
    x = np.ones((2, 4, 3), np.float32)
    bi = fr.Sequential([layers.Bidirectional(layers.LSTM(4, seed=0)), layers.Dense(1, seed=1)])
    bi.predict(x)
    with pytest.raises(ValueError, match=r"layer '.*' \(Bidirectional\) cannot run one step at a time"):
        bi.step(x[:, 0])
    back = fr.Sequential([layers.GRU(4, go_backwards=True, seed=0)])
    with pytest.raises(ValueError, match="go_backwards=True"):
        back.step(x[:, 0])
    flat = fr.Sequential([layers.LSTM(4, return_sequences=True, seed=0), layers.Flatten(), layers.Dense(1)])
    with pytest.raises(ValueError, match=r"\(Flatten\) does not act on each time step alone"):
        flat.step(x[:, 0])


def test_bad_arguments_are_named():
    model = fr.Sequential([layers.LSTM(4, seed=0, input_shape=(None, 3)), layers.Dense(1, seed=1)])
    with pytest.raises(ValueError, match=r"step: x_t must have shape \[batch, 3\].*got shape \(2, 1, 3\)"):
        model.step(np.ones((2, 1, 3), np.float32))
    with pytest.raises(ValueError, match=r"step: x_t must have shape \[batch, 3\].*got shape \(2, 5\)"):
        model.step(np.ones((2, 5), np.float32))
    with pytest.raises(TypeError, match="step: x_t: expected a numeric array"):
        model.step(np.array([["a", "b", "c"]]))
    with pytest.raises(ValueError, match=r"step: states must be None or a list of 1 entries"):
        model.step(np.ones((2, 3), np.float32), states=[None, None])
    with pytest.raises(ValueError, match="step: states must be 'model', None"):
        model.step(np.ones((2, 3), np.float32), states="mine")
    with pytest.raises(ValueError, match=r"states\[0\] must have shape \[batch, units\] = \(2, 4\)"):
        model.step(np.ones((2, 3), np.float32), states=[[np.zeros((3, 4)), np.zeros((3, 4))]])
    model.step(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="batch size 2; call reset_states"):
        model.step(np.ones((5, 3), np.float32))
    model.reset_states()
    assert model.step(np.ones((5, 3), np.float32)).shape == (5, 1)
    tokens = fr.Sequential([layers.Embedding(10, 4, seed=0), layers.GRU(3, seed=1)])
    with pytest.raises(ValueError, match=r"step: x_t must have shape \[batch\]"):
        tokens.step(np.ones((2, 1), np.int64))
    tokens.build((None,))
    with pytest.raises(ValueError, match="outside"):
        tokens.step(np.array([3, 12]))


def test_reset_states_also_resets_stateful_layers():
    lstm = layers.LSTM(3, stateful=True, seed=0)
    model = fr.Sequential([lstm])
    model.predict(np.ones((2, 4, 2), np.float32))
    assert lstm.states is not None
    model.step(np.ones((2, 2), np.float32))
    model.reset_states()
    assert lstm.states is None and model._held_step_states is None
