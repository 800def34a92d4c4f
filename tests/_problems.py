"""Helpers shared by the tests: random problems (weights in PyTorch layouts, inputs, states,
masks) and central finite differences."""
from __future__ import annotations

import numpy as np

from fastrnn._cells import cell_spec

#: The test spellings of the cells ('rnn' is the tanh SimpleRNN) and their gate counts.
GATES = {name: cell_spec(name).gates for name in ("rnn", "rnn_relu", "lstm", "gru")}


def make_problem(cell, T, B, I, H, *, dtype=np.float64, seed=0, batch_first=True,
                 with_state=True, lengths=None, scale=0.5):
    """Arrays for one call of ``{cell}_forward``.

    cell: 'rnn', 'rnn_relu', 'lstm' or 'gru'. lengths: None, 'random' (each in [0, T], at least
    one equal to T) or an explicit sequence. Returns a dict with keys x, w_ih, w_hh, the biases
    (b, or b_ih and b_hh for GRU), h0 (and c0 for LSTM) when with_state, and lengths.
    """
    rng = np.random.default_rng(seed)
    G = GATES[cell]

    def u(*shape):
        return (rng.uniform(-scale, scale, size=shape)).astype(dtype)

    shape = (B, T, I) if batch_first else (T, B, I)
    p = {"x": u(*shape), "w_ih": u(G * H, I), "w_hh": u(G * H, H)}
    for name in cell_spec(cell).bias_names:
        p[name] = u(G * H)
    if with_state:
        p["h0"] = u(B, H)
        if cell_spec(cell).n_states == 2:
            p["c0"] = u(B, H)
    if isinstance(lengths, str) and lengths == "random":
        lens = rng.integers(0, T + 1, size=B)
        lens[rng.integers(0, B)] = T
        p["lengths"] = lens.astype(np.int64)
    elif lengths is not None:
        p["lengths"] = np.asarray(lengths, dtype=np.int64)
    else:
        p["lengths"] = None
    return p


def forward_args(cell, p):
    """(positional args, keyword args) for ``{base}_forward`` built from a problem dict."""
    if cell == "gru":
        args = (p["x"], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"])
    else:
        args = (p["x"], p["w_ih"], p["w_hh"], p["b"])
    kw = {"h0": p.get("h0"), "lengths": p.get("lengths")}
    if cell == "lstm":
        kw["c0"] = p.get("c0")
    if cell in ("rnn", "rnn_relu"):
        kw["nonlinearity"] = "relu" if cell == "rnn_relu" else "tanh"
    return args, kw


def base_name(cell):
    """'rnn_relu' -> 'rnn'; the function prefix in reference/ops."""
    return cell_spec(cell).base


def numgrad(f, a, eps=1e-6):
    """Central finite differences of the scalar f() w.r.t. every entry of a (mutated in place)."""
    g = np.zeros(a.shape, dtype=np.float64)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + eps
        fp = f()
        a[idx] = old - eps
        fm = f()
        a[idx] = old
        g[idx] = (fp - fm) / (2 * eps)
    return g


def spy_on_gemm(monkeypatch):
    """Route backend.core() through a wrapper that records each gemm call (and each dense_gemm
    call, the GEMM with a bias / activation epilogue) as [A.shape, B.shape, trans_a, trans_b, ...]
    and runs the real one; returns the list of calls."""
    from fastrnn import backend

    calls = []
    real = backend.core()

    class Spy:
        def gemm(self, *args):
            calls.append([x.shape for x in args[:2]] + list(args[2:]))
            return real.gemm(*args)

        def dense_gemm(self, *args):
            calls.append([x.shape for x in args[:2]] + list(args[2:4]))
            return real.dense_gemm(*args)

        def __getattr__(self, name):
            return getattr(real, name)

    monkeypatch.setattr(backend, "core", lambda: Spy())
    return calls
