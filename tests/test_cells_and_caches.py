"""The one description of the cells (fastrnn._cells) agrees with the compiled kernels and the
references; every spelling of a cell and of rnn_forward's activation maps to it; the three caches
share one interface and the ops route each to its own backward; the internal runner equals the
public ops."""
from __future__ import annotations

import re

import numpy as np
import pytest

from _problems import base_name, forward_args, make_problem
from fastrnn import _cells, _cuda_ops, backend, ops
from fastrnn import reference as R
from fastrnn._cache import Cache
from fastrnn._cells import CELLS, CellSpec, cell_spec
from fastrnn._kernel_cache import KernelCache
from fastrnn.reference._common import BIAS_NAMES, GATES

SPELLINGS = ["rnn", "rnn_relu", "lstm", "gru"]


# --------------------------------------------------------------------------- _cells vs the kernels

def _kernel_args(spec, G, T=3, B=2, I=4, H=5):
    rng = np.random.default_rng(0)
    f = lambda *s: rng.uniform(-0.5, 0.5, s).astype(np.float32)  # noqa: E731
    n = spec.gates * H
    b_hh = f(n) if spec.base == "gru" else None
    return dict(cell=spec.kernel_id, x=f(B, T, I), w_ih=f(n, I), w_hh=f(G * H, H), b_ih=f(n), b_hh=b_hh,
                h0=None, c0=None, mask=None, reverse=False, batch_first=True, training=True)


@pytest.mark.parametrize("spec", CELLS, ids=lambda s: s.name)
def test_the_kernels_take_the_gate_count_of_the_spec(spec):
    core = backend.core()
    y, h_n, c_n, gates, hprev, aux = core.forward(**_kernel_args(spec, spec.gates))
    assert gates.shape == (3 * 2, spec.gates * 5) and hprev.shape == (3 * 2, 5)
    assert (c_n is not None) == (spec.n_states == 2)
    assert (aux is not None) == (spec.aux is not None)
    for wrong in {1, 3, 4} - {spec.gates}:
        with pytest.raises(ValueError, match=rf"w_hh: expected shape \(G\*H, H\) with G = {spec.gates}\b"):
            core.forward(**_kernel_args(spec, wrong))


def test_kernel_ids_are_the_kernels_enum():
    msg = ""
    try:
        backend.core().forward(**{**_kernel_args(_cells.LSTM, 4), "cell": 9})
    except ValueError as exc:
        msg = str(exc)
    named = dict((int(i), n.replace(" ", "_")) for i, n in re.findall(r"(\d) \(([a-z ]+)\)", msg))
    assert named == {s.kernel_id: s.name for s in CELLS}
    assert [s.kernel_id for s in CELLS] == [0, 1, 2, 3] and all(CELLS[s.kernel_id] is s for s in CELLS)


@pytest.mark.parametrize("cell", SPELLINGS)
def test_kernel_and_reference_agree_for_each_spec(cell):
    # the kernel id the ops pick for each spelling computes what the reference computes
    spec = cell_spec(cell)
    p = make_problem(cell, 4, 3, 5, 6, dtype=np.float64, seed=2, lengths="random")
    args, kw = forward_args(cell, p)
    base = base_name(cell)
    y64, _, _ = getattr(R, f"{base}_forward")(*args, **kw)
    y32, _, _ = ops._run_forward(spec, *(a.astype(np.float32) for a in args[:4]),
                                 *([args[4].astype(np.float32)] if base == "gru" else [None]),
                                 h0=p["h0"].astype(np.float32),
                                 c0=p["c0"].astype(np.float32) if "c0" in p else None,
                                 mask=np.arange(4)[None, :] < p["lengths"][:, None], training=False)
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5)


def test_reference_tables_read_the_specs():
    for spec in CELLS:
        assert GATES[spec.base] == spec.gates == len(spec.gate_names)
        assert BIAS_NAMES[spec.base] == spec.bias_names
    assert (cell_spec("lstm").n_states, cell_spec("gru").n_states, cell_spec("rnn").n_states) == (2, 1, 1)


# --------------------------------------------------------------------------- spellings

@pytest.mark.parametrize("spelling,name", [
    ("rnn", "rnn_tanh"), ("RNN", "rnn_tanh"), ("SimpleRNN", "rnn_tanh"), ("simplernn", "rnn_tanh"),
    ("simple_rnn", "rnn_tanh"), ("rnn_tanh", "rnn_tanh"), ("rnn_relu", "rnn_relu"), ("RNN_RELU", "rnn_relu"),
    ("lstm", "lstm"), ("LSTM", "lstm"), ("gru", "gru"), ("GRU", "gru"),
    (0, "rnn_tanh"), (1, "rnn_relu"), (2, "lstm"), (3, "gru"), (np.int64(3), "gru"), (_cells.LSTM, "lstm"),
])
def test_every_old_spelling_gives_the_canonical_spec(spelling, name):
    spec = cell_spec(spelling)
    assert isinstance(spec, CellSpec) and spec.name == name and spec is CELLS[spec.kernel_id]


def test_simple_rnn_spellings_take_the_activation():
    for spelling in ("rnn", "SimpleRNN", "simple_rnn"):
        assert cell_spec(spelling, "relu") is _cells.RNN_RELU
        assert cell_spec(spelling, "tanh") is _cells.RNN_TANH
    assert cell_spec("rnn_relu", "relu") is _cells.RNN_RELU
    assert cell_spec("lstm", "tanh") is _cells.LSTM


@pytest.mark.parametrize("bad", ["lstm2", "", 4, -1, True, 2.0, None, ("lstm",)])
def test_unknown_cells_are_refused_naming_the_argument(bad):
    with pytest.raises(ValueError, match=r"^layer_cell: unknown cell .*expected one of .*'rnn_relu'.*'gru'"):
        cell_spec(bad, arg="layer_cell")


def test_conflicting_activations_are_refused():
    with pytest.raises(ValueError, match=r"cell: cell 'rnn_relu' has activation 'relu', got activation='tanh'"):
        cell_spec("rnn_relu", "tanh")
    with pytest.raises(ValueError, match=r"cell: cell 'lstm' has activation 'tanh'"):
        cell_spec(2, "relu")
    with pytest.raises(ValueError, match=r"cell: a SimpleRNN's activation must be 'tanh' or 'relu', got 'sigmoid'"):
        cell_spec("simplernn", "sigmoid")


@pytest.mark.parametrize("mod", [ops, R], ids=["ops", "reference"])
def test_rnn_forward_activation_and_its_alias_nonlinearity(mod):
    dtype = np.float32 if mod is ops else np.float64
    p = make_problem("rnn", 3, 2, 4, 5, dtype=dtype, seed=4, scale=1.0)
    args, kw = forward_args("rnn", p)
    del kw["nonlinearity"]
    y_relu, _, c_relu = mod.rnn_forward(*args, nonlinearity="relu", **kw)
    y_tanh, _, _ = mod.rnn_forward(*args, **kw)
    assert not np.array_equal(y_relu, y_tanh)
    y_act, _, c_act = mod.rnn_forward(*args, activation="relu", **kw)
    np.testing.assert_array_equal(y_act, y_relu)
    assert c_act.spec is c_relu.spec is _cells.RNN_RELU
    y_both, _, _ = mod.rnn_forward(*args, activation="relu", nonlinearity="relu", **kw)
    np.testing.assert_array_equal(y_both, y_relu)
    y_pos, _, _ = mod.rnn_forward(*args, kw["h0"], kw["lengths"], None, False, True, True, "relu")
    np.testing.assert_array_equal(y_pos, y_relu)
    np.testing.assert_array_equal(mod.rnn_forward(*args, activation="tanh", nonlinearity="tanh", **kw)[0], y_tanh)
    with pytest.raises(ValueError, match=r"rnn_forward: activation='relu' and nonlinearity='tanh' differ"):
        mod.rnn_forward(*args, activation="relu", nonlinearity="tanh", **kw)
    with pytest.raises(ValueError, match=r"rnn_forward: activation must be 'tanh' or 'relu', got 'sigmoid'"):
        mod.rnn_forward(*args, activation="sigmoid", **kw)
    with pytest.raises(ValueError, match=r"rnn_forward: nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"):
        mod.rnn_forward(*args, nonlinearity="sigmoid", **kw)


# --------------------------------------------------------------------------- one cache interface

def _caches(cell, batch_first=True):
    """(reference cache float64, C++ cache) of the same problem with a mask."""
    p = make_problem(cell, 4, 3, 5, 6, dtype=np.float64, seed=5, lengths=[4, 2, 0], batch_first=batch_first)
    args, kw = forward_args(cell, p)
    kw["batch_first"] = batch_first
    base = base_name(cell)
    _, _, ref = getattr(R, f"{base}_forward")(*args, **kw)
    a32 = tuple(a.astype(np.float32) for a in args)
    kw32 = {k: (v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype == np.float64 else v)
            for k, v in kw.items()}
    _, _, ker = getattr(ops, f"{base}_forward")(*a32, **kw32)
    return ref, ker, p


def _time_major(a, T, B, batch_first):
    """A kernel cache's [T*B, F] rows (x's order) as [T, B, F]."""
    a = a.reshape((B, T, -1) if batch_first else (T, B, -1))
    return a.transpose(1, 0, 2) if batch_first else a


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("cell", SPELLINGS)
def test_reference_and_kernel_caches_hold_the_same_things_under_the_same_names(cell, batch_first):
    ref, ker, _ = _caches(cell, batch_first)
    assert isinstance(ref, Cache) and isinstance(ker, Cache) and isinstance(ref, dict)
    fr, fk = ref.fields(), ker.fields()
    assert list(fr) == list(fk) == list(Cache.FIELDS)
    for name in ("spec", "cell", "T", "B", "I", "H", "batch_first", "reverse"):
        assert fr[name] == fk[name], name
    assert fk["spec"] is cell_spec(cell)
    T, B = fr["T"], fr["B"]
    np.testing.assert_array_equal(np.asarray(fk["mask"], bool), fr["mask"].T)
    x_k = fk["x"].transpose(1, 0, 2) if batch_first else fk["x"]
    np.testing.assert_allclose(x_k, fr["x"], rtol=1e-6)
    np.testing.assert_allclose(fk["w_hh"], fr["w_hh"], rtol=1e-6)
    valid = fr["mask"][:, :, None]  # the kernels leave masked steps' saved values undefined or 0
    for name in ("h_prev", "gates", "aux"):
        if fr[name] is None:
            assert fk[name] is None and cell_spec(cell).aux is None, name
            continue
        got = _time_major(fk[name], T, B, batch_first)
        assert got.shape == fr[name].shape, name
        np.testing.assert_allclose(np.where(valid, got, 0), np.where(valid, fr[name], 0), rtol=1e-4, atol=1e-5,
                                   err_msg=name)


def test_reference_cache_keeps_its_mapping_access():
    ref, _, p = _caches("lstm")
    assert ref["cell"] == "lstm" and ref.get("x") is ref.x and ref["c_prev"] is ref.aux
    assert ref["gates"] is ref.gates and ref.get("nonlinearity") is None
    assert {"T", "B", "I", "H", "dtype", "xp", "h_prev", "c_prev", "tanh_c", "w_ih", "b"} <= set(ref)
    rnn, _, _ = _caches("rnn_relu")
    assert rnn.gates is rnn["act"] and rnn.aux is None and rnn.spec is _cells.RNN_RELU
    gru, _, _ = _caches("gru")
    assert gru.aux is gru["u_n"]
    # a plain dict copy still runs through the reference (its old contract)
    np.testing.assert_array_equal(R.lstm_backward(dict(ref), None)["w_hh"], R.lstm_backward(ref, None)["w_hh"])


def test_cuda_cache_has_the_interface_on_numpy_stand_ins():
    spec, T, B, I, H = _cells.GRU, 2, 3, 4, 5
    arrays = dict(x=np.zeros((B, T, I), np.float32), w_ih=np.zeros((3 * H, I), np.float32),
                  w_hh=np.zeros((3 * H, H), np.float32), mask=None, gates=np.ones((T * B, 3 * H), np.float32),
                  hprev=np.full((T * B, H), 2, np.float32), aux=np.full((T * B, H), 3, np.float32))
    c = _cuda_ops.CudaKernelCache(spec, arrays["x"], arrays["w_ih"], arrays["w_hh"], None, False, True,
                                  arrays["gates"], arrays["hprev"], arrays["aux"], T, B, I, H, device_id=1)
    assert isinstance(c, Cache) and isinstance(c, KernelCache)
    f = c.fields()
    assert list(f) == list(Cache.FIELDS)
    assert (f["spec"], f["cell"], f["T"], f["B"], f["I"], f["H"]) == (spec, "gru", T, B, I, H)
    assert f["h_prev"] is arrays["hprev"] and f["gates"] is arrays["gates"] and f["aux"] is arrays["aux"]
    assert c.cell_id == 3 and c.device_id == 1 and "device=1" in repr(c)
    assert type(c).backward is not KernelCache.backward  # runs the CUDA backward, not the C++ one


def test_ops_backward_routes_each_cache_to_its_own_backward(monkeypatch):
    ref, ker, _ = _caches("lstm")
    dy = np.full((3, 4, 6), 0.1)
    np.testing.assert_array_equal(ops.lstm_backward(ref, dy)["w_ih"], R.lstm_backward(ref, dy)["w_ih"])
    g_k = ops.lstm_backward(ker, dy.astype(np.float32))
    g_self = ker.backward(dy.astype(np.float32))
    for k in g_k:
        np.testing.assert_array_equal(g_k[k], g_self[k], err_msg=k)
    assert ker.backward(dy.astype(np.float32), need_dx=False)["x"] is None
    assert ref.backward(dy, need_dx=False)["x"] is None
    with pytest.raises(ValueError, match="cache comes from lstm_forward, not rnn_forward"):
        ops.rnn_backward(ref, dy)
    seen = []
    monkeypatch.setattr(_cuda_ops, "backward", lambda cell, cache, *a: seen.append((cell, cache, a)) or {"via": 1})
    spec, T, B, I, H = _cells.GRU, 1, 1, 1, 1
    z = np.zeros((1, 3), np.float32)
    cuda_cache = _cuda_ops.CudaKernelCache(spec, z, z, z, None, False, True, z, z, z, T, B, I, H, device_id=0)
    assert ops.gru_backward(cuda_cache, None, bptt_steps=2) == {"via": 1}
    assert seen == [("gru", cuda_cache, (None, None, 2, True))]
    with pytest.raises(ValueError, match="cache comes from gru_forward, not lstm_forward"):
        ops.lstm_backward(cuda_cache, None)


# --------------------------------------------------------------------------- the runner

@pytest.mark.parametrize("options", [dict(), dict(reverse=True, batch_first=False), dict(masked=True),
                                     dict(masked=True, reverse=True, bptt_steps=2)])
@pytest.mark.parametrize("cell", SPELLINGS)
def test_runner_equals_the_public_ops_bit_for_bit(cell, options):
    options = dict(options)
    masked, k = options.pop("masked", False), options.pop("bptt_steps", None)
    bf = options.get("batch_first", True)
    p = make_problem(cell, 5, 3, 4, 6, dtype=np.float32, seed=6, batch_first=bf,
                     lengths=[5, 1, 3] if masked else None)
    args, kw = forward_args(cell, p)
    kw.update(options)
    base, spec = base_name(cell), cell_spec(cell)
    y, state, cache = getattr(ops, f"{base}_forward")(*args, **kw)
    mask = None if p["lengths"] is None else np.arange(5)[None, :] < p["lengths"][:, None]
    out = np.empty_like(y)
    y2, state2, cache2 = ops._run_forward(spec, *args[:4], args[4] if base == "gru" else None, h0=p["h0"],
                                          c0=p.get("c0"), mask=mask, out=out, **options)
    assert y2 is out
    np.testing.assert_array_equal(y2, y)
    for a, b in zip(state if spec.n_states == 2 else [state], state2 if spec.n_states == 2 else [state2]):
        np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(7)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dh = rng.standard_normal(p["h0"].shape).astype(np.float32)
    dstate = (dh, None) if base == "lstm" else dh
    g = getattr(ops, f"{base}_backward")(cache, dy, dstate=dstate, bptt_steps=k)
    g2 = ops._run_backward(cache2, dy, dh, None, bptt_steps=k)
    assert list(g) == list(g2)
    for key in g:
        np.testing.assert_array_equal(g2[key], g[key], err_msg=key)
    if mask is not None:  # a 0/1 mask does what the bool one does
        y3, _, cache3 = ops._run_forward(cell, *args[:4], args[4] if base == "gru" else None, h0=p["h0"],
                                         c0=p.get("c0"), mask=mask.astype(np.uint8), **options)
        np.testing.assert_array_equal(y3, y)
        np.testing.assert_array_equal(ops._run_backward(cache3, dy, dh, bptt_steps=k)["w_ih"], g["w_ih"])


def test_runner_takes_the_public_route_for_other_arrays():
    p = make_problem("gru", 3, 2, 4, 5, dtype=np.float64, seed=8)
    args, _ = forward_args("gru", p)
    with pytest.raises(TypeError, match="gru_forward: x must have dtype float32 for the C\\+\\+ kernels"):
        ops._run_forward("gru", *args)
    _, _, ref = R.gru_forward(*args)
    g = ops._run_backward(ref, None, None)  # a reference cache runs its own (checked) backward
    np.testing.assert_array_equal(g["w_hh"], R.gru_backward(ref, None)["w_hh"])


def test_compiled_modules_are_called_positionally_in_the_binding_order(monkeypatch):
    real = backend.core()
    calls = []

    class Spy:
        def __getattr__(self, name):
            fn = getattr(real, name)

            def wrapped(*args, **kwargs):
                calls.append((name, args, sorted(kwargs)))
                return fn(*args, **kwargs)
            return wrapped

    monkeypatch.setattr(backend, "core", lambda: Spy())
    p = make_problem("lstm", 3, 2, 4, 5, dtype=np.float32)
    args, kw = forward_args("lstm", p)
    y, _, cache = ops.lstm_forward(*args, **kw)
    ops.lstm_backward(cache, y)
    assert [c[0] for c in calls] == ["forward", "backward"]
    assert all(c[2] == [] for c in calls)  # no keyword matching in pybind11 (about 1 us per call)
    args = _binding_args("csrc/bindings/core_module.cpp")
    assert [len(c[1]) for c in calls] == [len(args["forward"]), len(args["backward"])]
    assert calls[0][1][0] == calls[1][1][0] == 2  # LSTM's kernel id, where the binding takes "cell"


def _binding_args(path):
    """{function: [py::arg names in order]} of a pybind11 module source."""
    import pathlib

    src = pathlib.Path(__file__).resolve().parent.parent / path
    if not src.exists():
        pytest.skip(f"{path} is not in this checkout")
    text = src.read_text()
    out = {}
    for m in re.finditer(r'm\.def\("(\w+)"(.*?)(?=m\.def\(|\Z)', text, re.S):
        out[m.group(1)] = re.findall(r'py::arg\("(\w+)"\)', m.group(2))
    return out


def _keyword_calls(module, receiver, functions=None):
    """[(function, [keyword names])] of the calls receiver.function(...) in a module's source (all
    functions, or those named); each must pass its arguments by keyword."""
    import ast
    import inspect

    calls = []
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and ast.unparse(node.func.value) == receiver
                and (functions is None or node.func.attr in functions)):
            assert not node.args, f"{receiver}.{node.func.attr} is called with positional arguments"
            calls.append((node.func.attr, [k.arg for k in node.keywords if k.arg is not None]))
    return calls


def test_cuda_glue_calls_the_cuda_module_with_its_argument_names():
    args = _binding_args("csrc/bindings/cuda_module.cpp")
    calls = _keyword_calls(_cuda_ops, "mod")
    assert sorted({c[0] for c in calls}) == ["backward", "backward_workspace_floats", "forward",
                                             "forward_workspace_floats", "gemm", "gemm_workspace_floats"]
    for name, kws in calls:
        assert kws == args[name], name


def _positional_calls(module, receiver, functions):
    """[(function, [argument names])] of the calls receiver.function(...) in a module's source; each
    passes all its arguments positionally, each spelled by its name: ``name``, ``obj.name`` or
    ``f(name)`` / ``f(obj.name)`` (e.g. ``bool(reverse)``)."""
    import ast
    import inspect

    def spelled(a):
        if isinstance(a, ast.Call) and len(a.args) == 1:
            a = a.args[0]
        return a.id if isinstance(a, ast.Name) else (a.attr if isinstance(a, ast.Attribute) else ast.unparse(a))

    calls = []
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and ast.unparse(node.func.value) == receiver and node.func.attr in functions):
            assert not node.keywords, f"{receiver}.{node.func.attr} is called with keyword arguments"
            calls.append((node.func.attr, [spelled(a) for a in node.args]))
    return calls


def test_cpu_calls_pass_the_core_module_arguments_in_its_order():
    from fastrnn import _kernel_cache

    args = _binding_args("csrc/bindings/core_module.cpp")
    fb = ("forward", "backward")
    calls = _positional_calls(ops, "backend.core()", fb) + _positional_calls(_kernel_cache, "backend.core()", fb)
    assert sorted(c[0] for c in calls) == ["backward", "forward"]
    for name, spelled in calls:
        assert spelled == args[name], name
