"""int8 inference: the quantizer and its NumPy twin, the int8 kernels against the twin on every ISA
path (the products bit for bit), the layers made by fastrnn.quantize, the accuracy contract, and
the errors."""
from __future__ import annotations

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


# --------------------------------------------------------------------------------- the quantizer
def test_quantize_rows_rules():
    a = np.array([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5], [np.nan, 1.0, 2.0], [np.inf, 1.0, 0.0],
                  [1e-30, -1e-30, 0.0], [127.0, 0.5, 1.5]], np.float32)
    q, s = Q.quantize_rows(a)
    assert q.dtype == np.int8 and s.dtype == np.float32
    np.testing.assert_array_equal(q[0], 0)
    assert s[0] == 0
    np.testing.assert_array_equal(q[1], [64, -127, 32])  # 1 * 63.5 = 63.5 -> 64 (half to even), 0.5 * 63.5 = 31.75
    assert s[1] == np.float32(2) / np.float32(127)
    assert np.isnan(s[2]) and np.isnan(s[3])  # a row with a NaN / inf: NaN scale, so NaN results
    np.testing.assert_array_equal(q[4], [127, -127, 0])
    np.testing.assert_array_equal(q[5], [127, 0, 2])  # 0.5 -> 0 and 1.5 -> 2: half to even


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (40, 1000)])
def test_quantize_rows_error_is_half_a_step(shape):
    a = np.random.default_rng(1).standard_normal(shape).astype(np.float32) * 3
    q, s = Q.quantize_rows(a)
    assert np.abs(q).max() == 127 and (np.abs(q) == 127).any(axis=1).all()  # every row reaches +-127
    err = np.abs(q * s[:, None].astype(np.float64) - a)
    assert (err <= s[:, None] * 0.5 * (1 + 1e-6)).all()


# ------------------------------------------------------------------------------ the kernels (twin)
@pytest.mark.parametrize("path", PATHS, indirect=True)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("M, N, K", [(1, 1, 1), (3, 17, 5), (7, 33, 9), (64, 40, 130), (5, 3, 1000), (130, 70, 64),
                                     (1, 100, 4)])
def test_qgemm_equals_the_twin_bit_for_bit(path, threads, M, N, K):
    rng = np.random.default_rng(M * 1000 + N + K)
    a = (rng.standard_normal((M, K)) * rng.uniform(0.1, 10, (M, 1))).astype(np.float32)
    a[0, 0] = 0.5 * (np.abs(a[0]).max())  # a value at a rounding tie after scaling is likely somewhere
    wq, ws = Q.quantize_rows(rng.standard_normal((N, K)).astype(np.float32))
    b = rng.standard_normal(N).astype(np.float32)
    core = backend.core()
    fr.set_num_threads(threads)
    try:
        packed = core.qpack(wq, ws, core.qgemm_nv(), 0)
        np.testing.assert_array_equal(core.qgemm(a, packed, b), Q.qmatmul(a, wq, ws, b))
        np.testing.assert_array_equal(core.qgemm(a, packed, None), Q.qmatmul(a, wq, ws))
    finally:
        fr.set_num_threads(backend.default_num_threads())


@pytest.mark.parametrize("path", PATHS, indirect=True)
def test_qgemm_zero_and_nonfinite_rows(path):
    rng = np.random.default_rng(5)
    wq, ws = Q.quantize_rows(rng.standard_normal((9, 6)).astype(np.float32))
    a = rng.standard_normal((4, 6)).astype(np.float32)
    a[1] = 0
    a[2, 3] = np.nan
    a[3, 0] = -np.inf
    core = backend.core()
    got = core.qgemm(a, core.qpack(wq, ws, core.qgemm_nv(), 0), None)
    np.testing.assert_array_equal(got[1], 0)
    assert np.isnan(got[2]).all() and np.isnan(got[3]).all()  # never a silent finite answer
    np.testing.assert_array_equal(got[0], Q.qmatmul(a[:1], wq, ws)[0])


def _cell_problem(rng, cell, G, T, B, I, H):
    """x [B, T, I], the int8 weights and scales, the biases and initial states of a random cell."""
    x = rng.uniform(-1, 1, (B, T, I)).astype(np.float32)
    qi, si = Q.quantize_rows((rng.standard_normal((G * H, I)) * 0.4).astype(np.float32))
    qh, sh = Q.quantize_rows((rng.standard_normal((G * H, H)) * 0.4).astype(np.float32))
    bi = rng.uniform(-0.5, 0.5, G * H).astype(np.float32)
    bh = rng.uniform(-0.5, 0.5, G * H).astype(np.float32) if cell == "gru" else None
    h0 = rng.uniform(-0.5, 0.5, (B, H)).astype(np.float32)
    c0 = rng.uniform(-0.5, 0.5, (B, H)).astype(np.float32) if cell == "lstm" else None
    return x, qi, si, qh, sh, bi, bh, h0, c0


@pytest.mark.parametrize("path", PATHS, indirect=True)
@pytest.mark.parametrize("cell, cid, G", CELLS)
# the last two are large enough for two threads: split by hidden units (B = 9) and by rows (B = 16)
@pytest.mark.parametrize("T, B, I, H", [(1, 1, 1, 1), (5, 3, 7, 17), (9, 4, 33, 20), (3, 11, 16, 64),
                                        (4, 9, 20, 161), (3, 16, 5, 200)])
def test_qforward_matches_the_twin(path, cell, cid, G, T, B, I, H):
    rng = np.random.default_rng(T * 100 + H)
    x, qi, si, qh, sh, bi, bh, h0, c0 = _cell_problem(rng, cell, G, T, B, I, H)
    mask = rng.random((B, T)) < 0.7
    core = backend.core()
    pi, ph = core.qpack(qi, si, G, H), core.qpack(qh, sh, G, H)
    for m, reverse in ((None, False), (mask, True), (mask, False)):
        y, hn, cn = core.qforward(cid, x, pi, ph, bi, bh, h0, c0, None if m is None else m.astype(np.uint8),
                                  reverse, True)
        yr, hr, cr = Q.qforward(cell, x, qi, si, qh, sh, bi, bh, h0, c0, m, reverse)
        close(y, yr)
        close(hn, hr)
        if cell == "lstm":
            close(cn, cr)


@pytest.mark.parametrize("path", PATHS, indirect=True)
@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("cell, cid, G", [CELLS[0], CELLS[2], CELLS[3]])
# long enough that the loop projects x in several chunks of steps (qforward_loop.h: QX_CHUNK_FLOATS),
# the last one shorter; B = 9 splits two threads by hidden units, B = 16 by rows; H = 1 .. 3 units
@pytest.mark.parametrize("T, B, I, H", [(13, 9, 20, 161), (37, 16, 5, 200), (70, 1, 3, 33), (29, 3, 1, 3)])
def test_qforward_chunks_threads_and_layouts(path, nthreads, threads, cell, cid, G, T, B, I, H):
    """The int8 loop's x projection in chunks: the twin's results for every chunking, direction,
    mask and memory layout, and the same bits for 1 and 2 threads and either layout."""
    threads(nthreads)
    rng = np.random.default_rng(T * 1000 + B)
    x, qi, si, qh, sh, bi, bh, h0, c0 = _cell_problem(rng, cell, G, T, B, I, H)
    mask = rng.random((B, T)) < 0.6
    mask[0] = True
    core = backend.core()
    pi, ph = core.qpack(qi, si, G, H), core.qpack(qh, sh, G, H)
    xt = np.ascontiguousarray(x.transpose(1, 0, 2))
    for m, reverse in ((None, False), (mask, True), (mask, False)):
        mu = None if m is None else m.astype(np.uint8)
        y, hn, cn = core.qforward(cid, x, pi, ph, bi, bh, h0, c0, mu, reverse, True)
        # step by step against the twin fed the kernel's own h: over many steps the last-bit
        # differences of the gate functions may flip a rounding of quant(h), which then propagates
        h, c = h0.copy(), c0
        for t in (range(T - 1, -1, -1) if reverse else range(T)):
            mt = None if m is None else m[:, t:t + 1]
            yr, hr, c = Q.qforward(cell, x[:, t:t + 1], qi, si, qh, sh, bi, bh, h, c, mt)
            close(y[:, t], yr[:, 0])
            valid = np.ones(B, bool) if m is None else m[:, t]
            h = np.where(valid[:, None], y[:, t], h)
        close(hn, h)
        if cell == "lstm":
            close(cn, c)
        # time-major input: the same bits, transposed
        y2, hn2, cn2 = core.qforward(cid, xt, pi, ph, bi, bh, h0, c0, mu, reverse, False)
        np.testing.assert_array_equal(y2, y.transpose(1, 0, 2))
        np.testing.assert_array_equal(hn2, hn)
        # and the same bits whatever the thread count
        threads(3 - nthreads)
        y3, hn3, _ = core.qforward(cid, x, pi, ph, bi, bh, h0, c0, mu, reverse, True)
        threads(nthreads)
        np.testing.assert_array_equal(y3, y)
        np.testing.assert_array_equal(hn3, hn)


def test_packed_weights_of_another_path_are_refused():
    core = backend.core()
    wq, ws = Q.quantize_rows(np.ones((4, 3), np.float32))
    packed = core.qpack(wq, ws, 1, 0)
    other = ("scalar" if packed[0] != "scalar" else "avx2",) + tuple(packed[1:])
    with pytest.raises(ValueError, match="packed for the .* path"):
        core.qgemm(np.ones((2, 3), np.float32), other, None)
    with pytest.raises(ValueError, match="a: expected shape"):
        core.qgemm(np.ones((2, 4), np.float32), packed, None)
    with pytest.raises(ValueError, match="C-contiguous int8"):
        core.qgemm(np.ones((2, 3), np.float32), (packed[0], packed[1].astype(np.int16), *packed[2:]), None)


# ---------------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("K", [1, 7, 128, 1000])
def test_product_error_bound(K):
    """|qmatmul - a w^T| <= s_w/2 sum|a| + s_a/2 sum|w| + K s_a s_w / 4 (+ float rounding)."""
    rng = np.random.default_rng(K)
    a = (rng.standard_normal((50, K)) * rng.uniform(0.01, 100, (50, 1))).astype(np.float32)
    w = (rng.standard_normal((30, K)) * rng.uniform(0.01, 1, (30, 1))).astype(np.float32)
    wq, ws = Q.quantize_rows(w)
    _, sa = Q.quantize_rows(a)
    err = np.abs(Q.qmatmul(a, wq, ws).astype(np.float64) - a.astype(np.float64) @ w.T.astype(np.float64))
    bound = (ws[None, :] / 2 * np.abs(a).sum(1)[:, None] + sa[:, None] / 2 * np.abs(w).sum(1)[None, :]
             + K * sa[:, None] * ws[None, :] / 4)
    exact = np.abs(a).astype(np.float64) @ np.abs(w.T).astype(np.float64)
    assert (err <= bound + 1e-6 * exact).all()
    assert (err > 0).any()  # the bound is not vacuous: there is quantization error



# max / mean absolute output error of the 2-layer, 23-step models below (tanh outputs): the gated
# cells damp the error, SimpleRNN (no gates, orthogonal W_hh) carries it along the sequence.
# Measured over 4 seeds: LSTM <= 0.0021 / 0.0006, GRU <= 0.0049 / 0.0012, SimpleRNN <= 0.029 / 0.0067.
BOUNDS = {"lstm": (5e-3, 1.5e-3), "gru": (1e-2, 3e-3), "rnn": (5e-2, 1.2e-2)}


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_quantized_model_is_close_to_the_float_one(cell):
    m = contract_model(cell)
    classes = [type(lay) for lay in m.layers]
    x = np.random.default_rng(3).uniform(-1, 1, (16, 23, 12)).astype(np.float32)
    q = fr.quantize(m)
    y, yq = m.predict(x), q.predict(x)
    err = np.abs(y - yq)
    assert 0 < err.max() < BOUNDS[cell][0] and err.mean() < BOUNDS[cell][1], (err.max(), err.mean())
    assert [type(lay).__name__ for lay in q.layers][1:] == [f"Int8{classes[1].__name__}", "Bidirectional", "Int8Dense"]
    assert type(q.layers[2].forward_layer).__name__.startswith("Int8")
    assert [type(lay) for lay in m.layers] == classes  # the original is untouched
    np.testing.assert_array_equal(m.predict(x), y)


def test_quantized_layers_compute_the_twin():
    m = fr.quantize(contract_model("lstm"))
    lstm = m.layers[1]
    x = np.random.default_rng(4).uniform(-1, 1, (3, 9, 12)).astype(np.float32)
    q = lstm.int8_weights()
    yr, _, _ = Q.qforward("lstm", x, *q["w_ih"], *q["w_hh"], lstm.b.value)
    close(lstm(x), yr)
    dense = m.layers[-1]
    h = np.random.default_rng(5).standard_normal((7, 34)).astype(np.float32)
    kq, ks = dense.int8_weights()["kernel"]
    np.testing.assert_array_equal(dense(h), np.tanh(Q.qmatmul(h, kq, ks, dense.bias.value)))


def test_trained_model_keeps_its_accuracy():
    """A SimpleRNN forecaster trained briefly on a noisy sine: int8 MSE within 5 % of float32's."""
    f32, q = forecaster_mse("int8")
    assert f32 < 0.05  # it learned something (noise variance 0.01)
    assert abs(q - f32) <= 0.05 * f32, (f32, q)


@pytest.mark.parametrize("isa", ISAS)
def test_quantized_model_on_every_path_and_after_a_switch(isa):
    model_on_every_path("int8", isa)


def test_save_load_and_step_api(tmp_path):
    m = fr.quantize(contract_model("lstm"))
    x = np.random.default_rng(7).uniform(-1, 1, (2, 6, 12)).astype(np.float32)
    m.save(tmp_path / "q.fastrnn")
    r = fr.load_model(tmp_path / "q.fastrnn")
    assert [type(lay).__name__ for lay in r.layers][1:] == ["Int8LSTM", "Bidirectional", "Int8Dense"]
    np.testing.assert_array_equal(r.predict(x), m.predict(x))
    lstm = m.layers[1]
    seq = lstm(x)
    states = None
    for t in range(x.shape[1]):
        out, states = lstm.step(x[:, t], states)
        close(out, seq[:, t])


def test_quantize_errors():
    with pytest.raises(ValueError, match="mode: expected one of 'int8'"):
        fr.quantize(contract_model("gru"), "int4")
    with pytest.raises(ValueError, match="is not built"):
        fr.quantize(fr.Sequential([L.LSTM(4), L.Dense(1)]))
    with pytest.raises(ValueError, match="float64; int8 quantization takes float32"):
        fr.quantize(fr.Sequential([L.Input((3, 2)), L.LSTM(4, dtype="float64")]))
    with pytest.raises(ValueError, match="no SimpleRNN, LSTM, GRU or Dense"):
        fr.quantize(fr.Sequential([L.Input((3, 2)), L.Flatten()]))
    q = fr.quantize(contract_model("lstm"))
    x = np.zeros((2, 3, 12), np.float32)
    with pytest.raises(ValueError, match="int8 layers compute inference only"):
        q.layers[1](x, training=True)
    with pytest.raises(ValueError, match="int8 layers compute inference only"):
        q.layers[-1](np.zeros((2, 34), np.float32), training=True)
    q.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="int8 layers compute inference only"):
        q.fit(x, np.zeros((2, 5), np.float32), epochs=1, verbose=0)


def test_inplace_and_single_layers():
    m = contract_model("rnn")
    same = fr.quantize(m, inplace=True)
    assert same is m and type(m.layers[1]).__name__ == "Int8SimpleRNN"
    d = L.Dense(3)
    d.build((5,))
    qd = fr.quantize(d)
    assert type(qd).__name__ == "Int8Dense" and type(d) is L.Dense
    np.testing.assert_allclose(qd(np.ones((2, 5), np.float32)), d(np.ones((2, 5), np.float32)), atol=0.05)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_model_step_streams_the_quantized_model(cell):
    """model.step on a quantized stack (tokens in, Dense out) equals predict step by step."""
    step_streams("int8", cell)
