"""fastrnn's layers against onnxruntime's LSTM / GRU operators, float32 inference.

    PYTHONPATH=python python bench/onnx_bench.py                # every shape, LSTM and GRU, 1 and 2 threads
    PYTHONPATH=python python bench/onnx_bench.py --shapes text,latency --threads 1 --min-time 1

The model is a Sequential of one LSTM (or GRU) of H units on [B, T, I] inputs (the shapes of
``fastrnn._bench.SHAPES``, as ``python -m fastrnn bench``), returning its last output. Three
callables are timed interleaved in one process (``fastrnn._bench.timeit_interleaved``: alternating
blocks, the quietest block's median of each):

* ``fastrnn``: ``model(x)`` (inference through the Sequential and the layer);
* ``kernel``: the layer's op (``fastrnn.ops.lstm_forward`` / ``gru_forward``, ``training=False``)
  on the same arrays, so that ``fastrnn - kernel`` is the layers' overhead;
* ``onnxruntime``: the file ``fastrnn.onnx.export`` writes for that model, run by an
  ``InferenceSession`` (CPU provider, ``intra_op_num_threads`` = threads, ``inter_op_num_threads``
  = 1, sequential execution, all graph optimizations).

fastrnn's threads are set with ``fastrnn.set_num_threads``, and the BLAS's (threadpoolctl) to the
same count. The outputs are compared (abs+rel 1e-4) before anything is timed. It prints the
machine, versions and load (``uptime``) and a markdown table: ms per call, ``ort / fastrnn``
(> 1: fastrnn is faster), the same ratio of the fastest single calls (on a loaded machine the
closest to the unloaded figure), the layers' overhead (from the fastest calls), and the share of
the FP32 FMA peak that fastrnn's call reaches (``--peak-gflops``, default 228 GFLOP/s for the 2
Zen 4 cores, 114 per core, measured with a register-only FMA loop; see bench/RESULTS.md).
FLOPs: the DeepBench convention of ``fastrnn._bench.flops``.
"""
from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile

import numpy as np

import fastrnn as fr
from fastrnn import _bench, ops


def _load():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "uptime unavailable"


def _model(cell, T, B, I, H, seed=0):
    layer = {"lstm": fr.layers.LSTM, "gru": fr.layers.GRU}[cell]
    model = fr.Sequential([layer(H, input_shape=(None, I), seed=seed)])
    rng = np.random.default_rng(seed + 1)
    k = 1.0 / np.sqrt(H)
    model.set_weights([rng.uniform(-k, k, w.shape).astype(np.float32) for w in model.get_weights()])
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    return model, x


def _session(ort, path, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def bench_one(ort, cell, shape, threads, min_time, directory):
    T, B, I, H = _bench.SHAPES[shape]
    model, x = _model(cell, T, B, I, H)
    layer = model.layers[0]
    path = os.path.join(directory, f"{cell}_{shape}.onnx")
    fr.onnx.export(model, path)
    sess = _session(ort, path, threads)
    args = [x, layer.w_ih.value, layer.w_hh.value] + [getattr(layer, b).value for b in layer.spec.bias_names]
    op = getattr(ops, f"{cell}_forward")

    def run_fastrnn():
        return model(x)

    def run_kernel():
        return op(*args, training=False)

    def run_ort():
        return sess.run(None, {"input": x})[0]

    want = run_fastrnn()
    np.testing.assert_allclose(run_ort(), want, rtol=1e-4, atol=1e-4)
    state = run_kernel()[1]
    np.testing.assert_allclose(state[0] if cell == "lstm" else state, want, rtol=1e-5, atol=1e-6)
    (t_fr, t_k, t_ort), (f_fr, f_k, f_ort) = _bench.timeit_interleaved([run_fastrnn, run_kernel, run_ort],
                                                                      min_time=min_time, with_fastest=True)
    return {"cell": cell, "shape": shape, "T": T, "B": B, "I": I, "H": H, "threads": threads,
            "fastrnn_ms": t_fr * 1e3, "kernel_ms": t_k * 1e3, "ort_ms": t_ort * 1e3,
            "fastrnn_fastest_ms": f_fr * 1e3, "kernel_fastest_ms": f_k * 1e3, "ort_fastest_ms": f_ort * 1e3,
            "gflop": _bench.flops(cell, T, B, I, H, False) / 1e9}


def markdown(rows, peak):
    lines = ["| cell | shape (T,B,I,H) | threads | fastrnn layer ms | fastrnn kernel ms | onnxruntime ms | "
             "ort / fastrnn | ort / fastrnn, fastest calls | layer overhead, fastest calls | fastrnn % of FP32 peak |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        share = r["gflop"] / (r["fastrnn_ms"] / 1e3) / (peak * r["threads"] / 2) * 100
        over = (r["fastrnn_fastest_ms"] - r["kernel_fastest_ms"]) / r["fastrnn_fastest_ms"] * 100
        lines.append(f"| {r['cell'].upper()} | {r['shape']} ({r['T']},{r['B']},{r['I']},{r['H']}) | {r['threads']} | "
                     f"{r['fastrnn_ms']:.3f} | {r['kernel_ms']:.3f} | {r['ort_ms']:.3f} | "
                     f"**{r['ort_ms'] / r['fastrnn_ms']:.2f}** | {r['ort_fastest_ms'] / r['fastrnn_fastest_ms']:.2f} | "
                     f"{over:+.1f} % | {share:.0f} % |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default=",".join(_bench.SHAPES), help="comma-separated names of fastrnn._bench.SHAPES")
    p.add_argument("--cells", default="lstm,gru")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds per function and configuration")
    p.add_argument("--peak-gflops", type=float, default=228.0, help="FP32 FMA peak of 2 cores, GFLOP/s")
    a = p.parse_args(argv)
    import onnxruntime as ort
    from threadpoolctl import threadpool_limits

    shapes = [s for s in a.shapes.split(",") if s]
    for s in shapes:
        if s not in _bench.SHAPES:
            p.error(f"--shapes: unknown shape {s!r}; choose from {', '.join(_bench.SHAPES)}")
    cells = [c for c in a.cells.split(",") if c]
    threads = [int(t) for t in a.threads.split(",") if t]
    started = datetime.datetime.now(datetime.timezone.utc)
    print(f"load before: {_load()}")
    for line in _bench.environment(",".join(map(str, threads))):
        print(line)
    print(f"onnxruntime {ort.__version__}, opset {fr.onnx.DEFAULT_OPSET}; python {sys.version.split()[0]}")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for n in threads:
            fr.set_num_threads(n)
            with threadpool_limits(n):
                for shape in shapes:
                    for cell in cells:
                        r = bench_one(ort, cell, shape, n, a.min_time, d)
                        rows.append(r)
                        print(f"  {cell} {shape} threads {n}: fastrnn {r['fastrnn_ms']:.3f} ms (kernel "
                              f"{r['kernel_ms']:.3f}), onnxruntime {r['ort_ms']:.3f} ms, "
                              f"ratio {r['ort_ms'] / r['fastrnn_ms']:.2f}", flush=True)
    ended = datetime.datetime.now(datetime.timezone.utc)
    print(f"load after: {_load()}")
    print(f"\n{started:%Y-%m-%d %H:%M}-{ended:%H:%M} UTC\n")
    print(markdown(rows, a.peak_gflops))


if __name__ == "__main__":
    main()
