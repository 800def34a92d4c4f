"""The training loops shared by every model: input checks, ``train_on_batch``, ``fit`` (with
validation, callbacks, a progress bar and truncated BPTT), ``evaluate`` and ``predict``.

:class:`TrainingLoops` is a mixin of :class:`fastrnn.models.Model`; it relies only on the model's
``__call__``, ``backward``, ``layers``, ``parameters``, ``zero_grad`` and on what ``compile``
sets (``optimizer``, ``loss``, ``compiled_metrics``).

Truncated BPTT (``fit(..., tbptt=k)``): every batch is cut along the time axis (axis 1 of x) into
chunks of k steps that are run one after another, each recurrent layer carrying its state from
one chunk to the next (``carry_state=True``; states reset at every batch start) with gradients
stopped at chunk boundaries. Gradients of all chunks are accumulated and the optimizer takes ONE
step per batch.

* Sequence outputs ``[B, T, ...]`` (``return_sequences=True`` + ``TimeDistributed(Dense)``):
  each chunk's loss is the sum over its valid steps, and the accumulated gradient is divided by the
  number of valid steps of the whole batch, so the gradient equals exactly one forward/backward of
  the whole sequence with every recurrent layer's ``bptt_steps=k`` (and the reported loss equals the
  full-sequence loss).
* Many-to-one outputs (the last recurrent layer returns only its final state): the earlier chunks
  are only run forward, to carry the state; the loss and the backward pass come from the last
  chunk alone. This too equals one pass with ``bptt_steps=k``: the gradient of the final output
  reaches back only through the last chunk (the one holding step T-1).
* Dropout masks are drawn per chunk (each chunk is a separate forward call).
* Layers that run backwards in time (``go_backwards=True``, ``Bidirectional``) are refused: a
  reversed layer would see only its own chunk's future.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike
from tqdm.auto import tqdm

from . import _crossentropy, _random
from . import callbacks as callbacks_module
from ._kernel_cache import POOL
from ._validation import positive_int as _positive_int
from .layers import base as layers_base

if TYPE_CHECKING:
    from .callbacks import Callback, History

__all__ = ["TrainingLoops"]


class _NonFiniteLoss(FloatingPointError):
    """A batch's loss is NaN or infinite (fit turns it into FloatingPointError, or stops training
    when a TerminateOnNaN callback is given)."""

    def __init__(self, value, message):
        super().__init__(message)
        self.value = value


def _class_weights_to_sample_weights(y, class_weight, argname="class_weight"):
    """Keras's class_weight: one weight per sample, that of its class (the argmax of a one-hot or
    probability row, else the rounded label); classes missing from the dict weigh 1."""
    if not isinstance(class_weight, dict):
        raise TypeError(f"{argname}: expected a dict mapping class indices to weights, got "
                        f"{type(class_weight).__name__}")
    for k, v in class_weight.items():
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise ValueError(f"{argname}: keys must be class indices (int), got {k!r}")
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
            raise ValueError(f"{argname}: the weight of class {k} must be a finite number, got {v!r}")
    y = np.asarray(y)
    if y.ndim > 2:
        raise ValueError(f"{argname}: supported for targets of shape [batch] or [batch, classes] only, got "
                         f"{y.shape} (give sample_weight per step instead)")
    if y.ndim == 2:
        y = np.argmax(y, axis=-1) if y.shape[-1] > 1 else y[:, 0]
    ids = np.round(y.astype(np.float64)).astype(np.int64)
    return np.array([float(class_weight.get(int(c), 1.0)) for c in ids], dtype=np.float64)


def _check_verbose(verbose):
    """fit / evaluate / predict's ``verbose``: 0, 1, 2 or 'auto' (which is 1)."""
    if verbose not in (0, 1, 2, "auto"):
        raise ValueError(f"verbose: expected 0, 1, 2 or 'auto', got {verbose!r}")
    return 1 if verbose == "auto" else verbose


def _to_array(a, argname):
    if type(a).__module__.startswith("cupy"):
        a = a.get()
    if isinstance(a, (list, tuple)):
        try:
            a = np.asarray(a)
        except ValueError as exc:
            raise ValueError(f"{argname}: could not be converted to an array: {exc}") from None
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{argname}: expected a numpy array, got {type(a).__name__}")
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{argname}: expected a numeric array, got dtype {a.dtype}")
    if a.ndim == 0:
        raise ValueError(f"{argname}: expected an array with a batch axis, got a scalar")
    if a.shape[0] == 0:
        raise ValueError(f"{argname}: got no samples (shape {a.shape})")
    return a


def _is_array(a):
    return isinstance(a, np.ndarray) or type(a).__module__.startswith("cupy")


def _is_multi_input(x):
    """A list or tuple of arrays: one model input per entry (Keras's multi-input convention).
    Nested Python lists of numbers stay one input."""
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(_is_array(a) for a in x)


def _is_shape_list(shape):
    """A list of input shapes (a multi-input model) rather than one shape."""
    return isinstance(shape, (list, tuple)) and len(shape) > 0 and all(isinstance(s, (list, tuple)) for s in shape)


def _n_samples(x):
    return x[0].shape[0] if isinstance(x, list) else x.shape[0]


def _take(x, idx):
    """Rows ``idx`` of an input (every array of a multi-input list)."""
    return [a[idx] for a in x] if isinstance(x, list) else x[idx]


def _input_shape_of(x):
    if _is_multi_input(x):
        return [tuple(np.shape(a)[1:]) for a in x]
    return tuple(np.shape(x)[1:])



def _fmt_shape(shape):
    if shape and isinstance(shape[-1], (list, tuple)):  # several outputs (return_state)
        return "[" + ", ".join(_fmt_shape((None,) + tuple(s)) for s in shape[-1]) + "]"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _walk_layers(obj, out, seen):
    """Collect Layer instances from attributes (and lists/tuples/dicts of them), in order, once each."""
    if isinstance(obj, layers_base.Layer):
        if id(obj) not in seen:
            seen.add(id(obj))
            out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _walk_layers(v, out, seen)
    elif isinstance(obj, dict):
        for v in obj.values():
            _walk_layers(v, out, seen)


def _sublayers(layer):
    """The layers wrapped by ``layer`` (TimeDistributed.layer, Bidirectional's two directions)."""
    subs = []
    for attr in ("layer", "forward_layer", "backward_layer"):
        sub = getattr(layer, attr, None)
        if isinstance(sub, layers_base.Layer) and sub is not layer:
            subs.append(sub)
    return subs


def _all_layers(roots):
    out, seen, stack = [], set(), list(roots)[::-1]
    while stack:
        lay = stack.pop()
        if id(lay) in seen:
            continue
        seen.add(id(lay))
        out.append(lay)
        stack.extend(_sublayers(lay)[::-1])
    return out


class TrainingLoops:
    """fit / evaluate / predict / train_on_batch and the input checks behind them (a Model mixin)."""

    # a model that takes one array only (a list of arrays is stacked into one); see _check_x
    _single_input = False

    # ------------------------------------------------------------------ input checks
    def _expected_input_shape(self):
        if self._build_input_shape is not None:
            return self._build_input_shape
        lays = self.layers
        if lays and lays[0].input_shape is not None:
            return tuple(lays[0].input_shape)
        return None

    def _check_x(self, x, argname="x"):
        want = self._expected_input_shape()
        recorded = self._build_input_shape  # what a successful call or build saw (None before)
        if _is_multi_input(x) and not self._single_input and not (
                recorded is not None and not _is_shape_list(recorded)):
            # several inputs (a model that ran on one array before takes lists as one input)
            want = recorded
            xs = [_to_array(a, f"{argname}[{i}]") for i, a in enumerate(x)]
            if want is not None and len(want) != len(xs):
                raise ValueError(f"{argname}: the model takes {len(want)} inputs, got a list of {len(xs)} arrays")
            for i, a in enumerate(xs):
                if a.shape[0] != xs[0].shape[0]:
                    raise ValueError(f"{argname}: every input must have the same number of samples (first axis): "
                                     f"{argname}[0] has {xs[0].shape[0]}, {argname}[{i}] has {a.shape[0]}")
                if want is not None and a.ndim != len(want[i]) + 1:
                    raise ValueError(f"{argname}[{i}]: expected rank {len(want[i]) + 1} input of shape (batch,) + "
                                     f"{_fmt_shape(want[i])}, got rank {a.ndim} with shape {a.shape}")
            return xs
        x = _to_array(x, argname)
        if want is not None and _is_shape_list(want):
            raise ValueError(f"{argname}: the model takes {len(want)} inputs; pass a list of {len(want)} arrays")
        if want is not None and x.ndim != len(want) + 1:
            one = x.ndim == len(want) and all(w is None or w == d for w, d in zip(want, x.shape))
            raise ValueError(
                f"{argname}: expected rank {len(want) + 1} input of shape (batch,) + {_fmt_shape(want)}, got "
                f"rank {x.ndim} with shape {x.shape}"
                + (f" (one sample? {argname}[None] adds the batch axis)" if one else "")
            )
        return x

    def _check_xy(self, x, y, xname="x", yname="y") -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
        x = self._check_x(x, xname)
        y = _to_array(y, yname)
        if _n_samples(x) != y.shape[0]:
            raise ValueError(
                f"{xname} and {yname} must have the same number of samples (first axis): {xname} has "
                f"{_n_samples(x)}, {yname} has {y.shape[0]}"
            )
        return x, y

    # ------------------------------------------------------------------ training
    def _recurrent_layers(self):
        return [lay for lay in _all_layers(self.layers) if hasattr(lay, "carry_state") and hasattr(lay, "reset_states")]

    @contextlib.contextmanager
    def _carrying_state(self):
        rec = self._recurrent_layers()
        for lay in _all_layers(self.layers):
            if getattr(lay, "go_backwards", False) or hasattr(lay, "backward_layer"):
                raise ValueError(
                    f"tbptt: layer '{lay.name}' ({type(lay).__name__}) runs backwards in time; truncated BPTT "
                    "in chunks needs every recurrent layer to run forward (a reversed layer would see only its "
                    "own chunk)"
                )
        if not rec:
            raise ValueError("tbptt: the model has no recurrent layer to carry state between chunks")
        saved = [(lay, lay.carry_state) for lay in rec]
        try:
            for lay in rec:
                lay.carry_state = True
                if not getattr(lay, "stateful", False):
                    lay.reset_states()
            yield
        finally:
            for lay, c in saved:
                lay.carry_state = c
                if not getattr(lay, "stateful", False):
                    lay.reset_states()

    def _check_loss(self, value, where):
        if not math.isfinite(value):
            raise _NonFiniteLoss(value,
                f"fit: the loss became {value} at {where}; training stopped before this batch's update "
                "(try a lower learning rate, gradient clipping such as clipnorm=1.0, or check the data for NaN/Inf)"
            )

    def _outputs_for_loss(self, xb, yb, training):
        """(predictions, mask) that the loss compares with ``yb``: the model's output on ``xb`` and its
        ``output_mask``. Models whose forward needs the targets too (teacher forcing) override this."""
        return self(xb, training=training), self.output_mask

    def _output_layer(self):
        """The layer whose output is the model's and whose backward receives the loss gradient
        first, or None when that is not known (Sequential overrides it)."""
        return None

    def _output_is_scratch(self, y_pred):
        """Whether the training step may overwrite ``y_pred`` with its loss gradient: no metric
        reads it after the loss, the loss takes it (SparseCategoricalCrossentropy on float32
        NumPy), and the layer that made it reads only its shape in backward (a linear Dense)."""
        if self.compiled_metrics:
            return False
        head = self._output_layer()
        return (isinstance(self.loss, _crossentropy.SparseCategoricalCrossentropy) and head is not None
                and getattr(head, "_output_is_scratch", lambda y: False)(y_pred))

    def _step_full(self, xb, yb, where, swb=None):
        y_pred, mask = self._outputs_for_loss(xb, yb, True)
        if isinstance(y_pred, (tuple, list)):
            raise ValueError("fit: the model's output must be a single array (a layer with return_state=True "
                             "cannot be the last layer)")
        # the gradient of the mean (the fused crossentropies scale it in their kernel's pass; the
        # sparse one writes it over the logits when nothing reads them afterwards)
        if self._output_is_scratch(y_pred):
            total, count, dmean = self.loss._sum_and_mean_grad(yb, y_pred, mask, swb, into=y_pred)
        else:
            total, count, dmean = self.loss._sum_and_mean_grad(yb, y_pred, mask, sample_weight=swb)
        value = total / count if count else 0.0
        self._check_loss(value, where)
        self.optimizer._begin_step(self, count)
        self.backward(dmean)
        if _crossentropy.grad_from_pool(dmean):
            # the fused loss's own pooled buffer, held by nobody else: back to the pool for the
            # next step (no fresh pages)
            POOL.give(dmean)
        for m in self.compiled_metrics:
            m.update_state(yb, y_pred, mask)
        return value

    def _step_tbptt(self, xb, yb, k, where, swb=None):
        if isinstance(xb, list):
            raise ValueError("tbptt: truncated BPTT cuts one input array along time; this model takes several")
        T = xb.shape[1] if xb.ndim >= 2 else 1
        if xb.ndim < 2:
            raise ValueError(f"tbptt: x must have a time axis [batch, steps, ...], got shape {xb.shape}")
        bounds = [(s, min(s + k, T)) for s in range(0, T, k)]
        seq_mode = None
        total_sum, total_count = 0.0, 0
        with self._carrying_state():
            for ci, (s, e) in enumerate(bounds):
                y_pred = self(xb[:, s:e], training=True)
                if isinstance(y_pred, (tuple, list)):
                    raise ValueError("fit: the model's output must be a single array")
                if seq_mode is None:
                    seq_mode = (y_pred.ndim >= 3 and y_pred.shape[1] == e - s and yb.ndim >= 2
                                and yb.shape[1] == T)
                last = ci == len(bounds) - 1
                if not seq_mode and not last:
                    continue  # many-to-one: earlier chunks only carry the state forward
                mask = self.output_mask
                yt = yb[:, s:e] if seq_mode else yb
                wt = swb[:, s:e] if swb is not None and seq_mode and swb.ndim >= 2 else swb
                csum, ccount, dsum = self.loss.sum_and_grad(yt, y_pred, mask, sample_weight=wt)
                self._check_loss(csum / ccount if ccount else 0.0, f"{where}, chunk {ci + 1} (steps {s}..{e - 1})")
                self.backward(dsum)
                if _crossentropy.grad_from_pool(dsum):
                    POOL.give(dsum)
                total_sum += csum
                total_count += ccount
                for m in self.compiled_metrics:
                    m.update_state(yt, y_pred, mask)
        if total_count:
            scale = 1.0 / total_count
            for p in self.parameters():
                p.grad *= p.grad.dtype.type(scale)
        self.optimizer._begin_step(self, total_count)
        return total_sum / total_count if total_count else 0.0

    def _running_logs(self, loss_sum, loss_n):
        """fit's logs so far in the epoch: the mean loss and the metrics."""
        out = {"loss": loss_sum / loss_n}
        out.update({m.name: m.result() for m in self.compiled_metrics})
        return out

    def _zero_grads(self, params):
        """Zero the gradients before an update (``params``: what ``parameters()`` returned)."""
        self.zero_grad()

    def _train_step(self, xb, yb, tbptt, where, swb=None, stop_on_nan=False):
        """One update; with ``stop_on_nan`` a non-finite loss returns it without the update
        (TerminateOnNaN then stops fit) instead of raising FloatingPointError. The parameters are
        looked up once, for zeroing their gradients and for the optimizer, when the model is built
        (else again after the forward, which builds it)."""
        built = self.built
        params = self.parameters()
        self._zero_grads(params)
        try:
            if tbptt is None:
                value = self._step_full(xb, yb, where, swb)
            else:
                value = self._step_tbptt(xb, yb, tbptt, where, swb)
        except _NonFiniteLoss as exc:
            if not stop_on_nan:
                raise FloatingPointError(str(exc)) from None
            self.optimizer._idle_step(self)  # the other data-parallel ranks still step
            return exc.value
        self.optimizer.step(params if built else self.parameters())
        return value

    def _sample_weight_array(self, y, sample_weight, class_weight, argname="sample_weight"):
        """The per-sample (or per-entry) weights of fit / evaluate / train_on_batch as a float64
        array whose first axis is the samples, or None."""
        w = None
        if sample_weight is not None:
            w = np.asarray(sample_weight)
            if w.dtype == object or not (np.issubdtype(w.dtype, np.number) or w.dtype == np.bool_):
                raise TypeError(f"{argname}: expected a numeric array, got dtype {w.dtype}")
            w = w.astype(np.float64)
            if w.ndim < 1 or w.shape[0] != y.shape[0]:
                raise ValueError(f"{argname}: expected one weight per sample, shape ({y.shape[0]},) or "
                                 f"({y.shape[0]}, steps), got {w.shape}")
            if not np.all(np.isfinite(w)):
                raise ValueError(f"{argname}: weights must be finite")
        if class_weight is not None:
            cw = _class_weights_to_sample_weights(y, class_weight)
            w = cw if w is None else w * cw.reshape((-1,) + (1,) * (w.ndim - 1))
        return w

    def _check_stateful_batches(self, n, batch_size, what):
        """Stateful recurrent layers carry their state from one batch to the next, so every batch
        must have the same size (as Keras requires): refused before any update, naming the sizes."""
        if n % batch_size == 0:
            return
        stateful = [lay.name for lay in self._recurrent_layers() if getattr(lay, "stateful", False)]
        if stateful:
            raise ValueError(
                f"fit: the stateful layer(s) {', '.join(repr(s) for s in stateful)} carry their state from "
                f"batch to batch, so every batch must have batch_size={batch_size} samples, but the {n} {what} "
                f"samples leave a last batch of {n % batch_size}; give a batch_size that divides {n} (or a "
                f"multiple of {batch_size} samples)"
            )

    def train_on_batch(self, x: ArrayLike | list[ArrayLike], y: ArrayLike, tbptt: int | None = None, *,
                       sample_weight: ArrayLike | None = None, class_weight: dict | None = None
                       ) -> float | list[float]:
        """One optimizer step on one batch.

        After it returns, each Parameter's ``grad`` holds that batch's gradient. Metrics are reset
        first, so they describe this batch alone.

        Args:
            x: The inputs [B, ...] (a list of arrays for a model with several inputs).
            y: The targets [B, ...].
            tbptt: Truncated BPTT in chunks of this many steps, as in :meth:`fit`.
            sample_weight: Weights of the samples' losses, as in :meth:`fit`.
            class_weight: ``{class index: weight}``, as in :meth:`fit`.

        Returns:
            The loss, or ``[loss, metric1, ...]`` when compiled with metrics.

        Raises:
            RuntimeError: The model is not compiled.
            FloatingPointError: The loss is NaN or Inf (the update is not applied).
        """
        self._assert_compiled("train_on_batch")
        x, y = self._check_xy(x, y)
        if tbptt is not None:
            tbptt = _positive_int(tbptt, "tbptt")
        sw = self._sample_weight_array(y, sample_weight, class_weight)
        self.optimizer._begin_training(self, _input_shape_of(x))
        for m in self.compiled_metrics:
            m.reset_state()
        value = self._train_step(x, y, tbptt, "train_on_batch", sw)
        if not self.compiled_metrics:
            return value
        return [value] + [m.result() for m in self.compiled_metrics]

    def fit(self, x: ArrayLike | list[ArrayLike], y: ArrayLike, batch_size: int | None = None, epochs: int = 1,
            verbose: int | str = 1,
            callbacks: list[Callback] | None = None, validation_split: float = 0.0,
            validation_data: tuple | None = None, shuffle: bool = True, initial_epoch: int = 0,
            seed: int | None = None, tbptt: int | None = None, *, sample_weight: ArrayLike | None = None,
            class_weight: dict | None = None) -> History:
        """Train the model for a number of epochs, as Keras's ``fit``.

        Each batch is one forward, backward and optimizer step. Setting ``model.stop_training`` in a
        callback ends training after the current batch (the epoch's validation and
        ``on_epoch_end`` still run).

        Args:
            x: The inputs [n, ...] (a list of arrays for a model with several inputs).
            y: The targets [n, ...].
            batch_size: Samples per step (default 32).
            epochs: The epoch to stop before (training runs epochs ``initial_epoch .. epochs - 1``);
                default 1.
            verbose: 0 silent, 1 (or 'auto') a tqdm progress bar per epoch, 2 one line per epoch.
            callbacks: :class:`~fastrnn.callbacks.Callback` objects; the returned History is added
                after them.
            validation_split: Fraction in [0, 1) of the samples held out for validation: the LAST
                ones, taken before shuffling (as Keras), with their sample weights.
            validation_data: ``(x_val, y_val)`` or ``(x_val, y_val, sample_weight_val)``; takes
                precedence over ``validation_split``.
            shuffle: Reshuffle the training samples every epoch (default True).
            initial_epoch: The epoch to start at (for resuming); default 0.
            seed: Seed of the shuffling generator; None draws it from fastrnn's global generator
                (which :func:`fastrnn.set_seed` seeds).
            tbptt: Truncated BPTT: run every batch in chunks of this many time steps, carrying the
                recurrent states between chunks (see the module docstring); None (default) runs
                whole sequences.
            sample_weight: One weight per sample [n] (or per sample and step [n, T] for sequence
                outputs) multiplying its loss. The loss is Keras's weighted mean,
                ``sum(w * loss) / number of entries``; metrics are unweighted.
            class_weight: ``{class index: weight}``: each sample is weighted by its class (the
                argmax of one-hot / probability targets, else the label; missing classes weigh 1).
                With ``sample_weight`` too, the weights multiply.

        Returns:
            A :class:`~fastrnn.callbacks.History` (also kept as ``model.history``).

        Raises:
            RuntimeError: The model is not compiled.
            FloatingPointError: The loss became NaN or Inf (the message names the epoch and batch;
                the offending update is not applied), unless a
                :class:`~fastrnn.callbacks.TerminateOnNaN` callback is given: then training stops
                there.
        """
        self._assert_compiled("fit")
        x, y = self._check_xy(x, y)
        batch_size = 32 if batch_size is None else _positive_int(batch_size, "batch_size")
        epochs = _positive_int(epochs, "epochs", allow_zero=True)
        initial_epoch = _positive_int(initial_epoch, "initial_epoch", allow_zero=True)
        verbose = _check_verbose(verbose)
        if tbptt is not None:
            tbptt = _positive_int(tbptt, "tbptt")
            if not isinstance(x, list) and x.ndim < 2:
                raise ValueError(f"tbptt: x must have a time axis [batch, steps, ...], got shape {x.shape}")
        if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float, np.floating)) \
                or not 0.0 <= float(validation_split) < 1.0:
            raise ValueError(f"validation_split: expected a float in [0, 1), got {validation_split!r}")
        sw = self._sample_weight_array(y, sample_weight, class_weight)
        val: Any = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data: expected a tuple (x_val, y_val) or (x_val, y_val, sample_weight)")
            val = self._check_xy(validation_data[0], validation_data[1], "validation_data x", "validation_data y")
            val_sw = None
            if len(validation_data) == 3 and validation_data[2] is not None:
                val_sw = self._sample_weight_array(val[1], validation_data[2], None, "validation_data sample_weight")
            val = (val[0], val[1], val_sw)
        elif validation_split:
            n = _n_samples(x)
            split = math.floor(n * (1.0 - float(validation_split)))
            if split == 0 or split == n:
                raise ValueError(
                    f"validation_split: {validation_split} of {n} samples leaves "
                    f"{'no training' if split == 0 else 'no validation'} samples"
                )
            val = (_take(x, slice(split, None)), y[split:], None if sw is None else sw[split:])
            x, y, sw = _take(x, slice(None, split)), y[:split], None if sw is None else sw[:split]
        n = _n_samples(x)
        self._check_stateful_batches(n, batch_size, "training")
        if val is not None:
            self._check_stateful_batches(_n_samples(val[0]), batch_size, "validation")
        opt = self.optimizer
        opt._begin_training(self, _input_shape_of(x))
        local_steps = math.ceil(n / batch_size)
        steps = opt._agree(local_steps, "max")  # data-parallel: every rank runs the same number of steps
        rng = _random.new_rng() if seed is None else np.random.default_rng(seed)
        if not opt._is_root:
            verbose = 0  # data-parallel: rank 0 shows the progress

        history = callbacks_module.History()
        cb_list = opt._training_callbacks(list(callbacks or []))
        params = {"epochs": epochs, "steps": steps, "verbose": verbose, "batch_size": batch_size, "samples": n}
        if opt._world_size > 1:
            params["val_samples"] = None if val is None else _n_samples(val[0])
        cbs = callbacks_module.CallbackList(  # History last, as Keras, so it sees what callbacks add to logs
            cb_list + [history], self, params)
        self.stop_training = False
        stop_on_nan = any(isinstance(cb, callbacks_module.TerminateOnNaN) for cb in cb_list)
        self.history = history
        # per batch, only what someone looks at: the hooks of callbacks that have them, the logs
        # when such a hook or the progress bar (at most every bar.mininterval) shows them
        batch_begin, batch_end = cbs.wants("on_train_batch_begin"), cbs.wants("on_train_batch_end")
        cbs.on_train_begin({})
        logs = {}
        for epoch in range(initial_epoch, epochs):
            cbs.on_epoch_begin(epoch, {})
            for m in self.compiled_metrics:
                m.reset_state()
            order = rng.permutation(n) if shuffle else np.arange(n)
            bar = tqdm(total=steps, desc=f"Epoch {epoch + 1}/{epochs}", unit="batch", disable=verbose != 1,
                       leave=True, dynamic_ncols=True)
            loss_sum, loss_n = 0.0, 0
            shown = -math.inf  # when the bar's figures were last set
            try:
                for b in range(steps):
                    if b >= local_steps:  # this rank's shard ran out: join the reduction with no data
                        opt._idle_step(self)
                        if opt._agree(int(self.stop_training), "max"):
                            self.stop_training = True
                            break
                        continue
                    idx = order[b * batch_size:(b + 1) * batch_size]
                    if not shuffle:
                        idx = slice(b * batch_size, min((b + 1) * batch_size, n))
                    if batch_begin:
                        cbs.on_train_batch_begin(b, {})
                    xb, yb = _take(x, idx), y[idx]
                    value = self._train_step(xb, yb, tbptt, f"epoch {epoch + 1}, batch {b + 1} of {steps}",
                                             None if sw is None else sw[idx], stop_on_nan)
                    loss_sum += value * yb.shape[0]
                    loss_n += yb.shape[0]
                    show = not bar.disable and (time.monotonic() - shown >= bar.mininterval or b == steps - 1)
                    if batch_end or show:
                        logs = self._running_logs(loss_sum, loss_n)
                        if batch_end:
                            cbs.on_train_batch_end(b, dict(logs))
                        if show:
                            bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()}, refresh=False)
                            shown = time.monotonic()
                    if not bar.disable:
                        bar.update(1)
                    if opt._world_size > 1 and opt._agree(int(self.stop_training), "max"):
                        self.stop_training = True  # a stop on any rank stops every rank after this batch
                    if self.stop_training:
                        break
                if loss_n:  # the epoch's running figures, as the last batch's hooks saw them
                    logs = self._running_logs(loss_sum, loss_n)
                if val is not None:  # also after a stop mid-epoch, as Keras
                    vals = self._evaluate_arrays(val[0], val[1], batch_size, sample_weight=val[2])
                    logs.update({"val_" + k: v for k, v in vals.items()})
                    bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()}, refresh=False)
            finally:
                bar.close()
            if verbose == 2:
                print(f"Epoch {epoch + 1}/{epochs} - " + " - ".join(f"{k}: {v:.4g}" for k, v in logs.items()),
                      file=sys.stdout)
            cbs.on_epoch_end(epoch, logs)
            if opt._world_size > 1 and opt._agree(int(self.stop_training), "max"):
                self.stop_training = True
            if self.stop_training:
                break
        cbs.on_train_end(dict(logs))
        return history

    # ------------------------------------------------------------------ inference
    def _evaluate_arrays(self, x, y, batch_size, verbose=0, sample_weight=None):
        for m in self.compiled_metrics:
            m.reset_state()
        total, count = 0.0, 0
        steps = math.ceil(_n_samples(x) / batch_size)

        def results():
            out = {"loss": total / count if count else 0.0}
            out.update({m.name: m.result() for m in self.compiled_metrics})
            return out

        bar = tqdm(total=steps, desc="Evaluate", unit="batch", disable=verbose != 1, leave=True, dynamic_ncols=True)
        try:
            for b in range(steps):
                sl = slice(b * batch_size, (b + 1) * batch_size)
                y_pred, mask = self._outputs_for_loss(_take(x, sl), y[sl], False)
                s, c, _ = self.loss.sum_and_grad(y[sl], y_pred, mask,
                                                 sample_weight=None if sample_weight is None else sample_weight[sl])
                total += s
                count += c
                for m in self.compiled_metrics:
                    m.update_state(y[sl], y_pred, mask)
                bar.update(1)
                if not bar.disable:  # the running loss and metrics, as fit shows them
                    bar.set_postfix({k: f"{v:.4g}" for k, v in results().items()}, refresh=False)
        finally:
            bar.close()
        return results()

    def evaluate(self, x: ArrayLike | list[ArrayLike], y: ArrayLike, batch_size: int | None = None,
                 verbose: int | str = 1, return_dict: bool = False, *, sample_weight: ArrayLike | None = None
                 ) -> float | list[float] | dict[str, float]:
        """Loss (and metrics) on x, y in inference mode.

        The loss is the mean over all valid entries (masked steps excluded), independent of
        ``batch_size``.

        Args:
            x: The inputs [n, ...] (a list of arrays for a model with several inputs).
            y: The targets [n, ...].
            batch_size: Samples per batch (default 32).
            verbose: 1 or 'auto' (default 1) shows a progress bar; 0 and 2 are silent.
            return_dict: Return ``{"loss": ..., metric name: ...}`` (as Keras).
            sample_weight: Weights of the samples' losses, as in :meth:`fit`.

        Returns:
            The loss when the model has no metrics, else ``[loss, metric1, ...]``, or the dict.

        Raises:
            RuntimeError: The model is not compiled.
        """
        self._assert_compiled("evaluate")
        verbose = _check_verbose(verbose)
        x, y = self._check_xy(x, y)
        batch_size = 32 if batch_size is None else _positive_int(batch_size, "batch_size")
        sw = self._sample_weight_array(y, sample_weight, None)
        res = self._evaluate_arrays(x, y, batch_size, verbose=1 if verbose == 1 else 0, sample_weight=sw)
        if return_dict:
            return res
        if not self.compiled_metrics:
            return res["loss"]
        return [res["loss"]] + [res[m.name] for m in self.compiled_metrics]

    def predict(self, x: ArrayLike | list[ArrayLike], batch_size: int | None = None, verbose: int | str = 0
                ) -> np.ndarray:
        """Outputs for x in inference mode.

        Args:
            x: The inputs [n, ...] (a list of arrays for a model with several inputs).
            batch_size: Samples per batch (default 32).
            verbose: 1 or 'auto' shows a progress bar; 0 (default) and 2 are silent.

        Returns:
            The outputs of all batches, concatenated along the first axis.

        Raises:
            ValueError: The model returns several arrays.
        """
        verbose = _check_verbose(verbose)
        x = self._check_x(x)
        batch_size = 32 if batch_size is None else _positive_int(batch_size, "batch_size")
        outs = []
        steps = math.ceil(_n_samples(x) / batch_size)
        for b in tqdm(range(steps), desc="Predict", unit="batch", disable=verbose != 1, leave=True):
            y = self(_take(x, slice(b * batch_size, (b + 1) * batch_size)), training=False)
            if isinstance(y, (tuple, list)):
                raise ValueError("predict: the model's output must be a single array")
            outs.append(np.asarray(y))
        return np.concatenate(outs, axis=0)
