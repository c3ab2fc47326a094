"""Nothing lost, nothing silent, on the module's side (docs/reliability.md; the backend's side is
DTCTraining/tests/test_reliability.py): the batch script and the scene's exports never replace an input, a
full disk is one line and exit code 1 with no empty segmentation left, a training that diverges is shown
failed with what to do, never done, and the batch script's options are range-checked as they are parsed."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
from conftest import MODULE_DIR, REPO, addVolume, obliqueMatrix, phantom

sys.path.insert(0, str(REPO / "DTCTraining" / "tests"))
import full_disk  # noqa: E402  (the backend tests' real full disk)

from DTCSegmentationLib import SceneIO  # noqa: E402
from DTCSegmentationLib.Parameters import LabeledPair, SegmentParameters, TrainingParameters  # noqa: E402
from DTCSegmentationLib.Process import EXIT_DIVERGED  # noqa: E402
from DTCSegmentationLib.TrainingLogic import TrainingLogic  # noqa: E402

BATCH = [sys.executable, str(MODULE_DIR / "Scripts" / "batch.py")]


def _batch(*args):
    return subprocess.run([*BATCH, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=REPO)


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower() or "Traceback" in line]


@pytest.fixture
def scan(scene, tmp_path):
    image, _ = phantom(0, size=(20, 20, 20))
    return SceneIO.writeVolume(addVolume(scene, image, "scan", obliqueMatrix()), tmp_path / "scan.nrrd")


def test_batch_segment_refuses_an_output_onto_its_input_before_any_work(tinyModel, scan, tmp_path):
    named = scan.with_name("case.seg.nrrd")  # a volume whose name is that of its segmentation
    os.replace(scan, named)
    (tmp_path / "same").symlink_to(tmp_path)
    before = named.read_bytes()
    for output in (tmp_path, tmp_path / "same"):
        run = _batch("segment", "--model", tinyModel, "-o", output, named)
        assert run.returncode == 2 and _errors(run.stderr) == [
            f"error: {output / 'case.seg.nrrd'}: is the input {named} (the same file); writing it would destroy "
            "that input, choose another output name"], run.stderr
    assert named.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["case.seg.nrrd", "same"]


def test_an_export_onto_the_file_a_node_was_read_from_is_refused(scene, scan):
    before = scan.read_bytes()
    volume = SceneIO.readVolume(scan)
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    for write in (lambda: SceneIO.writeVolume(volume, scan), lambda: SceneIO.writeSegmentation(seg, scan),
                  lambda: SceneIO.writeVolume(volume, scan.parent / "." / scan.name)):
        with pytest.raises(ValueError, match=f"is the input {scan} "):
            write()
    assert scan.read_bytes() == before
    assert SceneIO.writeVolume(volume, scan.with_name("copy.nrrd")).is_file()  # any other name is written


@pytest.mark.skipif(not full_disk.available(), reason="no private mount namespace with a tmpfs here")
def test_batch_segment_on_a_full_disk_fails_in_one_line_and_leaves_no_segmentation(tinyModel, scan, tmp_path):
    disk = full_disk.disk(tmp_path)
    earlier = b"an earlier segmentation"
    [outcome] = full_disk.run_on_full_disk(tmp_path, [[*BATCH, "segment", "--model", tinyModel, "--device", "cpu",
                                                       "-o", disk, scan]], earlier={"scan.seg.nrrd": earlier})
    assert outcome.returncode == 1 and "Traceback" not in outcome.stderr
    assert _errors(outcome.stderr)[0].startswith(f"error: {disk / 'scan.seg.nrrd'}: "), outcome.stderr
    assert outcome.files == {"scan.seg.nrrd": hashlib.md5(earlier).hexdigest()}  # whole, and nothing else


@pytest.mark.parametrize("args, message", [
    (["segment", "--model", "m", "-o", "out", "--timeout", "-1", "x.nrrd"], "argument --timeout: -1: must be positive"),
    (["segment", "--model", "m", "-o", "out", "--memory-gb", "nan", "x.nrrd"], "argument --memory-gb: nan: must be"),
    (["train", "--labeled", "a:b", "-o", "out", "--lr", "inf"], "argument --lr: inf: must be a finite number"),
    (["train", "--labeled", "a:b", "-o", "out", "--timeout", "0"], "argument --timeout: 0: must be positive"),
])
def test_batch_options_are_range_checked_as_they_are_parsed(args, message):
    run = _batch(*args)
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr


def test_an_existing_file_as_the_batch_output_folder_is_one_line(tinyModel, scan, tmp_path):
    (tmp_path / "afile").write_text("")
    run = _batch("segment", "--model", tinyModel, "-o", tmp_path / "afile", scan)
    assert run.returncode == 2 and _errors(run.stderr) == [
        f"error: {tmp_path / 'afile'}: is a file, not a folder; choose another output folder"]


def test_a_memory_budget_that_is_not_a_finite_number_is_a_problem():
    assert SegmentParameters(memoryGb=float("inf")).problems() == [
        "the memory budget must be a finite number, not negative"]
    assert SegmentParameters(memoryGb=2.0).problems() == []


class DivergingLogic(TrainingLogic):
    """The panel's own command for `dtc train`, with a learning rate beyond its range (1e38) that makes any
    data diverge: as a rate that suits most data does on some."""

    def command(self, job, resume):
        return super().command(job, resume) + ["--lr", "1e38"]


def test_a_training_that_diverges_is_shown_failed_with_what_to_do_never_done(phantomScene, tmp_path):
    pairs = [LabeledPair(v, l) for v, l in phantomScene["labeled"]]
    logic = DivergingLogic(workRoot=tmp_path)
    params = TrainingParameters(iterations=8, labeledBatch=1, unlabeledBatch=1, patchSize=(16, 16, 16), nFilters=4,
                                device="cpu", valFraction=0.0, valEvery=0, checkpointEvery=1, workers=0)
    job = logic.wait(logic.start(pairs, phantomScene["unlabeled"], params), timeout=300)
    assert job.state == "failed" and job.returnCode == EXIT_DIVERGED, job.message + job.logTail()
    assert job.monitor.divergedAt is not None and not job.modelPath.is_file()
    assert job.message.startswith(f"The training diverged at iteration {job.monitor.divergedAt}: ")
    kept = job.monitor.checkpointIteration
    assert (f"Its checkpoint of iteration {kept} is kept" if kept else "Lower the learning rate") in job.message
    if kept:  # offered again by the next session, saying what went wrong
        assert f"it diverged at iteration {job.monitor.divergedAt}" in logic.reopen(job.outDir).message
