"""The warm inference child (InferenceServer) through InferenceLogic: kept between segmentations, restarted
after a crash, a cancel or an idle exit, failures explained, and a launcher that does not pass standard input
on. Real `dtc serve` children throughout; where a child must die at a chosen moment, or a launcher behave in
a chosen way, a real short-lived process takes its place (Slicer's PythonSlicer launcher does not exist here)."""
from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np
import pytest
from conftest import addVolume, obliqueMatrix, phantom

from DTCSegmentationLib import SceneIO
from DTCSegmentationLib.InferenceLogic import InferenceLogic
from DTCSegmentationLib.ModelStore import ModelStore
from DTCSegmentationLib.Parameters import SegmentParameters
from DTCSegmentationLib.Process import ChildProcess

PARAMS = SegmentParameters(device="cpu", largestComponent=False, precision="fp32")


@pytest.fixture
def volume(scene):
    return addVolume(scene, phantom(5, size=(24, 20, 18))[0], "patient", obliqueMatrix())


def logicWith(tmp_path, processFactory=ChildProcess, **server):
    logic = InferenceLogic(processFactory, store=ModelStore(tmp_path / "store"))
    for name, value in server.items():
        setattr(logic.server, name, value)
    return logic


def finish(logic, job, timeout=120):
    end = time.monotonic() + timeout
    while not logic.poll(job):
        assert time.monotonic() < end, "timed out:\n" + "\n".join(job.log)
        time.sleep(0.05)
    return job


def gone(pid) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_cancelled_or_crashed_child_is_replaced_and_the_next_segmentation_succeeds(volume, tinyModel, tmp_path):
    logic = logicWith(tmp_path)
    first = logic.segment(volume, str(tinyModel), params=PARAMS, timeout=120)
    reference = SceneIO.segmentArray(first.segmentationNode, first.segmentId, volume)
    child = logic.server.process.pid

    job = logic.start(volume, str(tinyModel), first.segmentationNode, params=PARAMS)
    logic.cancel(job)
    assert job.state == "cancelled" and gone(child) and not job.workDir.exists()

    again = logic.segment(volume, str(tinyModel), first.segmentationNode, params=PARAMS, timeout=120)
    assert logic.server.process.pid != child
    assert np.array_equal(SceneIO.segmentArray(again.segmentationNode, again.segmentId, volume), reference)

    # The child killed from outside (the system out of memory, say) while it works: the job says so ...
    job = logic.start(volume, str(tinyModel), first.segmentationNode, params=PARAMS)
    os.kill(logic.server.process.pid, signal.SIGKILL)
    finish(logic, job)
    assert job.state == "failed" and job.message == "The process was ended by signal 9."
    # ... and the next one gets a new child.
    assert logic.segment(volume, str(tinyModel), first.segmentationNode, params=PARAMS, timeout=120).state == "done"


def test_bad_input_fails_its_job_only_and_the_same_child_serves_on(scene, volume, tinyModel, tmp_path):
    logic = logicWith(tmp_path)
    logic.segment(volume, str(tinyModel), params=PARAMS, timeout=120)
    child = logic.server.process.pid
    image = phantom(5, size=(24, 20, 18))[0]
    image[3, 4, 5] = np.nan
    broken = addVolume(scene, image, "broken")
    job = finish(logic, logic.start(broken, str(tinyModel), params=PARAMS))
    assert job.state == "failed" and job.message.startswith("The input was refused")
    assert "NaN" in job.message, job.message
    job = logic.segment(volume, str(tinyModel), params=PARAMS, timeout=120)
    assert job.state == "done" and logic.server.process.pid == child


def test_an_idle_child_leaves_and_a_request_sent_as_it_left_is_answered_by_a_new_one(volume, tinyModel, tmp_path):
    starts = []

    def leavesAtOnce(args, **kwargs):
        """The first child announces its idle exit and ends without reading its input, as a child does
        when a request arrives just after its idle time ran out; later children are real."""
        starts.append(args)
        if len(starts) == 1:
            args = [sys.executable, "-c", "print('{\"event\": \"idle\", \"seconds\": 600}')"]
        return ChildProcess(args, **kwargs)

    logic = logicWith(tmp_path, leavesAtOnce)
    job = finish(logic, logic.start(volume, str(tinyModel), params=PARAMS))
    assert job.state == "done" and job.request.retried and len(starts) == 2, "\n".join(job.log)

    # A real child with a short idle time ends by itself; the next segmentation starts another.
    logic.server.idleSeconds = 0.5
    logic.shutdown()
    job = finish(logic, logic.start(volume, str(tinyModel), job.segmentationNode, params=PARAMS))
    child = logic.server.process
    assert child.wait(60) == 0  # idle after its answer
    job = finish(logic, logic.start(volume, str(tinyModel), job.segmentationNode, params=PARAMS))
    assert job.state == "done" and logic.server.process is not child


def test_a_child_that_cannot_start_explains_why(volume, tinyModel, tmp_path):
    logic = logicWith(tmp_path, python=sys.executable)
    logic.server.command = lambda: [sys.executable, "-c", "import dtc_missing_backend"]
    job = finish(logic, logic.start(volume, str(tinyModel), params=PARAMS))
    assert job.state == "failed"
    assert "'dtc_missing_backend' is missing" in job.message


# Launchers that start the real child as `PythonSlicer` would, but do not pass their standard input on.
CLOSED_INPUT = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:], stdin=subprocess.DEVNULL))"
SILENT_INPUT = "import subprocess, sys; sys.exit(subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE).wait())"


@pytest.mark.parametrize("launcher", [CLOSED_INPUT, SILENT_INPUT], ids=["input-closed", "input-never-arrives"])
def test_a_launcher_that_does_not_pass_input_on_gets_one_child_per_request(volume, tinyModel, tmp_path, launcher):
    starts = []

    def throughLauncher(args, **kwargs):
        starts.append(args)
        return ChildProcess([sys.executable, "-c", launcher, *args], **kwargs)

    logic = logicWith(tmp_path, throughLauncher, inputTimeout=1.0)
    logic.prepare(str(tinyModel), PARAMS)
    job = finish(logic, logic.start(volume, str(tinyModel), params=PARAMS))
    assert job.state == "done", job.message + "\n".join(job.log)
    assert logic.server.oneShot and "--request" in starts[-1] and len(starts) == 2
    reference = SceneIO.segmentArray(job.segmentationNode, job.segmentId, volume)
    assert np.array_equal(reference, SceneIO.segmentArray(
        logic.segment(volume, str(tinyModel), job.segmentationNode, params=PARAMS, timeout=120).segmentationNode,
        job.segmentId, volume))
    assert len(starts) == 3 and "--request" in starts[-1]  # a child of its own for every later request too
