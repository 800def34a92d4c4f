"""One call, fastrnn.set_seed(s) (also fastrnn.utils.set_random_seed), makes a whole run
reproducible: data drawn with NumPy's global generator, weights, dropout masks, fit's shuffling."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import fastrnn as fr

SCRIPT = r"""
import json, random, sys
import numpy as np
import fastrnn as fr
from fastrnn import layers, data
{seed_call}
series = data.generate_time_series(64, 9)              # NumPy's global generator (no seed given)
x, y = series[:, :8], series[:, -1]
(x_tr, y_tr), (x_va, y_va), _ = data.train_valid_test_split(x, y, valid=16, test=8)   # split: no seed
model = fr.Sequential([layers.LSTM(6, dropout=0.2, recurrent_dropout=0.1, return_sequences=True),
                       layers.Dropout(0.3), layers.GRU(4), layers.Dense(1)])
model.compile(optimizer="adam", loss="mse")
hist = model.fit(x_tr, y_tr, epochs=2, batch_size=8, validation_data=(x_va, y_va), verbose=0)   # shuffled, no seed
print(json.dumps({{"loss": hist.history["loss"], "val": hist.history["val_loss"],
                  "w": float(sum(np.abs(w).sum() for w in model.get_weights())), "r": random.random()}}))
"""


def _run(seed_call):
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(seed_call=seed_call)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_set_seed_makes_a_whole_run_reproducible():
    a = _run("fr.set_seed(7)")
    b = _run("fr.utils.set_random_seed(7)")
    assert a == b  # bit for bit: data, split, weights, dropout masks, shuffling, Python's random
    c = _run("fr.set_seed(8)")
    assert c["loss"] != a["loss"] and c["w"] != a["w"] and c["r"] != a["r"]
    d = _run("")  # without the call runs differ (the generators start from the OS's entropy)
    e = _run("")
    assert d["loss"] != e["loss"]


def test_set_seed_checks_its_argument():
    for bad in (-1, 1.5, "0", True, None):
        with pytest.raises(ValueError, match="set_random_seed: seed must be a non-negative int"):
            fr.set_seed(bad)
    with pytest.raises(ValueError, match="below 2\\*\\*32"):
        fr.set_seed(2**32)
    fr.set_seed(np.int64(3))
    w1 = fr.layers.Dense(2, input_shape=(3,)).get_weights()[0]
    fr.set_seed(3)
    np.testing.assert_array_equal(fr.layers.Dense(2, input_shape=(3,)).get_weights()[0], w1)
