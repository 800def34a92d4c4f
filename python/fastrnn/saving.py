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
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import stat
import struct
import tempfile
import zipfile
import zlib

import numpy as np

from . import losses, metrics, optim
from ._version import __version__
from .layers import initializers

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

# Limits on what a file may make the reader do. Entries are stored (never compressed), so no entry
# can hold more bytes than the file; all entries read together cannot either (a reference read
# twice, or entries overlapping in the archive, would). JSON entries have a size and nesting cap.
_MAX_JSON_BYTES = 64 << 20
_MAX_JSON_DEPTH = 100
_MAX_NPY_HEADER = 10000
_MAX_NDIM = 32
# the names the writer gives the arrays' entries
_ARRAY_NAME = re.compile(r"arrays/[0-9]{1,9}\.npy\Z")
# a model rebuilt by running it once on zeros (Model.build) gets at most this many input values per sample
_MAX_BUILD_INPUT_VALUES = 1 << 22


def _unsafe_name(name):
    """An entry name that would leave the directory it is extracted to (absolute, '..', drive letters)."""
    return (name.startswith(("/", "\\")) or "\\" in name or "\0" in name or ":" in name
            or ".." in name.split("/"))


def _file_error(path, what):
    return ValueError(f"'{path}': corrupt fastrnn file ({what})")


def _no_constant(name):
    raise ValueError(f"the non-finite number {name} (fastrnn writes finite numbers only)")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} overflows a float")
    return value


def _check_depth(obj, limit):
    """ValueError when ``obj`` (parsed JSON) nests deeper than ``limit`` (checked without recursion)."""
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, (dict, list)):
            if d > limit:
                raise ValueError(f"nested more than {limit} levels deep")
            stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))


def _npy_dtype_ok(dt):
    """Plain numbers only: bool, (unsigned) integers and floats of at most 8 bytes; never objects."""
    return (isinstance(dt, np.dtype) and dt.fields is None and dt.subdtype is None and not dt.hasobject
            and dt.kind in "biuf" and dt.itemsize <= 8)


class _Reader:
    """Opens and validates a container; every problem becomes a ValueError naming the file.

    Only a regular file (or a symbolic link to one) is opened, with O_NONBLOCK so that a FIFO swapped
    in after the check cannot block, and checked again on the open descriptor. The archive is read
    from the file (not loaded into memory); entries must be stored uncompressed, no larger than the
    file, and are read at most once each."""

    def __init__(self, filepath, expect_kind):
        self.path = os.fsdecode(os.fspath(filepath))  # str, bytes or PathLike
        self.zf = self._file = None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if os.path.islink(self.path):
                raise FileNotFoundError(f"filepath: '{self.path}' is a dangling symbolic link (no such file "
                                        f"'{os.path.realpath(self.path)}')") from None
            raise FileNotFoundError(f"filepath: no such file '{self.path}'") from None
        except (OSError, ValueError) as exc:  # a loop of links, a name with a NUL, ...
            raise ValueError(f"'{self.path}': cannot be read ({exc})") from None
        self._check_regular(st)
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            if isinstance(exc, (FileNotFoundError, PermissionError)):
                raise
            raise ValueError(f"'{self.path}': cannot be read ({exc})") from None
        self._file = os.fdopen(fd, "rb")
        try:
            st = os.fstat(fd)
            self._check_regular(st)
            self.size = st.st_size
            self._left = self.size  # bytes all entries together may still deliver
            self._seen = set()
            self._open(expect_kind)
        except BaseException:
            self.close()
            raise

    def _check_regular(self, st):
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"'{self.path}' is not a fastrnn file: it is {_file_kind(st.st_mode)}, and only regular "
                             "files are loaded")

    def close(self):
        if self.zf is not None:
            self.zf.close()
        if self._file is not None:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _open(self, expect_kind):
        try:
            self.zf = zipfile.ZipFile(self._file)
        except _ZIP_ERRORS as exc:
            raise ValueError(
                f"'{self.path}' is not a fastrnn file (not a readable zip archive: {exc}); it may be truncated, "
                "corrupt or written by another program"
            ) from None
        names = set(self.zf.namelist())
        if MARKER not in names:
            raise ValueError(f"'{self.path}' is not a fastrnn file (no '{MARKER}' format marker)")
        odd = next((n for n in names if _unsafe_name(n)), None)
        if odd is not None:  # nothing is ever extracted, but no file of ours has such a name
            raise ValueError(f"'{self.path}' is not a fastrnn file (unsafe entry name {odd!r:.100})")
        marker = self._json(MARKER)
        if not isinstance(marker, dict) or marker.get("format") != FORMAT:
            raise ValueError(f"'{self.path}' is not a fastrnn file (format marker {marker!r:.200})")
        version = marker.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"'{self.path}': invalid format version {version!r:.100}")
        if version > VERSION:
            raise ValueError(f"'{self.path}' has format version {version}, newer than this fastrnn reads "
                             f"({VERSION}); upgrade fastrnn")
        kind = marker.get("kind")
        if expect_kind == "model" and kind != "model":
            raise ValueError(f"'{self.path}' holds only weights (kind {kind!r:.100}); create the model and call "
                             "model.load_weights() instead of load_model()")
        if kind not in ("model", "weights"):
            raise ValueError(f"'{self.path}': unknown content kind {kind!r:.100}")
        self.kind = kind
        self.payload = self._json(MODEL_ENTRY)
        if not isinstance(self.payload, dict) or not isinstance(self.payload.get("weights"), list):
            raise ValueError(f"'{self.path}': corrupt model description (no weights list)")

    # -- entries ---------------------------------------------------------------------------------
    def _entry(self, name, limit=None):
        """(an open stream on entry ``name``, its size) after checking how it is stored: uncompressed,
        unencrypted, no larger than ``limit`` or the file, read for the first time, within what the
        file can deliver."""
        if not isinstance(name, str):
            raise _file_error(self.path, f"bad entry name {name!r:.100}")
        try:
            info = self.zf.getinfo(name)
        except KeyError:
            raise ValueError(f"'{self.path}': corrupt fastrnn file (missing entry '{name:.200}')") from None
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"'{self.path}': entry '{name}' is compressed (zip method {info.compress_type}); "
                             "fastrnn files store their entries uncompressed, so this is not one of them")
        if info.flag_bits & 0x1:
            raise _file_error(self.path, f"entry '{name}' is encrypted")
        size = info.file_size
        if size != info.compress_size or size > self.size or (limit is not None and size > limit):
            raise _file_error(self.path, f"entry '{name}' declares {size:,} bytes ({info.compress_size:,} stored) in "
                                         f"a file of {self.size:,} bytes" + (f", more than the {limit:,} allowed"
                                                                              if limit is not None else ""))
        if name in self._seen:
            raise _file_error(self.path, f"entry '{name}' is referenced twice")
        if size > self._left:
            raise _file_error(self.path, f"its entries add up to more bytes than the file's {self.size:,}")
        self._seen.add(name)
        self._left -= size
        try:
            return self.zf.open(info), size
        except _ZIP_ERRORS as exc:
            raise ValueError(f"'{self.path}': corrupt or truncated fastrnn file (entry '{name}': {exc})") from None

    def _read_exactly(self, stream, n, name):
        try:
            data = stream.read(n)
            if len(data) == n and stream.read(1) != b"":  # reading to the end checks the CRC
                raise ValueError("longer than declared")
        except _ZIP_ERRORS as exc:
            raise ValueError(f"'{self.path}': corrupt or truncated fastrnn file (entry '{name}': {exc})") from None
        if len(data) != n:
            raise ValueError(f"'{self.path}': corrupt or truncated fastrnn file (entry '{name}': {len(data)} of "
                             f"{n} bytes)")
        return data

    def _json(self, name):
        stream, size = self._entry(name, limit=_MAX_JSON_BYTES)
        with stream:
            raw = self._read_exactly(stream, size, name)
        try:
            obj = json.loads(raw.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite_float)
            _check_depth(obj, _MAX_JSON_DEPTH)
            return obj
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            what = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:300]
            raise ValueError(f"'{self.path}': corrupt fastrnn file (entry '{name}' is not valid JSON: {what})") \
                from None

    def _array_name(self, ref):
        if not (isinstance(ref, dict) and set(ref) == {"__ndarray__"} and isinstance(ref["__ndarray__"], str)
                and _ARRAY_NAME.match(ref["__ndarray__"])):
            raise _file_error(self.path, f"bad array reference {ref!r:.100}")
        return ref["__ndarray__"]

    def array_header(self, ref):
        """(entry name, shape, dtype) of an .npy entry, its header checked and no data read."""
        name = self._array_name(ref)
        stream, size = self._entry(name)
        with stream:
            shape, dtype, _ = self._npy_header(stream, size, name)
        return name, shape, dtype

    def _npy_header(self, stream, size, name):
        def bad(why):
            return _file_error(self.path, f"entry '{name}' is not a valid .npy array: {why}")

        try:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream, max_header_size=_MAX_NPY_HEADER)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream, max_header_size=_MAX_NPY_HEADER)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, struct.error) as exc:  # a bad CRC, a short entry
            raise ValueError(f"'{self.path}': corrupt or truncated fastrnn file (entry '{name}': {exc})") from None
        except (*_ZIP_ERRORS, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
            raise bad(str(exc)[:300]) from None
        if not _npy_dtype_ok(dtype):
            raise bad(f"dtype {dtype} is not a plain number type (bool, integer or float)")
        if (not isinstance(shape, tuple) or len(shape) > _MAX_NDIM
                or not all(type(d) is int and d >= 0 for d in shape)):
            raise bad(f"shape {shape!r:.100}")
        offset = stream.tell()
        nbytes = math.prod(shape) * dtype.itemsize
        if offset + nbytes != size:
            raise bad(f"its header says shape {shape} of {dtype} ({nbytes:,} bytes) but the entry holds "
                      f"{size - offset:,} bytes of data")
        return shape, dtype, bool(fortran)

    def array(self, ref, expect_shape=None):
        """The array in an .npy entry: the header is checked (plain number dtype, shape matching the
        entry's size and ``expect_shape``) before the data is read."""
        name = self._array_name(ref)
        stream, size = self._entry(name)
        with stream:
            shape, dtype, fortran = self._npy_header(stream, size, name)
            if expect_shape is not None and shape != tuple(expect_shape):
                raise _file_error(self.path, f"entry '{name}' holds shape {shape}, expected {tuple(expect_shape)}")
            offset = stream.tell()
            data = self._read_exactly(stream, size - offset, name)
        arr = np.frombuffer(data, dtype=dtype)
        return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)

    def decode(self, obj):
        if isinstance(obj, dict):
            if set(obj) == {"__ndarray__"}:
                return self.array(obj)
            return {k: self.decode(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.decode(v) for v in obj]
        return obj

    def weight_headers(self):
        """[(name, array reference, shape, dtype)] of the recorded weights, checked without reading data."""
        out = []
        for i, w in enumerate(self.payload["weights"]):
            if not isinstance(w, dict) or "array" not in w:
                raise _file_error(self.path, f"weight entry {i}")
            name = w.get("name", f"#{i}")
            if not isinstance(name, str):
                raise _file_error(self.path, f"weight entry {i} has a name of type {type(name).__name__}")
            _, shape, dtype = self.array_header(w["array"])
            recorded = w.get("shape", list(shape))
            if not isinstance(recorded, list) or list(shape) != recorded:
                raise ValueError(f"'{self.path}': corrupt fastrnn file (weight '{name}' has shape {shape}, "
                                 f"recorded {recorded!r:.100})")
            out.append((name, w["array"], shape, dtype))
        # the headers were read; the data will be read once more, counted again
        self._seen.clear()
        self._left = self.size
        return out


def _assign_weights(model, r, saved):
    """Check the count and every shape of ``saved`` (weight_headers()) against the model's parameters,
    then read the arrays one by one into them."""
    path = r.path
    params = model.parameters()
    if len(saved) != len(params):
        raise ValueError(f"'{path}' holds {len(saved)} weight arrays but model '{model.name}' has "
                         f"{len(params)} parameters")
    for (name, _, shape, _), p in zip(saved, params):
        if shape != p.shape:
            raise ValueError(f"'{path}': weight '{name}' has shape {shape} but the model's parameter "
                             f"'{p.name}' has shape {p.shape}")
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
            opt.load_state_dict(r.decode(state))
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
