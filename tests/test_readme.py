"""The README's Python examples run as written (in a temporary directory)."""
import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = {}
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), ns)
    if "model" in ns:  # the quickstart: the model learned something and the saved file loads
        hist = ns["model"].evaluate(ns["x"], ns["y"], verbose=0)
        loss = hist[0] if isinstance(hist, (list, tuple)) else hist
        assert np.isfinite(loss) and loss < 0.69  # better than chance (ln 2)
        assert (tmp_path / "sentiment.fastrnn").is_file()
    if "grads" in ns:
        assert set(ns["grads"]) == {"x", "h0", "c0", "w_ih", "w_hh", "b"}
        assert ns["dx"].shape == ns["x"].shape


def test_every_fr_name_in_the_readme_resolves_after_import_fastrnn_as_fr():
    """`fr.interop.from_torch` in the API table needed `from fastrnn import interop` first. Checked
    in a fresh interpreter: in this one another test may have imported the submodule already."""
    import subprocess
    import sys

    names = sorted(set(re.findall(r"`(fr(?:\.[A-Za-z_]\w*)+)", README.read_text())))
    assert "fr.interop.from_torch" in names
    code = ("import functools, sys, fastrnn as fr\n"
            "for name in sys.argv[1:]:\n"
            "    functools.reduce(getattr, name.split('.')[1:], fr)\n")
    proc = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
