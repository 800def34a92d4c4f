"""Utilities: ``set_random_seed`` (also ``fastrnn.set_seed``)."""
from __future__ import annotations

import random

import numpy as np

from . import _random

__all__ = ["set_random_seed"]


def set_random_seed(seed: int) -> None:
    """Make a whole run reproducible, as ``keras.utils.set_random_seed`` / ``torch.manual_seed`` do.

    Seeds fastrnn's generator (weight initialisation, dropout masks, ``fit``'s shuffling, the data
    helpers' splits and batches when they are given no seed of their own), NumPy's global generator
    (``np.random.seed``: ``fastrnn.data.generate_time_series`` without a seed, and user code) and
    Python's ``random``. Run the same script after the same call and it gives the same losses and
    weights (on the same ISA path and thread count: the kernels are deterministic).

    Args:
        seed: a non-negative int (below 2**32, NumPy's limit for ``np.random.seed``).
    """
    seed = _random.check_seed(seed, "set_random_seed")
    if seed >= 2**32:
        raise ValueError(f"set_random_seed: seed must be below 2**32, got {seed}")
    _random.reseed(seed)
    np.random.seed(seed)
    random.seed(seed)
