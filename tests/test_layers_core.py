"""Core layers (Dense, Embedding, Dropout, Flatten, TimeDistributed), the Layer contract and initializers."""
from __future__ import annotations

import json

import numpy as np
import pytest

from _problems import numgrad, spy_on_gemm
from fastrnn import layers as L
from fastrnn.layers import initializers


def check_layer_grads(layer, x, rtol=1e-6, atol=1e-8, seed=0):
    """Backward of a float64 layer vs finite differences for x and every parameter."""
    rng = np.random.default_rng(seed)
    x = np.array(x, dtype=np.float64)
    y = layer(x, training=True)
    r = rng.standard_normal(y.shape)

    def loss():
        return float(np.sum(r * layer(x, training=True)))

    layer(x, training=True)
    layer.zero_grad()
    dx = layer.backward(r)
    np.testing.assert_allclose(dx, numgrad(loss, x), rtol=rtol, atol=atol)
    for p in layer.parameters():
        np.testing.assert_allclose(p.grad, numgrad(loss, p.value), rtol=rtol, atol=atol, err_msg=p.name)


# ------------------------------------------------------------------------------------------------ Dense
@pytest.mark.parametrize("activation", ["linear", "tanh", "relu", "sigmoid", "softmax"])
@pytest.mark.parametrize("shape", [(4, 5), (3, 4, 5)])
def test_dense_gradients_match_finite_differences(activation, shape):
    rng = np.random.default_rng(1)
    layer = L.Dense(3, activation=activation, dtype="float64", seed=2)
    x = rng.standard_normal(shape)
    if activation == "relu":  # keep pre-activations away from the kink
        layer.build((shape[-1],))
        layer.bias.value[:] = [0.3, -0.2, 0.1]
    check_layer_grads(layer, x)


def test_dense_without_bias_has_no_bias_parameter_and_correct_gradients():
    layer = L.Dense(2, use_bias=False, dtype="float64", seed=0)
    check_layer_grads(layer, np.random.default_rng(0).standard_normal((3, 4)))
    assert [p.name for p in layer.parameters()] == [f"{layer.name}/kernel"]
    assert layer.count_params() == 8


def test_dense_forward_matches_formula_and_converts_to_float32():
    rng = np.random.default_rng(0)
    layer = L.Dense(4, activation="sigmoid")
    x = rng.standard_normal((5, 3))  # float64 in
    y = layer(x)
    assert y.dtype == np.float32
    z = x @ layer.kernel.value.astype(np.float64) + layer.bias.value
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-z)), rtol=1e-5)
    soft = L.Dense(6, activation="softmax")(rng.standard_normal((2, 7, 3)))
    np.testing.assert_allclose(soft.sum(-1), 1.0, rtol=1e-5)
    yi = L.Dense(2)(np.arange(6).reshape(2, 3))  # int input
    assert yi.dtype == np.float32


def test_dense_runs_its_products_on_fastrnn_gemm(monkeypatch):
    """float32 Dense forward and backward use fastrnn's GEMM (one thread pool with the recurrent
    kernels, not numpy's BLAS) and give numpy's results."""
    calls = spy_on_gemm(monkeypatch)
    rng = np.random.default_rng(0)
    layer = L.Dense(7, activation="tanh")
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    y = layer(x, training=True)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(dy)
    assert len(calls) == 3  # y = x W, dW = x^T dz, dx = dz W^T
    w = layer.kernel.value.astype(np.float64)
    z = x.astype(np.float64) @ w + layer.bias.value
    np.testing.assert_allclose(y, np.tanh(z), rtol=1e-5, atol=1e-6)
    dz = dy * (1 - np.tanh(z) ** 2)
    np.testing.assert_allclose(dx, dz @ w.T, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.kernel.grad, x.reshape(-1, 4).T.astype(np.float64) @ dz.reshape(-1, 7),
                               rtol=1e-4, atol=1e-5)


def test_backward_accumulates_into_grad():
    layer = L.Dense(3, dtype="float64", seed=0)
    x = np.random.default_rng(0).standard_normal((4, 2))
    dy = np.ones((4, 3))
    layer(x, training=True)
    layer.backward(dy)
    g1 = layer.kernel.grad.copy()
    layer.backward(dy)
    np.testing.assert_allclose(layer.kernel.grad, 2 * g1)
    layer.zero_grad()
    assert not layer.kernel.grad.any() and not layer.bias.grad.any()


@pytest.mark.parametrize("activation", [None, "tanh", "softmax"])
def test_dense_backward_is_unaffected_by_changes_to_its_input_and_output(activation):
    """Backward uses the forward's x and y even if the caller changes its arrays in between
    (a residual ``y += x``, a reused input buffer)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    dy = rng.standard_normal((4, 3, 6)).astype(np.float32)
    results = []
    for meddle in (False, True):
        layer = L.Dense(6, activation=activation, seed=2)
        xx = x.copy()
        y = layer(xx, training=True)
        if meddle:
            y += 1.0
            xx *= -2.0
        dx = layer.backward(dy)
        results.append((dx, layer.kernel.grad.copy(), layer.bias.grad.copy()))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------------ Embedding
def test_embedding_lookup_gradient_and_mask():
    layer = L.Embedding(7, 3, mask_zero=True, dtype="float64", seed=0)
    ids = np.array([[1, 2, 2, 0], [6, 1, 0, 0]])
    y = layer(ids, training=True)
    np.testing.assert_array_equal(y[1, 0], layer.embeddings.value[6])
    np.testing.assert_array_equal(layer.compute_mask(ids), ids != 0)
    dy = np.random.default_rng(0).standard_normal(y.shape)
    assert layer.backward(dy) is None
    onehot = np.eye(7)[ids.ravel()]  # [N, V]
    np.testing.assert_allclose(layer.embeddings.grad, onehot.T @ dy.reshape(-1, 3))

    def loss():
        return float(np.sum(dy * layer(ids)))

    np.testing.assert_allclose(layer.embeddings.grad, numgrad(loss, layer.embeddings.value), atol=1e-8)


def test_embedding_backward_uses_the_ids_of_its_forward():
    ids = np.array([[1, 2, 0], [3, 3, 4]])
    dy = np.random.default_rng(6).standard_normal((2, 3, 2)).astype(np.float32)
    results = []
    for meddle in (False, True):
        layer = L.Embedding(6, 2, seed=1)
        given = ids.copy()
        layer(given, training=True)
        if meddle:
            given[...] = 5  # the caller refills its batch buffer
        layer.backward(dy)
        results.append(layer.embeddings.grad.copy())
    np.testing.assert_array_equal(results[0], results[1])
    assert not results[0][5].any()


def test_embedding_without_mask_zero_has_no_mask_and_float_ids_are_cast():
    layer = L.Embedding(5, 2)
    assert layer.compute_mask(np.array([[0, 1]])) is None
    np.testing.assert_array_equal(layer(np.array([[1.0, 4.0]])), layer(np.array([[1, 4]])))
    assert layer.count_params() == 10


@pytest.mark.parametrize("bad, pos", [(12, (0, 1)), (10, (1, 1)), (-1, (1, 0))])
def test_embedding_ids_outside_range_raise_value_error_naming_id(bad, pos):
    layer = L.Embedding(10, 4, name="emb_test")
    ids = np.array([[1, 2], [3, 4]])
    ids[pos] = bad
    msg = rf"emb_test.*token id {bad} at position \({pos[0]}, {pos[1]}\).*input_dim=10"
    with pytest.raises(ValueError, match=msg):
        layer(ids)


@pytest.mark.parametrize("ids", [np.array([[1, 2**64 - 1]], np.uint64), np.array([[1.0, 1e20]]),
                                 np.array([[1, 2**40]], np.int64)])
def test_embedding_names_huge_ids_as_given(ids):
    """The range is checked before the cast to int64, which would wrap 2**64 - 1 to -1 and 1e20 to
    the most negative int64."""
    layer = L.Embedding(10, 4, name="emb_huge")
    value = int(ids[0, 1])
    with pytest.raises(ValueError, match=rf"token id {value} at position \(0, 1\)"):
        layer(ids)


def test_embedding_rejects_non_integer_ids():
    with pytest.raises(TypeError, match="token ids must be integers"):
        L.Embedding(5, 2)(np.array([[0.5, 1.0]]))
    with pytest.raises(TypeError, match="integer array"):
        L.Embedding(5, 2)(np.array([["a", "b"]]))


# ------------------------------------------------------------------------------------------------ Dropout
def test_dropout_training_drops_and_rescales_and_inference_is_identity():
    layer = L.Dropout(0.25, seed=3)
    x = np.ones((200, 50), dtype=np.float32)
    np.testing.assert_array_equal(layer(x), x)
    y = layer(x, training=True)
    vals = np.unique(y)
    np.testing.assert_allclose(vals, [0.0, 1 / 0.75], rtol=1e-6)
    assert abs((y == 0).mean() - 0.25) < 0.02
    dy = np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    np.testing.assert_allclose(layer.backward(dy), dy * y, rtol=1e-6)  # y is exactly the mask here


def test_dropout_noise_shape_shares_mask_over_time():
    layer = L.Dropout(0.5, noise_shape=(None, 1, None), seed=0)
    y = layer(np.ones((8, 6, 10)), training=True)
    assert np.all(y == y[:, :1, :])
    assert (y == 0).any() and (y > 0).any()


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_dropout_rate_out_of_range(rate):
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        L.Dropout(rate)


# ------------------------------------------------------------------------------------------------ Flatten / TimeDistributed
def test_flatten_forward_backward_and_shapes():
    layer = L.Flatten()
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    y = layer(x, training=True)
    assert y.shape == (2, 12)
    np.testing.assert_array_equal(layer.backward(y), x)
    assert layer.compute_output_shape((3, 4)) == (12,)
    assert layer.compute_mask(x, np.ones((2, 3), bool)) is None


def test_time_distributed_dense_equals_dense_per_step_and_gradients():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4))
    td = L.TimeDistributed(L.Dense(5, activation="tanh", dtype="float64", seed=0), dtype="float64")
    y = td(x)
    assert y.shape == (2, 3, 5)
    for t in range(3):
        np.testing.assert_allclose(y[:, t], td.layer(x[:, t]), rtol=1e-12)
    assert td.count_params() == 4 * 5 + 5
    assert td.compute_output_shape((3, 4)) == (3, 5)
    check_layer_grads(td, x)


def test_time_distributed_wrong_rank():
    with pytest.raises(ValueError, match=r"TimeDistributed 'td'.*\[batch, time, \.\.\.\]"):
        L.TimeDistributed(L.Dense(2), name="td")(np.ones((2, 3)))


# ------------------------------------------------------------------------------------------------ Layer contract
def test_default_names_are_unique_keras_style():
    L.clear_session()
    a, b, c = L.Dense(1), L.Dense(1), L.SimpleRNN(2)
    assert (a.name, b.name, c.name) == ("dense", "dense_1", "simple_rnn")
    L.Dense(1, name="dense_2")
    assert L.Dense(1).name == "dense_3"  # explicit names are not handed out again


def test_config_roundtrip_through_json_and_registry():
    layer = L.Dense(3, activation="relu", use_bias=False, input_shape=(4,))
    cfg = json.loads(json.dumps(L.serialize(layer)))
    assert L.get_layer_class("Dense") is L.Dense
    clone = L.deserialize(cfg)
    assert isinstance(clone, L.Dense) and clone.get_config() == layer.get_config()
    clone.set_weights(layer.get_weights())
    x = np.random.default_rng(0).standard_normal((2, 4))
    np.testing.assert_array_equal(clone(x), layer(x))
    for cls, args in [(L.Embedding, (5, 2)), (L.Dropout, (0.3,)), (L.Flatten, ())]:
        original = cls(*args)
        rebuilt = L.deserialize(json.loads(json.dumps(L.serialize(original))))
        assert type(rebuilt) is cls and rebuilt.get_config() == original.get_config()
    td = L.TimeDistributed(L.Dense(2))
    assert L.deserialize(json.loads(json.dumps(L.serialize(td)))).layer.units == 2


def test_unknown_layer_class_and_bad_config():
    with pytest.raises(ValueError, match="unknown layer class 'Conv9D'"):
        L.get_layer_class("Conv9D")
    with pytest.raises(ValueError, match="class_name"):
        L.deserialize({"config": {}})


def test_input_shape_builds_before_data_and_count_params_needs_build():
    assert L.Dense(3, input_shape=(4,)).count_params() == 15
    with pytest.raises(ValueError, match="count_params.*built"):
        L.Dense(3).count_params()


def test_set_weights_checks_count_and_shapes_and_copies_in_place():
    layer = L.Dense(2, input_shape=(3,))
    kernel = layer.kernel.value
    with pytest.raises(ValueError, match="expected 2 arrays"):
        layer.set_weights([np.zeros((3, 2))])
    with pytest.raises(ValueError, match=r"kernel.*shape \(3, 2\)"):
        layer.set_weights([np.zeros((2, 3)), np.zeros(2)])
    layer.set_weights([np.ones((3, 2)), np.zeros(2)])
    assert layer.kernel.value is kernel and np.all(kernel == 1)
    unbuilt = L.Dense(2)
    unbuilt.set_weights([np.ones((5, 2)), np.zeros(2)])  # builds from the weight shapes
    assert unbuilt.built and unbuilt.count_params() == 12


def test_backward_before_training_forward_raises_runtime_error():
    layer = L.Dense(2, name="head")
    with pytest.raises(RuntimeError, match="Dense 'head'.*before a forward pass with training=True"):
        layer.backward(np.zeros((1, 2)))
    layer(np.zeros((1, 3)))  # inference forward keeps nothing for backward
    with pytest.raises(RuntimeError, match="head"):
        layer.backward(np.zeros((1, 2)))
    with pytest.raises(RuntimeError, match="Dropout"):
        L.Dropout(0.5).backward(np.zeros(3))


def test_bad_inputs_name_the_layer():
    with pytest.raises(ValueError, match=r"Dense 'd1'.*\[batch, \.\.\., features\].*got shape \(3,\)"):
        L.Dense(2, name="d1")(np.zeros(3))
    dense = L.Dense(2, name="d2")
    dense(np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"d2.*3 features.*got input shape"):
        dense(np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"unknown activation 'swish'"):
        L.Dense(2, activation="swish")
    with pytest.raises(TypeError, match="numeric array"):
        L.Dense(2)(np.array([["a"]]))
    with pytest.raises(TypeError, match="units must be a positive int"):
        L.Dense(2.5)
    with pytest.raises(ValueError, match="units must be a positive int, got 0"):
        L.Dense(0)
    with pytest.raises(ValueError, match="unknown initializer 'gaussian'"):
        L.Dense(2, kernel_initializer="gaussian")
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        L.Dense(2, dtype="float16")
    with pytest.raises(TypeError, match="unexpected keyword"):
        L.Dense(2, unitz=3)
    with pytest.raises(ValueError, match=r"dy must have shape \(1, 2\)"):
        dense(np.zeros((1, 3)), training=True)
        dense.backward(np.zeros((1, 3)))


def test_trainable_flag_reaches_parameters():
    layer = L.Dense(2, input_shape=(3,))
    layer.trainable = False
    assert all(not p.trainable for p in layer.parameters())
    assert L.deserialize(L.serialize(layer)).trainable is False


def test_time_distributed_trainable_false_freezes_and_survives_config():
    x = np.zeros((2, 4, 5), np.float32)
    td = L.TimeDistributed(L.Dense(3), trainable=False)
    td(x)
    assert td.layer.trainable is False and all(not p.trainable for p in td.parameters())
    td2 = L.TimeDistributed(L.Dense(3))
    td2.trainable = False  # set before build
    td2(x)
    assert all(not p.trainable for p in td2.parameters())
    clone = L.deserialize(L.serialize(td2))
    clone(x)
    assert clone.layer.trainable is False and all(not p.trainable for p in clone.parameters())
    td2.trainable = True
    assert all(p.trainable for p in td2.parameters())


# ------------------------------------------------------------------------------------------------ initializers
def test_glorot_uniform_limits_and_variance():
    w = initializers.glorot_uniform((400, 100), seed=0)
    limit = np.sqrt(6 / 500)
    assert w.dtype == np.float32 and np.abs(w).max() <= limit
    assert abs(w.var() - limit**2 / 3) < 0.05 * limit**2 / 3


@pytest.mark.parametrize("shape", [(8, 8), (4, 10), (10, 4)])
def test_orthogonal_is_orthonormal(shape):
    q = initializers.orthogonal(shape, seed=1).astype(np.float64)
    if shape[0] <= shape[1]:
        np.testing.assert_allclose(q @ q.T, np.eye(shape[0]), atol=1e-6)
    else:
        np.testing.assert_allclose(q.T @ q, np.eye(shape[1]), atol=1e-6)


def test_set_seed_and_seed_argument_are_reproducible():
    L.set_seed(123)
    a = L.Dense(4, input_shape=(3,)).get_weights()[0]
    L.set_seed(123)
    b = L.Dense(4, input_shape=(3,)).get_weights()[0]
    c = L.Dense(4, input_shape=(3,)).get_weights()[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(b, c)
    np.testing.assert_array_equal(L.Dense(4, input_shape=(3,), seed=7).get_weights()[0],
                                  L.Dense(4, input_shape=(3,), seed=7).get_weights()[0])
    np.testing.assert_array_equal(initializers.uniform((3,), seed=5), initializers.uniform((3,), seed=5))
    assert np.all(np.abs(initializers.uniform((1000,), seed=0)) <= 0.05)
    with pytest.raises(ValueError, match="seed"):
        L.set_seed(-1)


def test_embedding_has_its_table_before_data_and_records_unknown_lengths():
    emb = L.Embedding(30, 4)
    assert emb.count_params() == 120 and len(emb.parameters()) == 1 and not emb.built
    emb(np.array([[1, 2, 3]]))
    assert emb.built and emb.input_shape == (None,)
    assert emb.compute_output_shape(emb.input_shape) == (None, 4)
    fixed = L.Embedding(30, 4, input_length=7)
    assert fixed.built and fixed.compute_output_shape(fixed.input_shape) == (7, 4)
    assert L.deserialize(L.serialize(fixed)).input_length == 7
    dense = L.Dense(2)
    dense(np.ones((2, 5, 3)))
    assert dense.input_shape == (None, 3)
    dense(np.ones((4, 3)))  # other leading dims are fine once built


# ------------------------------------------------------------------------------------------------ Input, Activation,
# RepeatVector, Masking
@pytest.mark.parametrize("make_layer, shape", [
    (lambda: L.Activation("tanh", dtype="float64"), (3, 4, 2)),
    (lambda: L.Activation("softmax", dtype="float64"), (3, 5)),
    (lambda: L.RepeatVector(3, dtype="float64"), (2, 4)),
    (lambda: L.Masking(0.5, dtype="float64"), (3, 4, 2)),
    (lambda: L.Input((4, 2), dtype="float64"), (3, 4, 2)),
])
def test_parameterless_layers_gradients_match_finite_differences(make_layer, shape):
    rng = np.random.default_rng(14)
    layer = make_layer()
    x = rng.standard_normal(shape)
    if isinstance(layer, L.Masking):
        x[0, 1] = 0.5  # a padded step
        x[2, 3] = 0.5
    r = rng.standard_normal(layer(x).shape)
    layer(x, training=True)
    dx = layer.backward(r)
    want = numgrad(lambda: float(np.sum(r * layer(x))), x)
    if isinstance(layer, L.Masking):
        # at a padded step the output is 0 whatever x is, as long as x stays the mask value: the
        # gradient there is 0 (as in Keras); a finite difference moves x off it
        assert np.all(dx[0, 1] == 0) and np.all(dx[2, 3] == 0)
        want[0, 1] = want[2, 3] = 0.0
    np.testing.assert_allclose(dx, want, rtol=1e-6, atol=1e-9)


def test_masking_zeroes_padded_steps_and_sets_the_mask():
    x = np.arange(24, dtype=np.float32).reshape(2, 4, 3) + 1
    x[0, 2:] = 0.0
    x[1, 1] = 0.0
    x[1, 3, 0] = 0.0  # one feature equal to mask_value: still a real step
    layer = L.Masking()
    want_mask = np.array([[1, 1, 0, 0], [1, 0, 1, 1]], bool)
    np.testing.assert_array_equal(layer.compute_mask(x), want_mask)
    np.testing.assert_array_equal(layer(x), x * want_mask[..., None])
    x2 = x.copy()
    x2[~want_mask] = -1.0
    np.testing.assert_array_equal(L.Masking(-1.0).compute_mask(x2), want_mask)
    with pytest.raises(TypeError, match="mask_value must be a number"):
        L.Masking("0")


def test_input_layer_declares_the_sequential_input_shape_and_checks_it():
    from fastrnn.models import Sequential

    m = Sequential([L.Input((None, 3)), L.LSTM(4), L.RepeatVector(2), L.Activation("relu")])
    assert m.built and m.layers[1].input_shape == (None, 3)
    assert m.predict(np.ones((2, 7, 3), np.float32)).shape == (2, 2, 4)
    with pytest.raises(ValueError, match=r"InputLayer 'input_layer.*': expected input of shape \(batch,\) \+ \(None, 3\)"):
        m.predict(np.ones((2, 7, 5), np.float32))
    with pytest.raises(ValueError, match=r"InputLayer .*expected input of shape"):
        m.layers[0](np.ones((2, 7, 3, 1), np.float32))  # the wrong rank (the model checks it first)
    m.predict(np.ones((2, 2, 3), np.float32))  # any number of steps
    cfg = json.loads(json.dumps(m.get_config()))
    m2 = Sequential.from_config(cfg)
    m2.set_weights(m.get_weights())
    np.testing.assert_array_equal(m2.predict(np.ones((2, 7, 3), np.float32)), m.predict(np.ones((2, 7, 3), np.float32)))
    assert [type(lay).__name__ for lay in m2.layers] == ["InputLayer", "LSTM", "RepeatVector", "Activation"]
    with pytest.raises(ValueError, match="input_shape .* is required"):
        L.InputLayer()
    # token ids pass through unchanged (float32 would round ids above 2**24)
    ids = np.array([[2**24 + 1, 3]])
    emb = Sequential([L.Input((2,)), L.Embedding(2**24 + 2, 1)])
    np.testing.assert_array_equal(emb.predict(ids)[0, 0], emb.layers[1].embeddings.value[2**24 + 1])
    assert L.Input((2,))(ids).dtype == ids.dtype


def test_fixed_length_input_trains_with_truncated_bptt_and_takes_int_dtype():
    """Input((T, F)) fixes the features, not the number of steps: truncated BPTT feeds chunks."""
    from fastrnn.models import Sequential

    rng = np.random.default_rng(15)
    x = rng.standard_normal((8, 6, 2)).astype(np.float32)
    y = np.cumsum(x[..., :1], axis=1)
    m = Sequential([L.Input((6, 2)), L.LSTM(3, return_sequences=True), L.TimeDistributed(L.Dense(1))])
    m.compile(optimizer="adam", loss="mse")
    assert np.isfinite(m.fit(x, y, epochs=2, tbptt=2, verbose=0).history["loss"]).all()
    ids = Sequential([L.Input((4,), dtype="int32"), L.Embedding(10, 2)])
    assert ids.predict(np.array([[1, 2, 3, 9]])).shape == (1, 4, 2)


def test_masking_takes_batch_time_features():
    with pytest.raises(ValueError, match=r"Masking .*\[batch, time, features\]"):
        L.Masking()(np.zeros((1, 2, 2, 3), np.float32))


def test_concatenate_forward_backward_masks_and_errors():
    rng = np.random.default_rng(16)
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 2))
    cat = L.Concatenate(dtype="float64")
    y = cat([a, b], training=True)
    np.testing.assert_array_equal(y, np.concatenate([a, b], axis=-1))
    dy = rng.standard_normal(y.shape)
    da, db = cat.backward(dy)
    np.testing.assert_array_equal(da, dy[..., :4])
    np.testing.assert_array_equal(db, dy[..., 4:])
    on_time = L.Concatenate(axis=1, dtype="float64")
    assert on_time([a, a]).shape == (2, 6, 4) and on_time.compute_output_shape([(3, 4), (None, 4)]) == (None, 4)
    assert cat.compute_output_shape([(3, 4), (3, 2)]) == (3, 6)
    m1, m2 = np.array([[1, 1, 0], [1, 0, 0]], bool), np.array([[1, 0, 1], [1, 1, 1]], bool)
    np.testing.assert_array_equal(cat.compute_mask([a, b], [m1, m2]), m1 | m2)  # Keras 3: OR
    np.testing.assert_array_equal(cat.compute_mask([a, b], [m1, None]), np.ones_like(m1))
    np.testing.assert_array_equal(on_time.compute_mask([a, a], [m1, m2]), np.concatenate([m1, m2], axis=1))
    assert cat.compute_mask([a, b], [None, None]) is None
    with pytest.raises(ValueError, match="outside axis -1"):
        cat([a, b[:1]])
    with pytest.raises(ValueError, match="list of at least 2 arrays"):
        cat(a)
    with pytest.raises(ValueError, match="non-batch axis"):
        L.Concatenate(axis=0)
    with pytest.raises(ValueError, match="dy must have 6 entries along axis -1"):
        cat.backward(dy[..., :5])
    assert L.Concatenate.from_config(json.loads(json.dumps(on_time.get_config()))).axis == 1
