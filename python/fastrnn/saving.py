"""Saving and loading models and weights: one zip file of JSON and .npy entries, written atomically.

File format (version 1), a zip archive (entries stored uncompressed, each with its CRC-32):

    fastrnn.json      the format marker, first entry:
                      {"format": "fastrnn", "version": 1, "kind": "model" | "weights", "fastrnn_version": ...}
    model.json        {"class_name", "config" (the model's get_config(): layer configs from the layers'
                      get_config()), "build_input_shape", "weights": [{"name", "shape", "dtype",
                      "array"}, ...] in parameters() order, "compile_config": {"optimizer", "loss",
                      "metrics"} or null, "optimizer_state": the optimizer's state_dict() or null}
                      (a weights file holds only "class_name", "build_input_shape" and "weights")
    arrays/NNNNN.npy  every array, in NumPy's .npy format, written and read with allow_pickle=False;
                      in the JSON an array appears as {"__ndarray__": "arrays/NNNNN.npy"}

Nothing is ever unpickled. Writing goes to a temporary file in the target's directory, which is
flushed, fsync'ed and then moved over the target with ``os.replace``: a failure at any point leaves
the old file untouched (and the temporary file removed). Loading a file that is not a zip, has no
marker, was written by a newer format version, is truncated or fails a CRC check raises ValueError.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import struct
import tempfile
import zipfile
import zlib

import numpy as np

from . import losses, metrics, optim
from ._version import __version__

FORMAT = "fastrnn"
VERSION = 1
MARKER = "fastrnn.json"
MODEL_ENTRY = "model.json"

# model classes loadable by name (register_model); everything else comes from custom_objects
_MODEL_CLASSES: dict = {}

__all__ = ["FORMAT", "VERSION", "load_model", "load_weights", "register_model", "save_model", "save_weights"]


# --------------------------------------------------------------------------- writing
def _umask():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def _file_kind(mode):
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return kind
    return "not a regular file"


def _check_target(path):
    """The file ``path`` names, after following symbolic links, and the mode to give the new file.

    Refused before anything is created: an empty name or one ending in a separator, an existing
    directory or other non-regular file (a FIFO, a device) and a dangling symbolic link (its
    destination would be created somewhere the caller may not expect: create it first, or save
    under the destination's own name)."""
    if not path:
        raise ValueError("save: the file path is empty")
    if path.endswith(os.sep) or (os.altsep and path.endswith(os.altsep)):
        raise IsADirectoryError(f"save: '{path}' names a directory; give a file name")
    if os.path.islink(path):  # write through a link, as open() would: the link stays a link
        real = os.path.realpath(path)
        if not os.path.lexists(real) or os.path.islink(real):
            raise FileNotFoundError(f"save: '{path}' is a dangling symbolic link (to '{real}', which does "
                                    "not exist); nothing is created through it")
        path = real
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"filepath: directory '{directory}' does not exist")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return path, directory, 0o666 & ~_umask()  # a new file: what open() would give it
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(f"save: '{path}' is a directory; give a file name")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"save: '{path}' exists and is not a regular file ({_file_kind(st.st_mode)}); "
                         "fastrnn replaces regular files only")
    return path, directory, stat.S_IMODE(st.st_mode)  # an overwritten file keeps its permissions


def _atomic_write(path, write_fn):
    """Call ``write_fn(binary file)`` on a temp file next to ``path``, fsync it, then os.replace it over
    ``path``. The path is checked first (:func:`_check_target`); an overwritten file keeps its mode."""
    path = os.fsdecode(os.fspath(path))  # str, bytes or PathLike
    path, directory, mode = _check_target(path)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _write_array(zf, name, arr):
    """Write one array as a .npy entry (never pickled)."""
    with zf.open(name, "w", force_zip64=True) as f:
        np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)


class _ArrayCollector:
    def __init__(self):
        self.arrays = []

    def encode(self, obj):
        """JSON-able copy of obj with every ndarray replaced by a reference to an entry."""
        if isinstance(obj, np.ndarray):
            if obj.dtype.kind not in "biuf":
                raise TypeError(f"save: cannot store an array of dtype {obj.dtype} (numeric arrays only)")
            name = f"arrays/{len(self.arrays):05d}.npy"
            self.arrays.append((name, obj))
            return {"__ndarray__": name}
        if isinstance(obj, dict):
            return {str(k): self.encode(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.encode(v) for v in obj]
        if isinstance(obj, np.generic):
            return obj.item()
        return obj


def _write_container(f, kind, payload, arrays):
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
        marker = {"format": FORMAT, "version": VERSION, "kind": kind, "fastrnn_version": __version__}
        zf.writestr(MARKER, json.dumps(marker))
        zf.writestr(MODEL_ENTRY, json.dumps(payload, allow_nan=False))
        for name, arr in arrays:
            _write_array(zf, name, arr)


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


# --------------------------------------------------------------------------- reading
# What zipfile raises on damaged archives: besides BadZipFile, a flipped bit in a header can read
# as an unsupported compression method or version (NotImplementedError), an encrypted entry
# (RuntimeError), a broken deflate stream (zlib.error) or a short header (struct.error).
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError,
               RuntimeError, zlib.error, struct.error, UnicodeDecodeError, OverflowError)


class _Reader:
    """Opens and validates a container; every problem becomes a ValueError naming the file."""

    def __init__(self, filepath, expect_kind):
        self.path = os.fsdecode(os.fspath(filepath))  # str, bytes or PathLike
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"filepath: no such file '{self.path}'")
        with open(self.path, "rb") as f:
            data = f.read()
        try:
            self.zf = zipfile.ZipFile(io.BytesIO(data))
        except _ZIP_ERRORS as exc:
            raise ValueError(
                f"'{self.path}' is not a fastrnn file (not a readable zip archive: {exc}); it may be truncated, "
                "corrupt or written by another program"
            ) from None
        names = set(self.zf.namelist())
        if MARKER not in names:
            raise ValueError(f"'{self.path}' is not a fastrnn file (no '{MARKER}' format marker)")
        marker = self._json(MARKER)
        if not isinstance(marker, dict) or marker.get("format") != FORMAT:
            raise ValueError(f"'{self.path}' is not a fastrnn file (format marker {marker!r})")
        version = marker.get("version")
        if not isinstance(version, int) or version < 1:
            raise ValueError(f"'{self.path}': invalid format version {version!r}")
        if version > VERSION:
            raise ValueError(f"'{self.path}' has format version {version}, newer than this fastrnn reads "
                             f"({VERSION}); upgrade fastrnn")
        kind = marker.get("kind")
        if expect_kind == "model" and kind != "model":
            raise ValueError(f"'{self.path}' holds only weights (kind {kind!r}); create the model and call "
                             "model.load_weights() instead of load_model()")
        if kind not in ("model", "weights"):
            raise ValueError(f"'{self.path}': unknown content kind {kind!r}")
        self.kind = kind
        self.payload = self._json(MODEL_ENTRY)
        if not isinstance(self.payload, dict) or not isinstance(self.payload.get("weights"), list):
            raise ValueError(f"'{self.path}': corrupt model description (no weights list)")

    def _read(self, name):
        try:
            return self.zf.read(name)
        except KeyError:
            raise ValueError(f"'{self.path}': corrupt fastrnn file (missing entry '{name}')") from None
        except _ZIP_ERRORS as exc:
            raise ValueError(f"'{self.path}': corrupt or truncated fastrnn file (entry '{name}': {exc})") from None

    def _json(self, name):
        raw = self._read(name)
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"'{self.path}': corrupt fastrnn file (entry '{name}' is not valid JSON: {exc})") from None

    def array(self, ref):
        if not (isinstance(ref, dict) and isinstance(ref.get("__ndarray__"), str)):
            raise ValueError(f"'{self.path}': corrupt fastrnn file (bad array reference {ref!r})")
        name = ref["__ndarray__"]
        raw = self._read(name)
        try:
            return np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:
            raise ValueError(f"'{self.path}': corrupt fastrnn file (entry '{name}' is not a valid .npy array: "
                             f"{exc})") from None

    def decode(self, obj):
        if isinstance(obj, dict):
            if set(obj) == {"__ndarray__"}:
                return self.array(obj)
            return {k: self.decode(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.decode(v) for v in obj]
        return obj

    def weights(self):
        out = []
        for i, w in enumerate(self.payload["weights"]):
            if not isinstance(w, dict) or "array" not in w:
                raise ValueError(f"'{self.path}': corrupt fastrnn file (weight entry {i})")
            arr = self.array(w["array"])
            if list(arr.shape) != list(w.get("shape", arr.shape)):
                raise ValueError(f"'{self.path}': corrupt fastrnn file (weight '{w.get('name')}' has shape "
                                 f"{arr.shape}, recorded {w.get('shape')})")
            out.append((w.get("name", f"#{i}"), arr))
        return out


def _assign_weights(model, saved, path):
    params = model.parameters()
    if len(saved) != len(params):
        raise ValueError(f"'{path}' holds {len(saved)} weight arrays but model '{model.name}' has "
                         f"{len(params)} parameters")
    for (name, arr), p in zip(saved, params):
        if arr.shape != p.shape:
            raise ValueError(f"'{path}': weight '{name}' has shape {arr.shape} but the model's parameter "
                             f"'{p.name}' has shape {p.shape}")
    for (_, arr), p in zip(saved, params):
        p.assign(arr)


def register_model(cls):
    """Class decorator: make a model class loadable by its class name without ``custom_objects``.

    fastrnn registers ``Model`` and ``Sequential``; any other class (a custom model, ``Seq2Seq``)
    is found only in the ``custom_objects`` given to :func:`load_model`. Loading looks a name up
    here and never imports or executes anything named in a file."""
    _MODEL_CLASSES[cls.__name__] = cls
    return cls


def _model_class(name, custom_objects):
    if custom_objects and name in custom_objects:
        return custom_objects[name]
    if isinstance(name, str) and name in _MODEL_CLASSES:
        return _MODEL_CLASSES[name]
    raise ValueError(f"load_model: the file holds a custom model class '{name}'; pass it as "
                     f"custom_objects={{'{name}': {name}}}")


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
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise ValueError(f"'{r.path}': malformed compile_config ({type(exc).__name__}: {exc}); "
                         "load with compile=False to skip it") from None
    if state is not None:
        try:
            opt.load_state_dict(r.decode(state))
        except ValueError as exc:
            raise ValueError(f"'{r.path}': cannot restore the optimizer state: {exc}") from None
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            raise ValueError(f"'{r.path}': malformed optimizer state ({type(exc).__name__}: {exc}); "
                             "load with compile=False to skip it") from None


def load_model(filepath, custom_objects=None, compile=True):
    """Recreate a model saved with ``model.save``: architecture, weights and (with compile=True) the
    optimizer (with its full state), loss and metrics. ValueError for corrupt or foreign files."""
    r = _Reader(filepath, "model")
    p = r.payload
    cls = _model_class(p.get("class_name"), custom_objects)
    try:
        if isinstance(cls, type) and getattr(cls, "_config_takes_custom_objects", False):
            model = cls.from_config(p.get("config") or {}, custom_objects=custom_objects)
        else:
            model = cls.from_config(p.get("config") or {})
    except (KeyError, TypeError, AttributeError) as exc:  # AttributeError: a config that is not a dict
        raise ValueError(f"'{r.path}': cannot rebuild the model from its config: {exc}") from None
    if not model.built:
        shape = p.get("build_input_shape")
        if shape is None:
            raise ValueError(f"'{r.path}': the file records no input shape to build the model with")
        model.build(tuple(shape))
    _assign_weights(model, r.weights(), r.path)
    cc = p.get("compile_config")
    if compile and cc:
        _compile_from_file(model, r, cc, p.get("optimizer_state"), custom_objects)
    return model


def load_weights(model, filepath):
    """Load the weights of a ``save_weights`` (or ``save``) file into ``model`` (built from the file's
    recorded input shape when it is not built yet)."""
    r = _Reader(filepath, "weights")
    if not model.built:
        shape = r.payload.get("build_input_shape")
        if shape is None:
            raise ValueError(f"load_weights: model '{model.name}' is not built and '{r.path}' records no input shape")
        model.build(tuple(shape))
    _assign_weights(model, r.weights(), r.path)
