"""Saving and loading models and weights: one zip file of JSON and .npy entries, written atomically.

File format (version 1), a zip archive (entries stored uncompressed, each with its CRC-32):

    fastrnn.json      the format marker, first entry:
                      {"format": "fastrnn", "version": 1, "kind": "model" | "weights", "fastrnn_version": ...}
    model.json        {"class_name", "config" (the model's get_config(): layer configs from the layers'
                      get_config()), "build_input_shape", "weights": [{"name", "shape", "dtype",
                      "array"}, ...] in parameters() order (a quantized layer's parameters are its
                      int8 weights and float32 scales, or its bf16 weights as uint16: fastrnn.quantization),
                      "compile_config": {"optimizer", "loss",
                      "metrics"} or null, "optimizer_state": the optimizer's state_dict() or null}
                      (a weights file holds only "class_name", "build_input_shape" and "weights")
    arrays/NNNNN.npy  every array, in NumPy's .npy format, written and read with allow_pickle=False;
                      in the JSON an array appears as {"__ndarray__": "arrays/NNNNN.npy"}

Nothing is ever unpickled. Writing goes to a temporary file in the target's directory, which is
flushed, fsync'ed and then moved over the target with ``os.replace``: a failure at any point leaves
the old file untouched (and the temporary file removed). An overwritten file keeps its permission
bits (a new one gets ``0o666 & ~umask``, as open() gives); a symbolic link is written through (it
stays a link). Refused before anything is created: an empty path or one ending in a separator
(ValueError / IsADirectoryError), a directory (IsADirectoryError), a dangling symbolic link
(FileNotFoundError: its destination is not created) and an existing non-regular file (ValueError).

Loading treats the file as untrusted: every problem is a ValueError naming the file (a missing file
or dangling link: FileNotFoundError), found in time and memory bounded by the file's size and
before anything large is allocated. Only regular files (or links to them) are opened; entries must
be stored uncompressed (as written), no larger than the file and read at most once; .npy headers
are checked (plain bool / integer / float dtypes, a shape matching the entry's size and, for
weights, the model's parameter) before their data is read; JSON entries have a size and nesting
limit and may not hold NaN or infinities; the model is rebuilt from its config with initializers
that create zeros and no more values than the file's weights hold, so a config naming huge layers
is refused before they are allocated; the weights' count and shapes are checked before any is read.

This module holds the public API and what knows about models; the container itself (the atomic
writer and the bounded reader of the zip, .npy and JSON entries) is ``fastrnn._saving_io``.
"""
from __future__ import annotations

import math
import os

from . import losses, metrics, optim
from ._saving_io import (
    _MAX_NDIM,
    FORMAT,
    VERSION,
    _ArrayCollector,
    _atomic_write,
    _Reader,
    _write_container,
)
from ._saving_io import MARKER as MARKER
from ._saving_io import MODEL_ENTRY as MODEL_ENTRY
from .layers import initializers

# model classes loadable by name (register_model); everything else comes from custom_objects
_MODEL_CLASSES: dict = {}

__all__ = ["FORMAT", "VERSION", "load_model", "load_weights", "register_model", "save_model", "save_weights"]

# a model rebuilt by running it once on zeros (Model.build) gets at most this many input values per sample
_MAX_BUILD_INPUT_VALUES = 1 << 22


# --------------------------------------------------------------------------- saving
def _weights_payload(model, col):
    params = model.parameters()
    return [{"name": p.name, "shape": list(p.shape), "dtype": p.dtype.name, "array": col.encode(p.value)}
            for p in params]


_KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def _refuse_keras_suffix(filepath, fn):
    """fastrnn's files are not Keras files: a Keras suffix would make Keras try (and fail) to read them."""
    name = os.fsdecode(os.fspath(filepath))
    suffix = next((s for s in _KERAS_SUFFIXES if name.lower().endswith(s)), None)
    if suffix is not None:
        raise ValueError(
            f"{fn}: '{name}' ends in {suffix}, a Keras file name, but fastrnn writes its own format (a zip of "
            f"JSON and .npy arrays) that Keras cannot load. Save under another name (e.g. '.fastrnn'), or write a "
            f"Keras file with fr.interop.to_keras(model).save(path)"
        )


def save_model(model, filepath):
    """Write architecture, weights, compile configuration and optimizer state to ``filepath`` (atomically).

    Names ending in .keras / .h5 / .hdf5 are refused: the file would not be a Keras file
    (``fr.interop.to_keras(model).save(path)`` writes one)."""
    _refuse_keras_suffix(filepath, "save")
    if not model.built:
        raise ValueError(f"save: model '{model.name}' is not built; call it on data or build(input_shape) first")
    col = _ArrayCollector()
    payload = {
        "class_name": type(model).__name__,
        "config": model.get_config(),
        "build_input_shape": None if model._build_input_shape is None else list(model._build_input_shape),
        "weights": _weights_payload(model, col),
        "compile_config": None,
        "optimizer_state": None,
    }
    if model.optimizer is not None and model.loss is not None:
        payload["compile_config"] = {
            "optimizer": optim.serialize(model.optimizer),
            "loss": losses.serialize(model.loss),
            "metrics": [metrics.serialize(m) for m in model._metric_ids],
        }
        payload["optimizer_state"] = col.encode(model.optimizer.state_dict())
    _atomic_write(filepath, lambda f: _write_container(f, "model", payload, col.arrays))


def save_weights(model, filepath):
    """Write only the weights (in ``parameters()`` order, with names and shapes) to ``filepath`` (atomically).
    Keras file names (.keras / .h5 / .hdf5) are refused, as by :func:`save_model`."""
    _refuse_keras_suffix(filepath, "save_weights")
    if not model.built:
        raise ValueError(f"save_weights: model '{model.name}' is not built; call it on data first")
    col = _ArrayCollector()
    payload = {
        "class_name": type(model).__name__,
        "build_input_shape": None if model._build_input_shape is None else list(model._build_input_shape),
        "weights": _weights_payload(model, col),
    }
    _atomic_write(filepath, lambda f: _write_container(f, "weights", payload, col.arrays))


# --------------------------------------------------------------------------- loading
def _assign_weights(model, r, saved):
    """Check the count and every shape of ``saved`` (weight_headers()) against the model's parameters,
    then read the arrays one by one into them."""
    path = r.path
    params = model.parameters()
    if len(saved) != len(params):
        raise ValueError(f"'{path}' holds {len(saved)} weight arrays but model '{model.name}' has "
                         f"{len(params)} parameters")
    for (name, _, shape, dtype), p in zip(saved, params):
        if shape != p.shape:
            raise ValueError(f"'{path}': weight '{name}' has shape {shape} but the model's parameter "
                             f"'{p.name}' has shape {p.shape}")
        # float32 and float64 convert into each other; a quantized layer's int8 / uint16 (bf16) arrays
        # and their float32 scales are taken only as they were written
        if dtype != p.dtype and (dtype.kind != "f" or p.dtype.kind != "f"):
            raise ValueError(f"'{path}': weight '{name}' has dtype {dtype} but the model's parameter "
                             f"'{p.name}' has dtype {p.dtype} (a file of another quantization mode or of "
                             "the float model?)")
    for (_, ref, shape, _), p in zip(saved, params):
        p.assign(r.array(ref, expect_shape=shape))


# values the initializers may create beyond twice the file's: enough that a small mismatch reaches
# the precise count / shape message, too few to matter
_BUILD_SLACK = 1 << 20


def _build_budget(saved):
    """How many values the model's initializers may create: about the weight values the file holds
    (the arrays' headers were checked against their entries' sizes, so these are bytes in the file)."""
    return 2 * sum(math.prod(shape) for _, _, shape, _ in saved) + _BUILD_SLACK


def _build_shape(r, shape, model):
    """The recorded input shape, checked: a list of dimensions (ints >= 0 or None), or for a model with
    several inputs a list of them; a model built by a forward pass gets a bounded number of values."""
    def dims(sh):
        if not isinstance(sh, list) or len(sh) > _MAX_NDIM or not all(
                d is None or (type(d) is int and d >= 0) for d in sh):
            raise ValueError(f"'{r.path}': corrupt fastrnn file (build_input_shape {shape!r:.100})")
        return sh

    multi = isinstance(shape, list) and bool(shape) and all(isinstance(sh, list) for sh in shape)
    shapes = [dims(sh) for sh in shape] if multi else [dims(shape)]
    if getattr(type(model).build, "__qualname__", "") == "Model.build":  # runs the model on zeros
        n = sum(math.prod(1 if d is None else d for d in sh) for sh in shapes)
        if n > _MAX_BUILD_INPUT_VALUES:
            raise ValueError(f"'{r.path}': build_input_shape {shape!r:.100} asks for {n:,} input values per "
                             f"sample to build the model with (at most {_MAX_BUILD_INPUT_VALUES:,})")
    return tuple(shape)


def register_model(cls):
    """Class decorator: make a model class loadable by its class name without ``custom_objects``.

    fastrnn registers ``Model`` and ``Sequential``; any other class (a custom model, ``Seq2Seq``)
    is found only in the ``custom_objects`` given to :func:`load_model`. Loading looks a name up
    here and never imports or executes anything named in a file."""
    _MODEL_CLASSES[cls.__name__] = cls
    return cls


def _model_class(name, custom_objects, path=None):
    where = "load_model" if path is None else f"'{path}'"
    if not isinstance(name, str):
        raise ValueError(f"{where}: the file's model class name {name!r:.100} is not the name of a model "
                         "class or custom model class")
    if custom_objects and name in custom_objects:
        return custom_objects[name]
    if name in _MODEL_CLASSES:
        return _MODEL_CLASSES[name]
    raise ValueError(f"{where}: the file holds a custom model class '{name:.100}'; pass it as "
                     f"custom_objects={{'{name:.100}': {name:.100}}}")


def _compile_from_file(model, r, cc, state, custom_objects):
    """Compile ``model`` from a file's compile_config and restore the optimizer state; a malformed
    section becomes a ValueError naming the file and what is wrong."""
    if not isinstance(cc, dict):
        raise ValueError(f"'{r.path}': compile_config must be an object, got {type(cc).__name__}; "
                         "load with compile=False to skip it")
    missing = [k for k in ("optimizer", "loss") if k not in cc]
    if missing:
        raise ValueError(f"'{r.path}': compile_config lacks {', '.join(repr(k) for k in missing)}; "
                         "load with compile=False to skip it")
    try:
        opt = optim.deserialize(cc["optimizer"], custom_objects=custom_objects)
        loss = losses.deserialize(cc["loss"], custom_objects=custom_objects)
        mets = []
        for m in cc.get("metrics") or []:
            if isinstance(m, dict) and m.get("class_name") == "custom":
                cname = (m.get("config") or {}).get("name")
                if not custom_objects or cname not in custom_objects:
                    raise ValueError(
                        f"load_model: the model was compiled with the custom metric '{cname}'; pass it as "
                        f"custom_objects={{'{cname}': ...}} or load with compile=False"
                    )
                m = custom_objects[cname]
            mets.append(m)
        model.compile(optimizer=opt, loss=loss, metrics=mets)
    except ValueError as exc:
        raise ValueError(f"'{r.path}': cannot restore the compile settings: {exc}") from None
    except Exception as exc:  # the file's data made a constructor fail
        raise ValueError(f"'{r.path}': malformed compile_config ({type(exc).__name__}: {str(exc)[:500]}); "
                         "load with compile=False to skip it") from None
    if state is not None:
        try:
            opt.load_state_dict(r.decode(state), custom_objects=custom_objects)
        except ValueError as exc:
            raise ValueError(f"'{r.path}': cannot restore the optimizer state: {exc}") from None
        except Exception as exc:
            raise ValueError(f"'{r.path}': malformed optimizer state ({type(exc).__name__}: {str(exc)[:500]}); "
                             "load with compile=False to skip it") from None


def _rebuild(r, p, saved, custom_objects):
    """The model of a file's config, built, with initializers that create zeros (the weights come
    from the file) and at most as many values as the file's weights hold: a config naming layers
    bigger than its weights fails here, before anything large is allocated or computed."""
    cls = _model_class(p.get("class_name"), custom_objects, r.path)
    config = p.get("config") or {}
    if not isinstance(config, dict):
        raise ValueError(f"'{r.path}': cannot rebuild the model from its config: the config is a "
                         f"{type(config).__name__}, not an object")
    try:
        with initializers._init_budget(_build_budget(saved), skip_values=True):
            if isinstance(cls, type) and getattr(cls, "_config_takes_custom_objects", False):
                model = cls.from_config(config, custom_objects=custom_objects)
            else:
                model = cls.from_config(config)
            if not model.built:
                shape = p.get("build_input_shape")
                if shape is None:
                    raise ValueError(f"'{r.path}': the file records no input shape to build the model with")
                model.build(_build_shape(r, shape, model))
    except initializers._InitBudgetExceeded as exc:
        n = sum(math.prod(shape) for _, _, shape, _ in saved)
        raise ValueError(f"'{r.path}': the model's config asks for more weight values than the file holds "
                         f"({n:,}): {exc}") from None
    except Exception as exc:  # a config is data: whatever it makes a constructor raise is a bad file
        if isinstance(exc, ValueError) and str(exc).startswith(f"'{r.path}'"):
            raise
        raise ValueError(f"'{r.path}': cannot rebuild the model from its config: {type(exc).__name__}: "
                         f"{str(exc)[:500]}") from exc
    return model


def load_model(filepath, custom_objects=None, compile=True):
    """Recreate a model saved with ``model.save``: architecture, weights and (with compile=True) the
    optimizer (with its full state), loss and metrics.

    ValueError (naming the file) for anything that is not a sound fastrnn file: not a regular file
    (a directory, FIFO or device; a symbolic link to a regular file is followed), not a zip, compressed
    or oversized entries, .npy arrays that are not plain numbers or whose shapes disagree with their
    size or the model, JSON that is malformed, too deep or holds non-finite numbers, a config that
    cannot be rebuilt or asks for more weights than the file holds. FileNotFoundError for a missing
    file or a dangling symbolic link. All of it is checked before anything large is allocated."""
    with _Reader(filepath, "model") as r:
        p = r.payload
        saved = r.weight_headers()
        model = _rebuild(r, p, saved, custom_objects)
        _assign_weights(model, r, saved)
        cc = p.get("compile_config")
        if compile and cc:
            _compile_from_file(model, r, cc, p.get("optimizer_state"), custom_objects)
    return model


def load_weights(model, filepath):
    """Load the weights of a ``save_weights`` (or ``save``) file into ``model`` (built from the file's
    recorded input shape when it is not built yet, creating no more weight values than the file
    holds). Errors as for :func:`load_model`."""
    with _Reader(filepath, "weights") as r:
        saved = r.weight_headers()
        if not model.built:
            shape = r.payload.get("build_input_shape")
            if shape is None:
                raise ValueError(f"load_weights: model '{model.name}' is not built and '{r.path}' records no "
                                 "input shape")
            try:
                with initializers._init_budget(_build_budget(saved)):
                    model.build(_build_shape(r, shape, model))
            except initializers._InitBudgetExceeded as exc:
                raise ValueError(f"'{r.path}': building model '{model.name}' for the recorded input shape "
                                 f"{shape!r:.100} needs more weight values than the file holds: {exc}") from None
        _assign_weights(model, r, saved)
