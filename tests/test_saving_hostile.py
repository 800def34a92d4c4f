"""Crafted files: load_model / load_weights refuse each with a ValueError naming the file (or the
documented FileNotFoundError), in bounded time and memory, writing nothing; and saving keeps an
overwritten file's permissions and refuses bad paths before creating anything."""
import io
import json
import os
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastrnn as fr
from fastrnn import _saving_io, layers
from fastrnn.models import Sequential

PYTHON_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python")

MAX_SECONDS = 3.0
MAX_TRACED = 20 << 20  # peak of Python-level allocations while refusing a small crafted file


# ------------------------------------------------------------------------------------------ helpers
def _small_model():
    layers.set_seed(0)
    m = Sequential([layers.Embedding(10, 3), layers.LSTM(4), layers.Dense(2)])
    m.compile(optimizer="adam", loss="mse")
    m.fit(np.ones((4, 5), np.int64), np.zeros((4, 2), np.float32), epochs=1, batch_size=4, verbose=0)
    return m


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory):
    """(path, entries {name: bytes}, model.json as a dict) of a small trained model's file."""
    path = tmp_path_factory.mktemp("valid") / "m.fastrnn"
    _small_model().save(str(path))
    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    return str(path), entries, json.loads(entries["model.json"])


def _zip(path, entries, compression=None):
    """Write ``entries`` (name -> bytes) stored, or with ``compression`` {name: method}."""
    compression = compression or {}
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression.get(name, zipfile.ZIP_STORED))
    return str(path)


def _with_desc(entries, desc, raw=None):
    out = dict(entries)
    out["model.json"] = raw if raw is not None else json.dumps(desc).encode()
    return out


def _npy(arr, allow_pickle=False):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def _npy_header(shape, descr="<f4", fortran=False, version=(1, 0)):
    """An .npy header alone (the data is up to the caller)."""
    buf = io.BytesIO()
    d = {"descr": descr, "fortran_order": fortran, "shape": shape}
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(buf, d)
    else:
        np.lib.format.write_array_header_2_0(buf, d)
    return buf.getvalue()


def _first_array(desc):
    return desc["weights"][0]["array"]["__ndarray__"]


def _listing(directory):
    return sorted(os.listdir(directory))


def refused(path, *, load=None, error=ValueError, match=None, max_seconds=MAX_SECONDS, max_traced=MAX_TRACED):
    """Load ``path`` and check it is refused: ``error`` whose message names the file, within
    ``max_seconds`` and ``max_traced`` bytes of peak Python allocations, nothing written."""
    path = str(path)
    load = load or (lambda p: fr.load_model(p))
    directory = os.path.dirname(os.path.abspath(path))
    before = _listing(directory)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(error, match=match) as info:
            load(path)
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert path in str(info.value), str(info.value)
    assert elapsed < max_seconds, f"took {elapsed:.1f} s"
    assert peak < max_traced, f"peak {peak / 2**20:.0f} MiB"
    assert _listing(directory) == before
    return info.value


def _loads_or_value_error(path, load=None):
    """Loading either works or raises ValueError: nothing else escapes."""
    load = load or (lambda p: fr.load_model(p))
    try:
        load(path)
    except ValueError as exc:
        assert path in str(exc), str(exc)
        return False
    return True


# ------------------------------------------------------------------------------------------ archive
@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
@pytest.mark.parametrize("which", ["fastrnn.json", "model.json", "array"])
def test_compressed_entries_are_refused_unread(valid_file, tmp_path, method, which):
    _, entries, desc = valid_file
    name = _first_array(desc) if which == "array" else which
    entries = dict(entries)
    if which == "array":  # the reviewer's bomb: a header claiming 2**29 floats, then (here 4 MiB of) zeros
        entries[name] = _npy_header((1 << 29,)) + bytes(4 << 20)
    elif which == "model.json":
        entries[name] = b" " * (4 << 20) + entries[name]
    path = _zip(tmp_path / "bomb.fastrnn", entries, {name: method})
    assert os.path.getsize(path) < 1 << 20
    refused(path, match=f"entry '{name}' is compressed")


def _patch_central_sizes(data, name, compress_size, file_size):
    """Rewrite the sizes that the central directory records for entry ``name``."""
    data = bytearray(data)
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        n = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46:pos + 46 + n].decode() == name:
            struct.pack_into("<II", data, pos + 20, compress_size, file_size)
            return bytes(data)
        pos = data.find(b"PK\x01\x02", pos + 4)
    raise AssertionError(name)


@pytest.mark.parametrize("which", ["model.json", "array"])
def test_entries_declaring_more_bytes_than_the_file_are_refused(valid_file, tmp_path, which):
    path, _, desc = valid_file
    name = _first_array(desc) if which == "array" else which
    bad = tmp_path / "huge.fastrnn"
    bad.write_bytes(_patch_central_sizes(Path(path).read_bytes(), name, 0xFFFFFFF0, 0xFFFFFFF0))
    refused(bad, match="declares .* bytes")


def test_an_entry_read_twice_or_overlapping_entries_are_refused(valid_file, tmp_path):
    _, entries, desc = valid_file
    d = json.loads(json.dumps(desc))
    d["weights"][1]["array"] = d["weights"][0]["array"]  # the same 5x3 embedding, twice
    d["weights"][1]["shape"] = d["weights"][0]["shape"]
    refused(_zip(tmp_path / "twice.fastrnn", _with_desc(entries, d)), match="referenced twice")


@pytest.mark.parametrize("name", ["../x.npy", "/abs.npy", "arrays/../../x.npy", "a\\..\\b.npy", "c:x.npy"])
def test_path_traversal_entry_names(valid_file, tmp_path, name):
    _, entries, desc = valid_file
    d = json.loads(json.dumps(desc))
    entries = dict(entries)
    entries[name] = entries.pop(_first_array(d))
    d["weights"][0]["array"]["__ndarray__"] = name
    refused(_zip(tmp_path / "trav.fastrnn", _with_desc(entries, d)), match="unsafe entry name|bad array reference")
    assert _listing(tmp_path) == ["trav.fastrnn"]


# ------------------------------------------------------------------------------------------ .npy entries
@pytest.mark.parametrize("content, match", [
    (_npy(np.array([{"x": 1}], dtype=object), allow_pickle=True), "not a plain number type"),
    (_npy(np.array(["2020-01-01"], dtype="datetime64[D]")), "not a plain number type"),
    (_npy(np.array(["abcd"], dtype="<U4")), "not a plain number type"),
    (_npy(np.zeros(3, np.complex64)), "not a plain number type"),
    (_npy(np.zeros(3, "V8")), "not a plain number type"),
    (_npy(np.zeros(3, [("a", "<f4"), ("b", "<f4")])), "not a plain number type"),
    (_npy(np.zeros(3, np.longdouble)), "not a plain number type"),
    (_npy_header((1 << 29,)) + bytes(16), "header says shape"),            # 2 GiB claimed, 16 bytes held
    (_npy_header((3 << 29,), "<f4") + bytes(64), "header says shape"),     # 6 GiB claimed
    (_npy_header((1 << 62, 1 << 62)) + bytes(16), "header says shape"),    # overflows any int64
    (_npy_header((-1, 5)) + bytes(16), "shape"),
    (_npy_header((2.5,)) + bytes(16), "shape|not a valid"),
    (_npy_header((1,) * 40) + bytes(4), "shape"),
    (_npy_header((10, 3), version=(2, 0)) + bytes(120), None),              # valid v2.0: loads (below)
    (b"\x93NUMPY\x01\x00\xff\xff" + b" " * 65535, "not a valid .npy"),     # oversized header
    (b"\x93NUMPY\x01\x00\x10\x00{'descr': [[[[[", "not a valid .npy"),
    (b"not an npy", "not a valid .npy"),
    (b"", "not a valid .npy|truncated"),
])
def test_bad_npy_entries(valid_file, tmp_path, content, match):
    _, entries, desc = valid_file
    entries = dict(entries)
    entries[_first_array(desc)] = content
    path = _zip(tmp_path / "npy.fastrnn", entries)
    if match is None:
        fr.load_model(path)
        return
    refused(path, match=match)


def test_shape_within_the_entry_but_not_the_parameter_is_refused_before_reading(valid_file, tmp_path):
    _, entries, desc = valid_file
    d = json.loads(json.dumps(desc))
    entries = dict(entries)
    entries[_first_array(d)] = _npy(np.zeros((3, 5), np.float32))  # the embedding is (10, 3)
    d["weights"][0]["shape"] = [3, 5]
    refused(_zip(tmp_path / "shape.fastrnn", _with_desc(entries, d)), match=r"has shape \(3, 5\) but")


# ------------------------------------------------------------------------------------------ JSON
@pytest.mark.parametrize("which", ["fastrnn.json", "model.json"])
@pytest.mark.parametrize("raw, match", [
    (b"[" * 200000, "not valid JSON"),
    (b"{\"a\":" * 50000 + b"1" + b"}" * 50000, "not valid JSON"),
    (json.dumps(json.loads("[" * 150 + "]" * 150)).encode(), "not valid JSON: nested more than"),
    (b"\xff\xfe", "not valid JSON"),
    (b"1" * 5000, "not valid JSON"),  # more digits than Python converts
])
def test_deep_or_broken_json(valid_file, tmp_path, which, raw, match):
    _, entries, _ = valid_file
    entries = dict(entries)
    entries[which] = raw
    refused(_zip(tmp_path / "json.fastrnn", entries), match=match)


def test_oversized_json_is_refused_unread(valid_file, tmp_path, monkeypatch):
    _, entries, _ = valid_file
    monkeypatch.setattr(_saving_io, "_MAX_JSON_BYTES", 4096)  # the reader's limit
    entries = dict(entries)
    entries["model.json"] = entries["model.json"] + b" " * 5000
    refused(_zip(tmp_path / "big.fastrnn", entries), match=r"more than the 4,096 allowed")


@pytest.mark.parametrize("edit", [
    lambda d: d["optimizer_state"].__setitem__("iterations", "INF"),
    lambda d: d["config"]["layers"][1]["config"].__setitem__("dropout", "NAN"),
    lambda d: d["compile_config"]["optimizer"]["config"].__setitem__("learning_rate", "-INF"),
    lambda d: d["optimizer_state"].__setitem__("iterations", "1E999"),
])
def test_non_finite_numbers_are_refused(valid_file, tmp_path, edit):
    _, entries, desc = valid_file
    d = json.loads(json.dumps(desc))
    edit(d)
    raw = json.dumps(d).replace('"INF"', "Infinity").replace('"-INF"', "-Infinity").replace('"NAN"', "NaN")
    raw = raw.replace('"1E999"', "1e999")
    refused(_zip(tmp_path / "nan.fastrnn", _with_desc(entries, None, raw.encode())),
            match="not valid JSON: (the non-finite number|the number)")


def _paths(obj, prefix=()):
    """Every path (tuple of keys / indices) in a JSON document."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _replace(obj, path, value):
    if not path:
        return value
    obj = json.loads(json.dumps(obj))
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return obj


_WRONG = st.one_of(
    st.none(), st.booleans(), st.sampled_from([0, -1, 1, 6000, 10**6, 2**31, 2**63, 10**30, -(10**30)]),
    st.sampled_from([0.5, -0.0, 1e308, -1e308, 1e-308]), st.text(max_size=8), st.just("x" * 100000),
    st.just([]), st.just({}), st.just([[[[[[[[[[1]]]]]]]]]]), st.just({"__ndarray__": "arrays/00000.npy"}),
    st.just({"__ndarray__": "arrays/99999.npy"}), st.just({"class_name": "LSTM", "config": {"units": 6000}}),
    st.lists(st.integers(-2, 10**7), max_size=4), st.just("NAN"), st.just("INF"),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_model_json_loads_or_is_a_value_error(valid_file, tmp_path, data):
    _, entries, desc = valid_file
    paths = list(_paths(desc))
    path = data.draw(st.sampled_from(paths))
    value = data.draw(_WRONG)
    d = _replace(desc, path, value)
    raw = json.dumps(d).replace('"NAN"', "NaN").replace('"INF"', "Infinity").encode()
    bad = _zip(tmp_path / "fuzz.fastrnn", _with_desc(entries, None, raw))
    t0 = time.perf_counter()
    tracemalloc.start()
    try:
        _loads_or_value_error(bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < MAX_SECONDS
    assert peak < MAX_TRACED, (path, peak)


# ------------------------------------------------------------------------------------------ damaged files
def test_truncated_files_at_many_points(valid_file, tmp_path):
    path, _, _ = valid_file
    data = Path(path).read_bytes()
    bad = tmp_path / "cut.fastrnn"
    for cut in list(range(0, len(data), max(1, len(data) // 150))) + [len(data) - 1]:
        bad.write_bytes(data[:cut])
        assert not _loads_or_value_error(str(bad)), cut


def test_random_bit_flips_load_or_raise_value_error(valid_file, tmp_path):
    path, _, _ = valid_file
    data = Path(path).read_bytes()
    rng = np.random.default_rng(0)
    bad = str(tmp_path / "flip.fastrnn")
    want = fr.load_model(path, compile=False).get_weights()
    for pos in rng.integers(0, len(data), size=400):
        b = bytearray(data)
        b[pos] ^= 1 << int(rng.integers(0, 8))
        Path(bad).write_bytes(bytes(b))
        t0 = time.perf_counter()
        try:
            got = fr.load_model(bad, compile=False).get_weights()
        except ValueError as exc:
            assert bad in str(exc)
        else:  # a bit zipfile ignores: the same weights
            assert all(np.array_equal(g, w) for g, w in zip(got, want))
        assert time.perf_counter() - t0 < MAX_SECONDS


# ------------------------------------------------------------------------------------------ not files
def test_character_devices_and_links_to_them(tmp_path):
    refused("/dev/zero", match="not a fastrnn file: it is a character device")
    link = tmp_path / "zero.fastrnn"
    link.symlink_to("/dev/zero")
    refused(link, match="character device")
    refused(link, load=lambda p: Sequential([layers.Dense(2)]).load_weights(p), match="character device")


def test_directories(tmp_path):
    d = tmp_path / "d.fastrnn"
    d.mkdir()
    refused(d, match="it is a directory")
    link = tmp_path / "dlink.fastrnn"
    link.symlink_to(d)
    refused(link, match="it is a directory")


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.fastrnn"
    os.mkfifo(fifo)
    link = tmp_path / "pipelink.fastrnn"
    link.symlink_to(fifo)
    results = {}

    def load(p):
        try:
            fr.load_model(str(p))
        except BaseException as exc:  # handed to the main thread
            results[str(p)] = exc

    for p in (fifo, link):
        t = threading.Thread(target=load, args=(p,), daemon=True)
        t.start()
        t.join(5)
        if t.is_alive():  # unblock the reader so the thread ends, then fail
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
            pytest.fail(f"load_model({p}) blocked on a FIFO")
        exc = results[str(p)]
        assert isinstance(exc, ValueError) and "it is a FIFO" in str(exc) and str(p) in str(exc)
    assert _listing(tmp_path) == ["pipe.fastrnn", "pipelink.fastrnn"]


def test_dangling_symlink_and_missing_file(tmp_path):
    link = tmp_path / "dangling.fastrnn"
    link.symlink_to(tmp_path / "nowhere.fastrnn")
    refused(link, error=FileNotFoundError, match="dangling symbolic link")
    refused(tmp_path / "missing.fastrnn", error=FileNotFoundError, match="no such file")


def test_symlink_to_a_regular_file_loads(valid_file, tmp_path):
    path, _, _ = valid_file
    link = tmp_path / "link.fastrnn"
    link.symlink_to(path)
    assert len(fr.load_model(str(link)).get_weights()) == 6


# ------------------------------------------------------------------------------------------ big configs
def _lstm_file(tmp_path, units=6000, weights=(), features=3, name="big.fastrnn", kind="model"):
    cfg = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "LSTM", "config": {"name": "lstm_big", "units": units}}], "build_input_shape": [5, features]},
        "build_input_shape": [5, features], "weights": list(weights), "compile_config": None,
        "optimizer_state": None}
    marker = {"format": "fastrnn", "version": 1, "kind": kind, "fastrnn_version": fr.__version__}
    return _zip(tmp_path / name, {"fastrnn.json": json.dumps(marker).encode(), "model.json": json.dumps(cfg).encode()})


def test_units_6000_config_with_no_weights_is_refused_before_building(tmp_path):
    path = _lstm_file(tmp_path)
    assert os.path.getsize(path) < 1000
    refused(path, match="asks for more weight values than the file holds")


@pytest.mark.parametrize("cfg", [
    {"class_name": "Embedding", "config": {"input_dim": 10**12, "output_dim": 10**6}},
    {"class_name": "Dense", "config": {"units": 10**9}},
    {"class_name": "Bidirectional", "config": {"layer": {"class_name": "GRU", "config": {"units": 50000}}}},
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Dense", "config": {"units": 10**8}}}},
])
def test_other_huge_layers_are_refused_before_building(valid_file, tmp_path, cfg):
    _, entries, desc = valid_file
    d = json.loads(json.dumps(desc))
    d["config"]["layers"][0] = cfg
    d["config"]["build_input_shape"] = d["build_input_shape"] = [7, 4]
    refused(_zip(tmp_path / "huge.fastrnn", _with_desc(entries, d)), match="more weight values than the file holds")


def test_load_weights_into_an_unbuilt_model_bounds_the_recorded_input_shape(valid_file, tmp_path):
    m = Sequential([layers.Dense(2)])
    m.build((3,))
    path = tmp_path / "w.fastrnn"
    m.save_weights(str(path))
    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    d = json.loads(entries["model.json"])
    d["build_input_shape"] = [10**9]
    bad = _zip(tmp_path / "wbad.fastrnn", _with_desc(entries, d))
    refused(bad, load=lambda p: Sequential([layers.Dense(2)]).load_weights(p),
            match="needs more weight values than the file holds")
    fresh = Sequential([layers.Dense(2)])
    fresh.load_weights(str(path))  # the unaltered file still builds and loads
    np.testing.assert_array_equal(fresh.get_weights()[0], m.get_weights()[0])


_BIG_CASES = textwrap.dedent("""
    import json, os, resource, sys, time, zipfile, io
    import numpy as np
    import fastrnn as fr
    d = sys.argv[1]
    def npy_header(shape):
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
        return buf.getvalue()
    def write(name, entries, method=zipfile.ZIP_STORED):
        p = os.path.join(d, name)
        with zipfile.ZipFile(p, "w") as zf:
            for n, data in entries.items():
                zf.writestr(zipfile.ZipInfo(n), data, compress_type=method if n != "fastrnn.json" else 0)
        return p
    marker = json.dumps({"format": "fastrnn", "version": 1, "kind": "model"}).encode()
    desc = {"class_name": "Sequential", "config": {"layers": [{"class_name": "LSTM", "config": {"units": 4}}]},
            "build_input_shape": [5, 3], "weights": [{"name": "w", "shape": [1 << 29],
            "array": {"__ndarray__": "arrays/00000.npy"}}]}
    files = [
        write("bomb.fastrnn", {"fastrnn.json": marker, "model.json": json.dumps(desc).encode(),
                               "arrays/00000.npy": npy_header((1 << 29,)) + bytes(64 << 20)}, zipfile.ZIP_DEFLATED),
        write("jsonbomb.fastrnn", {"fastrnn.json": marker, "model.json": b" " * (64 << 20) + b"{}"},
              zipfile.ZIP_DEFLATED),
        write("units.fastrnn", {"fastrnn.json": marker, "model.json": json.dumps(
            {"class_name": "Sequential", "config": {"layers": [{"class_name": "LSTM", "config": {"units": 6000}}]},
             "build_input_shape": [5, 3], "weights": []}).encode()}),
        write("shape.fastrnn", {"fastrnn.json": marker, "model.json": json.dumps(desc).encode(),
                                "arrays/00000.npy": npy_header((3 << 29,)) + bytes(16)}),
        "/dev/zero",
    ]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for p in files:
        t0 = time.perf_counter()
        try:
            fr.load_model(p)
        except ValueError as exc:
            assert p in str(exc), exc
        else:
            raise AssertionError(p)
        print(p, round(time.perf_counter() - t0, 3),
              (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024, flush=True)
    print("growth_mb", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
""")


def test_big_crafted_files_stay_within_memory_in_a_fresh_process(tmp_path):
    """Peak resident memory (ru_maxrss) of a fresh process refusing the large crafted cases."""
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", _BIG_CASES, str(tmp_path)], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.split("\n")
    growth = int(next(line for line in lines if line.startswith("growth_mb")).split()[1])
    assert growth < 200, out.stdout
    for line in lines:
        if line and not line.startswith("growth_mb"):
            assert float(line.split()[1]) < MAX_SECONDS, line


# ------------------------------------------------------------------------------------------ saving
@pytest.fixture
def umask022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _tiny():
    m = Sequential([layers.Dense(2)])
    m.build((3,))
    return m


def test_overwriting_keeps_the_files_permissions(tmp_path, umask022):
    m = _tiny()
    path = tmp_path / "m.fastrnn"
    m.save(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644  # a new file: 0o666 & ~umask
    for mode in (0o600, 0o640, 0o604):
        os.chmod(path, mode)
        m.save(str(path))
        assert stat.S_IMODE(os.stat(path).st_mode) == mode
        m.save_weights(str(path))
        assert stat.S_IMODE(os.stat(path).st_mode) == mode
    link = tmp_path / "link.fastrnn"
    link.symlink_to(path)
    os.chmod(path, 0o600)
    m.save(str(link))
    assert link.is_symlink() and stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_saving_to_a_dangling_symlink_is_refused(tmp_path):
    link = tmp_path / "link.fastrnn"
    link.symlink_to(tmp_path / "sub" / "target.fastrnn")
    (tmp_path / "sub").mkdir()
    with pytest.raises(FileNotFoundError, match="dangling symbolic link"):
        _tiny().save(str(link))
    with pytest.raises(FileNotFoundError, match="dangling symbolic link"):
        _tiny().save_weights(str(link))
    assert _listing(tmp_path) == ["link.fastrnn", "sub"] and not os.listdir(tmp_path / "sub")
    assert link.is_symlink()


@pytest.mark.parametrize("name, error, match", [
    ("", ValueError, "the file path is empty"),
    ("dir/", IsADirectoryError, "names a directory"),
    ("sub/", IsADirectoryError, "names a directory"),
    ("sub", IsADirectoryError, "is a directory"),
    ("pipe", ValueError, "not a regular file \\(a FIFO\\)"),
])
def test_bad_save_paths_create_nothing(tmp_path, monkeypatch, name, error, match):
    (tmp_path / "sub").mkdir()
    os.mkfifo(tmp_path / "pipe")
    monkeypatch.chdir(tmp_path)
    before = _listing(tmp_path)
    with pytest.raises(error, match=match):
        _tiny().save(name)
    assert _listing(tmp_path) == before and not os.listdir(tmp_path / "sub")


def test_valid_files_with_fortran_order_and_other_number_types_still_load(valid_file, tmp_path):
    """Arrays the writer would not produce but are plain numbers (Fortran order, float64, big-endian)."""
    _, entries, desc = valid_file
    back = fr.load_model(valid_file[0])
    entries = dict(entries)
    names = [w["array"]["__ndarray__"] for w in desc["weights"]]
    w = back.get_weights()
    entries[names[0]] = _npy(np.asfortranarray(w[0]))
    entries[names[1]] = _npy(w[1].astype(np.float64))
    entries[names[2]] = _npy(w[2].astype(">f4"))
    got = fr.load_model(_zip(tmp_path / "v.fastrnn", entries)).get_weights()
    for a, b in zip(got, w):
        np.testing.assert_array_equal(a, b)


def test_a_huge_zip_directory_is_refused_before_it_is_parsed(valid_file, tmp_path):
    """90,000 empty entries (a 7 MiB directory, which zipfile would turn into ~100 MB of objects):
    refused from the end record, before zipfile parses the directory."""
    _, entries, _ = valid_file
    many = dict(entries, **{f"pad/{i}": b"" for i in range(90_000)})
    path = _zip(tmp_path / "many.fastrnn", many)
    refused(path, match="zip directory declares", max_traced=8 << 20)
    few = dict(entries, **{f"pad/{i}": b"" for i in range(1000)})  # under the cap: read as before
    assert _loads_or_value_error(_zip(tmp_path / "few.fastrnn", few))
