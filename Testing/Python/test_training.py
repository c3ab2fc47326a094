"""Training from the scene with the real backend: a tiny `dtc train` child started by the logic reports
progress, stops on request with a checkpoint, resumes and finishes; a run killed mid-training is found,
reopened and resumed by the next session; crashing or hanging children are reported, never waited on
forever; garbage output is ignored."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import slicer
from conftest import MODULE_DIR, REPO

from DTCSegmentationLib.ModelStore import ModelStore, ModelStoreError
from DTCSegmentationLib.Parameters import (LabeledPair, ModuleState, SegmentParameters, TrainingParameters,
                                           dumpParameters, loadState, saveState)
from DTCSegmentationLib.Process import ChildProcess, backendEnvironment, explainFailure, parseEvent
from DTCSegmentationLib.ProgressPlot import ProgressPlot
from DTCSegmentationLib.TrainingLogic import TrainingLogic
from DTCSegmentationLib.Validation import checkTrainingInputs

TINY = dict(labeledBatch=1, unlabeledBatch=1, patchSize=(16, 16, 16), nFilters=4, device="cpu",
            valFraction=0.34, valEvery=2, checkpointEvery=50, workers=0)
TINY_SUPERVISED = {**TINY, "labeledBatch": 2}  # no unlabeled volume: two labeled items, as batch norm needs here


def test_training_reports_progress_stops_with_checkpoint_resumes_and_finishes(phantomScene, tmp_path):
    pairs = [LabeledPair(v, l) for v, l in phantomScene["labeled"]]
    logic = TrainingLogic(workRoot=tmp_path)
    plot = ProgressPlot(slicer.mrmlScene)
    job = logic.start(pairs, phantomScene["unlabeled"], TrainingParameters(iterations=500, **TINY))
    assert job.state == "running"
    for _ in range(1200):  # until the first progress event (at most ~2 min)
        logic.poll(job)
        if job.monitor.losses or job.finished:
            break
        time.sleep(0.1)
    assert job.monitor.losses, job.logTail()
    assert job.monitor.total == 500 and 0 < job.monitor.fraction < 1
    assert "Iteration" in job.monitor.statusText()
    logic.stop(job)
    logic.wait(job, timeout=120)
    assert job.state == "stopped", job.message + job.logTail()
    assert (job.outDir / "checkpoint.pt").is_file() and job.canResume
    stoppedAt = job.monitor.stoppedAt
    assert stoppedAt and stoppedAt < 500
    plot.update(job.monitor)
    assert plot.lossTable.GetTable().GetNumberOfRows() == len(job.monitor.losses) > 0

    job.params.iterations = stoppedAt + 2  # resume may shorten the run
    logic.resume(job)
    logic.wait(job, timeout=180)
    assert job.state == "done", job.message + job.logTail()
    assert job.monitor.iteration == stoppedAt + 2 and job.modelPath.is_file()
    assert job.monitor.dice, "validation Dice reported"
    plot.update(job.monitor)
    assert plot.diceTable.GetTable().GetNumberOfRows() == len(job.monitor.dice)
    assert plot.chart.GetNumberOfPlotSeriesNodes() == 3

    store = ModelStore(tmp_path / "store")
    info = store.importModel(job.modelPath, "phantom-model")
    assert [m.name for m in store.list()] == ["phantom-model"]
    assert info.metadata["n_filters"] == 4 and "patch (16, 16, 16)" in info.summary()
    store.delete("phantom-model")
    assert store.list() == []


def test_a_stop_asked_before_the_trainer_has_started_stops_it_once_it_has(phantomScene, tmp_path):
    # A Stop clicked while the child still imports torch and reads the data: the STOP file is there before
    # the trainer starts watching for it, and must count all the same.
    pairs = [LabeledPair(v, l) for v, l in phantomScene["labeled"]]
    logic = TrainingLogic(workRoot=tmp_path)
    job = logic.start(pairs, phantomScene["unlabeled"], TrainingParameters(iterations=100000, **TINY))
    logic.stop(job, grace=60)
    started = time.monotonic()
    logic.wait(job)
    assert job.state == "stopped" and job.returnCode == 3, job.message + job.logTail()
    assert time.monotonic() - started < 50  # stopped by its STOP file, not ended after the grace
    assert job.monitor.stoppedAt == 1 and (job.outDir / "checkpoint.pt").is_file()  # at its first iteration


def test_a_run_killed_mid_training_is_found_reopened_with_its_history_and_resumed(phantomScene, tmp_path):
    pairs = [LabeledPair(v, l) for v, l in phantomScene["labeled"]]
    logic = TrainingLogic(workRoot=tmp_path)
    params = TrainingParameters(iterations=500, **{**TINY, "checkpointEvery": 3})
    job = logic.start(pairs, phantomScene["unlabeled"], params)
    deadline = time.monotonic() + 120
    while job.monitor.checkpointIteration is None or job.monitor.iteration <= job.monitor.checkpointIteration:
        assert time.monotonic() < deadline and not job.finished, job.logTail()
        logic.poll(job)
        time.sleep(0.05)
    assert logic.unfinishedRuns() == []  # its trainer still runs there
    job.process.killTree()  # as when Slicer crashes mid-run: no STOP, no last checkpoint
    job.process.wait(30)

    later = TrainingLogic(workRoot=tmp_path)  # the next Slicer session
    assert later.unfinishedRuns() == [job.outDir]
    again = later.reopen(job.outDir)
    saved = again.monitor.checkpointIteration
    assert again.params == params and again.canResume and 3 <= saved < again.monitor.iteration
    assert f"checkpoint at iteration {saved} of 500" in again.message
    again.params.iterations = saved + 2
    later.resume(again)
    later.wait(again, timeout=180)
    assert again.state == "done", again.message + again.logTail()
    iterations = [entry[0] for entry in again.monitor.losses]
    # the whole curve, without the iterations that the killed trainer did after its last checkpoint
    assert iterations == list(range(1, saved + 3))
    assert later.unfinishedRuns() == []  # finished: it has its model


SLICER_CRASHES = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from DTCSegmentationLib.Parameters import loadParameters, TrainingParameters
    from DTCSegmentationLib.TrainingLogic import TrainingJob, TrainingLogic
    outDir = Path(sys.argv[1])
    logic = TrainingLogic(workRoot=outDir.parent)
    job = TrainingJob(outDir, outDir / "data" / "datalist.json", loadParameters(TrainingParameters, sys.argv[2]))
    logic.launch(job, resume=False)
    while not job.monitor.losses:
        logic.poll(job)
        time.sleep(0.05)
    os._exit(1)  # a crash: no cleanup, the trainer's stdout pipe loses its reader
""")


def test_a_run_whose_slicer_crashed_stops_itself_with_a_checkpoint_and_is_offered_again(phantomScene, tmp_path):
    from dtc_training.runlock import running_owner

    pairs = [LabeledPair(v, l) for v, l in phantomScene["labeled"]]
    params = TrainingParameters(iterations=100000, **TINY)
    job = TrainingLogic(workRoot=tmp_path).prepare(pairs, phantomScene["unlabeled"], params)  # exported here
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(MODULE_DIR), str(REPO / "DTCTraining")])}
    crashed = subprocess.run([sys.executable, "-c", SLICER_CRASHES, str(job.outDir), dumpParameters(params)],
                             env=env, capture_output=True, text=True, timeout=180)
    assert crashed.returncode == 1, crashed.stderr
    deadline = time.monotonic() + 120  # the orphaned trainer notices at its next progress line
    while running_owner(job.outDir) is not None:
        assert time.monotonic() < deadline, "the trainer went on without its reader"
        time.sleep(0.2)
    again = TrainingLogic(workRoot=tmp_path).reopenLatest()
    assert again is not None and again.outDir == job.outDir
    import torch

    stoppedAt = again.monitor.stoppedAt  # from the "stopped" event: a stop, not a crash
    assert stoppedAt and torch.load(job.outDir / "checkpoint.pt", weights_only=True)["iteration"] == stoppedAt
    assert "output closed" in (job.outDir / "progress.jsonl").read_text()


def test_unfinished_runs_have_a_checkpoint_and_no_model_and_unreadable_ones_are_passed_over(tmp_path, monkeypatch):
    def run(name, *files, parameters=dumpParameters(TrainingParameters(iterations=7))):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "parameters.json").write_text(parameters)
        for file in files:
            (folder / file).write_bytes(b"")
        return folder

    run("finished", "checkpoint.pt", "model.safetensors")
    run("exported", "progress.jsonl")  # no checkpoint yet: nothing to resume
    older = run("older", "checkpoint.pt")
    os.utime(older / "checkpoint.pt", (1, 1))
    broken = run("broken", "checkpoint.pt", parameters="{not json")
    monkeypatch.setenv("DTC_WORK_ROOT", str(tmp_path))
    logic = TrainingLogic()
    assert logic.unfinishedRuns() == [broken, older]  # newest checkpoint first
    job = logic.reopenLatest()
    assert job.outDir == older and job.params.iterations == 7 and job.canResume
    assert job.message.startswith(f"Unfinished training from an earlier session in {older}.")
    assert TrainingLogic(workRoot=tmp_path / "none").reopenLatest() is None
    monkeypatch.delenv("DTC_WORK_ROOT")  # by default not in the temporary folder, which a reboot may empty
    assert not TrainingLogic().workRoot.resolve().is_relative_to(Path(tempfile.gettempdir()).resolve())


CRASH = textwrap.dedent("""
    import sys
    print("some warning from a library")
    print("{not json")
    print('{"event": "start", "total": 10, "device": "cuda"}')
    print('{"event": "progress", "iteration": 1, "total": 10, "loss": 0.9}')
    print('{"event": "progress", "iteration": "garbage"}')
    print("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", file=sys.stderr)
    sys.exit(1)
""")


def _factory(code):
    return lambda args, env=None, cwd=None: ChildProcess([sys.executable, "-c", code], env=env, cwd=cwd)


def test_crashing_child_is_reported_and_garbage_ignored(phantomScene, tmp_path):
    pairs = [LabeledPair(v, l) for v, l in phantomScene["labeled"][:1]]
    logic = TrainingLogic(processFactory=_factory(CRASH), workRoot=tmp_path)
    job = logic.wait(logic.start(pairs, [], TrainingParameters(**TINY_SUPERVISED)), timeout=60)
    assert job.state == "failed" and job.returnCode == 1
    assert "GPU ran out of memory" in job.message
    assert job.monitor.iteration == 1 and job.monitor.ignored >= 3
    assert "CUDA out of memory" in job.logTail()


def test_hanging_child_is_ended_after_the_grace_period(phantomScene, tmp_path):
    pairs = [LabeledPair(v, l) for v, l in phantomScene["labeled"][:1]]
    hang = "import time, subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n" \
           "print('{\"event\": \"start\", \"total\": 5}', flush=True)\ntime.sleep(600)"
    logic = TrainingLogic(processFactory=_factory(hang), workRoot=tmp_path)
    job = logic.start(pairs, [], TrainingParameters(**TINY_SUPERVISED))
    logic.stop(job)  # the user's Stop: two minutes of grace
    logic.stop(job, grace=1.0)  # then Slicer closes: a second stop shortens it
    logic.wait(job, timeout=30)
    assert job.state == "stopped" and job.returnCode != 0  # ended as asked, but with no checkpoint
    assert not job.canResume and "before it could stop by itself; no checkpoint was saved" in job.message


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting to be reaped by init counts as ended)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from Linux's /proc")
def test_a_child_whose_grandchild_keeps_its_output_open_still_finishes():
    # The child exits at once, leaving a grandchild that holds the output pipe for 600 s.
    code = ("import subprocess, sys\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            "print(p.pid, flush=True)\n")
    child = ChildProcess([sys.executable, "-c", code])
    started = time.monotonic()
    while child.poll() is None:
        assert time.monotonic() - started < 30, "the exit code never came"
        time.sleep(0.1)
    assert child.poll() == 0
    grandchild = int(child.readLines()[0])
    assert _running(grandchild)
    child.killTree()  # reaps what the child left behind, through its process group
    deadline = time.monotonic() + 10
    while _running(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(grandchild)


def test_a_child_in_an_ascii_locale_still_reports_accented_file_names():
    # A child whose locale is plain C (no UTF-8 coercion) would write ASCII, failing on "Müller"; the
    # environment the logic starts it with makes it write the UTF-8 that ChildProcess reads.
    ascii = {"LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    code = "import sys; print('/data/M\\u00fcller/scan.nrrd: file not found', file=sys.stderr)"  # ASCII source
    child = ChildProcess([sys.executable, "-c", code], env=backendEnvironment(ascii))
    assert child.wait(30) == 0
    assert child.readLines() == ["/data/Müller/scan.nrrd: file not found"]


@pytest.mark.parametrize("log,code,expected", [
    (["torch.OutOfMemoryError: CUDA out of memory."], 1, "GPU ran out of memory"),
    (["RuntimeError: CUDA error: no kernel image is available for execution on the device"], 1, "no CUDA kernels"),
    (["ModuleNotFoundError: No module named 'monai'"], 1, "'monai' is missing"),
    (["dtc train: error: /x/datalist.json: no labeled case"], 2, "input was refused"),
    (["dtc train: error: /x/checkpoint.pt: No space left on device. Nothing was left half-written"], 1,
     "The disk is full. Nothing was left half-written: a training's last checkpoint is intact"),
    (["Traceback", "ValueError: boom"], 1, "exit code 1: ValueError: boom"),
])
def test_failures_are_explained_in_words(log, code, expected):
    assert expected in explainFailure(code, log)


def test_parse_event_ignores_everything_but_events():
    assert parseEvent('{"event": "done", "model": "m.pt"}') == {"event": "done", "model": "m.pt"}
    for line in ["", "warning", "{", '{"event": "unknown"}', "[1, 2]", '{"no": "event"}', "\x00\xff"]:
        assert parseEvent(line) is None


def test_validation_lists_every_problem(phantomScene, scene):
    volume, seg = phantomScene["labeled"][0]
    assert "no labeled pair" in checkTrainingInputs([], []).tooltip()
    empty = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
    several = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "several")
    several.GetSegmentation().AddEmptySegment("a", "atrium")
    several.GetSegmentation().AddEmptySegment("b", "ventricle")
    vector = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    slicer.util.updateVolumeFromArray(vector, np.zeros((4, 4, 4, 3), np.uint8))
    report = checkTrainingInputs(
        [LabeledPair(volume, seg), LabeledPair(phantomScene["labeled"][1][0], empty),
         LabeledPair(phantomScene["labeled"][2][0], several), LabeledPair(vector, seg)],
        [volume], TrainingParameters(patchSize=(20, 16, 16), recipe="fancy", precision="fp16"))
    text = report.tooltip()
    assert not report.ok
    for expected in ["empty has no segment", "several has 2 segments", "rgb is not a scalar volume",
                     "case0 is both labeled (row 1) and unlabeled", "multiple of 16",
                     "recipe 'fancy' is not one of default, paper",
                     "training precision 'fp16' is not one of auto, fp32, bf16"]:
        assert expected in text, text
    # choosing the segment fixes that row; a label on another grid is a note, not a problem
    report = checkTrainingInputs([LabeledPair(volume, seg), LabeledPair(*phantomScene["labeled"][1]),
                                  LabeledPair(phantomScene["labeled"][2][0], several, "a")], [])
    assert report.ok, report.tooltip()
    assert any("another geometry" in n and "case1-seg" in n for n in report.notes)
    # bf16 where training may run on the CPU is allowed, with a warning about CPUs that emulate it
    for device, warned in (("cpu", True), ("auto", True), ("cuda:0", False)):
        params = TrainingParameters(precision="bf16", device=device)
        report = checkTrainingInputs([LabeledPair(volume, seg)], [], params)
        assert report.ok and any("bf16 on the CPU" in n for n in report.notes) == warned, (device, report.notes)
    assert not any("bf16" in n for n in checkTrainingInputs([LabeledPair(volume, seg)], [], TrainingParameters()).notes)
    # a 16-voxel patch with one item per batch: batch norm would get one value (with an unlabeled item, two)
    tiny = TrainingParameters(patchSize=(16, 16, 16), labeledBatch=1, unlabeledBatch=1)
    assert "one value per channel" in checkTrainingInputs([LabeledPair(volume, seg)], [], tiny).tooltip()
    assert checkTrainingInputs([LabeledPair(volume, seg)], [phantomScene["unlabeled"][0]], tiny).ok
    # a labelmap under a transform would be exported without it, misaligned with its volume
    labelmapVolume, labelmap = phantomScene["labeled"][2]
    labelmap.SetAndObserveTransformNodeID(scene.AddNewNodeByClass("vtkMRMLLinearTransformNode").GetID())
    report = checkTrainingInputs([LabeledPair(labelmapVolume, labelmap)], [])
    assert "case2-label is under a transform; harden the transform first" in report.tooltip()
    labelmap.SetAndObserveTransformNodeID(None)


def test_parameters_round_trip_through_the_parameter_node(phantomScene, scene):
    node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "DTCSegmentation")
    volume, seg = phantomScene["labeled"][0]
    state = ModuleState(training=TrainingParameters(iterations=42, patchSize=(32, 32, 16), device="cuda:1",
                                                    recipe="paper"),
                        segmenting=SegmentParameters(mode="official", largestComponent=False),
                        pairs=[LabeledPair(volume, seg, "x")], unlabeled=phantomScene["unlabeled"],
                        modelName="m", inputVolume=volume, outputSegmentation=seg)
    saveState(node, state)
    back = loadState(node)
    assert back.training == state.training and back.segmenting == state.segmenting
    assert [(p.volume, p.label, p.segment) for p in back.pairs] == [(volume, seg, "x")]
    assert back.unlabeled == phantomScene["unlabeled"] and back.inputVolume is volume and back.roi is None
    assert "--patch 32 32 16" in " ".join(back.training.arguments())
    assert "--recipe paper" in " ".join(back.training.arguments())
    # the panel's precision names map to dtc train's --amp values
    for precision, amp in (("auto", "auto"), ("fp32", "off"), ("bf16", "bf16")):
        args = TrainingParameters(precision=precision).arguments()
        assert args[args.index("--amp") + 1] == amp


def test_pairs_keep_their_own_labels_through_gaps_and_deleted_nodes(phantomScene, scene):
    node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "DTCSegmentation")
    (v0, l0), (v1, l1), (v2, l2) = phantomScene["labeled"]
    state = ModuleState(training=TrainingParameters(), segmenting=SegmentParameters(),
                        pairs=[LabeledPair(None, l0), LabeledPair(v1, l1, "s1"), LabeledPair(v2, l2)])
    saveState(node, state)  # the first row has no volume chosen yet
    assert [(p.volume, p.label, p.segment) for p in loadState(node).pairs] == [(None, l0, None), (v1, l1, "s1"),
                                                                               (v2, l2, None)]
    scene.RemoveNode(v1)  # a volume deleted from the scene leaves its row without a volume
    assert [(p.volume, p.label) for p in loadState(node).pairs] == [(None, l0), (None, l1), (v2, l2)]
    state.pairs = [LabeledPair(v2, l2)]  # fewer rows: nothing of the old rows remains
    saveState(node, state)
    assert [(p.volume, p.label) for p in loadState(node).pairs] == [(v2, l2)]


def test_model_store_refuses_other_kinds_of_model(tmp_path):
    import torch

    other = tmp_path / "resnet.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, other)
    with pytest.raises(ModelStoreError, match="not a DTC model"):
        ModelStore(tmp_path / "store").importModel(other)
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(ModelStoreError):
        ModelStore(tmp_path / "store").importModel(tmp_path / "junk.pt")
    assert ModelStore(tmp_path / "store").list() == []
