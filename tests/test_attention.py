"""BahdanauAttention and LuongAttention: forward against the formulas, masks, gradients, config."""
from __future__ import annotations

import json

import numpy as np
import pytest

from _problems import numgrad
from fastrnn import layers as L

B, TX, DQ, DV, U = 3, 5, 4, 6, 7


def _inputs(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((B, DQ)).astype(dtype), rng.standard_normal((B, TX, DV)).astype(dtype)


def _mask():
    m = np.ones((B, TX), dtype=bool)
    m[0, 3:] = False   # right padding
    m[1, [0, 2]] = False  # any pattern
    return m


def _make(kind, dtype="float64", seed=3):
    if kind == "bahdanau":
        return L.BahdanauAttention(U, dtype=dtype, seed=seed)
    if kind == "general":
        return L.LuongAttention("general", dtype=dtype, seed=seed)
    return L.LuongAttention("dot", dtype=dtype, seed=seed)


def _direct(layer, q, v, mask):
    """Scores, weights and context from the textbook formulas, one (b, j) at a time."""
    Bn, T, _ = v.shape
    e = np.zeros((Bn, T))
    for b in range(Bn):
        for j in range(T):
            if isinstance(layer, L.BahdanauAttention):
                w1, w2, bias, vv = (p.value for p in layer.parameters())
                e[b, j] = vv[:, 0] @ np.tanh(w1.T @ q[b] + w2.T @ v[b, j] + bias)
            elif layer.score == "general":
                e[b, j] = q[b] @ layer.w.value @ v[b, j]
            else:
                e[b, j] = q[b] @ v[b, j]
    alpha = np.zeros_like(e)
    for b in range(Bn):
        valid = np.ones(T, bool) if mask is None else mask[b]
        if valid.any():
            ex = np.exp(e[b, valid] - e[b, valid].max())
            alpha[b, valid] = ex / ex.sum()
    ctx = np.stack([sum(alpha[b, j] * v[b, j] for j in range(T)) for b in range(Bn)])
    return ctx, alpha


@pytest.mark.parametrize("kind", ["bahdanau", "general", "dot"])
@pytest.mark.parametrize("masked", [False, True])
def test_forward_matches_direct_formula(kind, masked):
    q, v = _inputs()
    if kind == "dot":
        q = np.random.default_rng(5).standard_normal((B, DV))
    layer = _make(kind)
    mask = _mask() if masked else None
    ctx, w = layer(q, v, mask=mask)
    ctx_ref, w_ref = _direct(layer, q, v, mask)
    np.testing.assert_allclose(w, w_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ctx, ctx_ref, rtol=1e-12, atol=1e-14)
    assert ctx.shape == (B, DV) and w.shape == (B, TX)


@pytest.mark.parametrize("kind", ["bahdanau", "general"])
def test_masked_steps_get_zero_weight_rows_sum_to_one_and_empty_row_is_zero(kind):
    q, v = _inputs(dtype=np.float32)
    v = v * 50.0  # large scores must not overflow the softmax
    mask = _mask()
    mask[2] = False  # a fully masked row
    layer = _make(kind, dtype="float32")
    ctx, w = layer(q, v, mask=mask, training=True)
    assert ctx.dtype == np.float32 and w.dtype == np.float32
    assert np.all(np.isfinite(ctx)) and np.all(np.isfinite(w))
    assert np.all(w[~mask] == 0.0)
    np.testing.assert_allclose(w[:2].sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(w[2] == 0.0) and np.all(ctx[2] == 0.0)
    # changing the values at masked steps changes nothing
    v2 = v.copy()
    v2[~mask] = 1e3
    ctx2, w2 = layer(q, v2, mask=mask)
    np.testing.assert_array_equal(w2, w)
    np.testing.assert_allclose(ctx2, ctx, rtol=1e-6)
    # the empty row's gradients are zero and finite
    dq, dv = layer.backward(np.ones_like(ctx), np.ones_like(w))
    assert np.all(np.isfinite(dq)) and np.all(np.isfinite(dv))
    assert np.all(dq[2] == 0.0) and np.all(dv[2] == 0.0)
    assert np.all(dv[~mask] == 0.0)


def test_masked_softmax_without_mask_is_plain_softmax():
    s = np.array([[1.0, 2.0, 3.0], [1000.0, 0.0, -1000.0]])
    w = L.attention.masked_softmax(s)
    e = np.exp(s[0] - 3.0)
    np.testing.assert_allclose(w[0], e / e.sum())
    np.testing.assert_allclose(w[1], [1.0, 0.0, 0.0])


@pytest.mark.parametrize("kind", ["bahdanau", "general", "dot"])
@pytest.mark.parametrize("masked", [False, True])
def test_backward_matches_finite_differences(kind, masked):
    q, v = _inputs(1)
    if kind == "dot":
        q = np.random.default_rng(6).standard_normal((B, DV))
    layer = _make(kind)
    mask = _mask() if masked else None
    rng = np.random.default_rng(2)
    rc, rw = rng.standard_normal((B, DV)), rng.standard_normal((B, TX))

    def loss():
        c, w = layer(q, v, mask=mask)
        return float(np.sum(rc * c) + np.sum(rw * w))

    layer(q, v, mask=mask, training=True)
    layer.zero_grad()
    dq, dv = layer.backward(rc, rw)
    np.testing.assert_allclose(dq, numgrad(loss, q), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dv, numgrad(loss, v), rtol=1e-6, atol=1e-8)
    for p in layer.parameters():
        np.testing.assert_allclose(p.grad, numgrad(loss, p.value), rtol=1e-6, atol=1e-8, err_msg=p.name)
    # dweights=None means zero gradient for the weights
    layer(q, v, mask=mask, training=True)
    dq0, _ = layer.backward(rc)
    layer(q, v, mask=mask, training=True)
    dq1, _ = layer.backward(rc, np.zeros((B, TX)))
    np.testing.assert_allclose(dq0, dq1)


@pytest.mark.parametrize("kind", ["bahdanau", "general", "dot"])
def test_float32_layer_matches_float64_forward_and_backward(kind):
    """float32 runs the dense products on fastrnn's GEMM (ops.matmul), float64 on numpy's."""
    q, v = _inputs(4)
    if kind == "dot":
        q = np.random.default_rng(7).standard_normal((B, DV))
    mask = _mask()
    rng = np.random.default_rng(5)
    rc, rw = rng.standard_normal((B, DV)), rng.standard_normal((B, TX))
    l64, l32 = _make(kind), _make(kind, dtype="float32")
    l64(q, v, mask=mask)
    l32(q.astype(np.float32), v.astype(np.float32), mask=mask)
    l32.set_weights([w.astype(np.float32) for w in l64.get_weights()])
    want = l64(q, v, mask=mask, training=True)
    got = l32(q.astype(np.float32), v.astype(np.float32), mask=mask, training=True)
    for g, w in zip(got, want):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    for g, w in zip(l32.backward(rc.astype(np.float32), rw.astype(np.float32)), l64.backward(rc, rw)):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    for p32, p64 in zip(l32.parameters(), l64.parameters()):
        np.testing.assert_allclose(p32.grad, p64.grad, rtol=1e-4, atol=1e-5, err_msg=p32.name)


def test_backward_accumulates_and_step_api_keeps_separate_caches():
    q, v = _inputs(2)
    layer = _make("bahdanau")
    c1 = layer.forward_step(q, v)[2]
    c2 = layer.forward_step(q * 2, v)[2]
    dc = np.ones((B, DV))
    layer.zero_grad()
    layer.backward_step(c1, dc)
    g1 = layer.w1.grad.copy()
    layer.backward_step(c2, dc)
    g12 = layer.w1.grad.copy()
    layer.zero_grad()
    layer.backward_step(c2, dc)
    np.testing.assert_allclose(g12, g1 + layer.w1.grad)
    assert not np.allclose(g1, layer.w1.grad)


@pytest.mark.parametrize("kind", ["bahdanau", "general", "dot"])
def test_nan_or_inf_at_masked_steps_reaches_neither_context_nor_gradients(kind):
    """Padding with NaN / inf in the masked steps of ``values`` changes nothing: every output and
    gradient equals the run with zeros there (the weights were always right; 0 * NaN was not)."""
    rng = np.random.default_rng(21)
    q = rng.standard_normal((B, DQ if kind != "dot" else DV))
    v = rng.standard_normal((B, TX, DV))
    mask = _mask()
    mask[2] = False  # a row with no valid step: zero context, never NaN
    v0 = np.where(mask[..., None], v, 0.0)
    v_bad = v0.copy()
    v_bad[~mask] = np.nan
    v_bad[1, 0] = np.inf
    dctx = rng.standard_normal((B, DV))
    got, want = _make(kind), _make(kind)
    outs = []
    for layer, vals in ((got, v_bad), (want, v0)):
        ctx, w = layer(q, vals, mask=mask, training=True)
        dq, dv = layer.backward(dctx)
        outs.append((ctx, w, dq, np.where(mask[..., None], dv, 0.0), [p.grad for p in layer.parameters()]))
    (c1, w1, dq1, dv1, g1), (c0, w0, dq0, dv0, g0) = outs
    assert np.all(np.isfinite(c1)) and np.all(c1[2] == 0)
    for a, b in ((c1, c0), (w1, w0), (dq1, dq0), (dv1, dv0)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(g1, g0):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["bahdanau", "dot"])
def test_backward_is_unaffected_by_changes_to_the_query_and_returned_weights(kind):
    rng = np.random.default_rng(22)
    q = rng.standard_normal((B, DQ if kind != "dot" else DV))
    v = rng.standard_normal((B, TX, DV))
    dctx = rng.standard_normal((B, DV))
    results = []
    for meddle in (False, True):
        layer = _make(kind)
        qq = q.copy()
        _, w = layer(qq, v, mask=_mask(), training=True)
        if meddle:  # the caller reuses its arrays before backward
            qq += 1.0
            w *= 3.0
        dq, dv = layer.backward(dctx)
        results.append((dq, dv, [p.grad.copy() for p in layer.parameters()]))
    (dq1, dv1, g1), (dq2, dv2, g2) = results
    np.testing.assert_array_equal(dq1, dq2)
    np.testing.assert_array_equal(dv1, dv2)
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(a, b)


def test_parameters_names_shapes_and_glorot_init():
    layer = L.BahdanauAttention(10, name="att", seed=0, query_dim=20, value_dim=30)
    assert layer.built
    assert [p.name for p in layer.parameters()] == ["att/w1", "att/w2", "att/b", "att/v"]
    assert [p.shape for p in layer.parameters()] == [(20, 10), (30, 10), (10,), (10, 1)]
    assert all(p.dtype == np.float32 for p in layer.parameters())
    assert np.abs(layer.w2.value).max() <= np.sqrt(6.0 / 40) and np.abs(layer.w2.value).max() > 0.5 * np.sqrt(6.0 / 40)
    assert np.all(layer.b.value == 0)
    assert layer.count_params() == 20 * 10 + 30 * 10 + 10 + 10
    lu = L.LuongAttention(query_dim=4, value_dim=6)
    assert lu.count_params() == 24
    assert L.LuongAttention("dot").built is False


@pytest.mark.parametrize("kind", ["bahdanau", "general"])
def test_config_roundtrip_and_set_weights(kind):
    q, v = _inputs(3, np.float32)
    layer = _make(kind, dtype="float32")
    ctx, w = layer(q, v)
    cfg = json.loads(json.dumps(L.serialize(layer)))
    cfg["config"]["name"] = layer.name + "_copy"
    clone = L.deserialize(cfg)
    assert type(clone) is type(layer) and clone.built  # dims are in the config
    clone.set_weights(layer.get_weights())
    ctx2, w2 = clone(q, v)
    np.testing.assert_array_equal(ctx2, ctx)
    np.testing.assert_array_equal(w2, w)
    # an unbuilt layer can be built from the weights' shapes
    fresh = type(layer)(**({"units": U} if kind == "bahdanau" else {}))
    fresh.set_weights(layer.get_weights())
    np.testing.assert_array_equal(fresh(q, v)[0], ctx)
    assert layer.compute_output_shape(((DQ,), (TX, DV))) == [(DV,), (TX,)]


def test_bad_inputs_raise_clear_errors():
    q, v = _inputs(4, np.float32)
    layer = L.BahdanauAttention(U)
    with pytest.raises(ValueError, match="query must have shape"):
        layer(q[:, None, None, :], v)
    with pytest.raises(ValueError, match="values"):
        layer(q, v[:, 0])
    with pytest.raises(ValueError, match="batch size"):
        layer(q[:2], v)
    with pytest.raises(TypeError, match="query"):
        layer("abc", v)
    with pytest.raises(TypeError, match="values"):
        layer(q, v.astype(complex))
    layer(q, v)
    with pytest.raises(ValueError, match="query must have 4 features"):
        layer(np.zeros((B, 5)), v)
    with pytest.raises(ValueError, match="values must have 6 features"):
        layer(q, np.zeros((B, TX, 2)))
    with pytest.raises(ValueError, match="mask must have shape"):
        layer(q, v, mask=np.ones((B, TX + 1), bool))
    with pytest.raises(TypeError, match="mask must be a boolean"):
        layer(q, v, mask=np.ones((B, TX)))
    with pytest.raises(RuntimeError, match="before a forward pass"):
        L.BahdanauAttention(U).backward(np.zeros((B, DV)))
    layer(q, v, training=True)
    with pytest.raises(ValueError, match="dcontext must have shape"):
        layer.backward(np.zeros((B, DV + 1)))
    with pytest.raises(ValueError, match="dweights must have shape"):
        layer.backward(np.zeros((B, DV)), np.zeros((B, 1)))
    with pytest.raises(ValueError, match="units"):
        L.BahdanauAttention(0)
    with pytest.raises(TypeError, match="units"):
        L.BahdanauAttention(2.5)
    with pytest.raises(ValueError, match="score must be"):
        L.LuongAttention("concat")
    with pytest.raises(ValueError, match="same number of features"):
        L.LuongAttention("dot")(q, v)


@pytest.mark.parametrize("kind", ["bahdanau", "general"])
def test_keras_style_list_call_equals_the_two_argument_call(kind):
    rng = np.random.default_rng(23)
    q, v = rng.standard_normal((B, DQ)), rng.standard_normal((B, TX, DV))
    layer = _make(kind)
    want = layer(q, v, mask=_mask())
    for mask in (_mask(), [None, _mask()]):
        got = layer([q, v], mask=mask)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"takes \[query, values\], got 3 items"):
        layer([q, v, v])
    with pytest.raises(ValueError, match=r"\[None, values_mask\]"):
        layer([q, v], mask=[np.ones((B,), bool), _mask()])
    with pytest.raises(TypeError, match="missing values"):
        layer(q)


@pytest.mark.parametrize("kind", ["bahdanau", "general", "dot"])
def test_query_sequence_equals_one_call_per_query_step(kind):
    """A query sequence [B, Tq, Dq] (Keras's Attention / AdditiveAttention call) gives, step by
    step, what one call per query step gives; its backward sums the steps' parameter gradients."""
    rng = np.random.default_rng(24)
    TQ = 4
    dq = DQ if kind != "dot" else DV
    qs = rng.standard_normal((B, TQ, dq))
    v = rng.standard_normal((B, TX, DV))
    mask = _mask()
    dctx = rng.standard_normal((B, TQ, DV))
    dw = rng.standard_normal((B, TQ, TX))
    seq, step = _make(kind), _make(kind)
    ctx, w = seq(qs, v, mask=mask, training=True)
    assert ctx.shape == (B, TQ, DV) and w.shape == (B, TQ, TX)
    dq_seq, dv_seq = seq.backward(dctx, dw)
    dv_sum = np.zeros_like(v)
    for i in range(TQ):
        c, wi, cache = step.forward_step(qs[:, i], v, mask=mask, training=True)
        np.testing.assert_allclose(ctx[:, i], c, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(w[:, i], wi, rtol=1e-12, atol=1e-14)
        dqi, dvi = step.backward_step(cache, dctx[:, i], dw[:, i])
        np.testing.assert_allclose(dq_seq[:, i], dqi, rtol=1e-10, atol=1e-12)
        dv_sum += dvi
    np.testing.assert_allclose(dv_seq, dv_sum, rtol=1e-10, atol=1e-12)
    for p, r in zip(seq.parameters(), step.parameters()):
        np.testing.assert_allclose(p.grad, r.grad, rtol=1e-10, atol=1e-12)
    assert seq.compute_output_shape(((TQ, dq), (TX, DV))) == [(TQ, DV), (TQ, TX)]
    with pytest.raises(ValueError, match=r"dcontext must have shape \(3, 4, 6\)"):
        seq.backward(dctx[:, 0])


def test_query_sequence_gradients_match_finite_differences():
    rng = np.random.default_rng(25)
    layer = _make("bahdanau")
    qs = rng.standard_normal((B, 3, DQ))
    v = rng.standard_normal((B, TX, DV))
    mask = _mask()
    rc = rng.standard_normal((B, 3, DV))
    layer(qs, v, mask=mask)

    def loss():
        return float(np.sum(rc * layer(qs, v, mask=mask)[0]))

    layer(qs, v, mask=mask, training=True)
    layer.zero_grad()
    dq, dv = layer.backward(rc)
    np.testing.assert_allclose(dq, numgrad(loss, qs), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(dv, numgrad(loss, v), rtol=1e-6, atol=1e-9)
    for p in layer.parameters():
        g = p.grad.copy()
        np.testing.assert_allclose(g, numgrad(loss, p.value), rtol=1e-6, atol=1e-9, err_msg=p.name)
