"""Crash-safe writes: the target appears whole or not at all, with ordinary file permissions."""
import os
import stat

import pytest

from dtc_training.files import atomic_json_save, atomic_write


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_written_file_has_the_permissions_of_a_new_file(tmp_path):
    previous = os.umask(0o022)  # a common umask, so that owner-only (0o600) would show
    try:
        path = atomic_json_save({"a": 1}, tmp_path / "result.json")
        plain = tmp_path / "plain.json"
        plain.write_text("{}")  # created the ordinary way, under the same umask
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"old")

    def half_write(f):
        f.write(b"ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_write)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.pt"]
