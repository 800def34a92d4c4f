"""Data-parallel scaling on paper: ring all-reduce cost against the measured step time.

    python bench/scaling_model.py                                    # the README's table
    python bench/scaling_model.py --step-ms sentiment=60 char_lm=150 --hop-us 10

Model of one step on N nodes (each node: one machine like the one measured, one rank):

    compute  t_c(b)  = b * s              s = measured seconds per sample at the lessons' batch
                                          (bench/distributed_bench.py, variant A: 1 process x 2 threads)
    ring     t_ar    = 2 (N-1)/N * G / BW + k * 2 (N-1) * alpha
                                          G gradient bytes (float32), BW link bandwidth, alpha the
                                          latency per hop, k the number of buckets (4 MiB each)
    no overlap:  E = t_c / (t_c + t_ar)
    overlap:     E = t_c / (t_c + max(0, t_ar - h * t_c))   h = share of the step the reduction can
                                          hide behind (the backward pass after the first bucket is
                                          ready; h = 0.5 assumed: backward is ~2/3 of a step and the
                                          last layers' buckets start early)

Scaling efficiency E is the throughput of N nodes over N times one node at the same per-node batch
b. The batch for 90 % solves E(b) = 0.9: b >= 9 t_ar / s (no overlap), b >= t_ar / ((1/0.9 - 1 + h) s)
(overlap). The last column is how much faster a node's compute could be (a GPU, a bigger CPU)
before the efficiency at the lessons' batch falls under 90 % without overlap: t_c / (9 t_ar).
Compute per sample is taken as linear in b (small batches are in fact less efficient
per sample, so the batch for 90 % is a lower bound) and as unchanged by N.

The large LSTM (Embedding(10000, 512) -> LSTM(1024, return_sequences) -> LSTM(1024) ->
Dense(10000), 64 steps) is not measured: its time per sample is the char-LM's scaled by the
multiply-adds per sample (the same achieved FLOP rate; its larger GEMMs would run faster, so its
efficiency here is a lower bound).
"""
from __future__ import annotations

import argparse
import math

GBIT = 1e9 / 8  # bytes per second of 1 Gb/s

# ms per step of one process at 2 threads at the lessons' batch, measured with
# bench/distributed_bench.py on 2026-12-07 under load ~14 on 2 cores (bench/RESULTS.md, "Data-parallel
# training"); --step-ms replaces them
MEASURED = {"sentiment": (64, 95.3), "char_lm": (32, 157.4)}


def lstm_params(i, h):
    return 4 * h * (i + h + 1)


def models(step_ms):
    """{name: (gradient bytes, seconds per sample, lessons' batch, parameters)}."""
    sent_p = 10000 * 100 + lstm_params(100, 128) + 129
    V = 65
    char_lstm = lstm_params(32, 256)
    char_p = V * 32 + char_lstm + 256 * V + V
    big_l1, big_l2 = lstm_params(512, 1024), lstm_params(1024, 1024)
    big_p = 10000 * 512 + big_l1 + big_l2 + 1024 * 10000 + 10000
    out = {}
    for name, p in (("sentiment", sent_p), ("char_lm", char_p)):
        batch, ms = step_ms[name]
        out[name] = (4 * p, ms / 1e3 / batch, batch, p)
    # multiply-adds per sample: char-LM 64 steps x (LSTM + Dense); large: 64 x (two LSTMs) + one Dense
    char_macs = 64 * (char_lstm + 256 * V)
    big_macs = 64 * (big_l1 + big_l2) + 1024 * 10000
    out["large LSTM"] = (4 * big_p, out["char_lm"][1] * big_macs / char_macs, 32, big_p)
    return out


def ring_seconds(n, grad_bytes, gbps, hop_s, bucket_bytes=4 << 20):
    buckets = max(1, math.ceil(grad_bytes / bucket_bytes))
    return 2 * (n - 1) / n * grad_bytes / (gbps * GBIT) + buckets * 2 * (n - 1) * hop_s


def efficiency(t_c, t_ar, hide):
    return t_c / (t_c + max(0.0, t_ar - hide * t_c))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step-ms", nargs="*", default=[], metavar="MODEL=MS",
                    help="measured ms per step at the lessons' batch (sentiment, char_lm)")
    ap.add_argument("--hop-us", type=float, default=10.0, help="latency per ring hop in µs (default 10: TCP)")
    ap.add_argument("--hide", type=float, default=0.5, help="share of the step that overlap hides (default 0.5)")
    ap.add_argument("--nodes", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--gbps", type=float, nargs="+", default=[10, 25, 100])
    args = ap.parse_args()
    step_ms = dict(MEASURED)
    for item in args.step_ms:
        name, ms = item.split("=")
        step_ms[name] = (step_ms[name][0], float(ms))
    hop = args.hop_us * 1e-6
    print(f"hop latency {args.hop_us:g} µs, 4 MiB buckets, overlap hides {args.hide:.0%} of the step; "
          f"measured step: " + ", ".join(f"{k} {ms:g} ms at batch {b}" for k, (b, ms) in step_ms.items()))
    print("\n| model | gradient | step at the lessons' batch (1 node) | nodes | link | all-reduce | "
          "efficiency, no overlap | with overlap | per-node batch for 90 %: no overlap / overlap | "
          "node speed-up left before < 90 % (no overlap) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, (g, s, batch, p) in models(step_ms).items():
        t_c = batch * s
        for n in args.nodes:
            for bw in args.gbps:
                t_ar = ring_seconds(n, g, bw, hop)
                e0 = efficiency(t_c, t_ar, 0.0)
                e1 = efficiency(t_c, t_ar, args.hide)
                b0 = math.ceil(9 * t_ar / s)
                b1 = math.ceil(t_ar / ((1 / 0.9 - 1 + args.hide) * s))
                print(f"| {name} ({p / 1e6:.2f} M params) | {g / 2**20:.1f} MiB | {t_c * 1e3:.0f} ms (b={batch}) | "
                      f"{n} | {bw:g} Gb/s | {t_ar * 1e3:.2f} ms | {e0:.0%} | {e1:.0%} | {b0} / {b1} | "
                      f"{t_c / (9 * t_ar):.1f}x |")


if __name__ == "__main__":
    main()
