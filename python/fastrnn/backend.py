"""Backend plumbing: the compiled modules, the array module (NumPy or CuPy), threads and ISA.

The C++ extension ``fastrnn._core`` is imported lazily so that the pure-Python parts
(``fastrnn.reference``) stay importable while the extension is being rebuilt.
"""
from __future__ import annotations

import importlib
import os

import numpy as np

_core_module = None
_cuda_module = None
_cuda_checked = False
_cuda_error = None


# How long an idle OpenMP worker of the kernels spins before it sleeps. libgomp's default
# (300,000 spins) keeps the kernels' workers busy-waiting long after a call returns; code that
# alternates short kernel calls with NumPy's BLAS (whose threads poll too) then has three or more
# threads spinning on the cores the work needs: on few cores, a Seq2Seq training step (one-step
# decoder calls between small matmuls) ran several times slower with the default than with a
# short spin, while the large benchmark shapes did not change beyond the noise. (The layers now
# run those matmuls on fastrnn's own GEMM, fastrnn.ops.matmul, which keeps numpy's BLAS threads
# out of the way too.)
# libgomp reads GOMP_SPINCOUNT once, when it loads: the extension is loaded here with the
# variable set and the environment is then put back, so that other libraries (PyTorch's own
# libgomp, child processes) keep their defaults. A user's GOMP_SPINCOUNT or OMP_WAIT_POLICY wins.
DEFAULT_GOMP_SPINCOUNT = "3000"


def _load_core_with_short_spin():
    set_here = "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ
    if set_here:
        os.environ["GOMP_SPINCOUNT"] = DEFAULT_GOMP_SPINCOUNT
    try:
        core()
    except ImportError:  # not built (a source checkout): core() raises its hint when used
        pass
    finally:
        if set_here:
            del os.environ["GOMP_SPINCOUNT"]


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


_load_core_with_short_spin()


def cuda():
    """The compiled CUDA module ``fastrnn._cuda``, or None when it is not there.

    A module that was not built (no CUDA compiler at build time) is None silently. A module that
    is there but fails to import (a broken build, a missing symbol or library) is None too, so
    that fastrnn keeps working on the references, but the error is kept
    (:func:`cuda_import_error`), reported by ``fastrnn.info()`` and warned about once.
    """
    global _cuda_module, _cuda_checked, _cuda_error
    if not _cuda_checked:
        _cuda_checked = True
        _cuda_error = None
        mod = None
        try:
            mod = importlib.import_module(f"{__package__}._cuda")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}._cuda":  # the module is there but needs a missing one
                _cuda_error = exc
        except ImportError as exc:
            _cuda_error = exc
        if _cuda_error is not None:
            import warnings

            warnings.warn(f"fastrnn's CUDA module (fastrnn._cuda) is present but failed to import: "
                          f"{_cuda_error}; CuPy arrays run the reference", RuntimeWarning, stacklevel=2)
        _cuda_module = mod
    return _cuda_module


def cuda_import_error():
    """The ImportError of a CUDA module that is present but failed to import, else None."""
    cuda()
    return _cuda_error


def cuda_device_count() -> int:
    """Number of CUDA devices the CUDA module sees (0 without the module or without a GPU)."""
    mod = cuda()
    if mod is None:
        return 0
    try:
        return int(mod.device_count())
    except RuntimeError:
        return 0


_kernel_support = {}


def cuda_kernel_support(device=None) -> dict:
    """Whether the CUDA module's kernels run on a device (None = the current one), read once per
    device: a dict with ``ok`` and, from the module, the device's compute capability, the
    kernel image's version and, when not ok, the CUDA error and its message (e.g. "no kernel
    image is available for execution on the device" for a GPU older than the build's
    architectures). ``ok`` is False without the module or without a device.
    """
    mod = cuda()
    if mod is None:
        return {"ok": False, "device": device, "message": "the CUDA module is not built"
                if _cuda_error is None else f"the CUDA module failed to import: {_cuda_error}"}
    if cuda_device_count() < 1:
        return {"ok": False, "device": device, "message": "no CUDA device"}
    if device is None:
        info = dict(mod.kernel_support(-1))
        device = info["device"]
        _kernel_support.setdefault(device, info)
    if device not in _kernel_support:
        _kernel_support[device] = dict(mod.kernel_support(int(device)))
    return dict(_kernel_support[device])


def cuda_kernels_available(device=None) -> bool:
    """True when the CUDA module is built, sees a CUDA device and its kernels run on that device
    (None = the current one; read once per device and process).

    Then fastrnn.ops runs CuPy float32 arrays through the CUDA kernels; otherwise (and for
    float64) CuPy arrays run the array-generic NumPy reference on the GPU. A GPU whose
    architecture the build has no kernel image for (see CMakeLists.txt: CUDAARCHS) counts as
    not available.
    """
    known = _kernel_support.get(device) if device is not None else None
    if known is not None:  # the per-call path of fastrnn.ops
        return bool(known["ok"])
    return bool(cuda_kernel_support(device)["ok"])


def array_module(*arrays):
    """``numpy`` or ``cupy``: the module the given arrays belong to (None entries are ignored)."""
    for a in arrays:
        if a is None:
            continue
        mod = type(a).__module__
        if mod.startswith("cupy"):
            import cupy

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
        raise ValueError(f"set_num_threads: n must be <= {limit} (4x the cores this process may use, at least 64), "
                         f"got {n}")
    core().set_num_threads(int(n))


def max_num_threads() -> int:
    """The largest thread count set_num_threads accepts: 4x the usable cores, at least 64."""
    return max(64, 4 * default_num_threads())


def get_num_threads() -> int:
    """The number of threads the CPU kernels use."""
    return int(core().get_num_threads())


def isa() -> str:
    """The instruction-set path the CPU kernels use now: 'scalar', 'avx2', 'avx512' or 'neon'."""
    return str(core().get_isa())


def set_isa(name: str) -> None:
    """Force an instruction-set path ('scalar', 'avx2', 'avx512', 'neon' or 'auto'); ValueError if unsupported."""
    if not isinstance(name, str):
        raise TypeError(f"set_isa: name must be a str, got {type(name).__name__}")
    if "\x00" in name:  # C strings end there: 'scalar\x00x' must not select 'scalar'
        raise ValueError(f"set_isa: name must not contain NUL characters, got {name!r}")
    core().set_isa(name)


def available_isas() -> list:
    """The instruction-set paths this build and this CPU support, narrowest first."""
    return list(core().available_isas())


def cache_info() -> dict:
    """The CPU's data caches as the operating system reports them for CPU 0.

    Returns:
        dict: ``l1d``, ``l2``, ``l3`` in bytes (0 when unknown), ``l1d_shared_by``,
        ``l2_shared_by``, ``l3_shared_by`` (logical CPUs sharing each, 0 when unknown) and
        ``source`` ('sysfs', 'sysconf', 'sysctl' or 'unknown').
    """
    return dict(core().cache_info())


def gemm_blocking() -> dict:
    """The CPU GEMM's register tile and cache blocks on the active ISA path.

    The blocks are derived at run time from the cache sizes (``cache_info()``, read once per
    process), BLIS-style (csrc/cpu/blocking.h): the A micro-panel (``mr`` x ``kc``) fills about
    half of the L1d, the packed B block (``kc`` x ``nc``) about half of the L2, the packed A block
    (``mc`` x ``kc``) about half of one core's share of the L3; when all of B's columns fit one
    block, the A block is used once and is cut to fill a quarter of the L2 (``mc_l2`` rows).
    The same sizes set the recurrent time loops' split: they split a batch by rows (no barrier
    per step, every thread streaming all of W_hh) only while the packed W_hh takes at most
    ``rowsplit_max_bytes``, half the L3 (16 MiB when it is unknown). The environment variable
    ``FASTRNN_CACHE_SIZES="l1d,l2,l3[,cores sharing the L3]"`` (bytes, K/M/G suffixes allowed; read
    once) or :func:`set_gemm_caches` replaces the machine's sizes. ``kc`` sets where each element's
    partial sums are added, so results depend on it (never on the thread count).

    Returns:
        dict: ``isa``, ``mr``, ``nr`` (the register tile), ``kc``, ``mc``, ``nc``, ``mc_l2`` (the blocks),
        ``rowsplit_max_bytes`` (the time loops' row-split limit),
        ``l1d``, ``l2``, ``l3`` (bytes, 0 when unknown), ``l3_cores`` (cores sharing the L3, 0 when
        unknown), ``source`` (where the sizes come from: 'sysfs', 'sysconf', 'sysctl', 'unknown',
        'FASTRNN_CACHE_SIZES' or 'set_gemm_caches') and ``env_error`` (why a FASTRNN_CACHE_SIZES
        that was set is ignored, else '').
    """
    return dict(core().gemm_blocking())


def set_gemm_caches(l1d: int = 0, l2: int = 0, l3: int = 0, l3_cores: int = 0) -> None:
    """Derive the CPU GEMM's blocks from these cache sizes from now on (for tests and tuning).

    Tiny sizes give many small blocks (every edge of the blocked loops); all sizes 0 (the
    default) go back to the machine's caches (or FASTRNN_CACHE_SIZES's). Changing the sizes
    can change ``kc`` and with it the last bits of the GEMM's results.

    Args:
        l1d (int): L1 data cache of one core in bytes (0: unknown, 32 KiB is assumed).
        l2 (int): L2 cache of one core in bytes (0: unknown, 512 KiB is assumed).
        l3 (int): L3 cache in bytes (0: unknown or none, 2 MiB per core is assumed).
        l3_cores (int): Cores sharing that L3 (0: unknown, 1 is assumed).
    """
    for name, v in (("l1d", l1d), ("l2", l2), ("l3", l3), ("l3_cores", l3_cores)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"set_gemm_caches: {name} must be an int, got {type(v).__name__}")
        if v < 0:
            raise ValueError(f"set_gemm_caches: {name} must be >= 0, got {v}")
    if l3_cores > 4096:
        raise ValueError(f"set_gemm_caches: l3_cores must be <= 4096, got {l3_cores}")
    core().set_gemm_caches(int(l1d), int(l2), int(l3), int(l3_cores))


def _blocking_line(b: dict) -> str:
    """'avx512 tile 8x32, KC 512, MC 4096, NC 256, MC_L2 128, row split up to 16 MiB of W_hh (sysfs
    caches)' from ``gemm_blocking()``."""
    line = (f"{b['isa']} tile {b['mr']}x{b['nr']}, KC {b['kc']}, MC {b['mc']}, NC {b['nc']}, MC_L2 {b['mc_l2']}, "
            f"row split up to {b['rowsplit_max_bytes'] / 2**20:g} MiB of W_hh ({b['source']} caches)")
    return line + (f"; {b['env_error']}" if b.get("env_error") else "")


def fma_peak(threads: int | None = None, seconds: float = 0.3) -> float:
    """The fused multiply-add throughput of the active ISA path, measured now, in FLOP/s.

    ``threads`` threads each run independent FMA chains on registers (no memory traffic) in runs of
    about 20 ms, repeated for ``seconds``; the fastest run is returned, since load from other
    processes only ever lowers it. This is the limit the benchmark states its figures' share of.

    Args:
        threads (int | None): Threads to measure with (default: the kernels' thread count).
        seconds (float): Time to spend measuring, > 0.

    Returns:
        float: Floating-point operations per second (an FMA counts 2 per lane).
    """
    import time

    threads = get_num_threads() if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"fma_peak: threads must be an int >= 1, got {threads!r}")
    if not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(f"fma_peak: seconds must be > 0, got {seconds!r}")
    c = core()
    iters = 100_000
    while True:  # calibrate one run to ~20 ms
        t0 = time.perf_counter()
        c.fma_peak(iters, threads)
        if time.perf_counter() - t0 > 0.01 or iters > 1 << 36:
            break
        iters *= 4
    best, end = 0.0, time.perf_counter() + seconds
    while True:
        best = max(best, c.fma_peak(iters, threads))
        if time.perf_counter() >= end:
            return best


def _cache_line(ci: dict) -> str:
    """'L1d 32 KiB, L2 1 MiB, L3 32 MiB shared by 2 CPUs' from ``cache_info()``."""
    def size(b):
        return "unknown" if not b else (f"{b >> 20} MiB" if b >= 1 << 20 and b % (1 << 20) == 0 else f"{b >> 10} KiB")

    parts = []
    for key, label in (("l1d", "L1d"), ("l2", "L2"), ("l3", "L3")):
        by = ci.get(f"{key}_shared_by", 0)
        parts.append(f"{label} {size(ci.get(key, 0))}" + (f" shared by {by} CPUs" if by > 1 else ""))
    return ", ".join(parts) + f" ({ci.get('source', 'unknown')})"
