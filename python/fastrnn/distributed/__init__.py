"""Data-parallel training over MPI (mpi4py) on CPUs and NCCL (CuPy) on GPUs, with Horovod's names.

Start N copies of the script with ``mpiexec -n N python train.py``; each is a rank. Every rank
builds the same model, trains on its own share of the data, and the gradients are averaged over
the ranks before each update, so the weights stay identical::

    import fastrnn as fr
    import fastrnn.distributed as dist

    dist.init()
    fr.set_seed(0)
    x_mine, y_mine = dist.shard(x, y)                 # this rank's contiguous slice
    model.compile(optimizer=dist.DistributedOptimizer(fr.optim.Adam()), loss="binary_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_mine, y_mine, batch_size=64, epochs=5, validation_data=dist.shard(x_val, y_val),
              callbacks=[fr.callbacks.EarlyStopping(patience=2)])
    model.save("model.fastrnn")                       # written by rank 0 only

What ``fit`` does with a :class:`DistributedOptimizer` on several ranks: broadcasts rank 0's
weights and optimizer state at the start; runs the same number of steps on every rank (the
largest shard's; a rank whose shard ran out joins the reductions with zero weight); weighs each
rank's gradient by its number of loss entries (the step equals one process on the union of the
batches); puts a :class:`MetricAverageCallback` first so the epoch's logs are global figures on
every rank (EarlyStopping and ReduceLROnPlateau decide the same everywhere, and a stop requested
on any rank stops all of them after the same batch); shows the progress bar and the
``verbose=2`` lines on rank 0 only, and runs a ``CSVLogger`` on rank 0 only. ``batch_size`` is
per rank. ``Model.save`` and
``save_weights`` write on rank 0 only.

``import fastrnn`` does not import this package, and this package imports mpi4py only in
:func:`init`. An exception that ends one rank aborts all of them (``MPI_Abort``) after printing
its traceback, so a failure never leaves the others waiting.
"""
from __future__ import annotations

from ._optimizer import DistributedOptimizer, MetricAverageCallback, allreduce, broadcast_parameters
from ._world import init, is_initialized, local_rank, local_size, rank, size
from .sharding import shard, shard_batches, shard_indices

__all__ = [
    "DistributedOptimizer",
    "MetricAverageCallback",
    "allreduce",
    "broadcast_parameters",
    "init",
    "is_initialized",
    "local_rank",
    "local_size",
    "rank",
    "shard",
    "shard_batches",
    "shard_indices",
    "size",
]
