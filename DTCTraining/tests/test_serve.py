"""`dtc serve`: the long-lived child that answers `dtc infer` requests, as the Slicer module keeps it between
Segment clicks. Run as a real process: its life (end of input, idle exit) is what these tests are about."""
import json
import os
import queue
import subprocess
import sys
import threading

import numpy as np
import SimpleITK as sitk
import torch

from conftest import run_dtc
from dtc_training.commands.serve import LoadedModel, preload
from dtc_training.model_io import load_model, save_model
from test_infer import ball_image, threshold_model_file


class Server:
    """A `dtc serve` process and its merged output, read on a thread so that no read can hang the test."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "dtc_training", "serve", *args], text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: "queue.Queue[str | None]" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def until(self, event: str, timeout=120) -> tuple[dict, list[str]]:
        """The next JSON record of `event` and the lines before it."""
        before = []
        while True:
            line = self.lines.get(timeout=timeout)
            assert line is not None, "the server ended:\n" + "\n".join(before)
            if line.startswith("{") and json.loads(line).get("event") == event:
                return json.loads(line), before
            before.append(line)

    def ask(self, request) -> tuple[dict, list[str]]:
        self.proc.stdin.write((request if isinstance(request, str) else json.dumps(request)) + "\n")
        self.proc.stdin.flush()
        return self.until("answer")


def everything_model(path):
    """The threshold network with its output shifted so that every voxel is foreground."""
    net, meta = load_model(threshold_model_file(path))
    with torch.no_grad():
        net.out_conv2.bias.fill_(5.0)
    return save_model(path, net, meta)


def test_requests_are_answered_like_dtc_infer_and_the_process_lives_on_after_failures(tmp_path):
    model = threshold_model_file(tmp_path / "model.pt")
    image, _, _ = ball_image()
    sitk.WriteImage(image, str(tmp_path / "scan.nrrd"))
    options = ["--device", "cpu", "--precision", "fp32"]
    run_dtc("infer", "--model", model, tmp_path / "scan.nrrd", "-o", tmp_path / "cli.nrrd", *options)
    cli = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "cli.nrrd")))
    assert 0 < cli.sum() < cli.size  # a label the comparisons below can miss

    server = Server()
    try:
        answer, log = server.ask({"id": 1, "infer": ["--model", str(model), str(tmp_path / "scan.nrrd"),
                                                     "-o", str(tmp_path / "served.nrrd"), *options]})
        assert answer == {"event": "answer", "id": 1, "code": 0}, log
        assert '{"event": "received", "id": 1}' in log  # said on reading, before the work
        assert any("largest component not applied" in line for line in log)  # the request's log comes first
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "served.nrrd"))), cli)

        answer, log = server.ask({"id": 2, "infer": ["--model", str(model), str(tmp_path / "missing.nrrd"),
                                                     "-o", str(tmp_path / "x.nrrd"), *options]})
        assert answer["code"] == 2 and any("missing.nrrd: file not found" in line for line in log)
        answer, log = server.ask({"id": 3, "infer": ["--model", str(model), "--tta", "3"]})
        assert answer["code"] == 2 and any("--tta" in line for line in log)  # argparse's own message
        answer, log = server.ask({"id": 5, "load": {"model": str(model), "device": "cpu", "precision": "int8"}})
        assert answer["code"] == 0, log
        answer, log = server.ask({"id": 6, "load": {"model": str(tmp_path / "missing.pt")}})
        assert answer["code"] == 2 and any("missing.pt" in line for line in log), log
        answer, log = server.ask("not json")
        assert answer == {"event": "answer", "id": None, "code": 2} and "refused" in log[-1]

        # The model file replaced under the same name (a retrained model): the new weights are used.
        everything_model(model)
        os.utime(model, ns=(1, 1))  # a different modification time even on a coarse-grained file system
        answer, log = server.ask({"id": 4, "infer": ["--model", str(model), str(tmp_path / "scan.nrrd"),
                                                     "-o", str(tmp_path / "served.nrrd"), *options]})
        assert answer["code"] == 0, log
        assert sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "served.nrrd"))).all()
    finally:
        server.proc.stdin.close()  # the end of its input ends it
        assert server.proc.wait(60) == 0


def test_an_idle_server_ends_by_itself(tmp_path):
    server = Server("--idle-exit", "0.5")
    server.until("ready")  # the imports are done: the idle time counts from here
    record, _ = server.until("idle")
    assert record["seconds"] == 0.5
    assert server.proc.wait(30) == 0


def test_the_loaded_model_is_kept_until_its_file_or_device_changes(tmp_path):
    path = threshold_model_file(tmp_path / "model.pt")
    models = LoadedModel()
    first = models.get(path, "cpu")
    assert models.get(path, "cpu") is first
    everything_model(path)
    os.utime(path, ns=(1, 1))
    second = models.get(path, "cpu")
    assert second is not first and second.net.out_conv2.bias.item() == 5.0
    assert models.get(path, "auto") is not second  # another device asked for: loaded for it


def test_a_load_request_builds_the_network_the_first_scan_will_run(tmp_path):
    path = threshold_model_file(tmp_path / "model.pt")
    models = LoadedModel()
    assert preload(models, str(path), device="cpu", precision="fp32") == 0
    assert models.model._folded is not None and models.model._int8 is None
    preload(models, str(path), precision="int8")  # device auto: the CPU for int8
    assert models.model._int8 is not None


def test_one_request_given_as_an_argument_is_answered_without_reading_standard_input(tmp_path):
    model = threshold_model_file(tmp_path / "model.pt")
    image, _, _ = ball_image()
    sitk.WriteImage(image, str(tmp_path / "scan.nrrd"))
    request = {"id": 9, "infer": ["--model", str(model), str(tmp_path / "scan.nrrd"), "-o",
                                  str(tmp_path / "label.nrrd"), "--device", "cpu"]}
    proc = run_dtc("serve", "--request", json.dumps(request), stdin=subprocess.DEVNULL)
    assert proc.stdout.splitlines()[-1] == '{"event": "answer", "id": 9, "code": 0}'
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "label.nrrd"))).any()


def test_a_request_with_uncertainty_is_answered_with_each_scans_doubt(tmp_path):
    model = threshold_model_file(tmp_path / "model.pt")
    image, _, _ = ball_image()
    sitk.WriteImage(image, str(tmp_path / "scan.nrrd"))
    request = {"id": 3, "infer": ["--model", str(model), str(tmp_path / "scan.nrrd"), "-o", str(tmp_path / "out"),
                                  "--uncertainty", "--device", "cpu", "--report", str(tmp_path / "report.json")]}
    proc = run_dtc("serve", "--request", json.dumps(request), stdin=subprocess.DEVNULL)
    answer = json.loads(proc.stdout.splitlines()[-1])
    report = json.loads((tmp_path / "report.json").read_text())["reports"][0]
    assert answer == {"event": "answer", "id": 3, "code": 0, "doubt": [
        {"input": str(tmp_path / "scan.nrrd"), "doubt": str(tmp_path / "out" / "scan-doubt.nrrd"),
         "doubt_score": report["doubt_score"]}]}
    assert report["doubt_score"] is not None and (tmp_path / "out" / "scan-doubt.nrrd").is_file()
