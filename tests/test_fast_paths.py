"""The layers' low-overhead paths: results bitwise equal to the checked public ops, the weight
check cached by identity (a replaced weight is picked up, an in-place update too), small
training caches that skip the buffer pool, the step API's ready states, and the same clear
errors at the public entries."""
from __future__ import annotations

import numpy as np
import pytest

from fastrnn import backend, layers, ops
from fastrnn._kernel_cache import POOL, KernelCache, PooledKernelCache

CELLS = [("SimpleRNN", {}), ("SimpleRNN", {"activation": "relu"}), ("LSTM", {}), ("GRU", {}),
         ("GRU", {"use_bias": False})]
IDS = ["rnn_tanh", "rnn_relu", "lstm", "gru", "gru_nobias"]


def _layer(kind, kw, units=5, features=3, **more):
    return getattr(layers, kind)(units, seed=1, input_shape=(None, features), **kw, **more)


def _public(layer, x, training, h0=None, c0=None):
    """The checked public op of the layer's cell on its weights."""
    spec = layer.spec
    biases = [np.zeros(spec.gates * layer.units, np.float32) if getattr(layer, n) is None else getattr(layer, n).value
              for n in spec.bias_names]
    kw = {"c0": c0} if spec.n_states == 2 else {}
    if spec.base == "rnn":
        kw["activation"] = spec.activation
    fwd = getattr(ops, f"{spec.base}_forward")
    return fwd(x, layer.w_ih.value, layer.w_hh.value, *biases, h0=h0, training=training, **kw)


def _public_backward(layer, cache, dy):
    return getattr(ops, f"{layer.spec.base}_backward")(cache, dy)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("isa", backend.available_isas())
@pytest.mark.parametrize("kind,kw", CELLS, ids=IDS)
@pytest.mark.parametrize("B,T,F,H", [(1, 1, 1, 1), (4, 1, 8, 16), (3, 17, 5, 33), (2, 3, 7, 17)])
def test_layer_call_equals_the_public_op_bit_for_bit(kind, kw, B, T, F, H, isa, threads):
    prev, prev_threads = backend.isa(), backend.get_num_threads()
    backend.set_isa(isa)
    backend.set_num_threads(threads)
    try:
        rng = np.random.default_rng(B * 100 + T)
        layer = _layer(kind, kw, units=H, features=F, return_sequences=True)
        x = rng.standard_normal((B, T, F)).astype(np.float32)
        dy = rng.standard_normal((B, T, H)).astype(np.float32)
        y_ref, _, cache = _public(layer, x, True)
        g = _public_backward(layer, cache, dy)
        np.testing.assert_array_equal(layer(x), y_ref)
        np.testing.assert_array_equal(layer(x, training=True), y_ref)
        dx = layer.backward(dy)
        np.testing.assert_array_equal(dx, g["x"])
        np.testing.assert_array_equal(layer.w_ih.grad, g["w_ih"])
        np.testing.assert_array_equal(layer.w_hh.grad, g["w_hh"])
        for name in layer.spec.bias_names:
            if getattr(layer, name) is not None:
                np.testing.assert_array_equal(getattr(layer, name).grad, g[name])
    finally:
        backend.set_isa(prev)
        backend.set_num_threads(prev_threads)


@pytest.mark.parametrize("kind,kw", CELLS, ids=IDS)
def test_a_replaced_weight_array_is_picked_up(kind, kw):
    rng = np.random.default_rng(0)
    layer = _layer(kind, kw, return_sequences=True)
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    before = layer(x)
    # assignment: a new array (another identity)
    layer.w_hh.value = (layer.w_hh.value * 0.5).astype(np.float32)
    after = layer(x)
    assert not np.array_equal(after, before)
    np.testing.assert_array_equal(after, _public(layer, x, False)[0])
    # in place (what optimizers and set_weights do): same identity, new values
    layer.w_ih.value *= 2.0
    np.testing.assert_array_equal(layer(x), _public(layer, x, False)[0])
    layer.set_weights([w * 0.25 for w in layer.get_weights()])
    np.testing.assert_array_equal(layer(x), _public(layer, x, False)[0])
    h, _ = layer.step(x[:, 0])
    np.testing.assert_array_equal(h, _public(layer, x[:, :1], False)[1][0] if layer.spec.n_states == 2
                                  else _public(layer, x[:, :1], False)[1])


def test_a_replaced_parameter_and_a_rebuilt_layer_are_picked_up():
    rng = np.random.default_rng(1)
    layer = _layer("LSTM", {}, return_sequences=True)
    x = rng.standard_normal((2, 3, 3)).astype(np.float32)
    layer(x)
    old = layer.w_ih
    layer.w_ih = type(old)(old.name, rng.standard_normal(old.shape))
    np.testing.assert_array_equal(layer(x), _public(layer, x, False)[0])


def test_weights_the_kernels_cannot_take_as_they_are_are_converted_at_every_call():
    """A float64 or non-contiguous value gives the right answer, and an in-place update of it
    afterwards too: no converted copy is kept (it would go stale)."""
    rng = np.random.default_rng(2)
    layer = _layer("GRU", {}, return_sequences=True)
    x = rng.standard_normal((2, 3, 3)).astype(np.float32)
    w64 = layer.w_hh.value.astype(np.float64)
    layer.w_hh.value = w64
    ref32 = w64.astype(np.float32)
    want = ops.gru_forward(x, layer.w_ih.value, ref32, layer.b_ih.value, layer.b_hh.value, training=False)[0]
    np.testing.assert_array_equal(layer(x), want)
    w64 *= 0.5  # in place, on the float64 array the parameter holds
    want = ops.gru_forward(x, layer.w_ih.value, w64.astype(np.float32), layer.b_ih.value, layer.b_hh.value,
                           training=False)[0]
    np.testing.assert_array_equal(layer(x), want)
    assert layer._kw_key is None or layer._kw_key[1] is not w64
    wf = np.asfortranarray(layer.w_ih.value)
    layer.w_ih.value = wf
    layer.w_hh.value = ref32
    want = ops.gru_forward(x, np.ascontiguousarray(wf), ref32, layer.b_ih.value, layer.b_hh.value, training=False)[0]
    np.testing.assert_array_equal(layer(x), want)


def test_a_weight_of_the_wrong_shape_is_named():
    layer = _layer("LSTM", {})
    layer.w_hh.value = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match=r"parameter 'w_hh' must have shape \(20, 5\), got \(3, 3\)"):
        layer(np.ones((1, 2, 3), np.float32))


def test_small_training_caches_skip_the_pool_and_large_ones_use_it():
    rng = np.random.default_rng(3)
    small = _layer("LSTM", {}, return_sequences=True)
    x = rng.standard_normal((4, 1, 3)).astype(np.float32)
    hits, misses = POOL.hits, POOL.misses
    small(x, training=True)
    assert type(small._cache["cache"]) is KernelCache
    assert (POOL.hits, POOL.misses) == (hits, misses)  # not consulted at all
    big = _layer("LSTM", {}, units=64, features=8, return_sequences=True)
    xb = rng.standard_normal((64, 40, 8)).astype(np.float32)  # gates 64*40*256*4 B = 2.6 MB
    y1 = big(xb, training=True)
    assert type(big._cache["cache"]) is PooledKernelCache
    g1 = big.backward(np.ones_like(y1)).copy()
    y2 = big(xb, training=True)  # takes back the first call's buffers
    big.zero_grad()
    g2 = big.backward(np.ones_like(y2))
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(g1, g2)


def test_the_training_cache_holds_private_copies():
    """Changing x or a weight in place between forward and backward does not change the
    gradients (the small path copies as the pooled one does)."""
    rng = np.random.default_rng(4)
    layer = _layer("LSTM", {}, return_sequences=True)
    x = rng.standard_normal((2, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((2, 3, 5)).astype(np.float32)
    layer(x, training=True)
    ref = layer.backward(dy).copy()
    layer.zero_grad()
    layer(x, training=True)
    x *= 3.0
    layer.w_ih.value *= 2.0
    np.testing.assert_array_equal(layer.backward(dy), ref)


@pytest.mark.parametrize("kind,kw", CELLS, ids=IDS)
def test_step_with_ready_states_equals_checked_states(kind, kw):
    rng = np.random.default_rng(5)
    layer = _layer(kind, kw)
    n = layer.spec.n_states
    x = rng.standard_normal((3, 3)).astype(np.float32)
    s64 = [rng.standard_normal((3, 5)) for _ in range(n)]  # float64: converted by the checked path
    h_ref, st_ref = layer.step(x, s64)
    s32 = [s.astype(np.float32) for s in s64]
    h, st = layer.step(x, s32)  # ready: passed as they are
    np.testing.assert_array_equal(h, h_ref)
    for a, b in zip(st, st_ref):
        np.testing.assert_array_equal(a, b)
    fortran = [np.asfortranarray(np.tile(s, (1, 2))[:, :5]) for s in s32]  # not C-contiguous
    h2, _ = layer.step(x, fortran)
    np.testing.assert_array_equal(h2, h_ref)
    # a chain of steps equals the sequence call
    seq = _layer(kind, kw, return_sequences=True)
    xs = rng.standard_normal((3, 6, 3)).astype(np.float32)
    states, hs = None, []
    for t in range(6):
        h, states = layer.step(xs[:, t], states)
        hs.append(h)
    np.testing.assert_array_equal(np.stack(hs, axis=1), seq(xs))


def test_step_still_names_bad_states():
    lstm = _layer("LSTM", {})
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"states\[1\] must have shape \[batch, units\] = \(2, 5\), got \(3, 5\)"):
        lstm.step(x, [np.zeros((2, 5), np.float32), np.zeros((3, 5), np.float32)])
    with pytest.raises(TypeError, match=r"states\[0\] must be a numeric array"):
        lstm.step(x, [np.array([["a"] * 5] * 2), np.zeros((2, 5), np.float32)])
    with pytest.raises(ValueError, match="states must be a list of 2"):
        lstm.step(x, [np.zeros((2, 5), np.float32)])
    with pytest.raises(ValueError, match="step expects x_t with 3 features"):
        lstm.step(np.ones((2, 4), np.float32))


def test_layer_call_still_names_bad_input():
    lstm = _layer("LSTM", {})
    with pytest.raises(ValueError, match=r"expected input of shape \[batch, time, features\] \(rank 3\)"):
        lstm(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="expected input with 3 features in the last axis"):
        lstm(np.ones((2, 4, 5), np.float32))
    with pytest.raises(TypeError, match="input must be a numeric array"):
        lstm(np.array([[["a"] * 3]]))
    emb = layers.Embedding(5, 2, seed=0)  # a layer with its own input check still runs it
    with pytest.raises(ValueError, match="outside"):
        emb(np.array([[7]]))
