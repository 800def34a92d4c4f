"""The process group of data-parallel training: mpi4py, imported on ``init()`` only.

``init()`` duplicates ``MPI.COMM_WORLD`` (fastrnn's collectives never mix with the user's own
traffic on the world communicator), splits it by node for ``local_rank()``, and, with more than
one rank, installs an exception hook: an exception that ends one rank prints its traceback with
the rank and then calls ``MPI_Abort``, so every other rank is ended at once instead of waiting
forever in its next collective.
"""
from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

_MISSING = ("fastrnn.distributed needs mpi4py and an MPI library; install them with "
            "pip install 'fastrnn[mpi]' (mpi4py and the MPICH wheel), then start the script with "
            "mpiexec -n N python script.py")

_state: dict[str, Any] = {"comm": None}


class MpiComm:
    """fastrnn's view of an MPI communicator: the few collectives data-parallel training uses.

    Args:
        comm (mpi4py.MPI.Comm): The communicator (init() passes a duplicate of COMM_WORLD).
        mpi (module): The ``mpi4py.MPI`` module.
    """

    def __init__(self, comm: Any, mpi: Any) -> None:
        self.comm = comm
        self.MPI = mpi
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()

    def iallreduce(self, buf: np.ndarray) -> Any:
        """Start summing ``buf`` over the ranks in place; returns the request to ``wait`` on."""
        return self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)

    def wait(self, handle: Any) -> None:
        """Wait for a request from :meth:`iallreduce`."""
        handle.Wait()

    def progress(self, handles: list) -> None:
        """Let MPI advance the pending reductions (MPICH progresses only inside MPI calls)."""
        if handles:
            self.MPI.Request.Testall(handles)

    def allreduce(self, buf: np.ndarray, op: str = "sum") -> None:
        """Reduce ``buf`` over the ranks in place (op 'sum', 'max' or 'min'), blocking."""
        mop = {"sum": self.MPI.SUM, "max": self.MPI.MAX, "min": self.MPI.MIN}[op]
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=mop)

    def bcast_array(self, buf: np.ndarray, root: int) -> None:
        """Overwrite ``buf`` with root's copy (in place)."""
        self.comm.Bcast(buf, root=root)

    def bcast_object(self, obj: Any, root: int) -> Any:
        """Root's ``obj`` on every rank (pickled by mpi4py; in memory only, never from a file)."""
        return self.comm.bcast(obj, root=root)

    def barrier(self) -> None:
        """Wait until every rank arrives."""
        self.comm.Barrier()


def _import_mpi():
    try:
        import mpi4py
    except ImportError:
        raise ImportError(_MISSING) from None
    if "mpi4py.MPI" not in sys.modules:
        # our collectives are all called from the Python thread that called init()
        mpi4py.rc.thread_level = "funneled"
    from mpi4py import MPI

    return MPI


def _install_abort_hook(comm):
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        try:
            sys.stderr.write(f"fastrnn.distributed: rank {comm.rank} of {comm.size} failed with "
                             f"{exc_type.__name__}: {exc}; aborting every rank\n")
            previous(exc_type, exc, tb)
            sys.stderr.flush()
            time.sleep(0.5)  # let mpiexec forward the message before MPI_Abort ends the processes
        finally:
            comm.MPI.COMM_WORLD.Abort(1)

    sys.excepthook = hook


def init() -> None:
    """Start data-parallel training: import mpi4py (initializing MPI) and set up fastrnn's communicator.

    Call it once at the top of a script started with ``mpiexec -n N python script.py``; calling it
    again does nothing. A script run without mpiexec is one rank of a group of one.

    Raises:
        ImportError: mpi4py is not installed (the message says how to install it).
    """
    if _state["comm"] is not None:
        return
    MPI = _import_mpi()
    world = MPI.COMM_WORLD.Dup()
    local = world.Split_type(MPI.COMM_TYPE_SHARED, key=world.Get_rank())
    comm = MpiComm(world, MPI)
    _state.update(comm=comm, local_rank=local.Get_rank(), local_size=local.Get_size())
    local.Free()
    if comm.size > 1:
        _install_abort_hook(comm)


def is_initialized() -> bool:
    """True after :func:`init`."""
    return _state["comm"] is not None


def world() -> MpiComm:
    """The communicator set up by :func:`init` (RuntimeError before it)."""
    comm = _state["comm"]
    if comm is None:
        raise RuntimeError("fastrnn.distributed: call fastrnn.distributed.init() first")
    return comm


def rank() -> int:
    """This process's rank, 0 .. size() - 1 (RuntimeError before :func:`init`)."""
    return world().rank


def size() -> int:
    """The number of ranks (RuntimeError before :func:`init`)."""
    return world().size


def local_rank() -> int:
    """This process's rank among the ranks on its machine (pick a GPU with it; RuntimeError before init)."""
    world()
    return int(_state["local_rank"])


def local_size() -> int:
    """The number of ranks on this process's machine (RuntimeError before :func:`init`)."""
    world()
    return int(_state["local_size"])
