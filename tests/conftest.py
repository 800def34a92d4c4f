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
