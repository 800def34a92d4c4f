"""The Embedding kernels (fastrnn._core.embedding_forward / embedding_backward, csrc/cpu/embedding.h)
against NumPy (table[ids] and np.add.at) on every ISA path and 1, 2 and 3 threads: the gather is
exact, the scatter-add gives the same bits as np.add.at (rows added in order) for every thread
count, repeated ids included; the Embedding layer uses them for float32 NumPy tables and keeps
its contract (mask_zero, the ValueError for ids out of range)."""
from __future__ import annotations

import numpy as np
import pytest

from fastrnn import _core, layers

# (V, D, ids shape): awkward widths around the vector widths and the 16-float lines the threads
# split, a vocabulary of the word-LM bench, one id, many repeats of few ids
CASES = [(1, 1, (1,)), (5, 3, (7, 3)), (17, 17, (700,)), (3, 33, (20, 35)), (18328, 200, (20, 35)),
         (50, 200, (700,)), (1000, 129, (2, 350)), (3000, 301, (40, 100))]
# the kernels split work over threads from a million floats on (embedding.h): the last case does


@pytest.mark.parametrize("V,D,shape", CASES)
def test_gather_and_scatter_add_match_numpy_for_any_thread_count(isa, threads, V, D, shape):
    rng = np.random.default_rng(V + D)
    table = rng.normal(size=(V, D)).astype(np.float32)
    ids = rng.integers(0, V, shape)
    dy = rng.normal(size=shape + (D,)).astype(np.float32)
    start = rng.normal(size=(V, D)).astype(np.float32)  # backward accumulates into what is there
    want = start.copy()
    np.add.at(want, ids.ravel(), dy.reshape(-1, D))
    for nt in (1, 2, 3):
        threads(nt)
        out = _core.embedding_forward(table, ids)
        assert out.shape == shape + (D,) and out.dtype == np.float32
        np.testing.assert_array_equal(out, table[ids])
        grad = start.copy()
        _core.embedding_backward(ids, dy, grad)
        np.testing.assert_array_equal(grad, want)  # the same bits: rows added in order


def test_scatter_add_order_is_fixed_under_cancellation(threads):
    """Values whose sum depends on the order of addition: the kernel adds rows in order, like
    np.add.at, at every thread count."""
    V, D, N = 4, 200, 6000  # 1.2 million floats: split over the threads
    rng = np.random.default_rng(7)
    ids = rng.integers(0, V, N)
    dy = (rng.normal(size=(N, D)) * 10.0 ** rng.integers(-6, 7, (N, 1))).astype(np.float32)
    want = np.zeros((V, D), np.float32)
    np.add.at(want, ids, dy)
    for nt in (1, 2, 3):
        threads(nt)
        grad = np.zeros((V, D), np.float32)
        _core.embedding_backward(ids, dy, grad)
        np.testing.assert_array_equal(grad, want)


def test_bad_arguments_raise_value_errors_naming_them():
    table = np.zeros((5, 3), np.float32)
    with pytest.raises(ValueError, match="ids: expected values in \\[0, 5\\), got 5 at flat position 2"):
        _core.embedding_forward(table, np.array([[0, 1], [5, 1]]))
    with pytest.raises(ValueError, match="ids: expected values in \\[0, 5\\), got -1"):
        _core.embedding_forward(table, np.array([-1]))
    with pytest.raises(ValueError, match="table"):
        _core.embedding_forward(np.zeros(5, np.float32), np.array([0]))
    grad = np.zeros((5, 3), np.float32)
    with pytest.raises(ValueError, match="dy: expected"):
        _core.embedding_backward(np.array([0, 1]), np.zeros((2, 4), np.float32), grad)
    with pytest.raises(ValueError, match="ids"):
        _core.embedding_backward(np.array([0, 7]), np.zeros((2, 3), np.float32), grad)
    assert np.all(grad == 0)  # nothing written before the check
    grad.flags.writeable = False
    with pytest.raises(ValueError, match="grad: the array must be writeable"):
        _core.embedding_backward(np.array([0]), np.zeros((1, 3), np.float32), grad)
    with pytest.raises(TypeError):  # a float64 grad is not converted (a copy would lose the update)
        _core.embedding_backward(np.array([0]), np.zeros((1, 3), np.float32), np.zeros((5, 3)))


def _layer_reference(emb, ids, dy):
    table = emb.embeddings.value.copy()
    grad = emb.embeddings.grad.copy()
    np.add.at(grad, ids.ravel(), dy.reshape(-1, emb.output_dim).astype(grad.dtype))
    return table[ids], grad


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layer_forward_and_backward(dtype):
    rng = np.random.default_rng(8)
    emb = layers.Embedding(30, 17, mask_zero=True, seed=0, dtype=dtype)
    ids = rng.integers(0, 30, (6, 9))
    ids[0, 4:] = 0
    y = emb(ids, training=True)
    dy = rng.normal(size=y.shape).astype(dtype)
    want_y, want_grad = _layer_reference(emb, ids, dy)
    np.testing.assert_array_equal(y, want_y)
    assert y.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(emb.compute_mask(ids), ids != 0)
    assert emb.backward(dy) is None
    np.testing.assert_array_equal(emb.embeddings.grad, want_grad)
    assert np.any(emb.embeddings.grad[0] != 0)  # id 0 still gets its gradient (mask_zero masks downstream)


def test_layer_out_of_range_ids_keep_their_message():
    emb = layers.Embedding(10, 4, seed=0)
    with pytest.raises(ValueError, match=r"token id 10 at position \(1, 0\) is outside \[0, input_dim=10\)"):
        emb(np.array([[1, 2], [10, 3]]))
    with pytest.raises(ValueError, match=r"token id -2 at position \(0, 1\)"):
        emb(np.array([[1, -2]]))


def test_layer_float_ids_and_empty_batches():
    emb = layers.Embedding(10, 4, seed=0)
    ids = np.array([[1.0, 2.0], [3.0, 9.0]])
    np.testing.assert_array_equal(emb(ids), emb.embeddings.value[ids.astype(np.int64)])
    out = emb(np.zeros((0, 5), np.int64), training=True)
    assert out.shape == (0, 5, 4)
    emb.backward(np.zeros((0, 5, 4), np.float32))
    assert np.all(emb.embeddings.grad == 0)
