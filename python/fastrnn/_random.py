"""fastrnn's global random generator.

Weight initialisation, dropout masks (layers made without ``seed=``), ``fit``'s shuffling and the
data helpers' splits and batches draw from it when they are given no seed, so one call,
``fastrnn.set_seed(s)``, makes a whole run reproducible. Imports nothing from the package.
"""
from __future__ import annotations

import numpy as np

__all__ = ["check_seed", "global_rng", "new_rng", "reseed"]

_state = {"rng": np.random.default_rng()}


def check_seed(seed, what: str = "seed") -> int:
    """``seed`` as an int (a non-negative int or NumPy integer; ValueError naming ``what`` otherwise)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{what}: seed must be a non-negative int, got {seed!r}")
    return int(seed)


def reseed(seed: int) -> None:
    """Start the global generator anew from ``seed`` (checked by the caller)."""
    _state["rng"] = np.random.default_rng(seed)


def global_rng() -> np.random.Generator:
    """The global generator itself (draws advance it)."""
    return _state["rng"]


def new_rng(seed=None) -> np.random.Generator:
    """A fresh Generator: from ``seed`` when given, else seeded by a draw from the global one."""
    if seed is None:
        return np.random.default_rng(int(_state["rng"].integers(0, 2**63 - 1)))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be None or a non-negative int, got {seed!r}")
    return np.random.default_rng(int(seed))
