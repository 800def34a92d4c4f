"""The packaging rules cannot rot unnoticed: the sdist that scikit-build-core makes from this tree's
pyproject.toml and .gitignore (built here, in-process, from a copy of the sources with a working
copy's clutter planted in it), and pyproject.toml's cibuildwheel table. The wheel itself (minutes of
compiling) is built, repaired and smoke-tested by .ci/wheel, not here."""
from __future__ import annotations

import re
import shutil
import sys
import tarfile
from pathlib import Path

import pytest
from scikit_build_core.build import build_sdist

if sys.version_info >= (3, 11):
    import tomllib
else:  # scikit-build-core depends on tomli before 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CIBW = PYPROJECT["tool"]["cibuildwheel"]

# what a working copy accumulates: build trees, environments, modules, outputs, caches
CLUTTER = [
    "build/cp311-cp311-linux_x86_64/CMakeCache.txt",
    "build/dev/_core.cpython-311-x86_64-linux-gnu.so",
    ".venv-test/pyvenv.cfg",
    ".venv-test/lib/python3.11/site-packages/numpy/__init__.py",
    ".venv-ci/bin/python",
    "venv/pyvenv.cfg",
    "python/fastrnn/_core.cpython-311-x86_64-linux-gnu.so",
    "python/fastrnn/_cuda.cpython-311-x86_64-linux-gnu.so",
    "python/fastrnn/__pycache__/ops.cpython-311.pyc",
    "examples/out/time_series.png",
    "fastrnn_out/time_series.png",
    "dist/fastrnn-0.0.9.tar.gz",
    "wheelhouse/fastrnn-0.0.9-cp311-cp311-manylinux_2_34_x86_64.whl",
    "sentiment.fastrnn",
    "bench/bench_rnn.json",
    "build-ci-cuda.log",
    ".hypothesis/examples/0/1",
    ".pytest_cache/v/cache/lastfailed",
]
# the sources the build reads (the CMake sources are also read from CMakeLists.txt below)
SOURCE_DIRS = ["csrc", "python", "examples", ".ci"]
SOURCE_FILES = ["pyproject.toml", ".gitignore", "CMakeLists.txt", "LICENSE", "README.md"]


def _is_clutter(rel: str) -> bool:
    return rel.endswith((".so", ".pyc")) or "__pycache__" in rel or rel.startswith(("examples/out/", "build/"))


def _copy_sources(dest: Path) -> set[str]:
    """Copy the build's sources (not the clutter of this checkout) into dest; their relative paths."""
    copied = set()
    for name in SOURCE_FILES:
        shutil.copy2(ROOT / name, dest / name)
        copied.add(name)
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*")):
            rel = path.relative_to(ROOT).as_posix()
            if path.is_file() and not path.is_symlink() and not _is_clutter(rel):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest / rel)
                copied.add(rel)
    return copied


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    """(the sources copied, the files of the sdist built from them with the clutter planted)."""
    tree = tmp_path_factory.mktemp("tree")
    out = tmp_path_factory.mktemp("sdist")
    copied = _copy_sources(tree)
    for rel in CLUTTER:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text("clutter\n")
    mp = pytest.MonkeyPatch()
    mp.chdir(tree)
    try:
        name = build_sdist(str(out))
    finally:
        mp.undo()
    with tarfile.open(out / name) as tar:
        members = tar.getmembers()
    top = name[: -len(".tar.gz")]
    assert all(m.name == top or m.name.startswith(top + "/") for m in members), [m.name for m in members[:5]]
    return copied, {m.name[len(top) + 1:] for m in members if m.isfile()}


def test_sdist_has_what_the_build_needs(sdist):
    copied, files = sdist
    needed = {"PKG-INFO", "pyproject.toml", "CMakeLists.txt", "LICENSE", "README.md", "csrc/cpu/kernels_impl.h",
              "csrc/cpu/simd.h", "csrc/fastrnn.h", "python/fastrnn/_version.py", "python/fastrnn/py.typed",
              "python/fastrnn/datasets/tinyshakespeare_300k.txt"}
    # every source file CMakeLists.txt compiles or installs (the examples shipped in the wheel too)
    cmake = (ROOT / "CMakeLists.txt").read_text()
    named = set(re.findall(r"\b((?:csrc|examples)/[\w/.-]+\.(?:cpp|cu|h|py))\b", cmake))
    assert {"csrc/cpu/kernels_scalar.cpp", "csrc/bindings/core_module.cpp", "examples/_common.py"} <= named
    needed |= named
    # every file of the sources: the headers the compiler includes, the whole Python package
    needed |= {f for f in copied if f.startswith(("csrc/", "python/fastrnn/"))}
    assert not needed - files, sorted(needed - files)


def test_sdist_leaves_out_a_working_copys_clutter(sdist):
    _, files = sdist
    leaked = sorted(set(CLUTTER) & files)
    assert not leaked, leaked
    assert not [f for f in files if f.endswith((".so", ".pyc", ".whl")) or f.startswith(("build/", ".venv"))]


def test_sdist_carries_the_wheel_smoke_test(sdist):
    """cibuildwheel may build from the sdist: its test-command's script must be in it."""
    _, files = sdist
    scripts = re.findall(r"\{project\}/(\S+\.py)", CIBW["test-command"])
    assert scripts == [".ci/wheel_smoke.py"]
    assert (ROOT / scripts[0]).is_file()
    assert scripts[0] in files


def _minimum_python() -> tuple[int, int]:
    m = re.fullmatch(r">=\s*3\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert m, PYPROJECT["project"]["requires-python"]
    return 3, int(m[1])


def test_cibuildwheel_builds_every_supported_cpython():
    lo = _minimum_python()[1]
    assert sorted(CIBW["build"], key=lambda s: int(s[3:-2])) == [f"cp3{m}-*" for m in range(lo, 14)]
    assert {"*-musllinux_*", "*_i686"} <= set(CIBW["skip"])
    assert not CIBW.get("enable"), "PyPy / free-threaded builds are not tested"


def test_cibuildwheel_platforms_and_archs():
    assert sorted(CIBW["linux"]["archs"]) == ["aarch64", "x86_64"]
    assert CIBW["linux"]["manylinux-x86_64-image"] == CIBW["linux"]["manylinux-aarch64-image"] == "manylinux_2_28"
    assert CIBW["macos"]["archs"] == ["arm64"]


def test_cibuildwheel_builds_cpu_only_everywhere():
    """A platform's environment table replaces the global one: each must turn CUDA off itself."""
    tables = {"global": CIBW} | {p: CIBW[p] for p in ("linux", "macos", "windows") if p in CIBW}
    for where, table in tables.items():
        if "environment" in table or where == "global":
            assert table["environment"].get("FASTRNN_CUDA") == "OFF", where
    # ... and the build passes the variable on to CMake
    assert PYPROJECT["tool"]["scikit-build"]["cmake"]["define"]["FASTRNN_CUDA"]["env"] == "FASTRNN_CUDA"


def test_cibuildwheel_macos_finds_and_vendors_openmp():
    """CMakeLists.txt requires OpenMP; Apple Clang has none: libomp from Homebrew, found via OpenMP_ROOT."""
    mac = CIBW["macos"]
    assert "brew install libomp" in mac["before-all"]
    env = mac["environment"]
    assert env["OpenMP_ROOT"] == "$(brew --prefix libomp)"
    major = int(env["MACOSX_DEPLOYMENT_TARGET"].split(".")[0])
    assert major >= 14, "Homebrew's libomp bottles target the runner's macOS (14+ on arm64 runners)"
    assert "find_package(OpenMP" in (ROOT / "CMakeLists.txt").read_text()
    assert "repair-wheel-command" not in mac, "the default (delocate-wheel) copies libomp into the wheel"
