"""Small helpers shared by the example scripts (seeding, timing, saving plots, result lines)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np


def set_seed(seed):
    """Seed weight initialisation and dropout in fastrnn, and NumPy's global generator."""
    import fastrnn

    fn = getattr(fastrnn, "set_seed", None)
    if fn is None:
        from fastrnn.layers import set_seed as fn
    fn(int(seed))
    np.random.seed(int(seed))


def fit_timed(model, x, y, epochs, **kwargs):
    """``model.fit`` with the wall time; returns (history, seconds per epoch actually run)."""
    t0 = time.perf_counter()
    history = model.fit(x, y, epochs=epochs, **kwargs)
    elapsed = time.perf_counter() - t0
    ran = max(1, len(next(iter(history.history.values()), [])) if history is not None else epochs)
    return history, elapsed / ran


def save_figure(fig, path, dpi=110):
    """Write a matplotlib figure atomically (temporary file in the same folder, then rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def can_plot():
    """True when matplotlib is installed; otherwise says how to get the plots and returns False."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("plot skipped: matplotlib is not installed (pip install matplotlib, or fastrnn[examples])")
        return False
    return True


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def print_results(args, example, mode, results):
    """With ``--json``: the machine-readable last line that tests and scripts parse,
    ``RESULTS_JSON {...}`` (people read the table above it)."""
    if getattr(args, "json", False):
        print("RESULTS_JSON " + json.dumps({"example": example, "mode": mode, "results": results}), flush=True)


def default_out_dir():
    """Where the plots go by default: ``examples/out`` beside the scripts of a source tree (whatever
    the current directory), ``./fastrnn_out`` for the copies installed with the package (the demo)."""
    here = Path(__file__).resolve().parent
    if here.name == "_examples":
        return os.path.join(os.getcwd(), "fastrnn_out")
    return str(here / "out")


def add_common_args(parser):
    """The options every example takes: ``--out``, ``--no-plot``, ``--json`` and ``--threads``."""
    parser.add_argument("--out", default=default_out_dir(), help="folder for the plots (default: %(default)s)")
    parser.add_argument("--no-plot", action="store_true", help="skip the plots")
    parser.add_argument("--json", action="store_true",
                        help="end with a machine-readable line: RESULTS_JSON {...}")
    add_threads_arg(parser)


def add_mode_args(parser, epochs_help, demo_help=None):
    """The options :func:`mode_config` reads: ``--smoke``, ``--demo`` where the example has a demo
    mode (``demo_help`` given; it excludes ``--smoke``) and ``--epochs``."""
    modes = parser.add_mutually_exclusive_group() if demo_help else parser
    modes.add_argument("--smoke", action="store_true", help="tiny sizes, finishes in seconds")
    if demo_help:
        modes.add_argument("--demo", action="store_true", help=demo_help)
    parser.add_argument("--epochs", type=int, default=None, help=epochs_help)


def mode_config(args, modes):
    """(mode, settings): the mode chosen by --smoke / --demo (else 'full') and a copy of its settings
    with --epochs applied (>= 1, else exit with a message); :func:`add_mode_args` adds the options."""
    mode = "smoke" if args.smoke else "demo" if getattr(args, "demo", False) else "full"
    cfg = dict(modes[mode])
    if args.epochs is not None:
        if args.epochs < 1:
            raise SystemExit("--epochs must be >= 1")
        cfg["epochs"] = args.epochs
    return mode, cfg


def add_threads_arg(parser):
    """``--threads N``: the kernels' thread count (default: fastrnn's, the cores this process may use)."""
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for the kernels (default: all cores this process may use)")


def apply_threads(n):
    """Set the kernels' thread count when ``n`` is given; returns the count in use."""
    import fastrnn

    if n is not None:
        if n < 1:
            raise SystemExit("--threads must be >= 1")
        fastrnn.set_num_threads(int(n))
    try:
        return int(fastrnn.get_num_threads())
    except Exception:  # the extension may be unavailable; the count is informational only
        return None
