"""Saving keeps an overwritten file's permissions and refuses bad paths before creating anything."""
import os
import stat

import pytest

from fastrnn import layers
from fastrnn.models import Sequential


def _listing(directory):
    return sorted(os.listdir(directory))


# ------------------------------------------------------------------------------------------ saving
@pytest.fixture
def umask022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _tiny():
    m = Sequential([layers.Dense(2)])
    m.build((3,))
    return m


def test_overwriting_keeps_the_files_permissions(tmp_path, umask022):
    m = _tiny()
    path = tmp_path / "m.fastrnn"
    m.save(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644  # a new file: 0o666 & ~umask
    for mode in (0o600, 0o640, 0o604):
        os.chmod(path, mode)
        m.save(str(path))
        assert stat.S_IMODE(os.stat(path).st_mode) == mode
        m.save_weights(str(path))
        assert stat.S_IMODE(os.stat(path).st_mode) == mode
    link = tmp_path / "link.fastrnn"
    link.symlink_to(path)
    os.chmod(path, 0o600)
    m.save(str(link))
    assert link.is_symlink() and stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_saving_to_a_dangling_symlink_is_refused(tmp_path):
    link = tmp_path / "link.fastrnn"
    link.symlink_to(tmp_path / "sub" / "target.fastrnn")
    (tmp_path / "sub").mkdir()
    with pytest.raises(FileNotFoundError, match="dangling symbolic link"):
        _tiny().save(str(link))
    with pytest.raises(FileNotFoundError, match="dangling symbolic link"):
        _tiny().save_weights(str(link))
    assert _listing(tmp_path) == ["link.fastrnn", "sub"] and not os.listdir(tmp_path / "sub")
    assert link.is_symlink()


@pytest.mark.parametrize("name, error, match", [
    ("", ValueError, "the file path is empty"),
    ("dir/", IsADirectoryError, "names a directory"),
    ("sub/", IsADirectoryError, "names a directory"),
    ("sub", IsADirectoryError, "is a directory"),
    ("pipe", ValueError, "not a regular file \\(a FIFO\\)"),
])
def test_bad_save_paths_create_nothing(tmp_path, monkeypatch, name, error, match):
    (tmp_path / "sub").mkdir()
    os.mkfifo(tmp_path / "pipe")
    monkeypatch.chdir(tmp_path)
    before = _listing(tmp_path)
    with pytest.raises(error, match=match):
        _tiny().save(name)
    assert _listing(tmp_path) == before and not os.listdir(tmp_path / "sub")
