"""Every bad input to `dtc train` is reported before training starts, naming the file and the problem."""
import json
import locale
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import TINY, events, run_dtc
from dtc_training.cli import EXIT_BAD_INPUT
from dtc_training.data import load_files, read_datalist


def write(path, array, spacing=(1.0, 1.0, 1.0), origin=(0, 0, 0), vector=False):
    image = sitk.GetImageFromArray(array, isVector=vector)
    image.SetSpacing(spacing[: image.GetDimension()])
    image.SetOrigin(origin[: image.GetDimension()])
    sitk.WriteImage(image, str(path))
    return path.name


def case(tmp_path, name, label=None, image=None, **kw):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(20, 36, 36)).astype(np.float32) if image is None else image
    if label is None:
        label = np.zeros((20, 36, 36), np.uint8)
        label[5:15, 10:25, 10:25] = 1
    return {"image": write(tmp_path / f"{name}.nrrd", image, **kw),
            "label": write(tmp_path / f"{name}_label.nrrd", label, **kw)}


def train(tmp_path, labeled, unlabeled=(), out=None, extra=(), refused=True):
    """`dtc train` on these entries; a call expected to be refused runs in this process (a refusal comes
    before training: nothing of a training's signals or workers to keep apart), one that trains in its own."""
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"labeled": labeled, "unlabeled": list(unlabeled)}))
    return run_dtc("train", "--datalist", datalist, "-o", out or tmp_path / "run", "--iterations", 1, *TINY,
                   *extra, check=False, in_process=refused)


def assert_refused(proc, *fragments):
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr
    assert not events(proc.stdout, "progress"), "training must not start"
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


def test_all_missing_files_are_listed_at_once(tmp_path):
    good = case(tmp_path, "good")
    proc = train(tmp_path, [good, {"image": "nope1.nrrd", "label": "nope2.nrrd"}], ["nope3.nii.gz"])
    assert_refused(proc, "nope1.nrrd: file not found", "nope2.nrrd: file not found", "nope3.nii.gz: file not found")


def test_missing_files_and_bad_volumes_are_reported_together(tmp_path):
    image = np.zeros((20, 36, 36), np.float32)
    image[1, 1, 1] = np.nan
    nan = case(tmp_path, "nan", image=image)
    proc = train(tmp_path, [case(tmp_path, "a"), nan], ["nowhere.nrrd"])
    assert_refused(proc, "2 problems", "nowhere.nrrd: file not found", "nan.nrrd: 1 voxels are NaN or Inf")


def test_unreadable_file(tmp_path):
    (tmp_path / "junk.nrrd").write_text("not an image")
    proc = train(tmp_path, [case(tmp_path, "a")], ["junk.nrrd"])
    assert_refused(proc, "junk.nrrd: not a readable image")


def test_shape_and_geometry_mismatch(tmp_path):
    a = case(tmp_path, "a")
    b = case(tmp_path, "b")
    write(tmp_path / b["label"], np.zeros((20, 36, 30), np.uint8))
    c = case(tmp_path, "c")
    write(tmp_path / c["label"], np.ones((20, 36, 36), np.uint8), origin=(5, 0, 0))
    d = case(tmp_path, "d")
    flipped = sitk.GetImageFromArray(np.ones((20, 36, 36), np.uint8))
    flipped.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))  # same size, spacing and origin: only the axes differ
    sitk.WriteImage(flipped, str(tmp_path / d["label"]))
    proc = train(tmp_path, [a, b, c, d])
    assert_refused(proc, "3 problems",
                   "b_label.nrrd: label geometry differs", "size (30, 36, 20) against the image's (36, 36, 20)",
                   "c_label.nrrd: label geometry differs", "origin (5, 0, 0) against the image's (0, 0, 0)",
                   "d_label.nrrd: label geometry differs", "direction (-1, 0, 0, 0, 1, 0, 0, 0, 1)")


@pytest.mark.parametrize("content, message", [
    ('[{"image": "a.nrrd", "label": "a_label.nrrd"}]', "a datalist is a JSON object"),
    ('{"labeled": {"image": "a.nrrd"}}', "'labeled' must be a list of entries, not dict"),
    ('{"labeled": [{"image": 3, "label": "a_label.nrrd"}]}', 'entry 0 of \'labeled\' must be'),
    ('{"unlabeled": [null]}', "entry 0 of 'unlabeled' must be"),
])
def test_a_malformed_datalist_is_refused_with_what_is_wrong(tmp_path, content, message):
    datalist = tmp_path / "datalist.json"
    datalist.write_text(content)
    proc = run_dtc("train", "--datalist", datalist, "-o", tmp_path / "run", *TINY, check=False, in_process=True)
    assert_refused(proc, "datalist.json: ", message)
    assert "Traceback" not in proc.stderr


def test_nan_and_inf_voxels(tmp_path):
    image = np.zeros((20, 36, 36), np.float32)
    image[3, 4, 5] = np.nan
    image[1, 1, 1] = np.inf
    proc = train(tmp_path, [case(tmp_path, "a", image=image)])
    assert_refused(proc, "a.nrrd: 2 voxels are NaN or Inf")


def test_non_3d_and_multi_component_images(tmp_path):
    flat = write(tmp_path / "flat.nrrd", np.zeros((36, 36), np.float32))
    rgb = write(tmp_path / "rgb.nrrd", np.zeros((20, 36, 36, 3), np.uint8), vector=True)
    proc = train(tmp_path, [case(tmp_path, "a")], [flat, rgb])
    assert_refused(proc, "flat.nrrd: image is 2D", "rgb.nrrd: image has 3 components")


def test_no_labeled_case(tmp_path):
    a = case(tmp_path, "a")
    proc = train(tmp_path, [], [a["image"]])
    assert_refused(proc, "no labeled case")


def test_several_label_values_need_a_chosen_foreground(tmp_path):
    label = np.zeros((20, 36, 36), np.uint8)
    label[2:8, 5:20, 5:20], label[10:15, 5:20, 5:20] = 1, 2
    proc = train(tmp_path, [case(tmp_path, "a", label=label)])
    assert_refused(proc, "a_label.nrrd: label has several foreground values [1, 2]")
    proc = train(tmp_path, [case(tmp_path, "a", label=label)], extra=["--foreground-value", 2], refused=False)
    assert proc.returncode == 0, proc.stderr
    # what training sees: the chosen value as foreground, in (x, y, z) order
    (loaded,) = load_files(read_datalist(tmp_path / "datalist.json"), None, 2.0, "test").labeled
    np.testing.assert_array_equal(loaded["label"], (label == 2).transpose(2, 1, 0))


def test_empty_label_and_small_volumes_are_allowed_with_warnings(tmp_path):
    empty = case(tmp_path, "empty", label=np.zeros((20, 36, 36), np.uint8))
    proc = train(tmp_path, [empty, case(tmp_path, "b")], refused=False)
    assert proc.returncode == 0, proc.stderr
    assert "empty_label.nrrd: label has no foreground" in proc.stderr
    assert "smaller than the patch" in proc.stderr  # 20 slices < 32: zero-padded
    assert events(proc.stdout, "done")


def test_a_patch_and_batch_too_small_for_batch_norm_are_refused(tmp_path):
    # a 16-voxel patch is one voxel at the deepest level: one item per batch gives batch norm one value
    proc = train(tmp_path, [case(tmp_path, "a")], extra=["--patch", 16, 16, 16, "--labeled-batch", 1])
    assert_refused(proc, "--patch 16 16 16 with 1 item per batch (1 labeled, no unlabeled)")
    unlabeled = [case(tmp_path, "u")["image"]]
    trains = train(tmp_path, [case(tmp_path, "a")], unlabeled, extra=["--patch", 16, 16, 16, "--labeled-batch", 1,
                                                                        "--unlabeled-batch", 1], refused=False)
    assert trains.returncode == 0 and events(trains.stdout, "done"), trains.stderr  # two items: it trains


def test_a_utf8_datalist_with_a_bom_and_accented_names_is_read_in_an_ascii_locale(tmp_path):
    folder = tmp_path / "Müller"
    folder.mkdir()
    entry = {key: f"Müller/{name}" for key, name in case(folder, "vorhof_ä").items()}
    datalist = tmp_path / "datalist.json"  # as Windows Notepad saves it: UTF-8 with a byte-order mark
    datalist.write_bytes(b"\xef\xbb\xbf" + json.dumps({"labeled": [entry]}, ensure_ascii=False).encode("utf-8"))
    previous = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")  # as GDCM's DICOM writer leaves a process (Slicer's, say)
    try:
        assert locale.getpreferredencoding(False) != "UTF-8"  # so a default text read would be ASCII
        data = load_files(read_datalist(datalist), None, None, str(datalist))
    finally:
        locale.setlocale(locale.LC_CTYPE, previous)
    assert [c["name"] for c in data.labeled] == ["vorhof_ä.nrrd"] and data.labeled[0]["label"].any()


def test_label_values_0_255_are_binarised(tmp_path):
    label = np.zeros((20, 36, 36), np.uint8)
    label[5:15, 10:25, 10:25] = 255
    proc = train(tmp_path, [case(tmp_path, "a", label=label)], refused=False)
    assert proc.returncode == 0, proc.stderr
    (loaded,) = load_files(read_datalist(tmp_path / "datalist.json"), None, None, "test").labeled
    assert loaded["label"].dtype == np.uint8
    np.testing.assert_array_equal(loaded["label"], (label == 255).transpose(2, 1, 0))


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
def test_unwritable_output_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root writes through permissions; sysfs refuses new folders to root too
        if not os.path.isdir("/sys/kernel"):
            pytest.skip("running as root without Linux's sysfs: no folder root cannot write")
        locked = Path("/sys/kernel")
    assert_refused(train(tmp_path, [case(tmp_path, "a")], out=locked / "dtc-run"),
                   f"{locked / 'dtc-run'}: output folder is not writable")


def test_output_path_blocked_by_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    assert_refused(train(tmp_path, [case(tmp_path, "a")], out=tmp_path / "file" / "run"),
                   f"{tmp_path / 'file'}: is a file, not a folder")


def test_the_same_image_labeled_and_unlabeled(tmp_path):
    a = case(tmp_path, "a")
    assert_refused(train(tmp_path, [a], [a["image"]]), "a.nrrd: listed both as labeled and as unlabeled")


def test_a_new_run_into_a_folder_that_holds_one_needs_resume_or_overwrite(tmp_path):
    good, out = case(tmp_path, "good"), tmp_path / "run"
    assert train(tmp_path, [good], out=out, refused=False).returncode == 0
    before = (out / "checkpoint.pt").read_bytes()
    assert_refused(train(tmp_path, [good], out=out), f"{out}: holds a training run already (checkpoint.pt, "
                   "model.safetensors); add --resume to continue it, --overwrite to start again")
    assert (out / "checkpoint.pt").read_bytes() == before
    assert_refused(train(tmp_path, [good], out=out, extra=("--resume", "--overwrite")), "give one of them")
    assert train(tmp_path, [good], out=out, extra=("--overwrite",), refused=False).returncode == 0


def test_resume_without_checkpoint(tmp_path):
    proc = run_dtc("train", "--datalist", tmp_path / "x.json", "-o", tmp_path / "none", "--resume", check=False,
                   in_process=True)
    assert_refused(proc, "checkpoint.pt: no checkpoint to resume from")


def test_out_of_range_options_are_all_refused_before_any_data_is_read(tmp_path):
    # The datalist does not exist: had the options been checked after loading, that would be the complaint.
    proc = run_dtc("train", "--datalist", tmp_path / "absent.json", "-o", tmp_path / "run",
                   "--lr-step", 0, "--rampup-step", 0, "--checkpoint-every", 0, "--precise-bn", -1,
                   "--ema", 1.5, "--patch", 32, 32, 24, "--seed", -1, "--device", "gpu", "--holdout", -1,
                   "--ce-weight", -1, "--checkpoint-minutes", -1, check=False, in_process=True)
    assert_refused(proc, "--lr-step must be >= 1", "--rampup-step must be >= 1", "--checkpoint-every must be >= 1",
                   "--seed must be in [0, 2^32)", "--device gpu: not a device", "--holdout must be >= 0",
                   "--precise-bn must be >= 0", "--ema must be in [0, 1)", "--patch [32, 32, 24]",
                   "--ce-weight must be >= 0", "--checkpoint-minutes must be >= 0")
    assert "absent.json" not in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("extra, message", [
    (["--holdout", "-1"], "--holdout must be >= 0"),
    (["--val-fraction", "1.0"], "--val-fraction in [0, 1)"),
    (["--device", "gpu"], "--device gpu: not a device"),
    (["--device", "cuda:99"], "--device cuda:99: "),
])
def test_bad_split_and_device_options_are_refused(tmp_path, extra, message):
    proc = run_dtc("train", "--datalist", tmp_path / "absent.json", "-o", tmp_path / "run", *extra, check=False,
                   in_process=True)
    assert_refused(proc, message)
    assert "Traceback" not in proc.stderr


def test_a_folder_that_another_training_holds_is_refused_until_that_process_ends(tmp_path):
    import signal
    import socket
    import subprocess
    import sys

    from dtc_training.runlock import running_owner

    good, out = case(tmp_path, "good"), tmp_path / "run"
    assert train(tmp_path, [good], out=out, refused=False).returncode == 0  # a run with a checkpoint
    assert running_owner(out) is None  # its trainer has ended
    # another process holds the folder as a running `dtc train` does, with a forked child as a DataLoader
    # worker, and is then killed without a word; the child lives on a while, as orphaned workers do
    holder = subprocess.Popen(
        [sys.executable, "-c", "import os, sys, time\nfrom dtc_training.runlock import hold_run_lock\n"
         "with hold_run_lock(sys.argv[1]):\n    worker = os.fork()\n    if worker == 0:\n        time.sleep(60)\n"
         "        os._exit(0)\n    print(worker, flush=True)\n    time.sleep(600)\n", str(out)],
        stdout=subprocess.PIPE, text=True)
    worker = int(holder.stdout.readline())
    try:
        owner = f"process {holder.pid} on {socket.gethostname()}"
        assert running_owner(out) == owner
        for extra in ((), ("--resume",)):
            proc = train(tmp_path, [good], out=out, extra=extra)
            assert_refused(proc, f"{out}: another training is running in this folder ({owner})")
        holder.kill()
        holder.wait()
        os.kill(worker, 0)  # the worker still runs (raises if not)
        assert running_owner(out) is None  # the lock went with the killed trainer, not kept by its worker
    finally:
        holder.kill()
        holder.wait()
        os.kill(worker, signal.SIGKILL)
    proc = train(tmp_path, [good], out=out, extra=("--resume", "--iterations", 2), refused=False)
    assert proc.returncode == 0 and events(proc.stdout, "done")[0]["iterations"] == 2, proc.stderr
