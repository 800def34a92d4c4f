"""The recurrent layers' one-step calls keep W_hh packed for the kernels (core.pack_whh, the
forward's whh_packed) and W_ih transposed (the forward's wih_t, which the x projection reads in
place): the kernel with either against the kernel without and the NumPy reference, and the
layer's copies renewed after every kind of write to the weights, so that a changed weight is never
used stale."""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import backend, layers, optim, reference
from fastrnn._cells import cell_spec

KINDS = {"rnn": ("SimpleRNN", 1), "lstm": ("LSTM", 4), "gru": ("GRU", 3)}


def _weights(rng, G, I, H):
    w_ih = (rng.standard_normal((G * H, I)) * 0.3).astype(np.float32)
    w_hh = (rng.standard_normal((G * H, H)) * 0.3).astype(np.float32)
    b = (rng.standard_normal(G * H) * 0.1).astype(np.float32)
    return w_ih, w_hh, b


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("T, B, I, H", [(1, 1, 1, 1), (1, 3, 5, 17), (1, 2, 4, 33), (4, 3, 7, 16), (1, 1, 8, 64),
                                        (3, 17, 3, 3)])
@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("training", [False, True])
def test_forward_with_packed_whh_equals_the_kernel_and_the_reference(isa, threads, cell, T, B, I, H, nthreads,
                                                                     training):
    threads(nthreads)
    spec = cell_spec(cell)
    G = spec.gates
    rng = np.random.default_rng(H * 10 + B)
    w_ih, w_hh, b = _weights(rng, G, I, H)
    b_hh = (rng.standard_normal(G * H) * 0.1).astype(np.float32) if cell == "gru" else None
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    c0 = rng.standard_normal((B, H)).astype(np.float32) if cell == "lstm" else None
    core = backend.core()
    packed = core.pack_whh(spec.kernel_id, w_hh, B)
    # layout 1 (passes of 2 gates) only where the AVX2 LSTM loop reads it: more than 2 rows
    assert packed[:4] == (isa, spec.kernel_id, H, 1 if (isa == "avx2" and G == 4 and B > 2) else 0)
    args = (spec.kernel_id, x, w_ih, w_hh, b, b_hh, h0, c0, None, False, True, training)
    got = core.forward(*args, None, None, None, None, packed)
    want = core.forward(*args)
    with_t = core.forward(*args, None, None, None, None, packed, np.ascontiguousarray(w_ih.T))
    for g, w, gt in zip(got, want, with_t):  # y, h_n, c_n and the saved gates: the same bits
        if w is None:
            assert g is None and gt is None
        else:
            np.testing.assert_array_equal(g, w)
            np.testing.assert_array_equal(gt, w)
    ref_fn = getattr(reference, f"{spec.base}_forward")
    biases = (b, b_hh) if cell == "gru" else (b,)
    kw = {"c0": c0.astype(np.float64)} if cell == "lstm" else {}
    y_ref, _, _ = ref_fn(x.astype(np.float64), w_ih.astype(np.float64), w_hh.astype(np.float64),
                         *[v.astype(np.float64) for v in biases], h0=h0.astype(np.float64), training=False, **kw)
    np.testing.assert_allclose(got[0], y_ref, rtol=1e-4, atol=1e-5)


def test_forward_refuses_a_wrong_packed_whh():
    core = backend.core()
    rng = np.random.default_rng(0)
    w_ih, w_hh, b = _weights(rng, 4, 3, 5)
    x = rng.standard_normal((2, 1, 3)).astype(np.float32)
    args = (2, x, w_ih, w_hh, b, None, None, None, None, False, True, False)
    packed = core.pack_whh(2, w_hh, 2)
    other = "scalar" if packed[0] != "scalar" else "avx2"
    with pytest.raises(ValueError, match="whh_packed: packed for the .* path"):
        core.forward(*args, None, None, None, None, (other, *packed[1:]))
    with pytest.raises(ValueError, match="another cell or hidden size"):
        core.forward(*args, None, None, None, None, (packed[0], 3, *packed[2:]))
    with pytest.raises(ValueError, match="another cell or hidden size"):
        core.forward(*args, None, None, None, None, (*packed[:2], 6, *packed[3:]))
    with pytest.raises(ValueError, match="another layout"):  # one the loop does not read for this batch
        core.forward(*args, None, None, None, None, (*packed[:3], packed[3] + 1, packed[4]))
    with pytest.raises(ValueError, match="wrong size"):
        core.forward(*args, None, None, None, None, (*packed[:4], packed[4][:-1].copy()))
    with pytest.raises(TypeError, match="C-contiguous float32"):
        core.forward(*args, None, None, None, None, (*packed[:4], packed[4].astype(np.float64)))
    with pytest.raises(ValueError, match="5-tuple"):
        core.forward(*args, None, None, None, None, packed[:4])
    with pytest.raises(ValueError, match="w_hh: expected shape"):
        core.pack_whh(2, w_hh[:-1], 2)
    with pytest.raises(ValueError, match="batch: expected >= 1"):
        core.pack_whh(2, w_hh, 0)
    with pytest.raises(ValueError, match="wih_t: expected shape"):
        core.forward(*args, None, None, None, None, None, w_ih.copy())  # not transposed
    with pytest.raises(TypeError):
        core.forward(*args, None, None, None, None, None, np.ascontiguousarray(w_ih.T, dtype=np.float64))
    with pytest.raises(TypeError):
        core.forward(*args, None, None, None, None, None, np.asfortranarray(w_ih.T))


def _fresh_step(lay, x, states):
    """The step as a layer without a kept packed W_hh or transposed W_ih computes it (it makes them
    at this call)."""
    kept = lay._whh_pack, lay._wih_t
    lay._whh_pack = lay._wih_t = None
    try:
        return lay.step(x, states)[0]
    finally:
        lay._whh_pack, lay._wih_t = kept


def _fresh_call(lay, xs, states):
    """An inference call on a sequence as a layer without a kept packed W_hh computes it."""
    kept = lay._whh_pack
    lay._whh_pack = None
    try:
        return lay(xs, initial_state=states)
    finally:
        lay._whh_pack = kept


def _writes(tmp_path, name):
    """(name, function(layer, model)) for every way the weights change; the writes to one parameter
    change `name` (w_hh or w_ih)."""

    def assign(lay, model):
        getattr(lay, name).assign(getattr(lay, name).value * 0.5)

    def layer_set_weights(lay, model):
        lay.set_weights([w * 1.5 for w in lay.get_weights()])

    def model_set_weights(lay, model):
        model.set_weights([w - 0.1 for w in model.get_weights()])

    def value_setter(lay, model):
        getattr(lay, name).value = getattr(lay, name).value[::-1].copy()

    def augmented(lay, model):
        getattr(lay, name).value *= 0.7

    def touch(lay, model):
        getattr(lay, name).value[...] = getattr(lay, name).value + 0.2
        getattr(lay, name).touch()

    def train_fused(lay, model):
        model.compile(optimizer=optim.Adam(0.05), loss="mse")
        rng = np.random.default_rng(3)
        model.train_on_batch(rng.standard_normal((4, 3, 5)).astype(np.float32),
                             rng.standard_normal((4, 6)).astype(np.float32))

    def train_numpy(lay, model):
        opt = optim.SGD(0.5)
        opt._use_fused = False
        for p in lay.parameters():
            p.grad[...] = 1.0
        opt.step(lay.parameters())

    def load_weights(lay, model):
        other = fr.Sequential([layers.Input((None, 5)), type(lay)(6, seed=99)])
        path = str(tmp_path / "w.fastrnn")
        other.save_weights(path)
        model.load_weights(path)

    return [assign, layer_set_weights, model_set_weights, value_setter, augmented, touch, train_fused, train_numpy,
            load_weights]


@pytest.mark.parametrize("name", ["w_hh", "w_ih"])
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN"])
def test_step_keeps_the_packed_whh_and_never_serves_it_stale(kind, name, tmp_path):
    lay = getattr(layers, kind)(6, seed=0)
    model = fr.Sequential([layers.Input((None, 5)), lay])
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5)).astype(np.float32)
    xs = rng.standard_normal((2, 4, 5)).astype(np.float32)
    states = [rng.standard_normal((2, 6)).astype(np.float32) for _ in range(lay.spec.n_states)]
    h, _ = lay.step(x, states)
    packed, wih_t = lay._whh_pack[4], lay._wih_t[2]
    np.testing.assert_array_equal(wih_t, lay.w_ih.value.T)
    np.testing.assert_array_equal(h, _fresh_step(lay, x, states))
    h_again, _ = lay.step(x, states)
    assert lay._whh_pack[4] is packed and lay._wih_t[2] is wih_t  # nothing changed: the same copies
    np.testing.assert_array_equal(h_again, h)
    for write in _writes(tmp_path, name):
        before = lay.step(x, states)[0]
        write(lay, model)
        after = lay.step(x, states)[0]
        assert not np.array_equal(after, before), write.__name__  # the write changed W_hh's effect
        np.testing.assert_array_equal(after, _fresh_step(lay, x, states), err_msg=write.__name__)
        np.testing.assert_array_equal(after, lay(x[:, None, :].copy(), initial_state=states), err_msg=write.__name__)
        # inference on a sequence keeps the packed W_hh too: never stale either
        np.testing.assert_array_equal(lay(xs, initial_state=states), _fresh_call(lay, xs, states),
                                      err_msg=write.__name__)
    # another batch size: packed for it (the loop's layout may depend on the batch)
    x3 = rng.standard_normal((3, 5)).astype(np.float32)
    states3 = [rng.standard_normal((3, 6)).astype(np.float32) for _ in range(lay.spec.n_states)]
    h3, _ = lay.step(x3, states3)
    assert lay._whh_pack[3] == 3
    np.testing.assert_array_equal(h3, _fresh_step(lay, x3, states3))


def test_step_packs_again_on_another_isa_path():
    lay = layers.LSTM(5, seed=0)
    fr.Sequential([layers.Input((None, 3)), lay])
    x = np.ones((1, 3), np.float32)
    states = [np.full((1, 5), 0.5, np.float32)] * 2
    before = backend.isa()
    try:
        for name in backend.available_isas():
            backend.set_isa(name)
            h, _ = lay.step(x, states)
            assert lay._whh_pack[2] == name and lay._whh_pack[4][0] == name
            np.testing.assert_array_equal(h, _fresh_step(lay, x, states))
    finally:
        backend.set_isa(before)


def test_model_step_after_training_uses_the_new_weights():
    rng = np.random.default_rng(2)
    model = fr.Sequential([layers.Input((None, 4)), layers.GRU(8, seed=0), layers.Dense(3, seed=0)])
    model.compile(optimizer="adam", loss="mse")
    x = rng.standard_normal((6, 2, 4)).astype(np.float32)
    y = rng.standard_normal((6, 3)).astype(np.float32)
    outs = []
    for _ in range(3):
        _, states = model.step(x[:, 0], states=None)
        out, _ = model.step(x[:, 1], states=states)  # W_hh meets a nonzero h
        np.testing.assert_allclose(out, model.predict(x), rtol=1e-5, atol=1e-6)
        outs.append(out)
        model.train_on_batch(x, y)
    assert not np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[1], outs[2])
