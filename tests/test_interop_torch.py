"""PyTorch interop: from_torch / to_torch give layers with the same outputs as the torch modules."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fastrnn as fr
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
        return stack(x)
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
        assert isinstance(got, layers.Layer)
        first = got
    else:
        assert isinstance(got, fr.Sequential) and len(got.layers) == num_layers
        first = got.layers[0]
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
    y = interop.from_torch(m)(x, mask=mask)
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


# --- multi-layer modules: one Sequential, and back to one torch module ---

# awkward and round sizes: (input_size, hidden_size, batch, steps)
SIZES = [(1, 1, 1, 1), (3, 17, 2, 7), (33, 5, 3, 4), (8, 16, 4, 10)]


def _rand_module(mode, num_layers, bidirectional, batch_first, size, seed=0, dropout=0.0):
    torch.manual_seed(seed)
    isz, hsz = size[0], size[1]
    m = MODES[mode](input_size=isz, hidden_size=hsz, num_layers=num_layers, bidirectional=bidirectional,
                    batch_first=batch_first, dropout=dropout)
    with torch.no_grad():
        for p in m.parameters():
            p.uniform_(-0.6, 0.6)
    return m.eval()


def _assert_same_parameters(src_module, dst_module, mode):
    src, dst = dict(src_module.named_parameters()), dict(dst_module.named_parameters())
    assert set(src) == set(dst)
    for name, p in src.items():
        a, b = p.detach().numpy(), dst[name].detach().numpy()
        if mode == "gru" or name.startswith("weight"):
            np.testing.assert_array_equal(b, a, err_msg=name)
        elif name.startswith("bias_ih"):
            hh = src[name.replace("bias_ih", "bias_hh")].detach().numpy()
            np.testing.assert_allclose(b, a + hh, rtol=0, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(b, np.zeros_like(a), err_msg=name)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [2, 3])
@pytest.mark.parametrize("mode", list(MODES))
def test_from_torch_stack_is_one_sequential(mode, num_layers, bidirectional, batch_first, size):
    m = _rand_module(mode, num_layers, bidirectional, batch_first, size, seed=num_layers)
    model = interop.from_torch(m)
    assert isinstance(model, fr.Sequential) and len(model.layers) == num_layers
    ndir = 2 if bidirectional else 1
    for lay in model.layers:
        inner = lay.forward_layer if bidirectional else lay
        assert isinstance(inner, KIND[mode]) and inner.return_sequences
        assert isinstance(lay, layers.Bidirectional) == bidirectional
    isz, hsz, b, t = size
    x = np.random.default_rng(num_layers).uniform(-1, 1, size=(b, t, isz)).astype(np.float32)
    expected = _torch_out(m, x)
    assert expected.shape == (b, t, hsz * ndir)
    np.testing.assert_allclose(model(x), expected, atol=ATOL, rtol=1e-5)
    np.testing.assert_allclose(model.predict(x), expected, atol=ATOL, rtol=1e-5)
    # and back: one torch module with the same parameters and the same outputs
    back = interop.to_torch(model, batch_first=batch_first)
    assert type(back) is type(m)
    assert (back.num_layers, back.bidirectional, back.batch_first) == (num_layers, bidirectional, batch_first)
    assert (back.input_size, back.hidden_size) == (isz, hsz)
    _assert_same_parameters(m, back, mode)
    np.testing.assert_allclose(_torch_out(back, x), expected, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("mode", list(MODES))
def test_to_torch_of_a_sequential(mode, num_layers, bidirectional):
    # a Sequential built in fastrnn (Input first, random weights) becomes one torch module
    stack = _fastrnn_stack(mode, num_layers, bidirectional, seed=num_layers)
    model = fr.Sequential([fr.Input((None, I))] + stack)
    m = interop.to_torch(model)
    assert (m.num_layers, m.bidirectional, m.input_size, m.hidden_size) == (num_layers, bidirectional, I, H)
    assert not m.training
    x = _x(seed=12, b=3, t=9)
    np.testing.assert_allclose(_torch_out(m, x), model.predict(x), atol=ATOL, rtol=1e-5)
    # a converted-back model has the fastrnn weights exactly
    again = interop.from_torch(m)
    again = again if isinstance(again, fr.Sequential) else fr.Sequential([again])
    for a, b in zip(model.get_weights(), again.get_weights()):
        assert a.shape == b.shape
    np.testing.assert_allclose(again.predict(x), model.predict(x), atol=1e-6)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_to_torch_last_layer_without_sequences_is_the_final_state(bidirectional):
    stack = _fastrnn_stack("gru", 2, bidirectional, seed=13)
    last = stack[-1].forward_layer if bidirectional else stack[-1]
    last_seq = layers.Bidirectional(layers.GRU(H), merge_mode="concat") if bidirectional else layers.GRU(H)
    last_seq.build((None, H * (2 if bidirectional else 1)))
    last_seq.set_weights(stack[-1].get_weights())
    assert not (last_seq.forward_layer if bidirectional else last_seq).return_sequences and last.return_sequences
    model = fr.Sequential([stack[0], last_seq])
    m = interop.to_torch(model)
    x = _x(seed=14)
    with torch.no_grad():
        _, h_n = m(torch.from_numpy(x))
    final = torch.cat([h_n[-2], h_n[-1]], 1) if bidirectional else h_n[-1]
    np.testing.assert_allclose(model.predict(x), final.numpy(), atol=ATOL, rtol=1e-5)


def test_from_torch_dropout_becomes_dropout_layers_and_back():
    m = _rand_module("lstm", 3, True, True, (5, 7), seed=15, dropout=0.25)
    model = interop.from_torch(m)
    kinds = [type(lay).__name__ for lay in model.layers]
    assert kinds == ["Bidirectional", "Dropout", "Bidirectional", "Dropout", "Bidirectional"]
    assert all(lay.rate == 0.25 for lay in model.layers if isinstance(lay, layers.Dropout))
    x = np.random.default_rng(16).uniform(-1, 1, size=(2, 6, 5)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), _torch_out(m, x), atol=ATOL, rtol=1e-5)
    # training mode drops elements (the Dropout layers are live), inference does not
    assert not np.allclose(model(x, training=True), model.predict(x), atol=1e-3)
    back = interop.to_torch(model)
    assert back.dropout == 0.25 and back.num_layers == 3
    _assert_same_parameters(m, back, "lstm")
    assert [type(lay).__name__ for lay in interop.from_torch(_rand_module("gru", 2, False, True, (3, 4))).layers] \
        == ["GRU", "GRU"]


def test_from_torch_sequential_trains_saves_and_loads(tmp_path):
    # the converted stack is an ordinary model: fit it, save it, load it, convert it back
    m = _rand_module("gru", 2, False, False, (3, 5), seed=17)
    model = interop.from_torch(m)
    head = fr.Sequential(list(model.layers) + [layers.TimeDistributed(layers.Dense(1))])
    head.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(18).uniform(-1, 1, size=(16, 6, 3)).astype(np.float32)
    y = x.sum(axis=2, keepdims=True)
    before = interop.to_torch(model).weight_hh_l1.detach().numpy().copy()
    head.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert not np.array_equal(interop.to_torch(model).weight_hh_l1.detach().numpy(), before)
    path = tmp_path / "stack.fastrnn"
    model.save(path)
    loaded = fr.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    np.testing.assert_allclose(_torch_out(interop.to_torch(loaded, batch_first=False), x), model.predict(x),
                               atol=ATOL)


def _built(layer, input_size):
    layer.build((None, input_size))
    return layer


def test_to_torch_refuses_what_one_module_cannot_express():
    seq = layers.GRU(H, return_sequences=True)
    cases = [
        (fr.Sequential([_built(layers.LSTM(H, return_sequences=True), I), _built(layers.GRU(H), H)]),
         "one cell kind"),
        (fr.Sequential([_built(layers.GRU(H, return_sequences=True), I), _built(layers.GRU(H + 1), H)]),
         "one size"),
        (fr.Sequential([_built(layers.SimpleRNN(H, return_sequences=True), I),
                        _built(layers.SimpleRNN(H, activation="relu"), H)]), "one activation"),
        (fr.Sequential([_built(layers.GRU(H, return_sequences=True), I),
                        _built(layers.Bidirectional(layers.GRU(H)), H)]), "bidirectional"),
        (fr.Sequential([layers.Embedding(10, I), layers.GRU(H)]), r"entry 0 .*Embedding"),
        (fr.Sequential([_built(layers.GRU(H, return_sequences=True), I), layers.TimeDistributed(layers.Dense(3))]),
         r"entry 1 .*TimeDistributed"),
        (fr.Sequential([_built(layers.GRU(H), I), layers.Dense(3)]), r"entry 1 .*Dense"),
        ([_built(layers.GRU(H), I), _built(layers.GRU(H), H)], "return_sequences=True"),
        (fr.Sequential([_built(seq, I), layers.Dropout(0.2)]), "between two recurrent layers"),
        (fr.Sequential([layers.Dropout(0.2), _built(layers.GRU(H), I)]), "between two recurrent layers"),
        (fr.Sequential([_built(layers.GRU(H, return_sequences=True), I), layers.Dropout(0.2), layers.Dropout(0.2),
                        _built(layers.GRU(H), H)]), "between two recurrent layers"),
        (fr.Sequential([_built(layers.GRU(H, return_sequences=True), I), layers.Dropout(0.2),
                        _built(layers.GRU(H, return_sequences=True), H), layers.Dropout(0.3),
                        _built(layers.GRU(H), H)]), "one rate"),
        (fr.Sequential([_built(layers.GRU(H, return_sequences=True), I), layers.Dropout(0.2),
                        _built(layers.GRU(H, return_sequences=True), H), _built(layers.GRU(H), H)]), "one rate"),
        (fr.Sequential([_built(layers.GRU(H, return_sequences=True), I), layers.Dropout(0.2, noise_shape=(None, 1, H)),
                        _built(layers.GRU(H), H)]), "noise_shape"),
        (fr.Sequential([]), "empty"),
        (fr.Sequential([fr.Input((None, I))]), "empty"),
    ]
    for model, match in cases:
        with pytest.raises(ValueError, match=match):
            interop.to_torch(model)
    inp = fr.Input((None, I))
    functional = fr.Model(inp, layers.GRU(H)(inp))
    with pytest.raises(ValueError, match="must be a Sequential"):
        interop.to_torch(functional)
    with pytest.raises(ValueError, match=r"entry 0 .*Dense"):
        interop.to_torch([layers.Dense(3)])
