"""Command line: ``python -m fastrnn info|demo|bench``.

- ``info``: version, ISA path, threads, caches and the GEMM blocks derived from them, CUDA
  (``fastrnn.info()``).
- ``demo``: the time-series lesson (naive forecast, linear model, SimpleRNN(1), deep RNN) in a
  quick configuration (all 10,000 series, fewer epochs: about 2 s on two Zen 4 cores); prints the
  validation-MSE table.
- ``bench``: the benchmark table (``fastrnn._bench.main(argv)``).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path


def _find_example(name):
    """Path of an example script: the source tree's examples/ or a copy installed in the package."""
    here = Path(__file__).resolve().parent
    for cand in (here.parent.parent / "examples" / name, here / "_examples" / name):
        if cand.is_file():
            return cand
    return None


def _load_module(path, modname):
    spec = importlib.util.spec_from_file_location(modname, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cmd_info(args):
    import fastrnn

    fastrnn.info()
    return 0


def _cmd_demo(args):
    path = _find_example("time_series.py")
    if path is None:
        print("fastrnn demo: the time-series example (examples/time_series.py) was not found; it ships "
              "with the source tree: run it from a checkout of fastrnn", file=sys.stderr)
        return 2
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # the example imports its helper module _common
    mod = _load_module(path, "fastrnn_example_time_series")
    argv = ["--demo"]
    if args.out:
        argv += ["--out", args.out]
    if args.epochs is not None:
        argv += ["--epochs", str(args.epochs)]
    if args.json:
        argv.append("--json")
    return mod.main(argv) or 0


def _cmd_bench(args):
    from . import _bench

    return _bench.run_from_args(args, args.parser) or 0


def build_parser(prog=None):
    """The argparse parser for ``fastrnn`` / ``python -m fastrnn``."""
    from . import __version__, _bench

    p = argparse.ArgumentParser(prog=prog or _prog_name(),
                                description="fastrnn: fast SimpleRNN / LSTM / GRU kernels for NumPy")
    p.add_argument("--version", action="version", version=f"fastrnn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="{info,demo,bench}")
    sub.required = True
    s = sub.add_parser("info", help="version, ISA in use, threads, caches, GEMM blocks, CUDA availability")
    s.set_defaults(func=_cmd_info)
    s = sub.add_parser("demo", help="train the time-series lesson's models and print the MSE table")
    s.add_argument("--out", default=None,
                   help="folder for the plot (default: examples/out of a source tree, else ./fastrnn_out)")
    s.add_argument("--epochs", type=int, default=None, help="epochs per model (default: the demo's)")
    s.add_argument("--json", action="store_true", help="end with a machine-readable line: RESULTS_JSON {...}")
    s.set_defaults(func=_cmd_demo)
    s = sub.add_parser("bench", help="benchmark table (fastrnn vs NumPy reference vs PyTorch)",
                       description="Times fastrnn's LSTM and GRU kernels against the NumPy reference "
                                   "and PyTorch, side by side in one run (see bench/RESULTS.md).")
    _bench.add_arguments(s)
    s.set_defaults(func=_cmd_bench, parser=s)
    return p


def _prog_name():
    """'fastrnn' when run as the console script, 'python -m fastrnn' when run as a module."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return "python -m fastrnn" if name in ("__main__.py", "-m", "-c", "") else "fastrnn"


def main(argv=None):
    """Entry point of ``python -m fastrnn`` and of the ``fastrnn`` console script."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
