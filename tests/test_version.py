"""The version is written once (python/fastrnn/_version.py): pyproject reads it from there and the
compiled module reports what it was built as."""
from __future__ import annotations

import re
from pathlib import Path

import fastrnn
from fastrnn import backend

ROOT = Path(__file__).resolve().parent.parent


def test_version_has_one_source():
    text = (ROOT / "pyproject.toml").read_text()
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    assert re.search(r'^dynamic\s*=\s*\[[^\]]*"version"', project, re.M), project
    assert not re.search(r"^version\s*=", project, re.M), "pyproject must not write the version itself"
    assert 'input = "python/fastrnn/_version.py"' in text
    source = (ROOT / "python" / "fastrnn" / "_version.py").read_text()
    assert re.findall(r'^__version__ = "([^"]+)"$', source, re.M) == [fastrnn.__version__]


def test_compiled_module_was_built_as_this_version():
    assert re.fullmatch(r"\d+\.\d+\.\d+([.+-]?\w+)*", fastrnn.__version__)
    assert backend.core().__version__ == fastrnn.__version__
