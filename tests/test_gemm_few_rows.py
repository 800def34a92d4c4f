"""The GEMM's path for a few rows of A against a row-major B (csrc/cpu/gemm.h, gemm_few_rows: B
read in place, not packed): the rows it computes must be the bits the packed path computes for the
same rows inside a taller call (batch invariance: a row's result does not depend on how many rows
come with it), on every ISA path, 1 and 2 threads, with bias, activation and accumulation, under
the machine's caches and under tiny ones (many depth blocks); and near float64 NumPy."""
from __future__ import annotations

import numpy as np
import pytest

from fastrnn import _core, backend

KIB = 1 << 10
TINY = (1 * KIB, 8 * KIB, 8 * KIB, 1)  # depth blocks of 16: every K below splits into several
EXTRA = 9  # rows added to make a call the packed path takes (more than the few-rows limit of 4)


def _problem(rng, M, K, N, trans_a):
    A = rng.standard_normal((K, M) if trans_a else (M, K)).astype(np.float32)
    B = rng.standard_normal((K, N)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    return A, B, bias


def _taller(rng, A, trans_a):
    """A with EXTRA more rows of op(A) after its own (so op(A)[:M] is A's rows)."""
    if trans_a:
        return np.ascontiguousarray(np.hstack([A, rng.standard_normal((A.shape[0], EXTRA)).astype(np.float32)]))
    return np.ascontiguousarray(np.vstack([A, rng.standard_normal((EXTRA, A.shape[1])).astype(np.float32)]))


@pytest.fixture
def caches():
    yield backend.set_gemm_caches
    backend.set_gemm_caches()


@pytest.mark.parametrize("tiny", [False, True])
@pytest.mark.parametrize("M", [1, 2, 3, 4])
def test_few_rows_are_the_rows_of_a_taller_call(isa, threads, caches, tiny, M):
    rng = np.random.default_rng(M + 10 * tiny)
    if tiny:
        caches(*TINY)
    for K, N in [(1, 1), (3, 5), (17, 33), (200, 385), (64, 1000), (700, 97), (33, 18328 // 8)]:
        for trans_a in (False, True):
            A, B, bias = _problem(rng, M, K, N, trans_a)
            big = _taller(rng, A, trans_a)
            for nt in (1, 2):
                threads(nt)
                got = _core.gemm(A, B, trans_a, False)
                want = _core.gemm(big, B, trans_a, False)[:M]
                np.testing.assert_array_equal(got, want, err_msg=f"{isa} K={K} N={N} trans_a={trans_a} threads={nt}")
                opA = (A.T if trans_a else A).astype(np.float64)
                np.testing.assert_allclose(got, opA @ B.astype(np.float64), rtol=1e-4, atol=1e-4 * np.sqrt(K))


@pytest.mark.parametrize("act", [0, 1, 2, 3])
@pytest.mark.parametrize("M", [1, 4])
def test_few_rows_bias_activation_and_accumulation(isa, threads, caches, act, M):
    rng = np.random.default_rng(act + 7 * M)
    caches(*TINY)  # several depth blocks: the bias goes on the first, the activation on the last
    for K, N in [(5, 7), (130, 200), (257, 33)]:
        A, B, bias = _problem(rng, M, K, N, False)
        big = _taller(rng, A, False)
        for nt in (1, 2):
            threads(nt)
            got = _core.dense_gemm(A, B, bias=bias, act=act)
            want = _core.dense_gemm(big, B, bias=bias, act=act)[:M]
            np.testing.assert_array_equal(got, want, err_msg=f"{isa} K={K} N={N} act={act} threads={nt}")
            out = rng.standard_normal((M, N)).astype(np.float32)
            out_big = np.vstack([out, rng.standard_normal((EXTRA, N)).astype(np.float32)])
            acc = _core.dense_gemm(A, B, act=act, out=out.copy(), accumulate=True)
            acc_big = _core.dense_gemm(big, B, act=act, out=out_big, accumulate=True)[:M]
            np.testing.assert_array_equal(acc, acc_big, err_msg=f"{isa} accumulate K={K} N={N} act={act}")
            z = A.astype(np.float64) @ B.astype(np.float64) + bias
            ref = {0: z, 1: np.maximum(z, 0), 2: np.tanh(z), 3: 1 / (1 + np.exp(-z))}[act]
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.sqrt(K))


def test_few_rows_leave_the_rest_of_out_alone(isa):
    """A strided C (out with more columns than N is not accepted; out is C itself): the kernel
    writes exactly M x N values, nothing past the last column of a short last vector."""
    rng = np.random.default_rng(3)
    A, B, bias = _problem(rng, 2, 40, 37, False)
    out = np.full((2, 37), np.nan, np.float32)
    got = _core.dense_gemm(A, B, bias=bias, out=out)
    assert got is out or np.shares_memory(got, out)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, A.astype(np.float64) @ B + bias, rtol=1e-4, atol=1e-4)
