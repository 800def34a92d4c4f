"""bf16 inference and quantized files: the bf16 rounding and its NumPy twin, the bf16 kernels
against the twin on every ISA path (the products bit for bit, VDPBF16PS and the widening
fallback), the layers made by fastrnn.quantize(m, "bf16"), the accuracy contract, and int8 / bf16
models saved and loaded in their quantized form."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import fastrnn as fr
from _quant_models import (
    CELLS,
    ISAS,
    PATHS,
    close,
    contract_model,
    forecaster_mse,
    model_on_every_path,
    step_streams,
)
from fastrnn import backend
from fastrnn import layers as L
from fastrnn.reference import quantized as Q


def _close_rounded(got, want):
    """Kernel against twin through a time loop: the gate maths differ within float32 tolerance, and
    where such a difference moves h across a bf16 rounding boundary the next step's product moves
    by one bf16 step of that h (2^-8 relative) times its weights, in every unit of that row from
    then on. So: most values within the float tolerance, none further than a few such steps
    (the sharp comparison is step by step, in test_bforward_matches_the_twin)."""
    err = np.abs(np.asarray(got, np.float64) - want)
    scale = 1 + np.abs(want).max(initial=0.0)
    assert err.max(initial=0.0) <= 2e-3 * scale, err.max()
    assert (err > 3e-5 * scale).mean() <= 0.1, (err > 3e-5 * scale).mean()


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# ------------------------------------------------------------------------------ the rounding
def test_round_bf16_rules():
    one = 0x3F80
    a = np.array([1.0, 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, 1.0 + 2.0 ** -8 + 2.0 ** -20, -2.5, 0.0, -0.0,
                  np.inf, -np.inf, np.nan, 3.4e38, 1e-39, -1e-39, 2.0 ** -126], np.float32)
    b = Q.round_bf16(a)
    assert b.dtype == np.uint16 and b.shape == a.shape
    assert b[0] == one and b[1] == one  # a tie goes to the even significand (1.0)
    assert b[2] == one + 2  # 1 + 3/256 is a tie between 1 + 2/128 and 1 + 1/128: to the even one
    assert b[3] == one + 1  # just above the tie: up
    assert Q.bf16_to_float32(b[4]) == -2.5
    assert b[5] == 0 and b[6] == 0x8000
    assert b[7] == 0x7F80 and b[8] == 0xFF80
    assert np.isnan(Q.bf16_to_float32(b[9]))
    assert b[10] == 0x7F80  # above the largest bf16 (about 3.39e38): rounds to infinity
    assert b[11] == 0 and b[12] == 0x8000  # denormals: zeros of their sign
    assert Q.bf16_to_float32(b[13]) == np.float32(2.0 ** -126)  # the smallest normal stays
    # a signalling NaN (payload in the low bits only) stays a NaN, never an infinity
    snan = np.array([0x7F800001, 0xFF800001], np.uint32).view(np.float32)
    assert np.isnan(Q.bf16_to_float32(Q.round_bf16(snan))).all()


def test_round_bf16_error_is_half_an_ulp():
    a = np.random.default_rng(0).standard_normal(100_000).astype(np.float32) * 10
    back = Q.bf16_to_float32(Q.round_bf16(a)).astype(np.float64)
    rel = np.abs(back - a) / np.abs(a)
    assert rel.max() <= 2.0 ** -8 and rel.max() > 2.0 ** -9  # u = 2^-8 for 8 significant bits, reached
    np.testing.assert_array_equal(Q.round_bf16(back.astype(np.float32)), Q.round_bf16(a))  # idempotent


# ------------------------------------------------------------------------------ the kernels (twin)
def _row_specials(a):
    """Values in the first 16 columns that exercise the kernels' rounding: ties, denormals, +-0."""
    K = a.shape[1]
    vals = [1.0 + 2.0 ** -8, -(1.0 + 3 * 2.0 ** -8), 1e-39, -0.0, 2.0 ** -126, 0.75 + 2.0 ** -9, 3.0, -1.0]
    for j, v in enumerate(vals[:K]):
        a[0, j] = v
    return a


@pytest.mark.parametrize("path", PATHS, indirect=True)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("M, N, K", [(1, 1, 1), (3, 17, 5), (7, 33, 9), (2, 5, 16), (64, 40, 130), (5, 3, 1000),
                                     (130, 70, 64), (1, 100, 33)])
def test_bgemm_equals_the_twin_bit_for_bit(path, threads, M, N, K):
    rng = np.random.default_rng(M * 1000 + N + K)
    a = _row_specials((rng.standard_normal((M, K)) * rng.uniform(0.1, 10, (M, 1))).astype(np.float32))
    wb = Q.round_bf16(rng.standard_normal((N, K)).astype(np.float32))
    b = rng.standard_normal(N).astype(np.float32)
    core = backend.core()
    fr.set_num_threads(threads)
    try:
        packed = core.bpack(wb, core.qgemm_nv(), 0)
        np.testing.assert_array_equal(core.bgemm(a, packed, b), Q.bmatmul(a, wb, b))
        np.testing.assert_array_equal(core.bgemm(a, packed, None), Q.bmatmul(a, wb))
    finally:
        fr.set_num_threads(backend.default_num_threads())


def test_bmatmul_order_matters():
    """The twin's pair order (odd element first) is a choice the kernels must share: the other order
    gives other float32 sums on random data, so the bit-for-bit test above could fail."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((64, 64)).astype(np.float32) * 100
    wb = Q.round_bf16(rng.standard_normal((48, 64)).astype(np.float32))
    av, wv = Q.bf16_to_float32(Q.round_bf16(a)), Q.bf16_to_float32(wb)
    even_first = np.zeros((64, 48), np.float32)
    for k in range(0, 64, 2):
        even_first = even_first + av[:, k, None] * wv[None, :, k]
        even_first = even_first + av[:, k + 1, None] * wv[None, :, k + 1]
    assert not np.array_equal(even_first, Q.bmatmul(a, wb))


@pytest.mark.parametrize("path", PATHS, indirect=True)
def test_bgemm_nonfinite_rows(path):
    rng = np.random.default_rng(5)
    wb = Q.round_bf16(rng.standard_normal((9, 20)).astype(np.float32))
    a = rng.standard_normal((4, 20)).astype(np.float32)
    a[1] = 0
    a[2, 3] = np.nan
    a[3, 17] = -np.inf
    core = backend.core()
    got = core.bgemm(a, core.bpack(wb, core.qgemm_nv(), 0), None)
    want = Q.bmatmul(a, wb)
    np.testing.assert_array_equal(got[1], 0)
    assert np.isnan(got[2]).all() and not np.isfinite(got[3]).any()  # never a silent finite answer
    np.testing.assert_array_equal(got, want)



def _bf16_problem(rng, cell, G, T, B, I, H):
    """x [B, T, I], bf16-exact weights, biases and initial states of a recurrent layer."""
    x = rng.uniform(-1, 1, (B, T, I)).astype(np.float32)
    wi = Q.round_bf16((rng.standard_normal((G * H, I)) * 0.4).astype(np.float32))
    wh = Q.round_bf16((rng.standard_normal((G * H, H)) * 0.4).astype(np.float32))
    bi = rng.uniform(-0.5, 0.5, G * H).astype(np.float32)
    bh = rng.uniform(-0.5, 0.5, G * H).astype(np.float32) if cell == "gru" else None
    h0 = rng.uniform(-0.5, 0.5, (B, H)).astype(np.float32)
    c0 = rng.uniform(-0.5, 0.5, (B, H)).astype(np.float32) if cell == "lstm" else None
    return x, wi, wh, bi, bh, h0, c0


@pytest.mark.parametrize("path", PATHS, indirect=True)
@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("cell, cid, G", [CELLS[2], CELLS[3]])
# long enough that the loop projects x in several chunks of steps (qforward_loop.h: QX_CHUNK_FLOATS),
# the last one shorter; B = 16 splits two threads by rows, B = 1 by hidden units
@pytest.mark.parametrize("T, B, I, H", [(37, 16, 5, 200), (70, 1, 3, 600)])
def test_bforward_chunks_threads_and_layouts(path, nthreads, cell, cid, G, T, B, I, H):
    """The bf16 loop over several x-projection chunks: the whole sequence equal to the chained
    one-step calls bit for bit, and the same bits time-major and for 1 and 2 threads."""
    rng = np.random.default_rng(T * 1000 + B)
    x, wi, wh, bi, bh, h0, c0 = _bf16_problem(rng, cell, G, T, B, I, H)
    mask = rng.random((B, T)) < 0.6
    mask[0] = True
    core = backend.core()
    pi, ph = core.bpack(wi, G, H), core.bpack(wh, G, H)
    xt = np.ascontiguousarray(x.transpose(1, 0, 2))
    fr.set_num_threads(nthreads)
    try:
        for m, reverse in ((None, False), (mask, True)):
            mu = None if m is None else m.astype(np.uint8)
            y, hn, cn = core.bforward(cid, x, pi, ph, bi, bh, h0, c0, mu, reverse, True)
            h, c, ys = h0, c0, np.zeros_like(y)
            for t in (range(T - 1, -1, -1) if reverse else range(T)):
                mt = None if mu is None else np.ascontiguousarray(mu[:, t:t + 1])
                yk, h, c = core.bforward(cid, np.ascontiguousarray(x[:, t:t + 1]), pi, ph, bi, bh, h, c, mt,
                                         False, True)
                ys[:, t] = yk[:, 0]
            np.testing.assert_array_equal(y, ys)
            np.testing.assert_array_equal(hn, h)
            y2, hn2, _ = core.bforward(cid, xt, pi, ph, bi, bh, h0, c0, mu, reverse, False)
            np.testing.assert_array_equal(y2, y.transpose(1, 0, 2))
            np.testing.assert_array_equal(hn2, hn)
            fr.set_num_threads(3 - nthreads)
            y3, hn3, _ = core.bforward(cid, x, pi, ph, bi, bh, h0, c0, mu, reverse, True)
            fr.set_num_threads(nthreads)
            np.testing.assert_array_equal(y3, y)
            np.testing.assert_array_equal(hn3, hn)
    finally:
        fr.set_num_threads(backend.default_num_threads())


@pytest.mark.parametrize("path", PATHS, indirect=True)
@pytest.mark.parametrize("cell, cid, G", CELLS)
# the last two are large enough for two threads: split by hidden units (B = 9) and by rows (B = 16)
@pytest.mark.parametrize("T, B, I, H", [(1, 1, 1, 1), (5, 3, 7, 17), (9, 4, 33, 20), (3, 11, 16, 64),
                                        (4, 9, 20, 161), (3, 16, 5, 200)])
@pytest.mark.parametrize("threads", [1, 2])
def test_bforward_matches_the_twin(path, cell, cid, G, T, B, I, H, threads):
    rng = np.random.default_rng(T * 100 + H)
    x, wi, wh, bi, bh, h0, c0 = _bf16_problem(rng, cell, G, T, B, I, H)
    mask = rng.random((B, T)) < 0.7
    core = backend.core()
    pi, ph = core.bpack(wi, G, H), core.bpack(wh, G, H)
    fr.set_num_threads(threads)
    try:
        for m, reverse in ((None, False), (mask, True), (mask, False)):
            y, hn, cn = core.bforward(cid, x, pi, ph, bi, bh, h0, c0, None if m is None else m.astype(np.uint8),
                                      reverse, True)
            # one step at a time from the kernel's own states: the twin's step within the float
            # tolerance (the same rounded h in both, so the same products), and the whole sequence
            # equal to the chained steps bit for bit
            h, c, ys = h0, c0, np.zeros_like(y)
            for t in (range(T - 1, -1, -1) if reverse else range(T)):
                mt = None if m is None else m[:, t:t + 1]
                yk, hk, ck = core.bforward(cid, np.ascontiguousarray(x[:, t:t + 1]), pi, ph, bi, bh, h, c,
                                           None if mt is None else mt.astype(np.uint8), False, True)
                yr, hr, cr = Q.bforward(cell, x[:, t:t + 1], wi, wh, bi, bh, h, c, mt)
                close(yk, yr)
                close(hk, hr)
                if cell == "lstm":
                    close(ck, cr)
                ys[:, t], h, c = yk[:, 0], hk, ck
            np.testing.assert_array_equal(y, ys)
            np.testing.assert_array_equal(hn, h)
            if cell == "lstm":
                np.testing.assert_array_equal(cn, c)
            # and the whole twin, through the rare bf16 rounding boundaries that h crosses differently
            yr, hr, cr = Q.bforward(cell, x, wi, wh, bi, bh, h0, c0, m, reverse)
            for got, want in ((y, yr), (hn, hr)) + (((cn, cr),) if cell == "lstm" else ()):
                _close_rounded(got, want)
    finally:
        fr.set_num_threads(backend.default_num_threads())


def test_bf16_dispatch_follows_the_cpu():
    """VDPBF16PS runs exactly where cpuid reports AVX512-BF16, and never on another path."""
    core = backend.core()
    before = backend.isa()
    try:
        for isa in ISAS:
            backend.set_isa(isa)
            want = "avx512-bf16" if isa == "avx512" and "avx512_bf16" in _cpu_flags() else isa
            assert core.bpath() == want
            core.set_bf16dot_allowed(False)
            assert core.bpath() == isa
            core.set_bf16dot_allowed(True)
    finally:
        backend.set_isa(before)


@pytest.mark.parametrize("isa", ["scalar", "avx2"])
def test_fallback_selected_by_the_environment(isa):
    """FASTRNN_ISA picks the fallback in a fresh process; its products equal the twin's."""
    if isa not in ISAS:
        pytest.skip(f"{isa} is not a path of this CPU")  # scalar always is; avx2 on any x86-64 of the last decade
    code = ("import numpy as np, fastrnn as fr\n"
            "from fastrnn.reference import quantized as Q\n"
            "core = fr.backend.core()\n"
            "rng = np.random.default_rng(3)\n"
            "a = rng.standard_normal((9, 37)).astype(np.float32)\n"
            "wb = Q.round_bf16(rng.standard_normal((21, 37)).astype(np.float32))\n"
            "got = core.bgemm(a, core.bpack(wb, core.qgemm_nv(), 0), None)\n"
            "print(core.bpath(), bool(np.array_equal(got, Q.bmatmul(a, wb))))\n")
    env = dict(os.environ, FASTRNN_ISA=isa)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [isa, "True"]


def test_packed_bf16_weights_are_checked():
    core = backend.core()
    wb = Q.round_bf16(np.ones((4, 3), np.float32))
    packed = core.bpack(wb, 1, 0)
    other = ("scalar" if packed[0] != "scalar" else "avx2",) + tuple(packed[1:])
    with pytest.raises(ValueError, match="packed for the .* path"):
        core.bgemm(np.ones((2, 3), np.float32), other, None)
    with pytest.raises(ValueError, match="a: expected shape"):
        core.bgemm(np.ones((2, 4), np.float32), packed, None)
    with pytest.raises(ValueError, match="C-contiguous uint32"):
        core.bgemm(np.ones((2, 3), np.float32), (packed[0], packed[1].astype(np.int32), *packed[2:]), None)
    with pytest.raises(ValueError, match="wrong size"):
        core.bgemm(np.ones((2, 3), np.float32), (packed[0], packed[1][:-1].copy(), *packed[2:]), None)
    with pytest.raises(ValueError, match="packed bf16 weight tuple"):
        core.bgemm(np.ones((2, 3), np.float32), core.qpack(*Q.quantize_rows(np.ones((4, 3), np.float32)), 1, 0), None)
    with pytest.raises(TypeError):  # float weights are not bf16 bits
        core.bpack(np.ones((4, 3), np.float32), 1, 0)
    with pytest.raises(ValueError, match="hg: expected 0"):
        core.bpack(wb, 3, 1)


# ---------------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("K", [1, 7, 128, 1000])
def test_product_error_bound(K):
    """|bmatmul - a w^T| <= (2u + u^2 + K 2^-24 (1 + u)^2) sum|a||w|, u = 2^-8 (two bf16 roundings, K float32 sums)."""
    rng = np.random.default_rng(K)
    a = (rng.standard_normal((50, K)) * rng.uniform(0.01, 100, (50, 1))).astype(np.float32)
    w = (rng.standard_normal((30, K)) * rng.uniform(0.01, 1, (30, 1))).astype(np.float32)
    err = np.abs(Q.bmatmul(a, Q.round_bf16(w)).astype(np.float64) - a.astype(np.float64) @ w.T.astype(np.float64))
    u = 2.0 ** -8
    exact = np.abs(a).astype(np.float64) @ np.abs(w.T).astype(np.float64)
    assert (err <= (2 * u + u * u + K * 2.0 ** -24 * (1 + u) ** 2) * exact).all()
    assert (err > 0).any()  # the bound is not vacuous: there is rounding error
    # and bf16 is the more precise mode: its products' error is below int8's on the same data
    wq, ws = Q.quantize_rows(w)
    err8 = np.abs(Q.qmatmul(a, wq, ws).astype(np.float64) - a.astype(np.float64) @ w.T.astype(np.float64))
    if K > 1:
        assert err.mean() < err8.mean()



# max / mean absolute output error of the 2-layer, 23-step models below (tanh outputs), bf16 against
# float32. Measured over 4 seeds: LSTM <= 0.00072 / 0.00021, GRU <= 0.0015 / 0.00041,
# SimpleRNN <= 0.012 / 0.0027 (about a third of int8's: tests/test_quantization.py).
BOUNDS = {"lstm": (1.5e-3, 5e-4), "gru": (3e-3, 8e-4), "rnn": (2.5e-2, 5e-3)}


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_bf16_model_is_close_to_the_float_one(cell):
    m = contract_model(cell)
    x = np.random.default_rng(3).uniform(-1, 1, (16, 23, 12)).astype(np.float32)
    q = fr.quantize(m, "bf16")
    y, yq = m.predict(x), q.predict(x)
    err = np.abs(y - yq)
    assert 0 < err.max() < BOUNDS[cell][0] and err.mean() < BOUNDS[cell][1], (err.max(), err.mean())
    assert [type(lay).__name__ for lay in q.layers][1:] == [f"Bf16{type(m.layers[1]).__name__}", "Bidirectional",
                                                           "Bf16Dense"]
    assert type(q.layers[2].forward_layer).__name__.startswith("Bf16")
    assert err.mean() < np.abs(y - fr.quantize(m).predict(x)).mean()  # closer than int8
    np.testing.assert_array_equal(m.predict(x), y)  # the original is untouched


def test_bf16_layers_compute_the_twin():
    m = fr.quantize(contract_model("lstm"), "bf16")
    lstm = m.layers[1]
    x = np.random.default_rng(4).uniform(-1, 1, (3, 9, 12)).astype(np.float32)
    q = lstm.quantized_weights()
    assert q["w_ih"][0].dtype == np.uint16 and q["w_ih"][0].shape == (128, 12)
    yr, _, _ = Q.bforward("lstm", x, q["w_ih"][0], q["w_hh"][0], lstm.b.value)
    close(lstm(x), yr)
    dense = m.layers[-1]
    h = np.random.default_rng(5).standard_normal((7, 34)).astype(np.float32)
    (kb,) = dense.quantized_weights()["kernel"]
    assert kb.shape == (5, 34)  # [output, input] rows; the parameter keeps Keras's [in, units]
    assert dense.kernel.value.shape == (34, 5) and dense.kernel.value.dtype == np.uint16
    np.testing.assert_array_equal(dense(h), np.tanh(Q.bmatmul(h, kb, dense.bias.value)))
    with pytest.raises(ValueError, match="a bf16 layer has no int8 weights"):
        dense.int8_weights()


def test_trained_model_keeps_its_accuracy():
    """A SimpleRNN forecaster trained briefly on a noisy sine: bf16 MSE within 1 % of float32's."""
    f32, q = forecaster_mse("bf16")
    assert f32 < 0.05  # it learned something (noise variance 0.01)
    assert abs(q - f32) <= 0.01 * f32, (f32, q)


@pytest.mark.parametrize("isa", ISAS)
def test_bf16_model_on_every_path_and_after_a_switch(isa):
    model_on_every_path("bf16", isa)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_model_step_streams_the_bf16_model(cell):
    step_streams("bf16", cell)


def test_bf16_errors():
    q = fr.quantize(contract_model("lstm"), "bf16")
    x = np.zeros((2, 3, 12), np.float32)
    with pytest.raises(ValueError, match="bf16 layers compute inference only"):
        q.layers[1](x, training=True)
    q.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="bf16 layers compute inference only"):
        q.fit(x, np.zeros((2, 5), np.float32), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="float64; bf16 quantization takes float32"):
        fr.quantize(fr.Sequential([L.Input((3, 2)), L.LSTM(4, dtype="float64")]), "bf16")
    with pytest.raises(ValueError, match=r"quantize: Sequential is quantized already \(bf16\); quantize the float"):
        fr.quantize(q, "int8")
    with pytest.raises(ValueError, match="mode: expected one of 'int8', 'bf16'"):
        fr.quantize(contract_model("gru"), "fp16")
    with pytest.raises(ValueError, match="export: Bf16LSTM 'lstm.*' holds bf16 weights"):
        fr.onnx.export(q, "never-written.onnx")
    assert not os.path.exists("never-written.onnx")


# ------------------------------------------------------------------ quantized models in files
def _saved_weights(path):
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read("model.json"))["weights"]


@pytest.mark.parametrize("mode", ["int8", "bf16"])
def test_file_holds_the_quantized_form(tmp_path, mode):
    m = contract_model("lstm")
    q = fr.quantize(m, mode)
    x = np.random.default_rng(7).uniform(-1, 1, (3, 6, 12)).astype(np.float32)
    q.save(tmp_path / "q.fastrnn")
    m.save(tmp_path / "f.fastrnn")
    saved = {w["name"]: w["dtype"] for w in _saved_weights(tmp_path / "q.fastrnn")}
    matrix = "int8" if mode == "int8" else "uint16"
    for name in ("lstm/w_ih", "lstm/w_hh", "forward_lstm/w_ih", "backward_lstm/w_hh", "dense/kernel"):
        key = next(k for k in saved if k.endswith(name.split("/")[1]) and name.split("/")[0] in k)
        assert saved[key] == matrix, (key, saved[key])
    assert all(v == "float32" for k, v in saved.items() if not k.endswith(("w_ih", "w_hh", "kernel")))
    assert (any(k.endswith("_scale") for k in saved)) == (mode == "int8")
    assert os.path.getsize(tmp_path / "q.fastrnn") < 0.7 * os.path.getsize(tmp_path / "f.fastrnn")
    r = fr.load_model(tmp_path / "q.fastrnn")
    assert [type(lay).__name__ for lay in r.layers] == [type(lay).__name__ for lay in q.layers]
    np.testing.assert_array_equal(r.predict(x), q.predict(x))
    for a, b in zip(r.get_weights(), q.get_weights()):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode", ["int8", "bf16"])
def test_load_does_not_quantize_again(tmp_path, mode):
    """Stored values come back as they were: int8 rows short of +-127, which quantizing no float
    matrix gives (quantize_rows always reaches +-127), and new bf16 bits set after quantizing."""
    q = fr.quantize(contract_model("gru"), mode)
    gru = q.layers[1]
    w = gru.get_weights()
    rng = np.random.default_rng(9)
    if mode == "int8":
        w[0] = rng.integers(-60, 61, w[0].shape).astype(np.int8)  # quantize_rows always reaches +-127
        w[1] = rng.uniform(0.001, 0.01, w[1].shape).astype(np.float32)
    else:
        w[0] = Q.round_bf16(rng.standard_normal(w[0].shape).astype(np.float32) * 0.3)
    gru.set_weights(w)
    x = np.random.default_rng(10).uniform(-1, 1, (2, 5, 12)).astype(np.float32)
    want = q.predict(x)
    q.save(tmp_path / "q.fastrnn")
    r = fr.load_model(tmp_path / "q.fastrnn")
    for a, b in zip(r.layers[1].get_weights(), w):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(r.predict(x), want)


def test_set_weights_repacks_and_checks_dtypes():
    q = fr.quantize(contract_model("lstm"), "bf16")
    x = np.random.default_rng(11).uniform(-1, 1, (2, 4, 12)).astype(np.float32)
    dense = q.layers[-1]
    before = q.predict(x)
    w = dense.get_weights()
    w[0] = Q.round_bf16(-Q.bf16_to_float32(w[0]))  # negated kernel: the outputs change
    dense.set_weights(w)
    after = q.predict(x)
    assert not np.allclose(after, before)
    with pytest.raises(TypeError, match="parameter 'dense.*/kernel': expected a uint16 array"):
        dense.set_weights([Q.bf16_to_float32(w[0]), w[1]])
    np.testing.assert_array_equal(q.predict(x), after)  # the refused call changed nothing


def test_mismatched_files_are_refused(tmp_path):
    m = contract_model("lstm")
    fr.quantize(m, "int8").save_weights(tmp_path / "i8.fastrnn")
    m.save_weights(tmp_path / "f32.fastrnn")
    fr.quantize(m, "bf16").save(tmp_path / "b16.fastrnn")
    b16 = fr.quantize(m, "bf16")
    with pytest.raises(ValueError, match="weight 'lstm.*/w_ih' has dtype float32 but the model's parameter"):
        b16.load_weights(tmp_path / "f32.fastrnn")  # same count and shapes: only the dtype tells
    with pytest.raises(ValueError, match="holds 18 weight arrays but model .* has 11 parameters"):
        b16.load_weights(tmp_path / "i8.fastrnn")
    i8 = fr.quantize(m, "int8")
    with pytest.raises(ValueError, match="holds 11 weight arrays but model .* has 18 parameters"):
        i8.load_weights(tmp_path / "b16.fastrnn")
    # a truncated file
    data = (tmp_path / "b16.fastrnn").read_bytes()
    (tmp_path / "cut.fastrnn").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.fastrnn"):
        fr.load_model(tmp_path / "cut.fastrnn")


def test_summary_shows_mode_and_bytes():
    m = contract_model("gru")
    q8, qb = fr.quantize(m, "int8"), fr.quantize(m, "bf16")
    texts = {k: mod.summary(print_fn=lambda s: None) for k, mod in (("f32", m), ("int8", q8), ("bf16", qb))}
    nbytes = {k: sum(p.value.nbytes for p in mod.parameters()) for k, mod in (("f32", m), ("int8", q8), ("bf16", qb))}
    assert nbytes["int8"] < nbytes["bf16"] < nbytes["f32"]
    for k, text in texts.items():
        assert f"({nbytes[k] / 1024:.2f} KB)" in text
    assert "Quantized layers: 4 int8 (inference only)" in texts["int8"]  # gru, 2 inside Bidirectional, dense
    assert "Quantized layers: 4 bf16 (inference only)" in texts["bf16"]
    assert "Quantized" not in texts["f32"]
    assert "(Bf16GRU)" in texts["bf16"] and "(Int8Dense)" in texts["int8"]
