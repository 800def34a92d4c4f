"""Data helpers for sequence models: synthetic time series, windowing, padding, vectorizers, batching.

Everything here is plain NumPy. Names and semantics follow Keras where Keras has the same helper
(``pad_sequences``, ``to_categorical``, the ``TextVectorization`` vocabulary convention of id 0 for
padding and id 1 for out-of-vocabulary tokens).
"""
from __future__ import annotations

import collections
import math
import numbers
import re
import string

import numpy as np

from . import _random

__all__ = [
    "Batches",
    "CharVectorizer",
    "WordVectorizer",
    "batches",
    "generate_time_series",
    "pad_sequences",
    "to_categorical",
    "train_valid_test_split",
    "window",
]


# --------------------------------------------------------------------------------------------
# time series
# --------------------------------------------------------------------------------------------

def _check_positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _rng_uniform(seed):
    """A function ``uniform(*shape)`` drawing from [0, 1) for the given seed.

    ``seed=None`` draws from NumPy's global generator (``np.random.rand``), an int seeds a
    ``np.random.RandomState`` (so ``seed=42`` reproduces ``np.random.seed(42)`` followed by the
    lesson's code), and a ``np.random.Generator`` or ``RandomState`` is used as given.
    """
    if seed is None:
        return np.random.rand
    if isinstance(seed, np.random.Generator):
        return lambda *shape: seed.random(shape)
    if isinstance(seed, np.random.RandomState):
        return seed.rand
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be None, an int, a numpy Generator or RandomState, got {type(seed).__name__}")
    return np.random.RandomState(int(seed)).rand


def generate_time_series(batch_size, n_steps, seed=None):
    """``batch_size`` univariate series of ``n_steps`` steps: two sines with random frequencies and
    offsets plus uniform noise, as in the time-series lesson.

    ``series = 0.5 sin((t - o1)(10 f1 + 10)) + 0.2 sin((t - o2)(20 f2 + 20)) + 0.1 (u - 0.5)`` with
    ``t = linspace(0, 1, n_steps)`` and ``f1, f2, o1, o2, u`` uniform in [0, 1).

    Returns float32 of shape ``[batch_size, n_steps, 1]``. ``seed`` as in ``_rng_uniform``: None uses
    NumPy's global generator exactly like the lesson's code.
    """
    batch_size = _check_positive_int("batch_size", batch_size)
    n_steps = _check_positive_int("n_steps", n_steps)
    rand = _rng_uniform(seed)
    freq1, freq2, offsets1, offsets2 = rand(4, batch_size, 1)
    time = np.linspace(0, 1, n_steps)
    series = 0.5 * np.sin((time - offsets1) * (freq1 * 10 + 10))  # wave 1
    series += 0.2 * np.sin((time - offsets2) * (freq2 * 20 + 20))  # + wave 2
    series += 0.1 * (rand(batch_size, n_steps) - 0.5)  # + noise
    return series[..., np.newaxis].astype(np.float32)


def window(series, window, horizon=1, stride=1):
    """Cut a series into supervised pairs ``(X, y)``: ``window`` steps in, the next ``horizon`` out.

    series: ``[N]`` (one univariate series), ``[N, F]`` (one multivariate series) or ``[B, N, F]``
    (a batch of series; windows are cut from each and stacked, series by series).
    Returns ``X [M, window, F]`` and ``y [M, F]`` when ``horizon == 1`` (as ``series[:, -1]`` in the
    lesson) or ``y [M, horizon, F]`` otherwise. Window starts are ``0, stride, 2*stride, ...`` up to
    ``N - window - horizon``.
    """
    s = np.asarray(series)
    window = _check_positive_int("window", window)
    horizon = _check_positive_int("horizon", horizon)
    stride = _check_positive_int("stride", stride)
    if s.ndim == 1:
        s = s[None, :, None]
    elif s.ndim == 2:
        s = s[None]
    elif s.ndim != 3:
        raise ValueError(f"series must have shape [N], [N, F] or [B, N, F], got shape {s.shape}")
    B, N, F = s.shape
    if window + horizon > N:
        raise ValueError(
            f"window + horizon must be <= the series length {N}, got window={window}, horizon={horizon}")
    starts = np.arange(0, N - window - horizon + 1, stride)
    idx_x = starts[:, None] + np.arange(window)[None, :]  # [M, window]
    idx_y = starts[:, None] + window + np.arange(horizon)[None, :]  # [M, horizon]
    X = s[:, idx_x].reshape(B * len(starts), window, F)
    y = s[:, idx_y].reshape(B * len(starts), horizon, F)
    if horizon == 1:
        y = y[:, 0]
    return X, y


# --------------------------------------------------------------------------------------------
# padding and one-hot
# --------------------------------------------------------------------------------------------

def pad_sequences(sequences, maxlen=None, dtype="int32", padding="pre", truncating="pre", value=0.0):
    """Pad (and truncate) a list of sequences to one length, with Keras's semantics.

    sequences: a list of sequences (lists or arrays) of scalars or of equally shaped vectors.
    maxlen: the output length; None means the longest sequence. padding: 'pre' (default, as Keras)
    or 'post' puts the padding before or after each sequence; truncating: 'pre' or 'post' removes
    values from the start or the end of sequences longer than maxlen. value: the padding value.
    Returns an array of shape ``[len(sequences), maxlen] + sample_shape`` of ``dtype``.
    """
    if padding not in ("pre", "post"):
        raise ValueError(f"padding must be 'pre' or 'post', got {padding!r}")
    if truncating not in ("pre", "post"):
        raise ValueError(f"truncating must be 'pre' or 'post', got {truncating!r}")
    if isinstance(sequences, (str, bytes)) or not hasattr(sequences, "__len__"):
        raise ValueError(f"sequences must be a list of sequences, got {type(sequences).__name__}")
    if maxlen is not None:
        if isinstance(maxlen, bool) or not isinstance(maxlen, numbers.Integral):
            raise TypeError(f"maxlen must be None or an int, got {type(maxlen).__name__}")
        if maxlen < 0:
            raise ValueError(f"maxlen must be >= 0, got {maxlen}")
    arrays, lengths = [], []
    sample_shape = None
    for i, seq in enumerate(sequences):
        if isinstance(seq, (str, bytes)) or not hasattr(seq, "__len__"):
            raise ValueError(
                f"sequences[{i}] must be a sequence (list or array), got {type(seq).__name__}")
        a = np.asarray(seq)
        if a.ndim == 0:
            raise ValueError(f"sequences[{i}] must be a sequence, got a scalar")
        lengths.append(len(a))
        if len(a) and sample_shape is None:
            sample_shape = a.shape[1:]
        arrays.append(a)
    if sample_shape is None:
        sample_shape = ()
    for i, a in enumerate(arrays):
        if len(a) and a.shape[1:] != sample_shape:
            raise ValueError(
                f"sequences[{i}] has sample shape {a.shape[1:]}, expected {sample_shape} as the first "
                "non-empty sequence")
    if maxlen is None:
        maxlen = max(lengths) if lengths else 0
    out = np.full((len(arrays), maxlen) + tuple(sample_shape), value, dtype=dtype)
    if maxlen == 0:
        return out
    for i, a in enumerate(arrays):
        if not len(a):
            continue
        trunc = a[-maxlen:] if truncating == "pre" else a[:maxlen]
        if padding == "post":
            out[i, :len(trunc)] = trunc
        else:
            out[i, maxlen - len(trunc):] = trunc
    return out


def to_categorical(ids, num_classes=None, dtype="float32"):
    """One-hot encode integer class ids: ``[...]`` -> ``[..., num_classes]`` (Keras's to_categorical)."""
    a = np.asarray(ids)
    if a.dtype.kind not in "iub":
        if a.dtype.kind == "f" and a.size and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        elif a.size:
            raise TypeError(f"ids must be integers, got dtype {a.dtype}")
        else:
            a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise ValueError(f"ids must be >= 0, got minimum {a.min()}")
    if num_classes is None:
        num_classes = int(a.max()) + 1 if a.size else 0
    elif a.size and a.max() >= num_classes:
        raise ValueError(f"ids must be < num_classes={num_classes}, got maximum {a.max()}")
    out = np.zeros(a.shape + (int(num_classes),), dtype=dtype)
    np.put_along_axis(out, a[..., None].astype(np.int64), 1, axis=-1)
    return out


# --------------------------------------------------------------------------------------------
# vectorizers
# --------------------------------------------------------------------------------------------

class _Vectorizer:
    """Shared vocabulary logic: id 0 = padding token, id 1 = OOV token (either can be disabled)."""

    def __init__(self, pad_token="", oov_token="[UNK]"):
        if pad_token is not None and not isinstance(pad_token, str):
            raise TypeError(f"pad_token must be a str or None, got {type(pad_token).__name__}")
        if oov_token is not None and not isinstance(oov_token, str):
            raise TypeError(f"oov_token must be a str or None, got {type(oov_token).__name__}")
        if pad_token is not None and pad_token == oov_token:
            raise ValueError(f"pad_token and oov_token must differ, both are {pad_token!r}")
        self.pad_token = pad_token
        self.oov_token = oov_token
        self._vocab = None
        self._index = None

    # subclasses define: tokenize(text) -> list[str]; _join(tokens) -> str; _order(counter) -> list[str]

    def _reserved(self):
        return [t for t in (self.pad_token, self.oov_token) if t is not None]

    @property
    def pad_id(self):
        """The id of the padding token (0), or None when padding is disabled."""
        return 0 if self.pad_token is not None else None

    @property
    def oov_id(self):
        """The id of the out-of-vocabulary token, or None when unknown tokens raise instead."""
        if self.oov_token is None:
            return None
        return 1 if self.pad_token is not None else 0

    def _check_fitted(self):
        if self._vocab is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(texts) or set_vocabulary(tokens) first")

    @staticmethod
    def _texts(texts, name="texts"):
        if isinstance(texts, str):
            return [texts]
        try:
            items = list(texts)
        except TypeError:
            raise TypeError(f"{name} must be a str or an iterable of str, got {type(texts).__name__}") from None
        for i, t in enumerate(items):
            if not isinstance(t, str):
                raise TypeError(f"{name}[{i}] must be a str, got {type(t).__name__}")
        return items

    def fit(self, texts):
        """Build the vocabulary from a string or an iterable of strings; returns self."""
        counter = collections.Counter()
        for t in self._texts(texts):
            counter.update(self.tokenize(t))
        for tok in self._reserved():
            counter.pop(tok, None)
        self.set_vocabulary(self._order(counter))
        return self

    def set_vocabulary(self, tokens):
        """Use the given tokens (padding and OOV tokens are added in front); returns self."""
        tokens = list(tokens)
        seen = set(self._reserved())
        vocab = self._reserved()
        for t in tokens:
            if not isinstance(t, str):
                raise TypeError(f"vocabulary tokens must be str, got {type(t).__name__}")
            if t not in seen:
                seen.add(t)
                vocab.append(t)
        self._vocab = vocab
        self._index = {t: i for i, t in enumerate(vocab)}
        return self

    @property
    def vocabulary(self):
        """The tokens by id: padding token first, then the OOV token, then the fitted tokens."""
        self._check_fitted()
        return list(self._vocab)

    @property
    def vocab_size(self):
        """Number of ids (the input_dim an Embedding or one-hot encoding needs)."""
        self._check_fitted()
        return len(self._vocab)

    def __len__(self):
        return self.vocab_size

    def _encode_one(self, text):
        ids = []
        oov = self.oov_id
        for tok in self.tokenize(text):
            i = self._index.get(tok)
            if i is None or (tok == self.pad_token):
                if oov is None:
                    raise ValueError(f"token {tok!r} is not in the vocabulary and oov_token is None")
                i = oov
            ids.append(i)
        return np.asarray(ids, dtype=np.int32)

    def encode(self, texts, maxlen=None, padding=None, truncating="post"):
        """Token ids. A str gives a 1-D int32 array. A list of str gives a list of arrays, or, when
        ``maxlen`` or ``padding`` is given, one ``[N, maxlen]`` int32 array padded with the padding
        id via :func:`pad_sequences` (``padding`` 'post' (used when only maxlen is given) or 'pre',
        ``truncating`` as there).
        """
        self._check_fitted()
        if isinstance(texts, str):
            return self._encode_one(texts)
        seqs = [self._encode_one(t) for t in self._texts(texts)]
        if maxlen is None and padding is None:
            return seqs
        if self.pad_id is None:
            raise ValueError("cannot pad: this vectorizer has pad_token=None")
        return pad_sequences(seqs, maxlen=maxlen, padding=padding or "post", truncating=truncating,
                             value=self.pad_id, dtype="int32")

    def __call__(self, texts, maxlen=None, padding="post", truncating="post"):
        """Same as :meth:`encode`, but a list of texts always comes back as one padded array."""
        if isinstance(texts, str):
            return self.encode(texts)
        return self.encode(texts, maxlen=maxlen, padding=padding or "post", truncating=truncating)

    def decode(self, ids, skip_padding=True):
        """Text for a 1-D sequence of ids (padding ids dropped unless skip_padding=False);
        a 2-D array gives a list of texts."""
        self._check_fitted()
        a = np.asarray(ids)
        if a.ndim == 2:
            return [self.decode(row, skip_padding=skip_padding) for row in a]
        if a.ndim != 1:
            raise ValueError(f"ids must be 1-D or 2-D, got shape {a.shape}")
        if a.size and a.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, got dtype {a.dtype}")
        n = len(self._vocab)
        if a.size and (a.min() < 0 or a.max() >= n):
            raise ValueError(f"ids must be in [0, {n}), got values in [{a.min()}, {a.max()}]")
        toks = [self._vocab[i] for i in a.tolist() if not (skip_padding and i == self.pad_id)]
        return self._join(toks)

    def get_config(self):
        """A JSON-able dict from which :meth:`from_config` rebuilds this vectorizer with its vocabulary."""
        cfg = self._options()
        cfg.update(pad_token=self.pad_token, oov_token=self.oov_token)
        n = len(self._reserved())
        cfg["vocabulary"] = None if self._vocab is None else self._vocab[n:]
        return cfg

    @classmethod
    def from_config(cls, cfg):
        """Rebuild a vectorizer from :meth:`get_config`'s dict."""
        cfg = dict(cfg)
        vocab = cfg.pop("vocabulary", None)
        obj = cls(**cfg)
        if vocab is not None:
            obj.set_vocabulary(vocab)
        return obj

    def __repr__(self):
        size = "unfitted" if self._vocab is None else f"vocab_size={len(self._vocab)}"
        return f"{type(self).__name__}({size})"


class CharVectorizer(_Vectorizer):
    """Characters <-> ids for character-level models.

    The vocabulary is the padding token (id 0, ``pad_token=""``), the OOV token (id 1,
    ``oov_token="[UNK]"``) and then the characters seen by :meth:`fit` in sorted order.
    ``pad_token=None`` / ``oov_token=None`` leave those ids out (with ``oov_token=None`` an unknown
    character raises ValueError). ``lower=True`` lowercases text before it is split.

    >>> v = CharVectorizer(pad_token=None, oov_token=None).fit("hello")
    >>> v.vocabulary, v.encode("hell").tolist(), v.decode([0, 2, 2, 3])
    (['e', 'h', 'l', 'o'], [1, 0, 2, 2], 'ello')
    """

    def __init__(self, lower=False, pad_token="", oov_token="[UNK]"):
        super().__init__(pad_token=pad_token, oov_token=oov_token)
        self.lower = bool(lower)

    def tokenize(self, text):
        """The characters of ``text`` (lowercased when ``lower``)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return list(text.lower() if self.lower else text)

    def _order(self, counter):
        return sorted(counter)

    def _join(self, tokens):
        return "".join(tokens)

    def _options(self):
        return {"lower": self.lower}


_PUNCT_RE = re.compile("[" + re.escape(string.punctuation) + "]")


class WordVectorizer(_Vectorizer):
    """Words <-> ids, like Keras's ``TextVectorization(output_mode="int")``.

    Standardization: lowercase (``lower=True``) and remove ASCII punctuation
    (``strip_punctuation=True``), then split on whitespace. The vocabulary is the padding token
    (id 0), the OOV token (id 1), then the words by decreasing frequency (ties alphabetically),
    keeping words seen at least ``min_count`` times. ``max_tokens`` caps the vocabulary size
    INCLUDING the padding and OOV ids, as in Keras.
    """

    def __init__(self, max_tokens=None, lower=True, strip_punctuation=True, min_count=1,
                 pad_token="", oov_token="[UNK]"):
        super().__init__(pad_token=pad_token, oov_token=oov_token)
        if max_tokens is not None:
            max_tokens = _check_positive_int("max_tokens", max_tokens)
            if max_tokens <= len(self._reserved()):
                raise ValueError(
                    f"max_tokens must exceed the {len(self._reserved())} reserved ids (padding/OOV), got {max_tokens}")
        self.max_tokens = max_tokens
        self.lower = bool(lower)
        self.strip_punctuation = bool(strip_punctuation)
        self.min_count = _check_positive_int("min_count", min_count)

    def standardize(self, text):
        """The text as it is before splitting (lowercased, punctuation removed, as configured)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if self.lower:
            text = text.lower()
        if self.strip_punctuation:
            text = _PUNCT_RE.sub("", text)
        return text

    def tokenize(self, text):
        """The words of ``text`` after standardization."""
        return self.standardize(text).split()

    def _order(self, counter):
        words = sorted((w for w, c in counter.items() if c >= self.min_count), key=lambda w: (-counter[w], w))
        if self.max_tokens is not None:
            words = words[: self.max_tokens - len(self._reserved())]
        return words

    def _join(self, tokens):
        return " ".join(tokens)

    def _options(self):
        return {"max_tokens": self.max_tokens, "lower": self.lower,
                "strip_punctuation": self.strip_punctuation, "min_count": self.min_count}


# --------------------------------------------------------------------------------------------
# batching and splitting
# --------------------------------------------------------------------------------------------

def _as_list(x, name):
    """A list/tuple whose elements are all arrays is several inputs; any other list is one array of samples."""
    if isinstance(x, (list, tuple)) and len(x) > 0 and all(hasattr(a, "shape") for a in x):
        return list(x), True
    if isinstance(x, (list, tuple)):
        try:
            return [np.asarray(x)], False
        except ValueError as exc:
            raise ValueError(f"{name}: a list of samples could not be converted to an array: {exc}") from None
    return [x if hasattr(x, "shape") else np.asarray(x)], False


class Batches:
    """A re-iterable sequence of mini-batches; see :func:`batches`."""

    def __init__(self, x, y=None, batch_size=32, shuffle=False, seed=None, drop_remainder=False):
        self.batch_size = _check_positive_int("batch_size", batch_size)
        self._xs, self._x_multi = _as_list(x, "x")
        self._ys, self._y_multi = ([], False) if y is None else _as_list(y, "y")
        self._has_y = y is not None
        arrays = self._xs + self._ys
        for a in arrays:
            if getattr(a, "ndim", 0) == 0:
                raise ValueError("x and y must be arrays with a leading sample axis, got a scalar")
        n = len(arrays[0])
        for name, group in (("x", self._xs), ("y", self._ys)):
            for a in group:
                if len(a) != n:
                    raise ValueError(
                        f"x and y must have the same number of samples, got {n} in x and {len(a)} in {name}")
        self.n = n
        self.shuffle = bool(shuffle)
        self.drop_remainder = bool(drop_remainder)
        self._rng = _random.new_rng() if seed is None else np.random.default_rng(seed)

    def __len__(self):
        if self.drop_remainder:
            return self.n // self.batch_size
        return math.ceil(self.n / self.batch_size)

    def __iter__(self):
        order = self._rng.permutation(self.n) if self.shuffle else None
        stop = len(self) * self.batch_size
        for start in range(0, min(stop, self.n), self.batch_size):
            if order is None:
                sl = slice(start, start + self.batch_size)
                xb = [a[sl] for a in self._xs]
                yb = [a[sl] for a in self._ys]
            else:
                idx = order[start:start + self.batch_size]
                xb = [a[idx] for a in self._xs]
                yb = [a[idx] for a in self._ys]
            xo = xb if self._x_multi else xb[0]
            if not self._has_y:
                yield xo
            else:
                yield xo, (yb if self._y_multi else yb[0])


def batches(x, y=None, batch_size=32, shuffle=False, seed=None, drop_remainder=False):
    """Mini-batches of ``x`` (and ``y``) along the first axis.

    Returns a re-iterable :class:`Batches` (``len()`` is the number of batches). Each iteration
    yields ``xb`` or ``(xb, yb)``; ``x``/``y`` may also be lists of arrays (then lists come back).
    A list or tuple counts as several inputs only when every element is an array (has ``.shape``);
    any other list, such as a plain Python list of samples, is converted with ``np.asarray``.
    With ``shuffle=True`` every pass uses a new permutation drawn from a generator seeded by
    ``seed``, so the same seed gives the same sequence of epochs. The last batch is smaller unless
    ``drop_remainder=True``.
    """
    return Batches(x, y, batch_size=batch_size, shuffle=shuffle, seed=seed, drop_remainder=drop_remainder)


def _split_count(name, value, n):
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a fraction in [0, 1) or a count, got bool")
    if isinstance(value, numbers.Integral):
        if not 0 <= value <= n:
            raise ValueError(f"{name} must be a count in [0, {n}], got {value}")
        return int(value)
    if isinstance(value, numbers.Real):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be a fraction in [0, 1) or an int count, got {value}")
        return round(value * n)
    raise TypeError(f"{name} must be a fraction or an int count, got {type(value).__name__}")


def train_valid_test_split(*arrays, valid=0.2, test=0.1, shuffle=False, seed=None):
    """Split arrays along the first axis into train, validation and test parts, in that order.

    valid and test are fractions of the samples (rounded) or sample counts; train gets the rest.
    With ``shuffle=True`` the samples are permuted first (seeded by ``seed``). For one array the
    result is ``(train, valid, test)``; for several, ``((x_tr, y_tr, ...), (x_va, ...), (x_te, ...))``
    so each part can be passed to ``fit(*train, validation_data=valid)``.

    >>> series = generate_time_series(10000, 51, seed=42)
    >>> tr, va, te = train_valid_test_split(series, valid=2000, test=1000)   # 7000/2000/1000
    """
    if not arrays:
        raise ValueError("train_valid_test_split needs at least one array")
    arrs = [a if hasattr(a, "shape") else np.asarray(a) for a in arrays]
    n = len(arrs[0])
    for i, a in enumerate(arrs):
        if len(a) != n:
            raise ValueError(f"all arrays must have the same number of samples, got {n} and {len(a)} (array {i})")
    n_va, n_te = _split_count("valid", valid, n), _split_count("test", test, n)
    if n_va + n_te > n:
        raise ValueError(f"valid + test ({n_va} + {n_te}) exceed the {n} samples")
    n_tr = n - n_va - n_te
    if shuffle:
        order = (_random.new_rng() if seed is None else np.random.default_rng(seed)).permutation(n)
        arrs = [a[order] for a in arrs]
    cuts = [(0, n_tr), (n_tr, n_tr + n_va), (n_tr + n_va, n)]
    parts = [tuple(a[lo:hi] for a in arrs) for lo, hi in cuts]
    if len(arrs) == 1:
        return tuple(p[0] for p in parts)
    return tuple(parts)
