"""`python -m fastrnn bench` runs end to end on a tiny configuration and writes its Markdown table
(no timing is asserted: benchmarks live in bench/)."""
import subprocess
import sys

import pytest


def test_bench_table_runs_and_writes_markdown(tmp_path):
    md = tmp_path / "table.md"
    proc = subprocess.run([sys.executable, "-m", "fastrnn", "bench", "--shapes=small", "--cells=gru,lstm",
                           "--threads=1", "--min-time=0.01", f"--markdown={md}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [ln for ln in md.read_text().splitlines() if ln.startswith("| gru") or ln.startswith("| lstm")]
    assert len(rows) == 4  # 2 cells x (forward, train)
    peak_lines = [ln for ln in md.read_text().splitlines() if "FMA peak of the" in ln]
    assert len(peak_lines) == 1 and "1 thread(s)" in peak_lines[0]
    peak = float(peak_lines[0].split("measured: ")[1].split(" GFLOP/s")[0])
    assert peak > 0
    assert any(ln.startswith("- caches: L1d ") for ln in md.read_text().splitlines())
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[3]) > 0 and float(cells[6]) > 0 and float(cells[8]) > 0  # fastrnn, numpy, torch ms
        # the share of the measured FMA peak: GFLOP/s over the peak line's figure
        assert float(cells[5]) == pytest.approx(100 * float(cells[4]) / peak, rel=0.02, abs=1)
    assert "| GEMM (input projection)" in md.read_text()
    assert "threads used: 1" in proc.stdout
    blas = [ln for ln in proc.stdout.splitlines() if ln.startswith("numpy BLAS:")]
    assert len(blas) == 1 and "threads: 1 in the runs" in blas[0], proc.stdout[:2000]  # the limit the runs use


def test_bench_rejects_unknown_shape():
    proc = subprocess.run([sys.executable, "-m", "fastrnn", "bench", "--shapes=huge"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "unknown shape 'huge'" in proc.stderr


class _FakeTime:
    """A clock that moves only when the timed functions say so; sleep() marks a new block."""

    def __init__(self):
        self.now = 0.0
        self.blocks = 0
        self.calls_in_block = 0

    def perf_counter(self):
        return self.now

    def sleep(self, seconds):
        self.blocks += 1
        self.calls_in_block = 0


def test_interleaved_timing_reports_the_quietest_block(monkeypatch):
    from fastrnn import _bench

    clock = _FakeTime()
    monkeypatch.setattr(_bench, "time", clock)

    def busy_quiet_busy():
        # blocks of `a`: all calls 6 ms (load), then 3, 4, 4, 3, 4, 4, ... ms (quiet), then all 5 ms
        a_block = (clock.blocks - 1) // 2
        clock.now += {0: 0.006, 2: 0.005}.get(a_block, (0.003, 0.004, 0.004)[clock.calls_in_block % 3])
        clock.calls_in_block += 1

    def steady():
        clock.now += 0.010

    t_a, t_b = _bench.timeit_interleaved([busy_quiet_busy, steady], min_time=0.3, rounds=3)
    assert clock.blocks == 6  # a, b, a, b, a, b
    # the quiet block's median: not its mean (3.7 ms), not the fastest call (3 ms), not the last
    # block (5 ms), not the median over all calls (5 ms)
    assert t_a == pytest.approx(0.004) and t_b == pytest.approx(0.010)


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "fastrnn", *args], capture_output=True, text=True, timeout=timeout)


def test_bench_takes_options_with_a_space_as_well_as_with_equals():
    proc = _cli("bench", "--shapes", "small", "--cells", "lstm", "--threads", "1", "--min-time", "0.01",
                "--no-torch", "--no-reference", "--no-gemm")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("lstm ")]
    assert len(rows) == 2 and all("small" in r for r in rows), proc.stdout[-2000:]
    assert not any(ln.startswith("gru ") for ln in proc.stdout.splitlines())  # --cells lstm was applied
    assert "threads used: 1" in proc.stdout


def test_bench_help_lists_its_options():
    proc = _cli("bench", "--help")
    assert proc.returncode == 0, proc.stderr
    for opt in ("--shapes", "--cells", "--threads", "--no-torch", "--markdown"):
        assert opt in proc.stdout
    assert "bench_args" not in proc.stdout


def test_version_flag_and_bad_arguments():
    import fastrnn

    proc = _cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"fastrnn {fastrnn.__version__}"
    proc = _cli("bench", "--shapes", "small", "--frobnicate")
    assert proc.returncode == 2 and "unrecognized arguments: --frobnicate" in proc.stderr
    proc = _cli("info", "--frobnicate")
    assert proc.returncode == 2 and "unrecognized arguments: --frobnicate" in proc.stderr
    assert "usage: python -m fastrnn" in proc.stderr


def test_usage_names_the_console_script_when_run_as_one(monkeypatch):
    from fastrnn import __main__ as cli

    monkeypatch.setattr(sys, "argv", ["/opt/venv/bin/fastrnn", "info"])
    assert cli.build_parser().prog == "fastrnn"
    monkeypatch.setattr(sys, "argv", ["/src/python/fastrnn/__main__.py", "info"])
    assert cli.build_parser().prog == "python -m fastrnn"


def test_bench_isa_option_holds_torch_to_the_same_instruction_set():
    import fastrnn

    isa = "avx2" if "avx2" in fastrnn.available_isas() else "scalar"
    want = {"avx2": "AVX2", "scalar": "DEFAULT"}[isa]
    proc = _cli("bench", "--shapes=small", "--cells=lstm", "--threads=1", "--min-time=0.01", "--no-reference",
                "--no-gemm", f"--isa={isa}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"(ISA path {isa})" in proc.stdout and f"FMA peak of the {isa} path" in proc.stdout
    torch_line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("torch "))
    assert f"ATen CPU capability {want}" in torch_line, torch_line
    proc = _cli("bench", "--isa=sse9")
    assert proc.returncode == 2 and "--isa" in proc.stderr
