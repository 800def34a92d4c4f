"""The NumPy references against torch.nn.RNN / LSTM / GRU with copied weights.

Proves the conventions (PyTorch weight layouts and gate orders, one LSTM / SimpleRNN bias = torch
b_ih + b_hh, the two GRU biases, lengths = packed sequences, reverse = the reverse half of a
bidirectional module, truncated BPTT = chunks with the carried state detached) on outputs, final
states and every gradient, in float64 and float32.
"""
import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from _problems import base_name
from fastrnn import reference as R

CELLS = ["rnn", "rnn_relu", "lstm", "gru"]
G = {"rnn": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}
TOL = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=1e-5, atol=1e-5)}
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}


# --------------------------------------------------------------------------- helpers

def params(cell, I, H, rng, dtype):
    """Random weights of one direction in fastrnn's form."""
    g = G[cell]

    def u(*shape):
        return rng.uniform(-0.5, 0.5, size=shape).astype(dtype)

    p = {"w_ih": u(g * H, I), "w_hh": u(g * H, H)}
    if cell == "gru":
        p["b_ih"], p["b_hh"] = u(g * H), u(g * H)
    else:
        p["b"] = u(g * H)
    return p


def torch_module(cell, I, H, dtype, batch_first, dirs):
    """A torch module whose direction d gets dirs[d]'s weights (one LSTM/RNN bias: b_ih=b, b_hh=0)."""
    kw = dict(batch_first=batch_first, bidirectional=len(dirs) == 2)
    if cell == "lstm":
        mod = torch.nn.LSTM(I, H, **kw)
    elif cell == "gru":
        mod = torch.nn.GRU(I, H, **kw)
    else:
        mod = torch.nn.RNN(I, H, nonlinearity="relu" if cell == "rnn_relu" else "tanh", **kw)
    mod = mod.to(TORCH_DTYPE[dtype])
    with torch.no_grad():
        for d, p in enumerate(dirs):
            sfx = "_l0" + ("_reverse" if d == 1 else "")
            getattr(mod, "weight_ih" + sfx).copy_(torch.from_numpy(p["w_ih"]))
            getattr(mod, "weight_hh" + sfx).copy_(torch.from_numpy(p["w_hh"]))
            if cell == "gru":
                getattr(mod, "bias_ih" + sfx).copy_(torch.from_numpy(p["b_ih"]))
                getattr(mod, "bias_hh" + sfx).copy_(torch.from_numpy(p["b_hh"]))
            else:
                getattr(mod, "bias_ih" + sfx).copy_(torch.from_numpy(p["b"]))
                getattr(mod, "bias_hh" + sfx).zero_()
    return mod


def torch_grads(cell, mod, d):
    """Direction d's parameter gradients from a torch module, in fastrnn's names."""
    sfx = "_l0" + ("_reverse" if d == 1 else "")
    out = {"w_ih": getattr(mod, "weight_ih" + sfx).grad, "w_hh": getattr(mod, "weight_hh" + sfx).grad}
    if cell == "gru":
        out["b_ih"] = getattr(mod, "bias_ih" + sfx).grad
        out["b_hh"] = getattr(mod, "bias_hh" + sfx).grad
    else:
        # b = b_ih + b_hh: both torch biases receive the same gradient, which is b's
        gi, gh = getattr(mod, "bias_ih" + sfx).grad, getattr(mod, "bias_hh" + sfx).grad
        torch.testing.assert_close(gi, gh, rtol=1e-5, atol=1e-5)
        out["b"] = gi
    return {k: v.numpy() for k, v in out.items()}


def ref_forward(cell, x, p, h0, c0, **kw):
    """(y, h_n, c_n, cache) from the reference."""
    base = base_name(cell)
    if base == "lstm":
        y, (h, c), cache = R.lstm_forward(x, p["w_ih"], p["w_hh"], p["b"], h0=h0, c0=c0, **kw)
        return y, h, c, cache
    if base == "gru":
        y, h, cache = R.gru_forward(x, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], h0=h0, **kw)
        return y, h, None, cache
    y, h, cache = R.rnn_forward(x, p["w_ih"], p["w_hh"], p["b"], h0=h0,
                                nonlinearity="relu" if cell == "rnn_relu" else "tanh", **kw)
    return y, h, None, cache


def ref_backward(cell, cache, dy, dh, dc, bptt_steps=None):
    base = base_name(cell)
    dstate = (dh, dc) if base == "lstm" else dh
    return getattr(R, f"{base}_backward")(cache, dy, dstate=dstate, bptt_steps=bptt_steps)


def close(a, b, dtype, what):
    if isinstance(b, torch.Tensor):
        b = b.detach().numpy()
    np.testing.assert_allclose(a, b, err_msg=what, **TOL[dtype])


def random_lengths(rng, B, T):
    lens = rng.integers(1, T + 1, size=B)   # torch's packed sequences need lengths >= 1
    lens[rng.integers(0, B)] = T
    return lens.astype(np.int64)


def run_torch(mod, x_t, h0_t, c0_t, lengths, batch_first, T):
    """torch forward with optional packing; returns (y, h_n, c_n or None)."""
    hx = (h0_t, c0_t) if c0_t is not None else h0_t
    if lengths is None:
        y, hn = mod(x_t, hx)
    else:
        packed = pack_padded_sequence(x_t, torch.from_numpy(lengths), batch_first=batch_first,
                                      enforce_sorted=False)
        y, hn = mod(packed, hx)
        y, _ = pad_packed_sequence(y, batch_first=batch_first, total_length=T)
    if isinstance(hn, tuple):
        return y, hn[0], hn[1]
    return y, hn, None


# --------------------------------------------------------------------------- one direction

@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("batch_first", [True, False], ids=["bf", "tm"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell", CELLS)
def test_forward_and_gradients_match_torch(cell, dtype, batch_first, with_lengths):
    T, B, I, H = 6, 4, 5, 3
    rng = np.random.default_rng(10 + CELLS.index(cell))
    p = params(cell, I, H, rng, dtype)
    x = rng.uniform(-1, 1, size=(B, T, I) if batch_first else (T, B, I)).astype(dtype)
    h0 = rng.uniform(-0.5, 0.5, size=(B, H)).astype(dtype)
    c0 = rng.uniform(-0.5, 0.5, size=(B, H)).astype(dtype) if cell == "lstm" else None
    lengths = random_lengths(rng, B, T) if with_lengths else None
    R1 = rng.normal(size=(B, T, H) if batch_first else (T, B, H)).astype(dtype)
    R2 = rng.normal(size=(B, H)).astype(dtype)
    R3 = rng.normal(size=(B, H)).astype(dtype) if cell == "lstm" else None

    mod = torch_module(cell, I, H, dtype, batch_first, [p])
    x_t = torch.from_numpy(x.copy()).requires_grad_()
    h0_t = torch.from_numpy(h0[None].copy()).requires_grad_()
    c0_t = torch.from_numpy(c0[None].copy()).requires_grad_() if c0 is not None else None
    y_t, h_t, c_t = run_torch(mod, x_t, h0_t, c0_t, lengths, batch_first, T)
    loss = (y_t * torch.from_numpy(R1)).sum() + (h_t[0] * torch.from_numpy(R2)).sum()
    if c_t is not None:
        loss = loss + (c_t[0] * torch.from_numpy(R3)).sum()
    loss.backward()

    y, h, c, cache = ref_forward(cell, x, p, h0, c0, lengths=lengths, batch_first=batch_first)
    assert y.dtype == dtype
    close(y, y_t, dtype, "y")
    close(h, h_t[0], dtype, "h_n")
    if c is not None:
        close(c, c_t[0], dtype, "c_n")
    g = ref_backward(cell, cache, R1, R2, R3)
    close(g["x"], x_t.grad, dtype, "dx")
    close(g["h0"], h0_t.grad[0], dtype, "dh0")
    if c0 is not None:
        close(g["c0"], c0_t.grad[0], dtype, "dc0")
    for name, val in torch_grads(cell, mod, 0).items():
        close(g[name], val, dtype, "d" + name)


# --------------------------------------------------------------------------- both directions

@pytest.mark.parametrize("batch_first", [True, False], ids=["bf", "tm"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell", CELLS)
def test_reverse_matches_torch_bidirectional(cell, dtype, batch_first):
    """reverse=True with lengths equals the reverse half of a bidirectional torch module."""
    T, B, I, H = 7, 4, 3, 4
    rng = np.random.default_rng(50 + CELLS.index(cell))
    dirs = [params(cell, I, H, rng, dtype), params(cell, I, H, rng, dtype)]
    x = rng.uniform(-1, 1, size=(B, T, I) if batch_first else (T, B, I)).astype(dtype)
    h0 = rng.uniform(-0.5, 0.5, size=(2, B, H)).astype(dtype)
    c0 = rng.uniform(-0.5, 0.5, size=(2, B, H)).astype(dtype) if cell == "lstm" else None
    lengths = random_lengths(rng, B, T)
    R1 = rng.normal(size=(B, T, 2 * H) if batch_first else (T, B, 2 * H)).astype(dtype)
    R2 = rng.normal(size=(2, B, H)).astype(dtype)
    R3 = rng.normal(size=(2, B, H)).astype(dtype) if cell == "lstm" else None

    mod = torch_module(cell, I, H, dtype, batch_first, dirs)
    x_t = torch.from_numpy(x.copy()).requires_grad_()
    h0_t = torch.from_numpy(h0.copy()).requires_grad_()
    c0_t = torch.from_numpy(c0.copy()).requires_grad_() if c0 is not None else None
    y_t, h_t, c_t = run_torch(mod, x_t, h0_t, c0_t, lengths, batch_first, T)
    loss = (y_t * torch.from_numpy(R1)).sum() + (h_t * torch.from_numpy(R2)).sum()
    if c_t is not None:
        loss = loss + (c_t * torch.from_numpy(R3)).sum()
    loss.backward()

    dx = 0
    for d, reverse in enumerate((False, True)):
        y, h, c, cache = ref_forward(cell, x, dirs[d], h0[d], None if c0 is None else c0[d],
                                     lengths=lengths, reverse=reverse, batch_first=batch_first)
        half = slice(d * H, (d + 1) * H)
        close(y, y_t[..., half], dtype, f"y direction {d}")
        close(h, h_t[d], dtype, f"h_n direction {d}")
        if c is not None:
            close(c, c_t[d], dtype, f"c_n direction {d}")
        g = ref_backward(cell, cache, np.ascontiguousarray(R1[..., half]), R2[d],
                         None if R3 is None else R3[d])
        dx = dx + g["x"]
        close(g["h0"], h0_t.grad[d], dtype, f"dh0 direction {d}")
        if c0 is not None:
            close(g["c0"], c0_t.grad[d], dtype, f"dc0 direction {d}")
        for name, val in torch_grads(cell, mod, d).items():
            close(g[name], val, dtype, f"d{name} direction {d}")
    close(dx, x_t.grad, dtype, "dx (both directions)")


# --------------------------------------------------------------------------- truncated BPTT

@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell", CELLS)
def test_truncated_bptt_matches_torch_detached_chunks(cell, dtype, k, reverse):
    """bptt_steps=k equals torch trained chunk by chunk with the carried state detached.

    reverse=True is compared with torch run forward over the time-flipped sequence.
    """
    T, B, I, H = 7, 3, 4, 3
    rng = np.random.default_rng(100 + 7 * CELLS.index(cell) + k)
    p = params(cell, I, H, rng, dtype)
    x = rng.uniform(-1, 1, size=(B, T, I)).astype(dtype)
    h0 = rng.uniform(-0.5, 0.5, size=(B, H)).astype(dtype)
    c0 = rng.uniform(-0.5, 0.5, size=(B, H)).astype(dtype) if cell == "lstm" else None
    R1 = rng.normal(size=(B, T, H)).astype(dtype)
    R2 = rng.normal(size=(B, H)).astype(dtype)
    R3 = rng.normal(size=(B, H)).astype(dtype) if cell == "lstm" else None

    # torch: processing order = time order of x_proc (x flipped in time for reverse)
    flip = (lambda a: a[:, ::-1].copy()) if reverse else (lambda a: a)
    x_proc, R1_proc = flip(x), flip(R1)
    mod = torch_module(cell, I, H, dtype, True, [p])
    x_t = torch.from_numpy(x_proc.copy()).requires_grad_()
    h0_t = torch.from_numpy(h0[None].copy()).requires_grad_()
    c0_t = torch.from_numpy(c0[None].copy()).requires_grad_() if c0 is not None else None
    h_state, c_state = h0_t, c0_t
    total = 0
    ys = []
    for lo in range(0, T, k):
        hi = min(lo + k, T)
        hx = (h_state, c_state) if c_state is not None else h_state
        y_c, hn = mod(x_t[:, lo:hi], hx)
        h_c, c_c = hn if isinstance(hn, tuple) else (hn, None)
        total = total + (y_c * torch.from_numpy(R1_proc[:, lo:hi].copy())).sum()
        if hi == T:
            total = total + (h_c[0] * torch.from_numpy(R2)).sum()
            if c_c is not None:
                total = total + (c_c[0] * torch.from_numpy(R3)).sum()
        ys.append(y_c.detach())
        h_state = h_c.detach()
        c_state = c_c.detach() if c_c is not None else None
    total.backward()
    y_proc = torch.cat(ys, dim=1).numpy()

    y, h, c, cache = ref_forward(cell, x, p, h0, c0, reverse=reverse)
    close(flip(y), y_proc, dtype, "y")
    close(h, h_state[0], dtype, "h_n")
    if c is not None:
        close(c, c_state[0], dtype, "c_n")
    g = ref_backward(cell, cache, R1, R2, R3, bptt_steps=k)
    close(flip(g["x"]), x_t.grad, dtype, "dx")
    close(g["h0"], h0_t.grad[0], dtype, "dh0")
    if c0 is not None:
        close(g["c0"], c0_t.grad[0], dtype, "dc0")
    for name, val in torch_grads(cell, mod, 0).items():
        close(g[name], val, dtype, "d" + name)
    # truncation made a difference (otherwise the test would not test it)
    full = ref_backward(cell, cache, R1, R2, R3)
    assert not np.allclose(full["w_hh"], g["w_hh"], **TOL[dtype])
