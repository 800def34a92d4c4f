"""The example scripts run in smoke mode, print parseable finite results and save their plots.

They run against the installed fastrnn (no PYTHONPATH games: the source tree has no compiled
extension), so `python -m fastrnn demo` is tested the way a user runs it after `pip install .`."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _run(args, tmp_path, timeout=120):
    env = dict(os.environ)
    env["MPLBACKEND"] = "Agg"
    proc = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{args} failed with code {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _results(stdout, example):
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULTS_JSON ")]
    assert len(lines) == 1, f"expected one RESULTS_JSON line, got {len(lines)}:\n{stdout[-2000:]}"
    data = json.loads(lines[0][len("RESULTS_JSON "):])
    assert data["example"] == example and data["mode"] == "smoke"
    return data["results"]


def _finite(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _png(path):
    assert path.is_file(), f"plot {path} was not written"
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp.png")]


def test_time_series_smoke(tmp_path):
    out = tmp_path / "plots"
    stdout = _run([str(EXAMPLES / "time_series.py"), "--smoke", "--json", "--out", str(out)], tmp_path)
    res = _results(stdout, "time_series")
    assert set(res) == {"naive", "linear", "simple_rnn", "deep_rnn"}
    for name, r in res.items():
        assert _finite(r["val_mse"]) and r["val_mse"] >= 0, (name, r)
        assert _finite(r["test_mse"]) and _finite(r["sec_per_epoch"])
    # parameter counts of the lesson's models (Keras gives the same): SimpleRNN(1) has 3
    assert res["simple_rnn"]["params"] == 3
    assert res["naive"]["params"] == 0
    # the printed table has one row per model with the published figure beside it
    for title, published in (("naive forecast", "0.020"), ("SimpleRNN(1)", "0.011")):
        row = [ln for ln in stdout.splitlines() if ln.startswith(title)]
        assert row and published in row[-1], (title, stdout)
    _png(out / "time_series_forecast.png")


def test_sentiment_smoke(tmp_path):
    out = tmp_path / "plots"
    stdout = _run([str(EXAMPLES / "sentiment.py"), "--smoke", "--json", "--out", str(out)], tmp_path)
    res = _results(stdout, "sentiment")
    assert set(res) == {"SimpleRNN", "LSTM", "GRU"}
    params = {}
    for cell, r in res.items():
        assert 0.0 <= r["test_accuracy"] <= 1.0 and _finite(r["test_accuracy"])
        assert _finite(r["best_val_loss"]) and r["best_val_loss"] > 0
        assert _finite(r["sec_per_epoch"]) and r["epochs_run"] >= 1
        params[cell] = r["params"]
    # same Embedding and Dense, so the differences are the cells' (Keras's counts): one gate block is
    # H*(I+H)+H; LSTM has 4, SimpleRNN 1, GRU 3 plus its second bias of 3H (reset_after=True)
    I = H = 16
    block = H * (I + H) + H
    assert params["LSTM"] - params["SimpleRNN"] == 3 * block
    assert params["GRU"] - params["SimpleRNN"] == 2 * block + 3 * H
    _png(out / "sentiment_curves.png")


def test_char_lm_smoke(tmp_path):
    out = tmp_path / "plots"
    stdout = _run([str(EXAMPLES / "char_lm.py"), "--smoke", "--json", "--out", str(out)], tmp_path)
    res = _results(stdout, "char_lm")
    assert res["hello"]["prediction"] == "ello"
    assert "predicted 'ello'" in stdout
    sh = res["shakespeare"]
    assert _finite(sh["val_loss_nats_per_char"]) and sh["val_loss_nats_per_char"] > 0
    # even one short epoch must beat guessing uniformly among the characters
    assert sh["val_loss_nats_per_char"] < sh["uniform_nats_per_char"]
    assert sh["sample"].startswith("ROMEO:\n") and len(sh["sample"]) > len("ROMEO:\n") + 20
    assert "nats per character" in stdout
    _png(out / "char_lm_loss.png")


def test_cli_info_demo_and_errors(tmp_path):
    env = dict(os.environ)
    info = subprocess.run([sys.executable, "-m", "fastrnn", "info"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert info.returncode == 0 and "fastrnn" in info.stdout
    demo = subprocess.run([sys.executable, "-m", "fastrnn", "demo", "--epochs", "1", "--json", "--out", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert "mode: demo" in demo.stdout and "deep RNN" in demo.stdout
    data = json.loads(demo.stdout.split("RESULTS_JSON ", 1)[1])
    assert data["mode"] == "demo" and all(_finite(r["val_mse"]) for r in data["results"].values())
    # with all 10,000 series the naive forecast's MSE is the lesson's figure, about 0.020
    assert 0.015 < data["results"]["naive"]["val_mse"] < 0.025
    _png(tmp_path / "time_series_forecast.png")
    # without --json the user sees the table and no machine-readable line; without --out the plot
    # goes beside the example scripts (source tree) or to ./fastrnn_out (installed), never ./examples
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    demo = subprocess.run([sys.executable, "-m", "fastrnn", "demo", "--epochs", "1"], cwd=run_dir, env=env,
                          capture_output=True, text=True, timeout=120)
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert "RESULTS_JSON" not in demo.stdout and "deep RNN" in demo.stdout
    saved = [ln.split("plot saved to ", 1)[1] for ln in demo.stdout.splitlines() if "plot saved to " in ln]
    assert len(saved) == 1 and Path(saved[0]).is_file(), demo.stdout[-2000:]
    assert not (run_dir / "examples").exists()
    bad = subprocess.run([sys.executable, "-m", "fastrnn", "nonsense"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


@pytest.mark.parametrize("script", ["time_series.py", "sentiment.py", "char_lm.py", "seq2seq_attention.py"])
def test_bad_arguments_exit_cleanly(script, tmp_path):
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--smoke", "--epochs", "0"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "--epochs" in proc.stderr
    assert "Traceback" not in proc.stderr
