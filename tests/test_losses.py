"""Losses (values against torch, gradients against finite differences and autograd, masks) and metrics."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastrnn import losses, metrics


def _fd_grad(loss, y_true, y_pred, mask=None, eps=1e-6):
    g = np.zeros_like(y_pred)
    it = np.nditer(y_pred, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        yp = y_pred.copy()
        yp[i] += eps
        fp = loss(y_true, yp, mask)[0]
        yp[i] -= 2 * eps
        fm = loss(y_true, yp, mask)[0]
        g[i] = (fp - fm) / (2 * eps)
    return g


def _problem(name, shape, rng, from_logits=False):
    """(y_true, y_pred) valid for the loss, float64."""
    if name in ("mse", "mae"):
        return rng.normal(size=shape), rng.normal(size=shape)
    if name == "binary_crossentropy":
        yt = (rng.random(shape) > 0.5).astype(np.float64)
        yp = rng.normal(size=shape) if from_logits else rng.uniform(0.05, 0.95, size=shape)
        return yt, yp
    C = shape[-1]
    ids = rng.integers(0, C, size=shape[:-1])
    if from_logits:
        yp = rng.normal(size=shape) * 2
    else:
        e = np.exp(rng.normal(size=shape))
        yp = e / e.sum(-1, keepdims=True)
    if name == "sparse_categorical_crossentropy":
        return ids, yp
    return np.eye(C)[ids], yp


CASES = [("mse", False), ("mae", False), ("binary_crossentropy", False), ("binary_crossentropy", True),
         ("categorical_crossentropy", False), ("categorical_crossentropy", True),
         ("sparse_categorical_crossentropy", False), ("sparse_categorical_crossentropy", True)]


def _make(name, from_logits):
    loss = losses.get(name)
    if from_logits:
        loss = type(loss)(from_logits=True)
    return loss


@pytest.mark.parametrize("name,from_logits", CASES)
@pytest.mark.parametrize("shape", [(5, 4), (3, 6, 4)])
def test_gradient_matches_finite_differences(name, from_logits, shape):
    rng = np.random.default_rng(1)
    yt, yp = _problem(name, shape, rng, from_logits)
    loss = _make(name, from_logits)
    value, grad = loss(yt, yp)
    assert grad.shape == yp.shape and grad.dtype == np.float64
    np.testing.assert_allclose(grad, _fd_grad(loss, yt, yp), rtol=1e-5, atol=1e-8)
    assert np.isfinite(value)


def _torch_value(name, from_logits, yt, yp):
    p = torch.tensor(yp, requires_grad=True)
    t = torch.tensor(yt)
    if name == "mse":
        v = F.mse_loss(p, t)
    elif name == "mae":
        v = F.l1_loss(p, t)
    elif name == "binary_crossentropy":
        v = F.binary_cross_entropy_with_logits(p, t) if from_logits else F.binary_cross_entropy(p, t)
    else:
        C = yp.shape[-1]
        # Keras normalises probabilities over the last axis before the log
        logp = torch.log_softmax(p, -1) if from_logits else torch.log(p / p.sum(-1, keepdim=True))
        ids = t.long() if name.startswith("sparse") else t.argmax(-1)
        v = F.nll_loss(logp.reshape(-1, C), ids.reshape(-1))
    v.backward()
    return v.item(), p.grad.numpy()


@pytest.mark.parametrize("name,from_logits", CASES)
def test_value_and_gradient_match_torch(name, from_logits):
    rng = np.random.default_rng(2)
    yt, yp = _problem(name, (4, 5, 3), rng, from_logits)
    value, grad = _make(name, from_logits)(yt, yp)
    tv, tg = _torch_value(name, from_logits, yt, yp)
    assert value == pytest.approx(tv, rel=1e-10)
    np.testing.assert_allclose(grad, tg, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name,from_logits", CASES)
def test_masked_sequence_loss_is_mean_over_valid_steps(name, from_logits):
    rng = np.random.default_rng(3)
    B, T, C = 4, 6, 3
    yt, yp = _problem(name, (B, T, C), rng, from_logits)
    mask = rng.random((B, T)) > 0.4
    mask[0, 0] = True
    loss = _make(name, from_logits)
    value, grad = loss(yt, yp, mask)
    # the valid steps alone, as a flat batch of samples
    ref_value, ref_grad = loss(yt[mask], yp[mask])
    assert value == pytest.approx(ref_value, rel=1e-12)
    np.testing.assert_allclose(grad[mask], ref_grad, rtol=1e-12)
    assert np.all(grad[~mask] == 0)
    # changing predictions at masked steps changes nothing
    yp2 = yp.copy()
    yp2[~mask] = yp[~mask][::-1] if name not in ("mse", "mae") else 123.0
    assert loss(yt, yp2, mask)[0] == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(grad, _fd_grad(loss, yt, yp, mask), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name,from_logits", CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nan_at_masked_steps_stays_out_of_value_and_gradient(name, from_logits, dtype):
    """Padding often holds NaN (or garbage) in the targets or the predictions: a masked entry must
    add nothing, NaN included, to the value or the gradient."""
    rng = np.random.default_rng(4)
    B, T, C = 3, 5, 4
    yt, yp = _problem(name, (B, T, C), rng, from_logits)
    mask = np.ones((B, T), bool)
    mask[0, 3:] = mask[2, 1] = False
    loss = _make(name, from_logits)
    want_value, want_grad = loss(yt, yp.astype(dtype), mask)
    yt_nan, yp_nan = yt.astype(np.float64), yp.astype(dtype)
    if name != "sparse_categorical_crossentropy":  # integer ids cannot hold NaN
        yt_nan[~mask] = np.nan
    yp_nan[~mask] = np.nan
    value, grad = loss(yt_nan, yp_nan, mask)
    assert np.isfinite(value) and value == pytest.approx(want_value, rel=1e-6)
    assert grad.dtype == want_grad.dtype and np.all(np.isfinite(grad))
    assert np.all(grad[~mask] == 0)
    np.testing.assert_array_equal(grad[mask], want_grad[mask])


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sparse_crossentropy_equals_dense_one_hot_form(from_logits, dtype):
    rng = np.random.default_rng(5)
    B, T, C = 2, 3, 2000
    ids = rng.integers(0, C, size=(B, T))
    yp = rng.normal(size=(B, T, C)) * 3
    if not from_logits:
        yp = rng.random((B, T, C)) ** 4
        yp[0, 0] = 0.0
        yp[0, 0, ids[0, 0]] = 1e-3  # all the mass on the target: the upper clip is active
        yp[1, 2, ids[1, 2]] = 0.0  # zero probability on the target: the lower clip is active
    yp = yp.astype(dtype)
    onehot = np.zeros((B, T, C))
    np.put_along_axis(onehot, ids[..., None], 1.0, axis=-1)
    mask = np.array([[True, True, False], [True, False, True]])
    sparse = losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    dense = losses.CategoricalCrossentropy(from_logits=from_logits)
    rtol = 1e-12 if dtype == np.float64 else 2e-6
    for m in (None, mask):
        v, g = sparse(ids, yp, m)
        rv, rg = dense(onehot, yp, m)
        assert g.dtype == dtype
        assert v == pytest.approx(rv, rel=rtol)
        np.testing.assert_allclose(g, rg, rtol=rtol, atol=1e-12 * np.abs(rg).max())


def test_sparse_crossentropy_needs_no_dense_one_hot():
    import tracemalloc

    rng = np.random.default_rng(6)
    yp = rng.normal(size=(4, 8, 20000)).astype(np.float32)
    ids = rng.integers(0, 20000, size=(4, 8))
    for from_logits in (True, False):
        loss = losses.SparseCategoricalCrossentropy(from_logits=from_logits)
        x = yp if from_logits else np.abs(yp)
        tracemalloc.start()
        loss(ids, x)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        # the gradient and its mean: 2x; a float64 one-hot alone would be another 2x
        assert peak < 2.5 * yp.nbytes, (from_logits, peak / yp.nbytes)


def test_all_masked_gives_zero():
    value, grad = losses.get("mse")(np.ones((2, 3, 1)), np.zeros((2, 3, 1)), np.zeros((2, 3), bool))
    assert value == 0.0 and np.all(grad == 0)


def test_float32_predictions_give_float32_gradient():
    value, grad = losses.get("mse")(np.ones((2, 3)), np.zeros((2, 3), np.float32))
    assert grad.dtype == np.float32 and value == pytest.approx(1.0)


def test_logits_are_numerically_stable():
    z = np.array([[1000.0, -1000.0, 0.0]])
    v, g = losses.CategoricalCrossentropy(from_logits=True)(np.array([[0.0, 1.0, 0.0]]), z)
    assert v == pytest.approx(2000.0) and np.all(np.isfinite(g))
    np.testing.assert_allclose(g, [[1.0, -1.0, 0.0]], atol=1e-12)
    v, g = losses.BinaryCrossentropy(from_logits=True)(np.array([[1.0, 0.0]]), np.array([[-800.0, -800.0]]))
    assert v == pytest.approx(400.0) and np.all(np.isfinite(g))
    np.testing.assert_allclose(g, [[-0.5, 0.0]], atol=1e-12)


def test_probability_losses_clip_and_keep_learning_at_saturation():
    # p = 0 for the true class: Keras clips to 1e-7; the gradient stays finite and points the right way
    v, g = losses.get("binary_crossentropy")(np.array([[1.0]]), np.array([[0.0]]))
    assert v == pytest.approx(-np.log(1e-7), rel=1e-6)
    assert np.isfinite(g).all() and g[0, 0] < 0


def test_binary_targets_without_trailing_axis():
    yp = np.array([[0.2], [0.9]])
    v1, g1 = losses.get("binary_crossentropy")(np.array([0.0, 1.0]), yp)
    v2, g2 = losses.get("binary_crossentropy")(np.array([[0.0], [1.0]]), yp)
    assert v1 == v2 and g1.shape == (2, 1)
    np.testing.assert_array_equal(g1, g2)


def test_one_dimensional_predictions():
    v, g = losses.get("mse")(np.array([1.0, 2.0]), np.array([0.0, 0.0]))
    assert v == pytest.approx(2.5) and g.shape == (2,)
    np.testing.assert_allclose(g, [-1.0, -2.0])


def test_names_and_aliases():
    assert isinstance(losses.get("mean_squared_error"), losses.MeanSquaredError)
    assert isinstance(losses.get("MSE"), losses.MeanSquaredError)
    assert isinstance(losses.get("mae"), losses.MeanAbsoluteError)
    assert isinstance(losses.get("sparse_categorical_crossentropy"), losses.SparseCategoricalCrossentropy)
    cfg = losses.serialize(losses.BinaryCrossentropy(from_logits=True))
    back = losses.deserialize(cfg)
    assert isinstance(back, losses.BinaryCrossentropy) and back.from_logits


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown loss 'msee'"):
        losses.get("msee")
    with pytest.raises(TypeError, match="loss: expected a str"):
        losses.get(3)
    with pytest.raises(ValueError, match=r"y_true: expected shape \(2, 3\)"):
        losses.get("mse")(np.zeros((2, 4)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"class ids must be in \[0, 3\)"):
        losses.get("sparse_categorical_crossentropy")(np.array([0, 3]), np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="whole numbers"):
        losses.get("sparse_categorical_crossentropy")(np.array([0.5, 1.0]), np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="use sparse_categorical_crossentropy"):
        losses.get("categorical_crossentropy")(np.array([0, 1]), np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"mask: expected shape \(2, 5\)"):
        losses.get("mse")(np.zeros((2, 5, 1)), np.zeros((2, 5, 1)), np.ones((2, 4), bool))
    with pytest.raises(TypeError, match="y_pred: expected a numeric array"):
        losses.get("mse")(np.zeros(2), np.array(["a", "b"]))


def test_callable_loss_wrapper():
    def half_sse(y_true, y_pred):
        d = y_pred - y_true
        return 0.5 * float((d * d).sum()), d

    loss = losses.get(half_sse)
    v, g = loss(np.zeros((2, 2)), np.ones((2, 2)))
    assert v == 2.0 and np.all(g == 1)
    with pytest.raises(ValueError, match="takes no 'mask' argument"):
        loss(np.zeros((2, 3, 1)), np.ones((2, 3, 1)), np.ones((2, 3), bool))
    with pytest.raises(TypeError, match=r"must return \(value, gradient"):
        losses.get(lambda a, b: 1.0)(np.zeros(2), np.zeros(2))


def test_callable_loss_counts_samples_of_one_dimensional_predictions():
    def mean_sq(y_true, y_pred):
        d = y_pred - y_true
        return float((d * d).mean()), 2 * d / d.size

    rng = np.random.default_rng(0)
    y_true, y_pred = rng.normal(size=6), rng.normal(size=6)
    loss = losses.get(mean_sq)
    whole, n, _ = loss.sum_and_grad(y_true, y_pred)
    assert n == 6
    # two uneven batches accumulate to the same mean as the whole set, as evaluate() does
    s1, c1, _ = loss.sum_and_grad(y_true[:4], y_pred[:4])
    s2, c2, _ = loss.sum_and_grad(y_true[4:], y_pred[4:])
    assert (s1 + s2) / (c1 + c2) == pytest.approx(((y_pred - y_true) ** 2).mean())
    assert whole / n == pytest.approx(((y_pred - y_true) ** 2).mean())


# ----------------------------------------------------------------------------- metrics
def test_accuracy_resolution_follows_the_loss():
    assert isinstance(metrics.get("accuracy", loss=losses.get("binary_crossentropy")), metrics.BinaryAccuracy)
    assert metrics.get("acc", loss=losses.BinaryCrossentropy(from_logits=True)).threshold == 0.0
    assert isinstance(metrics.get("accuracy", loss=losses.get("sparse_categorical_crossentropy")),
                      metrics.SparseCategoricalAccuracy)
    assert isinstance(metrics.get("accuracy", loss=losses.get("categorical_crossentropy")),
                      metrics.CategoricalAccuracy)
    assert metrics.get("acc", loss=losses.get("mse")).name == "acc"


def test_accuracy_values():
    yp = np.array([[0.2, 0.7, 0.1], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    assert metrics.SparseCategoricalAccuracy()(np.array([1, 1, 2]), yp) == pytest.approx(2 / 3)
    assert metrics.CategoricalAccuracy()(np.eye(3)[[1, 0, 0]], yp) == pytest.approx(2 / 3)
    assert metrics.BinaryAccuracy()(np.array([1, 0, 1, 0]), np.array([[0.6], [0.4], [0.4], [0.51]])) == 0.5
    auto = metrics.get("accuracy")  # no loss: decided from shapes
    assert auto(np.array([1, 1, 2]), yp) == pytest.approx(2 / 3)


def test_metric_running_mean_and_mask():
    m = metrics.get("sparse_categorical_accuracy")
    yp = np.zeros((2, 3, 2))
    yp[..., 1] = 1.0  # always predicts class 1
    yt = np.array([[1, 0, 1], [1, 1, 0]])
    mask = np.array([[True, True, False], [True, False, False]])
    assert m(yt, yp, mask) == pytest.approx(2 / 3)
    m.update_state(yt, yp, mask)
    m.update_state(np.array([[0, 0, 0]]), yp[:1])
    assert m.result() == pytest.approx(2 / 6)
    m.reset_state()
    assert m.result() == 0.0
    mse = metrics.get("mse")
    assert mse(np.zeros((2, 2)), np.array([[1.0, 1.0], [3.0, 1.0]])) == pytest.approx(3.0)
    assert metrics.get("mae")(np.zeros((2, 2)), np.array([[1.0, -1.0], [3.0, 1.0]])) == pytest.approx(1.5)


def test_metric_bad_inputs():
    with pytest.raises(ValueError, match="unknown metric 'acuracy'"):
        metrics.get("acuracy")
    with pytest.raises(TypeError, match="metrics: expected a str"):
        metrics.get(5)
    with pytest.raises(ValueError, match=r"y_true: expected class ids of shape \(3,\)"):
        metrics.SparseCategoricalAccuracy()(np.zeros((2,)), np.zeros((3, 2)))


@pytest.mark.parametrize("name,from_logits", CASES)
@pytest.mark.parametrize("shape", [(6,), (5, 4), (3, 6, 4)])
def test_functional_losses_equal_keras_per_sample(name, from_logits, shape):
    """fr.losses.mean_squared_error(y_true, y_pred) etc. return Keras's unreduced per-sample losses
    (the lessons' naive-forecast baseline is np.mean(losses.mean_squared_error(y, y_hat)))."""
    import keras

    if name in ("categorical_crossentropy", "sparse_categorical_crossentropy") and len(shape) == 1:
        return  # class scores need a class axis
    rng = np.random.default_rng(5)
    yt, yp = _problem(name, shape, rng, from_logits)
    yp = yp.astype(np.float32)
    kw = {"from_logits": True} if from_logits else {}
    fname = {"mse": "mean_squared_error", "mae": "mean_absolute_error"}.get(name, name)
    got = getattr(losses, fname)(yt, yp, **kw)
    want = np.asarray(getattr(keras.losses, fname)(yt.astype(np.float32), yp, **kw))
    if len(shape) == 1:  # [B] predictions: one value per sample here, Keras reduces them to one number
        assert got.shape == shape and np.mean(got) == pytest.approx(float(want), rel=1e-5)
    else:
        assert got.shape == shape[:-1] and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.mean(got) == pytest.approx(_make(name, from_logits)(yt, yp)[0], rel=1e-6)


def test_compile_takes_the_functional_losses_as_keras_does():
    from fastrnn import layers
    from fastrnn.models import Sequential

    for fn, cls in ((losses.mean_squared_error, losses.MeanSquaredError),
                    (losses.binary_crossentropy, losses.BinaryCrossentropy),
                    (losses.sparse_categorical_crossentropy, losses.SparseCategoricalCrossentropy)):
        assert type(losses.get(fn)) is cls
    rng = np.random.default_rng(6)
    x = rng.standard_normal((16, 3)).astype(np.float32)
    m = Sequential([layers.Dense(1, input_shape=(3,))])
    m.compile(optimizer="sgd", loss=losses.mean_squared_error)
    h = m.fit(x, x[:, :1] * 2, epochs=3, verbose=0)
    assert np.isfinite(h.history["loss"]).all()
