"""int8 and bf16 inference against what users deploy with: a Sequential of one LSTM (and one GRU)
layer, forward only, fastrnn float32, int8 and bf16 (fastrnn.quantize) against PyTorch float32,
``torch.ao.quantization.quantize_dynamic`` int8 and bf16 under ``torch.autocast("cpu",
torch.bfloat16)`` (oneDNN's bf16 RNN), and ONNX Runtime float32 and int8
(``onnxruntime.quantization.quantize_dynamic`` of the same LSTM as an ONNX LSTM operator; ONNX
Runtime quantizes no GRU, so the GRU rows have no ONNX Runtime int8 column; its CPU provider has no
bf16 LSTM). "fastrnn bf16 fallback" is the bf16 model with VDPBF16PS switched off
(``set_bf16dot_allowed(False)``: bf16 weights widened in registers, fp32 FMAs, the same results),
the path of AVX-512 CPUs without AVX512-BF16.

All candidates of a shape are timed in alternating blocks in one process (fastrnn._bench.
timeit_interleaved); figures are ms per call, ratios are the other's time over fastrnn int8's
(int8 table) or fastrnn bf16's (bf16 table).

    python bench/int8_bench.py [--threads 1,2] [--shapes latency,text] [--cells lstm,gru] [--markdown FILE]
"""
from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

import fastrnn as fr
from fastrnn import layers as L
from fastrnn._bench import SHAPES, environment, timeit_interleaved


def _onnx_lstm(path, lstm, T, B, I, H):
    """The fastrnn LSTM as one ONNX LSTM node (gates i, o, f, c; dynamic batch and time)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w_ih, w_hh, b = (lstm.w_ih.value, lstm.w_hh.value, lstm.b.value)
    order = [0, 3, 1, 2]  # fastrnn / PyTorch i, f, g, o -> ONNX i, o, f, c

    def reorder(a):
        return np.concatenate([a[g * H:(g + 1) * H] for g in order])

    W = reorder(w_ih)[None]
    R = reorder(w_hh)[None]
    Bias = np.concatenate([reorder(b), np.zeros(4 * H, np.float32)])[None]
    graph = helper.make_graph(
        [helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y", "Y_h", "Y_c"], hidden_size=H)],
        "lstm",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "N", I])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", 1, "N", H])],
        [numpy_helper.from_array(W.astype(np.float32), "W"), numpy_helper.from_array(R.astype(np.float32), "R"),
         numpy_helper.from_array(Bias.astype(np.float32), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)


def _ort_session(path, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def run(shape, cell, threads, min_time=1.0, tmp=None):
    import torch
    from torch.ao.quantization import quantize_dynamic

    T, B, I, H = SHAPES[shape]
    fr.set_num_threads(threads)
    torch.set_num_threads(threads)
    fr.set_seed(0)
    layer = {"lstm": L.LSTM, "gru": L.GRU}[cell](H)
    m = fr.Sequential([L.Input((None, I)), layer])
    x = np.random.default_rng(1).uniform(-1, 1, (B, T, I)).astype(np.float32)
    q = fr.quantize(m)
    qb = fr.quantize(m, "bf16")
    core = fr.backend.core()
    tm = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](I, H, batch_first=True)
    with torch.no_grad():
        tm.weight_ih_l0.copy_(torch.from_numpy(layer.w_ih.value))
        tm.weight_hh_l0.copy_(torch.from_numpy(layer.w_hh.value))
        if cell == "lstm":
            tm.bias_ih_l0.copy_(torch.from_numpy(layer.b.value))
            tm.bias_hh_l0.zero_()
        else:
            tm.bias_ih_l0.copy_(torch.from_numpy(layer.b_ih.value))
            tm.bias_hh_l0.copy_(torch.from_numpy(layer.b_hh.value))
    tq = quantize_dynamic(tm, {type(tm)}, dtype=torch.qint8)
    xt = torch.from_numpy(x)

    def torch_call(mod, bf16=False):
        def f():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return mod(xt)
        return f

    def bf16_fallback():
        core.set_bf16dot_allowed(False)
        try:
            return qb.predict(x, batch_size=B)
        finally:
            core.set_bf16dot_allowed(True)

    names = ["fastrnn int8", "fastrnn fp32", "torch fp32", "torch int8", "fastrnn bf16", "fastrnn bf16 fallback",
             "torch bf16"]
    fns = [lambda: q.predict(x, batch_size=B), lambda: m.predict(x, batch_size=B), torch_call(tm), torch_call(tq),
           lambda: qb.predict(x, batch_size=B), bf16_fallback, torch_call(tm, bf16=True)]
    if cell == "lstm":
        from onnxruntime.quantization import QuantType
        from onnxruntime.quantization import quantize_dynamic as ort_quantize

        f32_path = os.path.join(tmp, f"{shape}.onnx")
        i8_path = os.path.join(tmp, f"{shape}.int8.onnx")
        _onnx_lstm(f32_path, layer, T, B, I, H)
        ort_quantize(f32_path, i8_path, weight_type=QuantType.QInt8)
        xs = np.ascontiguousarray(x.transpose(1, 0, 2))
        for name, path in (("onnxruntime fp32", f32_path), ("onnxruntime int8", i8_path)):
            sess = _ort_session(path, threads)
            names.append(name)
            fns.append(lambda sess=sess: sess.run(None, {"X": xs}))
    # agreement: int8 against float32, ours and the others'
    ref = m.predict(x, batch_size=B)
    err = {"fastrnn int8": float(np.abs(q.predict(x, batch_size=B) - ref).max()),
           "fastrnn bf16": float(np.abs(qb.predict(x, batch_size=B) - ref).max())}
    if not np.array_equal(bf16_fallback(), qb.predict(x, batch_size=B)):
        raise AssertionError("the bf16 fallback and VDPBF16PS disagree")
    with torch.no_grad():
        err["torch int8"] = float(np.abs(tq(xt)[0][:, -1].numpy() - ref).max())  # the last step, as predict
        err["torch bf16"] = float(np.abs(torch_call(tm, bf16=True)()[0][:, -1].float().numpy() - ref).max())
    times = timeit_interleaved(fns, min_time=min_time)
    return dict(zip(names, times)), err


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", default="1,2")
    p.add_argument("--shapes", default="latency,text")
    p.add_argument("--cells", default="lstm,gru")
    p.add_argument("--min-time", type=float, default=1.0)
    p.add_argument("--markdown", metavar="FILE")
    a = p.parse_args(argv)
    threads = [int(t) for t in a.threads.split(",")]
    env = environment(max(threads))
    env.append(f"int8 product: {fr.backend.core().qpath()}; bf16 product: {fr.backend.core().bpath()}")
    import onnxruntime
    import torch

    env.append(f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__}")
    peaks = {th: fr.backend.fma_peak(th, seconds=0.5) for th in threads}
    env.append("measured fp32 FMA peak (backend.fma_peak): "
               + ", ".join(f"{peaks[th] / 1e9:.1f} GFLOP/s on {th} thread(s)" for th in threads)
               + "; VDPBF16PS does two multiply-adds per fp32 lane and instruction")
    env.append(f"load average at the start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for line in env:
        print(line)
    cols8 = ["fastrnn int8", "fastrnn fp32", "torch fp32", "torch int8", "onnxruntime fp32", "onnxruntime int8"]
    colsb = ["fastrnn bf16", "fastrnn bf16 fallback", "fastrnn fp32", "fastrnn int8", "torch fp32", "torch bf16"]
    rows8 = ["| cell | shape (T,B,I,H) | threads | " + " | ".join(f"{c} ms" for c in cols8)
             + " | fastrnn int8 speed-up over: fp32 / torch int8 / ort int8 | max err int8 vs fp32: fastrnn / torch |",
             "|---|---|---:|" + "---:|" * len(cols8) + "---|---|"]
    rowsb = ["| cell | shape (T,B,I,H) | threads | " + " | ".join(f"{c} ms" for c in colsb)
             + " | fastrnn bf16 speed-up over: fp32 / fallback / torch bf16 | max err bf16 vs fp32: fastrnn / torch "
             "| fastrnn bf16 GFLOP/s (share of fp32 FMA peak) |",
             "|---|---|---:|" + "---:|" * len(colsb) + "---|---|---:|"]

    def row(cell, shape, th, ms, cols, base, others, errs):
        ratio = " / ".join(f"{ms[k] / ms[base]:.2f}x" if k in ms else "-" for k in others)
        return (f"| {cell} | {shape} {SHAPES[shape]} | {th} | "
                + " | ".join(f"{ms[c]:.3f}" if c in ms else "-" for c in cols)
                + f" | {ratio} | {errs[0]:.4f} / {errs[1]:.4f} |")

    with tempfile.TemporaryDirectory() as tmp:
        for cell in a.cells.split(","):
            for shape in a.shapes.split(","):
                for th in threads:
                    t, err = run(shape, cell, th, a.min_time, tmp)
                    ms = {k: v * 1e3 for k, v in t.items()}
                    rows8.append(row(cell, shape, th, ms, cols8, "fastrnn int8",
                                     ("fastrnn fp32", "torch int8", "onnxruntime int8"),
                                     (err["fastrnn int8"], err["torch int8"])))
                    T, B, I, H = SHAPES[shape]
                    flops = 2.0 * T * B * {"lstm": 4, "gru": 3}[cell] * H * (I + H)
                    gfs = flops / (ms["fastrnn bf16"] * 1e-3) / 1e9
                    rowsb.append(row(cell, shape, th, ms, colsb, "fastrnn bf16",
                                     ("fastrnn fp32", "fastrnn bf16 fallback", "torch bf16"),
                                     (err["fastrnn bf16"], err["torch bf16"]))
                                 + f" {gfs:.1f} ({100 * gfs * 1e9 / peaks[th]:.0f} %) |")
                    print(rows8[-1], rowsb[-1], sep="\n", flush=True)
    rows = [*rows8, "", *rowsb]
    text = "\n".join(["", *[f"- {line}" for line in env], "", *rows, ""])
    if a.markdown:
        with open(a.markdown, "a") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
