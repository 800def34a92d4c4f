"""Fixtures shared by the kernel tests: every ISA path this machine runs, and the kernels' thread
count, each restored afterwards."""
from __future__ import annotations

import pytest

import fastrnn
from fastrnn import _core


@pytest.fixture(params=_core.available_isas())
def isa(request):
    """Each ISA path of the kernels in turn (fastrnn._core.set_isa), the previous one restored."""
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
