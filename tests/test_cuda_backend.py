"""How fastrnn finds its optional CUDA module (no GPU needed): a module that was not built is
None silently, one that is present but fails to import is None with the error kept, warned about
and reported by info(); a built module imports, and its host-side controls (tile overrides, time
loop counters, the error check) behave. The kernels themselves are tested in test_gpu.py."""
import importlib
import importlib.util

import pytest

import fastrnn
from fastrnn import backend

CUDA_MODULE_PRESENT = importlib.util.find_spec("fastrnn._cuda") is not None


@pytest.fixture
def fresh_backend(monkeypatch):
    """backend with its CUDA probes forgotten (restored afterwards)."""
    monkeypatch.setattr(backend, "_cuda_checked", False)
    monkeypatch.setattr(backend, "_cuda_module", None)
    monkeypatch.setattr(backend, "_cuda_error", None)
    monkeypatch.setattr(backend, "_kernel_support", {})
    return backend


def _import_raising(monkeypatch, exc):
    real = importlib.import_module

    def fake(name, *args, **kw):
        if name == "fastrnn._cuda":
            raise exc
        return real(name, *args, **kw)

    monkeypatch.setattr(backend.importlib, "import_module", fake)


def test_a_present_cuda_module_imports():
    """A _cuda*.so next to the package must import: a broken build fails here instead of
    silently skipping every kernel test."""
    if CUDA_MODULE_PRESENT:
        assert backend.cuda_import_error() is None, f"fastrnn._cuda is present but: {backend.cuda_import_error()}"
        mod = backend.cuda()
        assert mod is not None
        for name in ("kernel_support", "time_loop_counts", "set_step_tiles", "forward", "backward", "gemm"):
            assert hasattr(mod, name), name
    else:
        assert backend.cuda() is None and backend.cuda_import_error() is None
        assert backend.cuda_kernels_available() is False


def test_a_missing_cuda_module_is_none_silently(fresh_backend, monkeypatch, recwarn):
    _import_raising(monkeypatch, ModuleNotFoundError("No module named 'fastrnn._cuda'", name="fastrnn._cuda"))
    assert backend.cuda() is None
    assert backend.cuda_import_error() is None
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    support = backend.cuda_kernel_support()
    assert support["ok"] is False and "not built" in support["message"]
    assert backend.cuda_kernels_available() is False and backend.cuda_device_count() == 0


@pytest.mark.parametrize("exc", [
    ImportError("fastrnn/_cuda.so: undefined symbol: cudaLaunchCooperativeKernel"),
    ModuleNotFoundError("No module named 'libhelper'", name="libhelper"),
], ids=["bad-so", "missing-dependency"])
def test_a_broken_cuda_module_is_kept_warned_and_reported(fresh_backend, monkeypatch, capsys, exc):
    _import_raising(monkeypatch, exc)
    with pytest.warns(RuntimeWarning, match="present but failed to import"):
        assert backend.cuda() is None
    assert backend.cuda_import_error() is exc
    assert backend.cuda() is None  # read once: no second warning, same answer
    support = backend.cuda_kernel_support()
    assert support["ok"] is False and "failed to import" in support["message"]
    assert backend.cuda_kernels_available() is False
    data = fastrnn.info()
    out = capsys.readouterr().out
    assert data["cuda_module"] is False and data["cuda_kernels"] is False
    assert str(exc) in data["cuda_problem"]
    assert "CUDA problem:" in out and str(exc) in out


cuda_module = pytest.mark.skipif(not CUDA_MODULE_PRESENT, reason="fastrnn was built without its CUDA module")


@cuda_module
def test_set_step_tiles_rejects_unknown_values():
    mod = backend.cuda()
    before = mod.get_step_tiles()
    for args, pattern in (((2, 0, 0), "forward must be -1"), ((0, -2, 0), "backward must be -1"),
                          ((0, 0, 3), "persistent must be -1"), ((1, 1, -5), "persistent must be -1")):
        with pytest.raises(ValueError, match=pattern):
            mod.set_step_tiles(*args)
        assert mod.get_step_tiles() == before  # nothing half-set
    try:
        mod.set_step_tiles(1, 0, 2)
        assert mod.get_step_tiles() == (1, 0, 2)
    finally:
        mod.set_step_tiles(-1, -1, -1)
    assert mod.get_step_tiles() == (-1, -1, -1)


@cuda_module
def test_cuda_module_reports_errors_and_kernel_support():
    mod = backend.cuda()
    with pytest.raises(RuntimeError, match="fastrnn CUDA: deliberate failure"):
        mod._fail_for_tests()
    counts = mod.time_loop_counts()
    assert sorted(counts) == ["backward_per_step", "backward_persistent", "forward_per_step", "forward_persistent"]
    assert all(isinstance(v, int) and v >= 0 for v in counts.values())
    bad = mod.kernel_support(10_000)  # no such device, whether or not there is a GPU: never raises
    assert bad["ok"] is False and bad["error"] != 0 and bad["message"]
    support = backend.cuda_kernel_support()
    assert support["ok"] == backend.cuda_kernels_available()
    if backend.cuda_device_count() == 0:
        assert support["ok"] is False
