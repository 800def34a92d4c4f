"""fastrnn.torch.LSTM / GRU / RNN against torch.nn.LSTM / GRU / RNN with the same state_dict.

torch is a dependency of these tests: without it they fail (no skip). Outputs are compared to
1e-5 and gradients to 1e-4, relative to the largest value of torch's tensor, in float32; the
float64 path (the NumPy reference) goes through torch.autograd.gradcheck.
"""
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fastrnn.torch as frt

CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
OUT_TOL, GRAD_TOL = 1e-5, 1e-4
I, H = 5, 6


def make_pair(cell, dtype=torch.float32, **kw):
    """(torch module, fastrnn module) with the torch module's parameters loaded into the other."""
    torch.manual_seed(len(kw) + 7 * hash(cell) % 1000)
    if cell == "lstm":
        ref, mod = torch.nn.LSTM(I, H, **kw), frt.LSTM(I, H, **kw)
    elif cell == "gru":
        ref, mod = torch.nn.GRU(I, H, **kw), frt.GRU(I, H, **kw)
    else:
        act = cell.split("_")[1]
        ref, mod = torch.nn.RNN(I, H, nonlinearity=act, **kw), frt.RNN(I, H, nonlinearity=act, **kw)
    ref, mod = ref.to(dtype), mod.to(dtype)
    mod.load_state_dict(ref.state_dict())
    return ref, mod


def rel_err(a, b):
    """max |a - b| / max(1, max |b|)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.detach() - b.detach()).abs().max() / max(1.0, float(b.detach().abs().max())))


def flat_out(out):
    """The tensors of a module's result: output (data of a PackedSequence), h_n (, c_n)."""
    y, state = out
    y = y.data if isinstance(y, torch.nn.utils.rnn.PackedSequence) else y
    return [y] + (list(state) if isinstance(state, tuple) else [state])


def run_and_compare(ref, mod, make_inputs):
    """Run both modules on fresh leaves from make_inputs(), backprop a random weighting of every
    output, compare outputs, input / state gradients and parameter gradients."""
    results = []
    for m in (ref, mod):
        torch.manual_seed(1)
        args, leaves = make_inputs()
        outs = flat_out(m(*args))
        torch.manual_seed(2)
        loss = sum((o * torch.randn(o.shape, dtype=o.dtype)).sum() for o in outs)  # not randn_like: strides differ
        m.zero_grad()
        loss.backward()
        grads = [leaf.grad for leaf in leaves] + [p.grad for p in m.parameters()]
        results.append((outs, grads))
    (o_ref, g_ref), (o_mod, g_mod) = results
    out_err = max(rel_err(a, b) for a, b in zip(o_mod, o_ref))
    assert out_err <= OUT_TOL, out_err
    assert len(g_ref) == len(g_mod)
    grad_err = max(rel_err(a, b) for a, b in zip(g_mod, g_ref))
    assert grad_err <= GRAD_TOL, grad_err
    return out_err, grad_err


def state_shape(mod, B):
    return ((mod.num_layers * (2 if mod.bidirectional else 1)), B, H)


def padded_inputs(mod, B=3, T=4, with_state=False, unbatched=False):
    def make():
        if unbatched:
            x = torch.randn(T, I, requires_grad=True)
            s = state_shape(mod, B)[:1] + (H,)
        else:
            x = torch.randn(*((B, T, I) if mod.batch_first else (T, B, I)), requires_grad=True)
            s = state_shape(mod, B)
        leaves = [x]
        if not with_state:
            return (x,), leaves
        h0 = torch.randn(*s, requires_grad=True)
        leaves.append(h0)
        if isinstance(mod, (frt.LSTM, torch.nn.LSTM)):
            c0 = torch.randn(*s, requires_grad=True)
            leaves.append(c0)
            return (x, (h0, c0)), leaves
        return (x, h0), leaves
    return make


# --------------------------------------------------------------------------- parity

@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers,bidirectional,batch_first,bias,with_state", [
    c for c in itertools.product((1, 2, 3), (False, True), (False, True), (True, False), (False, True))
    if c[0] != 3 or (c[2] == c[4])  # num_layers=3: a quarter of the combinations
])
def test_padded_parity(cell, num_layers, bidirectional, batch_first, bias, with_state):
    ref, mod = make_pair(cell, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
                         bias=bias)
    assert list(ref.state_dict()) == list(mod.state_dict())
    run_and_compare(ref, mod, padded_inputs(mod, with_state=with_state))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_packed_parity(cell, enforce_sorted, bidirectional, with_state, batch_first):
    ref, mod = make_pair(cell, num_layers=2, bidirectional=bidirectional, batch_first=batch_first)
    lengths = [6, 6, 4, 3, 3, 1] if enforce_sorted else [3, 6, 1, 4, 6, 3]  # ties: the packing order matters
    B, T = len(lengths), max(lengths)

    def make():
        x = torch.randn(*((B, T, I) if batch_first else (T, B, I)), requires_grad=True)
        packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=batch_first,
                                      enforce_sorted=enforce_sorted)
        if not with_state:
            return (packed,), [x]
        h0 = torch.randn(*state_shape(mod, B), requires_grad=True)
        if cell == "lstm":
            c0 = torch.randn(*state_shape(mod, B), requires_grad=True)
            return (packed, (h0, c0)), [x, h0, c0]
        return (packed, h0), [x, h0]

    run_and_compare(ref, mod, make)
    # the output is packed like torch's: same batch_sizes and indices, same padded form
    args, _ = make()
    y_ref, y_mod = ref(*args)[0], mod(*args)[0]
    assert torch.equal(y_ref.batch_sizes, y_mod.batch_sizes)
    for a, b in ((y_ref.sorted_indices, y_mod.sorted_indices), (y_ref.unsorted_indices, y_mod.unsorted_indices)):
        assert (a is None and b is None) or torch.equal(a, b)
    p_ref, l_ref = pad_packed_sequence(y_ref, batch_first=batch_first)
    p_mod, l_mod = pad_packed_sequence(y_mod, batch_first=batch_first)
    assert torch.equal(l_ref, l_mod)
    assert rel_err(p_mod, p_ref) <= OUT_TOL


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("packed", [False, True])
def test_custom_operator_in_eager_mode(cell, dtype, packed, monkeypatch):
    # eager calls normally take the autograd.Function; the custom operator (what torch.compile
    # calls) must give the same values and gradients
    monkeypatch.setattr(frt, "_EAGER_FUNCTION", False)
    ref, mod = make_pair(cell, dtype=dtype, num_layers=2, bidirectional=True, batch_first=True)
    lengths = torch.tensor([2, 4, 3])

    def make():
        x = torch.randn(3, 4, I, dtype=dtype, requires_grad=True)
        h0 = torch.randn(4, 3, H, dtype=dtype, requires_grad=True)
        inp = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False) if packed else x
        if cell == "lstm":
            c0 = torch.randn(4, 3, H, dtype=dtype, requires_grad=True)
            return (inp, (h0, c0)), [x, h0, c0]
        return (inp, h0), [x, h0]

    run_and_compare(ref, mod, make)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_parity(cell, with_state, batch_first):
    ref, mod = make_pair(cell, num_layers=2, bidirectional=True, batch_first=batch_first)
    run_and_compare(ref, mod, padded_inputs(mod, with_state=with_state, unbatched=True))
    args, _ = padded_inputs(mod, unbatched=True, with_state=with_state)()
    assert [t.shape for t in flat_out(mod(*args))] == [t.shape for t in flat_out(ref(*args))]


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_in_eval_mode_is_identity(cell):
    ref, mod = make_pair(cell, num_layers=3, dropout=0.5, bidirectional=True)
    ref.eval()
    mod.eval()
    run_and_compare(ref, mod, padded_inputs(mod, with_state=True))


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_in_training_mode(cell):
    ref, mod = make_pair(cell, num_layers=2, dropout=0.5)
    x = torch.randn(4, 3, I)
    torch.manual_seed(0)
    y1 = mod(x)[0]
    torch.manual_seed(1)
    y2 = mod(x)[0]
    assert not torch.equal(y1, y2)  # a different mask between the layers
    mod.eval()
    assert rel_err(mod(x)[0], ref.eval()(x)[0]) <= OUT_TOL
    mod.train()
    y1.sum().backward()
    assert all(p.grad is not None for p in mod.parameters())


def test_backward_in_eval_mode():
    ref, mod = make_pair("lstm", num_layers=2)
    ref.eval()
    mod.eval()
    run_and_compare(ref, mod, padded_inputs(mod, with_state=True))


def test_state_dict_layout_and_repr():
    for kw in (dict(), dict(bias=False, num_layers=2, bidirectional=True, batch_first=True, dropout=0.25)):
        for a, b in ((torch.nn.LSTM(I, H, **kw), frt.LSTM(I, H, **kw)), (torch.nn.GRU(I, H, **kw), frt.GRU(I, H, **kw)),
                     (torch.nn.RNN(I, H, nonlinearity="relu", **kw), frt.RNN(I, H, nonlinearity="relu", **kw))):
            sa, sb = a.state_dict(), b.state_dict()
            assert list(sa) == list(sb)
            assert all(sa[k].shape == sb[k].shape for k in sa)
            assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
            assert repr(a).split("(", 1)[1] == repr(b).split("(", 1)[1]
            b.load_state_dict(sa)  # strict
            # torch's initialisation range
            bound = 1 / H ** 0.5
            assert all(float(p.detach().abs().max()) <= bound for p in frt.LSTM(I, H, **kw).parameters())


def test_bias_false_registers_no_bias():
    mod = frt.GRU(I, H, bias=False)
    assert not any("bias" in n for n, _ in mod.named_parameters())
    assert not any("bias" in n for n in mod.state_dict())


# --------------------------------------------------------------------------- no_grad, inference

@pytest.mark.parametrize("cell", CELLS)
def test_no_grad_runs_without_cache(cell):
    ref, mod = make_pair(cell, num_layers=2, bidirectional=True)
    x = torch.randn(5, 3, I)
    with torch.no_grad():
        out = flat_out(mod(x))
        expect = flat_out(ref(x))
    assert all(t.grad_fn is None and not t.requires_grad for t in out)
    assert max(rel_err(a, b) for a, b in zip(out, expect)) <= OUT_TOL
    with torch.inference_mode():
        out2 = flat_out(mod(x))
    assert all(torch.equal(a, b) for a, b in zip(out, out2))
    # nothing requires grad: the operator saves nothing (training=False)
    for p in mod.parameters():
        p.requires_grad_(False)
    w = [mod.weight_ih_l0, mod.weight_hh_l0, mod.bias_ih_l0 + mod.bias_hh_l0, None]
    if cell == "gru":
        w[2:] = [mod.bias_ih_l0, mod.bias_hh_l0]
    res = torch.ops.fastrnn.rnn_layer(x, *w, None, None, None, mod.spec.kernel_id, False, False, False)
    assert all(t.numel() == 0 for t in res[3:])
    assert flat_out(mod(x))[0].grad_fn is None


def test_grad_only_for_the_input():
    _, mod = make_pair("gru")
    for p in mod.parameters():
        p.requires_grad_(False)
    x = torch.randn(4, 2, I, requires_grad=True)
    mod(x)[0].sum().backward()
    assert x.grad is not None and all(p.grad is None for p in mod.parameters())


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("custom_op", [False, True])
def test_gradient_of_the_final_states_only(cell, custom_op, monkeypatch):
    # the output's gradient never reaches the kernels (None / zeros): only h_n (or c_n) has one
    monkeypatch.setattr(frt, "_EAGER_FUNCTION", not custom_op)
    ref, mod = make_pair(cell, num_layers=2, bidirectional=True)
    for pick in ([1], [2]) if cell == "lstm" else ([1],):
        grads = []
        for m in (ref, mod):
            x = torch.randn(4, 3, I, generator=torch.Generator().manual_seed(0), requires_grad=True)
            out = flat_out(m(x))
            m.zero_grad()
            sum(out[i].square().sum() for i in pick).backward()
            grads.append([x.grad] + [p.grad for p in m.parameters()])
        assert max(rel_err(a, b) for a, b in zip(*grads[::-1])) <= GRAD_TOL


def test_retain_graph_backward_twice():
    _, mod = make_pair("lstm", num_layers=2)
    x = torch.randn(4, 2, I, requires_grad=True)
    y = mod(x)[0].sum()
    g1 = torch.autograd.grad(y, x, retain_graph=True)[0]
    g2 = torch.autograd.grad(y, x)[0]
    assert torch.equal(g1, g2)


# --------------------------------------------------------------------------- float64 gradcheck

@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("packed", [False, True])
def test_gradcheck_float64(cell, packed):
    # small: every parameter is an input of gradcheck (two layers, both directions)
    i, h = 2, 3
    cls = {"lstm": frt.LSTM, "gru": frt.GRU}.get(cell)
    kw = dict(num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64)
    mod = cls(i, h, **kw) if cls else frt.RNN(i, h, nonlinearity=cell.split("_")[1], **kw)
    names = [n for n, _ in mod.named_parameters()]
    B, T = 2, 3
    lengths = torch.tensor([3, 2])
    x = torch.randn(B, T, i, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, B, h, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, B, h, dtype=torch.float64, requires_grad=True)

    def f(x, h0, c0, *params):
        inp = pack_padded_sequence(x, lengths, batch_first=True) if packed else x
        hx = (h0, c0) if cell == "lstm" else h0
        outs = flat_out(torch.func.functional_call(mod, dict(zip(names, params)), (inp, hx)))
        return tuple(outs)

    params = [p.detach().clone().requires_grad_(True) for p in mod.parameters()]
    assert torch.autograd.gradcheck(f, (x, h0, c0, *params), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_float64_matches_torch():
    ref, mod = make_pair("gru", dtype=torch.float64, num_layers=2, bidirectional=True)
    x = torch.randn(4, 3, I, dtype=torch.float64)
    assert rel_err(mod(x)[0], ref(x)[0]) <= 1e-12


# --------------------------------------------------------------------------- the custom operator

@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(cell, dtype):
    _, mod = make_pair(cell, dtype=dtype)
    B, T = 2, 3
    x = torch.randn(B, T, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, H, dtype=dtype, requires_grad=True)
    c0 = torch.randn(B, H, dtype=dtype, requires_grad=True) if cell == "lstm" else None
    mask = torch.tensor([[True, True, True], [True, True, False]])
    w_ih, w_hh, b_ih, b_hh = mod._layer_weights(0, 0)
    args = (x, w_ih.detach().requires_grad_(), w_hh.detach().requires_grad_(), b_ih.detach().requires_grad_(),
            None if b_hh is None else b_hh.detach().requires_grad_(), h0, c0, mask, mod.spec.kernel_id, True, True,
            True)
    torch.library.opcheck(torch.ops.fastrnn.rnn_layer.default, args,
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration",
                                      "test_aot_dispatch_dynamic"))


class _Model(torch.nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn
        self.head = torch.nn.Linear(H * 2, 3)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.head(torch.relu(y[:, -1]))


def test_compile_has_no_graph_break():
    torch.manual_seed(0)
    model = _Model(frt.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True))
    x = torch.randn(3, 4, I)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    # a compiled training step (aot_eager: the fake implementations and the autograd formula,
    # without inductor's code generation) gives eager's values and gradients
    eager = _Model(frt.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True))
    eager.load_state_dict(model.state_dict())
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    for m in (eager, compiled):
        m(x).square().sum().backward()
    for pe, pc in zip(eager.parameters(), model.parameters()):
        assert rel_err(pc.grad, pe.grad) <= 1e-6
    torch._dynamo.reset()


# --------------------------------------------------------------------------- errors

def test_errors():
    with pytest.raises(ValueError, match="proj_size"):
        frt.LSTM(I, H, proj_size=3)
    with pytest.raises(ValueError, match="nonlinearity"):
        frt.RNN(I, H, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="dropout"):
        frt.GRU(I, H, dropout=1.5)
    with pytest.raises(ValueError, match="hidden_size"):
        frt.GRU(I, 0)
    with pytest.warns(UserWarning, match="dropout"):
        frt.GRU(I, H, dropout=0.5)  # like torch: dropout with one layer does nothing
    mod = frt.LSTM(I, H, num_layers=2)
    with pytest.raises(RuntimeError, match="input_size. Expected 5, got 4"):
        mod(torch.randn(3, 2, 4))
    with pytest.raises(ValueError, match="2D or 3D"):
        mod(torch.randn(3, 2, 1, I))
    with pytest.raises(RuntimeError, match=r"hidden\[0\] size"):
        mod(torch.randn(3, 2, I), (torch.zeros(1, 2, H), torch.zeros(2, 2, H)))
    with pytest.raises(RuntimeError, match=r"hidden\[1\] size"):
        mod(torch.randn(3, 2, I), (torch.zeros(2, 2, H), torch.zeros(2, 3, H)))
    with pytest.raises(RuntimeError, match="hx should also be 3-D"):
        mod(torch.randn(3, 2, I), (torch.zeros(2, H), torch.zeros(2, H)))
    with pytest.raises(RuntimeError, match="type torch.float32, got type torch.float64"):
        mod(torch.randn(3, 2, I, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="Expected hidden size"):
        frt.GRU(I, H)(torch.randn(3, 2, I), torch.zeros(2, 2, H))


# --------------------------------------------------------------------------- imports

def test_import_fastrnn_does_not_import_torch():
    root = Path(__file__).resolve().parents[1] / "python"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root)] + [p for p in os.environ.get(
        "PYTHONPATH", "").split(os.pathsep) if p]))
    r = subprocess.run([sys.executable, "-c", "import sys, fastrnn; print('torch' in sys.modules)"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
    r = subprocess.run([sys.executable, "-c", "import fastrnn.torch as m, torch; print(m.LSTM.__mro__[2] is "
                        "torch.nn.Module, m.torch is torch if hasattr(m, 'torch') else True)"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True"]  # `import torch` inside fastrnn.torch is the real torch


# --------------------------------------------------------------------------- CUDA tensors

def _cuda_unavailable():
    """Why the CUDA tests cannot run here, or None (a CUDA device and CuPy are needed)."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    try:
        import cupy  # noqa: F401
    except ImportError:
        return "CuPy is not installed"
    return None


@pytest.mark.skipif(_cuda_unavailable() is not None, reason=str(_cuda_unavailable()))
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional,batch_first", [(False, False), (True, True)])
def test_cuda_tensors_match_torch_nn_on_the_device(cell, bidirectional, batch_first):
    """CUDA tensors go through DLPack to fastrnn's CUDA ops on torch's current stream: the same
    outputs and gradients as torch.nn on the device, and every result stays on the device."""
    ref, mod = make_pair(cell, num_layers=2, bidirectional=bidirectional, batch_first=batch_first)
    dev = torch.device("cuda")
    ref, mod = ref.to(dev), mod.to(dev)
    B, T = 3, 5
    results = []
    for m in (ref, mod):
        torch.manual_seed(1)
        x = torch.randn(*((B, T, I) if batch_first else (T, B, I))).to(dev).requires_grad_()
        outs = flat_out(m(x))
        torch.manual_seed(2)
        loss = sum((o * torch.randn(o.shape).to(dev)).sum() for o in outs)
        m.zero_grad()
        loss.backward()
        assert all(o.device.type == "cuda" for o in outs)
        results.append((outs, [x.grad] + [p.grad for p in m.parameters()]))
    torch.cuda.synchronize()
    (o_ref, g_ref), (o_mod, g_mod) = results
    assert max(rel_err(a.cpu(), b.cpu()) for a, b in zip(o_mod, o_ref)) <= OUT_TOL
    assert max(rel_err(a.cpu(), b.cpu()) for a, b in zip(g_mod, g_ref)) <= GRAD_TOL
