"""The fused softmax cross-entropy kernel (fastrnn._core.xent, csrc/cpu/xent.h) against its NumPy
references (the float64 NumPy forms of fastrnn.losses), on every ISA path and 1, 2 and 3 threads:
sparse and dense targets, logits and probabilities, masks (all-masked rows too), sample weights
(zeros too), awkward class counts (1, 2, 3, 17, 18328) and row counts (1, 7, 700), extreme and
infinite logits; the results are the same bits for every thread count."""
from __future__ import annotations

import numpy as np
import pytest

from fastrnn import _core, losses

THREADS = [1, 2, 3]
# (rows, classes): awkward class counts around the vector widths and the word-LM vocabulary
SIZES = [(1, 1), (7, 1), (7, 2), (1, 3), (700, 3), (7, 17), (700, 17), (1, 18328), (7, 18328), (33, 18328)]


def _reference(ids, y, z, mask, weight, from_logits):
    """Per-row losses and the gradient from the NumPy forms in float64 (the reference twins)."""
    z64 = z.astype(np.float64)
    if ids is not None:
        onehot = np.zeros(z.shape)
        np.put_along_axis(onehot, ids[:, None], 1.0, axis=-1)
        y = onehot
    per, grad = losses._categorical(y.astype(np.float64), z64, from_logits)
    if mask is not None:
        per = np.where(mask, per, 0.0)
        grad = np.where(mask[:, None], grad, 0.0)
    if weight is not None:
        per = per * weight
        grad = grad * weight[:, None]
    return per, grad


def _problem(rng, n, c, from_logits, dense, masked, weighted):
    if from_logits:
        z = (rng.normal(size=(n, c)) * 4).astype(np.float32)
    else:
        z = (rng.random((n, c)) ** 3 + 1e-4).astype(np.float32)
    ids = rng.integers(0, c, n)
    y = None
    if dense:
        y = rng.random((n, c)).astype(np.float32)
        y /= y.sum(axis=1, keepdims=True)
        ids = None
    mask = None
    if masked:
        mask = rng.random(n) < 0.7
        mask[0] = n == 1  # a masked first row (unless it is the only one)
    weight = None
    if weighted:
        weight = rng.random(n) * 2
        weight[n // 2] = 0.0
    return z, ids, y, mask, weight


def _call(z, ids, y, mask, weight, from_logits):
    return _core.xent(z, ids, y, None if mask is None else mask.view(np.uint8), weight, from_logits)


@pytest.mark.parametrize("n,c", SIZES)
@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("dense", [False, True])
def test_kernel_matches_reference_on_every_isa_and_thread_count(isa, threads, n, c, from_logits, dense):
    rng = np.random.default_rng(n * 1000 + c)
    z, ids, y, mask, weight = _problem(rng, n, c, from_logits, dense, masked=n > 1, weighted=n > 2)
    rper, rgrad = _reference(ids, y, z, mask, weight, from_logits)
    results = []
    for nt in THREADS:
        threads(nt)
        per, grad = _call(z, ids, y, mask, weight, from_logits)
        assert per.dtype == np.float64 and grad.dtype == np.float32 and grad.shape == z.shape
        results.append((per, grad))
    per, grad = results[0]
    np.testing.assert_allclose(per, rper, rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(grad, rgrad, rtol=2e-5, atol=2e-7 * max(1.0, np.abs(rgrad).max()))
    if mask is not None:
        assert np.all(per[~mask] == 0) and np.all(grad[~mask] == 0)
    for per_t, grad_t in results[1:]:  # every row computed by the same arithmetic: the same bits
        np.testing.assert_array_equal(per_t, per)
        np.testing.assert_array_equal(grad_t, grad)


def test_softmax_accuracy_is_documented(isa):
    """The softmax's error (xent.h: the vector exp's ~2 ulp, plus the rounding of z - M in float, as
    in any float32 softmax: about an ulp of |z - M| with the block rescaling), measured on 30,000 entries of widely spread
    logits against float64."""
    rng = np.random.default_rng(1)
    z = (rng.normal(size=(3, 10000)) * 8).astype(np.float32)
    ids = np.zeros(3, np.int64)
    _, grad = _call(z, ids, None, None, None, True)
    z64 = z.astype(np.float64)
    d = z64 - z64.max(1, keepdims=True)
    p = np.exp(d)
    p /= p.sum(1, keepdims=True)
    p[:, 0] -= 1.0
    big = np.abs(p) > 1e-30
    rel = np.abs(grad[big] - p[big]) / np.abs(p[big])
    bound = 8e-7 + 2.0**-23 * np.abs(d[big])
    assert np.all(rel < bound), (rel / bound).max()
    near = big & (np.abs(d) < 1.0)  # where the subtraction is (nearly) exact: the exp's own error
    assert np.abs(grad[near] - p[near]).max() / np.abs(p[near]).max() < 6e-7


def test_extreme_and_infinite_logits(isa, threads):
    threads(2)
    c = 40
    z = np.zeros((8, c), np.float32)
    z[0] = np.linspace(-3e4, 3e4, c)  # huge spread
    z[1] = 1e30  # all equal and huge
    z[2, :] = -np.inf
    z[2, 5] = 1.0  # one finite class among -inf
    z[3, :] = -np.inf  # all -inf: NaN as the reference
    z[4, 7] = np.nan
    z[5, 3] = np.inf
    z[6] = -1e30
    z[6, 11] = -np.inf  # the target itself is -inf: infinite loss
    z[7] = np.float32(3.4e38)
    ids = np.array([c - 1, 2, 5, 0, 0, 0, 11, 0])
    per, grad = _call(z, ids, None, None, None, True)
    assert per[0] == pytest.approx(0.0, abs=1e-6) and np.all(np.abs(grad[0]) < 1e-6)
    assert per[1] == pytest.approx(np.log(c), rel=1e-6)
    np.testing.assert_allclose(grad[1], np.where(np.arange(c) == 2, 1 / c - 1, 1 / c), rtol=1e-5)
    assert per[2] == 0.0 and np.all(grad[2] == 0)  # exp(-inf) is exactly 0, no NaN
    for r in (3, 4, 5):
        assert np.isnan(per[r]) and np.all(np.isnan(grad[r]))
    assert per[6] == np.inf and grad[6, 11] == -1.0 and np.all(np.isfinite(grad[6]))
    assert per[7] == pytest.approx(np.log(c), rel=1e-6)
    # dense targets: a -inf logit where the target is 0 adds nothing (no 0 * -inf NaN)
    y = np.zeros((1, c), np.float32)
    y[0, :2] = 0.5
    zd = np.zeros((1, c), np.float32)
    zd[0, 10:] = -np.inf
    per, grad = _call(zd, None, y, None, None, True)
    assert per[0] == pytest.approx(np.log(10), rel=1e-6)
    np.testing.assert_allclose(grad[0, :10], np.full(10, 0.1) - y[0, :10], atol=1e-7)
    assert np.all(grad[0, 10:] == 0)
    # the reference twin gives the same for that row
    rper, _ = _reference(None, y, zd, None, None, True)
    assert rper[0] == pytest.approx(per[0], rel=1e-6)


def test_masked_rows_never_read_nan_padding(isa):
    rng = np.random.default_rng(2)
    z = rng.normal(size=(5, 20)).astype(np.float32)
    mask = np.array([True, False, True, False, False])
    z[~mask] = np.nan
    per, grad = _call(z, np.arange(5), None, mask, None, True)
    assert np.all(np.isfinite(per)) and np.all(np.isfinite(grad))
    assert np.all(per[~mask] == 0) and np.all(grad[~mask] == 0)
    all_masked = np.zeros(5, bool)
    per, grad = _call(z, np.arange(5), None, all_masked, None, True)
    assert np.all(per == 0) and np.all(grad == 0)


def test_one_class_rows():
    z = np.array([[3.0], [-1e30], [0.0]], np.float32)
    per, grad = _call(z, np.zeros(3, np.int64), None, None, None, True)
    assert np.all(per == 0) and np.all(grad == 0)
    per, grad = _call(z, None, np.ones((3, 1), np.float32), None, None, True)
    assert np.all(per == 0) and np.all(grad == 0)


def test_out_buffer_is_filled_and_returned():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(4, 50)).astype(np.float32)
    out = np.full_like(z, 7.0)
    per, grad = _core.xent(z, np.arange(4), None, None, None, True, out)
    assert grad is out or np.shares_memory(grad, out)
    rper, rgrad = _call(z, np.arange(4), None, None, None, True)
    np.testing.assert_array_equal(out, rgrad)
    with pytest.raises(ValueError, match="out"):
        _core.xent(z, np.arange(4), None, None, None, True, np.empty((4, 49), np.float32))
    for from_logits in (True, False):  # with class ids the gradient may overwrite z: the same bits
        zz = np.abs(z) if not from_logits else z
        rper, rgrad = _call(zz, np.arange(4), None, None, None, from_logits)
        inplace = zz.copy()
        per, grad = _core.xent(inplace, np.arange(4), None, None, None, from_logits, inplace)
        np.testing.assert_array_equal(per, rper)
        np.testing.assert_array_equal(inplace, rgrad)
    with pytest.raises(ValueError, match="out: must not be z itself with dense targets"):
        _core.xent(z, None, np.abs(z), None, None, True, z)
    big = np.zeros((5, 50), np.float32)
    with pytest.raises(ValueError, match="out: must be z itself or apart from it"):
        _core.xent(big[:4], np.arange(4), None, None, None, True, big[1:])


def test_bad_arguments_raise_value_errors_naming_them():
    z = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="ids: expected values in \\[0, 4\\), got 4"):
        _core.xent(z, np.array([0, 4, 1]), None, None, None, True)
    with pytest.raises(ValueError, match="ids: expected values in \\[0, 4\\), got -1"):
        _core.xent(z, np.array([0, -1, 1]), None, None, None, True)
    with pytest.raises(ValueError, match="ids"):
        _core.xent(z, np.array([0, 1]), None, None, None, True)
    with pytest.raises(ValueError, match="exactly one"):
        _core.xent(z, None, None, None, None, True)
    with pytest.raises(ValueError, match="y: expected"):
        _core.xent(z, None, np.zeros((3, 5), np.float32), None, None, True)
    with pytest.raises(ValueError, match="mask"):
        _core.xent(z, np.zeros(3, np.int64), None, np.ones(2, np.uint8), None, True)
    with pytest.raises(ValueError, match="weight"):
        _core.xent(z, np.zeros(3, np.int64), None, None, np.ones(4), True)
    with pytest.raises(ValueError, match="z: expected a 2-D"):
        _core.xent(np.zeros(3, np.float32), np.zeros(3, np.int64), None, None, None, True)
    with pytest.raises(TypeError):  # float64 is not converted silently
        _core.xent(z.astype(np.float64), np.zeros(3, np.int64), None, None, None, True)


# ---- the loss classes: float32 NumPy predictions take the kernel, the rest the NumPy form ----

@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("from_logits", [True, False])
def test_losses_use_the_kernel_for_float32_and_match_float64(monkeypatch, sparse, from_logits):
    rng = np.random.default_rng(4)
    B, T, C = 3, 5, 17
    z = rng.normal(size=(B, T, C)) * 3 if from_logits else rng.random((B, T, C)) + 0.01
    ids = rng.integers(0, C, (B, T))
    yt = ids
    if not sparse:
        yt = np.zeros((B, T, C))
        np.put_along_axis(yt, ids[..., None], 1.0, axis=-1)
    mask = rng.random((B, T)) < 0.8
    sw = rng.random(B)
    cls = losses.SparseCategoricalCrossentropy if sparse else losses.CategoricalCrossentropy
    loss = cls(from_logits=from_logits)
    calls = []
    real = _core.xent
    monkeypatch.setattr(_core, "xent", lambda *a: calls.append(1) or real(*a))
    z32 = z.astype(np.float32)
    s32, n32, g32 = loss.sum_and_grad(yt, z32, mask, sample_weight=sw)
    assert calls, "float32 predictions must take the fused kernel"
    calls.clear()
    s64, n64, g64 = loss.sum_and_grad(yt, z32.astype(np.float64), mask, sample_weight=sw)
    assert not calls, "float64 predictions keep the NumPy form"
    assert n32 == n64 == int(mask.sum())
    assert g32.dtype == np.float32 and g64.dtype == np.float64
    assert s32 == pytest.approx(s64, rel=2e-6)
    np.testing.assert_allclose(g32, g64, rtol=2e-5, atol=1e-7)
    value, grad = loss(yt, z32, mask)
    rvalue, rgrad = loss(yt, z32.astype(np.float64), mask)
    assert value == pytest.approx(rvalue, rel=2e-6)
    np.testing.assert_allclose(grad, rgrad, rtol=2e-5, atol=1e-8)


def test_loss_class_errors_unchanged_on_the_kernel_path():
    loss = losses.SparseCategoricalCrossentropy(from_logits=True)
    z = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="y_true: class ids must be in \\[0, 4\\)"):
        loss(np.full((2, 3), 4), z)
    with pytest.raises(ValueError, match="mask"):
        loss(np.zeros((2, 3), int), z, np.ones((3, 2), bool))
    with pytest.raises(ValueError, match="sample_weight"):
        loss.sum_and_grad(np.zeros((2, 3), int), z, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="y_true"):
        losses.CategoricalCrossentropy(from_logits=True)(np.zeros((2, 3, 5)), z)


def test_non_contiguous_float32_predictions():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(6, 40)).astype(np.float32)[:, ::2]  # a strided view
    ids = rng.integers(0, 20, 6)
    loss = losses.SparseCategoricalCrossentropy(from_logits=True)
    v, g = loss(ids, z)
    rv, rg = loss(ids, z.astype(np.float64))
    assert v == pytest.approx(rv, rel=2e-6)
    np.testing.assert_allclose(g, rg, rtol=2e-5, atol=1e-8)


def test_training_step_recycles_the_pooled_gradient(monkeypatch):
    """A training step on the fused loss divides its pooled gradient in place and gives it back to
    the buffer pool: the next step reuses it; the results match the NumPy form of the loss."""
    from fastrnn import _crossentropy, layers, models, optim, training
    from fastrnn._kernel_cache import POOL

    rng = np.random.default_rng(6)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = rng.integers(0, 5000, 64)

    def model():
        m = models.Sequential([layers.Input((8,)), layers.Dense(5000, seed=1)])
        m.compile(optimizer=optim.SGD(learning_rate=0.1), loss=losses.SparseCategoricalCrossentropy(from_logits=True))
        return m

    fused, plain = model(), model()
    # (with no metric the step writes the gradient over the logits instead: tests/test_decoder_path.py)
    monkeypatch.setattr(training.TrainingLoops, "_output_is_scratch", lambda self, y_pred: False)
    POOL.clear()
    v1 = fused.train_on_batch(x, y)
    assert (64, 5000) in POOL._free  # 1.3 MB: pooled
    hits = POOL.hits
    v2 = fused.train_on_batch(x, y)
    assert POOL.hits > hits
    grads = [p.grad.copy() for p in fused.parameters()]
    monkeypatch.setattr(_crossentropy, "_fused_core", lambda y_pred: None)
    w1 = plain.train_on_batch(x, y)
    w2 = plain.train_on_batch(x, y)
    assert (v1, v2) == pytest.approx((w1, w2), rel=2e-6)
    for g, p in zip(grads, plain.parameters()):
        np.testing.assert_allclose(g, p.grad, rtol=2e-4, atol=1e-7)
    small = losses.SparseCategoricalCrossentropy(from_logits=True).sum_and_grad(y[:4] % 8, x[:4])[2]
    assert not _crossentropy.grad_from_pool(small)  # under the pool's minimum size: not pooled
