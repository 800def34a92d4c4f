"""Smoke test of an installed fastrnn (a wheel), run from outside the source tree.

Checks that fastrnn and its compiled module are the installed ones (site-packages, a real file, not
a checkout's python/ or a development symlink), that ``python -m fastrnn info`` runs, an LSTM
forward and backward on the C++ kernels against the NumPy reference (fastrnn.reference, float64)
on every ISA path this CPU has and on 1 and 2 threads, a tiny Sequential fit, and that the OpenMP
runtime the module loads is the copy vendored into the wheel by its repair: Linux (auditwheel)
``fastrnn.libs/libgomp-*.so*`` in ldd's output, macOS (delocate) ``@loader_path/.dylibs/libomp``
in otool's.

Usage: ``python wheel_smoke.py [--no-compiler]``; --no-compiler also checks that no C or C++
compiler can be found on PATH (.ci/wheel runs it so). Used by .ci/wheel and by cibuildwheel's
test-command (pyproject.toml). Exits non-zero with a message on the first failed check.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

COMPILERS = ("cc", "c++", "gcc", "g++", "clang", "clang++", "x86_64-linux-gnu-gcc", "x86_64-linux-gnu-g++")


def fail(msg):
    print(f"wheel smoke test FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def site_dirs():
    """The installation's package folders (purelib and platlib), resolved."""
    paths = sysconfig.get_paths()
    return {Path(paths[k]).resolve() for k in ("purelib", "platlib")}


def check_no_compiler():
    found = {c: shutil.which(c) for c in COMPILERS if shutil.which(c)}
    check(not found, f"a compiler is reachable on PATH: {found}")
    for var in ("CC", "CXX"):
        val = os.environ.get(var)
        if val:
            probe = subprocess.run([val, "--version"], capture_output=True)
            check(probe.returncode != 0, f"{var}={val} runs (it should not be a working compiler)")
    print(f"no compiler on PATH ({os.environ.get('PATH')})")


def check_installed(fastrnn, core):
    pkg = Path(fastrnn.__file__).resolve().parent
    sites = site_dirs()
    check(pkg.parent in sites, f"fastrnn imported from {pkg}, not from site-packages {sorted(map(str, sites))}")
    core_file = Path(core.__file__)
    check(core_file.parent.resolve() == pkg, f"fastrnn._core is {core_file}, outside the package {pkg}")
    check(not core_file.is_symlink(), f"fastrnn._core is a symlink ({core_file} -> {core_file.resolve()})")
    check(core.__version__ == fastrnn.__version__,
          f"compiled module version {core.__version__} != package version {fastrnn.__version__}")
    print(f"fastrnn {fastrnn.__version__} from {pkg}; _core {core_file.name}")
    return pkg, core_file


def check_vendored_openmp(pkg, core_file):
    system = platform.system()
    if system == "Linux":
        ldd = shutil.which("ldd") or "/usr/bin/ldd"
        out = subprocess.run([ldd, str(core_file)], capture_output=True, text=True, check=True).stdout
        lines = [ln.strip() for ln in out.splitlines() if "gomp" in ln]
        check(len(lines) == 1, f"ldd shows {len(lines)} libgomp lines (expected 1):\n{out}")
        target = lines[0].split("=>")[-1].split("(")[0].strip()
        check("not found" not in lines[0] and target, f"libgomp does not resolve: {lines[0]}")
        libs = (pkg.parent / "fastrnn.libs").resolve()
        resolved = Path(target).resolve()
        check(resolved.parent == libs,
              f"libgomp resolves to {resolved}, not to the wheel's vendored copy in {libs}")
        print(f"libgomp: {resolved}")
    elif system == "Darwin":
        out = subprocess.run(["otool", "-L", str(core_file)], capture_output=True, text=True, check=True).stdout
        lines = [ln.strip() for ln in out.splitlines()[1:] if "libomp" in ln]
        check(len(lines) == 1 and lines[0].startswith("@loader_path/"),
              f"libomp is not the wheel's vendored copy (@loader_path/...):\n{out}")
        print(f"libomp: {lines[0].split()[0]}")
    else:
        fail(f"no check of the vendored OpenMP runtime for {system}")


def check_info():
    out = subprocess.run([sys.executable, "-m", "fastrnn", "info"], capture_output=True, text=True)
    check(out.returncode == 0, f"python -m fastrnn info failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    import fastrnn

    check(f"fastrnn {fastrnn.__version__}" in out.stdout, f"python -m fastrnn info printed:\n{out.stdout}")
    print(out.stdout.rstrip())


def check_lstm(np, fastrnn):
    from fastrnn import backend, ops, reference
    from fastrnn._kernel_cache import KernelCache

    rng = np.random.default_rng(0)
    B, T, I, H = 3, 17, 5, 33  # awkward sizes: no vector width divides them
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    w_ih = (rng.standard_normal((4 * H, I)) * 0.3).astype(np.float32)
    w_hh = (rng.standard_normal((4 * H, H)) * 0.3).astype(np.float32)
    b = (rng.standard_normal(4 * H) * 0.1).astype(np.float32)
    lengths = np.array([17, 9, 1])
    dy = rng.standard_normal((B, T, H)).astype(np.float32)
    f64 = [a.astype(np.float64) for a in (x, w_ih, w_hh, b)]
    y_r, (h_r, c_r), cache_r = reference.lstm_forward(*f64, lengths=lengths)
    g_r = reference.lstm_backward(cache_r, dy.astype(np.float64))
    isas = backend.available_isas()
    check("scalar" in isas, f"available ISAs {isas} lack 'scalar'")
    for isa in isas:
        backend.set_isa(isa)
        for threads in (1, 2):
            backend.set_num_threads(threads)
            y, (h_n, c_n), cache = ops.lstm_forward(x, w_ih, w_hh, b, lengths=lengths)
            check(type(cache) is KernelCache, f"ops.lstm_forward did not run the C++ kernels ({type(cache)})")
            g = ops.lstm_backward(cache, dy)
            pairs = [("y", y, y_r), ("h_n", h_n, h_r), ("c_n", c_n, c_r)]
            pairs += [(f"d{k}", g[k], g_r[k]) for k in ("x", "h0", "c0", "w_ih", "w_hh", "b")]
            for name, got, want in pairs:
                err = float(np.max(np.abs(got - want)))
                check(err < 2e-4 * max(1.0, float(np.max(np.abs(want)))),
                      f"LSTM {name} differs from the reference by {err:.3g} (isa {isa}, {threads} threads)")
    backend.set_isa("auto")
    print(f"LSTM forward + backward match the reference on {isas}, 1 and 2 threads")


def check_fit(np, fastrnn):
    from fastrnn import Sequential, layers

    fastrnn.set_seed(0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 12, 2)).astype(np.float32)
    y = x[:, :, :1].mean(axis=1)  # the mean of the first feature: learnable by a small LSTM
    model = Sequential([layers.LSTM(8), layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    losses = model.fit(x, y, epochs=40, batch_size=16, verbose=0).history["loss"]
    check(len(losses) == 40 and all(np.isfinite(losses)), f"fit's losses: {losses}")
    check(losses[-1] < 0.5 * losses[0], f"the loss did not halve in 40 epochs: {losses[0]:.4g} -> {losses[-1]:.4g}")
    pred = model.predict(x)
    check(pred.shape == (64, 1) and np.all(np.isfinite(pred)), f"predict gave {pred.shape}")
    print(f"Sequential fit: loss {losses[0]:.4f} -> {losses[-1]:.4f} in 40 epochs")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-compiler", action="store_true", help="also check that no compiler is on PATH")
    args = p.parse_args(argv)
    start = time.perf_counter()
    if args.no_compiler:
        check_no_compiler()
    import numpy as np

    import fastrnn
    from fastrnn import backend

    core = backend.core()
    pkg, core_file = check_installed(fastrnn, core)
    check_vendored_openmp(pkg, core_file)
    check_info()
    check_lstm(np, fastrnn)
    check_fit(np, fastrnn)
    print(f"wheel smoke test passed in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
