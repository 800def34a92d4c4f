"""`python -m fastrnn bench` runs end to end on a tiny configuration and writes its Markdown table
(no timing is asserted: benchmarks live in bench/)."""
import subprocess
import sys


def test_bench_table_runs_and_writes_markdown(tmp_path):
    md = tmp_path / "table.md"
    proc = subprocess.run([sys.executable, "-m", "fastrnn", "bench", "--shapes=small", "--cells=gru,lstm",
                           "--threads=1", "--min-time=0.01", f"--markdown={md}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [ln for ln in md.read_text().splitlines() if ln.startswith("| gru") or ln.startswith("| lstm")]
    assert len(rows) == 4  # 2 cells x (forward, train)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[3]) > 0 and float(cells[5]) > 0 and float(cells[7]) > 0  # fastrnn, numpy, torch ms
    assert "| GEMM (input projection)" in md.read_text()
    assert "threads used: 1" in proc.stdout


def test_bench_rejects_unknown_shape():
    proc = subprocess.run([sys.executable, "-m", "fastrnn", "bench", "--shapes=huge"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "unknown shape 'huge'" in proc.stderr
