"""pytest-benchmark suite: ``pytest bench/ --benchmark-only`` (not part of the test run).

Each case is checked for correctness once before it is timed (fastrnn against the NumPy
reference on the same problem), then timed. Threads: FASTRNN_BENCH_THREADS (default: the cores
this process may use), applied to fastrnn, torch and numpy's BLAS alike."""
import os

import pytest

import fastrnn


@pytest.fixture(scope="session")
def threads():
    n = int(os.environ.get("FASTRNN_BENCH_THREADS", fastrnn.backend.default_num_threads()))
    fastrnn.set_num_threads(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass
    return n
