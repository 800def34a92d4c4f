#!/usr/bin/env bash
# Regenerates the lessons' plots shown in the documentation (docs/assets/lessons/*.png) by running
# the example scripts in their quick modes (3.3 minutes on the loaded 2-core machine): the time series with
# --demo (what `fastrnn demo` runs), the sentiment lesson in full (it stops early, after a few
# epochs), the character LM in full size for 4 epochs instead of 20, seq2seq with --smoke (it
# reaches exact-sequence accuracy 1.00). Needs fastrnn importable and matplotlib (the `examples`
# extra):
#
#     bash docs/make_plots.sh            # from the repository root; PYTHON=... picks the interpreter
#
# The full runs (python examples/<name>.py) give the figures quoted in the README; they take minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=docs/assets/lessons
mkdir -p "$OUT"
"$PY" examples/time_series.py --demo --out "$OUT"
"$PY" examples/sentiment.py --out "$OUT"
"$PY" examples/char_lm.py --epochs 4 --out "$OUT"
"$PY" examples/seq2seq_attention.py --smoke --out "$OUT"
ls -l "$OUT"/*.png
