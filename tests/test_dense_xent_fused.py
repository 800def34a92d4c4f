"""The fused Dense decoder + sparse softmax cross-entropy training path: the row statistics
(fastrnn._core.xent_stats) and the fused backward (fastrnn._core.dense_xent_backward,
csrc/cpu/dense_xent.h) against their NumPy reference in float64, on awkward and round sizes,
every ISA path, 1 and 2 threads (the same bits for both); a training step through the fused path
against the unfused one (weights, loss, gradients, metrics, masks, sample weights); the cases
that keep the unfused path; bad input."""
from __future__ import annotations

import numpy as np
import pytest

from fastrnn import _core, _crossentropy, backend, layers, losses, models, optim, training
from fastrnn._kernel_cache import POOL

# (rows N, input features H, classes C): one of each, vector-width edges, classes over a GEMM
# depth block (512) and odd, the word-level LM's 700 rows
SIZES = [(1, 1, 1), (1, 3, 3), (7, 5, 17), (7, 17, 1001), (33, 20, 1037), (700, 9, 3), (700, 40, 1001),
         (3, 200, 2049)]


def _reference(x, w, z, ids, mask, weight, scale):
    """dW, db, dx of scale * sum_rows weight * -log softmax(z)_target, in float64 (NumPy)."""
    z64 = z.astype(np.float64)
    p = np.exp(z64 - z64.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    g = p
    g[np.arange(len(ids)), ids] -= 1.0
    rw = np.ones(len(ids)) if weight is None else weight.copy()
    if mask is not None:
        rw = np.where(mask, rw, 0.0)
    g *= (rw * scale)[:, None]
    return x.T.astype(np.float64) @ g, g.sum(axis=0), g @ w.T.astype(np.float64), g


def _problem(n, h, c, seed=0, masked=False, weighted=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h)).astype(np.float32)
    w = (rng.standard_normal((h, c)) * 0.5).astype(np.float32)
    z = (x @ w + rng.standard_normal(c).astype(np.float32)).astype(np.float32)
    ids = rng.integers(0, c, n)
    mask = None
    if masked:
        mask = rng.random(n) < 0.7
        mask[0] = n == 1
    weight = None
    if weighted:
        weight = rng.random(n) * 2
        weight[n // 2] = 0.0
    return x, w, z, ids, mask, weight


def _fused(x, w, z, ids, mask, weight, scale, dw, db, need_dx=True):
    _, *stats = _core.xent_stats(z, ids, None if mask is None else mask.view(np.uint8), weight)
    return _core.dense_xent_backward(x, w, z, ids, *stats, scale, dw, db, need_dx)


@pytest.mark.parametrize("nhc", SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("masked,weighted", [(False, False), (True, True)])
def test_fused_backward_matches_the_reference_on_every_isa(isa, threads, nhc, masked, weighted):
    n, h, c = nhc
    x, w, z, ids, mask, weight = _problem(n, h, c, masked=masked, weighted=weighted)
    count = n if mask is None else max(1, int(mask.sum()))
    rng = np.random.default_rng(1)
    dw0 = rng.standard_normal((h, c)).astype(np.float32)
    db0 = rng.standard_normal(c).astype(np.float32)
    rdw, rdb, rdx, _ = _reference(x, w, z, ids, mask, weight, 1.0 / count)
    results = []
    for nt in (1, 2):
        threads(nt)
        dw, db = dw0.copy(), db0.copy()
        dx = _fused(x, w, z, ids, mask, weight, 1.0 / count, dw, db)
        results.append((dw, db, dx))
        # accumulated into dW and db; relative to the size of the gradient (its sums have N or C terms)
        for got, base, ref in ((dw, dw0, rdw), (db, db0, rdb), (dx, 0.0, rdx)):
            tol = 2e-5 * max(1.0, float(np.abs(ref).max()))
            np.testing.assert_allclose(got - base, ref, rtol=1e-4, atol=tol)
    for a, b in zip(*results):  # the same bits for 1 and 2 threads
        np.testing.assert_array_equal(a, b)


def test_fused_backward_without_dx_and_bias(isa):
    x, w, z, ids, _, _ = _problem(33, 20, 1037, seed=3)
    dw = np.zeros_like(w)
    assert _fused(x, w, z, ids, None, None, 0.5, dw, None, need_dx=False) is None
    rdw, _, _, _ = _reference(x, w, z, ids, None, None, 0.5)
    np.testing.assert_allclose(dw, rdw, rtol=1e-4, atol=2e-6)


def test_stats_give_the_fused_kernels_loss_and_gradient(isa, threads):
    """xent_stats' loss is xent's to the bit; exp(z - max) r and the target entry rebuild xent's
    gradient; masked rows are all zeros; a NaN logit gives NaN statistics."""
    threads(2)
    x, w, z, ids, mask, weight = _problem(700, 4, 1001, seed=4, masked=True, weighted=True)
    m8 = mask.view(np.uint8)
    loss, rmax, rscale, rtarget = _core.xent_stats(z, ids, m8, weight)
    ref_loss, ref_grad = _core.xent(z, ids, None, m8, weight, True)
    np.testing.assert_array_equal(loss, ref_loss)
    g = np.exp(z.astype(np.float64) - rmax[:, None]) * rscale[:, None]
    g[np.arange(700), ids] = rtarget
    g[~mask] = 0.0
    np.testing.assert_allclose(g, ref_grad, rtol=2e-5, atol=1e-9)
    assert not rmax[~mask].any() and not rscale[~mask].any() and not rtarget[~mask].any()
    z2 = z.copy()
    z2[5, 7] = np.nan
    loss2, _, rscale2, _ = _core.xent_stats(z2, ids)
    assert np.isnan(loss2[5]) and np.isnan(rscale2[5]) and np.isfinite(loss2[6])


def test_logits_grad_materializes_the_unfused_gradient():
    x, w, z, ids, mask, weight = _problem(7, 3, 17, seed=5, masked=True, weighted=True)
    loss = losses.SparseCategoricalCrossentropy(from_logits=True)
    total, count, g = loss._sum_and_logits_grad(ids, z, mask, weight)
    rtotal, rcount, rgrad = loss.sum_and_grad(ids, z, mask, weight)
    assert (total, count) == (rtotal, rcount)
    g.scale = 1.0 / count
    np.testing.assert_allclose(g.materialize(), rgrad / count, rtol=1e-6, atol=1e-9)
    assert losses.SparseCategoricalCrossentropy()._sum_and_logits_grad(ids, z) is None  # probabilities
    assert loss._sum_and_logits_grad(ids, z.astype(np.float64)) is None


# ---- the training step --------------------------------------------------------------------------
def _lm(vocab, mask_zero=False, metrics=None, seed=0, words=None):
    m = models.Sequential([
        layers.Embedding(words or vocab, 16, mask_zero=mask_zero, seed=seed),
        layers.LSTM(12, return_sequences=True, seed=seed + 1),
        layers.Dense(vocab, seed=seed + 2),
    ])
    m.compile(optimizer=optim.SGD(learning_rate=0.5, global_clipnorm=0.25),
              loss=losses.SparseCategoricalCrossentropy(from_logits=True), metrics=metrics)
    return m


def _spy(monkeypatch):
    """Counts the fused backward calls of Dense layers."""
    calls = []
    orig = layers.Dense._backward_logits

    def spy(self, g, x, y):
        calls.append(self.name)
        return orig(self, g, x, y)
    monkeypatch.setattr(layers.Dense, "_backward_logits", spy)
    return calls


def _unfused(monkeypatch):
    monkeypatch.setattr(training.TrainingLoops, "_fused_loss", lambda self, *a: None)


@pytest.mark.parametrize("vocab", [1, 3, 17, 1001])
@pytest.mark.parametrize("case", ["plain", "mask", "weights"])
def test_training_step_fused_equals_unfused(monkeypatch, isa, threads, vocab, case):
    threads(2)
    rng = np.random.default_rng(vocab)
    x = rng.integers(1 if case == "mask" else 0, 20, (5, 7))  # 20 input words
    if case == "mask":
        x[1, 4:] = 0  # padding: masked steps
    y = rng.integers(0, vocab, (5, 7))
    sw = rng.random((5, 7)) if case == "weights" else None
    fused, plain = (_lm(vocab, mask_zero=case == "mask", metrics=["accuracy"], words=20) for _ in range(2))
    fused.build((7,))
    start = [w.copy() for w in fused.get_weights()]
    calls = _spy(monkeypatch)
    got = [fused.train_on_batch(x, y, sample_weight=sw) for _ in range(3)]
    assert len(calls) == 3
    fgrads = [p.grad.copy() for p in fused.parameters()]
    _unfused(monkeypatch)
    want = [plain.train_on_batch(x, y, sample_weight=sw) for _ in range(3)]
    assert len(calls) == 3  # the unfused model did not take the fused path
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-7)  # loss and accuracy
    for g, p in zip(fgrads, plain.parameters()):
        np.testing.assert_allclose(g, p.grad, rtol=1e-5, atol=1e-5 * max(1e-3, float(np.abs(p.grad).max())))
    for a, b in zip(fused.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    if vocab > 1:
        assert not np.allclose(fused.get_weights()[-2], start[-2])  # it trained


def test_fit_takes_the_fused_path_and_matches(monkeypatch):
    rng = np.random.default_rng(7)
    x = rng.integers(0, 300, (16, 9))
    y = rng.integers(0, 300, (16, 9))
    fused, plain = _lm(300, seed=3), _lm(300, seed=3)
    calls = _spy(monkeypatch)
    h1 = fused.fit(x, y, epochs=2, batch_size=8, verbose=0, shuffle=False)
    assert len(calls) == 4
    _unfused(monkeypatch)
    h2 = plain.fit(x, y, epochs=2, batch_size=8, verbose=0, shuffle=False)
    np.testing.assert_allclose(h1.history["loss"], h2.history["loss"], rtol=1e-5)
    for a, b in zip(fused.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["softmax", "probabilities", "float64", "time_distributed", "subclass", "frozen"])
def test_other_models_keep_the_unfused_path(monkeypatch, kind):
    V = 11
    dense = layers.Dense(V, activation="softmax" if kind == "softmax" else None, seed=2,
                         dtype="float64" if kind == "float64" else None)
    if kind == "frozen":
        dense.trainable = False
    last = layers.TimeDistributed(dense) if kind == "time_distributed" else dense
    cls = models.Sequential
    if kind == "subclass":
        class Chain(models.Sequential):
            def backward(self, dy):
                return super().backward(dy)
        cls = Chain
    m = cls([layers.Embedding(V, 8, seed=0), layers.LSTM(6, return_sequences=True, seed=1), last])
    m.compile(optimizer="sgd", loss=losses.SparseCategoricalCrossentropy(
        from_logits=kind not in ("softmax", "probabilities")))
    calls = _spy(monkeypatch)
    rng = np.random.default_rng(8)
    x, y = rng.integers(0, V, (4, 5)), rng.integers(0, V, (4, 5))
    value = m.train_on_batch(x, y)
    assert np.isfinite(value) and calls == []


def test_a_nan_loss_stops_before_the_update():
    m = _lm(50)
    m.build((6,))
    kernel = m.layers[-1].kernel
    kernel.value[0, 0] = np.nan
    before = [w.copy() for w in m.get_weights()]
    with pytest.raises(FloatingPointError, match="loss"):
        m.train_on_batch(np.zeros((2, 6), np.int64), np.zeros((2, 6), np.int64))
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_bad_labels_are_refused_on_the_fused_path():
    m = _lm(20)
    with pytest.raises(ValueError, match="y_true"):
        m.train_on_batch(np.zeros((2, 3), np.int64), np.full((2, 3), 20))
    with pytest.raises(ValueError, match="y_true"):
        m.train_on_batch(np.zeros((2, 3), np.int64), np.full((2, 3), 1.5))


def test_dense_training_outputs_come_from_the_pool_and_stay_the_callers():
    """A Dense layer's training output of 1 MiB or more goes back to the buffer pool at the next
    training call (no fresh pages at every step), unless the caller still holds it."""
    dense = layers.Dense(4000, seed=0)
    x = np.random.default_rng(9).standard_normal((80, 8)).astype(np.float32)
    POOL.clear()
    dense(x, training=True)
    dense(x, training=True)  # the first output goes to the pool
    hits = POOL.hits
    dense(x, training=True)
    assert POOL.hits > hits
    held = dense(x, training=True)
    copy = held.copy()
    for _ in range(3):
        dense(x * 2, training=True)
    np.testing.assert_array_equal(held, copy)  # a held output is never reused


# ---- bad input ----------------------------------------------------------------------------------
def test_kernel_arguments_are_checked():
    x, w, z, ids, _, _ = _problem(7, 5, 17)
    _, *stats = _core.xent_stats(z, ids)
    dw, db = np.zeros_like(w), np.zeros(17, np.float32)
    call = _core.dense_xent_backward
    with pytest.raises(ValueError, match="w: expected 5 rows"):
        call(x, w[:4], z, ids, *stats, 1.0, dw, db)
    with pytest.raises(ValueError, match="z: expected shape"):
        call(x, w, np.ascontiguousarray(z[:, :16]), ids, *stats, 1.0, dw, db)
    with pytest.raises(ValueError, match="ids: expected values in"):
        call(x, w, z, np.full(7, 17), *stats, 1.0, dw, db)
    with pytest.raises(ValueError, match="row_max"):
        call(x, w, z, ids, stats[0][:6], *stats[1:], 1.0, dw, db)
    with pytest.raises(ValueError, match="dw: expected"):
        call(x, w, z, ids, *stats, 1.0, np.zeros((5, 3), np.float32), db)
    with pytest.raises(ValueError, match="db: expected"):
        call(x, w, z, ids, *stats, 1.0, dw, db[:3])
    with pytest.raises(ValueError, match="dw: must not overlap"):
        call(x, w, z, ids, *stats, 1.0, w, db)
    with pytest.raises(ValueError, match="scale"):
        call(x, w, z, ids, *stats, float("nan"), dw, db)
    ro = np.zeros_like(w)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="dw: the array must be writeable"):
        call(x, w, z, ids, *stats, 1.0, ro, db)
    with pytest.raises(TypeError):
        call(x.astype(np.float64), w, z, ids, *stats, 1.0, dw, db)
    with pytest.raises(ValueError, match="ids: expected values in"):
        _core.xent_stats(z, np.full(7, -1))
    with pytest.raises(ValueError, match="z: expected at least one class"):
        _core.xent_stats(np.zeros((3, 0), np.float32), np.zeros(3, np.int64))
    assert backend.core() is _core
    assert not _crossentropy.grad_from_pool(np.zeros(3))
