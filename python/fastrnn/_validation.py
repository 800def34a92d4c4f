"""Argument validators shared by the layers, the models and Seq2Seq.

Each returns the checked value as a plain Python number and raises TypeError / ValueError with a
message that names the argument. Two message styles exist, and the tests check both: the models'
(``"batch_size: expected a positive int, got 0"``) and the layers' (``"LSTM 'lstm': units must
be a positive int, got 0"``). ``bptt_steps`` is checked by ``reference._common.check_bptt_steps``,
which the ops use too.
"""
from __future__ import annotations

import numpy as np

__all__ = ["fraction", "layer_positive_int", "layer_rate", "positive_int"]


def positive_int(value, argname: str, allow_zero: bool = False) -> int:
    """``value`` as an int > 0 (>= 0 with ``allow_zero``); messages start with ``argname``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{argname}: expected an int, got {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{argname}: expected a {'non-negative' if allow_zero else 'positive'} int, got {value}")
    return int(value)


def fraction(value, argname: str) -> float:
    """``value`` as a float in [0, 1); anything else (wrong type included) is a ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{argname}: expected a float in [0, 1), got {value!r}")
    return float(value)


def layer_positive_int(value, who: str, arg: str) -> int:
    """A layer's int argument ``arg`` > 0; messages start with the layer's ``who``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{who}: {arg} must be a positive int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{who}: {arg} must be a positive int, got {value}")
    return int(value)


def layer_rate(value, who: str, arg: str) -> float:
    """A layer's rate argument ``arg`` in [0, 1) (dropout); messages start with the layer's ``who``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{who}: {arg} must be a float in [0, 1), got {type(value).__name__}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{who}: {arg} must be in [0, 1), got {value}")
    return float(value)
