"""Backend plumbing: the compiled modules, the array module (NumPy or CuPy), threads and ISA.

The C++ extension ``fastrnn._core`` is imported lazily so that the pure-Python parts
(``fastrnn.reference``) stay importable while the extension is being rebuilt.
"""
from __future__ import annotations

import os

import numpy as np

_core_module = None
_cuda_module = None
_cuda_checked = False


def core():
    """The compiled CPU module ``fastrnn._core``; raises ImportError with a hint when missing."""
    global _core_module
    if _core_module is None:
        try:
            from . import _core as mod  # type: ignore[attr-defined]
        except ImportError as exc:  # pragma: no cover - only on broken installs
            raise ImportError(
                "fastrnn's C++ extension (fastrnn._core) is not built; install the package with "
                "'pip install .' from the source tree"
            ) from exc
        _core_module = mod
    return _core_module


def cuda():
    """The compiled CUDA module ``fastrnn._cuda`` or None when it was not built."""
    global _cuda_module, _cuda_checked
    if not _cuda_checked:
        _cuda_checked = True
        try:
            from . import _cuda as mod  # type: ignore[attr-defined]
        except ImportError:
            mod = None
        _cuda_module = mod
    return _cuda_module


def cuda_device_count() -> int:
    """Number of CUDA devices the CUDA module sees (0 without the module or without a GPU)."""
    mod = cuda()
    if mod is None:
        return 0
    try:
        return int(mod.device_count())
    except RuntimeError:
        return 0


_cuda_kernels = None


def cuda_kernels_available() -> bool:
    """True when the CUDA module is built and sees a CUDA device (read once per process).

    Then fastrnn.ops runs CuPy float32 arrays through the CUDA kernels; otherwise (and for
    float64) CuPy arrays run the array-generic NumPy reference on the GPU.
    """
    global _cuda_kernels
    if _cuda_kernels is None:
        _cuda_kernels = cuda_device_count() > 0
    return _cuda_kernels


def array_module(*arrays):
    """``numpy`` or ``cupy``: the module the given arrays belong to (None entries are ignored)."""
    for a in arrays:
        if a is None:
            continue
        mod = type(a).__module__
        if mod.startswith("cupy"):
            import cupy  # noqa: PLC0415

            return cupy
    return np


def to_numpy(a):
    """A NumPy view or copy of ``a`` (CuPy arrays are copied to the host)."""
    if a is None:
        return None
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return np.asarray(a)


def default_num_threads() -> int:
    """The cores this process may run on (the affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def set_num_threads(n: int) -> None:
    """Set the number of threads the CPU kernels use (a positive integer)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"set_num_threads: n must be a positive int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    limit = max_num_threads()
    if n > limit:
        raise ValueError(f"set_num_threads: n must be <= {limit} (4x the cores this process may use, at least 64), got {n}")
    core().set_num_threads(int(n))


def max_num_threads() -> int:
    """The largest thread count set_num_threads accepts: 4x the usable cores, at least 64."""
    return max(64, 4 * default_num_threads())


def get_num_threads() -> int:
    """The number of threads the CPU kernels use."""
    return int(core().get_num_threads())


def isa() -> str:
    """The instruction-set path the CPU kernels use now: 'scalar', 'avx2' or 'avx512'."""
    return str(core().get_isa())


def set_isa(name: str) -> None:
    """Force an instruction-set path ('scalar', 'avx2', 'avx512' or 'auto'); ValueError if unsupported."""
    if not isinstance(name, str):
        raise TypeError(f"set_isa: name must be a str, got {type(name).__name__}")
    core().set_isa(name)


def available_isas() -> list:
    """The instruction-set paths this build and this CPU support, narrowest first."""
    return list(core().available_isas())
