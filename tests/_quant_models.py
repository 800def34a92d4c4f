"""Helpers shared by the int8 and bf16 tests (test_quantization.py, test_bf16.py): the small
models of the accuracy contracts and the trained forecaster."""
from __future__ import annotations

import numpy as np

import fastrnn as fr
from fastrnn import backend
from fastrnn import layers as L

ISAS = backend.available_isas()
# the AVX-512 path runs VNNI (int8) and VDPBF16PS (bf16) where the CPU has them; "avx512-novnni"
# forces its AVX-512 BW int8 product, "avx512-nodot" its widening bf16 product
PATHS = [*ISAS, *(["avx512-novnni", "avx512-nodot"] if "avx512" in ISAS else [])]
CELLS = [("rnn_tanh", 0, 1), ("rnn_relu", 1, 1), ("lstm", 2, 4), ("gru", 3, 3)]


def close(got, want, tol=3e-5):
    """Max |got - want| within ``tol`` relative to 1 + max |want|."""
    err = np.abs(np.asarray(got, np.float64) - want).max(initial=0.0)
    assert err <= tol * (1 + np.abs(want).max(initial=0.0)), err


def contract_model(cell, rng_seed=0):
    """Input(12) -> cell(32, sequences) -> Bidirectional(cell(17)) -> Dense(5, tanh)."""
    fr.set_seed(rng_seed)
    rnn = {"lstm": L.LSTM, "gru": L.GRU, "rnn": L.SimpleRNN}[cell]
    return fr.Sequential([L.Input((None, 12)), rnn(32, return_sequences=True), L.Bidirectional(rnn(17)),
                          L.Dense(5, activation="tanh")])


def model_on_every_path(mode, isa):
    """A quantized GRU contract model predicts the same after switching to ``isa`` (packed again)."""
    m = fr.quantize(contract_model("gru"), mode)
    x = np.random.default_rng(6).uniform(-1, 1, (4, 8, 12)).astype(np.float32)
    before = backend.isa()
    want = m.predict(x)
    try:
        backend.set_isa(isa)
        close(m.predict(x), want, 1e-4)
    finally:
        backend.set_isa(before)


def step_streams(mode, cell):
    """model.step on a quantized stack (tokens in, Dense out) equals predict step by step."""
    fr.set_seed(2)
    rnn = {"lstm": L.LSTM, "gru": L.GRU, "rnn": L.SimpleRNN}[cell]
    m = fr.Sequential([L.Embedding(30, 8, mask_zero=True), rnn(16, return_sequences=True), rnn(12), L.Dense(3)])
    ids = np.random.default_rng(8).integers(1, 30, (4, 7))
    ids[1, 5:] = 0
    m.predict(ids)
    q = fr.quantize(m, mode)
    states = None
    for t in range(ids.shape[1]):
        y_t, states = q.step(ids[:, t], states)
        close(y_t, q.predict(ids[:, :t + 1]))


def forecaster_mse(mode):
    """Test MSE of a SimpleRNN forecaster trained briefly on a noisy sine: (float32, ``mode``)."""
    rng = np.random.default_rng(0)
    t = np.arange(3000, dtype=np.float32)
    series = np.sin(t / 10) + 0.1 * rng.standard_normal(t.size).astype(np.float32)
    win = 30
    idx = np.arange(len(series) - win - 1)
    x = np.stack([series[i:i + win] for i in idx])[..., None]
    y = series[idx + win][:, None]
    fr.set_seed(1)
    m = fr.Sequential([L.Input((win, 1)), L.SimpleRNN(24, return_sequences=True), L.SimpleRNN(24), L.Dense(1)])
    m.compile(optimizer="adam", loss="mse")
    m.fit(x[:2000], y[:2000], epochs=3, batch_size=64, verbose=0)
    f32 = float(np.mean((m.predict(x[2000:]) - y[2000:]) ** 2))
    q = float(np.mean((fr.quantize(m, mode).predict(x[2000:]) - y[2000:]) ** 2))
    return f32, q
