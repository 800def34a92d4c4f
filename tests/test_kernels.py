"""The C++ kernels (fastrnn.ops) against the float64 NumPy references, on every ISA path this
machine supports, for every cell, inference and training, masks, reverse, layouts and truncation,
on awkward sizes as well as round ones."""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastrnn
from _problems import base_name, forward_args, make_problem, spy_on_gemm
from fastrnn import _core, ops
from fastrnn import reference as ref

ISAS = _core.available_isas()
CELLS = ["rnn", "rnn_relu", "lstm", "gru"]
# (T, B, I, H): awkward (H, I not multiples of 16, B = 1, T = 1, I = 1) and round sizes. With two
# threads the time loops of (2, 45, 8, 129) split the batch rows (six row blocks, the last of 5
# rows), those of (3, 6, 8, 200) split the hidden units for LSTM and GRU (one row block).
SHAPES = [(1, 1, 1, 1), (4, 1, 3, 5), (6, 5, 17, 33), (3, 4, 16, 32), (5, 13, 40, 70), (2, 45, 8, 129),
          (3, 6, 8, 200)]
LAYOUTS = list(itertools.product([True, False], [False, True], [None, "lengths", "mask"]))


def _to64(v):
    return v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype == np.float32 else v


def _problem(cell, shape, batch_first, masking, seed=3):
    T, B, I, H = shape
    p = make_problem(cell, T, B, I, H, dtype=np.float32, seed=seed, batch_first=batch_first,
                     lengths="random" if masking else None)
    args, kw = forward_args(cell, p)
    if masking == "mask":  # an arbitrary (not right-padded) mask with the same density
        rng = np.random.default_rng(seed + 1)
        kw["lengths"] = None
        kw["mask"] = rng.random((B, T)) < 0.7
    return args, kw


def _close(got, want, what):
    scale = 1.0 + float(np.max(np.abs(want))) if want.size else 1.0
    err = float(np.max(np.abs(got.astype(np.float64) - want))) if want.size else 0.0
    assert err <= 3e-5 * scale, f"{what}: max abs error {err:.3g} (scale {scale:.3g})"


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}B{}I{}H{}".format(*s))
@pytest.mark.parametrize("batch_first,reverse,masking", LAYOUTS,
                         ids=lambda v: {True: "T", False: "F", None: "nomask"}.get(v, v) if not isinstance(v, bool) else str(v))
def test_kernels_match_reference(isa, cell, shape, batch_first, reverse, masking):
    name = base_name(cell)
    args, kw = _problem(cell, shape, batch_first, masking)
    kw.update(reverse=reverse, batch_first=batch_first)
    fwd_k, bwd_k = getattr(ops, name + "_forward"), getattr(ops, name + "_backward")
    fwd_r, bwd_r = getattr(ref, name + "_forward"), getattr(ref, name + "_backward")
    kw64 = {k: _to64(v) for k, v in kw.items()}
    y_r, s_r, c_r = fwd_r(*[_to64(a) for a in args], **kw64)

    # inference: nothing saved, same outputs
    y_i, s_i, c_i = fwd_k(*args, **kw, training=False)
    assert c_i is None
    _close(y_i, y_r, "y (inference)")

    y_k, s_k, c_k = fwd_k(*args, **kw)
    assert y_k.dtype == np.float32 and y_k.shape == y_r.shape
    np.testing.assert_array_equal(y_k, y_i)  # training and inference forward agree bit for bit
    _close(y_k, y_r, "y")
    for a, b_, nm in zip(s_k if name == "lstm" else (s_k,), s_r if name == "lstm" else (s_r,), ("h_n", "c_n")):
        _close(a, b_, nm)

    rng = np.random.default_rng(7)
    dy = rng.standard_normal(y_k.shape).astype(np.float32)
    B, H = y_k.shape[0] if batch_first else y_k.shape[1], y_k.shape[2]
    dh = rng.standard_normal((B, H)).astype(np.float32)
    dstate = (dh, rng.standard_normal((B, H)).astype(np.float32)) if name == "lstm" else dh
    dstate64 = tuple(_to64(d) for d in dstate) if name == "lstm" else _to64(dstate)
    T = shape[0]
    for k, with_dy, with_state in [(None, True, True), (1, True, False), (2, False, True), (3, True, True), (T, True, True)]:
        g_k = bwd_k(c_k, dy if with_dy else None, dstate=dstate if with_state else None, bptt_steps=k)
        g_r = bwd_r(c_r, _to64(dy) if with_dy else None, dstate=dstate64 if with_state else None, bptt_steps=k)
        assert set(g_k) == set(g_r)
        for key in g_r:
            assert g_k[key].shape == g_r[key].shape, key
            _close(g_k[key], g_r[key], f"grad {key} (bptt_steps={k}, dy={with_dy}, dstate={with_state})")


@pytest.mark.parametrize("cell", CELLS)
def test_masked_positions_are_zero_and_state_carries(isa, cell):
    name = base_name(cell)
    p = make_problem(cell, 6, 4, 3, 9, dtype=np.float32, seed=11, lengths=[6, 0, 3, 1])
    args, kw = forward_args(cell, p)
    y, state, _ = getattr(ops, name + "_forward")(*args, **kw)
    h_n = state[0] if name == "lstm" else state
    assert np.all(y[1] == 0) and np.all(y[2, 3:] == 0) and np.all(y[3, 1:] == 0)
    np.testing.assert_array_equal(h_n[1], p["h0"][1])  # length 0: the state is h0
    np.testing.assert_array_equal(h_n[2], y[2, 2])     # the state after the last valid step
    np.testing.assert_array_equal(h_n[3], y[3, 0])


# (T, B, I, H): one row block (B <= 8) -> the time loops split the hidden units (a barrier per
# step); six row blocks -> they split the batch rows (no barrier) at 2 and 3 threads.
@pytest.mark.parametrize("shape", [(7, 8, 30, 260), (16, 48, 12, 32)], ids=["split-units", "split-rows"])
def test_results_identical_across_thread_counts(shape):
    before = fastrnn.get_num_threads()
    try:
        for cell in ["lstm", "gru", "rnn"]:
            name = base_name(cell)
            p = make_problem(cell, *shape, dtype=np.float32, seed=5, lengths="random")
            args, kw = forward_args(cell, p)
            results = []
            for n in (1, 2, 3):
                fastrnn.set_num_threads(n)
                y, _, c = getattr(ops, name + "_forward")(*args, **kw)
                g = getattr(ops, name + "_backward")(c, np.ones_like(y), bptt_steps=3)
                results.append((y, g))
            for y, g in results[1:]:
                np.testing.assert_array_equal(y, results[0][0])
                for key in g:
                    np.testing.assert_array_equal(g[key], results[0][1][key], err_msg=key)
    finally:
        fastrnn.set_num_threads(before)


# The forward splits the batch rows at any row (it sums nothing over rows), at least a tile's rows
# per thread: with tiles of 6 rows, 20 rows go 10 + 10 at 2 threads and 6 + 7 + 7 at 3, 13 rows
# 6 + 7 at 2 and 3 threads; and it evens out its row tiles on AVX-512 (20 rows of LSTM: 5 + 5 + 5 +
# 5). Padded rows (lengths) change the tiles from step to step. Every thread count and every row
# alone must give the same bits.
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B", [13, 20])
def test_forward_row_split_and_tiles_keep_the_bits(isa, threads, cell, B):
    T, I, H = 8, 24, 70
    name = base_name(cell)
    p = make_problem(cell, T, B, I, H, dtype=np.float32, seed=3, lengths="random")
    p["lengths"][::2] = T
    args, kw = forward_args(cell, p)
    outs = []
    for n in (1, 2, 3):
        threads(n)
        y, state, _ = getattr(ops, name + "_forward")(*args, **kw)
        outs.append((y, state[0] if name == "lstm" else state))
    for n, (y, h) in zip((2, 3), outs[1:]):
        np.testing.assert_array_equal(y, outs[0][0], err_msg=f"{cell} B={B}, {n} threads: y")
        np.testing.assert_array_equal(h, outs[0][1], err_msg=f"{cell} B={B}, {n} threads: h_n")
    for b in (0, B // 2, B - 1):
        one = {k: (v[b:b + 1] if k in ("x", "h0", "c0", "lengths") and v is not None else v) for k, v in p.items()}
        args1, kw1 = forward_args(cell, one)
        y1, _, _ = getattr(ops, name + "_forward")(*args1, **kw1)
        np.testing.assert_array_equal(y1[0], outs[0][0][b], err_msg=f"{cell} row {b} alone")
    expected = getattr(ref, name + "_forward")(*args, **kw)[0]
    np.testing.assert_allclose(outs[0][0], expected, rtol=1e-4, atol=1e-4)


# B = 13 rows fall in the time loops' tiles of rows (every tile height, 1 to 8, occurs somewhere:
# AVX2 LSTM 6 + 6 + 1, GRU 4 + 4 + 4 + 1, AVX-512 LSTM 6 + 6 + 1, ...), and H = 37 ends in a
# partial panel; with lengths some steps compact the rows into other tiles. A row's results must
# not depend on its neighbours: each row run alone (a tile of one row) gives the same bits.
@pytest.mark.parametrize("cell", CELLS)
def test_rows_identical_in_every_tile_position(isa, threads, cell):
    T, B, I, H = 5, 13, 7, 37
    name = base_name(cell)
    p = make_problem(cell, T, B, I, H, dtype=np.float32, seed=11, lengths="random")
    p["lengths"][::3] = T  # some rows through every step
    for n in (1, 2):
        threads(n)
        args, kw = forward_args(cell, p)
        y, state, c = getattr(ops, name + "_forward")(*args, **kw)
        dy = np.linspace(-1.0, 1.0, y.size, dtype=np.float32).reshape(y.shape)
        g = getattr(ops, name + "_backward")(c, dy)
        for b in (0, 5, 6, 11, 12):
            one = {k: (v[b:b + 1] if k in ("x", "h0", "c0", "lengths") and v is not None else v)
                   for k, v in p.items()}
            args1, kw1 = forward_args(cell, one)
            y1, _, c1 = getattr(ops, name + "_forward")(*args1, **kw1)
            np.testing.assert_array_equal(y1[0], y[b], err_msg=f"{cell} row {b}, {n} threads: y")
            g1 = getattr(ops, name + "_backward")(c1, dy[b:b + 1])
            np.testing.assert_array_equal(g1["x"][0], g["x"][b], err_msg=f"{cell} row {b}: dx")
            np.testing.assert_array_equal(g1["h0"][0], g["h0"][b], err_msg=f"{cell} row {b}: dh0")


def test_concurrent_calls_from_python_threads_match_serial():
    problems = [make_problem(c, 9, 6, 12, 40, dtype=np.float32, seed=s, lengths="random")
                for s, c in enumerate(["lstm", "gru", "rnn", "lstm", "gru", "rnn"])]
    cells = ["lstm", "gru", "rnn", "lstm", "gru", "rnn"]

    def run(i):
        args, kw = forward_args(cells[i], problems[i])
        name = base_name(cells[i])
        y, _, c = getattr(ops, name + "_forward")(*args, **kw)
        return y, getattr(ops, name + "_backward")(c, y)

    serial = [run(i) for i in range(len(cells))]
    got = [None] * len(cells)
    errors = []

    def worker(i):
        try:
            for _ in range(5):
                got[i] = run(i)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(cells))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for (y0, g0), (y1, g1) in zip(serial, got):
        np.testing.assert_array_equal(y0, y1)
        for key in g0:
            np.testing.assert_array_equal(g0[key], g1[key])


# (M, K, N); N = 48 and 24 end in a last column panel one vector wide (AVX-512 and AVX2); M = 2100
# with N = 3 takes the small-N path in more than one block of rows; M = 251, K = 1030 spans three
# row blocks (the last one ragged) split over the threads and three blocks of K
@pytest.mark.parametrize("shape", [(1, 1, 1), (37, 53, 29), (130, 300, 257), (7, 1000, 65), (300, 2, 513), (50, 70, 3),
                                   (129, 300, 4), (37, 53, 48), (29, 70, 24), (2100, 40, 3),
                                   (251, 1030, 40)])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_matches_numpy(isa, shape, trans_a, trans_b):
    M, K, N = shape
    rng = np.random.default_rng(0)
    A = rng.standard_normal((K, M) if trans_a else (M, K)).astype(np.float32)
    B = rng.standard_normal((N, K) if trans_b else (K, N)).astype(np.float32)
    want = (A.T if trans_a else A).astype(np.float64) @ (B.T if trans_b else B).astype(np.float64)
    got = _core.gemm(A, B, trans_a, trans_b)
    assert got.shape == (M, N)
    err = np.max(np.abs(got - want))
    assert err <= 1e-5 * np.sqrt(K) * (1 + np.max(np.abs(want))), err


@pytest.mark.parametrize("a_shape,b_shape", [((37, 53), (53, 29)), ((4, 7, 33), (33, 65)), ((1, 1), (1, 1)),
                                             ((2, 3, 5, 17), (17, 3)), ((130, 300), (300, 257))])
@pytest.mark.parametrize("layout", ["c", "a_transposed", "b_transposed", "strided"])
def test_ops_matmul_matches_numpy_for_every_layout(isa, a_shape, b_shape, layout):
    rng = np.random.default_rng(1)
    a = rng.standard_normal(a_shape).astype(np.float32)
    b = rng.standard_normal(b_shape).astype(np.float32)
    if layout == "a_transposed":  # F-contiguous: a 2-D one goes in as a transposed operand
        a = np.asfortranarray(a)
    elif layout == "b_transposed":
        b = np.ascontiguousarray(b.T).T
    elif layout == "strided":  # neither C- nor F-contiguous: copied
        a = np.repeat(a, 2, axis=-1)[..., ::2]
        b = np.repeat(b, 2, axis=0)[::2]
    want = a.astype(np.float64) @ b.astype(np.float64)
    got = ops.matmul(a, b)
    assert got.dtype == np.float32 and got.shape == want.shape
    K = a_shape[-1]
    assert np.max(np.abs(got - want)) <= 1e-5 * np.sqrt(K) * (1 + np.max(np.abs(want)))


def test_ops_matmul_runs_fastrnn_gemm_for_float32_only(monkeypatch):
    calls = spy_on_gemm(monkeypatch)
    a = np.ones((3, 4), np.float32)
    b = np.ones((5, 4), np.float32)
    np.testing.assert_array_equal(ops.matmul(a, b.T), np.full((3, 5), 4.0, np.float32))
    assert calls == [[(3, 4), (5, 4), False, True]]  # b.T went in as a transposed operand, not copied
    at = np.asfortranarray(a)
    np.testing.assert_array_equal(ops.matmul(at, b.T), np.full((3, 5), 4.0, np.float32))
    assert calls[1] == [(4, 3), (5, 4), True, True]
    calls.clear()
    # numpy's @ for the rest: float64, 1-D, batched b, empty; its errors for shapes that do not fit
    for x, y in [(a.astype(np.float64), b.T.astype(np.float64)), (a, np.ones(4, np.float32)),
                 (a, np.ones((2, 4, 5), np.float32)), (np.ones((0, 4), np.float32), b.T)]:
        np.testing.assert_array_equal(ops.matmul(x, y), x @ y)
    assert not calls
    with pytest.raises(ValueError, match="mismatch"):
        ops.matmul(a, b)


def test_activation_accuracy(isa):
    x = np.concatenate([np.linspace(-30, 30, 200001), np.linspace(-1e-3, 1e-3, 2001)]).astype(np.float32)
    x64 = x.astype(np.float64)
    sig = _core.activation("sigmoid", x)
    tanh = _core.activation("tanh", x)
    assert np.max(np.abs(sig - 1 / (1 + np.exp(-x64)))) < 2e-7
    assert np.max(np.abs(tanh - np.tanh(x64))) < 5e-7
    assert np.max(np.abs(tanh)) <= 1.0  # so that 1 - tanh^2 never turns negative in backward
    assert np.max(np.abs(_core.activation("tanh", np.linspace(-100, 100, 400001).astype(np.float32)))) <= 1.0
    small = np.abs(x) < 1e-3
    assert np.max(np.abs(tanh[small] - np.tanh(x64[small])) / np.maximum(np.abs(x64[small]), 1e-30)) < 1e-6
    e = x[x < 85]
    assert np.max(np.abs(_core.activation("exp", e) / np.exp(e.astype(np.float64)) - 1)) < 3e-7
    special = np.array([np.nan, np.inf, -np.inf, 0.0], dtype=np.float32)
    s, t = _core.activation("sigmoid", special), _core.activation("tanh", special)
    assert np.isnan(s[0]) and s[1] == 1.0 and 0.0 <= s[2] <= 1e-38 and s[3] == 0.5
    assert np.isnan(t[0]) and t[1] == 1.0 and t[2] == -1.0 and t[3] == 0.0


def test_nan_padding_is_never_read():
    p = make_problem("gru", 5, 3, 4, 6, dtype=np.float32, seed=4, lengths=[5, 2, 0])
    clean, _ = forward_args("gru", p)
    p["x"][1, 2:] = np.nan
    p["x"][2] = np.inf
    dirty, kw = forward_args("gru", p)
    y0, h0, c0 = ops.gru_forward(*clean, **kw)
    y1, h1, c1 = ops.gru_forward(*dirty, **kw)
    np.testing.assert_array_equal(y0, y1)
    np.testing.assert_array_equal(h0, h1)
    g0, g1 = ops.gru_backward(c0, np.ones_like(y0)), ops.gru_backward(c1, np.ones_like(y1))
    for key in g0:
        np.testing.assert_array_equal(g0[key], g1[key], err_msg=key)


def test_nan_in_a_valid_step_propagates_only_in_its_row():
    p = make_problem("lstm", 5, 3, 4, 6, dtype=np.float32, seed=2)
    p["x"][1, 2, 0] = np.nan
    args, kw = forward_args("lstm", p)
    y, _, _ = ops.lstm_forward(*args, **kw)
    assert not np.isnan(y[1, :2]).any() and np.isnan(y[1, 2:]).all()
    assert not np.isnan(y[[0, 2]]).any()


def test_isa_detection_matches_cpuinfo():
    flags = set()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    assert "scalar" in ISAS
    if {"avx2", "fma"} <= flags:
        assert "avx2" in ISAS
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        assert "avx512" in ISAS
    forced = os.environ.get("FASTRNN_ISA")
    # the widest path is the default; FASTRNN_ISA forces another
    assert fastrnn.isa() == (forced if forced else ISAS[-1])


@pytest.mark.parametrize("name", ISAS)
def test_env_override_selects_the_path(name):
    code = "import fastrnn; print(fastrnn.isa())"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "FASTRNN_ISA": name},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == name


def test_set_isa_rejects_unknown_names():
    with pytest.raises(ValueError, match="expected one of 'scalar', 'avx2', 'avx512'"):
        fastrnn.set_isa("sse9")
    with pytest.raises(TypeError, match="str"):
        fastrnn.set_isa(3)


def test_results_correct_when_the_runtime_grants_fewer_threads():
    # OMP_DYNAMIC lets the OpenMP runtime give a team smaller than asked for: the partitions must
    # follow the team actually granted, or parts of the outputs are never written.
    code = """
import numpy as np, fastrnn
from fastrnn import ops, _core
rng = np.random.default_rng(0)
x = rng.standard_normal((8, 3, 16)).astype(np.float32)
w_ih = rng.standard_normal((512, 16)).astype(np.float32) * 0.1
w_hh = rng.standard_normal((512, 128)).astype(np.float32) * 0.1
b = np.zeros(512, np.float32)
for xb in (x, rng.standard_normal((32, 3, 16)).astype(np.float32)):  # time loops split by units, by rows
    out = []
    for n in (1, 2):
        fastrnn.set_num_threads(n)
        y, _, c = ops.lstm_forward(xb, w_ih, w_hh, b)
        g = ops.lstm_backward(c, y)
        out.append([y, *g.values()])
    for a, b2 in zip(*out):
        assert np.array_equal(a, b2)
A = np.ones((200, 100), np.float32); B = np.ones((100, 300), np.float32)
assert np.array_equal(_core.gemm(A, B), np.full((200, 300), 100.0, np.float32))
print("ok")
"""
    for env in ({"OMP_DYNAMIC": "true"}, {"OMP_THREAD_LIMIT": "1"}):
        proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0 and proc.stdout.strip() == "ok", (env, proc.stderr[-2000:])


@pytest.mark.parametrize("env,want", [({}, "3000"), ({"GOMP_SPINCOUNT": "77"}, "77"), ({"OMP_WAIT_POLICY": "active"}, "")])
def test_openmp_spin_default_is_short_and_user_settings_win(env, want):
    # idle kernel workers must not busy-wait for long after a call (they would compete with
    # NumPy's BLAS threads in code that alternates the two); a user's own setting is kept, and the
    # environment seen by other libraries and child processes is left as it was
    code = ("import os, fastrnn; from fastrnn import _core; "
            "print(repr(_core.gomp_spincount_at_load()), repr(os.environ.get('GOMP_SPINCOUNT')))")
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [repr(want), repr(env.get("GOMP_SPINCOUNT"))]


def test_set_num_threads_checks_its_argument():
    with pytest.raises(ValueError, match="set_num_threads: n must be <= "):
        fastrnn.set_num_threads(100_000)
    with pytest.raises(ValueError, match=">= 1"):
        fastrnn.set_num_threads(0)
    with pytest.raises(TypeError, match="positive int"):
        fastrnn.set_num_threads(2.0)



@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cell=st.sampled_from(CELLS), T=st.integers(1, 6), B=st.integers(1, 9), I=st.integers(1, 20),
       H=st.integers(1, 40), batch_first=st.booleans(), reverse=st.booleans(),
       masking=st.sampled_from([None, "lengths", "mask"]), k=st.sampled_from([None, 1, 2, 5]),
       isa_name=st.sampled_from(ISAS), seed=st.integers(0, 10_000))
def test_random_shapes_match_reference(cell, T, B, I, H, batch_first, reverse, masking, k, isa_name, seed):
    before = _core.get_isa()
    _core.set_isa(isa_name)
    try:
        name = base_name(cell)
        args, kw = _problem(cell, (T, B, I, H), batch_first, masking, seed=seed)
        kw.update(reverse=reverse, batch_first=batch_first)
        y_k, _, c_k = getattr(ops, name + "_forward")(*args, **kw)
        y_r, _, c_r = getattr(ref, name + "_forward")(*[_to64(a) for a in args], **{a: _to64(v) for a, v in kw.items()})
        _close(y_k, y_r, "y")
        dy = np.random.default_rng(seed).standard_normal(y_k.shape).astype(np.float32)
        g_k = getattr(ops, name + "_backward")(c_k, dy, bptt_steps=k)
        g_r = getattr(ref, name + "_backward")(c_r, _to64(dy), bptt_steps=k)
        for key in g_r:
            _close(g_k[key], g_r[key], f"grad {key}")
    finally:
        _core.set_isa(before)


def test_workspace_is_cached_per_thread_and_releasable():
    p = make_problem("gru", 5, 4, 6, 33, dtype=np.float32, seed=9, lengths="random")
    args, kw = forward_args("gru", p)
    y0, _, c0 = ops.gru_forward(*args, **kw)
    g0 = ops.gru_backward(c0, y0)
    assert _core.workspace_bytes() > 0
    _core.gemm(np.ones((300, 200), np.float32), np.ones((200, 100), np.float32))  # packs on this thread
    assert _core.scratch_bytes() > 0
    _core.release_workspace()
    assert _core.workspace_bytes() == 0
    assert _core.scratch_bytes() == 0
    big = make_problem("gru", 9, 17, 6, 70, dtype=np.float32, seed=1)
    ops.gru_forward(*forward_args("gru", big)[0])  # grows the buffer in between
    y1, _, c1 = ops.gru_forward(*args, **kw)
    g1 = ops.gru_backward(c1, y1)
    np.testing.assert_array_equal(y0, y1)
    for key in g0:
        np.testing.assert_array_equal(g0[key], g1[key], err_msg=key)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("density", [0.0, 0.3, 0.74, 0.9])
def test_masked_backward_compacts_rows_and_stays_deterministic(isa, threads, cell, density):
    """Padded batches (at most 3/4 of the positions valid) run the weight and input gradient GEMMs
    on the valid rows only: the gradients equal the reference's, dx is 0 at masked positions, and
    1 and 2 threads give the same bits (also with no valid position at all)."""
    T, B, I, H = 13, 9, 5, 19
    args, kw = _problem(cell, (T, B, I, H), True, "mask")
    kw["mask"] = np.random.default_rng(4).random((B, T)) < density
    name = base_name(cell)
    fwd_ops, bwd_ops = getattr(ops, f"{name}_forward"), getattr(ops, f"{name}_backward")
    fwd_ref, bwd_ref = getattr(ref, f"{name}_forward"), getattr(ref, f"{name}_backward")
    dy = np.random.default_rng(5).standard_normal((B, T, H)).astype(np.float32)
    runs = []
    for n in (1, 2):
        threads(n)
        _, _, cache = fwd_ops(*args, **kw)
        runs.append(bwd_ops(cache, dy))
    _, _, rcache = fwd_ref(*[_to64(v) for v in args], **{k: _to64(v) for k, v in kw.items()})
    want = bwd_ref(rcache, dy.astype(np.float64))
    for key, got in runs[0].items():
        if got is None:
            continue
        np.testing.assert_array_equal(got, runs[1][key], err_msg=key)
        _close(got, want[key], key)
    assert not runs[0]["x"][~kw["mask"]].any()
