"""Functional kernels with the same signatures as fastrnn.reference.

Interim: delegates to the NumPy references until the C++ kernels are bound.
"""
from .reference import (  # noqa: F401
    gru_backward,
    gru_forward,
    lstm_backward,
    lstm_forward,
    rnn_backward,
    rnn_forward,
)
