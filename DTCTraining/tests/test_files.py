"""Crash-safe writes: the target appears whole or not at all, with ordinary file permissions."""
import errno
import os
import stat

import numpy as np
import pytest
import SimpleITK as sitk

from dtc_training.files import WriteError, atomic_json_save, atomic_write
from dtc_training.volumes import write_image


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

    def half_write(f):  # as a disk that fills up mid-write (which needs privileges to arrange for real)
        f.write(b"ne")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as failure:
        atomic_write(path, half_write)
    assert failure.value.errno == errno.ENOSPC and failure.value.filename == str(path)  # not the temporary
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.pt"]


@pytest.mark.parametrize("name, data_file", [("label.nhdr", "label.raw.gz"), ("label.mhd", "label.zraw"),
                                             ("label.nrrd", None)])
def test_images_with_a_detached_data_file_are_written_whole_and_read_back(tmp_path, name, data_file):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_image(sitk.GetImageFromArray(array), tmp_path / name)
    assert sorted(os.listdir(tmp_path)) == sorted(f for f in (name, data_file) if f)  # no staging folder left
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / name))), array)


@pytest.mark.parametrize("failure", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_an_interrupted_image_write_keeps_the_old_image_and_leaves_nothing_else(tmp_path, monkeypatch, failure):
    path = tmp_path / "label.nhdr"
    old = sitk.GetImageFromArray(np.zeros((2, 3, 4), np.uint8))
    write_image(old, path)
    before = {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path)}
    real_write = sitk.WriteImage

    def write_then_fail(image, name, *args):
        real_write(image, name, *args)  # the data file and header exist in the staging folder
        raise failure

    monkeypatch.setattr(sitk, "WriteImage", write_then_fail)
    with pytest.raises((WriteError, KeyboardInterrupt)):
        write_image(sitk.GetImageFromArray(np.ones((2, 3, 4), np.uint8)), path)
    assert {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path)} == before
