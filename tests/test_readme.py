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
