"""The fused C++ optimizer step (fastrnn._core.OptimPlan) against the NumPy reference (the same
optimizer with ``_use_fused = False``): every optimizer and option, awkward sizes, several steps,
schedules, clipping active and inactive, every ISA path, 1 and several threads (bit-identical
across thread counts), state saving, fallbacks and bad input."""
from __future__ import annotations

import copy

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import backend, optim
from fastrnn.layers import Parameter

SIZES = [(1,), (3,), (17,), (1000003,), (5, 7), (33, 129)]
SMALL_SIZES = [(1,), (3,), (17,), (70001,), (5, 7), (33, 129)]  # several blocks of OPTIM_BLOCK, quicker


@pytest.fixture
def threads():
    before = backend.get_num_threads()
    yield
    backend.set_num_threads(before)


def make_params(shapes, seed=0, names=None):
    rng = np.random.default_rng(seed)
    out = []
    for k, sh in enumerate(shapes):
        name = names[k] if names else f"layer{k}/kernel"
        out.append(Parameter(name, rng.standard_normal(sh).astype(np.float32)))
    return out


def set_grads(params, rng, scale=1.0):
    for p in params:
        p.grad[...] = (rng.standard_normal(p.value.shape) * scale).astype(np.float32)


def run_pair(make_opt, shapes, steps=3, grad_scale=1.0, names=None):
    """The fused optimizer and the reference over `steps` steps with the same gradients."""
    fused, ref = make_opt(), make_opt()
    ref._use_fused = False
    pf, pr = make_params(shapes, names=names), make_params(shapes, names=names)
    rng = np.random.default_rng(1)
    for _ in range(steps):
        set_grads(pf, rng, grad_scale)
        for a, b in zip(pf, pr):
            b.grad[...] = a.grad
        fused.step(pf)
        ref.step(pr)
    assert fused._fused_cache is not None, "the fused path did not run"
    assert ref._fused_cache is None
    return fused, ref, pf, pr


def ulps(a, b):
    """Largest distance in float32 units in the last place between a and b."""
    ia = a.view(np.int32).astype(np.int64)
    ib = b.view(np.int32).astype(np.int64)
    ia = np.where(ia < 0, np.int64(-2**31) - ia, ia)
    ib = np.where(ib < 0, np.int64(-2**31) - ib, ib)
    return int(np.max(np.abs(ia - ib))) if a.size else 0


def assert_same(fused, ref, pf, pr, max_ulps=0, rtol=0.0):
    for a, b in zip(pf, pr):
        if rtol:
            np.testing.assert_allclose(a.value, b.value, rtol=rtol, atol=rtol)
        else:
            assert ulps(a.value, b.value) <= max_ulps, (a.name, ulps(a.value, b.value))
    assert fused.iterations == ref.iterations
    assert set(fused._slots) == set(ref._slots)
    for k in ref._slots:
        for a, b in zip(fused._slots[k], ref._slots[k]):
            if rtol:
                np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
            else:
                assert ulps(a, b) <= max_ulps, (k, ulps(a, b))


SCHED = optim.ExponentialDecay(0.01, decay_steps=1, decay_rate=0.5)

CONFIGS = {
    "sgd": lambda: optim.SGD(0.1),
    "sgd_momentum": lambda: optim.SGD(0.1, momentum=0.9),
    "sgd_nesterov": lambda: optim.SGD(0.1, momentum=0.9, nesterov=True),
    "sgd_momentum1_schedule": lambda: optim.SGD(copy.deepcopy(SCHED), momentum=1.0),
    "rmsprop": lambda: optim.RMSprop(0.01),
    "rmsprop_centered": lambda: optim.RMSprop(0.01, centered=True),
    "rmsprop_momentum": lambda: optim.RMSprop(0.01, momentum=0.5),
    "rmsprop_all_torch": lambda: optim.RMSprop(0.01, rho=0.99, momentum=0.9, centered=True, epsilon=1e-8,
                                               epsilon_style="torch"),
    "rmsprop_eps0_schedule": lambda: optim.RMSprop(copy.deepcopy(SCHED), epsilon=0.0),
    "adam": lambda: optim.Adam(0.01),
    "adam_amsgrad": lambda: optim.Adam(0.01, amsgrad=True),
    "adam_torch": lambda: optim.Adam(0.01, epsilon=1e-8, epsilon_style="torch"),
    "adam_torch_amsgrad_schedule": lambda: optim.Adam(copy.deepcopy(SCHED), amsgrad=True, epsilon_style="torch",
                                                      beta_1=0.5, beta_2=0.75),
    "adamw": lambda: optim.AdamW(0.01, weight_decay=0.1),
    "adamw_exclude": lambda: optim.AdamW(0.01, weight_decay=0.1, exclude_from_weight_decay=["bias"]),
    "adamw_torch_amsgrad": lambda: optim.AdamW(0.01, weight_decay=0.01, amsgrad=True, epsilon_style="torch"),
    "adamw_no_decay": lambda: optim.AdamW(0.01, weight_decay=0.0),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_option_equals_the_reference_bit_for_bit(name, isa):
    """No clipping norm: the same float32 operations in the same order, so the same bits."""
    names = [f"d{k}/{'bias' if k % 2 else 'kernel'}" for k in range(len(SIZES))]
    fused, ref, pf, pr = run_pair(CONFIGS[name], SIZES, steps=3, names=names)
    assert_same(fused, ref, pf, pr, max_ulps=0)
    for a, b in zip(pf, make_params(SIZES, names=names)):  # and the parameters did move
        assert not np.array_equal(a.value, b.value)


CLIPS = {
    "clipvalue_active": {"clipvalue": 0.5},
    "clipvalue_inactive": {"clipvalue": 100.0},
    "clipnorm_active": {"clipnorm": 1.0},
    "clipnorm_inactive": {"clipnorm": 1e5},
    "global_active": {"global_clipnorm": 2.0},
    "global_inactive": {"global_clipnorm": 1e5},
}


@pytest.mark.parametrize("clip", sorted(CLIPS))
@pytest.mark.parametrize("cls", [optim.SGD, optim.RMSprop, optim.Adam, optim.AdamW])
def test_clipping_equals_the_reference(cls, clip, isa):
    kw = dict(CLIPS[clip])
    extra = {optim.SGD: {"momentum": 0.9, "nesterov": True}, optim.RMSprop: {"centered": True, "momentum": 0.3},
             optim.Adam: {"amsgrad": True}, optim.AdamW: {"weight_decay": 0.05}}[cls]
    fused, ref, pf, pr = run_pair(lambda: cls(0.01, **kw, **extra), SMALL_SIZES, steps=3)
    if clip in ("clipvalue_active", "clipvalue_inactive") or clip.endswith("inactive"):
        assert_same(fused, ref, pf, pr, max_ulps=0)
    else:  # the norm is summed in another order than NumPy's: the scale may differ by an ulp
        assert_same(fused, ref, pf, pr, max_ulps=4)


def test_clipping_actually_changes_the_step():
    """Guard against a clip that never bites: with clipping the update differs from without."""
    _, _, clipped, _ = run_pair(lambda: optim.SGD(1.0, global_clipnorm=0.1), SIZES[:3], steps=1)
    _, _, free, _ = run_pair(lambda: optim.SGD(1.0), SIZES[:3], steps=1)
    assert not np.allclose(clipped[2].value, free[2].value)


def test_global_norm_of_the_fused_step_matches_numpy():
    params = make_params([(17,), (1000003,), (3, 5)])
    set_grads(params, np.random.default_rng(3))
    opt = optim.SGD(0.0, global_clipnorm=1.0)
    opt.step(params)
    plan = opt._fused_cache[2]
    sumsq = plan.step(nesterov=False, momentum=False, centered=False, torch_eps=False, amsgrad=False, clip=3,
                      clip_arg=1.0, a=0.0, b=0.0, c=0.0, d=0.0, e=0.0, f=1.0, h=1.0, decay=0.0)
    expect = [float(np.sum(np.square(p.grad, dtype=np.float64))) for p in params]
    np.testing.assert_allclose(sumsq, expect, rtol=1e-12)


@pytest.mark.parametrize("name", ["adam_amsgrad", "rmsprop_all_torch", "sgd_nesterov", "adamw_exclude"])
@pytest.mark.parametrize("clip", [{}, {"global_clipnorm": 1.0}, {"clipnorm": 0.5}])
def test_bitwise_the_same_for_any_thread_count(name, clip, threads):
    def make():
        opt = CONFIGS[name]()
        opt.__init__(**{**opt.get_config(), **clip})
        return opt

    results = []
    for nt in (1, 2, 3, 8):
        backend.set_num_threads(nt)
        opt = make()
        ps = make_params([(1000003,), (70000,), (17,), (300, 400)], names=["a/kernel", "b/bias", "c/x", "d/y"])
        rng = np.random.default_rng(5)
        for _ in range(3):
            set_grads(ps, rng)
            opt.step(ps)
        assert opt._fused_cache is not None
        results.append([p.value.copy() for p in ps] + [a.copy() for v in opt._slots.values() for a in v])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("name", ["adamw_torch_amsgrad", "rmsprop_all_torch"])
def test_every_isa_is_the_same_for_any_thread_count(name, isa, threads):
    results = []
    for nt in (1, 2, 5):
        backend.set_num_threads(nt)
        opt = CONFIGS[name]()
        opt.__init__(**{**opt.get_config(), "global_clipnorm": 1.0})
        ps = make_params([(300007,), (17,), (40, 999)])
        rng = np.random.default_rng(9)
        for _ in range(2):
            set_grads(ps, rng)
            opt.step(ps)
        assert opt._fused_cache is not None
        results.append([p.value.copy() for p in ps])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


def test_state_round_trips_through_the_fused_path():
    """Save after two fused steps, load into a fresh optimizer, continue: the same as never stopping."""
    params = make_params(SIZES[:4])
    rng = np.random.default_rng(7)
    grads = [[rng.standard_normal(p.value.shape).astype(np.float32) for p in params] for _ in range(4)]
    opt = optim.Adam(0.01, amsgrad=True, global_clipnorm=3.0)
    for gs in grads[:2]:
        for p, g in zip(params, gs):
            p.grad[...] = g
        opt.step(params)
    state = opt.state_dict()
    saved_values = [p.value.copy() for p in params]
    for gs in grads[2:]:
        for p, g in zip(params, gs):
            p.grad[...] = g
        opt.step(params)
    straight = [p.value.copy() for p in params]

    again = make_params(SIZES[:4])
    for p, v in zip(again, saved_values):
        p.value[...] = v
    opt2 = optim.Adam()
    opt2.load_state_dict(state)
    for gs in grads[2:]:
        for p, g in zip(again, gs):
            p.grad[...] = g
        opt2.step(again)
    assert opt2._fused_cache is not None
    for a, b in zip(straight, again):
        assert np.array_equal(a, b.value)
    # the state dict holds copies: stepping did not change it
    assert state["iterations"] == 2


def test_loading_state_replaces_the_arrays_the_plan_holds():
    params = make_params([(17,)])
    params[0].grad[...] = 1.0
    opt = optim.SGD(0.1, momentum=0.9)
    opt.step(params)
    state = opt.state_dict()
    opt.step(params)
    opt.load_state_dict(state)  # back to the state after one step
    opt.step(params)
    ref = optim.SGD(0.1, momentum=0.9)
    ref._use_fused = False
    p2 = make_params([(17,)])
    p2[0].grad[...] = 1.0
    for _ in range(3):
        ref.step(p2)
    # the momentum restored by load_state_dict was used: v = 0.9*v1 - 0.1 once more
    np.testing.assert_array_equal(opt._slots["momentum"][0], -0.1 * 0.9 - 0.1 + np.zeros(17, np.float32))
    assert opt.iterations == 2


def test_new_arrays_rebuild_the_plan_and_frozen_params_stay():
    params = make_params([(5,), (7,), (3,)])
    params[1].trainable = False
    frozen = params[1].value.copy()
    opt = optim.Adam(0.1)
    for p in params:
        p.grad[...] = 1.0
    opt.step(params)
    first = opt._fused_cache[2]
    assert len(first) == 2  # the frozen parameter is not in the plan
    np.testing.assert_array_equal(params[1].value, frozen)
    params[0].grad = np.full(5, -1.0, np.float32)  # a new gradient array
    before = params[0].value.copy()
    opt.step(params)
    assert opt._fused_cache[2] is not first
    assert np.all(params[0].value > before)  # moved against the new (negative) gradient
    params[2].grad = None  # no gradient: skipped, as the reference skips it
    kept = params[2].value.copy()
    opt.step(params)
    np.testing.assert_array_equal(params[2].value, kept)


def test_a_copied_or_pickled_optimizer_builds_its_own_plan():
    import pickle

    params = make_params([(5,), (3, 4)])
    for p in params:
        p.grad[...] = 0.5
    opt = optim.Adam(0.1, amsgrad=True)
    opt.step(params)
    for other in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert other._fused_cache is None
        mine = copy.deepcopy(params)
        other.step(mine)
        assert other._fused_cache is not None and other._fused_cache[2] is not opt._fused_cache[2]
        assert other._slots["m"][0] is not opt._slots["m"][0]
    ref = copy.deepcopy(params)
    opt.step(params)
    assert not np.array_equal(params[0].value, ref[0].value)


def test_float64_and_subclasses_take_the_numpy_path():
    p64 = [Parameter("w", np.ones(4), dtype=np.float64)]
    p64[0].grad[...] = 1.0
    opt = optim.Adam(0.1)
    opt.step(p64)
    assert opt._fused_cache is None and p64[0].value.dtype == np.float64

    class Halved(optim.SGD):
        def _update(self, i, p, w, g, lr, t):
            return w - 0.5 * lr * g

    p = make_params([(4,)])
    p[0].grad[...] = 1.0
    start = p[0].value.copy()
    h = Halved(1.0)
    h.step(p)
    assert h._fused_cache is None
    np.testing.assert_allclose(p[0].value, start - 0.5)

    class OwnAdam(optim.Adam):
        def _adam(self, i, w, g, lr, t):
            return w

    p[0].grad[...] = 1.0
    before = p[0].value.copy()
    OwnAdam().step(p)
    np.testing.assert_array_equal(p[0].value, before)


@pytest.mark.parametrize("kw", [{}, {"clipnorm": 1.0}, {"global_clipnorm": 1.0}, {"clipvalue": 0.1}])
def test_nan_and_inf_gradients_spread_as_in_the_reference(kw):
    def make():
        return optim.Adam(0.01, amsgrad=True, **kw)

    shapes = [(17,), (40,)]
    fused, ref = make(), make()
    ref._use_fused = False
    pf, pr = make_params(shapes), make_params(shapes)
    for ps in (pf, pr):
        ps[0].grad[...] = 0.5
        ps[0].grad[3] = np.nan
        ps[1].grad[...] = -0.25
        ps[1].grad[5] = np.inf
    fused.step(pf)
    with np.errstate(all="ignore"):  # NumPy warns of inf / inf; the kernel quietly gives NaN too
        ref.step(pr)
    assert fused._fused_cache is not None
    for a, b in zip(pf, pr):
        np.testing.assert_array_equal(np.isnan(a.value), np.isnan(b.value))
        np.testing.assert_allclose(a.value, b.value, rtol=1e-6, atol=0, equal_nan=True)
    assert np.isnan(pf[0].value[3])


def test_a_bad_gradient_raises_before_anything_changes():
    params = make_params([(5,), (7,)])
    params[0].grad[...] = 1.0
    opt = optim.Adam(0.1)
    opt.step(params)
    values = [p.value.copy() for p in params]
    params[1].grad = np.ones(6, np.float32)
    with pytest.raises(ValueError, match=r"params\[1\]: grad shape"):
        opt.step(params)
    for p, v in zip(params, values):
        np.testing.assert_array_equal(p.value, v)


def test_plan_checks_its_arrays():
    core = backend.core()
    w = np.zeros(4, np.float32)
    with pytest.raises(TypeError, match=r"grads\[0\]: expected dtype float32"):
        core.OptimPlan(0, [w], [np.zeros(4)], [], [], [], [])
    with pytest.raises(ValueError, match=r"grads\[0\]: expected 4 elements"):
        core.OptimPlan(0, [w], [np.zeros(3, np.float32)], [], [], [], [])
    with pytest.raises(ValueError, match=r"values\[0\]: expected a C-contiguous"):
        core.OptimPlan(0, [np.zeros((4, 4), np.float32)[:, 0]], [w], [], [], [], [])
    ro = np.zeros(4, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"values\[0\]: the array must be writeable"):
        core.OptimPlan(0, [ro], [w], [], [], [], [])
    with pytest.raises(ValueError, match="kind"):
        core.OptimPlan(7, [w], [w], [], [], [], [])
    plan = core.OptimPlan(2, [w], [w.copy()], [], [], [], [])
    with pytest.raises(ValueError, match="slots"):
        plan.step(nesterov=False, momentum=False, centered=False, torch_eps=False, amsgrad=False, clip=0,
                  clip_arg=0.0, a=0.1, b=0.1, c=0.1, d=0.0, e=1e-7, f=1.0, h=1.0, decay=0.0)
    with pytest.raises(ValueError, match="clip"):
        plan.step(nesterov=False, momentum=False, centered=False, torch_eps=False, amsgrad=False, clip=9,
                  clip_arg=0.0, a=0.1, b=0.1, c=0.1, d=0.0, e=1e-7, f=1.0, h=1.0, decay=0.0)


def test_training_a_model_uses_the_fused_step_and_matches_the_reference():
    def train(use_fused):
        fr.set_seed(0)
        model = fr.Sequential([fr.layers.Embedding(50, 8, mask_zero=True, seed=1), fr.layers.LSTM(16, seed=2),
                               fr.layers.Dense(1, activation="sigmoid", seed=3)])
        opt = optim.Adam(0.01, clipnorm=1.0)
        opt._use_fused = use_fused
        model.compile(optimizer=opt, loss="binary_crossentropy")
        rng = np.random.default_rng(0)
        x = rng.integers(0, 50, size=(64, 9))
        y = rng.integers(0, 2, size=(64, 1)).astype(np.float32)
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=False)
        return opt, [p.value.copy() for p in model.parameters()]

    fo, fw = train(True)
    ro, rw = train(False)
    assert fo._fused_cache is not None and ro._fused_cache is None
    for a, b in zip(fw, rw):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
