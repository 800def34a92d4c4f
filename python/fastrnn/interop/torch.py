"""Exact weight exchange with PyTorch: ``from_torch`` and ``to_torch`` (see :mod:`fastrnn.interop`).

torch is imported only inside the functions that need it."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import layers
from .._cells import ACTIVATIONS, cell_spec
from ..models import Model, Sequential
from ._common import (
    _RNN_ACTIVATIONS,
    _activation_name,
    _cell_arrays,
    _cfg,
    _is_bidirectional,
    _new_cell,
    _set_cell,
)

if TYPE_CHECKING:
    import torch

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


def from_torch(module: torch.nn.Module) -> layers.Layer | Sequential:
    """fastrnn layers computing exactly what a ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` computes.

    Each torch layer becomes a fastrnn ``SimpleRNN`` / ``LSTM`` / ``GRU`` with
    ``return_sequences=True`` (``activation`` = the module's ``nonlinearity``), wrapped in
    ``Bidirectional(..., merge_mode="concat")`` when the module is bidirectional, and built for the
    module's ``input_size``. What comes back:

    - ``num_layers=1``: that layer (callable as ``layer(x)``; it also goes straight into a
      [Sequential][fastrnn.Sequential] or a functional model of your own).
    - ``num_layers > 1``: one [Sequential][fastrnn.Sequential] of the layers, in order, each
      returning its whole sequence, so ``model(x)`` (or ``model.predict(x)``) is the torch module's
      ``output`` (``model.layers`` lists the layers). torch's inter-layer ``dropout=p > 0`` becomes
      a ``Dropout(p)`` layer between each pair of recurrent layers, where torch applies it
      (training only; the outputs at inference are identical).

    Both go back to one torch module with [to_torch][fastrnn.interop.to_torch]. fastrnn is
    batch-major: feed ``x`` as ``[B, T, I]`` whatever the module's ``batch_first``. The converted
    layers output 0 at masked steps (``zero_output_for_mask=True``), as torch pads a packed
    sequence's output.

    Args:
        module (torch.nn.Module): A ``torch.nn.RNN`` (tanh or relu), ``LSTM`` or ``GRU``, any
            ``num_layers``, ``bidirectional`` and ``batch_first``, with or without biases.

    Returns:
        Layer | Sequential: The layer for ``num_layers=1``, a Sequential for more.

    Raises:
        TypeError: ``module`` is not a torch RNN, LSTM or GRU.
        ValueError: An LSTM with ``proj_size`` (fastrnn's LSTM has no projection).

    Example:
        >>> import numpy as np
        >>> import torch
        >>> import fastrnn as fr
        >>> lstm = torch.nn.LSTM(3, 8, num_layers=2, bidirectional=True, batch_first=True)
        >>> model = fr.interop.from_torch(lstm)
        >>> x = np.random.rand(4, 10, 3).astype(np.float32)
        >>> with torch.no_grad():
        ...     ref = lstm(torch.from_numpy(x))[0].numpy()
        >>> bool(np.allclose(model(x), ref, atol=1e-5))
        True
        >>> fr.interop.to_torch(model).num_layers
        2
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
    if len(out) == 1:
        return out[0]
    p = float(getattr(module, "dropout", 0.0) or 0.0)
    stack = [out[0]]
    for layer in out[1:]:
        if p > 0:
            stack.append(layers.Dropout(p))
        stack.append(layer)
    model = Sequential(stack)
    model.build((None, I0))
    return model


def _stack_of(obj):
    """(recurrent layers, dropout rate between them) of a layer, a list/tuple of layers or a Sequential.

    Dropout layers must sit between the recurrent layers, one between each pair, all of one rate
    (torch's ``dropout``); an InputLayer first is skipped. Anything else: ValueError.
    """
    if isinstance(obj, (list, tuple)):
        items = list(obj)
    elif isinstance(obj, Model):
        if not isinstance(obj, Sequential):
            raise ValueError(f"to_torch: a model must be a Sequential of recurrent layers, got "
                             f"{type(obj).__name__} '{obj.name}'")
        items = list(obj.layers)
    else:
        return [obj], 0.0
    if items and isinstance(items[0], layers.InputLayer):
        items = items[1:]
    if not items:
        raise ValueError("to_torch: expected at least one recurrent layer, got an empty stack")
    rec, rates = [], []
    for i, item in enumerate(items):
        if isinstance(item, layers.Dropout):
            if not rec or i + 1 == len(items) or isinstance(items[i + 1], layers.Dropout):
                raise ValueError(
                    f"to_torch: Dropout '{item.name}' (entry {i}) must sit between two recurrent layers, one "
                    "between each pair: torch's dropout applies to every layer's output but the last")
            if _cfg(item, "noise_shape", None) is not None:
                raise ValueError(f"to_torch: Dropout '{item.name}' has a noise_shape; torch's dropout drops "
                                 "elements independently (noise_shape=None)")
            rates.append(float(_cfg(item, "rate", 0.0)))
            continue
        if not (_is_bidirectional(item) or isinstance(item, (layers.SimpleRNN, layers.LSTM, layers.GRU))):
            raise ValueError(
                f"to_torch: entry {i} ('{getattr(item, 'name', '?')}') is a {type(item).__name__}; one torch "
                "module holds only recurrent layers (SimpleRNN, LSTM or GRU, each optionally in a "
                "Bidirectional) with Dropout between them")
        if rec and not _cfg(rec[-1], "return_sequences", True):
            raise ValueError(f"to_torch: recurrent layer {len(rec) - 1} ('{rec[-1].name}') feeds another one, so "
                             "it must have return_sequences=True")
        rec.append(item)
    rate = 0.0
    if rates:
        if len(rates) != len(rec) - 1 or len(set(rates)) != 1:
            raise ValueError(
                f"to_torch: torch's dropout is one rate after every layer but the last: expected {len(rec) - 1} "
                f"Dropout layers of one rate between the {len(rec)} recurrent layers, got rates {rates}")
        rate = rates[0]
    return rec, rate


def to_torch(layer: layers.Layer | Sequential | list, batch_first: bool = True) -> torch.nn.Module:
    """One ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` computing exactly what the fastrnn layer(s) compute.

    The module's ``output`` sequence equals the fastrnn output when the last recurrent layer has
    ``return_sequences=True`` (as [from_torch][fastrnn.interop.from_torch] builds them); with
    ``return_sequences=False`` the fastrnn output is the module's last layer's final state
    (``h_n[-1]``, or ``torch.cat([h_n[-2], h_n[-1]], 1)`` when bidirectional). The module comes
    back in eval mode. SimpleRNN and LSTM biases go to ``bias_ih`` with zeros in ``bias_hh``; GRU
    keeps both.

    Args:
        layer (Layer | Sequential | list): A built fastrnn ``SimpleRNN`` / ``LSTM`` / ``GRU``, a
            ``Bidirectional`` of one (merge mode 'concat'), or a stack of them as a
            [Sequential][fastrnn.Sequential] (an ``Input`` first is fine) or a list: layers of one
            cell kind, one ``units``, one activation, all or none bidirectional, each feeding the
            next (they become ``num_layers``). ``Dropout(p)`` layers may sit between them, one
            between each pair, all of one rate: they become torch's ``dropout=p``.
        batch_first (bool): The module's layout (default True, fastrnn's).

    Returns:
        torch.nn.Module: The torch module, in eval mode.

    Raises:
        TypeError: ``layer`` is not a fastrnn recurrent layer or a stack of them.
        ValueError: A stack one torch module cannot express, named in the message: mixed cells,
            units or activations, another layer inside (Dense, Embedding, ...), a layer whose input
            size is not the previous one's output, Dropout not exactly between every pair or of
            several rates, an intermediate layer without ``return_sequences``, ``go_backwards=True``
            (alone or in a Bidirectional), a Bidirectional merge mode other than 'concat', an
            unbuilt layer, or a model that is not a Sequential.
    """
    import torch

    stack, dropout = _stack_of(layer)
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
              bidirectional=bidir, dropout=dropout, **kw)
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

