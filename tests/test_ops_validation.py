"""Bad input to fastrnn.ops (and to the raw bindings) raises a clear exception naming the argument,
what was expected and what came; nothing crashes, nothing is silently computed."""
from __future__ import annotations

import numpy as np
import pytest

from _problems import forward_args, make_problem
from fastrnn import _core, ops


def _lstm(**over):
    p = make_problem("lstm", 4, 3, 5, 6, dtype=np.float32, seed=0)
    p.update(over)
    return p


def _call(p, **kw):
    args, base = forward_args("lstm", p)
    base.update(kw)
    return ops.lstm_forward(*args, **base)


@pytest.mark.parametrize("over,exc,pattern", [
    ({"x": np.zeros((3, 4), np.float32)}, ValueError, r"x must have rank 3.*got shape \[3, 4\]"),
    ({"x": np.zeros((3, 4, 5), np.float64)}, TypeError, r"x must have dtype float32 for the C\+\+ kernels, got float64"),
    ({"x": np.zeros((3, 4, 5), np.int32)}, TypeError, r"x must have dtype float32 or float64, got int32"),
    ({"x": [[[0.0] * 5] * 4] * 3}, TypeError, r"x must be a numpy or cupy array, got list"),
    ({"x": np.zeros((0, 4, 5), np.float32)}, ValueError, r"x must not be empty.*B=0"),
    ({"x": np.zeros((3, 0, 5), np.float32)}, ValueError, r"x must not be empty.*T=0"),
    ({"w_ih": np.zeros((24, 4), np.float32)}, ValueError, r"w_ih must have shape \[24, 5\], got \[24, 4\]"),
    ({"w_hh": np.zeros((18, 6), np.float32)}, ValueError, r"w_hh must have shape \[4\*H, H\].*got \[18, 6\]"),
    ({"w_hh": np.zeros((24, 6), np.float64)}, TypeError, r"w_hh must have dtype float32"),
    ({"b": np.zeros(23, np.float32)}, ValueError, r"b must have shape \[24\], got \[23\]"),
    ({"h0": np.zeros((2, 6), np.float32)}, ValueError, r"h0 must have shape \[3, 6\], got \[2, 6\]"),
    ({"c0": np.zeros((3, 7), np.float32)}, ValueError, r"c0 must have shape \[3, 6\], got \[3, 7\]"),
    ({"lengths": np.array([4, 5, 1])}, ValueError, r"lengths must be in \[0, T=4\], got a length of 5"),
    ({"lengths": np.array([4, -1, 1])}, ValueError, r"lengths must be in \[0, T=4\], got a length of -1"),
    ({"lengths": np.array([4, 1])}, ValueError, r"lengths must have shape \[3\].*got \[2\]"),
    ({"lengths": np.array([4.0, 1.0, 2.0])}, TypeError, r"lengths must be an integer array, got dtype float64"),
])
def test_forward_rejects(over, exc, pattern):
    with pytest.raises(exc, match=pattern):
        _call(_lstm(**over))


def test_mask_checks():
    p = _lstm()
    with pytest.raises(ValueError, match=r"mask must have shape \[B, T\] = \[3, 4\], got \[4, 3\]"):
        _call(p, mask=np.ones((4, 3), bool))
    with pytest.raises(ValueError, match="give lengths or mask, not both"):
        _call(p, mask=np.ones((3, 4), bool), lengths=[1, 2, 3])
    with pytest.raises(ValueError, match="only 0/1"):
        _call(p, mask=np.full((3, 4), 2))


def test_option_types():
    p = _lstm()
    with pytest.raises(TypeError, match="reverse must be a bool"):
        _call(p, reverse="yes")
    with pytest.raises(TypeError, match="batch_first must be a bool"):
        _call(p, batch_first=1)
    args, kw = forward_args("rnn", make_problem("rnn", 3, 2, 2, 4, dtype=np.float32))
    kw["nonlinearity"] = "sigmoid"
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"):
        ops.rnn_forward(*args, **kw)


def test_out_argument():
    p = _lstm()
    y, _, _ = _call(p)
    out = np.empty_like(y)
    y2, _, _ = _call(p, out=out)
    assert y2 is out
    np.testing.assert_array_equal(out, y)
    ro = np.empty_like(y)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        _call(p, out=ro)
    with pytest.raises(ValueError, match="out must be C-contiguous"):
        _call(p, out=np.empty((3, 6, 4), np.float32).transpose(0, 2, 1))
    with pytest.raises(ValueError, match=r"out must have shape \[3, 4, 6\]"):
        _call(p, out=np.empty((3, 4, 5), np.float32))
    with pytest.raises(TypeError, match="out must have dtype float32"):
        _call(p, out=np.empty((3, 4, 6), np.float64))


def test_non_contiguous_inputs_are_accepted_and_equal():
    p = _lstm()
    y, _, _ = _call(p)
    xt = np.asfortranarray(p["x"])
    assert not xt.flags.c_contiguous
    y2, _, _ = _call(_lstm(x=xt))
    np.testing.assert_array_equal(y, y2)


def test_backward_rejects():
    p = _lstm()
    y, (h, c), cache = _call(p)
    _, _, none_cache = _call(p, training=False)
    with pytest.raises(ValueError, match="cache is None; run lstm_forward with training=True"):
        ops.lstm_backward(none_cache, y)
    with pytest.raises(ValueError, match="cache comes from lstm_forward, not gru_forward"):
        ops.gru_backward(cache, y)
    with pytest.raises(TypeError, match="cache must be the (dict|cache) returned by lstm_forward"):
        ops.lstm_backward({"not": "a cache"}, y)
    with pytest.raises(ValueError, match=r"dy must have shape \[3, 4, 6\], got \[3, 4, 5\]"):
        ops.lstm_backward(cache, np.zeros((3, 4, 5), np.float32))
    with pytest.raises(TypeError, match="dy must have dtype float32"):
        ops.lstm_backward(cache, y.astype(np.float64))
    with pytest.raises(ValueError, match="bptt_steps must be None or a positive int, got 0"):
        ops.lstm_backward(cache, y, bptt_steps=0)
    with pytest.raises(TypeError, match="dstate must be None or a pair"):
        ops.lstm_backward(cache, y, dstate=h)
    with pytest.raises(ValueError, match=r"dstate\[1\] \(dc_n\) must have shape \[3, 6\]"):
        ops.lstm_backward(cache, y, dstate=(h, np.zeros((3, 5), np.float32)))


def test_cache_is_not_corrupted_by_later_edits_or_repeated_backward():
    p = _lstm()
    args, kw = forward_args("lstm", p)
    y, _, cache = ops.lstm_forward(*args, **kw)
    g1 = ops.lstm_backward(cache, y, bptt_steps=2)
    p["x"][:] = 7.0
    p["w_hh"][:] = -3.0
    g2 = ops.lstm_backward(cache, y, bptt_steps=2)
    for key in g1:
        np.testing.assert_array_equal(g1[key], g2[key], err_msg=key)


def test_raw_bindings_never_crash_on_bad_input():
    x = np.zeros((2, 3, 4), np.float32)
    w_ih, w_hh, b = np.zeros((8, 4), np.float32), np.zeros((8, 2), np.float32), np.zeros(8, np.float32)
    with pytest.raises(TypeError):  # float64 is refused, never converted silently
        _core.forward(2, x.astype(np.float64), w_ih, w_hh, b, None, None, None, None, False, True, False)
    with pytest.raises(ValueError, match=r"w_hh: expected shape \(G\*H, H\) with G = 4"):
        _core.forward(2, x, w_ih, np.zeros((6, 2), np.float32), b, None, None, None, None, False, True, False)
    with pytest.raises(ValueError, match=r"w_ih: expected shape \(8, 4\), got \(8, 3\)"):
        _core.forward(2, x, np.zeros((8, 3), np.float32), w_hh, b, None, None, None, None, False, True, False)
    with pytest.raises(ValueError, match="b_hh: required for GRU"):
        _core.forward(3, np.zeros((2, 3, 4), np.float32), np.zeros((6, 4), np.float32),
                      np.zeros((6, 2), np.float32), np.zeros(6, np.float32), None, None, None, None, False, True, False)
    with pytest.raises(ValueError, match=r"mask: expected shape \(2, 3\)"):
        _core.forward(2, x, w_ih, w_hh, b, None, None, None, np.ones((3, 2), np.uint8), False, True, False)
    with pytest.raises(ValueError, match="cell: expected 0"):
        _core.forward(9, x, w_ih, w_hh, b, None, None, None, None, False, True, False)
    with pytest.raises(ValueError, match=r"gates: expected shape \(6, 8\)"):
        _core.backward(2, x, w_ih, w_hh, None, False, True, np.zeros((5, 8), np.float32),
                       np.zeros((6, 2), np.float32), np.zeros((6, 2), np.float32), None, None, None, 0, True)
    with pytest.raises(ValueError, match="bptt_steps: expected >= 0"):
        _core.backward(2, x, w_ih, w_hh, None, False, True, np.zeros((6, 8), np.float32),
                       np.zeros((6, 2), np.float32), np.zeros((6, 2), np.float32), None, None, None, -1, True)
    with pytest.raises(ValueError, match="inner dimensions differ"):
        _core.gemm(np.zeros((2, 3), np.float32), np.zeros((4, 2), np.float32))
