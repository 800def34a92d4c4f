"""The CPU GEMM's cache blocking (csrc/cpu/blocking.h): the blocks derived from the cache sizes
against a Python twin of the derivation, for the machine's caches, for other machines' (Zen 3)
and for fake ones; the GEMM against float64 NumPy under tiny caches (many KC / MC / NC blocks and
edge tiles) on every ISA path, 1 and 2 threads; the override's parsing and argument checks; the
blocks in ``fastrnn.info()``."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import fastrnn
from fastrnn import _core, backend

# The register tile (mr, nr) of each ISA path (csrc/cpu/kernels_impl.h).
TILES = {"scalar": (4, 2), "avx2": (6, 16), "avx512": (8, 32), "neon": (5, 16)}
KIB, MIB = 1 << 10, 1 << 20


def twin_rowsplit(l3):
    """The time loops' row-split limit of csrc/cpu/blocking.h, written again: half the L3, 16 MiB
    when it is unknown."""
    return l3 // 2 if l3 else 16 * MIB


def twin_blocking(isa, l1d, l2, l3, l3_cores):
    """The derivation of csrc/cpu/blocking.h, written again: (kc, mc, nc, mc_l2)."""
    mr, nr = TILES[isa]
    l1 = l1d or 32 * KIB
    l2 = l2 or 512 * KIB
    l3c = l3 // max(1, l3_cores) if l3 else 2 * MIB
    kc = min(1024, max(16, (l1 // 2 // (4 * mr)) // 16 * 16))
    nc = min(16384 // nr * nr, max(nr, (l2 // 2 // (4 * kc)) // nr * nr))
    mc = min(16384 // mr * mr, max(mr, (l3c // 2 // (4 * kc)) // mr * mr))
    mc_l2 = min(mc, max(mr, (l2 // 4 // (4 * kc)) // mr * mr))
    return kc, mc, nc, mc_l2


@pytest.fixture
def caches():
    """backend.set_gemm_caches, with the machine's sizes put back afterwards."""
    yield backend.set_gemm_caches
    backend.set_gemm_caches()


def _blocks(b):
    return b["kc"], b["mc"], b["nc"], b["mc_l2"]


def test_machine_blocking_follows_the_caches(isa):
    b = backend.gemm_blocking()
    ci = backend.cache_info()
    assert b["isa"] == isa and (b["mr"], b["nr"]) == TILES[isa]
    assert (b["l1d"], b["l2"], b["l3"]) == (ci["l1d"], ci["l2"], ci["l3"])
    assert b["source"] == ci["source"] and b["env_error"] == ""
    cores = ci["l3_shared_by"] // max(1, ci["l1d_shared_by"]) if ci["l3_shared_by"] else 0
    assert b["l3_cores"] == cores
    assert _blocks(b) == twin_blocking(isa, ci["l1d"], ci["l2"], ci["l3"], cores)
    assert b["rowsplit_max_bytes"] == twin_rowsplit(ci["l3"])


SIZES = [  # (l1d, l2, l3, cores sharing the L3)
    (32 * KIB, 1 * MIB, 32 * MIB, 2),    # Zen 4, this machine
    (32 * KIB, 512 * KIB, 32 * MIB, 8),  # Zen 3 CCX
    (48 * KIB, 2 * MIB, 105 * MIB, 56),  # Sapphire Rapids
    (64 * KIB, 4 * MIB, 0, 0),           # no L3 (many ARM cores)
    (0, 1 * MIB, 0, 0),                  # L1d and L3 unknown: their fallbacks
    (16 * KIB, 0, 8 * MIB, 0),           # L2 unknown, the L3 shared by an unknown number of cores
    (1 * KIB, 4 * KIB, 16 * KIB, 1),     # tiny: the lower bounds
    (1 << 30, 1 << 31, 1 << 34, 1),      # huge: the upper bounds
    (3000, 70000, 1_000_001, 3),         # not powers of two
]


@pytest.mark.parametrize("sizes", SIZES, ids=str)
def test_blocking_matches_its_twin_for_any_caches(isa, caches, sizes):
    caches(*sizes)
    b = backend.gemm_blocking()
    assert b["source"] == "set_gemm_caches" and (b["l1d"], b["l2"], b["l3"], b["l3_cores"]) == sizes
    kc, mc, nc, mc_l2 = _blocks(b)
    assert (kc, mc, nc, mc_l2) == twin_blocking(isa, *sizes)
    assert b["rowsplit_max_bytes"] == twin_rowsplit(sizes[2])
    mr, nr = TILES[isa]
    assert kc % 16 == 0 and mc % mr == 0 and nc % nr == 0 and kc >= 16 and mc >= mr and nc >= nr
    assert mc_l2 % mr == 0 and mr <= mc_l2 <= mc
    l1 = sizes[0] or 32 * KIB
    if kc > 16 and kc < 1024:  # the A micro-panel takes about half of the L1d, not more
        assert l1 / 2 - 16 * mr * 4 < mr * kc * 4 <= l1 / 2


def test_zen3_and_zen4_blocks():
    # the figures csrc/cpu/blocking.h states: the other machine (Zen 3, AVX2 only) and this one
    want = {("avx2", 0): (672, 780, 96, 48), ("avx2", 1): (672, 3120, 192, 96),
            ("avx512", 1): (512, 4096, 256, 128)}
    for (isa, zen4), blocks in want.items():
        sizes = SIZES[0] if zen4 else SIZES[1]
        assert twin_blocking(isa, *sizes) == blocks
        if isa in _core.available_isas():
            before = _core.get_isa()
            _core.set_isa(isa)
            try:
                backend.set_gemm_caches(*sizes)
                assert _blocks(backend.gemm_blocking()) == blocks
            finally:
                backend.set_gemm_caches()
                _core.set_isa(before)


def _gemm_case(M, K, N, trans_a, trans_b, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((K, M) if trans_a else (M, K)).astype(np.float32)
    B = rng.standard_normal((N, K) if trans_b else (K, N)).astype(np.float32)
    want = (A.T if trans_a else A).astype(np.float64) @ (B.T if trans_b else B).astype(np.float64)
    return A, B, want


def _close(got, want, K):
    err = float(np.max(np.abs(got - want)))
    assert err <= 1e-5 * np.sqrt(K) * (1 + float(np.max(np.abs(want)))), err


# Tiny caches: KC 16, MC and NC a few tiles (see test_tiny_caches_give_many_blocks); the shapes
# cut every loop into several blocks with a ragged last one, and end in edge tiles of every kind.
TINY = (1 * KIB, 8 * KIB, 8 * KIB, 1)
SHAPES = [(1, 1, 5), (3, 17, 33), (17, 33, 3 * 32 + 5), (33, 100, 70), (150, 90, 24), (67, 161, 130),
          (130, 47, 257)]


def test_tiny_caches_give_many_blocks(isa, caches):
    caches(*TINY)
    kc, mc, nc, mc_l2 = _blocks(backend.gemm_blocking())
    mr, nr = TILES[isa]
    assert kc <= 32 and mc >= mr and nc >= nr and mc_l2 <= 64
    rows, depth, cols = SHAPES[-2]
    assert depth > 4 * kc and cols > nc and rows > mr  # several blocks along every loop of the largest shapes
    rows, depth, cols = SHAPES[-1]
    assert rows > mc
    rows, depth, cols = SHAPES[-3]  # one column block (the A blocks used once): rows in blocks of mc_l2
    assert cols <= nc and rows > mc_l2


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "M{}K{}N{}".format(*s))
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_matches_numpy_under_tiny_caches(isa, caches, threads, shape, trans_a, trans_b):
    M, K, N = shape
    A, B, want = _gemm_case(M, K, N, trans_a, trans_b, seed=M + K + N)
    caches(*TINY)
    threads(1)
    one = _core.gemm(A, B, trans_a, trans_b)
    threads(2)
    two = _core.gemm(A, B, trans_a, trans_b)
    _close(one, want, K)
    np.testing.assert_array_equal(one, two)  # the thread split never changes an element's sums


@pytest.mark.parametrize("act", [0, 1, 2, 3])
def test_epilogue_under_tiny_caches(isa, caches, threads, act):
    # bias and activation go on the final sums only (the last KC block), accumulation adds to C
    M, K, N = 41, 150, 77
    A, B, want = _gemm_case(M, K, N, False, True, seed=act)
    rng = np.random.default_rng(10 + act)
    bias = rng.standard_normal(N).astype(np.float32)
    C0 = rng.standard_normal((M, N)).astype(np.float32)
    f = {0: lambda z: z, 1: lambda z: np.maximum(z, 0), 2: np.tanh, 3: lambda z: 1 / (1 + np.exp(-z))}[act]
    caches(*TINY)
    for n in (1, 2):
        threads(n)
        got = _core.dense_gemm(A, B, False, True, bias, act)
        _close(got, f(want + bias), K)
        out = C0.copy()
        _core.dense_gemm(A, B, False, True, None, act, out, True)
        _close(out, f(want + C0), K)


def test_gemm_matches_numpy_for_several_kc(caches):
    # another KC adds the partial sums in other places: the results may differ in the last bits,
    # never by more than rounding
    A, B, want = _gemm_case(64, 1000, 96, False, False, seed=5)
    got = {}
    for l1 in (1 * KIB, 8 * KIB, 64 * KIB):
        caches(l1, 1 * MIB, 8 * MIB, 1)
        got[l1] = _core.gemm(A, B)
        _close(got[l1], want, 1000)
    caches()
    _close(_core.gemm(A, B), want, 1000)


def test_machine_blocking_is_the_same_for_any_thread_count(isa, threads):
    A, B, want = _gemm_case(250, 1500, 300, True, False, seed=2)  # several KC blocks on every path
    threads(1)
    one = _core.gemm(A, B, True, False)
    threads(2)
    two = _core.gemm(A, B, True, False)
    np.testing.assert_array_equal(one, two)
    _close(one, want, 1500)


def test_set_gemm_caches_restores_the_machine(caches):
    machine = backend.gemm_blocking()
    caches(*TINY)
    assert backend.gemm_blocking()["source"] == "set_gemm_caches"
    caches()
    assert backend.gemm_blocking() == machine


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"l1d": -1}, ValueError, "l1d must be >= 0"),
    ({"l2": 1.5}, TypeError, "l2 must be an int"),
    ({"l3": True}, TypeError, "l3 must be an int"),
    ({"l3_cores": 5000}, ValueError, "l3_cores must be <= 4096"),
    ({"l3_cores": -2}, ValueError, "l3_cores must be >= 0"),
])
def test_set_gemm_caches_checks_its_arguments(kwargs, exc, match):
    before = backend.gemm_blocking()
    with pytest.raises(exc, match=match):
        backend.set_gemm_caches(**kwargs)
    assert backend.gemm_blocking() == before
    with pytest.raises(ValueError, match="sizes must be >= 0"):
        _core.set_gemm_caches(-1, 0, 0)


def _run_with_env(value, code):
    env = {**os.environ, "FASTRNN_CACHE_SIZES": value}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


ENV_CODE = """
import numpy as np
from fastrnn import backend, _core
b = backend.gemm_blocking()
print(b["source"], b["l1d"], b["l2"], b["l3"], b["l3_cores"], b["kc"], b["mc"], b["nc"], b["mc_l2"],
      repr(b["env_error"]))
rng = np.random.default_rng(0)
A = rng.standard_normal((67, 161)).astype(np.float32); B = rng.standard_normal((161, 130)).astype(np.float32)
err = np.max(np.abs(_core.gemm(A, B) - A.astype(np.float64) @ B.astype(np.float64)))
print("ok" if err < 1e-3 else err)
"""


@pytest.mark.parametrize("value, sizes", [("1024,8192,65536", (1024, 8192, 65536, 0)),
                                          ("32K,512K,32M,8", (32 * KIB, 512 * KIB, 32 * MIB, 8))])
def test_env_override_is_read_at_start(value, sizes):
    first, second = _run_with_env(value, ENV_CODE).split("\n")[:2]
    fields = first.split()
    assert fields[0] == "FASTRNN_CACHE_SIZES" and tuple(map(int, fields[1:5])) == sizes
    isa = _core.get_isa()  # the subprocess starts on the same (best) path unless FASTRNN_ISA says otherwise
    if "FASTRNN_ISA" not in os.environ:
        assert tuple(map(int, fields[5:9])) == twin_blocking(isa, *sizes)
    assert fields[9] == "''" and second == "ok"


@pytest.mark.parametrize("value, why", [("abc", "field 1"), ("32K,512K", "expected l1d,l2,l3"),
                                        ("0,512K,32M", "l1d and l2 must be > 0"), ("32K,-5,1M", "field 2"),
                                        ("1,2,3,4,5", "more than 4 fields"), ("32K,512K,1M,9999", "<= 4096"),
                                        ("32Q,1,1", "field 1")])
def test_bad_env_override_is_ignored_and_said(value, why):
    first, second = _run_with_env(value, ENV_CODE).split("\n")[:2]
    assert not first.startswith("FASTRNN_CACHE_SIZES")  # the machine's caches
    assert f"FASTRNN_CACHE_SIZES='{value}' ignored" in first and why in first
    assert second == "ok"
    info = _run_with_env(value, "import fastrnn; fastrnn.info()")
    assert "ignored" in next(ln for ln in info.splitlines() if "GEMM blocks:" in ln)


def test_info_reports_the_blocking(capsys, caches):
    data = fastrnn.info()
    b = backend.gemm_blocking()
    assert data["gemm_blocking"] == b
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "GEMM blocks:" in ln)
    assert line.split("GEMM blocks:")[1].strip() == backend._blocking_line(b)
    assert f"KC {b['kc']}, MC {b['mc']}, NC {b['nc']}, MC_L2 {b['mc_l2']}" in line and f"tile {b['mr']}x{b['nr']}" in line
    assert f"row split up to {b['rowsplit_max_bytes'] / MIB:g} MiB of W_hh" in line
    caches(*TINY)
    data = fastrnn.info()
    assert data["gemm_blocking"]["kc"] == twin_blocking(backend.isa(), *TINY)[0] and "(set_gemm_caches caches)" in capsys.readouterr().out


def test_cli_info_prints_the_blocking():
    out = subprocess.run([sys.executable, "-m", "fastrnn", "info"], capture_output=True, text=True, check=True,
                         timeout=120).stdout
    b = backend.gemm_blocking()
    line = next(ln for ln in out.splitlines() if "GEMM blocks:" in ln)
    assert f"KC {b['kc']}, MC {b['mc']}, NC {b['nc']}" in line


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_l3_sets_the_row_split_and_never_the_results(isa, threads, caches, cell):
    """A batch of 4 row blocks at 2 threads, W_hh packed in 48-64 KiB: split by rows under the
    machine's L3, by hidden units under an L3 of 64 KiB (limit 32 KiB); forward and backward give
    the same bits either way (the time loops' results never depend on their split)."""
    from fastrnn import ops
    rng = np.random.default_rng(4)
    G, B, T, I, H = (4 if cell == "lstm" else 3), 32, 6, 5, 64
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    w_ih = (rng.standard_normal((G * H, I)) * 0.3).astype(np.float32)
    w_hh = (rng.standard_normal((G * H, H)) * 0.3).astype(np.float32)
    bs = [(rng.standard_normal(G * H) * 0.1).astype(np.float32) for _ in range(2 if cell == "gru" else 1)]
    dy = rng.standard_normal((B, T, H)).astype(np.float32)
    fw, bw = getattr(ops, f"{cell}_forward"), getattr(ops, f"{cell}_backward")
    threads(2)

    def run():
        y, _, cache = fw(x, w_ih, w_hh, *bs)
        return [y] + [g for g in bw(cache, dy).values() if g is not None]

    assert backend.gemm_blocking()["rowsplit_max_bytes"] >= 1 * MIB
    machine = run()
    caches(0, 0, 64 * KIB, 1)
    assert backend.gemm_blocking()["rowsplit_max_bytes"] == 32 * KIB
    small_l3 = run()
    for a, b in zip(machine, small_l3):
        np.testing.assert_array_equal(a, b)


# ---- products computed as C^T (csrc/cpu/gemm.h, gemm_transposes) --------------------------------


def twin_tile_work(isa, m, n):
    """csrc/cpu/gemm.h's tile_work, written again: a ragged last column panel costs a whole one, or
    a quarter of one where AVX-512's half-width kernel takes it (at most 8 columns)."""
    _, nr = TILES[isa]
    rem = n % nr
    cols = n - rem
    if rem:
        cols += nr / 4 if isa == "avx512" and rem <= 8 else nr
    return cols * m


def twin_transposes(isa, m, n, k, accumulate):
    """csrc/cpu/gemm.h's gemm_transposes, written again."""
    mr, nr = TILES[isa]
    if m < 4 * nr or n < 4 * mr or m * n > 1 << 25:
        return False
    saved = 1 - twin_tile_work(isa, n, m) / twin_tile_work(isa, m, n)
    if saved >= 0.05 and saved * k >= 48 * (2 if accumulate else 1):
        return True
    return not accumulate and k >= 2048 and m >= 4 * n and m * n >= 1 << 19


def test_transposed_choice_matches_its_twin(isa):
    dims = [1, 3, 17, 24, 40, 64, 75, 100, 129, 200, 256, 512, 700, 1030, 2048, 4096, 8192, 1 << 16]
    for M in dims:
        for N in dims:
            for K in (1, 63, 64, 300, 1000, 2047, 2048, 8192):
                for acc in (False, True):
                    assert _core.gemm_transposed(M, N, K, acc) == twin_transposes(isa, M, N, K, acc), (M, N, K, acc)


def test_transposed_choice_on_the_measured_shapes():
    """The shapes the rule was measured on (avx2): a text-sized recurrent layer's dW_ih and dx
    (100 inputs) run as C^T, the word-LM decoder's dx (work 0.97 of the plain one) does not."""
    if "avx2" not in backend.available_isas():
        pytest.skip("the avx2 path runs only on x86-64 CPUs with AVX2")
    before = _core.get_isa()
    _core.set_isa("avx2")
    try:
        assert _core.gemm_transposed(512, 100, 8192)
        assert _core.gemm_transposed(8192, 100, 512)
        assert not _core.gemm_transposed(8192, 100, 512, True)  # two passes over C: not paid for by K = 512
        assert not _core.gemm_transposed(700, 200, 18328)
        assert not _core.gemm_transposed(100, 512, 8192)  # already the better way round
        # an LSTM(1024)'s dW_ih, dW_hh and dx (50 x 64 positions, 512 inputs): C 4-8 times taller than wide
        assert _core.gemm_transposed(4096, 512, 3200) and _core.gemm_transposed(4096, 1024, 3200)
        assert _core.gemm_transposed(3200, 512, 4096)
        assert not _core.gemm_transposed(4096, 512, 3200, True)
        assert not _core.gemm_transposed(1024, 256, 6400)  # LSTM(256): measured mixed at 2 threads
    finally:
        _core.set_isa(before)


# (M, K, N): each is computed as C^T on at least one ISA path (N = 100 = 96 + 4 columns on AVX2
# and NEON, 75 = 64 + 11 on AVX-512, 17 on the scalar path's 2-column panels; with accumulation
# too), with ragged row tiles and K blocks
TRANSPOSED_SHAPES = [(512, 1000, 100), (131, 700, 75), (200, 1500, 100), (96, 1801, 17)]


@pytest.mark.parametrize("shape", TRANSPOSED_SHAPES, ids=str)
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("accumulate", [False, True])
def test_transposed_product_keeps_the_bits(isa, threads, shape, trans_a, trans_b, accumulate):
    """C = op(A) op(B) computed as C^T gives the bits of the same product asked for the other way
    round (C^T = op(B)^T op(A)^T, which runs plain), for any thread count, and matches float64."""
    M, K, N = shape
    rng = np.random.default_rng(M + K + N)
    A = rng.standard_normal((K, M) if trans_a else (M, K)).astype(np.float32)
    B = rng.standard_normal((N, K) if trans_b else (K, N)).astype(np.float32)
    C0 = rng.standard_normal((M, N)).astype(np.float32)
    results = []
    for nt in (1, 2):
        threads(nt)
        out = C0.copy()
        _core.dense_gemm(A, B, trans_a, trans_b, out=out, accumulate=accumulate)
        out_t = np.ascontiguousarray(C0.T)
        _core.dense_gemm(B, A, not trans_b, not trans_a, out=out_t, accumulate=accumulate)
        assert not _core.gemm_transposed(N, M, K, accumulate)
        np.testing.assert_array_equal(out, out_t.T)
        results.append(out)
    np.testing.assert_array_equal(results[0], results[1])
    want = (A.T if trans_a else A).astype(np.float64) @ (B.T if trans_b else B).astype(np.float64)
    if accumulate:
        want += C0
    assert np.max(np.abs(results[0] - want)) <= 1e-5 * np.sqrt(K) * (1 + np.max(np.abs(want)))


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
def test_tall_deep_product_runs_transposed_and_keeps_the_bits(isa, threads, trans_a, trans_b):
    """A deep product with C 8 times taller than wide (2^19 elements) runs as C^T on every path and
    gives the bits of the product asked for the other way round, for 1 and 2 threads."""
    M, K, N = 2048, 2048, 256
    assert _core.gemm_transposed(M, N, K) and not _core.gemm_transposed(N, M, K)
    rng = np.random.default_rng(5)
    A = rng.standard_normal((K, M) if trans_a else (M, K)).astype(np.float32)
    B = rng.standard_normal((N, K) if trans_b else (K, N)).astype(np.float32)
    results = []
    for nt in (1, 2):
        threads(nt)
        out = _core.dense_gemm(A, B, trans_a, trans_b)
        np.testing.assert_array_equal(out, _core.dense_gemm(B, A, not trans_b, not trans_a).T)
        results.append(out)
    np.testing.assert_array_equal(results[0], results[1])
    want = (A.T if trans_a else A).astype(np.float64) @ (B.T if trans_b else B).astype(np.float64)
    assert np.max(np.abs(results[0] - want)) <= 1e-5 * np.sqrt(K) * (1 + np.max(np.abs(want)))


def test_every_path_runs_some_shape_transposed(isa):
    assert any(_core.gemm_transposed(M, N, K) for M, K, N in TRANSPOSED_SHAPES)
    assert any(_core.gemm_transposed(M, N, K, True) for M, K, N in TRANSPOSED_SHAPES)


def test_large_transposed_product_frees_its_scratch():
    """A product run as C^T with C over 32 MiB frees its C-sized scratch after the call (the
    calling thread's GEMM scratch ends below the size of C) and is still right."""
    M, K, N = 5800, 2048, 1450  # C: 8.41 M floats, 4 times taller than wide
    rng = np.random.default_rng(9)
    A = rng.standard_normal((M, K)).astype(np.float32)
    B = rng.standard_normal((K, N)).astype(np.float32)
    before = _core.get_isa()
    ran = 0
    try:
        for isa in ("avx2", "avx512", "neon"):  # the vector paths (the scalar one is slow for this size)
            if isa not in backend.available_isas():
                continue
            _core.set_isa(isa)
            assert _core.gemm_transposed(M, N, K)
            _core.release_workspace()  # what earlier calls left on this thread, every path's
            C = _core.dense_gemm(A, B)
            assert _core.scratch_bytes() < 4 * M * N // 4  # the packing blocks only
            rows = [0, 1, 2899, M - 1]
            want = A[rows].astype(np.float64) @ B.astype(np.float64)
            assert np.max(np.abs(C[rows] - want)) <= 1e-5 * np.sqrt(K) * (1 + np.max(np.abs(want)))
            ran += 1
    finally:
        _core.set_isa(before)
    assert ran, "no vector path on this machine"


# ---- A read in place (csrc/cpu/gemm.h, gemm_a_in_place) -----------------------------------------


def twin_balanced_block(n, block, q):
    """csrc/cpu/blocking.h's balanced_block, written again."""
    parts = (n + block - 1) // block
    size = (n + parts - 1) // parts
    return min(block, (size + q - 1) // q * q)


def twin_a_in_place(isa, n, k):
    """csrc/cpu/gemm.h's gemm_a_in_place for a C-contiguous A, written again: on the AVX2 and
    AVX-512 paths, where the N columns of B fit at most two column blocks (of bl.nc columns, grown
    by KC / kc when the depth is shorter than KC) and N / NR column panels are fewer than kc / 8."""
    if isa not in ("avx2", "avx512") or n <= 0 or k <= 0:
        return False
    b = backend.gemm_blocking()
    nc = twin_column_block_max(k)
    blocks = -(-n // twin_balanced_block(n, nc, b["nr"]))
    return blocks <= 2 and 8 * n < b["nr"] * twin_balanced_block(k, b["kc"], 16)


def twin_column_block_max(k):
    """csrc/cpu/gemm.h's column_block_max, written again: bl.nc, grown by KC / kc for a depth K
    shorter than KC."""
    b = backend.gemm_blocking()
    nr = b["nr"]
    kcb = twin_balanced_block(k, b["kc"], 16)
    return max(min(16384 // nr * nr, b["nc"] * b["kc"] // kcb // nr * nr), b["nc"])


def test_a_in_place_choice_matches_its_twin(isa, caches):
    for sizes in ((0, 0, 0), (32 * KIB, 256 * KIB, 4 * MIB)):  # the machine's caches, and small ones
        caches(*sizes)
        for K in (1, 15, 100, 200, 511, 512, 513, 700, 1024, 4096, 18328):
            nc = twin_column_block_max(K)  # the edges: one block, two, three
            kcb = twin_balanced_block(K, backend.gemm_blocking()["kc"], 16)
            nr = backend.gemm_blocking()["nr"]
            edges = (nc, nc + 1, 2 * nc, 2 * nc + 1, -(-nr * kcb // 8) - 1, -(-nr * kcb // 8))
            for N in (1, 7, 8, 9, 16, 17, 100, 200, 257, 1000, 18328) + edges:
                assert _core.gemm_a_in_place(N, K) == twin_a_in_place(isa, N, K), (sizes, N, K)


def test_a_in_place_on_the_measured_shapes(caches):
    """With Zen 4's caches (32 KiB L1d, 1 MiB L2, 32 MiB L3): the word LM decoder's input gradient
    (N = 200 columns, depth 18,328) reads A in place on both vector paths (one column block on
    AVX-512, two on AVX2), as does an LSTM(256)'s dx (N = 256, depth 1,024); 512 columns at depth
    4,096 (three blocks on AVX2, measured slower in place), the decoder's 18,328-column forward
    product and a text layer's x projection (512 columns at depth 100) pack A; the scalar path
    always packs."""
    caches(32 * KIB, 1 * MIB, 32 * MIB, 2)
    before = _core.get_isa()
    try:
        for isa in ("avx512", "avx2"):
            if isa not in backend.available_isas():
                continue
            _core.set_isa(isa)
            assert _core.gemm_a_in_place(200, 18328) and _core.gemm_a_in_place(256, 1024)
            assert _core.gemm_a_in_place(16, 200)
            assert not _core.gemm_a_in_place(18328, 200)
            assert _core.gemm_a_in_place(512, 4096) == (isa == "avx512")
            assert not _core.gemm_a_in_place(512, 100)  # a text layer's x projection: many panels, short depth
        _core.set_isa("scalar")
        assert not _core.gemm_a_in_place(16, 200)
    finally:
        _core.set_isa(before)


# (M, K, N): ragged row tiles (M % MR), several KC blocks, and last column panels of every kind on
# the vector paths: whole (N = 64, 192), at most 8 columns (200 = 192 + 8 and 40 = 32 + 8,
# AVX-512's half-width kernel), more than 8 (75 = 64 + 11, 84 = 64 + 20; 100 = 96 + 4 on AVX2),
# and narrower than one panel (5). Under the small caches (column blocks of 16 columns on AVX2,
# 32 on AVX-512) 901 x 1,100 x 40 / 32 runs two column blocks over several row and depth blocks.
IN_PLACE_SHAPES = [(700, 1833, 200), (37, 1025, 75), (131, 700, 100), (9, 3000, 64), (64, 64, 5),
                   (130, 513, 192), (901, 1100, 40), (901, 1100, 32), (100, 1100, 84)]


@pytest.mark.parametrize("shape", IN_PLACE_SHAPES)
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("epilogue", ["plain", "accumulate", "bias_act", "colsum"])
@pytest.mark.parametrize("small_caches", [False, True])
def test_a_in_place_keeps_the_bits(isa, threads, caches, shape, trans_b, epilogue, small_caches):
    """C = A op(B) with a C-contiguous A (read in place where gemm_a_in_place says so) gives the
    bits of the same product with A stored transposed (trans_a: always packed) and with B in the
    other layout (so that a product run as C^T, whose A is op(B)^T, is also compared with a packed
    one), for 1 and 2 threads, with every epilogue, and matches float64; with the machine's caches
    and with small ones (two column blocks read in place, three and more packed)."""
    if small_caches:
        caches(32 * KIB, 64 * KIB, 1 * MIB, 1)
    M, K, N = shape
    rng = np.random.default_rng(M * 7 + K + N)
    A = rng.standard_normal((M, K)).astype(np.float32)
    At = np.ascontiguousarray(A.T)
    B = rng.standard_normal((N, K) if trans_b else (K, N)).astype(np.float32)
    Bo = np.ascontiguousarray(B.T)  # the same op(B) in the other layout
    C0 = rng.standard_normal((M, N)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    kw = {"plain": {}, "accumulate": {"accumulate": True}, "bias_act": {"bias": bias, "act": 2},
          "colsum": {}}[epilogue]
    results = []
    for nt in (1, 2):
        threads(nt)
        outs = []
        for a, trans_a, b, tb in ((A, False, B, trans_b), (At, True, B, trans_b), (A, False, Bo, not trans_b),
                                  (At, True, Bo, not trans_b)):
            out = C0.copy()
            cs = np.zeros(N, np.float32) if epilogue == "colsum" else None
            _core.dense_gemm(a, b, trans_a, tb, out=out, colsum_b=cs, **kw)
            outs.append((out, cs))
        for out, cs in outs[1:]:
            np.testing.assert_array_equal(outs[0][0], out)
            if epilogue == "colsum":
                np.testing.assert_array_equal(outs[0][1], cs)
        results.append(outs[0][0])
    np.testing.assert_array_equal(results[0], results[1])
    want = A.astype(np.float64) @ (B.T if trans_b else B).astype(np.float64)
    if epilogue == "accumulate":
        want += C0
    elif epilogue == "bias_act":
        want = np.tanh(want + bias)
    assert np.max(np.abs(results[0] - want)) <= 1e-5 * np.sqrt(K) * (1 + np.max(np.abs(want)))


def test_every_vector_path_reads_some_shape_in_place(isa, caches):
    vector = isa in ("avx2", "avx512")
    assert any(_core.gemm_a_in_place(N, K) for _, K, N in IN_PLACE_SHAPES) == vector
    caches(32 * KIB, 64 * KIB, 1 * MIB, 1)  # small column blocks: two blocks in place, more packed
    choices = {_core.gemm_a_in_place(N, K) for _, K, N in IN_PLACE_SHAPES}
    assert choices == ({True, False} if vector else {False})
