"""The training path of a Dense decoder and its crossentropy (issue 12): the loss kernel's gradient
of the mean (fastrnn._core.xent's grad_scale) against the NumPy reference divided by the count,
the bias gradient summed from the weight-gradient GEMM's packed blocks (dense_gemm's colsum_b)
against the sequential column sum, on awkward and round sizes, every ISA path, 1 and 2 threads;
the Dense layer's training outputs from the buffer pool; a training step on the word-level LM's
layers equal to the path before; bad input."""
from __future__ import annotations

import numpy as np
import pytest

from fastrnn import _core, _crossentropy, layers, losses, models, ops, optim
from fastrnn._kernel_cache import POOL
from fastrnn._loss_base import Loss

# M x K x N of dW = X^T dZ (K = rows of dZ, N = its columns): the small-N path (N <= 4), partial
# tiles, K over the 512-deep blocks, N split over threads or M split (M > N), a vocabulary-like N,
# up to 4 rows (read in place without colsum_b, packed with it)
GEMM_SHAPES = [(1, 1, 1), (3, 17, 1), (17, 3, 4), (5, 600, 33), (7, 9, 2100), (200, 700, 1037), (130, 64, 5),
               (3, 0, 6), (33, 1, 17), (3, 17, 40), (4, 700, 2049)]  # the last two: rows the few-rows path takes


def _seq_colsum(b):
    s = np.zeros(b.shape[1], np.float32)
    for r in b:
        s = s + r
    return s


@pytest.mark.parametrize("shape", GEMM_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_sums_the_columns_of_b_from_its_packed_blocks(isa, threads, shape, trans_b):
    M, K, N = shape
    rng = np.random.default_rng(M + K + N)
    xt = rng.standard_normal((K, M)).astype(np.float32)  # X, read transposed as A = X^T
    b = rng.standard_normal((K, N)).astype(np.float32)
    out0 = rng.standard_normal((M, N)).astype(np.float32)
    cs0 = rng.standard_normal(N).astype(np.float32)
    bop = np.ascontiguousarray(b.T) if trans_b else b
    results = []
    for nt in (1, 2):
        threads(nt)
        out, cs = out0.copy(), cs0.copy()
        _core.dense_gemm(xt, bop, True, trans_b, None, 0, out, True, cs)
        results.append((out, cs))
        # the rows added in order, then added to colsum_b: the bits of colsum (or NumPy's loop)
        np.testing.assert_array_equal(cs, cs0 + _seq_colsum(b))
        np.testing.assert_allclose(out, out0 + xt.T.astype(np.float64) @ b, rtol=2e-5,
                                   atol=2e-5 * max(1, np.sqrt(K)))
        plain = out0.copy()
        _core.dense_gemm(xt, bop, True, trans_b, None, 0, plain, True)
        np.testing.assert_array_equal(out, plain)  # the product is untouched by the sums
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[0][0], results[1][0])


def test_colsum_b_is_checked():
    a = np.ones((4, 3), np.float32)
    b = np.ones((3, 5), np.float32)
    with pytest.raises(ValueError, match=r"colsum_b: expected shape \(5,\)"):
        _core.dense_gemm(a, b, False, False, None, 0, None, False, np.zeros(4, np.float32))
    ro = np.zeros(5, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="colsum_b: the array must be writeable"):
        _core.dense_gemm(a, b, False, False, None, 0, None, False, ro)
    with pytest.raises(ValueError, match="colsum_b: must not overlap"):
        _core.dense_gemm(a, b, False, False, None, 0, None, False, b[0])
    out = np.zeros((4, 5), np.float32)
    with pytest.raises(ValueError, match="colsum_b: must not overlap"):
        _core.dense_gemm(a, b, False, False, None, 0, out, False, out[1])
    with pytest.raises(TypeError):
        _core.dense_gemm(a, b, False, False, None, 0, None, False, np.zeros(5))


def test_matmul_acc_sums_columns_on_both_paths():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((6, 9)).astype(np.float32), rng.standard_normal((9, 11)).astype(np.float32)
    for dtype in (np.float32, np.float64):  # the GEMM, then NumPy's form
        out, cs = np.zeros((6, 11), dtype), np.ones(11, dtype)
        ops._matmul_acc(a.astype(dtype), b.astype(dtype), out, cs)
        np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(cs, 1 + b.astype(np.float64).sum(axis=0), rtol=1e-5, atol=1e-5)


# ---- the loss kernel's gradient of the mean -------------------------------------------------------
@pytest.mark.parametrize("n,c", [(1, 1), (7, 3), (7, 17), (700, 17), (33, 1001), (5, 18328)])
@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("from_logits", [True, False])
def test_the_mean_gradient_is_the_sum_gradient_over_the_count(isa, threads, n, c, sparse, from_logits):
    rng = np.random.default_rng(n * c)
    z = ((rng.normal(size=(n, c)) * 3) if from_logits else (rng.random((n, c)) + 1e-3)).astype(np.float32)
    ids = rng.integers(0, c, n)
    y = ids if sparse else np.eye(c, dtype=np.float32)[ids]
    mask = rng.random(n) < 0.7 if n > 1 else None
    sw = rng.random(n) * 2
    loss = (losses.SparseCategoricalCrossentropy if sparse else losses.CategoricalCrossentropy)(from_logits)
    for nt in (1, 2):
        threads(nt)
        total, count, grad = loss.sum_and_grad(y, z, mask, sw)
        mtotal, mcount, mgrad = loss._sum_and_mean_grad(y, z, mask, sw)
        assert (mtotal, mcount) == (total, count)  # the loss is not scaled
        want = grad / count if count else np.zeros_like(grad)
        # dense targets from logits: softmax - y cancels in float at the target, to ~1e-7 of the row's scale
        np.testing.assert_allclose(mgrad, want, rtol=2e-6, atol=3e-7 * float(np.abs(want).max()) + 1e-30)
        # the NumPy form (float64 predictions) through the base class's division
        rtotal, rcount, rgrad = loss._sum_and_mean_grad(y, z.astype(np.float64), mask, sw)
        assert rcount == count and rtotal == pytest.approx(total, rel=1e-5)
        np.testing.assert_allclose(mgrad, rgrad, rtol=2e-4, atol=1e-7)
        del grad, mgrad


def test_all_masked_rows_give_a_zero_mean_gradient(isa):
    z = np.random.default_rng(2).normal(size=(4, 9)).astype(np.float32)
    loss = losses.SparseCategoricalCrossentropy(from_logits=True)
    total, count, grad = loss._sum_and_mean_grad(np.zeros(4), z, np.zeros(4, bool))
    assert (total, count) == (0.0, 0) and not grad.any()


def test_grad_scale_is_checked():
    z = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="grad_scale: expected a finite number"):
        _core.xent(z, np.zeros(2, np.int64), None, None, None, True, None, float("inf"))
    loss, g = _core.xent(z, np.zeros(2, np.int64), None, None, None, True, None, 0.5)
    np.testing.assert_allclose(loss, np.log(3))
    np.testing.assert_allclose(g[:, 1], 0.5 / 3, rtol=1e-6)


def test_a_loss_subclass_keeps_its_own_sum_and_grad():
    """A user's loss that overrides sum_and_grad gets its gradient divided by the count, as before."""
    class Halved(Loss):
        def sum_and_grad(self, y_true, y_pred, mask=None, sample_weight=None):
            return 3.0, 2, np.full(np.shape(y_pred), 4.0, np.float32)

    total, count, grad = Halved()._sum_and_mean_grad(None, np.zeros((2, 2), np.float32))
    assert (total, count) == (3.0, 2) and (grad == 2.0).all()


# ---- the Dense layer and the training step --------------------------------------------------------
def test_dense_training_outputs_come_from_the_pool_and_stay_the_callers():
    """A Dense layer's training output of 1 MiB or more goes back to the buffer pool at the next
    training call (no fresh pages at every step), unless the caller still holds it."""
    dense = layers.Dense(4000, seed=0)
    x = np.random.default_rng(9).standard_normal((80, 8)).astype(np.float32)
    POOL.clear()
    dense(x, training=True)
    dense(x, training=True)  # the first output goes to the pool
    hits = POOL.hits
    y = dense(x, training=True)
    assert POOL.hits > hits
    np.testing.assert_allclose(y, x.astype(np.float64) @ dense.kernel.value, rtol=1e-5, atol=1e-5)
    held = dense(x, training=True)
    copy = held.copy()
    for _ in range(3):
        dense(x * 2, training=True)
    np.testing.assert_array_equal(held, copy)  # a held output is never reused


def test_dense_backward_bias_gradient_is_the_column_sum(isa, threads):
    threads(2)
    rng = np.random.default_rng(3)
    dense = layers.Dense(1037, seed=0)
    x = rng.standard_normal((5, 7, 33)).astype(np.float32)
    dense(x, training=True)
    dy = rng.standard_normal((5, 7, 1037)).astype(np.float32)
    dense.zero_grad() if hasattr(dense, "zero_grad") else None
    for p in dense.parameters():
        p.grad[...] = 0
    dx = dense.backward(dy)
    np.testing.assert_array_equal(dense.bias.grad, _seq_colsum(dy.reshape(-1, 1037)))
    np.testing.assert_allclose(dense.kernel.grad, x.reshape(-1, 33).T.astype(np.float64) @ dy.reshape(-1, 1037),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, dy.astype(np.float64) @ dense.kernel.value.T, rtol=1e-4, atol=1e-4)


def _lm(vocab, mask_zero=False, metrics=None):
    m = models.Sequential([
        layers.Embedding(20, 16, mask_zero=mask_zero, seed=0),
        layers.LSTM(12, return_sequences=True, seed=1),
        layers.Dropout(0.2, seed=3),
        layers.Dense(vocab, seed=2),
    ])
    m.compile(optimizer=optim.SGD(learning_rate=0.5, global_clipnorm=0.25),
              loss=losses.SparseCategoricalCrossentropy(from_logits=True), metrics=metrics)
    return m


def _path_before(monkeypatch):
    """The step as it was: the loss's gradient of the sum divided by the count afterwards, the
    bias gradient in a column-sum pass of its own, fresh Dense outputs."""
    def mean(self, y_true, y_pred, mask=None, sample_weight=None, into=None):  # never in place
        total, count, grad = self.sum_and_grad(y_true, y_pred, mask, sample_weight)
        return total, count, (grad / count if count else np.zeros_like(grad))
    acc = ops._matmul_acc

    def acc_then_colsum(a, b, out, colsum=None):
        acc(a, b, out)
        if colsum is not None:
            ops._colsum_acc(b, colsum)
    monkeypatch.setattr(_crossentropy._MeanInKernel, "_sum_and_mean_grad", mean)
    monkeypatch.setattr(ops, "_matmul_acc", acc_then_colsum)


@pytest.mark.parametrize("vocab", [1, 3, 17, 1001, 5000])
@pytest.mark.parametrize("case", ["plain", "mask", "weights"])
def test_training_step_equals_the_path_before(monkeypatch, isa, threads, vocab, case):
    threads(2)
    rng = np.random.default_rng(vocab)
    x = rng.integers(1 if case == "mask" else 0, 20, (5, 70))
    if case == "mask":
        x[1, 40:] = 0  # padding: masked steps
    y = rng.integers(0, vocab, (5, 70))
    sw = rng.random((5, 70)) if case == "weights" else None
    # with a metric the gradient gets a buffer of its own, without one it overwrites the logits
    metrics = ["accuracy"] if case == "weights" else None
    now, before = (_lm(vocab, mask_zero=case == "mask", metrics=metrics) for _ in range(2))
    now.build((70,))
    start = [w.copy() for w in now.get_weights()]
    got = [now.train_on_batch(x, y, sample_weight=sw) for _ in range(3)]
    grads = [p.grad.copy() for p in now.parameters()]
    _path_before(monkeypatch)
    want = [before.train_on_batch(x, y, sample_weight=sw) for _ in range(3)]
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-7)  # loss and accuracy
    for g, p in zip(grads, before.parameters()):
        np.testing.assert_allclose(g, p.grad, rtol=1e-4, atol=1e-5 * max(1e-3, float(np.abs(p.grad).max())))
    for a, b in zip(now.get_weights(), before.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    if vocab > 1:
        assert not np.allclose(now.get_weights()[-2], start[-2])  # it trained


def test_training_step_gives_the_pooled_gradient_back():
    """With a metric reading the logits, the loss gradient goes to a pooled buffer of its own,
    given back after the step."""
    m = _lm(5000, metrics=["accuracy"])
    x = np.random.default_rng(4).integers(0, 20, (4, 70))
    m.train_on_batch(x, x)
    m.train_on_batch(x, x)
    assert (4, 70, 5000) in POOL._free
    hits = POOL.hits
    m.train_on_batch(x, x)
    assert POOL.hits >= hits + 2  # the logits and the gradient both reused


def test_training_step_writes_the_gradient_over_the_logits():
    """Without metrics nothing reads the logits after the loss: the sparse crossentropy's gradient
    of the mean overwrites them (rows of softmax - onehot, over the count: they sum to 0)."""
    m = _lm(5000)
    rng = np.random.default_rng(5)
    x, y = rng.integers(0, 20, (4, 70)), rng.integers(0, 5000, (4, 70))
    logits = m(x, training=True)
    assert m._output_is_scratch(logits)
    total, count, g = m.loss._sum_and_mean_grad(y, logits, None, None, into=logits)
    assert g is logits and count == 280
    np.testing.assert_allclose(g.sum(axis=-1), 0.0, atol=1e-8)
    assert (np.take_along_axis(g, y[..., None], -1) < 0).all()
    m.train_on_batch(x, y)
    m.compile(optimizer="sgd", loss=losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    assert not m._output_is_scratch(m(x, training=True))  # a metric reads them


def test_a_subclass_overriding_sum_and_grad_is_used_by_training():
    calls = []

    class Logged(losses.SparseCategoricalCrossentropy):
        def sum_and_grad(self, y_true, y_pred, mask=None, sample_weight=None):
            calls.append(1)
            return super().sum_and_grad(y_true, y_pred, mask, sample_weight)

    m = _lm(50)
    m.compile(optimizer="sgd", loss=Logged(from_logits=True))
    x = np.random.default_rng(6).integers(0, 20, (3, 5))
    value = m.train_on_batch(x, x)
    assert calls == [1] and np.isfinite(value)


def test_bad_labels_still_raise():
    m = _lm(20)
    with pytest.raises(ValueError, match="y_true"):
        m.train_on_batch(np.zeros((2, 3), np.int64), np.full((2, 3), 20))
    with pytest.raises(ValueError, match="y_true"):
        m.train_on_batch(np.zeros((2, 3), np.int64), np.full((2, 3), 1.5))
