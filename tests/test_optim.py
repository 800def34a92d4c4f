"""Optimizers: hand-computed steps, PyTorch cross-checks, clipping, schedules and state restore."""
import math

import numpy as np
import pytest
import torch

from fastrnn import optim
from fastrnn.layers import Parameter


def P(value, name="w"):
    return Parameter(name, np.asarray(value, dtype=np.float64), dtype=np.float64)


def run(opt, w0, grads, name="w"):
    """Apply opt to one parameter for each gradient in grads; return the values after each step."""
    p = P(w0, name)
    out = []
    for g in grads:
        p.grad[...] = g
        opt.step([p])
        out.append(p.value.copy())
    return out


G = [np.array([0.5, 1.0]), np.array([-1.0, 0.25]), np.array([0.0, 0.0])]
W0 = np.array([1.0, -2.0])


# ----------------------------------------------------------------------------- hand-computed values
def test_sgd_plain_hand_values():
    w = run(optim.SGD(learning_rate=0.1), W0, G[:2])
    np.testing.assert_allclose(w[0], [0.95, -2.1], rtol=1e-14)
    np.testing.assert_allclose(w[1], [1.05, -2.125], rtol=1e-14)


def test_sgd_momentum_hand_values():
    # v1 = -0.1 g1 = [-0.05, -0.1]; v2 = 0.9 v1 - 0.1 g2 = [0.055, -0.115]; v3 = 0.9 v2
    w = run(optim.SGD(learning_rate=0.1, momentum=0.9), W0, G)
    np.testing.assert_allclose(w[0], [0.95, -2.1], rtol=1e-14)
    np.testing.assert_allclose(w[1], [1.005, -2.215], rtol=1e-14)
    np.testing.assert_allclose(w[2], [1.0545, -2.3185], rtol=1e-14)


def test_sgd_nesterov_hand_values():
    # w += 0.9 v - 0.1 g with the updated v
    w = run(optim.SGD(lr=0.1, momentum=0.9, nesterov=True), W0, G)
    np.testing.assert_allclose(w[0], [0.905, -2.19], rtol=1e-14)
    np.testing.assert_allclose(w[1], [0.905 + 0.0495 + 0.1, -2.19 - 0.1035 - 0.025], rtol=1e-14)
    np.testing.assert_allclose(w[2], [1.0545 + 0.9 * 0.0495, -2.3185 - 0.9 * 0.1035], rtol=1e-14)


def test_rmsprop_hand_values():
    lr, rho, eps = 0.01, 0.9, 1e-7
    w = run(optim.RMSprop(learning_rate=lr, rho=rho, epsilon=eps), W0, G[:2])
    s1 = 0.1 * G[0] ** 2
    w1 = W0 - lr * G[0] / np.sqrt(s1 + eps)
    s2 = 0.9 * s1 + 0.1 * G[1] ** 2
    w2 = w1 - lr * G[1] / np.sqrt(s2 + eps)
    np.testing.assert_allclose(w[0], w1, rtol=1e-13)
    np.testing.assert_allclose(w[1], w2, rtol=1e-13)
    # first step of plain RMSprop moves each entry by lr / sqrt(0.1) (up to epsilon)
    np.testing.assert_allclose(np.abs(w[0] - W0), 0.01 / math.sqrt(0.1), rtol=1e-5)


def test_adam_hand_values_keras_epsilon():
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-7
    w = run(optim.Adam(learning_rate=lr, epsilon=eps), W0, G)
    # the paper's form with "epsilon hat": Keras's eps divided by sqrt(1 - b2^t) after bias correction
    m = v = 0.0
    ref = W0.copy()
    for t, g in enumerate(G, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        ref = ref - lr * mhat / (np.sqrt(vhat) + eps / math.sqrt(1 - b2 ** t))
        np.testing.assert_allclose(w[t - 1], ref, rtol=1e-13)
    # the first Adam step moves every entry by about lr
    np.testing.assert_allclose(np.abs(w[0] - W0), 0.1, rtol=1e-4)


def test_adamw_hand_values():
    lr, wd = 0.1, 0.5
    w = run(optim.AdamW(learning_rate=lr, weight_decay=wd), W0, G[:1])
    # decay first (w -= lr*wd*w), then the Adam step of size ~lr*sign(g)
    a = math.sqrt(0.001) * np.abs(G[0])  # sqrt(v1) = sqrt(0.001) |g|
    expected = W0 * (1 - lr * wd) - lr * np.sign(G[0]) * a / (a + 1e-7)
    np.testing.assert_allclose(w[0], expected, rtol=1e-13)
    np.testing.assert_allclose(w[0], [0.95 - 0.1, -1.9 - 0.1], rtol=1e-5)


def test_adamw_exclude_from_weight_decay():
    opt = optim.AdamW(learning_rate=0.1, weight_decay=0.5, exclude_from_weight_decay=["bias"])
    pw, pb = P([2.0], "dense/kernel"), P([2.0], "dense/bias")
    opt.step([pw, pb])  # zero gradients: only the decay moves anything
    assert pw.value[0] == pytest.approx(2.0 * (1 - 0.05))
    assert pb.value[0] == 2.0


# ----------------------------------------------------------------------------- PyTorch cross-checks
def _torch_run(make_torch, w0, grads):
    t = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    opt = make_torch([t])
    out = []
    for g in grads:
        t.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        out.append(t.detach().numpy().copy())
    return out


RNG = np.random.default_rng(0)
GR = [RNG.normal(size=5) for _ in range(4)]
WR = RNG.normal(size=5)

TORCH_CASES = {
    "sgd_momentum": (lambda: optim.SGD(0.05, momentum=0.8),
                     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8)),
    "sgd_nesterov": (lambda: optim.SGD(0.05, momentum=0.8, nesterov=True),
                     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True)),
    "adam": (lambda: optim.Adam(0.01, epsilon=1e-8, epsilon_style="torch"),
             lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-8)),
    "adam_amsgrad": (lambda: optim.Adam(0.01, epsilon=1e-8, amsgrad=True, epsilon_style="torch"),
                     lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-8, amsgrad=True)),
    "adamw": (lambda: optim.AdamW(0.01, weight_decay=0.1, epsilon=1e-8, epsilon_style="torch"),
              lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1, eps=1e-8)),
    "rmsprop_centered_momentum": (
        lambda: optim.RMSprop(0.01, rho=0.9, momentum=0.5, centered=True, epsilon=1e-8, epsilon_style="torch"),
        lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, momentum=0.5, centered=True, eps=1e-8)),
}


@pytest.mark.parametrize("case", sorted(TORCH_CASES))
def test_matches_torch(case):
    ours, theirs = TORCH_CASES[case]
    a = run(ours(), WR, GR)
    b = _torch_run(theirs, WR, GR)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)


def test_keras_and_torch_epsilon_differ():
    a = run(optim.Adam(0.1, epsilon=1e-3), [1.0], [[1e-3]])[0]
    b = run(optim.Adam(0.1, epsilon=1e-3, epsilon_style="torch"), [1.0], [[1e-3]])[0]
    assert abs(a[0] - b[0]) > 1e-3


# ----------------------------------------------------------------------------- clipping
def test_clipnorm_is_per_parameter():
    opt = optim.SGD(1.0, clipnorm=1.0)
    p1, p2 = P([0.0, 0.0]), P([0.0, 0.0])
    p1.grad[...] = [3.0, 4.0]
    p2.grad[...] = [0.3, 0.4]
    opt.step([p1, p2])
    np.testing.assert_allclose(p1.value, [-0.6, -0.8], rtol=1e-14)
    np.testing.assert_allclose(p2.value, [-0.3, -0.4], rtol=1e-14)
    np.testing.assert_array_equal(p1.grad, [3.0, 4.0])  # the gradients themselves are untouched


def test_global_clipnorm_scales_all_together():
    opt = optim.SGD(1.0, global_clipnorm=2.5)
    p1, p2 = P([0.0, 0.0]), P([0.0, 0.0])
    p1.grad[...] = [3.0, 0.0]
    p2.grad[...] = [0.0, 4.0]  # global norm 5
    opt.step([p1, p2])
    np.testing.assert_allclose(p1.value, [-1.5, 0.0], rtol=1e-14)
    np.testing.assert_allclose(p2.value, [0.0, -2.0], rtol=1e-14)


def test_clipvalue():
    w = run(optim.SGD(1.0, clipvalue=0.5), [0.0, 0.0, 0.0], [[3.0, -0.2, -7.0]])
    np.testing.assert_allclose(w[0], [-0.5, 0.2, 0.5], rtol=1e-14)


def test_clipnorm_with_momentum_hand_values():
    # clipped g = [0.6, 0.8] each step; v1 = -0.1 g; v2 = 0.9 v1 - 0.1 g = -0.19 g
    w = run(optim.SGD(0.1, momentum=0.9, clipnorm=1.0), [0.0, 0.0], [[3.0, 4.0], [30.0, 40.0]])
    np.testing.assert_allclose(w[1], -(0.1 + 0.19) * np.array([0.6, 0.8]), rtol=1e-14)


def test_only_one_clipping_option():
    with pytest.raises(ValueError, match="Only one of clipnorm, clipvalue and global_clipnorm"):
        optim.Adam(clipnorm=1.0, global_clipnorm=1.0)


# ----------------------------------------------------------------------------- schedules
def test_exponential_decay_values_and_use():
    s = optim.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)
    assert [s(0), s(1), s(2), s(4)] == pytest.approx([0.1, 0.1 * 0.5 ** 0.5, 0.05, 0.025])
    st = optim.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5, staircase=True)
    assert [st(0), st(1), st(2), st(3)] == pytest.approx([0.1, 0.1, 0.05, 0.05])
    w = run(optim.SGD(s), [0.0], [[1.0]] * 3)
    assert w[-1][0] == pytest.approx(-(0.1 + 0.1 * 0.5 ** 0.5 + 0.05))


def test_step_decay_values_and_use():
    s = optim.StepDecay(0.1, step_size=2, gamma=0.1)
    assert [s(0), s(1), s(2), s(3), s(4)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
    opt = optim.SGD(s, momentum=0.5)
    w = run(opt, [0.0], [[1.0]] * 3)
    # v1 = -0.1; v2 = -0.05 - 0.1 = -0.15; v3 = -0.075 - 0.01 = -0.085
    assert w[-1][0] == pytest.approx(-0.1 - 0.15 - 0.085)
    assert opt.iterations == 3 and opt.current_learning_rate == pytest.approx(0.01)
    with pytest.raises(TypeError, match="not settable"):
        opt.learning_rate = 0.5


# ----------------------------------------------------------------------------- state
@pytest.mark.parametrize("make", [
    lambda: optim.Adam(0.01, amsgrad=True, clipnorm=0.5),
    lambda: optim.RMSprop(0.01, momentum=0.9, centered=True),
    lambda: optim.SGD(optim.ExponentialDecay(0.1, 3, 0.9), momentum=0.9, nesterov=True),
    lambda: optim.AdamW(0.01, weight_decay=0.1),
])
def test_state_dict_restores_identical_training(make):
    rng = np.random.default_rng(5)
    grads = [[rng.normal(size=(3, 2)), rng.normal(size=4)] for _ in range(5)]
    ps = [P(rng.normal(size=(3, 2)), "a"), P(rng.normal(size=4), "b")]
    opt = make()
    for g in grads[:2]:
        for p, gi in zip(ps, g):
            p.grad[...] = gi
        opt.step(ps)
    state = opt.state_dict()
    copies = [P(p.value.copy(), p.name) for p in ps]
    for g in grads[2:]:
        for p, gi in zip(ps, g):
            p.grad[...] = gi
        opt.step(ps)
    fresh = make()
    fresh.load_state_dict(state)
    assert fresh.iterations == 2
    for g in grads[2:]:
        for p, gi in zip(copies, g):
            p.grad[...] = gi
        fresh.step(copies)
    for a, b in zip(ps, copies):
        np.testing.assert_array_equal(a.value, b.value)


def test_state_dict_restores_changed_learning_rate():
    opt = optim.Adam(0.01)
    opt.learning_rate = 0.5
    other = optim.Adam()
    other.load_state_dict(opt.state_dict())
    assert other.current_learning_rate == 0.5


def test_state_dict_holds_copies():
    opt = optim.SGD(0.1, momentum=0.9)
    p = P([1.0])
    p.grad[...] = 1.0
    opt.step([p])
    st = opt.state_dict()
    st["slots"]["momentum"][0][...] = 99.0
    assert opt.state_dict()["slots"]["momentum"][0][0] == pytest.approx(-0.1)


def test_load_state_dict_errors():
    adam = optim.Adam()
    with pytest.raises(ValueError, match="saved for a SGD optimizer"):
        adam.load_state_dict(optim.SGD().state_dict())
    with pytest.raises(ValueError, match="expected a dict from Optimizer.state_dict"):
        adam.load_state_dict({"slots": {}})
    p = P(np.zeros(3))
    a = optim.Adam()
    a.step([p])
    b = optim.Adam()
    b.load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match=r"params\[0\]: shape \(4,\) does not match"):
        b.step([P(np.zeros(4))])
    with pytest.raises(ValueError, match="holds state for 1 parameters but step\\(\\) got 2"):
        b.step([P(np.zeros(3)), P(np.zeros(3))])


# ----------------------------------------------------------------------------- misc
def test_non_trainable_parameters_are_not_updated():
    p, q = P([1.0]), P([1.0])
    q.trainable = False
    p.grad[...] = q.grad[...] = 1.0
    optim.SGD(0.5).step([p, q])
    assert p.value[0] == 0.5 and q.value[0] == 1.0


def test_bad_grad_shape_changes_nothing():
    p, q = P([1.0, 2.0], "a"), P([3.0, 4.0], "b")
    p.grad[...] = 1.0
    q.grad = np.ones(3)  # wrong shape on the later parameter
    opt = optim.Adam(0.1)
    with pytest.raises(ValueError, match=r"params\[1\]: grad shape \(3,\) differs from value shape \(2,\)"):
        opt.step([p, q])
    np.testing.assert_array_equal(p.value, [1.0, 2.0])
    np.testing.assert_array_equal(q.value, [3.0, 4.0])
    assert opt.iterations == 0
    # once fixed, the first step is the same as a fresh optimizer's
    q.grad = np.ones(2)
    opt.step([p, q])
    fresh_p = P([1.0, 2.0])
    fresh_p.grad[...] = 1.0
    optim.Adam(0.1).step([fresh_p])
    np.testing.assert_array_equal(p.value, fresh_p.value)


def test_float32_parameters_stay_float32_in_place():
    p = Parameter("w", np.ones(3))
    ref = p.value
    p.grad[...] = 1.0
    optim.Adam(0.1).step([p])
    assert p.value is ref and p.value.dtype == np.float32
    np.testing.assert_allclose(p.value, 0.9, rtol=1e-5)


def test_get_and_bad_arguments():
    assert isinstance(optim.get("Adam"), optim.Adam)
    assert isinstance(optim.get("sgd"), optim.SGD) and optim.get("sgd").current_learning_rate == 0.01
    assert optim.get("rmsprop").current_learning_rate == 0.001
    with pytest.raises(ValueError, match="unknown optimizer 'adamm'"):
        optim.get("adamm")
    with pytest.raises(TypeError, match="optimizer: expected a str or Optimizer"):
        optim.get(1.0)
    with pytest.raises(ValueError, match="learning_rate: expected a non-negative number"):
        optim.SGD(-1.0)
    with pytest.raises(ValueError, match=r"momentum: expected a number in \[0, 1\]"):
        optim.SGD(0.1, momentum=1.5)
    with pytest.raises(ValueError, match=r"beta_1: expected a number in \[0, 1\)"):
        optim.Adam(beta_1=1.0)
    with pytest.raises(ValueError, match="epsilon_style: expected 'keras' or 'torch'"):
        optim.Adam(epsilon_style="tf")
    with pytest.raises(ValueError, match="needs the list of parameters"):
        optim.SGD().step()
    with pytest.raises(TypeError, match=r"params\[0\]: expected a Parameter"):
        optim.SGD().step([np.zeros(2)])
    cfg = optim.serialize(optim.Adam(optim.StepDecay(0.1, 5), beta_2=0.99))
    back = optim.deserialize(cfg)
    assert isinstance(back.learning_rate, optim.StepDecay) and back.beta_2 == 0.99
