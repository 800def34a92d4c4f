"""Core layers: Dense, Embedding, Dropout, Flatten, TimeDistributed."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import numpy as np
from numpy.typing import ArrayLike

from .. import ops
from .._validation import layer_positive_int as _positive_int
from .._validation import layer_rate as _rate
from . import _symbolic, initializers
from .base import Layer, Parameter, deserialize, register_layer, serialize

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "Concatenate",
    "Dense",
    "Dropout",
    "Embedding",
    "Flatten",
    "Input",
    "InputLayer",
    "Masking",
    "RepeatVector",
    "TimeDistributed",
]


# ----------------------------------------------------------------------------------------------
# activations: forward f(z) and backward (dy, y) -> dz, expressed through the output y
# ----------------------------------------------------------------------------------------------
def _sigmoid(z):
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


ACTIVATIONS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "linear": (lambda z: z, lambda dy, y: dy),
    "tanh": (np.tanh, lambda dy, y: dy * (1.0 - y * y)),
    "relu": (lambda z: np.maximum(z, 0), lambda dy, y: dy * (y > 0)),
    "sigmoid": (_sigmoid, lambda dy, y: dy * y * (1.0 - y)),
    "softmax": (_softmax, lambda dy, y: y * (dy - (dy * y).sum(axis=-1, keepdims=True))),
}


def _activation(name, who):
    if name is None:
        return "linear"
    if not isinstance(name, str):
        raise TypeError(f"{who}: activation must be a str or None, got {type(name).__name__}")
    if name not in ACTIVATIONS:
        raise ValueError(f"{who}: unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")
    return name


def _init_name(init, who, arg):
    """Validate an initializer argument; return (callable, JSON-able name)."""
    try:
        fn = initializers.get(init)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{who}: {arg}: {exc}") from None
    name = init if isinstance(init, str) else getattr(init, "__name__", None)
    return fn, name


# ----------------------------------------------------------------------------------------------
@register_layer
class Dense(Layer):
    """Fully connected layer on the last axis.

    Computes ``y = activation(x @ kernel + bias)`` with ``kernel`` [in, units] (Keras's layout) and
    ``bias`` [units]. The input may have any rank >= 2 ([B, F], or [B, T, F] where the layer is
    applied at every step); the mask passes through. A training call keeps copies of x and y for
    backward; backward reads the kernel as it is then, so update the parameters after backward (as
    ``fit`` does), not between forward and backward.

    Args:
        units (int): Output size (positive int).
        activation (str | None): None or 'linear' (identity, the default), 'tanh', 'relu',
            'sigmoid' or 'softmax' (over the last axis).
        use_bias (bool): Add the bias vector (default True).
        kernel_initializer (str | Callable): Initializer of ``kernel``: a name from
            :mod:`fastrnn.layers.initializers` ('glorot_uniform', the default, 'zeros', 'ones',
            'uniform', 'orthogonal') or a callable ``init(shape, rng=, dtype=)``.
        bias_initializer (str | Callable): Initializer of ``bias`` (default 'zeros').
        seed (int | None): Seed of the layer's own generator for its initial weights; None draws
            from the global generator (:func:`fastrnn.set_seed`).
        **kwargs: ``name``, ``trainable``, ``dtype``, ``input_shape``, common to every layer
            (see :class:`~fastrnn.layers.Layer`).

    Call arguments:
        x: Array [B, ..., in].
        training (bool): Keep what ``backward`` needs (default False).
        mask: Optional mask; not used, passed through to the next layer.

    Input shape:
        [batch, ..., in] (rank >= 2).

    Output shape:
        [batch, ..., units].

    Example:
        >>> import numpy as np
        >>> from fastrnn import layers
        >>> dense = layers.Dense(4, activation="relu", seed=0)
        >>> dense(np.ones((2, 3), dtype=np.float32)).shape
        (2, 4)
        >>> dense.kernel.shape, dense.count_params()
        ((3, 4), 16)
    """

    _input_rank = (2, None)
    _input_desc = "[batch, ..., features]"
    #: Parameters once built (None before; bias None without use_bias)
    kernel: Any
    bias: Any

    def __init__(self, units: int, activation: str | None = None, use_bias: bool = True,
                 kernel_initializer: str | Callable = "glorot_uniform", bias_initializer: str | Callable = "zeros",
                 seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        who = self._who()
        self.units = _positive_int(units, who, "units")
        self.activation = _activation(activation, who)
        self.use_bias = bool(use_bias)
        self._kernel_init, self.kernel_initializer = _init_name(kernel_initializer, who, "kernel_initializer")
        self._bias_init, self.bias_initializer = _init_name(bias_initializer, who, "bias_initializer")
        self.seed = seed
        self._rng = initializers.new_rng(seed)
        self.kernel = self.bias = None

    def build(self, input_shape: Any) -> None:
        input_shape = tuple(input_shape)
        if len(input_shape) < 1 or input_shape[-1] is None:
            raise ValueError(f"{self._who()}: the last input dimension must be known, got input shape {input_shape}")
        fan_in = int(input_shape[-1])
        # kernel is [in, units] (Keras layout); glorot's limit depends on fan_in + fan_out only
        self.add_parameter("kernel", self._kernel_init((fan_in, self.units), rng=self._rng, dtype=self.dtype))
        if self.use_bias:
            self.add_parameter("bias", self._bias_init((self.units,), rng=self._rng, dtype=self.dtype))
        super().build(input_shape)

    def _build_from_weights(self, weights):
        if weights and np.ndim(weights[0]) == 2:
            self.build((int(np.shape(weights[0])[0]),))

    def _build_shape(self, shape):
        return (None,) * (len(shape) - 1) + (shape[-1],)

    def call(self, x: np.ndarray, training: bool = False, mask: np.ndarray | None = None) -> np.ndarray:
        z = ops.matmul(x, self.kernel.value)
        if self.use_bias:
            z += self.bias.value
        y = ACTIVATIONS[self.activation][0](z)
        if training:  # private copies: the caller may change x or the returned y before backward
            # (a linear layer's backward reads only y's shape)
            self._cache = (np.array(x, copy=True), y if self.activation == "linear" else y.copy())
        return y

    def _backward(self, dy):
        x, y = self._cache
        dy = self._check_dy(dy, y.shape)
        dz = ACTIVATIONS[self.activation][1](dy, y)
        dz2 = dz.reshape(-1, self.units)
        self.kernel.grad += ops.matmul(x.reshape(-1, x.shape[-1]).T, dz2)
        if self.use_bias:
            self.bias.grad += dz2.sum(axis=0)
        return ops.matmul(dz, self.kernel.value.T)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(units=self.units, activation=self.activation, use_bias=self.use_bias,
                   kernel_initializer=self.kernel_initializer, bias_initializer=self.bias_initializer,
                   seed=self.seed)
        return cfg


# ----------------------------------------------------------------------------------------------
@register_layer
class Embedding(Layer):
    """Lookup table from integer ids to dense vectors.

    Maps ids [B, T] to ``embeddings[ids]`` [B, T, output_dim], with the table ``embeddings``
    [input_dim, output_dim]. Ids must be integers in [0, input_dim) (ValueError naming the first
    bad id and where it is; float arrays holding whole numbers are accepted). The table exists from
    construction on, so ``count_params`` and ``set_weights`` work before the layer sees data.
    ``backward`` accumulates into ``embeddings.grad`` and returns None (ids have no gradient).

    Args:
        input_dim (int): Vocabulary size: ids lie in [0, input_dim).
        output_dim (int): Size of each vector.
        embeddings_initializer (str | Callable): Initializer of the table (default 'uniform',
            U(-0.05, 0.05) as Keras).
        mask_zero (bool): With True, id 0 is padding: ``compute_mask(ids)`` is ``ids != 0``, which
            a Sequential model hands to the next layer (as Keras). Default False (no mask).
        input_length (int | None): Length of the sequences; when given (and ``input_shape`` is
            not) it sets ``input_shape=(input_length,)``, as Keras 2's argument.
        seed (int | None): Seed of the layer's own generator for the table; None draws from the
            global generator.
        **kwargs: ``name``, ``trainable``, ``dtype``, ``input_shape`` (see
            :class:`~fastrnn.layers.Layer`).

    Call arguments:
        x: Integer ids [B, T] (any rank >= 1).
        training (bool): Keep the ids for ``backward`` (default False).
        mask: Ignored (the output mask comes from ``mask_zero``).

    Input shape:
        [batch, time] (any rank >= 1) of integer ids.

    Output shape:
        [batch, time, output_dim].

    Example:
        >>> import numpy as np
        >>> from fastrnn import layers
        >>> emb = layers.Embedding(10, 3, mask_zero=True, seed=0)
        >>> ids = np.array([[4, 2, 0]])
        >>> emb(ids).shape
        (1, 3, 3)
        >>> emb.compute_mask(ids)
        array([[ True,  True, False]])
    """

    _input_rank = (1, None)
    _input_desc = "[batch, time] of integer ids"
    #: the table, a Parameter
    embeddings: Any

    def __init__(self, input_dim: int, output_dim: int, embeddings_initializer: str | Callable = "uniform",
                 mask_zero: bool = False, input_length: int | None = None, seed: int | None = None,
                 **kwargs: Any) -> None:
        if input_length is not None and kwargs.get("input_shape") is None:
            kwargs["input_shape"] = (input_length,)
        super().__init__(**kwargs)
        who = self._who()
        self.input_dim = _positive_int(input_dim, who, "input_dim")
        self.output_dim = _positive_int(output_dim, who, "output_dim")
        self._emb_init, self.embeddings_initializer = _init_name(embeddings_initializer, who,
                                                                 "embeddings_initializer")
        self.mask_zero = bool(mask_zero)
        self.input_length = None if input_length is None else int(input_length)
        self.seed = seed
        self._rng = initializers.new_rng(seed)
        self.embeddings = None

    def _create(self):
        if self.embeddings is None:
            self.add_parameter("embeddings", self._emb_init((self.input_dim, self.output_dim), rng=self._rng,
                                                            dtype=self.dtype))

    def build(self, input_shape: Any = None) -> None:
        """Create the table (once) and record the ids' shape (batch excluded; unknown lengths as None)."""
        self._create()
        super().build((None,) if input_shape is None else input_shape)

    def _ensure_built(self):
        # the table does not depend on the input shape: it exists from construction on, so
        # parameters(), count_params() and set_weights() work before the layer sees data
        self._create()
        super()._ensure_built()

    def count_params(self) -> int:
        self._create()
        return int(self.embeddings.size)

    def _build_from_weights(self, weights):
        self._create()

    def _build_shape(self, shape):
        return (None,) * len(shape)

    def _check_input_shape(self, shape):
        return

    def _convert_input(self, x):
        if not isinstance(x, np.ndarray):
            try:
                x = np.asarray(x)
            except ValueError as exc:
                raise ValueError(f"{self._who()}: ids could not be converted to an array: {exc}") from None
        if x.dtype.kind == "f":
            if not np.all(np.isfinite(x)) or np.any(x != np.round(x)):
                bad = x[~(np.isfinite(x) & (x == np.round(x)))].ravel()[0]
                raise TypeError(
                    f"{self._who()}: token ids must be integers, got a {x.dtype} array containing {bad!r}"
                )
        elif x.dtype.kind not in "iub":
            raise TypeError(f"{self._who()}: token ids must be an integer array, got dtype {x.dtype}")
        if x.size:  # the range is checked in the given dtype: a cast first would wrap huge values
            bad = (x < 0) | (x >= self.input_dim)
            if bad.any():
                flat = int(np.flatnonzero(bad.ravel())[0])
                pos = tuple(int(i) for i in np.unravel_index(flat, x.shape))
                value = x.ravel()[flat].item()
                raise ValueError(
                    f"{self._who()}: token id {int(value) if x.dtype.kind == 'f' else value} at position {pos} "
                    f"is outside [0, input_dim={self.input_dim})"
                )
        return x.astype(np.int64, copy=False)

    def _convert_mask(self, mask, x):
        m = np.asarray(mask)
        if m.shape != x.shape:
            raise ValueError(f"{self._who()}: mask must have the ids' shape {x.shape}, got {m.shape}")
        return m.astype(bool, copy=False)

    def call(self, x: np.ndarray, training: bool = False, mask: np.ndarray | None = None) -> np.ndarray:
        y = self.embeddings.value[x]
        if training:  # a private copy: the caller may change the ids before backward
            self._cache = np.array(x, copy=True)
        return y

    def _backward(self, dy):
        ids = self._cache
        dy = self._check_dy(dy, ids.shape + (self.output_dim,))
        np.add.at(self.embeddings.grad, ids.ravel(), dy.reshape(-1, self.output_dim))
        return None

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape) + (self.output_dim,)

    def compute_mask(self, x: ArrayLike, mask: Any = None) -> Any:
        if not self.mask_zero:
            return None
        return np.asarray(x) != 0

    def get_config(self) -> dict:
        cfg = super().get_config()
        if self.input_length is not None:
            cfg.pop("input_shape", None)
        cfg.update(input_dim=self.input_dim, output_dim=self.output_dim,
                   embeddings_initializer=self.embeddings_initializer, mask_zero=self.mask_zero,
                   input_length=self.input_length, seed=self.seed)
        return cfg


# ----------------------------------------------------------------------------------------------
class _Stateless(Layer):
    """A layer without parameters that takes inputs of any rank and feature size."""

    _input_rank = (1, None)
    _input_desc = "[batch, ...]"

    def _build_from_weights(self, weights):
        return

    def _check_input_shape(self, shape):
        return


@register_layer
class Dropout(_Stateless):
    """Inverted dropout.

    When training, each element is zeroed with probability ``rate`` and the others are scaled by
    1/(1-rate); at inference the layer is the identity. The mask passes through.

    Args:
        rate (float): Fraction of the elements to drop, in [0, 1).
        noise_shape (tuple | None): Shape of the dropout mask including the batch dimension (Keras
            semantics): None for "same as the input" and 1 to share the mask along an axis, e.g.
            ``(None, 1, None)`` for one mask per sequence shared over time. Default None: the
            input's shape.
        seed (int | None): Seed of the layer's own generator for the masks; None draws from the
            global generator.
        **kwargs: ``name``, ``trainable``, ``dtype``, ``input_shape`` (see
            :class:`~fastrnn.layers.Layer`).

    Call arguments:
        x: Array [B, ...].
        training (bool): Apply dropout (default False: identity).
        mask: Passed through.

    Input shape:
        Any, batch first.

    Output shape:
        Same as the input.

    Example:
        >>> import numpy as np
        >>> from fastrnn import layers
        >>> drop = layers.Dropout(0.5, seed=0)
        >>> x = np.ones((2, 4), dtype=np.float32)
        >>> bool((drop(x) == x).all())                       # inference: identity
        True
        >>> sorted(set(drop(x, training=True).ravel().tolist()) - {0.0, 2.0})
        []
    """

    def __init__(self, rate: float, noise_shape: Sequence[int | None] | None = None, seed: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rate = _rate(rate, self._who(), "rate")
        self.noise_shape = None if noise_shape is None else tuple(None if d is None else int(d) for d in noise_shape)
        self.seed = seed
        self._rng = initializers.new_rng(seed)

    def _mask_shape(self, shape):
        if self.noise_shape is None:
            return shape
        if len(self.noise_shape) != len(shape):
            raise ValueError(
                f"{self._who()}: noise_shape {self.noise_shape} must have the input's rank {len(shape)} "
                f"(input shape {shape})"
            )
        out = []
        for n, s in zip(self.noise_shape, shape):
            if n is None:
                out.append(s)
            elif n == 1 or n == s:
                out.append(n)
            else:
                raise ValueError(f"{self._who()}: noise_shape {self.noise_shape} does not broadcast to input "
                                 f"shape {shape}")
        return tuple(out)

    def call(self, x: np.ndarray, training: bool = False, mask: np.ndarray | None = None) -> np.ndarray:
        if not training:
            return x
        if self.rate == 0.0:
            self._cache = (None,)
            return x
        keep = self._rng.random(self._mask_shape(x.shape)) >= self.rate
        m = keep.astype(self.dtype) / self.dtype.type(1.0 - self.rate)
        self._cache = (m,)
        return x * m

    def _backward(self, dy):
        (m,) = self._cache
        dy = np.asarray(dy).astype(self.dtype, copy=False)
        if m is None:
            return dy
        if dy.ndim != m.ndim or any(a != b and b != 1 for a, b in zip(dy.shape, m.shape)):
            raise ValueError(f"{self._who()}: dy of shape {dy.shape} does not match the last input")
        return dy * m

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(rate=self.rate, noise_shape=None if self.noise_shape is None else list(self.noise_shape),
                   seed=self.seed)
        return cfg


# ----------------------------------------------------------------------------------------------
@register_layer
class Flatten(_Stateless):
    """Flattens every sample into a vector: [B, d1, d2, ...] -> [B, d1*d2*...].

    The output has no mask.

    Args:
        **kwargs: ``name``, ``trainable``, ``dtype``, ``input_shape`` (see
            :class:`~fastrnn.layers.Layer`).

    Call arguments:
        x: Array [B, d1, d2, ...].
        training (bool): Keep the input shape for ``backward`` (default False).
        mask: Ignored.

    Input shape:
        [batch, d1, d2, ...].

    Output shape:
        [batch, d1*d2*...].

    Example:
        >>> import numpy as np
        >>> from fastrnn import layers
        >>> layers.Flatten()(np.zeros((2, 3, 4), dtype=np.float32)).shape
        (2, 12)
    """

    def call(self, x: np.ndarray, training: bool = False, mask: np.ndarray | None = None) -> np.ndarray:
        if training:
            self._cache = x.shape
        return x.reshape(x.shape[0], -1)

    def _backward(self, dy):
        shape = self._cache
        dy = self._check_dy(dy, (shape[0], int(np.prod(shape[1:], dtype=np.int64))))
        return dy.reshape(shape)

    def compute_output_shape(self, input_shape: Any) -> Any:
        if any(d is None for d in input_shape):
            return (None,)
        return (int(np.prod(input_shape, dtype=np.int64)),)

    def compute_mask(self, x: ArrayLike, mask: Any = None) -> Any:
        return None


@register_layer
class InputLayer(_Stateless):
    """The identity, with the input shape it declares: ``Sequential([layers.Input((T, F)), ...])``
    builds the model from it, as ``keras.Input`` does. Inputs must have the declared rank and
    sizes, except along the first (time) axis, whose length may vary (truncated BPTT feeds chunks
    of it). Integer inputs (token ids) pass unchanged; input masks pass through."""

    def __init__(self, input_shape=None, **kwargs):
        if input_shape is None:
            raise ValueError("InputLayer: input_shape (the shape of one sample, batch excluded) is required")
        super().__init__(input_shape=input_shape, **kwargs)

    def _convert_input(self, x):
        # integer inputs (token ids for an Embedding) pass unchanged: float32 holds ids exactly
        # only up to 2**24
        if isinstance(x, np.ndarray) and x.dtype.kind in "iub":
            return x
        return super()._convert_input(x)

    def _check_input_shape(self, shape):
        want = self._given_input_shape
        if len(shape) != len(want) or any(w is not None and w != d for w, d in zip(want[1:], shape[1:])):
            raise ValueError(f"{self._who()}: expected input of shape (batch,) + {tuple(want)} (any length along "
                             f"the first axis), got (batch,) + {tuple(shape)}")

    def call(self, x, training=False, mask=None):
        if training:
            self._cache = x.shape
        return x

    def _backward(self, dy):
        return self._check_dy(dy, self._cache)


def Input(shape, name=None, dtype="float32"):
    """``keras.Input``: a model input of the shape of one sample (batch excluded; None for any
    length), as a symbolic tensor for the functional API (``fr.Model(inputs, outputs)``); the
    :class:`InputLayer` it comes from is ``Input(...).layer``. An integer ``dtype`` (token ids,
    ``Input((T,), dtype="int32")``) is accepted: integer inputs pass through unchanged. Where a
    layer is expected, ``Sequential([Input((T, F)), ...])``, it stands for its InputLayer."""
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    kind = np.dtype(dtype).kind
    if kind not in "iubf":
        raise TypeError(f"Input: dtype must be a numeric dtype, got {dtype!r}")
    layer = InputLayer(input_shape=tuple(shape), name=name, dtype="float32" if kind in "iub" else dtype)
    return _symbolic.make_input(layer, layer._given_input_shape, np.dtype(dtype))


@register_layer
class Activation(_Stateless):
    """Applies an activation function: ``y = activation(x)``.

    Elementwise, except 'softmax', which normalises over the last axis. The mask passes through. A
    training call keeps a copy of y for backward.

    Args:
        activation (str | None): 'linear' (or None: identity), 'tanh', 'relu', 'sigmoid' or
            'softmax'.
        **kwargs: ``name``, ``trainable``, ``dtype``, ``input_shape`` (see
            :class:`~fastrnn.layers.Layer`).

    Call arguments:
        x: Array [B, ...].
        training (bool): Keep y for ``backward`` (default False).
        mask: Passed through.

    Input shape:
        Any, batch first.

    Output shape:
        Same as the input.

    Example:
        >>> import numpy as np
        >>> from fastrnn import layers
        >>> layers.Activation("relu")(np.array([[-1.0, 2.0]]))
        array([[0., 2.]], dtype=float32)
    """

    def __init__(self, activation: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.activation = _activation(activation, self._who())

    def call(self, x: np.ndarray, training: bool = False, mask: np.ndarray | None = None) -> np.ndarray:
        y = ACTIVATIONS[self.activation][0](x)
        if training:
            self._cache = y.copy()
        return y

    def _backward(self, dy):
        y = self._cache
        return ACTIVATIONS[self.activation][1](self._check_dy(dy, y.shape), y)

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(activation=self.activation)
        return cfg


@register_layer
class RepeatVector(_Stateless):
    """Repeats its input ``n`` times along a new time axis: [B, F] -> [B, n, F].

    The encoder-decoder bridge of Keras's sequence-to-sequence examples. The output has no mask;
    ``backward`` sums the gradient over the n copies.

    Args:
        n (int): Number of repetitions (positive int).
        **kwargs: ``name``, ``trainable``, ``dtype``, ``input_shape`` (see
            :class:`~fastrnn.layers.Layer`).

    Call arguments:
        x: Array [B, F].
        training (bool): Keep the input shape for ``backward`` (default False).
        mask: Ignored.

    Input shape:
        [batch, features].

    Output shape:
        [batch, n, features].

    Example:
        >>> import numpy as np
        >>> from fastrnn import layers
        >>> layers.RepeatVector(3)(np.zeros((2, 5), dtype=np.float32)).shape
        (2, 3, 5)
    """

    _input_rank = (2, 2)
    _input_desc = "[batch, features]"

    def __init__(self, n: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n = _positive_int(n, self._who(), "n")

    def call(self, x: np.ndarray, training: bool = False, mask: np.ndarray | None = None) -> np.ndarray:
        if training:
            self._cache = x.shape
        return np.repeat(x[:, None, :], self.n, axis=1)

    def _backward(self, dy):
        B, F = self._cache
        return self._check_dy(dy, (B, self.n, F)).sum(axis=1)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (self.n,) + tuple(input_shape)

    def compute_mask(self, x: ArrayLike, mask: Any = None) -> Any:
        return None

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(n=self.n)
        return cfg


@register_layer
class Concatenate(_Stateless):
    """Joins a list of arrays along one axis, as Keras's Concatenate.

    For models with several branches (``fastrnn.Model`` subclasses): ``layer([a, b])`` returns one
    array, and ``backward(dy)`` the list of the inputs' gradients. The inputs must have one rank
    (>= 2) and equal sizes outside ``axis``. ``compute_mask(x, [masks])`` is the logical AND of the
    masks given (None when none is).

    Args:
        axis (int): The axis to join along (default -1, the last); any int but 0 (the batch axis),
            otherwise ValueError.
        **kwargs: ``name``, ``trainable``, ``dtype``, ``input_shape`` (see
            :class:`~fastrnn.layers.Layer`).

    Call arguments:
        inputs: A list (or tuple) of at least 2 arrays.
        training (bool): Keep the sizes along ``axis`` for ``backward`` (default False).
        mask: Ignored (use ``compute_mask``).

    Input shape:
        A list of arrays of one rank, equal outside ``axis``.

    Output shape:
        The common shape with the sizes along ``axis`` summed.

    Example:
        >>> import numpy as np
        >>> from fastrnn import layers
        >>> cat = layers.Concatenate()
        >>> y = cat([np.zeros((2, 3)), np.ones((2, 4))], training=True)
        >>> y.shape
        (2, 7)
        >>> [g.shape for g in cat.backward(np.ones((2, 7)))]
        [(2, 3), (2, 4)]
    """

    def __init__(self, axis: int = -1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis == 0:
            raise ValueError(f"{self._who()}: axis must be a non-batch axis (an int other than 0), got {axis!r}")
        self.axis = int(axis)

    def __call__(self, inputs, training=False, mask=None, **kwargs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) < 2:
            raise ValueError(f"{self._who()}: expected a list of at least 2 arrays, got {type(inputs).__name__}")
        if _symbolic.is_symbolic(inputs, mask):
            return _symbolic.call_layer(self, list(inputs), dict(kwargs, mask=mask))
        xs = [self._convert_input(a) for a in inputs]
        self._check_shapes([a.shape for a in xs])
        ax = self.axis % xs[0].ndim
        if not self.built:
            self.build(tuple(xs[0].shape[1:]))
        if training:
            self._cache = [a.shape[ax] for a in xs]
        return np.concatenate(xs, axis=ax)

    def _check_shapes(self, shapes):
        """ValueError unless arrays of ``shapes`` (batch included; None: unknown) can be joined."""
        ndim = len(shapes[0])
        if ndim < 2 or any(len(sh) != ndim for sh in shapes) or not -ndim <= self.axis < ndim:
            raise ValueError(f"{self._who()}: the inputs must all have one rank >= 2 that has axis {self.axis}, "
                             f"got shapes {[tuple(sh) for sh in shapes]}")
        ax = self.axis % ndim
        for i, sh in enumerate(shapes):
            for d, d0 in zip(sh[:ax] + sh[ax + 1:], shapes[0][:ax] + shapes[0][ax + 1:]):
                if d is not None and d0 is not None and d != d0:
                    raise ValueError(f"{self._who()}: inputs[{i}] has shape {tuple(sh)}, which differs from "
                                     f"inputs[0]'s {tuple(shapes[0])} outside axis {self.axis}")

    def _symbolic_output_shape(self, input_shape):
        self._check_shapes([(None,) + tuple(sh) for sh in input_shape])
        if not self.built:
            self.build(tuple(input_shape[0]))
        return self.compute_output_shape(input_shape)

    def _backward(self, dy):
        dy = np.asarray(dy).astype(self.dtype, copy=False)
        sizes = self._cache
        ax = self.axis % dy.ndim
        if dy.shape[ax] != sum(sizes):
            raise ValueError(f"{self._who()}: dy must have {sum(sizes)} entries along axis {self.axis}, got shape "
                             f"{dy.shape}")
        return np.split(dy, np.cumsum(sizes)[:-1], axis=ax)

    def compute_output_shape(self, input_shape: Any) -> Any:
        shapes = [tuple(sh) for sh in input_shape]
        ax = self.axis % (len(shapes[0]) + 1) - 1  # input_shape excludes the batch axis
        out = list(shapes[0])
        out[ax] = None if any(sh[ax] is None for sh in shapes) else sum(sh[ax] for sh in shapes)
        return tuple(out)

    def compute_mask(self, x: ArrayLike, mask: Any = None) -> Any:
        masks = [m for m in (mask if isinstance(mask, (list, tuple)) else [mask]) if m is not None]
        if not masks:
            return None
        return np.logical_and.reduce([np.asarray(m, bool) for m in masks])

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(axis=self.axis)
        return cfg


@register_layer
class Masking(_Stateless):
    """Marks the time steps whose features all equal ``mask_value`` as padding (Keras semantics).

    The output mask [B, T] (``compute_mask(x)``) is True where any feature differs from
    ``mask_value``; the output is the input with the masked steps set to 0. The incoming mask is
    replaced, as in Keras.

    Args:
        mask_value (float): The padding value (default 0.0); a number, else TypeError.
        **kwargs: ``name``, ``trainable``, ``dtype``, ``input_shape`` (see
            :class:`~fastrnn.layers.Layer`).

    Call arguments:
        x: Array [B, T, F].
        training (bool): Keep the mask for ``backward`` (default False).
        mask: Ignored (replaced).

    Input shape:
        [batch, time, features].

    Output shape:
        Same as the input.

    Example:
        >>> import numpy as np
        >>> from fastrnn import layers
        >>> x = np.array([[[1.0, 2.0], [0.0, 0.0], [3.0, 0.0]]])
        >>> layers.Masking(0.0).compute_mask(x)
        array([[ True, False,  True]])
    """

    _input_rank = (3, 3)
    _input_desc = "[batch, time, features]"

    def __init__(self, mask_value: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(mask_value, bool) or not isinstance(mask_value, (int, float, np.integer, np.floating)):
            raise TypeError(f"{self._who()}: mask_value must be a number, got {type(mask_value).__name__}")
        self.mask_value = float(mask_value)

    def _keep(self, x):
        return np.any(x != self.dtype.type(self.mask_value), axis=-1)

    def call(self, x: np.ndarray, training: bool = False, mask: np.ndarray | None = None) -> np.ndarray:
        keep = self._keep(x)
        if training:
            self._cache = (keep, x.shape)
        return np.where(keep[..., None], x, self.dtype.type(0))

    def _backward(self, dy):
        keep, shape = self._cache
        return np.where(keep[..., None], self._check_dy(dy, shape), self.dtype.type(0))

    def compute_mask(self, x: ArrayLike, mask: Any = None) -> Any:
        return self._keep(self._convert_input(x))

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(mask_value=self.mask_value)
        return cfg


# ----------------------------------------------------------------------------------------------
@register_layer
class TimeDistributed(Layer):
    """Applies a layer to every time step.

    [B, T, ...] is folded to [B*T, ...], run through ``layer`` and unfolded to [B, T, ...]. The
    wrapped layer's parameters are this layer's parameters; the mask passes through.

    Args:
        layer (Layer): The layer to apply (a fastrnn Layer, else TypeError), e.g. a Dense.
        **kwargs: ``name``, ``trainable``, ``dtype``, ``input_shape`` (see
            :class:`~fastrnn.layers.Layer`); ``trainable=False`` (given or set later) freezes the
            wrapped layer too.

    Call arguments:
        x: Array [B, T, ...].
        training (bool): Keep what ``backward`` needs (default False).
        mask: Passed through (not given to the wrapped layer).

    Input shape:
        [batch, time, ...] (rank >= 3).

    Output shape:
        [batch, time] + the wrapped layer's output shape for one step.

    Example:
        >>> import numpy as np
        >>> from fastrnn import layers
        >>> td = layers.TimeDistributed(layers.Dense(2, seed=0))
        >>> td(np.zeros((4, 5, 3), dtype=np.float32)).shape
        (4, 5, 2)
    """

    _input_rank = (3, None)
    _input_desc = "[batch, time, ...]"

    def __init__(self, layer: Layer, **kwargs: Any) -> None:
        if not isinstance(layer, Layer):
            raise TypeError(f"TimeDistributed: layer must be a Layer, got {type(layer).__name__}")
        super().__init__(**kwargs)
        self.layer = layer
        if not self._trainable:
            layer.trainable = False

    def _wrapped_layers(self):
        return [self.layer]

    def build(self, input_shape: Any) -> None:
        input_shape = tuple(input_shape)
        if len(input_shape) < 2:
            raise ValueError(f"{self._who()}: input shape must be (time, ...), got {input_shape}")
        if not self.layer.built:
            self.layer.build(input_shape[1:])
        self._params = self.layer._params
        super().build(input_shape)

    def _build_from_weights(self, weights):
        self.layer._build_from_weights(weights)
        if self.layer.built:
            self._params = self.layer._params
            self.built = True

    def _build_shape(self, shape):
        return (None,) + tuple(shape[1:])

    def parameters(self) -> list[Parameter]:
        self._ensure_built()
        return self.layer.parameters()

    def _check_input_shape(self, shape):
        self.layer._check_input_shape(tuple(shape[1:]))

    def call(self, x: np.ndarray, training: bool = False, mask: np.ndarray | None = None) -> np.ndarray:
        B, T = x.shape[:2]
        y = self.layer(x.reshape((B * T,) + x.shape[2:]), training=training)
        y = np.asarray(y)
        if training:
            self._cache = (B, T, x.shape)
        return y.reshape((B, T) + y.shape[1:])

    def _backward(self, dy):
        B, T, xshape = self._cache
        dy = np.asarray(dy)
        if dy.shape[:2] != (B, T):
            raise ValueError(f"{self._who()}: dy must start with (batch, time) = {(B, T)}, got shape {dy.shape}")
        dx = self.layer.backward(dy.reshape((B * T,) + dy.shape[2:]))
        return None if dx is None else dx.reshape(xshape)

    def compute_output_shape(self, input_shape: Any) -> Any:
        inner = self.layer.compute_output_shape(tuple(input_shape[1:]))
        return (input_shape[0],) + tuple(inner)

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg["layer"] = serialize(self.layer)
        return cfg

    @classmethod
    def from_config(cls, config: dict) -> Any:
        cfg = dict(config)
        cfg["layer"] = deserialize(cfg["layer"])
        if cfg.get("input_shape") is not None:
            cfg["input_shape"] = tuple(cfg["input_shape"])
        return cls(**cfg)
