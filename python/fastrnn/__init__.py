"""fastrnn: fast recurrent neural networks for NumPy.

SimpleRNN, LSTM and GRU with hand-written AVX2 / AVX-512 kernels for the forward pass and
backpropagation through time (full and truncated), NumPy references for every kernel, and a thin
layer of Keras-style layers, losses, optimizers and models on top.
"""
from __future__ import annotations

from . import (
    backend,
    callbacks,
    interop,
    layers,
    losses,
    metrics,
    ops,
    optim,
    quantization,
    reference,
    utils,
)
from ._version import __version__
from .backend import available_isas, get_num_threads, isa, set_isa, set_num_threads
from .layers import Input
from .models import Model, Seq2Seq, Sequential
from .quantization import quantize
from .saving import load_model
from .utils import set_random_seed
from .utils import set_random_seed as set_seed


def __getattr__(name: str):
    # fastrnn.onnx (the ONNX export) is imported on first use: ``import fastrnn`` never imports onnx
    if name == "onnx":
        import importlib

        return importlib.import_module(".onnx", __name__)
    raise AttributeError(f"module 'fastrnn' has no attribute {name!r}")


def info(file=None) -> dict:
    """Print and return the version, the ISA path in use, the thread count, the CPU's data caches
    (``backend.cache_info()``), the CPU GEMM's blocks derived from them (``backend.gemm_blocking()``)
    and CUDA availability (devices, whether the CUDA kernels run on the
    current one, and why not when they are present)."""
    try:
        core = backend.core()
        isa_now, isas, threads = core.get_isa(), list(core.available_isas()), core.get_num_threads()
        caches = backend.cache_info()
        blocking = backend.gemm_blocking()
        compiled = True
    except ImportError:
        isa_now, isas, threads, compiled, caches, blocking = "unavailable", [], 0, False, {}, {}
    ndev = backend.cuda_device_count()
    support = backend.cuda_kernel_support()
    import_error = backend.cuda_import_error()
    data = {
        "version": __version__,
        "extension": compiled,
        "isa": isa_now,
        "isas_available": isas,
        "threads": threads,
        "caches": caches,
        "gemm_blocking": blocking,
        "cuda_module": backend.cuda() is not None,
        "cuda_devices": ndev,
        "cuda_available": ndev > 0,
        "cuda_kernels": bool(support["ok"]),
        "cuda_problem": None if support["ok"] or (ndev == 0 and import_error is None) else support["message"],
    }
    lines = [
        f"fastrnn {data['version']}",
        f"  ISA path:      {data['isa']} (available: {', '.join(isas) or 'none'})",
        f"  threads:       {data['threads']}",
        f"  caches:        {backend._cache_line(caches) if caches else 'unknown'}",
        f"  GEMM blocks:   {backend._blocking_line(blocking) if blocking else 'unknown'}",
        f"  CUDA module:   {'built' if data['cuda_module'] else 'not built'}; "
        f"devices: {ndev}; CUDA available: {'yes' if data['cuda_available'] else 'no'}; "
        f"CUDA kernels: {'yes' if data['cuda_kernels'] else 'no'}",
    ]
    if data["cuda_problem"]:
        lines.append(f"  CUDA problem:  {data['cuda_problem']} (CuPy arrays run the reference)")
    print("\n".join(lines), file=file)
    return data


__all__ = [
    "Input",
    "Model",
    "Seq2Seq",
    "Sequential",
    "__version__",
    "available_isas",
    "callbacks",
    "get_num_threads",
    "info",
    "interop",
    "isa",
    "layers",
    "load_model",
    "losses",
    "metrics",
    "ops",
    "optim",
    "quantization",
    "quantize",
    "reference",
    "set_isa",
    "set_num_threads",
    "set_random_seed",
    "set_seed",
    "utils",
]
