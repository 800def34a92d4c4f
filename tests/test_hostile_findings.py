"""Hostile inputs that once got through the checks (or past them into the bindings), and the memory
that the kernels kept between calls: each test here failed before its fix."""
from __future__ import annotations

import gc

import numpy as np
import pytest

import fastrnn
from fastrnn import backend, ops
from fastrnn import reference as ref
from fastrnn._kernel_cache import POOL, BufferPool
from fastrnn.layers import LSTM, Dense
from fastrnn.models import Sequential


def _lstm_problem(B=2, T=3, I=4, H=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    w_ih = (rng.standard_normal((4 * H, I)) * 0.3).astype(np.float32)
    w_hh = (rng.standard_normal((4 * H, H)) * 0.3).astype(np.float32)
    b = (rng.standard_normal(4 * H) * 0.1).astype(np.float32)
    return x, w_ih, w_hh, b


@pytest.mark.parametrize("k", [3, 4, 2**31, 2**63 - 1, 2**63, 2**64, 10**30, np.uint64(2**64 - 1)])
def test_bptt_steps_at_or_past_T_is_full_bptt(k):
    x, w_ih, w_hh, b = _lstm_problem()
    y, _, cache = ops.lstm_forward(x, w_ih, w_hh, b)
    dy = np.ones_like(y)
    full = ops.lstm_backward(cache, dy)
    got = ops.lstm_backward(cache, dy, bptt_steps=k)
    for name in full:
        np.testing.assert_array_equal(got[name], full[name], err_msg=name)
    # the reference takes it too, with the same gradients (float64 on the same inputs)
    _, _, rc = ref.lstm_forward(*(a.astype(np.float64) for a in (x, w_ih, w_hh, b)))
    rg = ref.lstm_backward(rc, dy.astype(np.float64), bptt_steps=k)
    for name in full:
        np.testing.assert_allclose(got[name], rg[name], rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("cache", [{"cell": "gru"}, {"cell": "gru", "T": 3, "B": 2, "H": 5}])
@pytest.mark.parametrize("backward", [ops.gru_backward, ref.gru_backward])
def test_a_dict_that_is_not_a_cache_is_refused(backward, cache):
    with pytest.raises(ValueError, match=r"gru_backward: cache is not a cache returned by gru_forward"):
        backward(cache, None)


@pytest.mark.parametrize("forward", [ops.lstm_forward, ref.lstm_forward])
@pytest.mark.parametrize("lengths", [[], np.array([], np.int64), np.zeros((2, 0), np.int64)])
def test_empty_lengths_are_a_shape_error(forward, lengths):
    x, w_ih, w_hh, b = _lstm_problem()
    with pytest.raises(ValueError, match=r"lstm_forward: lengths must have shape \[2\] .*got an empty array"):
        forward(x, w_ih, w_hh, b, lengths=lengths)


def test_layer_empty_lengths_are_a_shape_error():
    lay = LSTM(5)
    with pytest.raises(ValueError, match=r"lengths must have shape \[batch\] = \(2,\), got an empty array"):
        lay(np.zeros((2, 3, 4), np.float32), lengths=[])


@pytest.mark.parametrize("name", ["scalar\x00x", "\x00", "avx2\x00"])
def test_set_isa_refuses_embedded_nul(name):
    before = fastrnn.isa()
    try:
        fastrnn.set_isa("scalar" if before != "scalar" else fastrnn.available_isas()[-1])
        mid = fastrnn.isa()
        with pytest.raises(ValueError, match="NUL"):
            fastrnn.set_isa(name)
        with pytest.raises(ValueError, match="NUL"):  # the binding refuses it too
            backend.core().set_isa(name)
        assert fastrnn.isa() == mid
    finally:
        fastrnn.set_isa(before)


def test_reset_states_checks_that_the_states_agree():
    lay = LSTM(8, stateful=True)
    lay(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"states must have the same batch size, got states\[0\] with 2 rows, "
                                         r"states\[1\] with 3 rows"):
        lay.reset_states([np.zeros((2, 8)), np.zeros((3, 8))])
    with pytest.raises(ValueError, match=r"states\[1\] must have shape \[batch, units\] = \(2, 8\)"):
        lay.reset_states([np.zeros((2, 8)), np.zeros((2, 7))])
    lay.reset_states([np.ones((2, 8)), np.ones((2, 8))])  # a good pair is kept
    assert [s.shape for s in lay.states] == [(2, 8), (2, 8)]


def _stateful_model():
    m = Sequential([LSTM(6, stateful=True, seed=1), Dense(1, seed=2)])
    m.compile(optimizer="sgd", loss="mse")
    return m


@pytest.mark.parametrize("validation", [False, True])
def test_stateful_fit_refuses_a_ragged_last_batch_before_any_update(validation):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((10, 5, 3)).astype(np.float32), rng.standard_normal((10, 1)).astype(np.float32)
    m = _stateful_model()
    m.predict(x[:4], batch_size=4)  # built
    m.layers[0].reset_states()
    before = [p.value.copy() for p in m.parameters()]
    if validation:  # 8 training samples divide into batches of 4; the 2 validation samples do not
        kw = dict(validation_data=(x[:2], y[:2]))
        xs, ys, what = x[:8], y[:8], r"the 2 validation samples leave a last batch of 2"
    else:
        kw, xs, ys, what = {}, x, y, r"the 10 training samples leave a last batch of 2"
    with pytest.raises(ValueError, match=r"fit: the stateful layer\(s\) .* every batch must have batch_size=4 "
                                         r"samples, but " + what):
        m.fit(xs, ys, batch_size=4, epochs=1, verbose=0, shuffle=False, **kw)
    for p, v in zip(m.parameters(), before):
        np.testing.assert_array_equal(p.value, v)
    m.predict(x[:4], batch_size=4)  # the carried state is untouched: still batch 4
    m.fit(x[:8], y[:8], batch_size=4, epochs=1, verbose=0, shuffle=False)  # dividing sizes train


# --------------------------------------------------------------------------- memory kept between calls

def test_pool_evicts_least_recently_used_shapes_within_its_budget():
    pool = BufferPool(max_bytes=10 << 20, min_bytes=1 << 20)
    shapes = [(n, 1 << 18) for n in (1, 2, 3, 4)]  # 1, 2, 3, 4 MiB
    for s in shapes:
        a = pool.take(s)
        pool.give(a)
        del a
    assert pool.bytes == 10 << 20
    a = pool.take(shapes[0])  # (1, ...) is now the most recently used
    pool.give(a)
    del a
    b = np.empty((5, 1 << 18), np.float32)  # 5 MiB: evicts (2, ...) then (3, ...), the oldest
    pool.give(b)
    del b
    assert sorted(s[0] for s in pool._free) == [1, 4, 5]
    assert pool.bytes == 10 << 20 and pool.evictions == 2
    c = np.empty((11, 1 << 18), np.float32)  # over the budget on its own: not kept, nothing evicted
    pool.give(c)
    assert pool.bytes == 10 << 20 and pool.evictions == 2
    pool.set_max_bytes(5 << 20)  # lowering the budget evicts at once, oldest first
    assert sorted(s[0] for s in pool._free) == [5] and pool.bytes == 5 << 20


def test_varying_shapes_keep_the_pool_within_its_budget():
    before = ops.get_workspace_limit()
    try:
        ops.set_workspace_limit(16 << 20)
        x, w_ih, w_hh, b = _lstm_problem(B=32, T=64, I=32, H=64)
        for T in range(16, 65, 4):  # gates [T*32, 256] floats: 0.5 .. 2 MiB
            _, _, cache = ops.lstm_forward(np.ascontiguousarray(x[:, :T]), w_ih, w_hh, b)
            ops.lstm_backward(cache, None)
            del cache
            gc.collect()
            assert POOL.bytes <= 16 << 20
        assert POOL.bytes > 0
    finally:
        ops.set_workspace_limit(before)


def test_workspace_over_the_limit_is_freed_after_the_call():
    core = backend.core()
    before = ops.get_workspace_limit()
    assert before == 256 << 20  # the documented default
    x, w_ih, w_hh, b = _lstm_problem(B=64, T=8, I=64, H=256)
    try:
        ops.release_workspace()
        ops.lstm_forward(x, w_ih, w_hh, b, training=False)
        used = core.workspace_bytes()
        assert used > 0  # within the default limit: kept for the next call
        ops.set_workspace_limit(used - 1)  # lowering it trims the calling thread's buffer now
        assert core.workspace_bytes() == 0
        y1 = ops.lstm_forward(x, w_ih, w_hh, b, training=False)[0]
        assert core.workspace_bytes() == 0  # needed more than the limit: freed when the call returned
        ops.set_workspace_limit(used)
        y2 = ops.lstm_forward(x, w_ih, w_hh, b, training=False)[0]
        assert core.workspace_bytes() == used
        np.testing.assert_array_equal(y1, y2)
    finally:
        ops.set_workspace_limit(before)


@pytest.mark.parametrize("bad,exc", [(-1, ValueError), (2**63, ValueError), (1.5, TypeError), (True, TypeError),
                                     ("1", TypeError)])
def test_set_workspace_limit_checks_its_argument(bad, exc):
    with pytest.raises(exc, match="set_workspace_limit: nbytes"):
        ops.set_workspace_limit(bad)
