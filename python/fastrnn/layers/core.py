"""Core layers: Dense, Embedding, Activation, Masking, Input and InputLayer.

The other layers that lived here are defined by concern and re-exported from this module, so
``fastrnn.layers.core.X`` keeps working: Flatten and RepeatVector (``reshaping``), Dropout
(``regularization``), Concatenate (``merging``), TimeDistributed (``wrappers``). The helpers the
layer modules share (``ACTIVATIONS``, ``_activation``, ``_init_name``, ``_Stateless``) live in
``_core_common`` and are importable from here too."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from numpy.typing import ArrayLike

from .. import backend, ops
from .._kernel_cache import POOL
from .._validation import layer_positive_int as _positive_int
from . import _symbolic, initializers
from ._core_common import ACTIVATIONS, _activation, _init_name, _Stateless
from ._core_common import _sigmoid as _sigmoid
from ._core_common import _softmax as _softmax
from .base import Layer, register_layer
from .base import Parameter as Parameter
from .base import deserialize as deserialize
from .base import serialize as serialize
from .merging import Concatenate
from .regularization import Dropout
from .reshaping import Flatten, RepeatVector
from .wrappers import TimeDistributed

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
@register_layer
class Dense(Layer):
    """Fully connected layer on the last axis.

    Computes ``y = activation(x @ kernel + bias)`` with ``kernel`` [in, units] (Keras's layout) and
    ``bias`` [units]. The input may have any rank >= 2 ([B, F], or [B, T, F] where the layer is
    applied at every step); the mask passes through. A training call keeps copies of x and y for
    backward; backward reads the kernel as it is then, so update the parameters after backward (as
    ``fit`` does), not between forward and backward. For float32 NumPy arrays the forward is one
    GEMM that adds the bias and applies linear / relu / tanh / sigmoid as it writes y (tanh and
    sigmoid in the kernels' vector forms, within 4e-7 of NumPy's), and backward accumulates the
    kernel's gradient inside the GEMM and sums the bias gradient from the same GEMM's packed
    blocks of dy. A training output of 1 MiB or more (a language model's logits) is a buffer of
    fastrnn's pool, which it goes back to at the next training call unless the caller still holds
    it.

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
    _per_step = True
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
        out = None
        if training:
            # the last training output goes back to the buffer pool unless someone still holds it,
            # and the new one comes from there (a decoder's logits are large: fresh pages at every
            # step cost page faults); arrays under the pool's minimum size are allocated as before
            if self._cache is not None:
                old, self._cache = self._cache, None
                y_old = old[1]
                del old
                POOL.give(y_old)
                del y_old
            out = POOL.take(x.shape[:-1] + (self.units,))
        # float32 NumPy: bias and activation in the GEMM's write-back (one pass over y)
        y, applied = ops._dense_forward(x, self.kernel.value, self.bias.value if self.use_bias else None,
                                        self.activation, out)
        if y is None:
            y = ops.matmul(x, self.kernel.value)
            if self.use_bias:
                y += self.bias.value
        if not applied:
            y = ACTIVATIONS[self.activation][0](y)
        if training:  # private copies: the caller may change x or the returned y before backward
            # (a linear layer's backward reads only y's shape)
            self._cache = (np.array(x, copy=True), y if self.activation == "linear" else y.copy())
        return y

    def _backward(self, dy):
        x, y = self._cache
        dy = self._check_dy(dy, y.shape)
        dz = ACTIVATIONS[self.activation][1](dy, y)
        dz2 = dz.reshape(-1, self.units)
        # the kernel's gradient accumulated by the GEMM, the bias's from the GEMM's packed dz blocks
        ops._matmul_acc(x.reshape(-1, x.shape[-1]).T, dz2, self.kernel.grad,
                        self.bias.grad if self.use_bias else None)
        return ops.matmul(dz, self.kernel.value.T)

    def _output_is_scratch(self, y: Any) -> bool:
        """Whether ``y`` is this layer's last training output and its backward reads nothing of it
        but its shape (linear): a training step may then overwrite it with the loss gradient."""
        return self.activation == "linear" and self._cache is not None and self._cache[1] is y

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(units=self.units, activation=self.activation, use_bias=self.use_bias,
                   kernel_initializer=self.kernel_initializer, bias_initializer=self.bias_initializer,
                   seed=self.seed)
        return cfg


# ----------------------------------------------------------------------------------------------
def _f32_numpy(a):
    """Whether ``a`` is a float32 C-contiguous NumPy array (what the C++ Embedding kernels take)."""
    return type(a) is np.ndarray and a.dtype == np.float32 and a.flags.c_contiguous


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
    _per_step = True
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
        table = self.embeddings.value
        if _f32_numpy(table):  # the C++ gather (threaded); ids were checked by _convert_input
            y = backend.core().embedding_forward(table, np.ascontiguousarray(x, dtype=np.int64))
        else:
            y = table[x]
        if training:  # a private copy: the caller may change the ids before backward
            self._cache = np.array(x, copy=True)
        return y

    def _backward(self, dy):
        ids = self._cache
        dy = self._check_dy(dy, ids.shape + (self.output_dim,))
        grad = self.embeddings.grad
        if _f32_numpy(grad) and dy.dtype == np.float32:
            # the C++ scatter-add: rows added in order, the same bits as np.add.at for any thread count
            backend.core().embedding_backward(np.ascontiguousarray(ids, dtype=np.int64), np.ascontiguousarray(dy),
                                              grad)
        else:
            np.add.at(grad, ids.ravel(), dy.reshape(-1, self.output_dim))
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

    _per_step = True

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
    _per_step = True

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
