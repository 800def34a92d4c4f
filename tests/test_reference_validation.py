"""Bad arguments to the references: each a ValueError or TypeError naming the argument, what was
expected and what came."""
import numpy as np
import pytest

from _problems import make_problem
from fastrnn import reference as R
from fastrnn.reference._common import check_forward_args

T, B, I, H = 4, 3, 2, 5


def lstm_args(dtype=np.float64):
    p = make_problem("lstm", T, B, I, H, dtype=dtype, seed=0)
    return p


def call_lstm(p, **kw):
    args = dict(h0=p["h0"], c0=p["c0"])
    args.update(kw)
    return R.lstm_forward(p["x"], p["w_ih"], p["w_hh"], p["b"], **args)


@pytest.mark.parametrize("change, exc, pattern", [
    (dict(x=np.zeros((B, T), np.float64)), ValueError, r"x must have rank 3.*got shape \[3, 4\]"),
    (dict(x=np.zeros((B, 0, I), np.float64)), ValueError, r"x must not be empty"),
    (dict(x=np.zeros((B, T, I), np.int64)), TypeError, r"x must have dtype float32 or float64, got int64"),
    (dict(x=[[[0.0] * I] * T] * B), TypeError, r"x must be a numpy or cupy array, got list"),
    (dict(w_ih=np.zeros((4 * H, I + 1))), ValueError, r"w_ih must have shape \[20, 2\], got \[20, 3\]"),
    (dict(w_hh=np.zeros((3 * H, H))), ValueError, r"w_hh must have shape \[4\*H, H\].*got \[15, 5\]"),
    (dict(b=np.zeros(2 * 4 * H)), ValueError, r"b must have shape \[20\], got \[40\]"),
    (dict(w_hh=np.zeros((4 * H, H), np.float32)), TypeError, r"w_hh must have dtype float64 \(the dtype of x\), got float32"),
    (dict(h0=np.zeros((B, H + 1))), ValueError, r"h0 must have shape \[3, 5\], got \[3, 6\]"),
    (dict(c0=np.zeros((B + 1, H))), ValueError, r"c0 must have shape \[3, 5\], got \[4, 5\]"),
])
def test_bad_arrays(change, exc, pattern):
    p = lstm_args()
    p.update(change)
    with pytest.raises(exc, match=pattern):
        call_lstm(p)


@pytest.mark.parametrize("kw, exc, pattern", [
    (dict(lengths=np.array([1, 2, 5])), ValueError, r"lengths must be in \[0, T=4\], got a length of 5"),
    (dict(lengths=np.array([1, -1, 2])), ValueError, r"lengths must be in \[0, T=4\], got a length of -1"),
    (dict(lengths=np.array([1, 2])), ValueError, r"lengths must have shape \[3\].*got \[2\]"),
    (dict(lengths=np.array([1.0, 2.0, 3.0])), TypeError, r"lengths must be an integer array, got dtype float64"),
    (dict(mask=np.ones((T, B), bool)), ValueError, r"mask must have shape \[B, T\] = \[3, 4\], got \[4, 3\]"),
    (dict(mask=np.full((B, T), 2)), ValueError, r"mask must contain only 0/1"),
    (dict(mask=np.ones((B, T), bool), lengths=np.array([1, 2, 3])), ValueError, r"lengths or mask, not both"),
    (dict(batch_first="yes"), TypeError, r"batch_first must be a bool, got str"),
    (dict(reverse=None), TypeError, r"reverse must be a bool"),
])
def test_bad_masks_and_options(kw, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call_lstm(lstm_args(), **kw)


def test_lists_are_accepted_for_lengths_and_mask():
    p = lstm_args()
    y1, _, _ = call_lstm(p, lengths=[1, 4, 0])
    y2, _, _ = call_lstm(p, mask=[[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(y1, y2)


def test_rnn_nonlinearity_and_gru_biases():
    p = make_problem("rnn", T, B, I, H, seed=1)
    with pytest.raises(ValueError, match=r"nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"):
        R.rnn_forward(p["x"], p["w_ih"], p["w_hh"], p["b"], nonlinearity="sigmoid")
    g = make_problem("gru", T, B, I, H, seed=1)
    with pytest.raises(ValueError, match=r"b_hh must have shape \[15\], got \[5\]"):
        R.gru_forward(g["x"], g["w_ih"], g["w_hh"], g["b_ih"], g["b_hh"][:H])


def test_backward_arguments():
    p = lstm_args()
    y, _, cache = call_lstm(p)
    with pytest.raises(ValueError, match=r"dy must have shape \[3, 4, 5\], got \[4, 3, 5\]"):
        R.lstm_backward(cache, np.zeros((T, B, H)))
    with pytest.raises(TypeError, match=r"dy must have dtype float64"):
        R.lstm_backward(cache, y.astype(np.float32))
    with pytest.raises(TypeError, match=r"dstate must be None or a pair \(dh_n, dc_n\)"):
        R.lstm_backward(cache, y, dstate=np.zeros((B, H)))
    with pytest.raises(ValueError, match=r"dstate\[1\] \(dc_n\) must have shape \[3, 5\], got \[3, 4\]"):
        R.lstm_backward(cache, y, dstate=(None, np.zeros((B, H - 1))))
    for bad, exc in ((0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(exc, match="bptt_steps must be None or a positive int"):
            R.lstm_backward(cache, y, bptt_steps=bad)
    with pytest.raises(ValueError, match=r"cache comes from lstm_forward, not gru_forward"):
        R.gru_backward(cache, y)
    g = R.lstm_backward(cache, None, dstate=(None, None))
    assert np.all(g["x"] == 0) and np.all(g["w_hh"] == 0)


def test_check_forward_args_returns_dims_and_time_major_mask():
    p = lstm_args(np.float32)
    spec = check_forward_args("lstm", p["x"], p["w_ih"], p["w_hh"], (p["b"],), lengths=np.array([0, 4, 2]))
    assert (spec.T, spec.B, spec.I, spec.H, spec.G) == (T, B, I, H, 4)
    assert spec.dtype == np.float32 and spec.xp is np
    expected = np.array([[False, True, True], [False, True, True], [False, True, False], [False, True, False]])
    np.testing.assert_array_equal(spec.mask, expected)
    np.testing.assert_array_equal(spec.lengths, [0, 4, 2])
    none = check_forward_args("lstm", p["x"], p["w_ih"], p["w_hh"], (p["b"],))
    assert none.mask is None and none.lengths is None
