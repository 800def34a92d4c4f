"""Before / after of the raw int8 forward kernel (``_core.qforward``) in ONE process: this tree's
compiled module against another build's (``--before``: the path of its ``_core*.so``, e.g. the
main branch's), interleaved (fastrnn._bench.timeit_interleaved), on the shapes of int8_bench.py.
Both run the same int8 weights and inputs; the outputs are compared bit for bit.

    PYTHONPATH=python python bench/int8_ab.py --before /work/main/python/fastrnn/_core.cpython-311-x86_64-linux-gnu.so

Figures: ms per call, the median of the quietest block and the fastest single call (the one
closest to the unloaded figure on a loaded machine), and their ratios before / after.
"""
from __future__ import annotations

import argparse
import importlib.util

import numpy as np

import fastrnn as fr
from fastrnn import backend
from fastrnn import layers as L
from fastrnn._bench import SHAPES, environment, timeit_interleaved


def load_core(path):
    """Another build's compiled module, imported beside this tree's under another package name."""
    spec = importlib.util.spec_from_file_location("fastrnn_before._core", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(before, cell, shape, threads, min_time):
    """(before ms, after ms, fastest before ms, fastest after ms, outputs equal)."""
    T, B, I, H = SHAPES[shape]
    after = backend.core()
    fr.set_num_threads(threads)
    before.set_num_threads(threads)
    fr.set_seed(0)
    layer = {"lstm": L.LSTM, "gru": L.GRU}[cell](H)
    q = fr.quantize(fr.Sequential([L.Input((None, I)), layer]))
    ql = q.layers[-1]
    spec = ql.spec
    biases = [np.ascontiguousarray(ql._bias_value(n), dtype=np.float32) for n in spec.bias_names]
    b_hh = biases[1] if len(biases) == 2 else None
    x = np.random.default_rng(1).uniform(-1, 1, (B, T, I)).astype(np.float32)
    fns, outs = [], []
    for core in (before, after):
        pi = core.qpack(*ql._q["w_ih"], spec.gates, H)
        ph = core.qpack(*ql._q["w_hh"], spec.gates, H)

        def f(core=core, pi=pi, ph=ph):
            return core.qforward(spec.kernel_id, x, pi, ph, biases[0], b_hh, None, None, None, False, True)

        fns.append(f)
        outs.append(f())
    same = all(np.array_equal(a, b) for a, b in zip(outs[0][:2], outs[1][:2]))
    med, fast = timeit_interleaved(fns, min_time=min_time, rounds=7, with_fastest=True)
    return med[0] * 1e3, med[1] * 1e3, fast[0] * 1e3, fast[1] * 1e3, same


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", required=True, help="path of the other build's _core*.so")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--shapes", default="latency,text")
    p.add_argument("--cells", default="lstm,gru")
    p.add_argument("--min-time", type=float, default=0.7)
    a = p.parse_args(argv)
    before = load_core(a.before)
    for line in environment(max(int(t) for t in a.threads.split(","))):
        print(line)
    print("| cell | shape (T,B,I,H) | threads | before ms | after ms | before / after | fastest call: before / after "
          "ms | ratio | same bits |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for cell in a.cells.split(","):
        for shape in a.shapes.split(","):
            for th in (int(t) for t in a.threads.split(",")):
                b, n, fb, fn, same = run(before, cell, shape, th, a.min_time)
                print(f"| {cell} | {shape} {SHAPES[shape]} | {th} | {b:.3f} | {n:.3f} | {b / n:.2f}x | "
                      f"{fb:.3f} / {fn:.3f} | {fb / fn:.2f}x | {same} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
