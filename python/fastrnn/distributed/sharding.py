"""Each rank's share of the data (plain NumPy: no MPI needed, testable in one process).

* :func:`shard_indices`: the sample indices of one rank. All ranks compute the same (optionally
  shuffled, by ``seed`` and ``epoch``) order and cut it into ``size`` contiguous blocks, the first
  ``n % size`` blocks one sample longer. ``remainder`` decides what happens to those extra samples:
  ``"uneven"`` keeps them (shards differ by at most one sample), ``"drop"`` leaves them out (every
  shard ``n // size``), ``"pad"`` repeats the first samples of the order so every shard has
  ``ceil(n / size)`` (as PyTorch's DistributedSampler).
* :func:`shard`: the same rows of several arrays.
* :func:`shard_batches`: each global mini-batch of an iterable (such as :func:`fastrnn.data.batches`)
  split across the ranks, so every rank sees the same number of batches.

Uneven shards are safe with ``fit``: under a :class:`~fastrnn.distributed.DistributedOptimizer`
every rank runs the same number of steps (a rank whose shard ran out joins the remaining steps'
gradient reductions with zero weight), and the averaged gradient weighs each rank by its number of
samples, so the result is the gradient of the union of the ranks' batches.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

__all__ = ["shard", "shard_batches", "shard_indices"]

_REMAINDERS = ("uneven", "drop", "pad")


def _int(value, argname, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{argname}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{argname}: expected an int >= {minimum}, got {value}")
    return int(value)


def _rank_size(rank, size):
    if rank is None or size is None:
        if rank is not None or size is not None:
            raise ValueError("rank, size: give both or neither (neither: those of fastrnn.distributed.init())")
        from . import _world

        if not _world.is_initialized():
            raise ValueError("rank, size: fastrnn.distributed.init() was not called; pass rank= and size=")
        return _world.rank(), _world.size()
    size = _int(size, "size", 1)
    rank = _int(rank, "rank", 0)
    if rank >= size:
        raise ValueError(f"rank: expected 0 <= rank < size={size}, got {rank}")
    return rank, size


def _check_remainder(remainder):
    if remainder not in _REMAINDERS:
        raise ValueError(f"remainder: expected one of {_REMAINDERS}, got {remainder!r}")
    return remainder


def _blocks(n, size):
    """Start offsets of ``size`` contiguous blocks of ``n`` items, the first ``n % size`` one longer."""
    base, extra = divmod(n, size)
    return [r * base + min(r, extra) for r in range(size + 1)]


def shard_indices(n: int, rank: int | None = None, size: int | None = None, *, shuffle: bool = False,
                  seed: int = 0, epoch: int = 0, remainder: str = "uneven") -> np.ndarray:
    """The indices of the samples that belong to one rank.

    Args:
        n: The number of samples (>= 0).
        rank: This rank (default: that of :func:`fastrnn.distributed.init`).
        size: The number of ranks (default: that of :func:`fastrnn.distributed.init`).
        shuffle: Permute the samples first, the same way on every rank.
        seed: Seed of the permutation (the same on every rank).
        epoch: Mixed into the seed, so each epoch has its own permutation.
        remainder: 'uneven' (default: the first ``n % size`` ranks get one more sample), 'drop'
            (those samples are left out) or 'pad' (the first samples of the order are repeated so
            every rank has ``ceil(n / size)``).

    Returns:
        An int64 array of indices into the samples.

    Example:
        >>> from fastrnn.distributed import shard_indices
        >>> [shard_indices(7, r, 3).tolist() for r in range(3)]
        [[0, 1, 2], [3, 4], [5, 6]]
        >>> [shard_indices(7, r, 3, remainder="pad").tolist() for r in range(3)]
        [[0, 1, 2], [3, 4, 5], [6, 0, 1]]
    """
    n = _int(n, "n", 0)
    rank, size = _rank_size(rank, size)
    remainder = _check_remainder(remainder)
    seed = _int(seed, "seed", 0)
    epoch = _int(epoch, "epoch", 0)
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n, dtype=np.int64)
    order = order.astype(np.int64, copy=False)
    if remainder == "drop":
        per = n // size
        return order[rank * per:(rank + 1) * per].copy()
    if remainder == "pad":
        per = math.ceil(n / size) if n else 0
        if per * size > n:
            order = np.resize(order, per * size)  # repeats from the start
        return order[rank * per:(rank + 1) * per].copy()
    starts = _blocks(n, size)
    return order[starts[rank]:starts[rank + 1]].copy()


def shard(*arrays: Any, rank: int | None = None, size: int | None = None, shuffle: bool = False, seed: int = 0,
          epoch: int = 0, remainder: str = "uneven") -> Any:
    """One rank's rows of arrays that share their first axis (the rows of :func:`shard_indices`).

    Args:
        *arrays: Arrays with the same number of samples (first axis); a list of arrays counts as
            one input of several arrays and comes back as a list.
        rank: This rank (default: that of :func:`fastrnn.distributed.init`).
        size: The number of ranks (default: that of :func:`fastrnn.distributed.init`).
        shuffle: Permute the samples first, the same way on every rank.
        seed: Seed of the permutation.
        epoch: Mixed into the seed.
        remainder: 'uneven', 'drop' or 'pad' (see :func:`shard_indices`).

    Returns:
        The rank's part of each array: one array for one argument, else a tuple.

    Example:
        >>> import numpy as np
        >>> from fastrnn.distributed import shard
        >>> x, y = np.arange(10).reshape(5, 2), np.arange(5)
        >>> xs, ys = shard(x, y, rank=1, size=2)
        >>> ys.tolist()
        [3, 4]
    """
    if not arrays:
        raise ValueError("arrays: give at least one array")
    flat = []
    for i, a in enumerate(arrays):
        parts = list(a) if isinstance(a, list) else [a]
        for j, p in enumerate(parts):
            if not hasattr(p, "shape") or len(p.shape) == 0:
                raise TypeError(f"arrays[{i}]{'' if not isinstance(a, list) else f'[{j}]'}: expected an array "
                                f"with a sample axis, got {type(p).__name__}")
            flat.append(p)
    n = flat[0].shape[0]
    for p in flat:
        if p.shape[0] != n:
            raise ValueError(f"arrays: every array needs the same number of samples (first axis), got {n} and "
                             f"{p.shape[0]}")
    idx = shard_indices(n, rank, size, shuffle=shuffle, seed=seed, epoch=epoch, remainder=remainder)
    if not shuffle and remainder != "pad" and len(idx):
        idx = slice(int(idx[0]), int(idx[-1]) + 1)  # contiguous: views, no copies
    elif not len(idx):
        idx = slice(0, 0)
    out = [[p[idx] for p in a] if isinstance(a, list) else a[idx] for a in arrays]
    return out[0] if len(out) == 1 else tuple(out)


def _split_batch(batch, rank, size):
    """Rank ``rank``'s contiguous part of one batch (a tuple/list of parts, or one array)."""
    if isinstance(batch, tuple):
        return tuple(_split_batch(b, rank, size) for b in batch)
    if isinstance(batch, list):
        return [_split_batch(b, rank, size) for b in batch]
    starts = _blocks(batch.shape[0], size)
    return batch[starts[rank]:starts[rank + 1]]


def _batch_len(batch):
    while isinstance(batch, (tuple, list)):
        batch = batch[0]
    return batch.shape[0]


def shard_batches(batches: Iterable, rank: int | None = None, size: int | None = None, *,
                  remainder: str = "uneven") -> Iterator:
    """Split every global mini-batch of ``batches`` across the ranks; yields this rank's parts.

    Every rank must iterate the same global batches (for shuffled :func:`fastrnn.data.batches`,
    give the same ``seed`` on every rank), so every rank yields the same number of batches. Each
    batch (``xb``, ``(xb, yb)``, lists of arrays) is cut into ``size`` contiguous parts, the first
    ``len % size`` parts one sample longer.

    Args:
        batches: An iterable of batches (arrays, or tuples / lists of arrays sharing a first axis).
        rank: This rank (default: that of :func:`fastrnn.distributed.init`).
        size: The number of ranks (default: that of :func:`fastrnn.distributed.init`).
        remainder: 'uneven' (default): a batch with fewer samples than ranks raises ValueError
            (some rank would get none); 'drop': such batches are skipped on every rank.

    Yields:
        This rank's part of each batch, in the batch's structure.

    Raises:
        ValueError: A batch has fewer samples than ranks (with remainder='uneven').
    """
    rank, size = _rank_size(rank, size)
    if remainder not in ("uneven", "drop"):
        raise ValueError(f"remainder: expected 'uneven' or 'drop', got {remainder!r}")
    for i, batch in enumerate(batches):
        n = _batch_len(batch)
        if n < size:
            if remainder == "drop":
                continue
            raise ValueError(f"batches: batch {i} has {n} samples, fewer than the {size} ranks; use "
                             "remainder='drop' (or drop_remainder=True in fastrnn.data.batches)")
        yield _split_batch(batch, rank, size)
