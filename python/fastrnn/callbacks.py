"""Training callbacks with Keras semantics: History, EarlyStopping, ModelCheckpoint, LearningRateScheduler,
ReduceLROnPlateau, CSVLogger, TerminateOnNaN.

A callback receives ``set_model(model)`` and ``set_params(params)`` before training, then
``on_train_begin(logs)``, ``on_epoch_begin(epoch, logs)``, ``on_train_batch_begin(batch, logs)``,
``on_train_batch_end(batch, logs)``, ``on_epoch_end(epoch, logs)`` and ``on_train_end(logs)``.
``epoch`` and ``batch`` are 0-based. ``logs`` at epoch end hold ``loss``, the metrics, and
``val_loss`` / ``val_<metric>`` when there is validation data. Setting ``model.stop_training = True``
ends training after the current batch (in ``on_epoch_end``: after the current epoch).
"""
from __future__ import annotations

import csv
import inspect
import math
import os
import warnings
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np

__all__ = [
    "CSVLogger",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "History",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "ReduceLROnPlateau",
    "TerminateOnNaN",
]


class Callback:
    """Base class of the callbacks: every hook does nothing; subclasses override the ones they need.

    ``fit`` calls ``set_model(model)`` and ``set_params(params)`` first, then the hooks (see the
    module docstring); ``self.model`` is the model being trained. Takes no arguments.

    Example:
        >>> import numpy as np
        >>> import fastrnn as fr
        >>> class PrintLoss(fr.callbacks.Callback):
        ...     def on_epoch_end(self, epoch, logs=None):
        ...         print(epoch, sorted(logs))
        >>> model = fr.Sequential([fr.layers.Dense(1, input_shape=(2,), seed=0)])
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> history = model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=2, verbose=0,
        ...                     callbacks=[PrintLoss()])
        0 ['loss']
        1 ['loss']
    """

    def __init__(self) -> None:
        self.model: Any = None  # the Model being trained, set by set_model
        self.params: dict = {}

    def set_model(self, model: Any) -> None:
        """Called by ``fit`` before training with the model being trained.

        Args:
            model: The model (kept as ``self.model``).
        """
        self.model = model

    def set_params(self, params: dict) -> None:
        """Called by ``fit`` before training with its parameters.

        Args:
            params: ``{"epochs", "steps", "verbose", "batch_size", "samples"}`` (kept as
                ``self.params``).
        """
        self.params = params

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Called when training begins.

        Args:
            logs: An empty dict.
        """

    def on_train_end(self, logs: dict | None = None) -> None:
        """Called when training ends.

        Args:
            logs: The last epoch's logs.
        """

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Called at the start of an epoch.

        Args:
            epoch: The 0-based epoch index.
            logs: An empty dict.
        """

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Called at the end of an epoch, after validation.

        Args:
            epoch: The 0-based epoch index.
            logs: ``loss``, the metrics and, with validation data, ``val_loss`` / ``val_<metric>``;
                a callback may add entries (those before History are recorded).
        """

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        """Called before a training batch.

        Args:
            batch: The 0-based batch index within the epoch.
            logs: An empty dict.
        """

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Called after a training batch.

        Args:
            batch: The 0-based batch index within the epoch.
            logs: The running ``loss`` and metrics of the epoch so far (a copy).
        """


class CallbackList:
    """Calls a list of callbacks in order (what ``fit`` uses; ``cbs.on_epoch_end(epoch, logs)``
    calls every callback's hook).

    Args:
        callbacks (Sequence[Callback]): The callbacks (TypeError for anything else).
        model (Model): Handed to each callback's ``set_model``.
        params (dict): Handed to each callback's ``set_params``.
    """

    def __init__(self, callbacks: Sequence[Callback], model: Any, params: dict) -> None:
        self.callbacks = list(callbacks)
        for i, cb in enumerate(self.callbacks):
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks[{i}]: expected a fastrnn.callbacks.Callback, got {type(cb).__name__}")
            cb.set_model(model)
            cb.set_params(params)

    def wants(self, hook: str) -> bool:
        """Whether any callback does something at ``hook`` (overrides Callback's, or was given
        one on the instance): fit skips the per-batch hooks, and the logs they would get, when
        none does.

        Args:
            hook: A hook's name, e.g. ``"on_train_batch_end"``.
        """
        base = getattr(Callback, hook)
        return any(hook in vars(cb) or getattr(type(cb), hook, base) is not base for cb in self.callbacks)

    def __getattr__(self, hook):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def call(*args):
            for cb in self.callbacks:
                getattr(cb, hook)(*args)
        return call


class History(Callback):
    """Records the epoch logs, as Keras's History; ``Model.fit`` returns it.

    ``history.history`` is ``{"loss": [...], "val_loss": [...], ...}`` (one entry per epoch) and
    ``history.epoch`` the epoch indices. Each ``fit`` call returns a new History. Takes no
    arguments.

    Example:
        >>> import numpy as np
        >>> import fastrnn as fr
        >>> model = fr.Sequential([fr.layers.Dense(1, input_shape=(2,), seed=0)])
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> history = model.fit(np.zeros((4, 2)), np.ones((4, 1)), epochs=3, verbose=0, validation_split=0.5)
        >>> history.epoch, sorted(history.history)
        ([0, 1, 2], ['loss', 'val_loss'])
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.epoch = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"

    def plot(self, keys: str | Sequence[str] | None = None, ax: Any = None,
             path: str | os.PathLike | None = None) -> Any:
        """Plot the recorded curves against the epoch (needs matplotlib).

        One panel per quantity: ``loss`` with ``val_loss``, each metric with its ``val_`` twin.

        Args:
            keys: The quantities to plot, by their training name (e.g. ``"loss"`` or
                ``["loss", "accuracy"]``); default all.
            ax: One matplotlib Axes, or a sequence of them (one per panel), to draw into;
                default a new figure.
            path: Also save the figure there (PNG, PDF, ... by the suffix).

        Returns:
            The matplotlib Figure.

        Raises:
            ImportError: matplotlib is not installed.
            ValueError: Nothing recorded yet, an unknown key, or the wrong number of Axes.
        """
        try:
            import matplotlib
        except ImportError:
            raise ImportError("History.plot needs matplotlib: pip install matplotlib (or fastrnn[examples])") from None
        if not self.history:
            raise ValueError("History.plot: nothing recorded yet (fit the model first)")
        names = [k for k in self.history if not k.startswith("val_")]
        names += [k[4:] for k in self.history if k.startswith("val_") and k[4:] not in self.history]
        if keys is not None:
            keys = [keys] if isinstance(keys, str) else list(keys)
            unknown = [k for k in keys if k not in names]
            if unknown:
                raise ValueError(f"keys: {unknown} not recorded; recorded: {names}")
            names = keys
        axes: Any
        if ax is None:
            if path is not None and "matplotlib.pyplot" not in __import__("sys").modules:
                matplotlib.use("Agg")  # saving only: no window needed
            import matplotlib.pyplot as plt

            fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
            axes = list(axes[0])
        else:
            axes = list(ax) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
            if len(axes) != len(names):
                raise ValueError(f"ax: expected {len(names)} Axes (one per quantity {names}), got {len(axes)}")
            fig = axes[0].figure
        epochs = np.asarray(self.epoch) + 1 if len(self.epoch) else None
        for a, name in zip(axes, names):
            for key, style, label in ((name, "o--", "training"), ("val_" + name, "o-", "validation")):
                values = self.history.get(key)
                if values:
                    x = epochs if epochs is not None and len(epochs) == len(values) else np.arange(1, len(values) + 1)
                    a.plot(x, values, style, label=label, markersize=3)
            a.set_title(name)
            a.set_xlabel("epoch")
            a.xaxis.get_major_locator().set_params(integer=True)
            a.grid(alpha=0.3)
            a.legend()
        if ax is None:
            fig.tight_layout()
        if path is not None:
            fig.savefig(os.fspath(path))
        return fig


def _resolve_mode(mode, monitor):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode: expected 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if ("acc" in monitor or monitor.startswith("fmeasure")) else "min"
    return mode


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has not improved for ``patience`` epochs (Keras semantics).

    An epoch improves when the value is better than the best so far by more than ``min_delta``
    (lower for mode 'min', higher for 'max'; 'auto' picks 'max' for accuracies). With
    ``restore_best_weights=True`` the weights of the best epoch are put back when training ends,
    whether it stopped early or ran out of epochs. ``stopped_epoch`` is the 0-based epoch at which
    it stopped (0 if it did not).

    Args:
        monitor (str): The logged quantity to watch (default 'val_loss').
        min_delta (float): The smallest change that counts as an improvement (its absolute value
            is used; default 0).
        patience (int): Epochs without improvement after which training stops (non-negative int,
            default 0).
        verbose (int): 1 prints a message when the callback acts; 0 (default) is silent.
        mode (str): 'min', 'max' or 'auto' (default: 'max' when ``monitor`` names an accuracy,
            i.e. contains 'acc', else 'min').
        baseline (float | None): Training stops if the value does not beat it within ``patience``
            epochs (default None).
        restore_best_weights (bool): Put back the best epoch's weights when training ends
            (default False).
        start_from_epoch (int): Epochs before this one are not monitored (default 0).

    Example:
        >>> import fastrnn as fr
        >>> stop = fr.callbacks.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, verbose: int = 0,
                 mode: str = "auto", baseline: float | None = None, restore_best_weights: bool = False,
                 start_from_epoch: int = 0) -> None:
        super().__init__()
        self.monitor = monitor
        if not isinstance(patience, (int, np.integer)) or isinstance(patience, bool) or patience < 0:
            raise ValueError(f"patience: expected a non-negative int, got {patience!r}")
        self.patience = int(patience)
        self.min_delta = abs(float(min_delta))
        self.verbose = verbose
        self.mode = _resolve_mode(mode, monitor)
        self.baseline = baseline
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)

    def _better(self, a, b):
        if self.mode == "min":
            return a < b - self.min_delta
        return a > b + self.min_delta

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.wait = 0
        self.stopped_epoch = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_weights = None
        self.best_epoch = 0
        self._last_epoch: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._last_epoch = epoch
        current = (logs or {}).get(self.monitor)
        if current is None:
            warnings.warn(
                f"EarlyStopping: the monitored metric '{self.monitor}' is not in the logs "
                f"(available: {sorted(logs or {})}); not stopping", RuntimeWarning, stacklevel=2)
            return
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch
        self.wait += 1
        if self._better(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._better(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None and self.best_epoch != self._last_epoch:
            if self.verbose > 0:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model (or only its weights) at the end of every epoch, or only when ``monitor`` improves.

    ``filepath`` may hold ``str.format`` fields filled from ``epoch`` (1-based, as Keras) and the
    epoch logs, e.g. ``"ckpt-{epoch:02d}-{val_loss:.3f}.fastrnn"`` (KeyError for a field not in the
    logs). Files are written atomically.

    Args:
        filepath (str | os.PathLike): Where to save (a format string, see above).
        monitor (str): The logged quantity that decides "best" (default 'val_loss').
        verbose (int): 1 prints a message when the callback acts; 0 (default) is silent.
        save_best_only (bool): Save only when ``monitor`` improves on the best value so far
            (default False: every epoch; with no ``monitor`` in the logs it warns and skips).
        save_weights_only (bool): ``model.save_weights`` instead of ``model.save`` (default
            False).
        mode (str): 'min', 'max' or 'auto' (default: 'max' when ``monitor`` names an accuracy,
            i.e. contains 'acc', else 'min').
    """

    def __init__(self, filepath: str | os.PathLike, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False, mode: str = "auto") -> None:
        super().__init__()
        self.filepath = os.fsdecode(os.fspath(filepath))  # str, bytes or PathLike
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.mode = _resolve_mode(mode, monitor)
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        try:
            path = self.filepath.format(epoch=epoch + 1, **logs)
        except KeyError as exc:
            raise KeyError(f"ModelCheckpoint: filepath '{self.filepath}' refers to {exc} which is not in the "
                           f"logs {sorted(logs)}") from None
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:
                warnings.warn(f"ModelCheckpoint: can save best model only with '{self.monitor}' available, "
                              f"skipping (logs: {sorted(logs)})", RuntimeWarning, stacklevel=2)
                return
            improved = current < self.best if self.mode == "min" else current > self.best
            if not improved:
                return
            if self.verbose > 0:
                shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")  # a non-UTF-8 name
                print(f"Epoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to {current:.5f}, "
                      f"saving model to {shown}")
            self.best = current
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate at the start of each epoch from ``schedule(epoch, lr)``
    (or ``schedule(epoch)``), as Keras does. The rate used is recorded as ``learning_rate`` in the
    epoch logs. The optimizer must have a float learning rate (not a schedule object).

    Args:
        schedule (Callable): ``schedule(epoch, lr) -> new lr`` or ``schedule(epoch) -> new lr``
            (epoch 0-based, lr the current rate); it must return a finite number.
        verbose (int): 1 prints a message when the callback acts; 0 (default) is silent.

    Example:
        >>> import fastrnn as fr
        >>> halve = fr.callbacks.LearningRateScheduler(lambda epoch, lr: lr if epoch < 5 else lr * 0.5)
    """

    def __init__(self, schedule: Callable[..., float], verbose: int = 0) -> None:
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"schedule: expected a callable, got {type(schedule).__name__}")
        self.schedule = schedule
        self.verbose = verbose
        try:
            n = len([p for p in inspect.signature(schedule).parameters.values()
                     if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
            self._two_args = n >= 2
        except (TypeError, ValueError):
            self._two_args = True

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        opt = self.model.optimizer
        lr = self.schedule(epoch, opt.current_learning_rate) if self._two_args else self.schedule(epoch)
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.integer, np.floating)) or not math.isfinite(lr):
            raise ValueError(f"LearningRateScheduler: the schedule must return a finite number, got {lr!r}")
        opt.learning_rate = float(lr)
        if self.verbose > 0:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {float(lr)}.")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.current_learning_rate)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved for ``patience``
    epochs (Keras semantics).

    An epoch improves when the value beats the best so far by more than ``min_delta`` (lower for
    mode 'min', higher for 'max'; 'auto' picks 'max' for accuracies). After a reduction, ``cooldown``
    epochs pass before the count of epochs without improvement starts again. The rate never goes
    below ``min_lr``. The rate in use is recorded as ``learning_rate`` in the epoch logs. The
    optimizer must have a float learning rate (not a schedule object; TypeError when training
    begins).

    Args:
        monitor (str): The logged quantity to watch (default 'val_loss').
        factor (float): The rate is multiplied by it, in [0, 1) (default 0.1).
        patience (int): Epochs without improvement before a reduction (default 10).
        verbose (int): 1 prints a message when the callback acts; 0 (default) is silent.
        mode (str): 'min', 'max' or 'auto' (default: 'max' when ``monitor`` names an accuracy,
            i.e. contains 'acc', else 'min').
        min_delta (float): The smallest change that counts as an improvement (default 1e-4).
        cooldown (int): Epochs after a reduction before counting resumes (default 0).
        min_lr (float): The lowest rate, a finite number >= 0 (default 0).
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, verbose: int = 0,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0) -> None:
        super().__init__()
        if isinstance(factor, bool) or not isinstance(factor, (int, float, np.integer, np.floating)) \
                or not 0.0 <= float(factor) < 1.0:
            raise ValueError(f"factor: expected a number in [0, 1) (the rate is multiplied by it), got {factor!r}")
        for name, value in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name}: expected a non-negative int, got {value!r}")
        if isinstance(min_lr, bool) or not isinstance(min_lr, (int, float, np.integer, np.floating)) \
                or not math.isfinite(min_lr) or min_lr < 0:
            raise ValueError(f"min_lr: expected a finite number >= 0, got {min_lr!r}")
        self.monitor = monitor
        self.factor = float(factor)
        self.patience = int(patience)
        self.verbose = verbose
        self.mode = _resolve_mode(mode, monitor)
        self.min_delta = abs(float(min_delta))
        self.cooldown = int(cooldown)
        self.min_lr = float(min_lr)
        self._reset()

    def _reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0
        self.cooldown_counter = 0

    def _better(self, a, b):
        if self.mode == "min":
            return a < b - self.min_delta
        return a > b + self.min_delta

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._reset()
        if callable(self.model.optimizer.learning_rate):
            raise TypeError("ReduceLROnPlateau: the optimizer's learning_rate is a schedule object; give it a "
                            "float learning rate to let the callback change it")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        opt = self.model.optimizer
        logs["learning_rate"] = float(opt.current_learning_rate)
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"ReduceLROnPlateau: the monitored metric '{self.monitor}' is not in the logs "
                          f"(available: {sorted(logs)}); the learning rate is unchanged",
                          RuntimeWarning, stacklevel=2)
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._better(current, self.best):
            self.best = current
            self.wait = 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = float(opt.current_learning_rate)
                if old > self.min_lr:
                    new = max(old * self.factor, self.min_lr)
                    opt.learning_rate = new
                    if self.verbose > 0:
                        print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}.")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


class CSVLogger(Callback):
    """Write the epoch logs to a CSV file, one row per epoch (Keras semantics): the column ``epoch``
    (0-based) and then the logged quantities in sorted order. ``append=True`` adds to an existing
    file (without repeating its header); otherwise the file is replaced when training begins. Each
    row is flushed when written, so the file can be read while training runs.

    Args:
        filename (str | os.PathLike): The CSV file.
        separator (str): One character between the fields (default ',').
        append (bool): Add to an existing file instead of replacing it (default False).
    """

    _file: Any
    _writer: Any
    _keys: Any

    def __init__(self, filename: str | os.PathLike, separator: str = ",", append: bool = False) -> None:
        super().__init__()
        self.filename = os.fsdecode(os.fspath(filename))
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"separator: expected one character, got {separator!r}")
        self.separator = separator
        self.append = bool(append)
        self._file = self._writer = self._keys = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        had_rows = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        self._file = open(self.filename, "a" if self.append else "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer, self._keys, self._header_written = None, None, had_rows

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = dict(logs or {})
        if self._keys is None:
            self._keys = sorted(logs)
            self._writer = csv.DictWriter(self._file, fieldnames=["epoch", *self._keys], delimiter=self.separator,
                                          extrasaction="ignore", restval="NA")
            if not self._header_written:
                self._writer.writeheader()
        row = {"epoch": epoch}
        row.update((k, logs.get(k, "NA")) for k in self._keys)
        self._writer.writerow(row)
        self._file.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class TerminateOnNaN(Callback):
    """Stop training as soon as a batch's loss is NaN or infinite (Keras semantics).

    The epoch ends after that batch and no further epoch runs; with this callback ``fit`` does not
    raise FloatingPointError, and the batch's update is not applied. Takes no arguments.
    """

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True
