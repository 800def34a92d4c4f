"""Weight initializers (Keras's defaults) drawing from a seeded NumPy Generator.

Every initializer is ``init(shape, seed=None, dtype=np.float32) -> ndarray``. Without ``seed`` it
draws from the module-level Generator, which ``set_seed(s)`` re-seeds; so ``set_seed(0)`` followed by
building the same layers in the same order gives bit-identical weights. ``rng=`` takes an explicit
``numpy.random.Generator`` instead (layers pass their own).
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Sequence
from typing import Callable

import numpy as np
from numpy.typing import DTypeLike

from .. import _random

__all__ = [
    "get",
    "glorot_uniform",
    "new_rng",
    "ones",
    "orthogonal",
    "set_seed",
    "uniform",
    "zeros",
]

def set_seed(seed: int) -> None:
    """Re-seed fastrnn's global Generator (fastrnn._random), used by initializers, by layers made
    without ``seed=`` and by fit's shuffling. ``fastrnn.set_seed`` also seeds NumPy's and Python's."""
    _random.reseed(_random.check_seed(seed, "set_seed"))


new_rng = _random.new_rng


def _rng(seed, rng):
    if rng is not None:
        return rng
    if seed is None:
        return _random.global_rng()
    return new_rng(seed)


# Loading a file (fastrnn.saving) builds its model under a budget: every initializer first counts
# the values it is asked for against the weight values the file holds and refuses to go beyond
# them, so a config that names huge layers fails before anything large is allocated or computed;
# with ``skip_values`` the initializers return zeros instead of drawing (the file's weights
# overwrite them).
_BUDGET: contextvars.ContextVar = contextvars.ContextVar("fastrnn_init_budget", default=None)


class _InitBudgetExceeded(ValueError):
    """An initializer was asked for more values than the active ``_init_budget`` allows."""


@contextlib.contextmanager
def _init_budget(max_values: int, skip_values: bool = False):
    """Within the block (this thread / context only), initializers together create at most
    ``max_values`` values (_InitBudgetExceeded beyond); with ``skip_values`` they return zeros."""
    token = _BUDGET.set({"left": int(max_values), "skip": bool(skip_values)})
    try:
        yield
    finally:
        _BUDGET.reset(token)


def _budgeted(fn):
    @functools.wraps(fn)
    def init(shape, *args, **kwargs):
        budget = _BUDGET.get()
        if budget is None:
            return fn(shape, *args, **kwargs)
        shape = _shape(shape)
        n = math.prod(shape)
        if n > budget["left"]:
            raise _InitBudgetExceeded(
                f"a weight of shape {shape} ({n:,} values) exceeds the {budget['left']:,} values left to create"
            )
        budget["left"] -= n
        if budget["skip"]:
            dtype = kwargs.get("dtype", args[1] if len(args) > 1 else np.float32)
            return np.zeros(shape, dtype=dtype)
        return fn(shape, *args, **kwargs)

    return init


def _shape(shape) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"initializer: shape must be non-negative, got {shape}")
    return shape


def _fans(shape):
    """(fan_in, fan_out) for a weight of ``shape``; matrices are [fan_out, fan_in] (PyTorch layout)."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[1], shape[0]
    receptive = int(np.prod(shape[2:]))
    return shape[1] * receptive, shape[0] * receptive


@_budgeted
def zeros(shape: int | Sequence[int], seed: int | None = None, dtype: DTypeLike = np.float32,
          rng: np.random.Generator | None = None) -> np.ndarray:
    """All zeros."""
    return np.zeros(_shape(shape), dtype=dtype)


@_budgeted
def ones(shape: int | Sequence[int], seed: int | None = None, dtype: DTypeLike = np.float32,
         rng: np.random.Generator | None = None) -> np.ndarray:
    """All ones."""
    return np.ones(_shape(shape), dtype=dtype)


@_budgeted
def uniform(shape: int | Sequence[int], seed: int | None = None, dtype: DTypeLike = np.float32,
            rng: np.random.Generator | None = None, minval: float = -0.05,
            maxval: float = 0.05) -> np.ndarray:
    """Uniform on [minval, maxval) (Keras's RandomUniform defaults, used for embeddings)."""
    return _rng(seed, rng).uniform(minval, maxval, size=_shape(shape)).astype(dtype)


@_budgeted
def glorot_uniform(shape: int | Sequence[int], seed: int | None = None, dtype: DTypeLike = np.float32,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """Uniform on [-limit, limit] with limit = sqrt(6 / (fan_in + fan_out)) (Keras's default kernel init)."""
    shape = _shape(shape)
    fan_in, fan_out = _fans(shape)
    limit = np.sqrt(6.0 / max(1, fan_in + fan_out))
    return _rng(seed, rng).uniform(-limit, limit, size=shape).astype(dtype)


@_budgeted
def orthogonal(shape: int | Sequence[int], seed: int | None = None, dtype: DTypeLike = np.float32,
               rng: np.random.Generator | None = None, gain: float = 1.0
               ) -> np.ndarray:
    """A (semi-)orthogonal matrix times ``gain``: QR of a Gaussian matrix with the sign fix of Saxe et al.

    For a square shape the result Q satisfies Q Q^T = gain^2 I; for rows < cols, Q Q^T = gain^2 I
    (orthonormal rows). Recurrent layers draw the whole Keras-layout kernel [H, G*H] this way and
    store its transpose as ``w_hh``, as Keras does.
    """
    shape = _shape(shape)
    if len(shape) < 2:
        raise ValueError(f"orthogonal: shape must have at least 2 dimensions, got {shape}")
    rows, cols = shape[0], int(np.prod(shape[1:]))
    a = _rng(seed, rng).standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    d = np.sign(np.diag(r))
    d[d == 0] = 1.0
    q = q * d[None, :]
    if rows < cols:
        q = q.T
    return (gain * q.reshape(shape)).astype(dtype)


_BY_NAME = {
    "zeros": zeros,
    "ones": ones,
    "uniform": uniform,
    "random_uniform": uniform,
    "glorot_uniform": glorot_uniform,
    "orthogonal": orthogonal,
}


def get(identifier: str | Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """The initializer named ``identifier`` (a str) or ``identifier`` itself when callable."""
    if callable(identifier):
        return identifier
    if isinstance(identifier, str):
        try:
            return _BY_NAME[identifier.lower()]
        except KeyError:
            raise ValueError(
                f"unknown initializer {identifier!r}; expected one of {', '.join(sorted(_BY_NAME))} or a callable"
            ) from None
    raise TypeError(f"initializer must be a str or a callable, got {type(identifier).__name__}")
