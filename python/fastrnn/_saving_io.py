"""The container behind :mod:`fastrnn.saving`: the atomic writer and the bounded, checked reader of
its zip files of JSON and .npy entries (the format and the guarantees are described in
``fastrnn.saving``'s docstring). Nothing here knows about models: ``saving`` builds the payloads,
rebuilds models from them and keeps the public API."""
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

from ._version import __version__

FORMAT = "fastrnn"
VERSION = 1
MARKER = "fastrnn.json"
MODEL_ENTRY = "model.json"


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
# The central directory is parsed whole by zipfile (about 1 KB of Python objects per entry, ~12x its
# size on disk): cap it before zipfile reads it. 4 MiB is ~50,000 entries, far above any model's.
_MAX_DIRECTORY_BYTES = 4 << 20
# the names the writer gives the arrays' entries
_ARRAY_NAME = re.compile(r"arrays/[0-9]{1,9}\.npy\Z")


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

    def _check_directory(self):
        """ValueError when the central directory (as zipfile will read it, zip64 records included) is
        larger than ``_MAX_DIRECTORY_BYTES``; zipfile's own errors are left to ``_open``."""
        try:
            end = zipfile._EndRecData(self._file)  # the record zipfile.ZipFile itself parses first
        except _ZIP_ERRORS:
            return
        finally:
            self._file.seek(0)
        if end is not None and end[zipfile._ECD_SIZE] > _MAX_DIRECTORY_BYTES:
            raise ValueError(f"'{self.path}' is not a fastrnn file: its zip directory declares "
                             f"{end[zipfile._ECD_SIZE]} bytes (at most {_MAX_DIRECTORY_BYTES} are read)")

    def _open(self, expect_kind):
        self._check_directory()
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
