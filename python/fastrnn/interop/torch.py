"""Exact weight exchange with PyTorch: ``from_torch`` and ``to_torch`` (see :mod:`fastrnn.interop`).

torch is imported only inside the functions that need it."""
from __future__ import annotations

import numpy as np

from .. import layers
from .._cells import ACTIVATIONS, cell_spec
from ._common import (
    _RNN_ACTIVATIONS,
    _activation_name,
    _cell_arrays,
    _cfg,
    _is_bidirectional,
    _new_cell,
    _set_cell,
)

__all__ = ["from_torch", "to_torch"]


def _torch_kind(module):
    import torch

    for cls, kind in ((torch.nn.LSTM, "LSTM"), (torch.nn.GRU, "GRU"), (torch.nn.RNN, "SimpleRNN")):
        if isinstance(module, cls):
            return kind
    raise TypeError(f"from_torch expects a torch.nn.RNN, LSTM or GRU module, got {type(module).__name__}")


def _torch_param(module, name, like=None):
    p = getattr(module, name, None)
    if p is None:
        if like is None:
            raise ValueError(f"torch module has no parameter {name!r}")
        return np.zeros(like, dtype=np.float32)
    return p.detach().cpu().numpy().astype(np.float32)


def from_torch(module):
    """fastrnn layer(s) computing exactly what a ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` computes.

    Each torch layer becomes a fastrnn ``SimpleRNN`` / ``LSTM`` / ``GRU`` with
    ``return_sequences=True`` (``activation`` = the module's ``nonlinearity``), wrapped in
    ``Bidirectional(..., merge_mode="concat")`` when the module is bidirectional. Returns the layer
    for ``num_layers=1`` and a list of layers (apply them in order) otherwise. fastrnn layers are
    batch-major: feed ``x`` as ``[B, T, I]`` whatever the module's ``batch_first``. torch's
    inter-layer dropout is a training option and is not carried over. ``proj_size`` is not supported.
    """
    kind = _torch_kind(module)
    if getattr(module, "proj_size", 0):
        raise ValueError(f"from_torch: LSTM proj_size={module.proj_size} is not supported (fastrnn LSTM has no "
                         f"projection)")
    H, I0 = int(module.hidden_size), int(module.input_size)
    ndir = 2 if module.bidirectional else 1
    kw = {"return_sequences": True, "zero_output_for_mask": True}  # torch pads packed outputs with 0
    if kind == "SimpleRNN":
        if module.nonlinearity not in ACTIVATIONS:
            raise ValueError(f"from_torch: nonlinearity must be {_RNN_ACTIVATIONS}, got {module.nonlinearity!r}")
        kw["activation"] = module.nonlinearity
    G = cell_spec(kind).gates
    out = []
    for k in range(int(module.num_layers)):
        I = I0 if k == 0 else H * ndir
        cells = []
        for d in range(ndir):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            w_ih = _torch_param(module, "weight_ih" + sfx)
            w_hh = _torch_param(module, "weight_hh" + sfx)
            b_ih = _torch_param(module, "bias_ih" + sfx, like=(G * H,))
            b_hh = _torch_param(module, "bias_hh" + sfx, like=(G * H,))
            cells.append((w_ih, w_hh, b_ih, b_hh))
        if ndir == 1:
            layer = _new_cell(kind, H, I, **kw)
            targets = [layer]
        else:
            layer = layers.Bidirectional(getattr(layers, kind)(H, **kw), merge_mode="concat")
            layer.build((None, I))
            targets = [layer.forward_layer, layer.backward_layer]
        for tgt, (w_ih, w_hh, b_ih, b_hh) in zip(targets, cells):
            if kind == "GRU":
                _set_cell(tgt, kind, w_ih, w_hh, b_ih=b_ih, b_hh=b_hh)
            else:
                _set_cell(tgt, kind, w_ih, w_hh, b=b_ih + b_hh)
        out.append(layer)
    return out[0] if len(out) == 1 else out


def _stack_of(obj):
    """The list of recurrent layers in a layer, a list/tuple of layers or a Sequential-like model."""
    if isinstance(obj, (list, tuple)):
        items = list(obj)
    elif hasattr(obj, "layers") and not _is_bidirectional(obj):
        items = list(obj.layers)
    else:
        items = [obj]
    if not items:
        raise ValueError("to_torch: expected at least one recurrent layer, got an empty stack")
    return items


def to_torch(layer, batch_first=True):
    """A ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` computing exactly what the fastrnn layer(s) compute.

    ``layer``: a built fastrnn ``SimpleRNN`` / ``LSTM`` / ``GRU``, a ``Bidirectional`` of one (merge
    mode 'concat'), or a list (or Sequential) of such layers of the same kind and size, each feeding
    the next (becomes ``num_layers``). The module's output sequence equals the last fastrnn layer's
    output with ``return_sequences=True``. ``batch_first`` sets the module's layout (default True,
    fastrnn's). SimpleRNN and LSTM biases go to ``bias_ih`` with zeros in ``bias_hh``.
    Layers with ``go_backwards=True``, alone or wrapped in Bidirectional, have no torch counterpart: ValueError.
    """
    import torch

    stack = _stack_of(layer)
    per_layer = []  # list of (kind, units, input_size, [arrays per direction], bidir)
    for i, item in enumerate(stack):
        if _is_bidirectional(item):
            merge = _cfg(item, "merge_mode", "concat")
            if merge != "concat":
                raise ValueError(f"to_torch: Bidirectional merge_mode must be 'concat' (torch concatenates), "
                                 f"got {merge!r} in layer {i}")
            if bool(_cfg(item.forward_layer, "go_backwards", False)):
                raise ValueError(f"to_torch: layer {i} ('{item.name}') is a Bidirectional of a layer with "
                                 "go_backwards=True, which torch bidirectional modules cannot express")
            subs = [item.forward_layer, item.backward_layer]
        else:
            if bool(_cfg(item, "go_backwards", False)):
                raise ValueError(f"to_torch: layer {i} ('{item.name}') has go_backwards=True, which torch "
                                 "modules cannot express outside a bidirectional module")
            subs = [item]
        arrs = []
        for sub in subs:
            kind, units, isz, a = _cell_arrays(sub)
            act = _activation_name(sub)
            if kind == "SimpleRNN" and act not in ACTIVATIONS:
                raise ValueError(f"to_torch: SimpleRNN activation must be {_RNN_ACTIVATIONS}, got {act!r}")
            if kind != "SimpleRNN" and act != sub.spec.activation:
                raise ValueError(f"to_torch: {kind} activation must be {sub.spec.activation!r} for torch, got {act!r}")
            arrs.append((kind, units, isz, act, a))
        per_layer.append((arrs, len(subs) == 2))
    kinds = {a[0] for arrs, _ in per_layer for a in arrs}
    units = {a[1] for arrs, _ in per_layer for a in arrs}
    acts = {a[3] for arrs, _ in per_layer for a in arrs}
    bidirs = {b for _, b in per_layer}
    if len(kinds) != 1 or len(units) != 1 or len(acts) != 1 or len(bidirs) != 1:
        raise ValueError(
            "to_torch: a stack must use one cell kind, one size, one activation and be all or none "
            f"bidirectional, got kinds {sorted(kinds)}, units {sorted(units)}, activations {sorted(acts)}")
    kind, H, act, bidir = kinds.pop(), units.pop(), acts.pop(), bidirs.pop()
    ndir = 2 if bidir else 1
    I0 = per_layer[0][0][0][2]
    for k in range(1, len(per_layer)):
        isz = per_layer[k][0][0][2]
        if isz != H * ndir:
            raise ValueError(f"to_torch: layer {k} takes {isz} input features but layer {k - 1} outputs {H * ndir}")
    cls = {"SimpleRNN": torch.nn.RNN, "LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}[kind]
    kw = {"nonlinearity": act} if kind == "SimpleRNN" else {}
    mod = cls(I0, H, num_layers=len(per_layer), bias=True, batch_first=bool(batch_first),
              bidirectional=bidir, **kw)
    with torch.no_grad():
        for k, (arrs, _) in enumerate(per_layer):
            for d, (_, _, _, _, a) in enumerate(arrs):
                sfx = f"_l{k}" + ("_reverse" if d else "")
                getattr(mod, "weight_ih" + sfx).copy_(torch.from_numpy(a["w_ih"]))
                getattr(mod, "weight_hh" + sfx).copy_(torch.from_numpy(a["w_hh"]))
                if kind == "GRU":
                    b_ih, b_hh = a["b_ih"], a["b_hh"]
                else:
                    b_ih, b_hh = a["b"], np.zeros_like(a["b"])
                getattr(mod, "bias_ih" + sfx).copy_(torch.from_numpy(b_ih))
                getattr(mod, "bias_hh" + sfx).copy_(torch.from_numpy(b_hh))
    mod.eval()
    return mod

