"""PyTorch interop: from_torch / to_torch give layers with the same outputs as the torch modules."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastrnn import interop, layers

T, B, I, H = 5, 3, 4, 6
ATOL = 2e-5

MODES = {
    "rnn_tanh": lambda **kw: torch.nn.RNN(nonlinearity="tanh", **kw),
    "rnn_relu": lambda **kw: torch.nn.RNN(nonlinearity="relu", **kw),
    "lstm": lambda **kw: torch.nn.LSTM(**kw),
    "gru": lambda **kw: torch.nn.GRU(**kw),
}
KIND = {"rnn_tanh": layers.SimpleRNN, "rnn_relu": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}


def _torch_module(mode, num_layers, bidirectional, batch_first, seed=0):
    torch.manual_seed(seed)
    m = MODES[mode](input_size=I, hidden_size=H, num_layers=num_layers, bidirectional=bidirectional,
                    batch_first=batch_first)
    with torch.no_grad():
        for _name, p in m.named_parameters():
            # wide random values everywhere (bias_hh included, so SimpleRNN/LSTM's b_ih + b_hh matters)
            p.uniform_(-0.6, 0.6)
    return m.eval()


def _torch_out(m, x_bti):
    xt = torch.from_numpy(x_bti)
    if not m.batch_first:
        xt = xt.transpose(0, 1)
    with torch.no_grad():
        y = m(xt)[0]
    if not m.batch_first:
        y = y.transpose(0, 1)
    return y.numpy()


def _apply(stack, x):
    if not isinstance(stack, list):
        stack = [stack]
    for layer in stack:
        x = layer(x)
    return x


def _x(seed=1, b=B, t=T):
    return np.random.default_rng(seed).uniform(-1, 1, size=(b, t, I)).astype(np.float32)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("mode", list(MODES))
def test_from_torch_outputs_match(mode, num_layers, bidirectional, batch_first):
    m = _torch_module(mode, num_layers, bidirectional, batch_first)
    got = interop.from_torch(m)
    if num_layers == 1:
        assert not isinstance(got, list)
    else:
        assert isinstance(got, list) and len(got) == num_layers
    first = got[0] if isinstance(got, list) else got
    if bidirectional:
        assert isinstance(first, layers.Bidirectional)
        assert isinstance(first.forward_layer, KIND[mode])
    else:
        assert isinstance(first, KIND[mode])
    x = _x()
    expected = _torch_out(m, x)
    y = _apply(got, x)
    assert y.shape == (B, T, H * (2 if bidirectional else 1))
    np.testing.assert_allclose(y, expected, atol=ATOL, rtol=1e-5)


def _fastrnn_stack(mode, num_layers, bidirectional, seed=0):
    cls = KIND[mode]
    kw = {"return_sequences": True}
    if mode == "rnn_relu":
        kw["activation"] = "relu"
    stack = []
    rng = np.random.default_rng(seed)
    for k in range(num_layers):
        layer = cls(H, **kw)
        if bidirectional:
            layer = layers.Bidirectional(layer, merge_mode="concat")
        layer.build((None, I if k == 0 else H * (2 if bidirectional else 1)))
        for p in layer.parameters():
            p.assign(rng.uniform(-0.6, 0.6, size=p.shape))
        stack.append(layer)
    return stack


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("mode", list(MODES))
def test_to_torch_outputs_match(mode, num_layers, bidirectional, batch_first):
    stack = _fastrnn_stack(mode, num_layers, bidirectional)
    m = interop.to_torch(stack if num_layers > 1 else stack[0], batch_first=batch_first)
    assert m.num_layers == num_layers and m.bidirectional == bidirectional and m.batch_first == batch_first
    if mode.startswith("rnn"):
        assert m.nonlinearity == mode.split("_")[1]
    x = _x(seed=2)
    np.testing.assert_allclose(_torch_out(m, x), _apply(stack, x), atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("mode", list(MODES))
def test_round_trip_parameters(mode):
    m = _torch_module(mode, 2, True, True, seed=3)
    back = interop.to_torch(interop.from_torch(m))
    src = dict(m.named_parameters())
    dst = dict(back.named_parameters())
    assert set(src) == set(dst)
    for name in src:
        a, b = src[name].detach().numpy(), dst[name].detach().numpy()
        if mode == "gru" or name.startswith("weight"):
            np.testing.assert_array_equal(b, a, err_msg=name)
        elif name.startswith("bias_ih"):
            # SimpleRNN / LSTM: one bias b = bias_ih + bias_hh, exported into bias_ih
            np.testing.assert_allclose(b, a + src[name.replace("bias_ih", "bias_hh")].detach().numpy(),
                                       rtol=0, atol=1e-6)
        else:
            np.testing.assert_array_equal(b, np.zeros_like(a), err_msg=name)


def test_from_torch_without_bias():
    torch.manual_seed(4)
    m = torch.nn.LSTM(I, H, bias=False, batch_first=True).eval()
    x = _x(seed=5)
    np.testing.assert_allclose(interop.from_torch(m)(x), _torch_out(m, x), atol=ATOL)


def test_bidirectional_with_padding_matches_packed_sequence():
    # right-padded batch: torch's packed sequences vs fastrnn's mask
    m = _torch_module("gru", 1, True, True, seed=6)
    lengths = np.array([5, 2, 4])
    x = _x(seed=7)
    mask = np.arange(T)[None, :] < lengths[:, None]
    x = np.where(mask[..., None], x, 0).astype(np.float32)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths),
                                                     batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        out, _ = m(packed)
    expected, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    y = interop.from_torch(m)(x, mask=mask)
    np.testing.assert_allclose(y, expected.numpy(), atol=ATOL)


def test_stacked_unidirectional_with_padding_matches_packed_sequence():
    # torch pads packed outputs with 0: the converted layers output 0 at padded steps too
    m = _torch_module("gru", 2, False, True, seed=10)
    lengths = np.array([5, 2, 4])
    x = _x(seed=11)
    mask = np.arange(T)[None, :] < lengths[:, None]
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths),
                                                     batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        out, _ = m(packed)
    expected, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    y = x
    for layer in interop.from_torch(m):
        y = layer(y, mask=mask)
    np.testing.assert_allclose(y, expected.numpy(), atol=ATOL)
    assert not y[~mask].any()


def test_converted_model_runs_without_torch_state():
    # the fastrnn layers own copies: changing the torch module afterwards changes nothing
    m = _torch_module("lstm", 1, False, True, seed=8)
    layer = interop.from_torch(m)
    x = _x(seed=9)
    before = layer(x)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
    np.testing.assert_array_equal(layer(x), before)


def test_errors():
    with pytest.raises(TypeError, match="torch.nn.RNN, LSTM or GRU"):
        interop.from_torch(torch.nn.Linear(3, 4))
    with pytest.raises(ValueError, match="proj_size"):
        interop.from_torch(torch.nn.LSTM(I, H, proj_size=2))
    with pytest.raises(TypeError, match="SimpleRNN, LSTM, GRU"):
        interop.to_torch(layers.Dense(3))
    back = layers.LSTM(H, go_backwards=True)
    back.build((None, I))
    with pytest.raises(ValueError, match="go_backwards"):
        interop.to_torch(back)
    rev = layers.Bidirectional(layers.LSTM(H, return_sequences=True, go_backwards=True), input_shape=(T, I))
    with pytest.raises(ValueError, match="go_backwards"):
        interop.to_torch(rev)
    mixed = [_fastrnn_stack("lstm", 1, False)[0], _fastrnn_stack("gru", 1, False)[0]]
    with pytest.raises(ValueError, match="one cell kind"):
        interop.to_torch(mixed)
    summed = layers.Bidirectional(layers.GRU(H, return_sequences=True), merge_mode="sum")
    summed.build((None, I))
    with pytest.raises(ValueError, match="merge_mode"):
        interop.to_torch(summed)
    unbuilt = layers.GRU(H)
    with pytest.raises(ValueError, match="not built"):
        interop.to_torch(unbuilt)
    a, b = _fastrnn_stack("gru", 1, False)[0], _fastrnn_stack("gru", 1, False)[0]
    with pytest.raises(ValueError, match="input features"):
        interop.to_torch([a, b])  # b takes I=4 features, a gives H=6
