"""The machine facts the benchmark states with its figures: the data caches (against an independent
read of sysfs) and the measured FMA peak (positive on every ISA path, argument checks)."""
import glob
import os
import sys

import pytest

import fastrnn
from fastrnn import backend


def _sysfs_caches():
    """{level: (bytes, CPUs sharing)} for CPU 0's data/unified caches, read here in Python."""
    out = {}
    for d in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
        with open(f"{d}/type") as f:
            if f.read().strip() == "Instruction":
                continue
        with open(f"{d}/level") as f:
            level = int(f.read())
        with open(f"{d}/size") as f:
            text = f.read().strip()
        size = int(text.rstrip("KMG")) << {"K": 10, "M": 20, "G": 30}.get(text[-1], 0)
        shared = 0
        if os.path.exists(f"{d}/shared_cpu_list"):
            with open(f"{d}/shared_cpu_list") as f:
                for part in f.read().strip().split(","):
                    lo, _, hi = part.partition("-")
                    shared += int(hi or lo) - int(lo) + 1
        out[level] = (size, shared)
    return out


def test_cache_info_matches_sysfs():
    ci = backend.cache_info()
    assert set(ci) == {"l1d", "l2", "l3", "l1d_shared_by", "l2_shared_by", "l3_shared_by", "source"}
    want = _sysfs_caches() if sys.platform.startswith("linux") else {}
    if not want:  # no sysfs cache directory: the sizes come from sysconf or sysctl, or are unknown
        assert ci["source"] in ("sysconf", "sysctl", "unknown")
        return
    assert ci["source"] == "sysfs"
    for level, key in ((1, "l1d"), (2, "l2"), (3, "l3")):
        size, shared = want.get(level, (0, 0))
        assert (ci[key], ci[f"{key}_shared_by"]) == (size, shared), (key, ci)
    assert ci["l1d"] > 0 and ci["l2"] > 0  # every machine CI runs on reports these


def test_info_reports_the_caches(capsys):
    data = fastrnn.info()
    assert data["caches"] == backend.cache_info()
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "caches:" in ln)
    assert line.split("caches:")[1].strip() == backend._cache_line(data["caches"])


def test_cache_line_formats_sizes_and_sharing():
    ci = {"l1d": 48 << 10, "l2": 1 << 20, "l3": 0, "l1d_shared_by": 1, "l2_shared_by": 2, "l3_shared_by": 0,
          "source": "sysfs"}
    assert backend._cache_line(ci) == "L1d 48 KiB, L2 1 MiB shared by 2 CPUs, L3 unknown (sysfs)"
    assert backend._cache_line(dict(ci, l2=1280 << 10)).startswith("L1d 48 KiB, L2 1280 KiB shared by 2")


@pytest.mark.parametrize("isa", backend.available_isas())
def test_fma_peak_is_measured_on_every_isa_path(isa):
    before = backend.isa()
    backend.set_isa(isa)
    try:
        one = backend.fma_peak(1, seconds=0.05)
        assert one > 1e8  # any core of this century does more than 0.1 GFLOP/s
        assert backend.core().fma_peak(1000, 2) > 0
    finally:
        backend.set_isa(before)


@pytest.mark.parametrize("kwargs, match", [
    ({"threads": 0}, "threads must be an int >= 1"),
    ({"threads": 1.5}, "threads must be an int >= 1"),
    ({"threads": True}, "threads must be an int >= 1"),
    ({"seconds": 0}, "seconds must be > 0"),
    ({"seconds": float("nan")}, "seconds must be > 0"),
])
def test_fma_peak_checks_its_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        backend.fma_peak(**kwargs)


@pytest.mark.parametrize("iters, threads", [(0, 1), (1, 0), (1, 5000), (1 << 41, 1)])
def test_core_fma_peak_refuses_out_of_range_arguments(iters, threads):
    with pytest.raises(ValueError, match="iters|threads"):
        backend.core().fma_peak(iters, threads)
