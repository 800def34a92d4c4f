"""Seq2Seq: an encoder-decoder with attention for sequences of token ids (Bahdanau et al. 2015).

    model = Seq2Seq(src_vocab=13, tgt_vocab=13, embed_dim=16, units=32)   # LSTM, bidirectional, Bahdanau
    model.compile(optimizer="adam", metrics=["accuracy"])   # loss: sparse CE on logits, padding masked
    model.fit(x_src, y_tgt, epochs=10, batch_size=64)
    ids = model.predict(x_src, max_len=8)                   # greedy decoding (beam_width=k: beam search)
    ids, weights = model.predict(x_src, return_attention=True)

Token ids: 0 is padding in both vocabularies (the source embedding has ``mask_zero=True``);
``start_id`` (default 1) is fed to the decoder before the first output and ``end_id`` (default 2,
or None) ends a decoded sequence. ``y_tgt`` holds the tokens to produce, right-padded with 0,
usually ending with ``end_id``; the decoder's input at step i is y_{i-1} (teacher forcing, with
``start_id`` at i = 0) and the loss is the mean sparse categorical cross-entropy over the non-padding
target tokens.

Encoder: Embedding(mask_zero=True) -> Bidirectional(LSTM or GRU) (or a single direction) returning
the annotations h_j [B, Tx, D] (D = 2 * units when bidirectional) and the final states. Decoder: an
LSTM/GRU layer with D units, started from the encoder's final state (the two directions'
states concatenated), run one step at a time with its step API (``decoder.step``):

    c_i = attention(s_{i-1}, h, source mask)          # Bahdanau ordering: the previous state
    s_i = cell([embedding(y_{i-1}); c_i], s_{i-1})
    logits_i = Dense(tgt_vocab)(s_i)

Dropout (training only, ``dropout=p``): variational on the encoder's inputs (the source
embeddings, one mask per sequence shared over time, the encoder layer's own ``dropout``) and on
the decoder's states before the output layer (one mask per sequence shared over the output
steps); decoding never drops.

Backward runs the decoder steps in reverse (``decoder.step_backward``), chaining the state
gradients, sending each step's context gradient through the attention into the annotations and
the final-state gradient into the encoder. ``dtype='float64'`` runs the NumPy references (for
gradient checks).

Speed: every decoder step is a T = 1 kernel call followed by small dense products (attention,
output). These run on fastrnn's own GEMM (``fastrnn.ops.matmul``), so one thread pool serves the
whole step: with NumPy's BLAS for them, its threads kept spinning between the calls and competed
with the kernels' threads, which made a training step on two threads slower than on one. For the
same reason fastrnn loads its kernels with a short OpenMP spin time (see ``fastrnn.backend``);
libgomp's default one made the step several times slower.

fit / evaluate / train_on_batch / save come from :class:`fastrnn.models.Model`; ``predict`` decodes
greedily. Truncated BPTT (``tbptt=``) is not supported. Saved models load with
``Seq2Seq.load(path)`` or ``fastrnn.load_model(path, custom_objects={"Seq2Seq": Seq2Seq})``.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from tqdm.auto import tqdm

from . import losses as losses_module
from . import saving
from ._model import Model
from ._validation import fraction
from ._validation import positive_int as _positive_int
from .layers.attention import BahdanauAttention, LuongAttention
from .layers.base import unique_name
from .layers.core import Dense, Dropout, Embedding
from .layers.recurrent import GRU, LSTM, Bidirectional

if TYPE_CHECKING:
    from .losses import Loss
    from .metrics import Metric
    from .optim import Optimizer

__all__ = ["Seq2Seq"]

_CELLS = {"lstm": LSTM, "gru": GRU}
_ATTENTIONS = ("bahdanau", "luong")


def _token_id(value, argname, vocab, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{argname}: expected an int token id, got {type(value).__name__}")
    if not 1 <= value < vocab:
        raise ValueError(f"{argname}: expected a token id in [1, tgt_vocab={vocab}) (0 is padding), got {value}")
    return int(value)


class Seq2Seq(Model):
    """Encoder-decoder with attention for sequences of token ids (Bahdanau et al. 2015).

    The encoder (Embedding with ``mask_zero=True``, then a Bidirectional LSTM/GRU or a single
    direction) gives the annotations h_j [B, Tx, D] (D = 2 * units when bidirectional) and its
    final state; the decoder, an LSTM/GRU cell with D units started from that state, runs one
    step at a time: ``c_i = attention(s_{i-1}, h)``, ``s_i = cell([embedding(y_{i-1}); c_i],
    s_{i-1})``, ``logits_i = Dense(tgt_vocab)(s_i)``. Training is teacher-forced and its default
    loss is the sparse categorical cross-entropy on the logits over the non-padding target tokens;
    ``predict`` decodes greedily or with a beam search (see the module docstring). Id 0 is
    padding in both vocabularies. The model is built at construction. Layers: ``src_embedding``,
    ``encoder``, ``tgt_embedding``, ``attention``, ``decoder``, ``output_layer`` and
    ``output_dropout``. Truncated BPTT (``fit(..., tbptt=)``) is not supported.

    Args:
        src_vocab (int): Source vocabulary size (ids in [0, src_vocab)).
        tgt_vocab (int): Target vocabulary size (ids in [0, tgt_vocab)).
        embed_dim (int): Size of both embeddings (default 32).
        units (int): Units of each encoder direction (default 64); the decoder has D units.
        cell (str): 'lstm' (default) or 'gru', for the encoder and the decoder.
        bidirectional (bool): Bidirectional encoder (default True).
        attention (str): 'bahdanau' (additive, default) or 'luong' (multiplicative 'general').
        attention_units (int | None): Units of the Bahdanau scoring layer; default D.
        start_id (int): Token fed to the decoder before the first output, in [1, tgt_vocab)
            (default 1).
        end_id (int | None): Token that ends a decoded sequence (default 2), different from
            ``start_id``; None: decoding always runs ``max_len`` steps.
        max_output_len (int | None): Default ``max_len`` of :meth:`predict`; None: 2 * Tx + 2.
        dropout (float): Rate in [0, 1) (training only) of the variational dropout on the
            encoder's inputs and on the decoder's states before the output layer (default 0).
        dtype (str): 'float32' (default) or 'float64' (NumPy references, for gradient checks).
        seed (int | None): Non-negative seed from which every layer's seed is derived; None draws
            from the global generator.
        name (str | None): The model's name; default 'seq2seq', 'seq2seq_1', ...

    Example:
        >>> import numpy as np
        >>> from fastrnn.models import Seq2Seq
        >>> model = Seq2Seq(src_vocab=12, tgt_vocab=12, embed_dim=8, units=8, seed=0)
        >>> model.compile(optimizer="adam")
        >>> x = np.array([[3, 4, 5, 0], [6, 7, 0, 0]])      # source ids, 0-padded
        >>> y = np.array([[5, 4, 3, 2], [7, 6, 2, 0]])      # target ids ending with end_id=2
        >>> history = model.fit(x, y, epochs=1, verbose=0)
        >>> model.predict(x, max_len=6).shape
        (2, 6)
    """

    attention: BahdanauAttention | LuongAttention
    _steps: list | None

    def __init__(self, src_vocab: int, tgt_vocab: int, embed_dim: int = 32, units: int = 64, cell: str = "lstm",
                 bidirectional: bool = True, attention: str = "bahdanau", attention_units: int | None = None,
                 start_id: int = 1, end_id: int | None = 2, max_output_len: int | None = None,
                 dropout: float = 0.0, dtype: str = "float32", seed: int | None = None,
                 name: str | None = None) -> None:
        super().__init__(name=unique_name("seq2seq") if name is None else name)
        self.src_vocab = _positive_int(src_vocab, "src_vocab")
        self.tgt_vocab = _positive_int(tgt_vocab, "tgt_vocab")
        self.embed_dim = _positive_int(embed_dim, "embed_dim")
        self.units = _positive_int(units, "units")
        if cell not in _CELLS:
            raise ValueError(f"cell: expected 'lstm' or 'gru', got {cell!r}")
        if attention not in _ATTENTIONS:
            raise ValueError(f"attention: expected 'bahdanau' or 'luong', got {attention!r}")
        self.cell, self.attention_kind, self.bidirectional = cell, attention, bool(bidirectional)
        self.start_id = _token_id(start_id, "start_id", self.tgt_vocab)
        self.end_id = _token_id(end_id, "end_id", self.tgt_vocab, allow_none=True)
        if self.end_id == self.start_id:
            raise ValueError(f"end_id: must differ from start_id, both are {start_id}")
        self.max_output_len = None if max_output_len is None else _positive_int(max_output_len, "max_output_len")
        self.dropout = fraction(dropout, "dropout")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed: expected None or a non-negative int, got {seed!r}")
        self.seed = seed
        if str(np.dtype(dtype)) not in ("float32", "float64"):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
        self.dtype = np.dtype(dtype)

        def sd(k):
            return None if seed is None else int(seed) * 16 + k

        dt, rnn = self.dtype.name, _CELLS[cell]
        self.enc_dim = self.units * (2 if self.bidirectional else 1)
        self.attention_units = (self.enc_dim if attention_units is None
                                else _positive_int(attention_units, "attention_units"))
        E, D = self.embed_dim, self.enc_dim
        self.src_embedding = Embedding(self.src_vocab, E, mask_zero=True, dtype=dt, seed=sd(0))
        enc = rnn(self.units, return_sequences=True, return_state=True, dropout=self.dropout, dtype=dt, seed=sd(1))
        self.encoder = Bidirectional(enc) if self.bidirectional else enc
        self.tgt_embedding = Embedding(self.tgt_vocab, E, dtype=dt, seed=sd(3))
        if attention == "bahdanau":
            self.attention = BahdanauAttention(self.attention_units, query_dim=D, value_dim=D, dtype=dt, seed=sd(4))
        else:
            self.attention = LuongAttention("general", query_dim=D, value_dim=D, dtype=dt, seed=sd(4))
        self.decoder = rnn(D, dtype=dt, seed=sd(5), input_shape=(None, E + D))
        self.output_layer = Dense(self.tgt_vocab, dtype=dt, seed=sd(6), input_shape=(D,))
        self.output_dropout = Dropout(self.dropout, noise_shape=(None, 1, None), dtype=dt, seed=sd(7))
        self.src_embedding.build((None,))
        self.encoder.build((None, E))
        self.tgt_embedding.build((None,))
        self.output_dropout.build((None, D))
        self._build_input_shape = (None,)
        self._steps = None

    # ------------------------------------------------------------------ structure
    def build(self, input_shape: Sequence[Any] | None = None) -> None:
        """The model is built at construction; this only records the input shape.

        Args:
            input_shape: The shape of one source sequence, ``(Tx,)`` (default ``(None,)``).
        """
        self._build_input_shape = (None,) if input_shape is None else tuple(input_shape)

    def get_config(self) -> dict:
        """Constructor arguments (JSON-able)."""
        return {"src_vocab": self.src_vocab, "tgt_vocab": self.tgt_vocab, "embed_dim": self.embed_dim,
                "units": self.units, "cell": self.cell, "bidirectional": self.bidirectional,
                "attention": self.attention_kind, "attention_units": self.attention_units,
                "start_id": self.start_id, "end_id": self.end_id, "max_output_len": self.max_output_len,
                "dropout": self.dropout, "dtype": self.dtype.name, "seed": self.seed, "name": self.name}

    @classmethod
    def load(cls, filepath: str | os.PathLike, compile: bool = True) -> Seq2Seq:
        """A Seq2Seq saved with ``save``.

        Args:
            filepath: The saved file.
            compile: Also restore the optimizer (with its state), the loss and the metrics.

        Returns:
            The model.
        """
        return saving.load_model(filepath, custom_objects={cls.__name__: cls}, compile=compile)

    # ------------------------------------------------------------------ input checks
    def _ids(self, a, argname, vocab):
        if a.dtype.kind not in "iu":
            raise TypeError(f"{argname}: expected an integer array of token ids, got dtype {a.dtype}")
        if a.ndim != 2:
            raise ValueError(f"{argname}: expected token ids of shape [batch, time], got shape {a.shape}")
        bad = (a < 0) | (a >= vocab)
        if bad.any():
            pos = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{argname}: token id {int(a[pos])} at position {pos} is outside [0, {vocab})")
        return a.astype(np.int64, copy=False)

    def _check_x(self, x, argname="x"):
        return self._ids(super()._check_x(x, argname), argname, self.src_vocab)

    def _check_xy(self, x, y, xname="x", yname="y"):
        x, y = super()._check_xy(x, y, xname, yname)
        return x, self._ids(y, yname, self.tgt_vocab)

    # ------------------------------------------------------------------ encoder / decoder step
    def _encode(self, x, training):
        """(annotations [B, Tx, D], source mask [B, Tx], decoder initial state list)."""
        emb = self.src_embedding(x, training=training)
        mask = self.src_embedding.compute_mask(x)
        out = self.encoder(emb, training=training, mask=mask)
        enc_out, states = out[0], out[1:]
        if self.bidirectional:
            n = len(states) // 2
            states = [np.concatenate([states[k], states[n + k]], axis=-1) for k in range(n)]
        return enc_out, mask, states

    def _step(self, emb_t, state, enc_out, mask, training):
        """One decoder step: (new state list, attention weights, attention cache); with
        ``training`` the decoder keeps its step's cache for ``step_backward``."""
        # the encoder's outputs at padded steps repeat a valid output or are 0: finite, no check
        ctx, weights, acache = self.attention.forward_step(state[0], enc_out, mask=mask, training=training,
                                                           padding_finite=True)
        _, state = self.decoder.step(np.concatenate([emb_t, ctx], axis=-1), state, training=training)
        return state, weights, acache

    # ------------------------------------------------------------------ teacher-forced forward / backward
    def forward_teacher(self, x: np.ndarray, y: np.ndarray, training: bool = False) -> np.ndarray:
        """Logits with the decoder fed the true previous tokens (teacher forcing).

        Args:
            x: Source ids [B, Tx].
            y: Target ids [B, Ty].
            training: Apply dropout and keep what :meth:`backward` needs.

        Returns:
            Logits [B, Ty, tgt_vocab].
        """
        self.decoder.reset_steps()
        enc_out, mask, state = self._encode(x, training)
        B, Ty = y.shape
        dec_in = np.concatenate([np.full((B, 1), self.start_id, dtype=np.int64), y[:, :-1]], axis=1)
        emb = self.tgt_embedding(dec_in, training=training)
        hs = np.empty((B, Ty, self.enc_dim), dtype=self.dtype)
        steps = []
        for i in range(Ty):
            state, _, acache = self._step(emb[:, i], state, enc_out, mask, training)
            hs[:, i] = state[0]
            steps.append(acache)
        logits = self.output_layer(self.output_dropout(hs, training=training), training=training)
        self._steps = steps if training else None
        return logits

    def backward(self, dlogits: np.ndarray) -> None:
        """Backpropagate through the last training :meth:`forward_teacher`; accumulates the grads.

        Args:
            dlogits: d loss / d logits [B, Ty, tgt_vocab].

        Returns:
            None (token ids have no gradient).
        """
        if self._steps is None:
            raise RuntimeError("backward: called before a forward pass with training=True")
        acaches, n_states = self._steps, self.decoder.spec.n_states
        E, D = self.embed_dim, self.enc_dim
        dhs = self.output_dropout.backward(self.output_layer.backward(dlogits))
        B, Ty = dhs.shape[:2]
        demb = np.zeros((B, Ty, E), dtype=self.dtype)
        denc = None
        dstate = [np.zeros((B, D), dtype=self.dtype) for _ in range(n_states)]
        for i in range(Ty - 1, -1, -1):
            dx, dprev = self.decoder.step_backward(dhs[:, i], dstate)
            demb[:, i] = dx[:, :E]
            dq, dv = self.attention.backward_step(acaches[i], dx[:, E:])
            denc = dv if denc is None else denc + dv
            dstate = [dprev[0] + dq] + dprev[1:]
        self.tgt_embedding.backward(demb)
        if self.bidirectional:
            U = self.units
            dstate = [d[:, :U] for d in dstate] + [d[:, U:] for d in dstate]
        dx_enc = self.encoder.backward([denc] + [np.ascontiguousarray(d) for d in dstate])
        self.src_embedding.backward(dx_enc)
        self._steps = None
        return None

    def loss_and_grad(self, x: Any, y: Any) -> tuple[float, np.ndarray]:
        """The loss and the gradients of one batch, without an optimizer step.

        Every parameter's grad is zeroed, then filled. Uses the compiled loss, else sparse
        categorical cross-entropy on the logits.

        Args:
            x: Source ids [B, Tx] (array-like).
            y: Target ids [B, Ty] (array-like; 0 is padding).

        Returns:
            ``(mean loss over the non-padding target tokens, logits [B, Ty, tgt_vocab])``.
        """
        x, y = self._check_xy(x, y)
        loss = self.loss if self.loss is not None else losses_module.SparseCategoricalCrossentropy(from_logits=True)
        self.zero_grad()
        logits = self.forward_teacher(x, y, training=True)
        total, count, d = loss.sum_and_grad(y, logits, y != 0)
        self.backward(d / count if count else d)
        return (total / count if count else 0.0), logits

    # ------------------------------------------------------------------ Model hooks
    def compile(self, optimizer: str | Optimizer = "adam", loss: str | Loss | Callable | None = None,
                metrics: Sequence[str | Metric | Callable] | str | Metric | Callable | None = None) -> None:
        """As :meth:`Model.compile`, with other defaults.

        Args:
            optimizer: As in Model.compile; default 'adam'.
            loss: As in Model.compile; default (None) sparse categorical cross-entropy on logits
                (padding excluded).
            metrics: As in Model.compile; computed on the teacher-forced logits.
        """
        if loss is None:
            loss = losses_module.SparseCategoricalCrossentropy(from_logits=True)
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics)

    def _outputs_for_loss(self, xb, yb, training):
        """Teacher-forced logits and the mask of the non-padding target tokens (used by fit and evaluate)."""
        return self.forward_teacher(xb, yb, training=training), yb != 0

    def _step_tbptt(self, xb, yb, k, where, swb=None):
        raise ValueError("tbptt: Seq2Seq does not support truncated BPTT; call fit without tbptt")

    # ------------------------------------------------------------------ greedy decoding
    def forward(self, x: Any, training: bool = False, mask: np.ndarray | None = None) -> np.ndarray:
        """Greedy decoding of one batch of source ids (what ``model(x)`` returns): ids [B, max_len].

        Args:
            x: Source ids [B, Tx].
            training: Ignored (decoding never drops out).
            mask: Ignored (the padding mask comes from the ids).

        Returns:
            Token ids [B, max_len].
        """
        return self._greedy(self._check_x(x), self._max_len(None, x))[0]

    def _max_len(self, max_len, x):
        if max_len is not None:
            return _positive_int(max_len, "max_len")
        if self.max_output_len is not None:
            return self.max_output_len
        return 2 * int(np.shape(x)[1]) + 2

    def _greedy(self, x, max_len):
        enc_out, mask, state = self._encode(x, False)
        B, Tx = x.shape
        table = self.tgt_embedding.embeddings.value
        tok = np.full(B, self.start_id, dtype=np.int64)
        out = np.zeros((B, max_len), dtype=np.int64)
        att = np.zeros((B, max_len, Tx), dtype=self.dtype)
        done = np.zeros(B, dtype=bool)
        for i in range(max_len):
            state, weights, _ = self._step(table[tok], state, enc_out, mask, False)
            logits = self.output_layer(state[0])
            tok = np.where(done, 0, logits[:, 1:].argmax(axis=-1) + 1)  # never the padding id 0
            out[:, i] = tok
            att[:, i] = np.where(done[:, None], 0, weights)
            if self.end_id is not None:
                done |= tok == self.end_id
                if done.all():
                    break
        return out, att

    def _beam(self, x, max_len, k, all_beams=False, length_penalty=0.0):
        """Beam search of width k: per source the sequence of the highest total log-probability
        among the k kept at each step (a finished beam, one that emitted end_id, keeps its score
        and competes as it is: no length normalisation), its attention weights and that
        log-probability (``all_beams``: all k of each, [B, k, ...], best first). k = 1 is greedy
        decoding. ``length_penalty`` alpha > 0 picks the final sequence by score / ((5 + n) / 6) **
        alpha, n its length up to its end_id (GNMT's normalisation, which favours longer outputs);
        the search itself keeps the k best raw scores."""
        enc_out, mask, state = self._encode(x, False)
        B, Tx = x.shape
        V = self.tgt_vocab

        def rep(a):  # one copy per beam: row b * k + j
            return np.repeat(a, k, axis=0)

        enc_k, mask_k, state = rep(enc_out), None if mask is None else rep(mask), [rep(s) for s in state]
        table = self.tgt_embedding.embeddings.value
        tok = np.full(B * k, self.start_id, dtype=np.int64)
        score = np.full((B, k), -np.inf)
        score[:, 0] = 0.0  # the k copies of the start are one beam
        done = np.zeros((B, k), dtype=bool)
        seqs = np.zeros((B, k, max_len), dtype=np.int64)
        atts = np.zeros((B, k, max_len, Tx), dtype=self.dtype)
        for i in range(max_len):
            state, weights, _ = self._step(table[tok], state, enc_k, mask_k, False)
            logp = losses_module.log_softmax(self.output_layer(state[0]).astype(np.float64))
            logp[:, 0] = -np.inf  # never the padding id
            cand = score[..., None] + logp.reshape(B, k, V)
            cand[done] = -np.inf
            cand[..., 0] = np.where(done, score, -np.inf)  # a finished beam continues with 0, free
            flat = cand.reshape(B, k * V)
            top = np.argsort(-flat, axis=1, kind="stable")[:, :k]
            src, new = top // V, top % V
            score = np.take_along_axis(flat, top, axis=1)
            was_done = np.take_along_axis(done, src, axis=1)
            seqs = np.take_along_axis(seqs, src[..., None], axis=1)
            seqs[:, :, i] = new
            atts = np.take_along_axis(atts, src[..., None, None], axis=1)
            w = np.take_along_axis(weights.reshape(B, k, Tx), src[..., None], axis=1)
            atts[:, :, i] = np.where(was_done[..., None], 0, w)
            done = was_done | ((new == self.end_id) if self.end_id is not None else False)
            rows = (np.arange(B)[:, None] * k + src).ravel()
            state = [st[rows] for st in state]
            tok = new.ravel()
            if done.all():
                break
        if all_beams:  # the kept beams are in descending score order already
            return seqs, atts, score
        rank = score
        if length_penalty:
            n = (seqs != 0).sum(axis=2)  # tokens up to and including end_id (0 only pads)
            rank = score / ((5.0 + n) / 6.0) ** float(length_penalty)
        best = rank.argmax(axis=1)
        return seqs[np.arange(B), best], atts[np.arange(B), best], score[np.arange(B), best]

    def predict(self, x: Any, batch_size: int | None = None, verbose: int | str = 0,  # type: ignore[override]
                max_len: int | None = None, return_attention: bool = False, beam_width: int = 1,
                length_penalty: float = 0.0) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Decode source sequences into target ids.

        Args:
            x: Source ids [N, Tx] (array-like).
            batch_size: Sources decoded at once (default 32).
            verbose: 1 or 'auto' shows a progress bar; 0 (default) is silent.
            max_len: Steps to decode; default ``max_output_len`` from the constructor, else
                2 * Tx + 2.
            return_attention: Also return the attention weights.
            beam_width: 1 (default) decodes greedily; k > 1 runs a beam search of width k and
                returns, per source, the kept sequence of the highest total log-probability.
            length_penalty: With a beam search, alpha >= 0: rank by log-probability /
                ((5 + length) / 6) ** alpha (GNMT's length normalisation); 0 (default) ranks by
                the total log-probability.

        Returns:
            Ids [N, max_len] (0 after a row's end_id), or with ``return_attention``
            ``(ids, weights)`` with the weights [N, max_len, Tx] of every decoded step (0 after
            the end).
        """
        x = self._check_x(x)
        max_len = self._max_len(max_len, x)
        batch_size = 32 if batch_size is None else _positive_int(batch_size, "batch_size")
        beam_width = _positive_int(beam_width, "beam_width")
        if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float, np.integer, np.floating)) \
                or not 0.0 <= float(length_penalty) < float("inf"):
            raise ValueError(f"length_penalty: expected a finite number >= 0, got {length_penalty!r}")
        if length_penalty and beam_width == 1:
            raise ValueError("length_penalty: applies to beam search; give beam_width > 1")
        ids: Any
        atts: Any
        ids, atts = [], []
        steps = math.ceil(x.shape[0] / batch_size)
        for b in tqdm(range(steps), desc="Predict", unit="batch", disable=verbose not in (1, "auto"), leave=True):
            xb = x[b * batch_size:(b + 1) * batch_size]
            o, a = self._greedy(xb, max_len) if beam_width == 1 else \
                self._beam(xb, max_len, beam_width, length_penalty=length_penalty)[:2]
            ids.append(o)
            atts.append(a)
        ids = np.concatenate(ids, axis=0)
        return (ids, np.concatenate(atts, axis=0)) if return_attention else ids
