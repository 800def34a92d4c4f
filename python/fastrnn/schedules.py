"""Learning-rate schedules for :mod:`fastrnn.optim`: a learning rate as a function of the step count.

An optimizer's ``learning_rate`` may be one of these (or any callable ``step -> lr``); it is
evaluated at the optimizer's ``iterations``, the number of steps already taken (0 on the first
step), as Keras does. The classes are importable from ``fastrnn.optim`` too.
"""
from __future__ import annotations

import math

import numpy as np

from ._config import Configurable

__all__ = [
    "ExponentialDecay",
    "LearningRateSchedule",
    "StepDecay",
]


class LearningRateSchedule(Configurable):
    """Base class of the schedules: a learning rate as a function of the optimizer's step count.

    A schedule is called as ``schedule(step) -> float`` with ``step`` the number of steps already
    taken (0 on the first step). Subclasses implement ``__call__`` and ``get_config``.
    """

    def __call__(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self) -> dict:
        """JSON-able constructor arguments."""
        raise NotImplementedError


def _positive(value, argname, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{argname}: expected a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{argname}: expected a {'non-negative' if allow_zero else 'positive'} number, got {value}")
    return value


class ExponentialDecay(LearningRateSchedule):
    """Exponential decay, as Keras's ``ExponentialDecay``.

    ``lr = initial_learning_rate * decay_rate ** (step / decay_steps)``.

    Args:
        initial_learning_rate (float): The rate at step 0 (>= 0).
        decay_steps (float): Steps over which the rate is multiplied by ``decay_rate`` (> 0).
        decay_rate (float): The factor per ``decay_steps`` steps (> 0).
        staircase (bool): Use ``floor(step / decay_steps)``, so that the rate drops every
            ``decay_steps`` steps (default False: a smooth decay).

    Example:
        >>> from fastrnn import optim
        >>> schedule = optim.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5, staircase=True)
        >>> schedule(0), schedule(9), schedule(10)
        (0.1, 0.1, 0.05)
        >>> opt = optim.Adam(learning_rate=schedule)
    """

    def __init__(self, initial_learning_rate: float, decay_steps: float, decay_rate: float,
                 staircase: bool = False) -> None:
        self.initial_learning_rate = _positive(initial_learning_rate, "initial_learning_rate", allow_zero=True)
        self.decay_steps = _positive(decay_steps, "decay_steps")
        self.decay_rate = _positive(decay_rate, "decay_rate")
        self.staircase = bool(staircase)

    def __call__(self, step: int) -> float:
        p = step / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate * self.decay_rate ** p

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase}


class StepDecay(LearningRateSchedule):
    """Step decay (PyTorch ``StepLR`` counted in optimizer steps): ``lr = initial * gamma ** (step // step_size)``.

    Args:
        initial_learning_rate (float): The rate at step 0 (>= 0).
        step_size (int): Steps between two drops (positive int).
        gamma (float): The factor of each drop (>= 0; default 0.1).
    """

    def __init__(self, initial_learning_rate: float, step_size: int, gamma: float = 0.1) -> None:
        self.initial_learning_rate = _positive(initial_learning_rate, "initial_learning_rate", allow_zero=True)
        if isinstance(step_size, bool) or not isinstance(step_size, (int, np.integer)) or step_size < 1:
            raise ValueError(f"step_size: expected a positive int, got {step_size!r}")
        self.step_size = int(step_size)
        self.gamma = _positive(gamma, "gamma", allow_zero=True)

    def __call__(self, step: int) -> float:
        return self.initial_learning_rate * self.gamma ** (int(step) // self.step_size)

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "step_size": self.step_size,
                "gamma": self.gamma}


_SCHEDULES = {"ExponentialDecay": ExponentialDecay, "StepDecay": StepDecay}
