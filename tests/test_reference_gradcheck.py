"""The NumPy references against central finite differences (float64), and their masking semantics.

Loss: L = sum(y * R1) + sum(h_n * R2) (+ sum(c_n * R3) for LSTM) with random R's; the analytic
gradients from *_backward(cache, dy=R1, dstate=R2 / (R2, R3)) must match the numeric ones for x, the
initial state(s) and every weight and bias. For truncated BPTT the numeric side is an independent
chunked computation: each chunk of k processing steps starts from the state the unperturbed forward
reached there, held constant, so the finite difference of the summed chunk losses is the truncated
gradient.
"""
import numpy as np
import pytest

from _problems import base_name, make_problem, numgrad
from fastrnn import reference as R

CELLS = ["rnn", "rnn_relu", "lstm", "gru"]
EPS = 1e-6


# --------------------------------------------------------------------------- helpers

def problem(cell, T, B, I, H, *, seed, batch_first, masking, with_state=True, dtype=np.float64):
    """Arrays (as a dict) and the mask/lengths options for one call."""
    p = make_problem(cell, T, B, I, H, dtype=dtype, seed=seed, batch_first=batch_first,
                     with_state=with_state, lengths="random" if masking == "lengths" else None)
    lengths = p.pop("lengths")
    if cell == "rnn_relu":      # keep most units active so the relu gradients are not all zero
        p["b"] = p["b"] + dtype(0.5)
    if masking == "lengths":
        lengths = lengths.copy()
        lengths[0] = 0          # one empty sequence
        lengths[-1] = T         # one full one
    mask = None
    if masking == "mask":
        rng = np.random.default_rng(seed + 100)
        mask = rng.random((B, T)) < 0.6
        mask[0, :] = False      # a row that is never valid
        mask[-1, 0] = mask[-1, -1] = True
    if not with_state:          # FD needs an array; the analytic side gets None
        p["h0"] = np.zeros((B, H), dtype)
        if cell == "lstm":
            p["c0"] = np.zeros((B, H), dtype)
    return p, lengths, mask


def forward(cell, p, *, lengths=None, mask=None, reverse=False, batch_first=True, training=True,
            state_none=False):
    """Call the reference forward; returns (y, h_n, c_n or None, cache)."""
    base = base_name(cell)
    h0 = None if state_none else p["h0"]
    kw = dict(h0=h0, lengths=lengths, mask=mask, reverse=reverse, batch_first=batch_first, training=training)
    if base == "gru":
        y, h, cache = R.gru_forward(p["x"], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], **kw)
        return y, h, None, cache
    if base == "lstm":
        kw["c0"] = None if state_none else p["c0"]
        y, (h, c), cache = R.lstm_forward(p["x"], p["w_ih"], p["w_hh"], p["b"], **kw)
        return y, h, c, cache
    kw["nonlinearity"] = "relu" if cell == "rnn_relu" else "tanh"
    y, h, cache = R.rnn_forward(p["x"], p["w_ih"], p["w_hh"], p["b"], **kw)
    return y, h, None, cache


def backward(cell, dh, dc):
    """(the backward function, the dstate argument for it) for gradient dh (and dc) of the final state."""
    base = base_name(cell)
    fn = getattr(R, f"{base}_backward")
    if base == "lstm":
        dstate = None if dh is None and dc is None else (dh, dc)
    else:
        dstate = dh
    return fn, dstate


def weights(cell):
    names = ["x", "h0", "w_ih", "w_hh"] + (["b_ih", "b_hh"] if cell == "gru" else ["b"])
    if cell == "lstm":
        names.insert(2, "c0")
    return names


def loss_terms(y, h, c, R1, R2, R3):
    total = 0.0
    if R1 is not None:
        total += float(np.sum(y * R1))
    if R2 is not None:
        total += float(np.sum(h * R2))
    if R3 is not None and c is not None:
        total += float(np.sum(c * R3))
    return total


def numeric_grad(loss, p, names):
    """Central differences of loss() (a function of the arrays in p, perturbed in place)."""
    return {name: numgrad(loss, p[name], EPS) for name in names}


def time_slice(a, lo, hi, batch_first):
    return a[:, lo:hi] if batch_first else a[lo:hi]


def chunked_loss_fn(cell, p, k, *, lengths, mask, reverse, batch_first, R1, R2, R3):
    """Loss of the chunks run one after another with the state detached at chunk boundaries.

    Returns a function of the (perturbable) arrays in p. Chunk j covers processing steps
    [j*k, (j+1)*k); its initial state comes from the unperturbed forward (a constant), except for
    chunk 0, which starts from p's h0/c0.
    """
    B, T = (p["x"].shape[0], p["x"].shape[1]) if batch_first else (p["x"].shape[1], p["x"].shape[0])
    if lengths is not None:
        mask = np.arange(T)[None, :] < np.asarray(lengths)[:, None]
    bounds = [(s, min(s + k, T)) for s in range(0, T, k)]

    def times(lo, hi):  # processing steps [lo, hi) -> the time window they cover
        return (T - hi, T - lo) if reverse else (lo, hi)

    def run(q, lo, hi, h0, c0):
        t0, t1 = times(lo, hi)
        sub = dict(q, x=time_slice(q["x"], t0, t1, batch_first), h0=h0)
        if c0 is not None:
            sub["c0"] = c0
        m = None if mask is None else mask[:, t0:t1]
        return forward(cell, sub, mask=m, reverse=reverse, batch_first=batch_first, training=False)

    # constant initial states of the chunks (from the unperturbed parameters)
    base = {n: v.copy() for n, v in p.items()}
    starts = []
    for lo, _ in bounds:
        if lo == 0:
            starts.append(None)
        else:
            _, h, c, _ = run(base, 0, lo, base["h0"], base.get("c0"))
            starts.append((h, c))

    def loss():
        total = 0.0
        for j, (lo, hi) in enumerate(bounds):
            h0, c0 = (p["h0"], p.get("c0")) if starts[j] is None else starts[j]
            y, h, c, _ = run(p, lo, hi, h0, c0)
            t0, t1 = times(lo, hi)
            last = hi == T
            total += loss_terms(y, h, c, None if R1 is None else time_slice(R1, t0, t1, batch_first),
                                R2 if last else None, R3 if last else None)
        return total

    return loss


# --------------------------------------------------------------------------- gradient checks

# (T, B, I, H, masking, reverse, batch_first, bptt_steps, with_state, with_dy, with_dstate)
CASES = {
    "plain": (4, 2, 3, 3, None, False, True, None, True, True, True),
    "time_major": (3, 3, 2, 4, None, False, False, None, True, True, True),
    "lengths": (5, 3, 2, 3, "lengths", False, False, None, True, True, True),
    "mask": (5, 3, 3, 2, "mask", False, True, None, True, True, True),
    "mask_reverse": (5, 3, 2, 3, "mask", True, False, None, True, True, True),
    "lengths_reverse": (4, 3, 3, 3, "lengths", True, True, None, True, True, True),
    "no_state_no_dstate": (4, 2, 2, 3, "lengths", False, True, None, False, True, False),
    "dy_none": (4, 2, 2, 3, None, True, True, None, True, False, True),
    "tbptt_k1": (4, 2, 2, 3, "lengths", True, True, 1, True, True, True),
    "tbptt_k2_divides": (4, 2, 3, 2, None, False, False, 2, True, True, False),
    "tbptt_k2_mask": (5, 3, 2, 3, "mask", False, True, 2, True, True, True),
    "tbptt_k3_reverse": (5, 2, 2, 3, "lengths", True, False, 3, True, True, True),
    "tbptt_k2_dy_none": (5, 2, 2, 2, None, True, True, 2, True, False, True),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_finite_differences(cell, case):
    T, B, I, H, masking, reverse, batch_first, k, with_state, with_dy, with_dstate = CASES[case]
    seed = 7 + CELLS.index(cell) + 31 * list(CASES).index(case)
    p, lengths, mask = problem(cell, T, B, I, H, seed=seed, batch_first=batch_first, masking=masking,
                               with_state=with_state)
    rng = np.random.default_rng(seed + 1)
    y_shape = (B, T, H) if batch_first else (T, B, H)
    R1 = rng.normal(size=y_shape) if with_dy else None
    R2 = rng.normal(size=(B, H)) if with_dstate else None
    R3 = rng.normal(size=(B, H)) if with_dstate and cell == "lstm" else None
    opts = dict(lengths=lengths, mask=mask, reverse=reverse, batch_first=batch_first)

    y, h, c, cache = forward(cell, p, state_none=not with_state, **opts)
    fn, dstate = backward(cell, R2, R3)
    grads = fn(cache, R1, dstate=dstate, bptt_steps=k)
    names = weights(base_name(cell))
    assert set(grads) == set(names)

    if k is None:
        def loss():
            yy, hh, cc, _ = forward(cell, p, training=False, **opts)
            return loss_terms(yy, hh, cc, R1, R2, R3)
    else:
        loss = chunked_loss_fn(cell, p, k, R1=R1, R2=R2, R3=R3, **opts)
    num = numeric_grad(loss, p, names)
    for name in names:
        assert grads[name].shape == p[name].shape, name
        assert grads[name].dtype == np.float64, name
        np.testing.assert_allclose(grads[name], num[name], rtol=1e-6, atol=1e-8, err_msg=f"d{name}")
    # a sanity check on the check itself: no gradient is identically zero (except the initial
    # state's when only the last chunk receives a loss gradient)
    cut_off = k is not None and k < T and not with_dy
    for n in names:
        if cut_off and n in ("h0", "c0"):
            assert np.all(grads[n] == 0)
        else:
            assert np.abs(num[n]).max() > 1e-4, n


@pytest.mark.parametrize("cell", CELLS)
def test_truncation_changes_gradient_and_k_at_least_T_is_full(cell):
    T = 5
    p, _, _ = problem(cell, T, 2, 3, 3, seed=3, batch_first=True, masking=None)
    rng = np.random.default_rng(4)
    R1, R2 = rng.normal(size=(2, T, 3)), rng.normal(size=(2, 3))
    R3 = rng.normal(size=(2, 3)) if cell == "lstm" else None
    _, _, _, cache = forward(cell, p)
    fn, dstate = backward(cell, R2, R3)
    full = fn(cache, R1, dstate=dstate)
    for k in (T, T + 3):
        same = fn(cache, R1, dstate=dstate, bptt_steps=k)
        for n in full:
            np.testing.assert_array_equal(same[n], full[n])
    trunc = fn(cache, R1, dstate=dstate, bptt_steps=2)
    assert not np.allclose(trunc["w_hh"], full["w_hh"])
    assert not np.allclose(trunc["h0"], full["h0"])
    # the gradient at the last chunk's inputs is untouched by truncation
    np.testing.assert_array_equal(trunc["x"][:, 4:], full["x"][:, 4:])
    # backward does not consume the cache: a second call gives the same result
    again = fn(cache, R1, dstate=dstate)
    for n in full:
        np.testing.assert_array_equal(again[n], full[n])


# --------------------------------------------------------------------------- masking semantics

@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("cell", CELLS)
def test_masked_steps_carry_state_and_give_zero(cell, reverse, batch_first):
    T, B, I, H = 6, 3, 2, 3
    p, _, mask = problem(cell, T, B, I, H, seed=11, batch_first=batch_first, masking="mask")
    y, h, c, _ = forward(cell, p, mask=mask, reverse=reverse, batch_first=batch_first)
    y_bt = y if batch_first else y.transpose(1, 0, 2)
    x_bt = p["x"] if batch_first else p["x"].transpose(1, 0, 2)
    assert np.all(y_bt[~mask] == 0.0)                      # exactly zero
    for b in range(B):
        ts = np.flatnonzero(mask[b])
        # each row alone, with only its valid steps, unmasked: the same outputs and final state
        sub = dict(p, x=x_bt[b:b + 1, ts], h0=p["h0"][b:b + 1])
        if cell == "lstm":
            sub["c0"] = p["c0"][b:b + 1]
        if ts.size == 0:
            np.testing.assert_array_equal(h[b], p["h0"][b])
            if cell == "lstm":
                np.testing.assert_array_equal(c[b], p["c0"][b])
            continue
        ys, hs, cs, _ = forward(cell, sub, reverse=reverse, batch_first=True)
        np.testing.assert_allclose(y_bt[b, ts], ys[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(h[b], hs[0], rtol=1e-12, atol=1e-14)
        if cell == "lstm":
            np.testing.assert_allclose(c[b], cs[0], rtol=1e-12, atol=1e-14)
        # h_n is the state after the last processed valid step
        last = ts[0] if reverse else ts[-1]
        np.testing.assert_array_equal(h[b], y_bt[b, last])


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_lengths_equal_the_equivalent_mask(cell, reverse):
    T, B = 5, 3
    p, lengths, _ = problem(cell, T, B, 2, 3, seed=21, batch_first=True, masking="lengths")
    mask = np.arange(T)[None, :] < lengths[:, None]
    outs = []
    for kw in (dict(lengths=lengths), dict(mask=mask), dict(mask=mask.astype(np.int32))):
        y, h, c, cache = forward(cell, p, reverse=reverse, **kw)
        rng = np.random.default_rng(0)
        dy = rng.normal(size=y.shape)
        fn, dstate = backward(cell, rng.normal(size=h.shape),
                              rng.normal(size=h.shape) if cell == "lstm" else None)
        outs.append((y, h, c, fn(cache, dy, dstate=dstate, bptt_steps=2)))
    for y, h, c, g in outs[1:]:
        np.testing.assert_array_equal(y, outs[0][0])
        np.testing.assert_array_equal(h, outs[0][1])
        if c is not None:
            np.testing.assert_array_equal(c, outs[0][2])
        for n in g:
            np.testing.assert_array_equal(g[n], outs[0][3][n])


@pytest.mark.parametrize("cell", CELLS)
def test_padding_values_are_never_read(cell):
    """x and dy at masked steps do not matter, even when they are NaN."""
    T, B = 5, 3
    p, lengths, _ = problem(cell, T, B, 2, 3, seed=5, batch_first=True, masking="lengths")
    mask = np.arange(T)[None, :] < lengths[:, None]
    rng = np.random.default_rng(1)
    dy = rng.normal(size=(B, T, 3))
    results = []
    for fill in (0.0, np.nan):
        q = dict(p, x=np.where(mask[:, :, None], p["x"], fill))
        d = np.where(mask[:, :, None], dy, fill)
        y, h, c, cache = forward(cell, q, lengths=lengths)
        fn, _ = backward(cell, None, None)
        results.append((y, h, fn(cache, d)))
    for a, b in zip(results[0][:2], results[1][:2]):
        np.testing.assert_array_equal(a, b)
    for n in results[0][2]:
        np.testing.assert_array_equal(results[0][2][n], results[1][2][n])


# --------------------------------------------------------------------------- dtypes

@pytest.mark.parametrize("cell", CELLS)
def test_float32_agrees_with_float64(cell):
    T, B = 6, 3
    p64, lengths, _ = problem(cell, T, B, 4, 5, seed=9, batch_first=False, masking="lengths")
    p32 = {n: v.astype(np.float32) for n, v in p64.items()}
    rng = np.random.default_rng(2)
    dy = rng.normal(size=(T, B, 5))
    dh = rng.normal(size=(B, 5))
    res = {}
    for key, p in (("64", p64), ("32", p32)):
        dt = p["x"].dtype
        y, h, c, cache = forward(cell, p, lengths=lengths, reverse=True, batch_first=False)
        fn, dstate = backward(cell, dh.astype(dt),
                              dh.astype(dt) if cell == "lstm" else None)
        g = fn(cache, dy.astype(dt), dstate=dstate, bptt_steps=4)
        assert y.dtype == h.dtype == dt and all(v.dtype == dt for v in g.values())
        res[key] = (y, h, g)
    np.testing.assert_allclose(res["32"][0], res["64"][0], atol=1e-5)
    np.testing.assert_allclose(res["32"][1], res["64"][1], atol=1e-5)
    for n in res["64"][2]:
        np.testing.assert_allclose(res["32"][2][n], res["64"][2][n], rtol=1e-5, atol=1e-5, err_msg=n)


@pytest.mark.parametrize("cell", CELLS)
def test_h0_none_means_zeros_and_inference_has_no_cache(cell):
    p, _, _ = problem(cell, 4, 2, 2, 3, seed=1, batch_first=True, masking=None, with_state=False)
    y0, h0, c0, cache0 = forward(cell, p, state_none=True)
    y1, h1, c1, cache1 = forward(cell, p)
    np.testing.assert_array_equal(y0, y1)
    np.testing.assert_array_equal(h0, h1)
    fn, _ = backward(cell, None, None)
    g0, g1 = fn(cache0, y0), fn(cache1, y1)
    for n in g1:
        np.testing.assert_array_equal(g0[n], g1[n])
    y2, h2, _, cache2 = forward(cell, p, state_none=True, training=False)
    assert cache2 is None
    np.testing.assert_array_equal(y2, y0)
    with pytest.raises(ValueError, match="cache is None"):
        fn(cache2, y2)
