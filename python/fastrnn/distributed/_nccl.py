"""NCCL through CuPy (``cupy.cuda.nccl``) for models whose parameters live on CUDA devices.

MPI starts the processes and carries the NCCL unique id from rank 0 to the others; NCCL then
sums the CuPy gradient buckets in place on the GPUs. Each rank should use the GPU
``fastrnn.distributed.local_rank()`` (``cupy.cuda.Device(local_rank()).use()``) before building
its model. The reductions are queued on CuPy's current stream, after the backward kernels that
wrote the gradients, so no host synchronization is needed until the optimizer reads them.
"""
from __future__ import annotations

from typing import Any

import numpy as np

# numpy dtype name -> the name of NCCL's constant in cupy.cuda.nccl
_NCCL_TYPES = {
    "float16": "NCCL_FLOAT16",
    "float32": "NCCL_FLOAT32",
    "float64": "NCCL_FLOAT64",
}


def nccl_dtype(nccl: Any, dtype: Any) -> int:
    """NCCL's data type constant for a NumPy / CuPy dtype.

    Args:
        nccl: The ``cupy.cuda.nccl`` module (or a stand-in with the same constants).
        dtype: float16, float32 or float64.

    Returns:
        The constant.
    """
    name = np.dtype(dtype).name
    if name not in _NCCL_TYPES:
        raise TypeError(f"dtype: NCCL reductions here take {sorted(_NCCL_TYPES)}, got {name}")
    return getattr(nccl, _NCCL_TYPES[name])


def _import_cupy():
    try:
        import cupy
        from cupy.cuda import nccl
    except ImportError as exc:
        raise ImportError("fastrnn.distributed: models on CUDA devices need CuPy with NCCL "
                          f"(pip install 'fastrnn[gpu]'): {exc}") from None
    return cupy, nccl


class NcclComm:
    """The bucket communicator on GPUs: NCCL sums, with the unique id broadcast over MPI.

    Args:
        mpi_comm (MpiComm): The MPI communicator that started the ranks (rank, size, bcast).
        cupy (module | None): The cupy module (default: imported); tests pass a stand-in.
        nccl (module | None): The ``cupy.cuda.nccl`` module (default: imported with cupy).
    """

    def __init__(self, mpi_comm: Any, cupy: Any = None, nccl: Any = None) -> None:
        if cupy is None or nccl is None:
            cupy, nccl = _import_cupy()
        self.cupy, self.nccl = cupy, nccl
        self.rank, self.size = mpi_comm.rank, mpi_comm.size
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = mpi_comm.bcast_object(uid, 0)
        self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)

    def iallreduce(self, buf: Any) -> Any:
        """Queue the in-place sum of the CuPy array ``buf`` on the current stream; returns the stream."""
        stream = self.cupy.cuda.get_current_stream()
        ptr = buf.data.ptr
        self.comm.allReduce(ptr, ptr, buf.size, nccl_dtype(self.nccl, buf.dtype), self.nccl.NCCL_SUM, stream.ptr)
        return stream

    def wait(self, handle: Any) -> None:
        """Wait for the stream that :meth:`iallreduce` returned."""
        handle.synchronize()

    def progress(self, handles: list) -> None:
        """Nothing to do: NCCL progresses on the GPU by itself."""
