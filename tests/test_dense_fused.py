"""The Dense layer's kernels against NumPy: the GEMM with bias and activation in its write-back
(fastrnn._core.dense_gemm), the GEMM accumulating into an existing array, and the column sum of
the bias gradient (fastrnn._core.colsum), on awkward and round sizes, every ISA path, 1 and 2
threads; and the Dense layer's forward and backward through them."""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import backend, ops
from fastrnn import layers as L

ACTS = {0: lambda z: z, 1: lambda z: np.maximum(z, 0), 2: np.tanh, 3: lambda z: 1 / (1 + np.exp(-z))}
# M, K, N: small-N path (N <= 4), partial tiles, K over the GEMM's 512-deep blocks, N over its
# 2048-wide blocks, K = 0
SHAPES = [(1, 1, 1), (3, 17, 1), (17, 3, 4), (33, 7, 5), (5, 600, 33), (64, 128, 1), (7, 9, 2100), (3, 0, 6),
          (130, 64, 48)]


@pytest.fixture(params=[1, 2])
def nthreads(request):
    before = backend.get_num_threads()
    backend.set_num_threads(request.param)
    yield request.param
    backend.set_num_threads(before)


def _data(M, K, N, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((M, K)).astype(np.float32), rng.standard_normal((K, N)).astype(np.float32),
            rng.standard_normal(N).astype(np.float32))


@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_dense_gemm_bias_and_activation_in_the_write_back(shape, act, isa, nthreads):
    M, K, N = shape
    a, b, bias = _data(M, K, N)
    core = backend.core()
    expect = ACTS[act](a.astype(np.float64) @ b + bias)
    got = core.dense_gemm(a, b, False, False, bias, act)
    # tanh / sigmoid: the kernels' vector forms are within 4e-7 of the exact ones
    np.testing.assert_allclose(got, expect, rtol=2e-5, atol=2e-5 * max(1, np.sqrt(K)))
    nob = core.dense_gemm(a, b, False, False, None, act)
    np.testing.assert_allclose(nob, ACTS[act](a.astype(np.float64) @ b), rtol=2e-5, atol=2e-5 * max(1, np.sqrt(K)))
    if act in (1, 2, 3) and M * N > 4:  # the activation really ran: the output differs from the linear one
        assert not np.allclose(got, a.astype(np.float64) @ b + bias, atol=1e-3)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_dense_gemm_accumulates_into_out_and_takes_transposed_operands(shape, isa, nthreads):
    M, K, N = shape
    a, b, _ = _data(M, K, N, seed=1)
    out = np.random.default_rng(2).standard_normal((M, N)).astype(np.float32)
    expect = out.astype(np.float64) + a.astype(np.float64) @ b
    at, bt = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)
    res = backend.core().dense_gemm(at, bt, True, True, None, 0, out, True)
    assert res is not None and np.shares_memory(res, out)
    np.testing.assert_allclose(out, expect, rtol=2e-5, atol=2e-5 * max(1, np.sqrt(K)))


@pytest.mark.parametrize("MN", [(1, 1), (3, 17), (17, 3), (700, 33), (5, 1025), (2, 3000), (0, 5), (64, 1)])
def test_colsum_adds_the_rows_in_order(MN, isa, nthreads):
    """Rows added in order (as NumPy sums a C-contiguous matrix over axis 0 when it has several
    columns; one column it sums pairwise); into out with accumulate."""
    M, N = MN
    x = np.random.default_rng(3).standard_normal((M, N)).astype(np.float32)
    seq = np.zeros(N, np.float32) if M == 0 else x[0].copy()
    for r in x[1:]:
        seq = seq + r
    core = backend.core()
    np.testing.assert_array_equal(core.colsum(x), seq)
    np.testing.assert_allclose(core.colsum(x), x.sum(axis=0), rtol=1e-5, atol=1e-5)
    if N > 1:
        np.testing.assert_array_equal(core.colsum(x), x.sum(axis=0))
    out = np.random.default_rng(4).standard_normal(N).astype(np.float32)
    expect = out + seq
    core.colsum(x, out, True)
    np.testing.assert_array_equal(out, expect)


def test_colsum_is_the_same_for_any_thread_count():
    x = np.random.default_rng(5).standard_normal((300, 5000)).astype(np.float32)
    before = backend.get_num_threads()
    try:
        outs = []
        for nt in (1, 2, 3):
            backend.set_num_threads(nt)
            outs.append(backend.core().colsum(x))
    finally:
        backend.set_num_threads(before)
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


def test_bad_input_is_refused_clearly():
    core = backend.core()
    a, b, bias = _data(3, 4, 5)
    with pytest.raises(ValueError, match="bias: expected shape"):
        core.dense_gemm(a, b, False, False, np.zeros(4, np.float32), 0)
    with pytest.raises(ValueError, match="act"):
        core.dense_gemm(a, b, False, False, None, 4)
    with pytest.raises(ValueError, match="B: inner dimensions"):
        core.dense_gemm(a, a, False, False, None, 0)
    with pytest.raises(ValueError, match="out: expected shape"):
        core.dense_gemm(a, b, False, False, None, 0, np.zeros((3, 4), np.float32), True)
    with pytest.raises(ValueError, match="out: required"):
        core.dense_gemm(a, b, False, False, None, 0, None, True)
    with pytest.raises(ValueError, match="out: must not overlap A"):
        sq = np.ones((4, 4), np.float32)
        core.dense_gemm(sq, sq, False, False, None, 0, sq, True)
    # a view sharing part of A's or B's buffer: refused, and the operand left as it was
    buf = np.arange(40, dtype=np.float32)
    for out_view, operand in ((buf[:16].reshape(4, 4), "A"), (buf[24:40].reshape(4, 4), "B")):
        A, B = buf[8:24].reshape(4, 4), buf[20:36].reshape(4, 4)
        kept = buf.copy()
        with pytest.raises(ValueError, match=f"out: must not overlap {operand}"):
            core.dense_gemm(A, B, False, False, None, 0, out_view)
        np.testing.assert_array_equal(buf, kept)
    with pytest.raises(TypeError):
        core.dense_gemm(a.astype(np.float64), b, False, False, None, 0)
    with pytest.raises(ValueError, match="out: expected shape"):
        core.colsum(a, np.zeros(3, np.float32), True)
    with pytest.raises(ValueError, match="X: expected a 2-D"):
        core.colsum(bias)


@pytest.mark.parametrize("act", ["linear", "relu", "tanh", "sigmoid", "softmax"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_layer_forward_backward_against_float64(act, use_bias, isa):
    rng = np.random.default_rng(6)
    layer = L.Dense(33, activation=act, use_bias=use_bias, seed=0)
    x = rng.standard_normal((3, 5, 17)).astype(np.float32)
    y = layer(x, training=True)
    ref = L.Dense(33, activation=act, use_bias=use_bias, dtype="float64", seed=0)
    ref.build(x.shape)
    ref.set_weights([w.astype(np.float64) for w in layer.get_weights()])
    y64 = ref(x.astype(np.float64), training=True)
    np.testing.assert_allclose(y, y64, rtol=1e-5, atol=1e-5)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    for p in layer.parameters():
        p.grad[...] = 1.0  # backward accumulates into what is there
    for p in ref.parameters():
        p.grad[...] = 1.0
    dx = layer.backward(dy)
    dx64 = ref.backward(dy.astype(np.float64))
    np.testing.assert_allclose(dx, dx64, rtol=1e-4, atol=1e-4)
    for p, q in zip(layer.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-4, atol=1e-4)


def test_dense_falls_back_for_float64_and_views():
    x = np.random.default_rng(7).standard_normal((4, 6))
    y, applied = ops._dense_forward(x, np.ones((6, 2), np.float32), None, "relu")
    assert y is None and not applied
    k = np.random.default_rng(8).standard_normal((6, 4)).astype(np.float32)
    y, applied = ops._dense_forward(x.astype(np.float32), k, None, "softmax")
    assert applied is False and y.shape == (4, 4)  # softmax is left to the layer
    grad = np.zeros((12, 4), np.float32)[::2]  # not C-contiguous: NumPy's +=
    ops._matmul_acc(x.astype(np.float32).T, np.ones((4, 4), np.float32), grad)
    np.testing.assert_allclose(grad, x.T.sum(axis=1, keepdims=True) * np.ones((1, 4)), rtol=1e-5)


def test_a_model_with_dense_layers_trains_as_before():
    fr.set_seed(0)
    model = fr.Sequential([L.Dense(16, activation="relu", seed=1), L.Dense(8, activation="tanh", seed=2),
                           L.Dense(1, activation="sigmoid", seed=3)])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 5)).astype(np.float32)
    y = (x[:, :1] + x[:, 1:2] > 0).astype(np.float32)
    hist = model.fit(x, y, epochs=30, batch_size=32, verbose=0)
    assert hist.history["loss"][-1] < 0.5 * hist.history["loss"][0]


@pytest.mark.parametrize("N", [5, 8, 40, 200, 9])
@pytest.mark.parametrize("M", [1, 3, 8, 13])
def test_last_panel_of_at_most_eight_columns(N, M, isa, nthreads):
    """A last column panel of 5..8 columns (on AVX-512 multiplied in 256-bit registers; 200 = 6 x 32
    + 8 is the decoder's input gradient) with the bias, the activation and accumulation."""
    for K in (1, 17, 600):
        a, b, bias = _data(M, K, N, seed=M * N + K)
        core = backend.core()
        got = core.dense_gemm(a, b, False, False, bias, 2)
        np.testing.assert_allclose(got, np.tanh(a.astype(np.float64) @ b + bias), rtol=2e-5, atol=2e-5 * np.sqrt(K))
        out = np.ones((M, N), np.float32)
        core.dense_gemm(np.ascontiguousarray(a.T), b, True, False, None, 0, out, True)
        np.testing.assert_allclose(out, 1 + a.astype(np.float64) @ b, rtol=2e-5, atol=2e-5 * np.sqrt(K))
