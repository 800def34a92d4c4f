"""fastrnn vs torch vs the NumPy reference, forward and training, LSTM and GRU, on the shapes of
``fastrnn._bench.SHAPES`` (DeepBench style (T, B, I, H))."""
import numpy as np
import pytest

from fastrnn import _bench, ops, reference

SHAPES = list(_bench.SHAPES)
CELLS = ["lstm", "gru"]
MODES = ["forward", "train"]


def _flops_info(benchmark, cell, shape, mode):
    T, B, I, H = _bench.SHAPES[shape]
    benchmark.extra_info.update(T=T, B=B, I=I, H=H, gflop=_bench.flops(cell, T, B, I, H, mode == "train") / 1e9)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", SHAPES)
def test_fastrnn(benchmark, threads, shape, cell, mode):
    T, B, I, H = _bench.SHAPES[shape]
    p = _bench._problem(cell, T, B, I, H)
    fwd, train = _bench._fr_calls(ops, cell, p)
    if shape == "small":  # validated before it is timed
        rf, _ = _bench._fr_calls(reference, cell, p)
        np.testing.assert_allclose(fwd()[0], rf()[0], rtol=1e-4, atol=1e-5)
    _flops_info(benchmark, cell, shape, mode)
    benchmark(fwd if mode == "forward" else train)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", SHAPES)
def test_torch(benchmark, threads, shape, cell, mode):
    torch = pytest.importorskip("torch")
    T, B, I, H = _bench.SHAPES[shape]
    p = _bench._problem(cell, T, B, I, H)
    fwd, train = _bench._torch_calls(torch, cell, p, T, B, I, H)
    _flops_info(benchmark, cell, shape, mode)
    benchmark(fwd if mode == "forward" else train)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", ["small", "text", "latency"])
def test_numpy_reference(benchmark, threads, shape, cell, mode):
    T, B, I, H = _bench.SHAPES[shape]
    p = _bench._problem(cell, T, B, I, H)
    fwd, train = _bench._fr_calls(reference, cell, p)
    _flops_info(benchmark, cell, shape, mode)
    benchmark.pedantic(fwd if mode == "forward" else train, rounds=3, iterations=1)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("impl", ["fastrnn", "numpy"])
def test_gemm_input_projection(benchmark, threads, shape, impl):
    from fastrnn import backend

    T, B, I, H = _bench.SHAPES[shape]
    rng = np.random.default_rng(0)
    A = rng.standard_normal((T * B, I)).astype(np.float32)
    W = rng.standard_normal((4 * H, I)).astype(np.float32)
    core = backend.core()
    np.testing.assert_allclose(core.gemm(A, W, False, True), A @ W.T, rtol=1e-4, atol=1e-3)
    benchmark.extra_info.update(M=T * B, N=4 * H, K=I, gflop=2.0 * T * B * 4 * H * I / 1e9)
    benchmark((lambda: core.gemm(A, W, False, True)) if impl == "fastrnn" else (lambda: A @ W.T))
