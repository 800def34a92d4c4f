"""Attention layers: BahdanauAttention (additive) and LuongAttention (multiplicative).

Both are called on one decoder query and the encoder's annotations:

    context, weights = attn(query, values, mask=None, training=False)   # or attn([query, values])
    # query [B, Dq] (the decoder state s_{i-1}) or [B, Tq, Dq], values [B, Tx, Dv] (the annotations h_j),
    # mask [B, Tx] bool (True = a real encoder step), context [B, Dv], weights [B, Tx]
    dquery, dvalues = attn.backward(dcontext, dweights=None)   # ACCUMULATES parameter grads

The scores e_j are turned into weights alpha_j = softmax over the unmasked steps j; masked steps
get weight exactly 0, and a row with no unmasked step gets all-zero weights and a zero context
(never NaN, whatever the masked steps of ``values`` hold). The context is c = sum_j alpha_j h_j.

A training call keeps copies of the query and the weights it returns, and ``values`` as given
(encoder outputs, reused by every decoder step): do not change ``values`` in place, or the
parameters, between a call and its backward.

Decoders that call the layer once per output step and backpropagate through all steps afterwards
use ``forward_step`` / ``backward_step``, which hand the per-call cache to the caller instead of
keeping only the last one.

A whole query sequence ``query [B, Tq, Dq]`` (Keras's ``Attention()([query, value])`` style, e.g.
a teacher-forced decoder's outputs) gives ``context [B, Tq, Dv]`` and ``weights [B, Tq, Tx]``, each
query step exactly as a call on that step alone (``LuongAttention('dot')`` is then
``keras.layers.Attention()``, except on rows whose every value step is masked: zeros here, Keras
averages the values uniformly); ``mask`` stays the values' mask [B, Tx].
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from numpy.typing import ArrayLike

from .. import ops
from .._docstrings import fill_docstring
from .._validation import layer_positive_int as _positive_int
from . import _symbolic, initializers
from .base import Layer, bool_mask, register_layer
from .core import _init_name

__all__ = ["BahdanauAttention", "LuongAttention", "masked_softmax"]


def masked_softmax(scores: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Softmax over the last axis of ``scores`` restricted to ``mask``.

    Masked entries get 0; a row without any unmasked entry is all zeros (no NaN).

    Args:
        scores: Array [..., T].
        mask: None, or bool broadcastable to ``scores``, True where an entry counts.

    Returns:
        The weights, of ``scores``' shape.
    """
    if mask is None:
        z = scores - scores.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)
    neg = np.where(mask, scores, -np.inf)
    mx = neg.max(axis=-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    e = np.where(mask, np.exp(np.where(mask, scores - mx, 0.0)), 0.0)
    s = e.sum(axis=-1, keepdims=True)
    return (e / np.where(s > 0, s, 1.0)).astype(scores.dtype, copy=False)


class _Attention(Layer):
    """Shared input handling, softmax, context and their gradients (subclasses give the scores)."""

    _input_rank = (2, 2)
    _input_desc = "[batch, query_features]"

    def __init__(self, query_dim: int | None = None, value_dim: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.query_dim = None if query_dim is None else _positive_int(query_dim, self._who(), "query_dim")
        self.value_dim = None if value_dim is None else _positive_int(value_dim, self._who(), "value_dim")
        if self.query_dim is not None and self.value_dim is not None:
            self.input_shape = ((self.query_dim,), (None, self.value_dim))

    # -- build -----------------------------------------------------------------------------------
    def build(self, input_shape: Any) -> None:
        """``input_shape`` = ((Dq,) or (Tq, Dq), (Tx, Dv)): the query's and the values' shapes without
        the batch."""
        try:
            qshape, (_, dv) = input_shape
            if len(qshape) not in (1, 2):
                raise ValueError
            dq = qshape[-1]
        except (TypeError, ValueError):
            raise ValueError(
                f"{self._who()}: input shape must be ((query_features,) or (query_time, query_features), "
                f"(time, value_features)), got {input_shape!r}"
            ) from None
        if dq is None or dv is None:
            raise ValueError(f"{self._who()}: the feature sizes must be known, got input shape {input_shape!r}")
        self.query_dim, self.value_dim = int(dq), int(dv)
        self._create(self.query_dim, self.value_dim)
        self.input_shape = ((self.query_dim,), (None, self.value_dim))
        self.built = True

    def _create(self, dq, dv):  # pragma: no cover - abstract
        raise NotImplementedError

    # -- input checks ----------------------------------------------------------------------------
    def _convert(self, a, argname, ranks, desc):
        if isinstance(a, (list, tuple)):
            a = np.asarray(a)
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{self._who()}: {argname} must be a numpy array, got {type(a).__name__}")
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{self._who()}: {argname} must be a numeric array, got dtype {a.dtype}")
        if a.ndim not in ranks:
            raise ValueError(f"{self._who()}: {argname} must have shape {desc}, got shape {tuple(a.shape)}")
        return np.ascontiguousarray(a, dtype=self.dtype)

    def _check_inputs(self, query, values, mask, padding_finite=False):
        query = self._convert(query, "query", (2, 3), "[batch, query_features] or [batch, query_time, query_features]")
        values = self._convert(values, "values", (3,), "[batch, time, value_features]")
        if query.shape[0] != values.shape[0]:
            raise ValueError(
                f"{self._who()}: query and values must have the same batch size, got {query.shape[0]} and "
                f"{values.shape[0]}"
            )
        if not self.built:
            self.build(((query.shape[-1],), (values.shape[1], values.shape[2])))
        if query.shape[-1] != self.query_dim:
            raise ValueError(f"{self._who()}: query must have {self.query_dim} features (built for that), got "
                             f"shape {tuple(query.shape)}")
        if values.shape[2] != self.value_dim:
            raise ValueError(f"{self._who()}: values must have {self.value_dim} features (built for that), got "
                             f"shape {tuple(values.shape)}")
        if mask is not None:
            m = np.asarray(mask)
            if m.shape != values.shape[:2]:
                raise ValueError(f"{self._who()}: mask must have shape [batch, time] = {tuple(values.shape[:2])}, "
                                 f"got {tuple(m.shape)}")
            mask = bool_mask(m, self._who())
            # padding may hold NaN or inf: its weight is 0, but 0 * NaN is NaN in the context and in
            # the gradients, so such masked steps are zeroed (checked on the masked entries alone,
            # which costs much less than the zeroing that is rarely needed)
            if not padding_finite and not mask.all() and not np.isfinite(values[~mask]).all():
                values = np.where(mask[..., None], values, self.dtype.type(0))
        return query, values, mask

    # -- forward / backward ----------------------------------------------------------------------
    def __call__(self, query, values=None, mask=None, training=False):
        """(context [B, Dv], weights [B, Tx]) for a query [B, Dq], or (context [B, Tq, Dv], weights
        [B, Tq, Tx]) for a query sequence [B, Tq, Dq]; keeps the backward cache when ``training``.

        Also callable Keras-style on a list, ``attn([query, values])``, with ``mask`` the values'
        mask or ``[None, values_mask]`` (query masks are not supported). On symbolic tensors (a
        functional model) it records the call and returns the symbolic ``[context, weights]``.

        Args:
            query: [B, Dq] or [B, Tq, Dq], or the list ``[query, values]``.
            values: [B, Tx, Dv] (None with the list form).
            mask: None, the values' bool mask [B, Tx], or ``[None, values_mask]``.
            training: Keep what :meth:`backward` needs.

        Returns:
            ``(context, weights)``.
        """
        if _symbolic.is_symbolic(query, values, mask):
            args = list(query) if values is None and isinstance(query, (list, tuple)) else [query, values]
            return _symbolic.call_layer(self, args, {"mask": mask})
        if values is None and isinstance(query, (list, tuple)):
            if len(query) != 2:
                raise ValueError(f"{self._who()}: called on a list, it takes [query, values], got {len(query)} items")
            query, values = query
            if isinstance(mask, (list, tuple)):
                if len(mask) != 2 or mask[0] is not None:
                    raise ValueError(f"{self._who()}: mask for [query, values] must be the values' mask or "
                                     "[None, values_mask] (query masks are not supported)")
                mask = mask[1]
        elif values is None:
            raise TypeError(f"{self._who()}: missing values: call attn(query, values) or attn([query, values])")
        context, weights, cache = self.forward_step(query, values, mask=mask, training=training)
        if training:
            self._cache = cache
        return context, weights

    def forward_step(self, query: np.ndarray, values: np.ndarray, mask: Any = None, training: bool = True,
                     padding_finite: bool = False) -> tuple[np.ndarray, np.ndarray, Any]:
        """One call whose cache goes to :meth:`backward_step` instead of the layer.

        Args:
            query: [B, Dq] or [B, Tq, Dq].
            values: [B, Tx, Dv].
            mask: None or the values' bool mask [B, Tx].
            training: Return a cache (default True); with False the cache is None.
            padding_finite: The caller guarantees that the values at masked steps are finite (as
                the sequence output of a fastrnn recurrent layer is): the check for non-finite
                values there, which zeroes them, is skipped (a decoder calls this once per output
                step on the same values). With non-finite padding and True the outputs are NaN.

        Returns:
            ``(context, weights, cache)``.
        """
        query, values, mask = self._check_inputs(query, values, mask, padding_finite)
        one = query.ndim == 2  # one decoder step; else a query sequence [B, Tq, Dq]
        # Computed on query sequences [B, Q, Dq] (Q = 1 for one step). The query and the returned
        # weights are the caller's to change before backward: the cache keeps copies. values
        # (often large, and reused by every decoder step) is kept as given.
        q3 = query[:, None, :] if one else query
        if training:
            q3 = q3.copy()
        scores, score_cache = self._scores(q3, values)                                    # [B, Q, Tx]
        weights = masked_softmax(scores, None if mask is None else mask[:, None, :])
        context = np.einsum("bqt,btd->bqd", weights, values)
        cache = (q3, values, weights.copy(), score_cache, one) if training else None
        if one:
            return context[:, 0], weights[:, 0], cache
        return context, weights, cache

    def backward(self, dcontext: np.ndarray, dweights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Gradients for the last training call; ACCUMULATES into the parameters' grads.

        Args:
            dcontext: Gradient w.r.t. the context (its shape).
            dweights: Optional gradient w.r.t. the weights (their shape).

        Returns:
            ``(dquery, dvalues)``.
        """
        if self._cache is None:
            raise RuntimeError(f"{self._who()}: backward() called before a forward pass with training=True")
        return self.backward_step(self._cache, dcontext, dweights)

    def backward_step(self, cache: Any, dcontext: np.ndarray, dweights: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Gradients for the :meth:`forward_step` that returned ``cache``; ACCUMULATES parameter grads.

        Args:
            cache: The cache of a ``forward_step(..., training=True)``.
            dcontext: Gradient w.r.t. that call's context.
            dweights: Optional gradient w.r.t. its weights.

        Returns:
            ``(dquery, dvalues)``.
        """
        if cache is None:
            raise RuntimeError(f"{self._who()}: backward_step needs the cache of a call with training=True")
        q3, values, weights, score_cache, one = cache
        B, T, Dv = values.shape
        Q = q3.shape[1]
        lead = (B,) if one else (B, Q)
        dcontext = self._check_dy(dcontext, lead + (Dv,), "dcontext").reshape(B, Q, Dv)
        dalpha = np.einsum("bqd,btd->bqt", dcontext, values)
        if dweights is not None:
            dalpha = dalpha + self._check_dy(dweights, lead + (T,), "dweights").reshape(B, Q, T)
        dvalues = np.einsum("bqt,bqd->btd", weights, dcontext)
        # softmax backward; masked steps have weight 0 and so get no score gradient
        dscores = weights * (dalpha - (weights * dalpha).sum(axis=-1, keepdims=True))
        dquery, dv2 = self._scores_backward(q3, values, score_cache, dscores)
        return (dquery[:, 0] if one else dquery), dvalues + dv2

    def _scores(self, query, values):  # pragma: no cover - abstract
        raise NotImplementedError

    def _scores_backward(self, query, values, score_cache, dscores):  # pragma: no cover - abstract
        raise NotImplementedError

    # -- shapes / config -------------------------------------------------------------------------
    def compute_output_shape(self, input_shape: Any) -> Any:
        """The context's and the weights' shapes (batch excluded): [(Dv,), (Tx,)] for one query
        step, [(Tq, Dv), (Tq, Tx)] for a query sequence."""
        qshape, (tx, dv) = input_shape
        lead = tuple(qshape[:-1])
        return [lead + (dv,), lead + (tx,)]

    def _symbolic_output_shape(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"{self._who()}: called on a list, it takes [query, values], got {len(input_shape)} items")
        qshape, vshape = (tuple(sh) for sh in input_shape)
        if len(qshape) not in (1, 2) or len(vshape) != 2:
            raise ValueError(f"{self._who()}: query must have shape [batch, query_features] or [batch, query_time, "
                             f"query_features] and values [batch, time, value_features], got shapes "
                             f"{(None,) + qshape} and {(None,) + vshape}")
        if not self.built:
            self.build((qshape, vshape))
        if qshape[-1] != self.query_dim or vshape[-1] != self.value_dim:
            raise ValueError(f"{self._who()}: built for query features {self.query_dim} and value features "
                             f"{self.value_dim}, got shapes {(None,) + qshape} and {(None,) + vshape}")
        return self.compute_output_shape((qshape, vshape))

    def compute_mask(self, x: ArrayLike, mask: Any = None) -> Any:
        return None

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(query_dim=self.query_dim, value_dim=self.value_dim)
        return cfg


# The parts of the two layers' docstrings that are the same for both (fill_docstring puts them
# in place of the {NAME} lines): the arguments of _Attention.__init__, the call arguments and the
# input and output shapes.
_BASE_ARGS = """\
query_dim (int | None): Dq; with ``value_dim`` it builds the layer at construction.
    Default None: taken from the first call.
value_dim (int | None): Dv (see ``query_dim``).
**kwargs: ``name``, ``trainable``, ``dtype`` (see :class:`~fastrnn.layers.Layer`).
"""

_CALL_AND_SHAPES = """\
Call arguments:
    query: The decoder query [B, Dq] (one step, e.g. the state s_{i-1}) or [B, Tq, Dq] (a
        query sequence). Keras style, ``attn([query, values])`` also works.
    values: The encoder's annotations h_j [B, Tx, Dv].
    mask: Optional bool [B, Tx], True at real encoder steps (or ``[None, values_mask]``
        with the list form). Masked steps get weight exactly 0; a row with none unmasked gets
        zero weights and a zero context.
    training (bool): Keep what ``backward`` needs (default False).

Input shape:
    query [batch, Dq] or [batch, Tq, Dq]; values [batch, Tx, Dv].

Output shape:
    ``(context, weights)``: [batch, Dv] and [batch, Tx] for one query step, [batch, Tq, Dv]
    and [batch, Tq, Tx] for a query sequence.
"""


@register_layer
@fill_docstring
class BahdanauAttention(_Attention):
    """Additive attention (Bahdanau et al. 2015).

    Scores ``e_j = v^T tanh(s W1 + h_j W2 + b)``, weights ``alpha = softmax(e)`` over the unmasked
    steps and context ``c = sum_j alpha_j h_j``. Parameters (Keras layouts): ``w1`` [Dq, units] on
    the query, ``w2`` [Dv, units] on the values, ``b`` [units], ``v`` [units, 1]. This is the
    TF/Keras NMT tutorial's layer with W1 = Dense(units), W2 = Dense(units), V = Dense(1): w1/w2/v
    are their kernels, b is W1.bias + W2.bias (only the sum matters), and V's bias is left out
    because the softmax ignores a constant shift. ``backward(dcontext, dweights=None)`` returns
    ``(dquery, dvalues)``; ``forward_step`` / ``backward_step`` keep one cache per decoder step.

    Args:
        units (int): Size of the hidden scoring layer (positive int).
        kernel_initializer (str | Callable): Initializer of w1, w2 and v (default 'glorot_uniform').
        bias_initializer (str | Callable): Initializer of b (default 'zeros').
        seed (int | None): Seed of the layer's own generator for the weights; None draws from the
            global generator.
        {_BASE_ARGS}

    {_CALL_AND_SHAPES}

    Example:
        >>> import numpy as np
        >>> from fastrnn import layers
        >>> attn = layers.BahdanauAttention(16, seed=0)
        >>> query, values = np.zeros((2, 8), np.float32), np.ones((2, 5, 6), np.float32)
        >>> mask = np.array([[True] * 5, [True, True, False, False, False]])
        >>> context, weights = attn(query, values, mask=mask)
        >>> context.shape, weights.shape
        ((2, 6), (2, 5))
        >>> weights[1].round(3).tolist()
        [0.5, 0.5, 0.0, 0.0, 0.0]
    """

    def __init__(self, units: int, kernel_initializer: str | Callable = "glorot_uniform",
                 bias_initializer: str | Callable = "zeros", seed: int | None = None, **kwargs: Any) -> None:
        self.units = units
        self._kernel_init, self.kernel_initializer = _init_name(kernel_initializer, "BahdanauAttention",
                                                                "kernel_initializer")
        self._bias_init, self.bias_initializer = _init_name(bias_initializer, "BahdanauAttention",
                                                            "bias_initializer")
        self.seed = seed
        self._rng = initializers.new_rng(seed)
        self.w1 = self.w2 = self.b = self.v = None
        super().__init__(**kwargs)
        self.units = _positive_int(units, self._who(), "units")

    def _create(self, dq, dv):
        U, rng, dt = self.units, self._rng, self.dtype
        self.add_parameter("w1", self._kernel_init((dq, U), rng=rng, dtype=dt))
        self.add_parameter("w2", self._kernel_init((dv, U), rng=rng, dtype=dt))
        self.add_parameter("b", self._bias_init((U,), rng=rng, dtype=dt))
        self.add_parameter("v", self._kernel_init((U, 1), rng=rng, dtype=dt))

    def _build_from_weights(self, weights):
        if len(weights) == 4 and all(np.ndim(w) == 2 for w in (weights[0], weights[1])):
            self.build(((int(np.shape(weights[0])[0]),), (None, int(np.shape(weights[1])[0]))))

    def _scores(self, query, values):
        # query [B, Q, Dq] -> pre [B, Q, Tx, U]
        pre = (ops.matmul(query, self.w1.value) + self.b.value)[:, :, None, :] + \
            ops.matmul(values, self.w2.value)[:, None, :, :]
        t = np.tanh(pre)
        return ops.matmul(t, self.v.value)[..., 0], t

    def _scores_backward(self, query, values, t, dscores):
        U, Dq, Dv = self.units, query.shape[2], values.shape[2]
        self.v.grad += np.einsum("bqtu,bqt->u", t, dscores)[:, None]
        dpre = dscores[..., None] * self.v.value[:, 0] * (1.0 - t * t)                      # [B, Q, Tx, U]
        dq_pre = dpre.sum(axis=2)                                                             # [B, Q, U]
        dv_pre = dpre[:, 0] if dpre.shape[1] == 1 else dpre.sum(axis=1)                      # [B, Tx, U]
        self.b.grad += dq_pre.sum(axis=(0, 1))
        self.w1.grad += ops.matmul(query.reshape(-1, Dq).T, dq_pre.reshape(-1, U))
        self.w2.grad += ops.matmul(values.reshape(-1, Dv).T, dv_pre.reshape(-1, U))
        return ops.matmul(dq_pre, self.w1.value.T), ops.matmul(dv_pre, self.w2.value.T)

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(units=self.units, kernel_initializer=self.kernel_initializer,
                   bias_initializer=self.bias_initializer, seed=self.seed)
        return cfg


_LUONG_SCORES = ("general", "dot")


@register_layer
@fill_docstring
class LuongAttention(_Attention):
    """Multiplicative attention (Luong et al. 2015).

    Scores ``e_j = s^T W h_j`` ('general') or ``s . h_j`` ('dot'), weights ``alpha = softmax(e)``
    over the unmasked steps and context ``c = sum_j alpha_j h_j``. 'general' has one parameter
    ``w`` [Dq, Dv]; 'dot' has none and needs Dq == Dv (ValueError at build otherwise). On a query
    sequence, ``LuongAttention('dot')`` is ``keras.layers.Attention()`` except on rows whose every
    value step is masked (zeros here; Keras averages the values uniformly).

    Args:
        score (str): 'general' (default) or 'dot' (ValueError otherwise).
        kernel_initializer (str | Callable): Initializer of w (default 'glorot_uniform').
        seed (int | None): Seed of the layer's own generator for w; None draws from the global
            generator.
        {_BASE_ARGS}

    {_CALL_AND_SHAPES}

    Example:
        >>> import numpy as np
        >>> from fastrnn import layers
        >>> attn = layers.LuongAttention("dot")
        >>> context, weights = attn(np.zeros((2, 3, 4), np.float32), np.ones((2, 5, 4), np.float32))
        >>> context.shape, weights.shape
        ((2, 3, 4), (2, 3, 5))
    """

    def __init__(self, score: str = "general", kernel_initializer: str | Callable = "glorot_uniform",
                 seed: int | None = None, **kwargs: Any) -> None:
        if score not in _LUONG_SCORES:
            raise ValueError(f"LuongAttention: score must be 'general' or 'dot', got {score!r}")
        self.score = score
        self._kernel_init, self.kernel_initializer = _init_name(kernel_initializer, "LuongAttention",
                                                                "kernel_initializer")
        self.seed = seed
        self._rng = initializers.new_rng(seed)
        self.w = None
        super().__init__(**kwargs)

    def _create(self, dq, dv):
        if self.score == "general":
            self.add_parameter("w", self._kernel_init((dq, dv), rng=self._rng, dtype=self.dtype))
        elif dq != dv:
            raise ValueError(f"{self._who()}: score='dot' needs query and values with the same number of features, "
                             f"got {dq} and {dv}")

    def _build_from_weights(self, weights):
        if self.score == "general" and len(weights) == 1 and np.ndim(weights[0]) == 2:
            dq, dv = np.shape(weights[0])
            self.build(((int(dq),), (None, int(dv))))
        elif self.score == "dot" and not weights and self.query_dim is not None:
            self.build(((self.query_dim,), (None, self.query_dim)))

    def _scores(self, query, values):
        qw = ops.matmul(query, self.w.value) if self.score == "general" else query          # [B, Q, Dv]
        return np.einsum("btd,bqd->bqt", values, qw), qw

    def _scores_backward(self, query, values, qw, dscores):
        dqw = np.einsum("bqt,btd->bqd", dscores, values)
        dvalues = np.einsum("bqt,bqd->btd", dscores, qw)
        if self.score == "general":
            Dq, Dv = query.shape[2], values.shape[2]
            self.w.grad += ops.matmul(query.reshape(-1, Dq).T, dqw.reshape(-1, Dv))
            return ops.matmul(dqw, self.w.value.T), dvalues
        return dqw, dvalues

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(score=self.score, kernel_initializer=self.kernel_initializer, seed=self.seed)
        return cfg
