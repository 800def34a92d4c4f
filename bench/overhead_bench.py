"""Per-call overhead of the Python layer: layer calls, the step API and fit's per-batch cost,
each timed interleaved against the raw compiled kernel in one process.

    PYTHONPATH=python python bench/overhead_bench.py            # all cases, 1 thread
    PYTHONPATH=python python bench/overhead_bench.py --quick    # shorter timing blocks

Cases (float32, 1 thread unless --threads):
  * tiny layer call: LSTM(16) on x [4, 1, 8] (batch 4, one step, 8 features), inference
    (``layer(x)``) against ``fastrnn._core.forward`` on the same prepared arrays, and training
    (``layer(x, training=True)`` + ``layer.backward(dy)``) against the raw forward + backward
    kernels. The raw calls pass their arguments positionally (the fastest call of the binding);
    ``raw kw`` is the same call with keywords, as earlier measurements made it.
  * step API: ``layer.step(x_t, states)`` at batch 1 (features = units) for LSTM(128), LSTM(512),
    GRU(128), GRU(512), states fed back from the previous step, against the raw kernel on one
    step with h0 (and c0) given the packed W_hh and the transposed W_ih the layer keeps
    (``core.pack_whh``, the forward's ``wih_t``); ``model.step`` of a Sequential holding that
    layer; the step and the raw kernel packing W_hh and W_ih at every call (as before the layers
    kept these copies); and the same for the int8 model of
    ``fastrnn.quantize`` (its layer.step and model.step against the raw ``qforward``).
    Timed in CPU time of the process (``timer=time.process_time``, one thread).
  * fit's per-batch overhead, tiny model LSTM(16) -> Dense(1, sigmoid), x [32, 10, 8], Adam,
    binary cross-entropy, metric accuracy: the time per batch of ``train_on_batch`` (on the 16
    batches of fit's epoch) and of ``fit`` (verbose=0, 16 batches per epoch, so fit's per-epoch
    setup is in its figure), minus
    the layers' own compute (forward with training + backward of each layer, timed alone), and
    minus that and the loss, metric and optimizer step (the loop's bookkeeping alone). These
    four are timed in CPU time of the process (``timer=time.process_time``): an epoch of fit is
    long enough to be preempted on a loaded machine, which wall-clock blocks would charge to it.
    A row times the same update written out by hand (zero the gradients, the layers' forward,
    the loss, the layers' backward, the metric, the optimizer step) on the same batches: what
    train_on_batch and fit cost beyond it is their own overhead. A last row times the loops
    alone: ``train_on_batch`` and ``fit`` with the update itself (``_train_step``) replaced by a
    stub.

  * pool threshold (``--only pool``, not in the default set): an LSTM(64) training step of the
    ops whose saved gates are 64 KiB .. 4 MiB, with the buffer pool on and off for it, to check
    where pooling starts to pay (fastrnn._kernel_cache.BufferPool.min_bytes, 1 MiB).

Every figure is fastrnn._bench.timeit_interleaved's: the smallest block median of alternating
blocks (load only adds time). Ratios within one run are what to read; the machine's load is
printed with them. ``--markdown`` prints the rows as a table for bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import numpy as np

import fastrnn as fr
from fastrnn import backend, layers
from fastrnn._bench import timeit_interleaved


def _load():
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _us(t):
    return f"{t * 1e6:.2f}"


def tiny_layer(min_time):
    """(name, layer time, raw time, raw keyword time) for inference and training."""
    core = backend.core()
    rng = np.random.default_rng(0)
    B, T, I, H = 4, 1, 8, 16
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    dy = rng.standard_normal((B, T, H)).astype(np.float32)
    lay = layers.LSTM(H, return_sequences=True, seed=0)
    lay(x)
    wi, wh, b = lay.w_ih.value, lay.w_hh.value, lay.b.value

    def raw_f():
        return core.forward(2, x, wi, wh, b, None, None, None, None, False, True, False)

    def raw_f_kw():
        return core.forward(cell=2, x=x, w_ih=wi, w_hh=wh, b_ih=b, b_hh=None, h0=None, c0=None, mask=None,
                            reverse=False, batch_first=True, training=False)

    def raw_t():
        _, _, _, g, hp, aux = core.forward(2, x, wi, wh, b, None, None, None, None, False, True, True)
        return core.backward(2, x, wi, wh, None, False, True, g, hp, aux, dy, None, None, 0, True)

    def raw_t_kw():
        _, _, _, g, hp, aux = core.forward(cell=2, x=x, w_ih=wi, w_hh=wh, b_ih=b, b_hh=None, h0=None, c0=None,
                                           mask=None, reverse=False, batch_first=True, training=True)
        return core.backward(cell=2, x=x, w_ih=wi, w_hh=wh, mask=None, reverse=False, batch_first=True, gates=g,
                             hprev=hp, aux=aux, dy=dy, dh_n=None, dc_n=None, bptt_steps=0, need_dx=True)

    def lay_f():
        return lay(x)

    def lay_t():
        lay(x, training=True)
        return lay.backward(dy)

    t = timeit_interleaved([raw_f, lay_f, raw_f_kw, raw_t, lay_t, raw_t_kw], min_time=min_time, rounds=7)
    return [("LSTM(16) layer call, x [4, 1, 8], inference", t[1], t[0], t[2]),
            ("LSTM(16) layer call, x [4, 1, 8], training (fwd + bwd)", t[4], t[3], t[5])]


def step_case(cell, H, min_time):
    """Seconds per step at batch 1 (features = units), float32 and int8, all timed interleaved:
    {"step": layer.step, "step repack": layer.step packing W_hh and W_ih at every call (the layer's
    kept packed W_hh and transposed W_ih disabled, as before they existed), "model": model.step,
    "raw": the kernel given the packed W_hh and W_ih transposed, "raw repack": the kernel packing
    both itself, "int8 step", "int8 model",
    "int8 raw": fastrnn.quantize's layer.step, model.step and the raw int8 kernel}."""
    core = backend.core()
    rng = np.random.default_rng(1)
    cls = {"LSTM": layers.LSTM, "GRU": layers.GRU}[cell]
    lay = cls(H, seed=0, input_shape=(None, H))
    x_t = rng.standard_normal((1, H)).astype(np.float32)
    _, states = lay.step(x_t, None)
    x3 = x_t.reshape(1, 1, H)
    spec = lay.spec
    biases = [getattr(lay, n).value for n in spec.bias_names]
    b_ih, b_hh = biases[0], (biases[1] if len(biases) == 2 else None)
    h0, c0 = states[0], (states[1] if spec.n_states == 2 else None)
    kid = spec.kernel_id
    packed = core.pack_whh(kid, lay.w_hh.value, 1)
    wih_t = np.ascontiguousarray(lay.w_ih.value.T)

    def raw_repack():
        return core.forward(kid, x3, lay.w_ih.value, lay.w_hh.value, b_ih, b_hh, h0, c0, None, False, True, False)

    def raw():
        return core.forward(kid, x3, lay.w_ih.value, lay.w_hh.value, b_ih, b_hh, h0, c0, None, False, True, False,
                            None, None, None, None, packed, wih_t)

    repack = cls(H, seed=0, input_shape=(None, H))  # the same layer, packing at every call
    repack.set_weights(lay.get_weights())
    repack._packed_whh = lambda wh, batch: None
    repack._transposed_wih = lambda wi: None
    st, st_repack = [states], [states]

    def layer_step():
        _, st[0] = lay.step(x_t, st[0])

    def layer_step_repack():
        _, st_repack[0] = repack.step(x_t, st_repack[0])

    model = fr.Sequential([lay])
    model.step(x_t)
    q = fr.quantize(model)
    ql = q.layers[0]
    qst = [ql.step(x_t, None)[1]]
    G = spec.gates
    qw = ql.int8_weights()
    qpi, qph = core.qpack(*qw["w_ih"], G, H), core.qpack(*qw["w_hh"], G, H)

    def int8_raw():
        return core.qforward(kid, x3, qpi, qph, b_ih, b_hh, h0, c0, None, False, True)

    def int8_step():
        _, qst[0] = ql.step(x_t, qst[0])

    q.step(x_t)
    fns = {"step": layer_step, "step repack": layer_step_repack, "model": lambda: model.step(x_t), "raw": raw,
           "raw repack": raw_repack, "int8 step": int8_step, "int8 model": lambda: q.step(x_t),
           "int8 raw": int8_raw}
    # CPU time of the process (one thread): steps of the larger layers take long enough to be
    # preempted on a loaded machine
    t = timeit_interleaved(list(fns.values()), min_time=min_time, rounds=7, timer=time.process_time)
    return dict(zip(fns, t))


def fit_case(min_time, batches=16):
    """Per-batch figures of train_on_batch and fit on a tiny model (seconds)."""
    rng = np.random.default_rng(2)
    B, T, I, H = 32, 10, 8, 16
    model = fr.Sequential([layers.LSTM(H, seed=0), layers.Dense(1, activation="sigmoid", seed=1)])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    x = rng.standard_normal((B * batches, T, I)).astype(np.float32)
    y = (rng.random((B * batches, 1)) > 0.5).astype(np.float32)
    xb, yb = x[:B], y[:B]
    model.train_on_batch(xb, yb)
    lstm, dense = model.layers
    h = lstm(xb)
    dh = rng.standard_normal(h.shape).astype(np.float32) * 0.01
    p = dense(h)
    dp = rng.standard_normal(p.shape).astype(np.float32) * 0.01

    def layers_compute():
        lstm(xb, training=True)
        dense(h, training=True)
        dense.backward(dp)
        lstm.backward(dh)

    loss, metric, opt = model.loss, model.compiled_metrics[0], model.optimizer
    params = model.parameters()

    def loss_metric_opt():
        loss.sum_and_grad(yb, p, None)
        metric.update_state(yb, p, None)
        opt.step(params)

    def by_hand():  # the same update written out: zero the gradients, forward, loss, backward, metric, step
        for i in range(batches):
            xi, yi = x[i * B:(i + 1) * B], y[i * B:(i + 1) * B]
            for q in params:
                q.grad[...] = 0
            out = dense(lstm(xi, training=True), training=True)
            _, count, dsum = loss.sum_and_grad(yi, out, None)
            lstm.backward(dense.backward(dsum / count))
            metric.update_state(yi, out, None)
            opt.step(params)

    def tob():  # the batches fit runs, in its order
        for i in range(batches):
            model.train_on_batch(x[i * B:(i + 1) * B], y[i * B:(i + 1) * B])

    def fit_epoch():
        model.fit(x, y, batch_size=B, epochs=1, verbose=0, shuffle=False)

    # CPU time of the process (one thread): an epoch of fit is long enough to be preempted on a
    # loaded machine, which wall-clock blocks would charge to it
    t = timeit_interleaved([tob, fit_epoch, layers_compute, loss_metric_opt, by_hand], min_time=min_time,
                           rounds=5, min_runs=3, timer=time.process_time)
    # the loops' bookkeeping alone: the update itself (_train_step) replaced by a stub
    model._train_step = lambda *a, **k: 0.0
    s = timeit_interleaved([tob, fit_epoch], min_time=min_time, rounds=5, min_runs=3, timer=time.process_time)
    del model._train_step
    return {"train_on_batch": t[0] / batches, "fit per batch": t[1] / batches, "layers": t[2],
            "loss+metric+opt": t[3], "by hand": t[4] / batches, "train_on_batch stub": s[0] / batches,
            "fit stub": s[1] / batches}


def pool_case(min_time):
    """The pool's threshold: a training step (forward + backward of the ops) whose saved gates are
    64 KiB .. 4 MiB, with the buffer pool on for it (min_bytes 0) and off (min_bytes above it),
    timed interleaved. Returns [(gates bytes, pooled s, unpooled s)]."""
    from fastrnn import ops
    from fastrnn._kernel_cache import POOL

    rng = np.random.default_rng(3)
    H, I, B = 64, 32, 8
    out = []
    saved = POOL.min_bytes
    try:
        for T in (8, 32, 128, 512):  # gates [T*B, 4H] float32: T*B KiB
            x = rng.standard_normal((B, T, I)).astype(np.float32)
            w_ih = rng.standard_normal((4 * H, I)).astype(np.float32) * 0.1
            w_hh = rng.standard_normal((4 * H, H)).astype(np.float32) * 0.1
            b = np.zeros(4 * H, np.float32)
            dy = np.ones((B, T, H), np.float32)

            def step(min_bytes, x=x, w_ih=w_ih, w_hh=w_hh, b=b, dy=dy):
                POOL.min_bytes = min_bytes
                _, _, cache = ops.lstm_forward(x, w_ih, w_hh, b, training=True)
                ops.lstm_backward(cache, dy)

            def pooled(step=step):
                step(0)

            def unpooled(step=step):
                step(1 << 40)

            t = timeit_interleaved([pooled, unpooled], min_time=min_time, rounds=7)
            out.append((T * B * 4 * H * 4, t[0], t[1]))
    finally:
        POOL.min_bytes = saved
        POOL.clear()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="shorter timing blocks")
    ap.add_argument("--markdown", action="store_true", help="print the rows as a markdown table")
    ap.add_argument("--only", choices=["layer", "step", "fit", "pool"], action="append")
    args = ap.parse_args(argv)
    fr.set_num_threads(args.threads)
    mt = 0.5 if args.quick else 1.5
    only = set(args.only or ["layer", "step", "fit"])  # pool: on request
    print(f"# fastrnn {fr.__version__} overhead bench, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} "
          f"UTC, {platform.processor() or platform.machine()}, isa {backend.isa()}, threads {args.threads}, "
          f"numpy {np.__version__}, python {sys.version.split()[0]}")
    print(f"# load average before: {_load()}")
    t0 = time.perf_counter()
    rows = []
    if "layer" in only:
        for name, lay_t, raw_t, raw_kw in tiny_layer(mt):
            rows.append((name, _us(lay_t), _us(raw_t), f"{lay_t / raw_t:.2f}", f"raw with keywords {_us(raw_kw)} us"))
    if "step" in only:
        for cell, H in (("LSTM", 128), ("LSTM", 512), ("GRU", 128), ("GRU", 512)):
            t = step_case(cell, H, mt)
            rows.append((f"{cell}({H}) step, batch 1", _us(t["step"]), _us(t["raw"]), f"{t['step'] / t['raw']:.2f}",
                         f"model.step {_us(t['model'])} us ({t['model'] / t['raw']:.2f}x); packing W_hh and W_ih at "
                         f"every call: step {_us(t['step repack'])} us ({t['step repack'] / t['step']:.2f}x the "
                         f"step), raw {_us(t['raw repack'])} us"))
            rows.append((f"{cell}({H}) int8 step (fastrnn.quantize), batch 1", _us(t["int8 step"]),
                         _us(t["int8 raw"]), f"{t['int8 step'] / t['int8 raw']:.2f}",
                         f"model.step {_us(t['int8 model'])} us ({t['int8 model'] / t['int8 raw']:.2f}x); "
                         f"int8 / float32 step {t['int8 step'] / t['step']:.2f}"))
    if "fit" in only:
        f = fit_case(mt)
        for what in ("train_on_batch", "fit per batch"):
            t = f[what]
            rows.append((f"{what}, LSTM(16)+Dense(1), x [32, 10, 8], Adam", _us(t), _us(f["layers"]),
                         f"{t / f['layers']:.2f}",
                         f"overhead {_us(t - f['layers'])} us; without loss+metric+optimizer "
                         f"({_us(f['loss+metric+opt'])} us): {_us(t - f['layers'] - f['loss+metric+opt'])} us"))
        rows.append(("the same update written out by hand, per batch", _us(f["by hand"]), _us(f["layers"]),
                     f"{f['by hand'] / f['layers']:.2f}", f"train_on_batch - by hand: "
                     f"{_us(f['train_on_batch'] - f['by hand'])} us, fit - by hand: "
                     f"{_us(f['fit per batch'] - f['by hand'])} us"))
        rows.append(("the loops alone per batch (update stubbed): train_on_batch, fit",
                     _us(f["train_on_batch stub"]), _us(f["fit stub"]), "", "checks, metrics, logs, hooks, "
                     "fit's per-epoch setup / 16"))
    if "pool" in only:
        for nbytes, tp, tu in pool_case(mt):
            rows.append((f"LSTM(64) training step, gates {nbytes >> 10} KiB: pooled vs not", _us(tp), _us(tu),
                         f"{tp / tu:.2f}", "the raw column is the step without the pool"))
    print(f"# load average after: {_load()} ({time.perf_counter() - t0:.0f} s)")
    head = ("case", "fastrnn us", "raw kernel (or layers' compute) us", "ratio", "notes")
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        for r in rows:
            print(f"{r[0]:<62} {r[1]:>10} {r[2]:>10} {r[3]:>6}  {r[4]}")


if __name__ == "__main__":
    main()
