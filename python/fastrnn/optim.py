"""Optimizers over lists of Parameters (``.value``, ``.grad``, ``.trainable``), with Keras semantics.

    opt = Adam(learning_rate=1e-3, clipnorm=1.0)
    opt.step(params)          # params: list of Parameter; reads .grad, updates .value in place

The update rules are Keras 3's (stated per class); where PyTorch differs the docstring says how,
and ``epsilon_style="torch"`` switches Adam/AdamW/RMSprop to PyTorch's epsilon placement. Optimizer
state (slots) is kept per position in the parameter list, so ``step`` must always receive the same
parameters in the same order (a model's ``parameters()`` does); the shapes are checked.

Gradient clipping (at most one of them, as in Keras), applied to copies of the gradients:
  clipnorm         each parameter's gradient g -> g * clipnorm / max(||g||, clipnorm)
  global_clipnorm  all gradients scaled together by global_clipnorm / max(global norm, global_clipnorm)
  clipvalue        each entry clipped to [-clipvalue, clipvalue]

``learning_rate`` is a float, a :class:`LearningRateSchedule` (``ExponentialDecay``,
``StepDecay``) or any callable ``step -> lr``; the schedule is evaluated at ``iterations``, the
number of steps already taken (0 on the first step), as Keras does. The schedules are defined in
:mod:`fastrnn.schedules` and importable from here.

``state_dict()`` returns the configuration (hyperparameters, including a learning rate changed by a
callback), the step count and every slot array (copies); ``load_state_dict`` restores all of it,
so training continues exactly as it would have.

Fused step: when every updated parameter, its gradient and its slots are float32 C-contiguous
NumPy arrays, ``step`` updates all parameters (and computes the clipping norms) in one C++ call
(``fastrnn._core.OptimPlan``: threaded, vectorised, the same float32 operations in the same order
as the NumPy code of ``_update``, so the results equal it to rounding; the norms are summed in
float64 over fixed blocks, the same for any thread count). The arrays are checked once and kept
while the parameters keep the same arrays. Anything else (float64, CuPy arrays, subclasses that
override ``_update`` or ``_clip``) takes the NumPy path, which stays the reference.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from . import backend
from .schedules import _SCHEDULES, ExponentialDecay, LearningRateSchedule, StepDecay, _positive

if TYPE_CHECKING:
    from .layers.base import Parameter

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "ExponentialDecay",
    "LearningRateSchedule",
    "Optimizer",
    "RMSprop",
    "StepDecay",
    "deserialize",
    "get",
    "serialize",
]


# --------------------------------------------------------------------------- base
def _touch(p):
    """Tell a Parameter its value changed in place (any other object with .value and .grad: nothing)."""
    touch = getattr(p, "touch", None)
    if touch is not None:
        touch()


class Optimizer:
    """Base class of the optimizers: learning rate, clipping, slots, step count and state saving.

    Subclasses set ``slot_names`` and implement ``_update(i, p, w, g, lr, t)``, which returns the
    new value of parameter ``i`` (``p`` the Parameter, ``w`` its value, ``g`` its clipped
    gradient, ``t`` the 1-based step). Every optimizer takes the arguments below.

    Args:
        learning_rate (float | Callable | None): A float >= 0, a :class:`LearningRateSchedule`
            or any callable ``step -> lr``; None: the class's default (Keras's).
        lr (float | Callable | None): Alias of ``learning_rate`` (keyword only; not both).
        clipnorm (float | None): Clip each parameter's gradient to this norm.
        clipvalue (float | None): Clip each gradient entry to [-clipvalue, clipvalue].
        global_clipnorm (float | None): Scale all gradients together so that their global norm
            is at most this. At most one of the three clipping arguments may be given.
        params (Sequence[Parameter] | None): The parameters ``step()`` and ``zero_grad()`` use
            when called without any (PyTorch style); default None: pass them to ``step``.
        name (str | None): The optimizer's name; default the class name in lower case.
    """

    slot_names: tuple = ()
    default_learning_rate = 0.001

    def __init__(self, learning_rate: float | Callable[[int], float] | None = None, *,
                 lr: float | Callable[[int], float] | None = None,
                 clipnorm: float | None = None, clipvalue: float | None = None, global_clipnorm: float | None = None,
                 params: Sequence[Parameter] | None = None, name: str | None = None) -> None:
        if lr is not None and learning_rate is not None:
            raise ValueError("learning_rate: give learning_rate or its alias lr, not both")
        if learning_rate is None:
            learning_rate = self.default_learning_rate if lr is None else lr
        self._set_lr(learning_rate, "learning_rate")
        given = [n for n, v in (("clipnorm", clipnorm), ("clipvalue", clipvalue),
                                ("global_clipnorm", global_clipnorm)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"Only one of clipnorm, clipvalue and global_clipnorm can be set; got {given}")
        self.clipnorm = None if clipnorm is None else _positive(clipnorm, "clipnorm")
        self.clipvalue = None if clipvalue is None else _positive(clipvalue, "clipvalue")
        self.global_clipnorm = None if global_clipnorm is None else _positive(global_clipnorm, "global_clipnorm")
        self.name = name or type(self).__name__.lower()
        self.iterations = 0
        self._slots: dict | None = None  # {slot name: [array per parameter]}
        self._params = None if params is None else list(params)
        self._fused_cache = None  # (slots dict, [(value, grad, trainable)], OptimPlan) of the fused step

    # -- learning rate
    def _set_lr(self, value, argname):
        if callable(value):
            self._lr = value
        else:
            self._lr = _positive(value, argname, allow_zero=True)

    @property
    def learning_rate(self) -> float | Callable[[int], float]:
        """The learning rate as given: a float, or the schedule object."""
        return self._lr

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        if callable(self._lr):
            raise TypeError(
                "learning_rate: this optimizer was created with a learning-rate schedule, so its learning "
                "rate is not settable"
            )
        self._set_lr(value, "learning_rate")

    lr = learning_rate

    @property
    def current_learning_rate(self) -> float:
        """The learning rate the next step will use (the schedule evaluated at ``iterations``)."""
        return float(self._lr(self.iterations)) if callable(self._lr) else float(self._lr)

    # -- steps
    def _resolve(self, params):
        if params is None:
            if self._params is None:
                raise ValueError("params: step() needs the list of parameters (none was given to the constructor)")
            params = self._params
        params = list(params)
        for i, p in enumerate(params):
            if not (hasattr(p, "value") and hasattr(p, "grad")):
                raise TypeError(f"params[{i}]: expected a Parameter with .value and .grad, got {type(p).__name__}")
        return params

    def _ensure_slots(self, params):
        shapes = [tuple(np.shape(p.value)) for p in params]
        if self._slots is None:
            self._slots = {s: [np.zeros(sh, dtype=np.asarray(p.value).dtype) for sh, p in zip(shapes, params)]
                           for s in self.slot_names}
            return
        for s, arrs in self._slots.items():
            if len(arrs) != len(params):
                raise ValueError(
                    f"params: this optimizer holds state for {len(arrs)} parameters but step() got {len(params)}; "
                    "pass the same parameters in the same order every step"
                )
            for i, (a, sh) in enumerate(zip(arrs, shapes)):
                if a.shape != sh:
                    raise ValueError(
                        f"params[{i}]: shape {sh} does not match the optimizer state's shape {a.shape} (slot '{s}')"
                    )

    def _clip(self, grads):
        if self.clipvalue is not None:
            return [None if g is None else np.clip(g, -self.clipvalue, self.clipvalue) for g in grads]
        if self.clipnorm is not None:
            out = []
            for g in grads:
                if g is None:
                    out.append(None)
                    continue
                n = float(np.sqrt(np.sum(np.square(g, dtype=np.float64))))
                out.append(g * (self.clipnorm / max(n, self.clipnorm)) if n > self.clipnorm else g)
            return out
        if self.global_clipnorm is not None:
            n = math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads if g is not None))
            if n > self.global_clipnorm:
                scale = self.global_clipnorm / n
                return [None if g is None else g * scale for g in grads]
        return grads

    def step(self, params: Sequence[Parameter] | None = None) -> None:
        """Apply one update to every trainable parameter from its ``.grad`` (values change in place).

        Args:
            params: The parameters, always the same ones in the same order (the optimizer's slots
                are kept by position); default those given to the constructor.

        Raises:
            ValueError: A gradient's shape differs from its value's (raised before any parameter
                or slot changes), or the parameters do not match the slots.
        """
        params = self._resolve(params)
        if self._use_fused and self._fused_step(params):
            return
        self._ensure_slots(params)
        grads = []
        for p in params:
            if not getattr(p, "trainable", True) or p.grad is None:
                grads.append(None)
            else:
                grads.append(np.asarray(p.grad, dtype=np.asarray(p.value).dtype))
        # check every gradient before updating anything, so a bad one leaves all parameters untouched
        for i, (p, g) in enumerate(zip(params, grads)):
            if g is not None and g.shape != np.shape(p.value):
                raise ValueError(f"params[{i}]: grad shape {g.shape} differs from value shape {np.shape(p.value)}")
        grads = self._clip(grads)
        lr = self.current_learning_rate
        t = self.iterations + 1
        for i, (p, g) in enumerate(zip(params, grads)):
            if g is None:
                continue
            new = self._update(i, p, np.asarray(p.value), g, lr, t)
            p.value[...] = new
            _touch(p)
        self.iterations = t

    # -- the fused step (C++); the NumPy code above is its reference
    #: False: always the NumPy path (for comparisons); a class attribute, so load_state_dict keeps it
    _use_fused = True
    #: the kernel's optimizer kind (0 SGD, 1 RMSprop, 2 Adam) or None: no fused step
    _fused_kind: int | None = None
    #: slot names in the kernel's slots s0, s1, s2 (None: unused)
    _fused_slots: tuple = (None, None, None)

    def _fused_scalars(self, lr, t):  # pragma: no cover - abstract
        """(flags dict, scalars dict) of OptimPlan.step for this configuration."""
        raise NotImplementedError

    def _decays(self, p):
        return False

    def _fused_rule_unchanged(self):
        cls = type(self)
        return cls._update is getattr(cls, "_fused_update", None) and cls._clip is Optimizer._clip

    def _fused_plan(self, params):
        cache = self._fused_cache
        if cache is not None and cache[0] is self._slots and len(cache[1]) == len(params):
            for p, (v, g, tr) in zip(params, cache[1]):
                if p.value is not v or p.grad is not g or bool(getattr(p, "trainable", True)) is not tr:
                    break
            else:
                return cache[2]
        self._fused_cache = None
        if not self._fused_rule_unchanged():
            return None  # a subclass with its own rule: the NumPy path runs it
        for p in params:
            if type(p.value) is not np.ndarray or p.value.dtype != np.float32:
                return None
        self._ensure_slots(params)
        active = [i for i, p in enumerate(params) if getattr(p, "trainable", True) and p.grad is not None]

        def ok(a, shape):
            return (type(a) is np.ndarray and a.dtype == np.float32 and a.flags.c_contiguous and a.shape == shape)

        for i in active:
            w, g = params[i].value, params[i].grad
            if not (ok(w, w.shape) and w.flags.writeable and ok(g, w.shape)):
                return None
        slot_lists = []
        for name in self._fused_slots:
            if name is None or name not in self._slots:
                slot_lists.append([])
                continue
            arrs = [self._slots[name][i] for i in active]
            if not all(ok(a, params[i].value.shape) and a.flags.writeable for a, i in zip(arrs, active)):
                return None
            slot_lists.append(arrs)
        decay = [int(self._decays(params[i])) for i in active]
        plan = backend.core().OptimPlan(self._fused_kind, [params[i].value for i in active],
                                        [params[i].grad for i in active], *slot_lists,
                                        decay if any(decay) else [])
        self._fused_cache = (self._slots, [(p.value, p.grad, bool(getattr(p, "trainable", True))) for p in params],
                             plan)
        return plan

    def __getstate__(self):
        # the fused step's plan (C++ pointers to the arrays) is not copied: a copy builds its own
        state = self.__dict__.copy()
        state["_fused_cache"] = None
        return state

    def _fused_step(self, params):
        if self._fused_kind is None:
            return False
        plan = self._fused_plan(params)
        if plan is None:
            return False
        if self.clipvalue is not None:
            clip, clip_arg = 1, self.clipvalue
        elif self.clipnorm is not None:
            clip, clip_arg = 2, self.clipnorm
        elif self.global_clipnorm is not None:
            clip, clip_arg = 3, self.global_clipnorm
        else:
            clip, clip_arg = 0, 0.0
        t = self.iterations + 1
        flags, scalars = self._fused_scalars(self.current_learning_rate, t)
        args = {"nesterov": False, "momentum": False, "centered": False, "torch_eps": False, "amsgrad": False,
                "a": 0.0, "b": 0.0, "c": 0.0, "d": 0.0, "e": 0.0, "f": 1.0, "h": 1.0, "decay": 0.0}
        args.update(flags)
        args.update(scalars)
        plan.step(clip=clip, clip_arg=float(clip_arg), **args)
        for p in params:  # (the plan skipped the others)
            if getattr(p, "trainable", True) and p.grad is not None:
                _touch(p)
        self.iterations = t
        return True

    def zero_grad(self, params: Sequence[Parameter] | None = None) -> None:
        """Set every parameter's gradient to zero.

        Args:
            params: The parameters; default those given to the constructor.
        """
        for p in self._resolve(params):
            if p.grad is not None:
                p.grad[...] = 0

    def _update(self, i, p, w, g, lr, t):  # pragma: no cover - abstract
        raise NotImplementedError

    # -- data-parallel hooks, called by the training loops (fit, train_on_batch): nothing to do in
    #    one process; fastrnn.distributed.DistributedOptimizer implements them
    _is_root = True     # this process logs and saves
    _world_size = 1     # the number of data-parallel ranks

    def _begin_training(self, model, input_shape):
        """Before a model's first training step (the distributed one broadcasts rank 0's weights)."""

    def _begin_step(self, model, weight):
        """After the loss, before the backward pass; ``weight``: the step's number of loss entries."""

    def _idle_step(self, model):
        """Take part in a step without data of one's own (a shard that ran out; a skipped batch)."""

    def _agree(self, value, op):
        """``value`` reduced over the ranks with ``op`` ('max' / 'min'): the same on every rank."""
        return value

    def _training_callbacks(self, callbacks):
        """The callbacks fit runs (the distributed one puts its metric averaging first)."""
        return list(callbacks)

    def _unwrap(self):
        """The optimizer that is saved (a wrapper saves the optimizer it wraps)."""
        return self

    # -- config and state
    def _hyper(self):
        return {}

    def get_config(self) -> dict:
        """JSON-able hyperparameters (the learning rate as a float or a schedule config)."""
        lr = self._lr
        if isinstance(lr, LearningRateSchedule):
            lr = {"class_name": type(lr).__name__, "config": lr.get_config()}
        elif callable(lr):
            raise ValueError(
                "learning_rate: a plain callable learning rate cannot be serialized; use ExponentialDecay, "
                "StepDecay or a LearningRateSchedule subclass"
            )
        cfg = {"name": self.name, "learning_rate": lr, "clipnorm": self.clipnorm, "clipvalue": self.clipvalue,
               "global_clipnorm": self.global_clipnorm}
        cfg.update(self._hyper())
        return cfg

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> Optimizer:
        """Recreate from ``get_config()``'s dict.

        Args:
            config: ``get_config()``'s dict.
            custom_objects: ``{class name: class}`` for custom schedule classes.
        """
        config = dict(config)
        lr = config.get("learning_rate")
        if isinstance(lr, dict):
            name = lr.get("class_name")
            sched = (custom_objects or {}).get(name) or _SCHEDULES.get(name)
            if sched is None:
                raise ValueError(f"learning_rate: unknown schedule class '{name}'")
            config["learning_rate"] = sched.from_config(lr.get("config", {}))
        return cls(**config)

    def state_dict(self) -> dict:
        """Everything needed to continue identically: class, config, step count and slot arrays (copies)."""
        slots = {} if self._slots is None else {k: [a.copy() for a in v] for k, v in self._slots.items()}
        return {"class_name": type(self).__name__, "config": self.get_config(), "iterations": int(self.iterations),
                "slots": slots}

    def load_state_dict(self, state: dict, custom_objects: dict | None = None) -> None:
        """Restore ``state_dict()``'s output (hyperparameters, step count and slots).

        Args:
            state: The dict :meth:`state_dict` returned (for an optimizer of the same class).
            custom_objects: ``{class name: class}`` for a custom learning-rate schedule in it.

        Raises:
            ValueError: The dict is malformed or was saved for another optimizer class.
        """
        if not isinstance(state, dict) or not {"class_name", "config", "iterations", "slots"} <= set(state):
            raise ValueError("state: expected a dict from Optimizer.state_dict() with keys "
                             "class_name, config, iterations, slots")
        if state["class_name"] != type(self).__name__:
            raise ValueError(f"state: saved for a {state['class_name']} optimizer, cannot load into "
                             f"{type(self).__name__}")
        fresh = type(self).from_config(state["config"], custom_objects=custom_objects)
        slots = state["slots"]
        if slots:
            if set(slots) != set(fresh.slot_names):
                raise ValueError(f"state: slots {sorted(slots)} do not match the {type(self).__name__} "
                                 f"configuration's slots {sorted(fresh.slot_names)}")
            lens = {len(v) for v in slots.values()}
            if len(lens) != 1:
                raise ValueError("state: slot lists have different lengths")
            new_slots = {k: [np.array(a, copy=True) for a in v] for k, v in slots.items()}
        else:
            new_slots = None if fresh.slot_names else {}
        iterations = int(state["iterations"])
        if iterations < 0:
            raise ValueError(f"state: iterations must be >= 0, got {iterations}")
        params = self._params
        self.__dict__.update(fresh.__dict__)
        self._params = params
        self._slots = new_slots
        self.iterations = iterations

    def __repr__(self):
        cfg = self.get_config() if not (callable(self._lr) and not isinstance(self._lr, LearningRateSchedule)) else {}
        args = ", ".join(f"{k}={v!r}" for k, v in cfg.items() if v is not None and k != "name")
        return f"{type(self).__name__}({args})"


def _check_unit(value, argname, closed_top=False):
    value = _positive(value, argname, allow_zero=True)
    if value > 1 or (value == 1 and not closed_top):
        raise ValueError(f"{argname}: expected a number in [0, {'1]' if closed_top else '1)'}, got {value}")
    return value


def _check_eps_style(style):
    if style not in ("keras", "torch"):
        raise ValueError(f"epsilon_style: expected 'keras' or 'torch', got {style!r}")
    return style


# --------------------------------------------------------------------------- optimizers
class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, Keras 3 rule:

        v = momentum * v - lr * g
        w = w + v                               (nesterov=False)
        w = w + momentum * v - lr * g           (nesterov=True)

    With a constant learning rate this equals PyTorch's SGD (dampening 0), whose buffer is ``-v / lr``.
    Keras defaults: learning_rate=0.01, momentum=0.

    Args:
        learning_rate (float | Callable | None): Default 0.01 (see :class:`Optimizer`).
        momentum (float): In [0, 1] (default 0: plain SGD).
        nesterov (bool): Nesterov momentum (default False).
        **kwargs: ``lr``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``, ``params``, ``name``
            (see :class:`Optimizer`).

    Example:
        >>> import numpy as np
        >>> from fastrnn import optim
        >>> from fastrnn.layers import Parameter
        >>> p = Parameter("w", np.array([1.0, 2.0]))
        >>> p.grad[...] = [1.0, -1.0]
        >>> optim.SGD(learning_rate=0.1).step([p])
        >>> [round(float(v), 4) for v in p.value]          # w - lr * g
        [0.9, 2.1]
    """

    default_learning_rate = 0.01

    @property
    def slot_names(self):
        return ("momentum",) if self.momentum > 0 else ()

    def __init__(self, learning_rate: float | Callable[[int], float] | None = None,
                 momentum: float = 0.0, nesterov: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(learning_rate, **kwargs)
        self.momentum = _check_unit(momentum, "momentum", closed_top=True)
        self.nesterov = bool(nesterov)

    _fused_kind = 0
    _fused_slots = ("momentum", None, None)

    def _fused_scalars(self, lr, t):
        return ({"momentum": self.momentum > 0, "nesterov": self.nesterov}, {"a": lr, "b": self.momentum})

    def _update(self, i, p, w, g, lr, t):
        if self.momentum == 0:
            return w - lr * g
        v = self._slots["momentum"][i]
        v[...] = self.momentum * v - lr * g
        if self.nesterov:
            return w + self.momentum * v - lr * g
        return w + v

    def _hyper(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov}

    _fused_update = _update


class RMSprop(Optimizer):
    """RMSprop, Keras 3 rule (defaults learning_rate=0.001, rho=0.9, epsilon=1e-7):

        s = rho * s + (1 - rho) * g**2
        mg = rho * mg + (1 - rho) * g;  d = s - mg**2        (centered=True; else d = s)
        inc = lr * g / sqrt(d + eps)                          (epsilon_style="keras")
        inc = lr * g / (sqrt(d) + eps)                        (epsilon_style="torch", as torch.optim.RMSprop)
        m = momentum * m + inc; w -= m                        (momentum > 0; else w -= inc)

    PyTorch's ``alpha`` is ``rho`` here (its default is 0.99, eps 1e-8).

    Args:
        learning_rate (float | Callable | None): Default 0.001 (see :class:`Optimizer`).
        rho (float): Decay of the squared-gradient average, in [0, 1) (default 0.9).
        momentum (float): In [0, 1] (default 0).
        epsilon (float): >= 0 (default 1e-7).
        centered (bool): Divide by the gradient's estimated variance instead of its second
            moment (default False).
        epsilon_style (str): 'keras' (default) or 'torch' (PyTorch's epsilon placement, above).
        **kwargs: ``lr``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``, ``params``, ``name``
            (see :class:`Optimizer`).
    """

    @property
    def slot_names(self):
        return (("velocity",) + (("average_gradient",) if self.centered else ())
                + (("momentum",) if self.momentum > 0 else ()))

    def __init__(self, learning_rate: float | Callable[[int], float] | None = None,
                 rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, centered: bool = False, epsilon_style: str = "keras",
                 **kwargs: Any) -> None:
        super().__init__(learning_rate, **kwargs)
        self.rho = _check_unit(rho, "rho")
        self.momentum = _check_unit(momentum, "momentum", closed_top=True)
        self.epsilon = _positive(epsilon, "epsilon", allow_zero=True)
        self.centered = bool(centered)
        self.epsilon_style = _check_eps_style(epsilon_style)

    _fused_kind = 1
    _fused_slots = ("velocity", "average_gradient", "momentum")

    def _fused_scalars(self, lr, t):
        return ({"centered": self.centered, "momentum": self.momentum > 0, "torch_eps": self.epsilon_style == "torch"},
                {"a": lr, "b": self.rho, "c": 1 - self.rho, "d": self.momentum, "e": self.epsilon})

    def _update(self, i, p, w, g, lr, t):
        s = self._slots["velocity"][i]
        s[...] = self.rho * s + (1 - self.rho) * g * g
        d = s
        if self.centered:
            mg = self._slots["average_gradient"][i]
            mg[...] = self.rho * mg + (1 - self.rho) * g
            d = s - mg * mg
        if self.epsilon_style == "keras":
            inc = lr * g / np.sqrt(d + self.epsilon)
        else:
            inc = lr * g / (np.sqrt(d) + self.epsilon)
        if self.momentum > 0:
            m = self._slots["momentum"][i]
            m[...] = self.momentum * m + inc
            return w - m
        return w - inc

    def _hyper(self):
        return {"rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon, "centered": self.centered,
                "epsilon_style": self.epsilon_style}

    _fused_update = _update


class Adam(Optimizer):
    """Adam, Keras 3 rule (defaults learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7):

        m = m + (1 - beta_1) * (g - m);  v = v + (1 - beta_2) * (g**2 - v)
        vh = max(vh, v) if amsgrad else v
        epsilon_style="keras":  w -= lr * sqrt(1 - beta_2**t) / (1 - beta_1**t) * m / (sqrt(vh) + eps)
        epsilon_style="torch":  w -= lr * (m / (1 - beta_1**t)) / (sqrt(vh / (1 - beta_2**t)) + eps)

    Keras adds epsilon to ``sqrt(v)`` before bias correction (the paper's "epsilon hat"); PyTorch
    adds it after (use epsilon=1e-8 with epsilon_style="torch" to match torch.optim.Adam exactly).

    Args:
        learning_rate (float | Callable | None): Default 0.001 (see :class:`Optimizer`).
        beta_1 (float): Decay of the first moment, in [0, 1) (default 0.9).
        beta_2 (float): Decay of the second moment, in [0, 1) (default 0.999).
        epsilon (float): >= 0 (default 1e-7).
        amsgrad (bool): Use the maximum of the second moments (default False).
        epsilon_style (str): 'keras' (default) or 'torch' (PyTorch's epsilon placement, above).
        **kwargs: ``lr``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``, ``params``, ``name``
            (see :class:`Optimizer`).
    """

    @property
    def slot_names(self):
        return ("m", "v", "vhat") if self.amsgrad else ("m", "v")

    def __init__(self, learning_rate: float | Callable[[int], float] | None = None,
                 beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, amsgrad: bool = False, epsilon_style: str = "keras",
                 **kwargs: Any) -> None:
        super().__init__(learning_rate, **kwargs)
        self.beta_1 = _check_unit(beta_1, "beta_1")
        self.beta_2 = _check_unit(beta_2, "beta_2")
        self.epsilon = _positive(epsilon, "epsilon", allow_zero=True)
        self.amsgrad = bool(amsgrad)
        self.epsilon_style = _check_eps_style(epsilon_style)

    _fused_kind = 2
    _fused_slots = ("m", "v", "vhat")

    def _fused_rule_unchanged(self):
        return super()._fused_rule_unchanged() and type(self)._adam is Adam._adam

    def _fused_scalars(self, lr, t):
        c1 = 1 - self.beta_1 ** t
        c2 = 1 - self.beta_2 ** t
        flags = {"amsgrad": self.amsgrad, "torch_eps": self.epsilon_style == "torch"}
        scalars = {"b": 1 - self.beta_1, "c": 1 - self.beta_2, "e": self.epsilon}
        if self.epsilon_style == "keras":
            scalars["a"] = lr * math.sqrt(c2) / c1
        else:
            scalars.update(a=lr, f=c1, h=c2)
        return flags, scalars

    def _adam(self, i, w, g, lr, t):
        m, v = self._slots["m"][i], self._slots["v"][i]
        m += (1 - self.beta_1) * (g - m)
        v += (1 - self.beta_2) * (g * g - v)
        vh = v
        if self.amsgrad:
            vh = self._slots["vhat"][i]
            np.maximum(vh, v, out=vh)
        c1 = 1 - self.beta_1 ** t
        c2 = 1 - self.beta_2 ** t
        if self.epsilon_style == "keras":
            return w - (lr * math.sqrt(c2) / c1) * m / (np.sqrt(vh) + self.epsilon)
        return w - lr * (m / c1) / (np.sqrt(vh / c2) + self.epsilon)

    def _update(self, i, p, w, g, lr, t):
        return self._adam(i, w, g, lr, t)

    def _hyper(self):
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon, "amsgrad": self.amsgrad,
                "epsilon_style": self.epsilon_style}

    _fused_update = _update


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), Keras 3 / PyTorch rule:

        w = w - lr * weight_decay * w        (before the Adam update, which uses the same g)
        then the Adam update above.

    Keras's default weight_decay is 0.004 (PyTorch's 0.01). ``exclude_from_weight_decay`` is a list
    of substrings: parameters whose ``name`` contains one are not decayed (e.g. ``["b"]`` for biases).

    Args:
        learning_rate (float | Callable | None): Default 0.001 (see :class:`Optimizer`).
        weight_decay (float): >= 0 (default 0.004, as Keras).
        beta_1 (float): As :class:`Adam` (default 0.9).
        beta_2 (float): As :class:`Adam` (default 0.999).
        epsilon (float): As :class:`Adam` (default 1e-7).
        amsgrad (bool): As :class:`Adam` (default False).
        epsilon_style (str): 'keras' (default) or 'torch' (PyTorch's epsilon placement, above).
        exclude_from_weight_decay (Sequence[str] | None): Substrings of the names of the
            parameters not to decay (a Parameter's name is '<layer>/<attribute>').
        **kwargs: ``lr``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``, ``params``, ``name``
            (see :class:`Optimizer`).
    """

    def __init__(self, learning_rate: float | Callable[[int], float] | None = None,
                 weight_decay: float = 0.004, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7, amsgrad: bool = False, epsilon_style: str = "keras",
                 exclude_from_weight_decay: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, amsgrad=amsgrad,
                         epsilon_style=epsilon_style, **kwargs)
        self.weight_decay = _positive(weight_decay, "weight_decay", allow_zero=True)
        self.exclude_from_weight_decay = list(exclude_from_weight_decay or [])

    def _decays(self, p):
        name = str(getattr(p, "name", ""))
        return bool(self.weight_decay) and not any(s in name for s in self.exclude_from_weight_decay)

    def _fused_scalars(self, lr, t):
        flags, scalars = super()._fused_scalars(lr, t)
        scalars["decay"] = lr * self.weight_decay
        return flags, scalars

    def _update(self, i, p, w, g, lr, t):
        if self._decays(p):
            w = w - lr * self.weight_decay * w
        return self._adam(i, w, g, lr, t)

    def _hyper(self):
        cfg = super()._hyper()
        cfg.update(weight_decay=self.weight_decay, exclude_from_weight_decay=list(self.exclude_from_weight_decay))
        return cfg

    _fused_update = _update


_OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}
_CLASSES = {c.__name__: c for c in _OPTIMIZERS.values()}


def get(identifier: str | Optimizer | dict) -> Optimizer:
    """An Optimizer from a name, an Optimizer or a config dict.

    Args:
        identifier: "sgd", "rmsprop", "adam" or "adamw" (any case; Keras's defaults), an
            Optimizer (returned as is) or a :func:`serialize` dict.

    Returns:
        The Optimizer.
    """
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        cls = _OPTIMIZERS.get(identifier.lower())
        if cls is None:
            raise ValueError(f"optimizer: unknown optimizer '{identifier}'; expected one of {sorted(_OPTIMIZERS)} "
                             "or an Optimizer object")
        return cls()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    raise TypeError(f"optimizer: expected a str or Optimizer, got {type(identifier).__name__}")


def serialize(optimizer: Optimizer) -> dict:
    """``{"class_name", "config"}`` for an optimizer (its hyperparameters, not its state).

    Args:
        optimizer: The optimizer.

    Returns:
        The JSON-able dict.
    """
    optimizer = optimizer._unwrap()
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}


def deserialize(config: dict, custom_objects: dict | None = None) -> Optimizer:
    """Inverse of :func:`serialize`.

    Args:
        config: :func:`serialize`'s dict.
        custom_objects: ``{class name: class}`` for custom optimizer and schedule classes.

    Returns:
        A new Optimizer.
    """
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"optimizer config: expected a dict with 'class_name', got {config!r}")
    name = config["class_name"]
    cls = (custom_objects or {}).get(name) or _CLASSES.get(name)
    if cls is None:
        raise ValueError(f"optimizer config: unknown optimizer class '{name}'")
    return cls.from_config(config.get("config", {}), custom_objects=custom_objects)
