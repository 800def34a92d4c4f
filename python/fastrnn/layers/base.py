"""Parameter, the Layer base class, default layer names and the layer registry used by save/load.

Every layer is NumPy in, NumPy out, with an explicit ``backward``:

    y = layer(x, training=True)      # builds on first call, keeps what backward needs
    dx = layer.backward(dy)          # ACCUMULATES into each Parameter.grad
    for p in layer.parameters(): p.value -= lr * p.grad
    layer.zero_grad()

Input shapes passed to ``build`` and ``compute_output_shape`` exclude the batch dimension.
"""
from __future__ import annotations

import inspect
import re
import threading

import numpy as np

from ..reference._common import zero_one_as_bool
from . import _symbolic

__all__ = [
    "Layer",
    "Parameter",
    "clear_session",
    "deserialize",
    "get_layer_class",
    "register_layer",
    "serialize",
    "unique_name",
]

_SUPPORTED_DTYPES = ("float32", "float64")


def bool_mask(m, who):
    """``m`` (bool, or integers that are all 0 or 1, as the kernels accept) as a bool array."""
    m = np.asarray(m)
    if m.dtype.kind not in "biu":
        raise TypeError(f"{who}: mask must be a boolean (or 0/1) array, got dtype {m.dtype}")
    return zero_one_as_bool(who, m)


class Parameter:
    """A trainable array: ``value`` and the gradient ``grad`` accumulated by ``backward``.

    ``value`` has the owning layer's dtype (float32 unless the layer was made with
    ``dtype="float64"``, which is meant for gradient checks). ``grad`` always has the same shape
    and dtype as ``value``. Optimizers update ``value`` in place and skip parameters whose
    ``trainable`` is False.

    Layers keep work derived from a value across calls (the recurrent layers' step calls keep
    W_hh packed for the kernels) and redo it when the value changes: every write through the API
    counts — :meth:`assign`, ``set_weights``, ``load_weights``, the optimizers, assigning
    ``value`` (``p.value = a``, ``p.value -= lr * p.grad``) and ``touch``. Writing into the
    array by other means (``p.value[...] = a``, ``np.copyto(p.value, a)``, a view kept from
    earlier) is not seen: call :meth:`touch` after such a write.
    """

    __slots__ = ("_value", "_version", "grad", "name", "trainable")

    def __init__(self, name: str, value, trainable: bool = True, dtype=np.float32):
        self._version = 0
        self.name = str(name)
        self.value = np.ascontiguousarray(np.array(value, dtype=dtype))
        self.grad = np.zeros_like(self.value)
        self.trainable = bool(trainable)

    @property
    def value(self):
        """The parameter's array."""
        return self._value

    @value.setter
    def value(self, value) -> None:
        self._value = value
        self._version = getattr(self, "_version", 0) + 1  # (unset while an old pickle's state is restored)

    def touch(self) -> None:
        """Declare that ``value`` changed in place by a write the parameter cannot see (see the class)."""
        self._version += 1

    @property
    def shape(self):
        """Shape of the value."""
        return self.value.shape

    @property
    def dtype(self):
        """dtype of the value."""
        return self.value.dtype

    @property
    def size(self):
        """Number of scalars in the value."""
        return int(self.value.size)

    def zero_grad(self) -> None:
        """Set the gradient to zero (in place)."""
        self.grad[...] = 0

    def assign(self, value) -> None:
        """Copy ``value`` into this parameter in place (ValueError on a shape mismatch)."""
        arr = np.asarray(value)
        if arr.shape != self.value.shape:
            raise ValueError(
                f"parameter '{self.name}': expected a value of shape {self.value.shape}, got shape {arr.shape}"
            )
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"parameter '{self.name}': expected a numeric array, got dtype {arr.dtype}")
        np.copyto(self.value, arr, casting="unsafe")
        self._version += 1

    def __repr__(self) -> str:
        return (f"Parameter({self.name!r}, shape={self.value.shape}, dtype={self.value.dtype}, "
                f"trainable={self.trainable})")


# ----------------------------------------------------------------------------------------------
# default names ("lstm", "lstm_1", ...) as Keras gives them
# ----------------------------------------------------------------------------------------------
_names_lock = threading.Lock()
_name_counters: dict = {}
_used_names: set = set()


def _snake_case(name: str) -> str:
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()


def unique_name(base: str) -> str:
    """A name not handed out before in this session: ``base``, then ``base_1``, ``base_2``, ..."""
    with _names_lock:
        n = _name_counters.get(base, 0)
        while True:
            cand = base if n == 0 else f"{base}_{n}"
            n += 1
            if cand not in _used_names:
                break
        _name_counters[base] = n
        _used_names.add(cand)
        return cand


def _claim_name(name: str) -> None:
    with _names_lock:
        _used_names.add(name)


def clear_session() -> None:
    """Forget the default names handed out so far (the next LSTM is called 'lstm' again)."""
    with _names_lock:
        _name_counters.clear()
        _used_names.clear()


# ----------------------------------------------------------------------------------------------
# registry for get_config / from_config
# ----------------------------------------------------------------------------------------------
_REGISTRY: dict = {}


def refuse_quantized(layer, who: str) -> None:
    """ValueError when ``layer`` is a quantized layer (fastrnn.quantize): exporters and converters
    take float layers, and a quantized layer's parameters are int8 / bf16 arrays, not its weights.

    Args:
        layer: A layer.
        who (str): The calling function's name, for the message.
    """
    mode = getattr(layer, "quant_mode", "")
    if mode:
        raise ValueError(f"{who}: {type(layer).__name__} '{layer.name}' holds {mode} weights (fastrnn.quantize); "
                         "convert the float model instead")


def register_layer(cls):
    """Class decorator: make ``cls`` known to ``get_layer_class`` / ``deserialize`` by its class name."""
    _REGISTRY[cls.__name__] = cls
    return cls


def get_layer_class(name: str):
    """The layer class registered under ``name`` (e.g. 'LSTM'); ValueError for unknown names."""
    if not isinstance(name, str):
        raise TypeError(f"get_layer_class: name must be a str, got {type(name).__name__}")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"get_layer_class: unknown layer class {name!r}; known: {', '.join(sorted(_REGISTRY))}"
        ) from None


def serialize(layer) -> dict:
    """``{"class_name": ..., "config": layer.get_config()}``, JSON-able."""
    if not isinstance(layer, Layer):
        raise TypeError(f"serialize: expected a Layer, got {type(layer).__name__}")
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def deserialize(config: dict):
    """A new (unbuilt) layer from ``serialize``'s output: ``{"class_name": ..., "config": {...}}``."""
    if not isinstance(config, dict) or "class_name" not in config or "config" not in config:
        raise ValueError(
            "deserialize: expected a dict with keys 'class_name' and 'config', got "
            f"{type(config).__name__}{' with keys ' + str(sorted(config)) if isinstance(config, dict) else ''}"
        )
    cls = get_layer_class(config["class_name"])
    return cls.from_config(dict(config["config"]))


# ----------------------------------------------------------------------------------------------
# Layer
# ----------------------------------------------------------------------------------------------
def _constructor_signature(cls):
    """The signature a user sees for ``cls(...)``: its ``__init__``'s parameters, then, where it passes
    ``**kwargs`` on to its base classes, theirs (keyword-only), down to Layer's. A constructor whose
    signature cannot be read (a C extension type) gives None: inspect then falls back as usual."""
    params, seen = [], set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            sig = inspect.signature(init)
        except (TypeError, ValueError):
            return None
        passes_on = False
        for p in list(sig.parameters.values())[1:]:  # without self
            if p.kind is p.VAR_KEYWORD:
                passes_on = True
                continue
            if p.kind is p.VAR_POSITIONAL or p.name in seen:
                continue
            seen.add(p.name)
            if params and klass is not cls and p.kind is not p.KEYWORD_ONLY:
                p = p.replace(kind=p.KEYWORD_ONLY)
            params.append(p)
        root = not any(isinstance(b, _LayerMeta) for b in klass.__bases__)  # Layer itself
        if not passes_on or root:
            break
    # a parameter with a default may not precede one without among the positional ones
    positional = [p for p in params if p.kind is not p.KEYWORD_ONLY]
    keyword = [p for p in params if p.kind is p.KEYWORD_ONLY]
    return inspect.Signature(positional + keyword, __validate_parameters__=False)


class _LayerMeta(type):
    """Builds a layer right after construction when its input shape is known (``input_shape=``),
    and gives each layer class the signature of its constructor (``inspect.signature(LSTM)``
    would otherwise show this metaclass's ``(*args, **kwargs)``)."""

    def __init__(cls, name, bases, namespace, **kwargs):
        super().__init__(name, bases, namespace, **kwargs)
        if "__signature__" not in namespace:
            sig = _constructor_signature(cls)
            if sig is not None:
                cls.__signature__ = sig

    def __call__(cls, *args, **kwargs):
        obj = super().__call__(*args, **kwargs)
        obj._ensure_built()
        return obj


class Layer(metaclass=_LayerMeta):
    """Base class of all layers.

    Subclasses implement ``build(input_shape)`` (create Parameters), ``call(x, training, mask, ...)``
    (compute, and when training store what ``_backward`` needs in ``self._cache``), ``_backward(dy)``
    and ``compute_output_shape``. ``__call__`` converts and checks the input, builds on first use and
    then calls ``call``.

    Arguments common to every layer: ``name`` (default: Keras-style unique name from the class name),
    ``trainable``, ``dtype`` ('float32', or 'float64' for gradient checks) and ``input_shape`` (without
    the batch dimension; when given the layer can be built before it sees data).
    """

    #: accepted input ranks including the batch dim: (min, max) with max None for unbounded
    _input_rank = (2, None)
    #: human-readable description of the expected input, used in error messages
    _input_desc = "[batch, ..., features]"
    #: whether the layer acts on each time step of a [batch, time, ...] input alone (Dense,
    #: Activation, Dropout, Embedding, ...): Sequential.step then runs it on one step at a time
    _per_step = False

    def __init__(self, name=None, trainable=True, dtype="float32", input_shape=None, **kwargs):
        if kwargs:
            raise TypeError(
                f"{type(self).__name__}: unexpected keyword argument(s) {', '.join(sorted(kwargs))}"
            )
        if name is None:
            name = unique_name(getattr(type(self), "_default_name", None) or _snake_case(type(self).__name__))
        else:
            if not isinstance(name, str) or not name:
                raise TypeError(f"{type(self).__name__}: name must be a non-empty str, got {name!r}")
            _claim_name(name)
        self.name = name
        dt = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
        if dt not in _SUPPORTED_DTYPES:
            raise ValueError(f"{type(self).__name__} '{name}': dtype must be 'float32' or 'float64', got {dtype!r}")
        self.dtype = np.dtype(dt)
        self._trainable = bool(trainable)
        if input_shape is not None:
            input_shape = tuple(None if d is None else int(d) for d in input_shape)
        self.input_shape = input_shape
        self._given_input_shape = input_shape
        self.built = False
        self._params: list = []
        self._cache = None

    # -- parameters ----------------------------------------------------------------------------
    def add_parameter(self, attr: str, value, trainable=True) -> Parameter:
        """Create a Parameter named '<layer>/<attr>', store it as ``self.<attr>`` and register it."""
        p = Parameter(f"{self.name}/{attr}", value, trainable=trainable and self._trainable, dtype=self.dtype)
        setattr(self, attr, p)
        self._params.append(p)
        return p

    def _ensure_built(self) -> None:
        if not self.built and self.input_shape is not None:
            self.build(self.input_shape)

    def parameters(self) -> list:
        """The layer's Parameters in a fixed order (the order of get_weights)."""
        self._ensure_built()
        return list(self._params)

    def zero_grad(self) -> None:
        """Zero the gradient of every parameter."""
        for p in self.parameters():
            p.zero_grad()

    def count_params(self) -> int:
        """Number of scalars in the parameters; ValueError when the layer is not built yet."""
        self._ensure_built()
        if not self.built:
            raise ValueError(
                f"{type(self).__name__} '{self.name}': count_params() needs a built layer; call it on data, "
                "call build(input_shape) or pass input_shape= first"
            )
        return int(sum(p.size for p in self.parameters()))

    @property
    def trainable(self) -> bool:
        """Whether the layer's parameters are trained (setting it updates every Parameter)."""
        return self._trainable

    @trainable.setter
    def trainable(self, value) -> None:
        self._trainable = bool(value)
        for inner in self._wrapped_layers():
            inner.trainable = self._trainable
        for p in self.parameters():
            p.trainable = self._trainable

    def _wrapped_layers(self) -> list:
        """Layers this layer wraps (setting ``trainable`` sets theirs too); none by default."""
        return []

    def get_weights(self) -> list:
        """Copies of the parameter values, in ``parameters()`` order."""
        return [p.value.copy() for p in self.parameters()]

    def set_weights(self, weights) -> None:
        """Copy ``weights`` (a list in ``get_weights`` order) into the parameters, in place."""
        weights = list(weights)
        if not self.built and self.input_shape is None:
            self._build_from_weights(weights)
        params = self.parameters()
        if len(weights) != len(params):
            raise ValueError(
                f"{type(self).__name__} '{self.name}': set_weights expected {len(params)} arrays "
                f"({', '.join(p.name for p in params)}), got {len(weights)}{self._weights_hint}"
            )
        for p, w in zip(params, weights):
            if np.shape(w) != p.shape:
                raise ValueError(
                    f"{type(self).__name__} '{self.name}': weight for '{p.name}' must have shape {p.shape}, "
                    f"got {np.shape(w)}{self._weights_hint}"
                )
        for p, w in zip(params, weights):
            p.assign(w)

    # appended to set_weights' errors (layers whose layout differs from Keras's say so here)
    _weights_hint = ""

    def _build_from_weights(self, weights) -> None:
        """Build an unbuilt layer from the shapes of ``weights`` (subclasses that can override this)."""
        raise ValueError(
            f"{type(self).__name__} '{self.name}': set_weights needs a built layer; call build(input_shape) first"
        )

    # -- build / call ----------------------------------------------------------------------------
    def build(self, input_shape) -> None:
        """Create the parameters for inputs of shape ``input_shape`` (batch dimension excluded)."""
        self.input_shape = tuple(input_shape)
        self.built = True

    def _convert_input(self, x):
        """``x`` as an ndarray of the layer's dtype (float64/int/bool converted, others TypeError)."""
        if type(x) is np.ndarray and x.dtype == self.dtype:
            return x
        if isinstance(x, (list, tuple)) and not isinstance(x, np.ndarray):
            try:
                x = np.asarray(x)
            except ValueError as exc:
                raise ValueError(f"{self._who()}: input could not be converted to an array: {exc}") from None
        elif not isinstance(x, np.ndarray):
            if np.isscalar(x):
                x = np.asarray(x)
            else:
                raise TypeError(f"{self._who()}: input must be a numpy array, got {type(x).__name__}")
        if x.dtype.kind not in "biuf":
            raise TypeError(f"{self._who()}: input must be a numeric array, got dtype {x.dtype}")
        return x.astype(self.dtype, copy=False)

    def _who(self) -> str:
        return f"{type(self).__name__} '{self.name}'"

    def _check_rank(self, x) -> None:
        self._check_rank_of(tuple(x.shape))

    def _check_rank_of(self, shape) -> None:
        """ValueError unless ``shape`` (batch axis included) has a rank the layer accepts."""
        lo, hi = self._input_rank
        if len(shape) < lo or (hi is not None and len(shape) > hi):
            want = f"rank {lo}" if hi == lo else (f"rank >= {lo}" if hi is None else f"rank {lo}..{hi}")
            raise ValueError(
                f"{self._who()}: expected input of shape {self._input_desc} ({want}), got shape {tuple(shape)}"
            )

    def _check_input_shape(self, shape) -> None:
        """After build: the feature (last) dimension must match what the layer was built for."""
        built = self.input_shape
        if not built or not shape or built[-1] is None:
            return
        if shape[-1] != built[-1]:
            raise ValueError(
                f"{self._who()}: expected input with {built[-1]} features in the last axis (built for input "
                f"shape (batch,) + {tuple(built)}), got input shape (batch,) + {tuple(shape)}"
            )

    def __call__(self, x, training=False, mask=None, **kwargs):
        """Run the layer on ``x`` (batch first). Builds on first call; keeps the backward cache when training.

        Called on symbolic tensors (``fr.Input``, another layer's symbolic output) it records the call in
        a functional model's graph instead and returns symbolic outputs."""
        # an array with no mask and no other argument is never symbolic: no search through them
        plain = type(x) is np.ndarray and mask is None and not kwargs
        if not plain and _symbolic.is_symbolic(x, mask, kwargs):
            return _symbolic.call_layer(self, x, dict(kwargs, mask=mask))
        x = self._convert_input(x)
        lo, hi = self._input_rank
        if x.ndim < lo or (hi is not None and x.ndim > hi):
            self._check_rank(x)
        if not self.built:
            if self._given_input_shape is not None:
                self.build(self._given_input_shape)
            else:
                self.build(self._build_shape(tuple(x.shape[1:])))
        built = self.input_shape  # the base check inline; a layer's own check always runs
        if (type(self)._check_input_shape is not Layer._check_input_shape
                or (built and x.ndim > 1 and built[-1] is not None and x.shape[-1] != built[-1])):
            self._check_input_shape(tuple(x.shape[1:]))
        if mask is not None:
            mask = self._convert_mask(mask, x)
        return self.call(x, training=bool(training), mask=mask, **kwargs)

    def _symbolic_output_shape(self, input_shape):
        """Build for a symbolic input of shape ``input_shape`` (batch excluded) as a first call on data
        would, check that shape, and return the output shape (a list of shapes for several outputs)."""
        input_shape = tuple(input_shape)
        self._check_rank_of((None,) + input_shape)
        if not self.built:
            self.build(self._given_input_shape if self._given_input_shape is not None
                       else self._build_shape(input_shape))
        self._check_input_shape(input_shape)
        return self.compute_output_shape(input_shape)

    def _build_shape(self, shape):
        """The input shape recorded at build when built from data (subclasses may generalise dims)."""
        return shape

    def _convert_mask(self, mask, x):
        m = np.asarray(mask)
        if m.ndim != 2 or x.ndim < 2 or m.shape != tuple(x.shape[:2]):
            raise ValueError(
                f"{self._who()}: mask must have shape [batch, time] = {tuple(x.shape[:2])}, got {tuple(m.shape)}"
            )
        return bool_mask(m, self._who())

    def call(self, x, training=False, mask=None):
        """The layer's computation on a converted, checked input (override)."""
        raise NotImplementedError

    def backward(self, dy):
        """Gradient w.r.t. the input of the last training forward; ACCUMULATES parameter gradients.

        RuntimeError when no forward with ``training=True`` ran before.
        """
        if self._cache is None:
            raise RuntimeError(
                f"{self._who()}: backward() called before a forward pass with training=True"
            )
        return self._backward(dy)

    def _backward(self, dy):
        raise NotImplementedError

    def _check_dy(self, dy, shape, what="dy"):
        if type(dy) is np.ndarray and dy.dtype == self.dtype and dy.shape == tuple(shape):
            return dy
        dy = np.asarray(dy)
        if dy.dtype.kind not in "biuf":
            raise TypeError(f"{self._who()}: {what} must be a numeric array, got dtype {dy.dtype}")
        if tuple(dy.shape) != tuple(shape):
            raise ValueError(f"{self._who()}: {what} must have shape {tuple(shape)}, got {tuple(dy.shape)}")
        return dy.astype(self.dtype, copy=False)

    # -- shapes and masks -------------------------------------------------------------------------
    def compute_output_shape(self, input_shape):
        """Output shape (batch dimension excluded) for an input shape (batch dimension excluded)."""
        return tuple(input_shape)

    def compute_mask(self, x, mask=None):
        """Mask for this layer's output given its input ``x`` and input mask (default: passed through)."""
        return mask

    # -- config -----------------------------------------------------------------------------------
    def get_config(self) -> dict:
        """JSON-able constructor arguments; ``type(self).from_config(cfg)`` recreates the (unbuilt) layer."""
        cfg = {"name": self.name, "trainable": self._trainable, "dtype": self.dtype.name}
        if self._given_input_shape is not None:
            cfg["input_shape"] = list(self._given_input_shape)
        return cfg

    @classmethod
    def from_config(cls, config: dict):
        """A new layer from ``get_config()``'s output."""
        cfg = dict(config)
        if cfg.get("input_shape") is not None:
            cfg["input_shape"] = tuple(cfg["input_shape"])
        return cls(**cfg)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} built={self.built}>"
