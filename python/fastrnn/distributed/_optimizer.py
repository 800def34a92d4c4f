"""DistributedOptimizer, broadcast_parameters, allreduce and MetricAverageCallback."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import numpy as np

from .. import optim
from ..callbacks import Callback, CSVLogger
from ..layers.base import Parameter
from . import _world
from ._buckets import BucketReducer

_OPS = ("average", "sum", "max", "min")


def _is_device_array(a):
    return type(a).__module__.startswith("cupy")


def _params_of(model_or_params, argname):
    if hasattr(model_or_params, "parameters") and callable(model_or_params.parameters):
        model = model_or_params
        if hasattr(model, "built") and not model.built:
            raise ValueError(f"{argname}: the model is not built yet; call model.build(input_shape) or run it on a "
                             "batch first (fit does this itself)")
        return list(model.parameters())
    params = list(model_or_params)
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise TypeError(f"{argname}[{i}]: expected a fastrnn Parameter, got {type(p).__name__}")
    return params


def broadcast_parameters(model: Any, root: int = 0) -> None:
    """Overwrite every rank's parameter values with rank ``root``'s (in place).

    ``fit`` and ``train_on_batch`` do this by themselves the first time they train a model with a
    :class:`DistributedOptimizer`; call it for custom training loops.

    Args:
        model: A built model, or a list of Parameters (the same on every rank).
        root: The rank whose values are kept (default 0).

    Raises:
        ValueError: The model is not built, or ``root`` is not a rank.
    """
    comm = _world.world()
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < comm.size:
        raise ValueError(f"root: expected a rank in [0, {comm.size}), got {root!r}")
    params = _params_of(model, "model")
    shapes = comm.bcast_object([(tuple(p.value.shape), str(p.value.dtype)) for p in params], int(root))
    mine = [(tuple(p.value.shape), str(p.value.dtype)) for p in params]
    if shapes != mine:
        raise ValueError(f"model: rank {comm.rank}'s parameters {mine} differ from rank {root}'s {shapes}; "
                         "every rank must build the same model")
    for p in params:
        if _is_device_array(p.value):
            host = p.value.get()
            comm.bcast_array(host, int(root))
            p.value.set(host)  # a CuPy array: back to the device
        else:
            comm.bcast_array(p.value, int(root))
        p.touch()


def allreduce(array: Any, op: str = "average") -> np.ndarray:
    """Reduce an array over the ranks; every rank gets the result (a new array).

    Args:
        array: A numeric array (or anything ``np.asarray`` takes), the same shape on every rank.
        op: 'average' (default, in float64 for integer input), 'sum', 'max' or 'min'.

    Returns:
        The reduced array, same shape.

    Raises:
        ValueError: ``op`` is not one of the four.
    """
    if op not in _OPS:
        raise ValueError(f"op: expected one of {_OPS}, got {op!r}")
    comm = _world.world()
    a = np.asarray(array)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"array: expected a numeric array, got dtype {a.dtype}")
    if op == "average" and a.dtype.kind != "f":
        a = a.astype(np.float64)
    buf = np.array(a, copy=True, order="C")
    comm.allreduce(buf, "sum" if op == "average" else op)
    if op == "average":
        buf /= buf.dtype.type(comm.size)
    return buf


class DistributedOptimizer(optim.Optimizer):
    """Wrap any fastrnn optimizer so that gradients are averaged over the ranks before its update.

    Use it as the optimizer of ``compile``; every rank then takes the same step, and the weights
    stay identical. The averaging happens before the wrapped optimizer's clipping, so
    ``clipnorm`` / ``global_clipnorm`` see the global gradient (as Horovod and PyTorch DDP).

    * The average is weighted by each rank's number of loss entries in the step (under ``fit``
      and ``train_on_batch``), so a step equals one process stepping on the union of the ranks'
      batches, also with uneven shards; called from a custom loop without them, every rank
      weighs 1.
    * Gradients travel in a few contiguous buckets of ``bucket_bytes`` (in ``wire_dtype``),
      summed in place by MPI (NumPy parameters) or NCCL (CuPy parameters, see ``_nccl``). With
      ``overlap=True`` each bucket's reduction starts when the backward pass of a ``Sequential``
      or functional model has finished its layers, while the earlier layers' backward runs.
    * The first ``fit`` / ``train_on_batch`` broadcasts rank 0's weights and optimizer state.
    * ``save`` writes on rank 0 only, storing the wrapped optimizer (the file loads in one process).

    Args:
        optimizer (Optimizer | str): The optimizer to wrap (an object or a name such as 'adam').
        bucket_bytes (int): The largest bucket in bytes (default 4 MiB).
        wire_dtype (str | None): The dtype the gradients travel in (default 'float32'); None:
            the parameters' own.
        overlap (bool): Start the buckets during the backward pass (default True).

    Example:
        mpiexec -n 2 python train.py, where train.py does::

            import fastrnn.distributed as dist
            dist.init()
            model.compile(optimizer=dist.DistributedOptimizer(optim.Adam()), loss="mse")
            model.fit(*dist.shard(x, y), batch_size=64, epochs=5)
    """

    def __init__(self, optimizer: optim.Optimizer | str, *, bucket_bytes: int = 4 << 20,
                 wire_dtype: str | None = "float32", overlap: bool = True) -> None:
        inner = optim.get(optimizer)
        if isinstance(inner, DistributedOptimizer):
            raise TypeError("optimizer: already a DistributedOptimizer")
        if isinstance(bucket_bytes, bool) or not isinstance(bucket_bytes, (int, np.integer)) or bucket_bytes < 1:
            raise ValueError(f"bucket_bytes: expected an int >= 1, got {bucket_bytes!r}")
        if wire_dtype is not None and np.dtype(wire_dtype).kind != "f":
            raise ValueError(f"wire_dtype: expected a floating dtype or None, got {wire_dtype!r}")
        object.__setattr__(self, "optimizer", inner)
        self.bucket_bytes = int(bucket_bytes)
        self.wire_dtype = None if wire_dtype is None else np.dtype(wire_dtype).name
        self.overlap = bool(overlap)
        self._reducer = None
        self._device_comm = None
        self._synced: set = set()

    # -- delegation to the wrapped optimizer
    def __getattr__(self, name: str) -> Any:
        if name == "optimizer":  # during unpickling, before __init__'s attributes exist
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    @property
    def learning_rate(self) -> float | Callable[[int], float]:
        """The wrapped optimizer's learning rate (settable, as there)."""
        return self.optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self.optimizer.learning_rate = value

    lr = learning_rate

    @property
    def iterations(self) -> int:
        """The wrapped optimizer's step count."""
        return self.optimizer.iterations

    @iterations.setter
    def iterations(self, value: int) -> None:
        self.optimizer.iterations = value

    @property
    def current_learning_rate(self) -> float:
        """The learning rate the next step will use."""
        return self.optimizer.current_learning_rate

    @property
    def name(self) -> str:
        """The wrapped optimizer's name."""
        return self.optimizer.name

    def get_config(self) -> dict:
        """The wrapped optimizer's config."""
        return self.optimizer.get_config()

    def state_dict(self) -> dict:
        """The wrapped optimizer's state (identical on every rank)."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict, custom_objects: dict | None = None) -> None:
        """Load into the wrapped optimizer.

        Args:
            state: The dict :meth:`state_dict` returned.
            custom_objects: As :meth:`Optimizer.load_state_dict`.
        """
        self.optimizer.load_state_dict(state, custom_objects=custom_objects)

    def _unwrap(self):
        return self.optimizer

    def __repr__(self):
        return f"DistributedOptimizer({self.optimizer!r})"

    # -- the reduction
    @property
    def _comm(self):
        return _world.world()

    def _reducer_for(self, params):
        key = BucketReducer.layout_key(params)
        if self._reducer is None or self._reducer.key != key:
            trainable = [p for p in params if getattr(p, "trainable", True) and p.grad is not None]
            on_device = any(_is_device_array(p.grad) for p in trainable)
            if on_device:
                if self._device_comm is None:
                    from ._nccl import NcclComm

                    self._device_comm = NcclComm(self._comm)
                comm, xp = self._device_comm, self._device_comm.cupy
            else:
                comm, xp = self._comm, np
            wire = None if self.wire_dtype is None else np.dtype(self.wire_dtype)
            self._reducer = BucketReducer(params, comm, self.bucket_bytes, wire, xp)
        return self._reducer

    def step(self, params: Sequence[Parameter] | None = None) -> None:
        """Average the gradients over the ranks (in place), then let the wrapped optimizer step.

        Args:
            params: The parameters, the same on every rank and every step; default those given to
                the wrapped optimizer's constructor.
        """
        params = self.optimizer._resolve(params)
        if self._comm.size > 1:
            self._reducer_for(params).finish()
        self.optimizer.step(params)

    def zero_grad(self, params: Sequence[Parameter] | None = None) -> None:
        """Zero the gradients (as the wrapped optimizer).

        Args:
            params: The parameters; default those given to the wrapped optimizer's constructor.
        """
        self.optimizer.zero_grad(params)

    # -- the hooks of the training loops
    @property
    def _world_size(self):
        return self._comm.size

    @property
    def _is_root(self):
        return self._comm.rank == 0

    def _begin_training(self, model, input_shape):
        comm = self._comm
        if comm.size == 1:
            return
        if not model.built and input_shape is not None:
            model.build(input_shape)
        if id(model) not in self._synced:
            broadcast_parameters(model, 0)
            state = comm.bcast_object(self.optimizer.state_dict(), 0)
            if comm.rank != 0:
                self.optimizer.load_state_dict(state)
            self._synced.add(id(model))
        model._grad_ready_hook = self._layer_done if self.overlap else None

    def _layer_done(self, layer):
        if self._reducer is not None:
            self._reducer.grads_ready(layer.parameters())

    def _begin_step(self, model, weight):
        if self._comm.size > 1:
            self._reducer_for(model.parameters()).start(weight)

    def _idle_step(self, model):
        if self._comm.size == 1:
            return
        model.zero_grad()
        self._begin_step(model, 0.0)
        self.step(model.parameters())

    def _agree(self, value, op):
        if self._comm.size == 1:
            return value
        buf = np.array([value], dtype=np.int64)
        self._comm.allreduce(buf, op)
        return int(buf[0])

    def _training_callbacks(self, callbacks):
        comm = self._comm
        if comm.size == 1:
            return list(callbacks)
        mine = [cb for cb in callbacks if isinstance(cb, MetricAverageCallback)]
        rest = [cb for cb in callbacks if not isinstance(cb, MetricAverageCallback)]
        if comm.rank != 0:  # rank 0 logs: a CSVLogger on every rank would write one file N times
            rest = [cb for cb in rest if not isinstance(cb, CSVLogger)]
        return (mine or [MetricAverageCallback()]) + rest


class MetricAverageCallback(Callback):
    """Replace the epoch's logs by their average over the ranks, weighted by each rank's samples.

    ``fit`` with a :class:`DistributedOptimizer` on several ranks puts one first among the
    callbacks (it adds one, or moves the one given to the front), so that every later callback
    (EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, History) sees the same global figures on
    every rank and takes the same decision. Training logs weigh by the rank's training samples,
    ``val_`` logs by its validation samples. Takes no arguments.
    """

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Average ``logs`` in place over the ranks.

        Args:
            epoch: The epoch (0-based).
            logs: The epoch's logs (changed in place).
        """
        if logs is None:
            return
        comm = _world.world()
        if comm.size == 1:
            return
        keys = sorted(k for k, v in logs.items() if isinstance(v, (int, float, np.number)))
        theirs = comm.bcast_object(keys, 0)
        if theirs != keys:
            raise RuntimeError(f"MetricAverageCallback: rank {comm.rank} logs {keys}, rank 0 logs {theirs}")
        w_train = float(self.params.get("samples") or 1)
        w_val = float(self.params.get("val_samples") or 1)
        buf = np.array([float(logs[k]) * (w_val if k.startswith("val_") else w_train) for k in keys]
                       + [w_train, w_val], dtype=np.float64)
        comm.allreduce(buf, "sum")
        for i, k in enumerate(keys):
            logs[k] = float(buf[i] / (buf[-1] if k.startswith("val_") else buf[-2]))
