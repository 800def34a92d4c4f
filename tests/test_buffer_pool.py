"""Training-cache buffers are recycled (fastrnn._kernel_cache.POOL) only when nothing else refers
to them, and recycled buffers give the same results as fresh ones."""
from __future__ import annotations

import numpy as np
import pytest

from fastrnn import backend, ops
from fastrnn._kernel_cache import POOL

# gates [T*B, 4H] = 4 MiB, hprev / aux / x 1 MiB: all pooled (min_bytes = 1 MiB)
T, B, I, H = 64, 64, 64, 64


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, I), dtype=np.float32)
    w_ih = rng.standard_normal((4 * H, I), dtype=np.float32) * 0.2
    w_hh = rng.standard_normal((4 * H, H), dtype=np.float32) * 0.2
    b = rng.standard_normal(4 * H, dtype=np.float32) * 0.1
    lengths = rng.integers(1, T + 1, size=B)
    dy = rng.standard_normal((B, T, H), dtype=np.float32)
    return x, w_ih, w_hh, b, lengths, dy


def _step(p, scale=1.0):
    x, w_ih, w_hh, b, lengths, dy = p
    y, _, cache = ops.lstm_forward(x * scale, w_ih, w_hh, b, lengths=lengths, training=True)
    return y, ops.lstm_backward(cache, dy)


def test_recycled_buffers_give_identical_results():
    p = _problem()
    POOL.clear()
    y0, g0 = _step(p)
    hits = POOL.hits
    _step(p, scale=3.0)  # other values in the buffers that come back
    for _ in range(2):
        y, g = _step(p)
        np.testing.assert_array_equal(y, y0)
        for k in g0:
            np.testing.assert_array_equal(g[k], g0[k], err_msg=k)
    assert POOL.hits >= hits + 3 * 4  # gates, hprev, aux and the copy of x every step (the weights < 1 MiB)


def test_buffers_someone_holds_are_not_recycled():
    p = _problem(1)
    POOL.clear()
    _, _, cache = ops.lstm_forward(p[0], p[1], p[2], p[3], training=True)
    held, saved = cache.gates, cache.gates.copy()
    view = cache.hprev[:10]
    del cache
    for _ in range(2):
        _, _, c2 = ops.lstm_forward(p[0] * 2, p[1], p[2], p[3], training=True)
        assert c2.gates is not held and c2.hprev.base is None and not np.shares_memory(c2.hprev, view)
        del c2
    np.testing.assert_array_equal(held, saved)


def test_small_arrays_are_not_pooled_and_release_empties_the_pool():
    POOL.clear()
    before = POOL.hits + POOL.misses
    x = np.ones((2, 3, 4), np.float32)
    w_ih, w_hh, b = np.ones((20, 4), np.float32), np.ones((20, 5), np.float32), np.zeros(20, np.float32)
    for _ in range(3):
        ops.lstm_backward(ops.lstm_forward(x, w_ih, w_hh, b, training=True)[-1], None)
    assert POOL.hits + POOL.misses == before and POOL.bytes == 0
    _step(_problem(2))
    assert POOL.bytes > 0
    ops.release_workspace()
    assert POOL.bytes == 0 and backend.core().workspace_bytes() == 0


def test_given_buffers_are_checked():
    core = backend.core()
    x = np.ones((2, 3, 4), np.float32)
    w_ih, w_hh, b = np.ones((20, 4), np.float32), np.ones((20, 5), np.float32), np.zeros(20, np.float32)
    args = (2, x, w_ih, w_hh, b, None, None, None, None, False, True, True)
    with pytest.raises(ValueError, match=r"gates: expected shape \(6, 20\)"):
        core.forward(*args, gates=np.empty((6, 5), np.float32))
    ro = np.empty((6, 5), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="hprev: the array must be writeable"):
        core.forward(*args, hprev=ro)
    g = np.full((6, 20), np.nan, np.float32)
    out = core.forward(*args, gates=g)
    assert out[3] is g and np.isfinite(g).all()  # filled in place, returned as the cache's gates


def test_concurrent_training_steps_from_threads_agree():
    import threading

    p = _problem(3)
    POOL.clear()
    want = _step(p)
    errors = []

    def worker():
        try:
            for _ in range(3):
                y, g = _step(p)
                np.testing.assert_array_equal(y, want[0])
                for k in g:
                    np.testing.assert_array_equal(g[k], want[1][k])
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
