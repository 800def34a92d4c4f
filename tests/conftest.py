"""Fixtures shared by the test files."""
from __future__ import annotations

import pytest

import fastrnn
from fastrnn import _core


@pytest.fixture(params=_core.available_isas())
def isa(request):
    """Each instruction-set path this machine runs, set for the test and restored after it."""
    before = _core.get_isa()
    _core.set_isa(request.param)
    yield request.param
    _core.set_isa(before)


@pytest.fixture
def threads():
    """fastrnn.set_num_threads, with the thread count restored afterwards."""
    before = fastrnn.get_num_threads()
    yield fastrnn.set_num_threads
    fastrnn.set_num_threads(before)


@pytest.fixture
def path(request):
    """The ISA path ``request.param`` made active for the test (indirect parametrization; the
    names of _quant_models.PATHS: an ISA, or "avx512-novnni" / "avx512-nodot" for the AVX-512 path
    without VNNI / VDPBF16PS), restored after it."""
    from fastrnn import backend

    name = request.param
    before = backend.isa()
    core = backend.core()
    backend.set_isa(name.replace("-novnni", "").replace("-nodot", ""))
    core.set_qvnni_allowed("novnni" not in name)
    core.set_bf16dot_allowed("nodot" not in name)
    yield name
    core.set_qvnni_allowed(True)
    core.set_bf16dot_allowed(True)
    backend.set_isa(before)
