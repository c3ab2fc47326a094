"""Nothing lost, nothing silent (docs/reliability.md names each test here with its promise): no output of a
`dtc` command replaces one of its inputs, whatever the path that names it; a write that fails, on a real full
disk or by a writer that says nothing, leaves no empty or partial file under its name and ends the command
with exit code 1 and one line; a training that diverges ends with exit code 4 and saves nothing of it, its
progress strict JSON; every numeric option is range-checked as it is parsed, and a file in the way of an
output folder is one line, not a traceback. The module's side: Testing/Python/test_module_reliability.py."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import full_disk
from conftest import TINY, events, run_dtc
from dtc_training.cli import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_ERROR
from dtc_training.config import TrainConfig
from dtc_training.errors import InputError
from dtc_training.files import strict_json
from dtc_training.model import DualTaskVNet
from dtc_training.model_io import save_model
from dtc_training.phantoms import make_phantom
from dtc_training.progress import ProgressReporter

META = {"n_filters": 4, "in_channels": 1, "patch_size": [16, 16, 16], "spacing": None, "normalization": "zscore",
        "k": 1500.0, "label_name": "Left atrium"}


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> Path:
    """A phantom scan, its label, a tiny model and an official-style state dict, written once."""
    folder = tmp_path_factory.mktemp("originals")
    image, label = make_phantom(np.random.default_rng(0), size=(24, 24, 16))
    for array, name in ((image, "scan.nrrd"), (label, "truth.nrrd")):
        sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0))), str(folder / name))
    torch.manual_seed(0)
    net = DualTaskVNet(n_filters=4)
    save_model(folder / "model.safetensors", net, META)
    torch.save(net.state_dict(), folder / "official.pth")
    return folder


@pytest.fixture
def work(originals, tmp_path) -> Path:
    """This test's own copies, so that a regression that destroys one cannot spoil the next test."""
    for f in originals.iterdir():
        shutil.copy2(f, tmp_path / f.name)
    return tmp_path


def digests(folder: Path) -> dict:
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file() and not f.is_symlink()}


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


# ---- 1. an output never replaces an input -----------------------------------------------------------------

def _links(w: Path) -> None:
    (w / "link.nrrd").symlink_to(w / "scan.nrrd")
    os.link(w / "scan.nrrd", w / "hard.nrrd")
    (w / "x-probability.nrrd").symlink_to(w / "scan.nrrd")
    shutil.copy(w / "scan.nrrd", w / "a.nrrd")
    shutil.copy(w / "scan.nrrd", w / "a-label.nrrd")
    (w / "results").symlink_to(w)  # the same folder under another name
    (w / "sub").mkdir()


INFER = ["infer", "--model", "{w}/model.safetensors", "{w}/scan.nrrd", "--precision", "fp32"]
OVERWRITES = {  # case: (command line, the output named, the input it is)
    "label onto its scan": (INFER + ["-o", "{w}/scan.nrrd"], "scan.nrrd", "scan.nrrd"),
    "label onto its scan by another spelling": (INFER + ["-o", "{w}/sub/.././scan.nrrd"], "sub/.././scan.nrrd",
                                                "scan.nrrd"),
    "label onto its scan through a linked folder": (INFER + ["-o", "{w}/results/scan.nrrd"], "results/scan.nrrd",
                                                    "scan.nrrd"),
    "label onto a symbolic link to its scan": (INFER + ["-o", "{w}/link.nrrd"], "link.nrrd", "scan.nrrd"),
    "label onto a hard link to its scan": (INFER + ["-o", "{w}/hard.nrrd"], "hard.nrrd", "scan.nrrd"),
    "probability map onto its scan": (INFER + ["-o", "{w}/x-label.nrrd", "--probability"],
                                      "x-probability.nrrd", "scan.nrrd"),
    "report onto the scan": (INFER + ["-o", "{w}/out.nrrd", "--report", "{w}/scan.nrrd"], "scan.nrrd", "scan.nrrd"),
    "report onto the model": (INFER + ["-o", "{w}/out.nrrd", "--report", "{w}/model.safetensors"],
                              "model.safetensors", "model.safetensors"),
    "report onto the label": (INFER + ["-o", "{w}/out.nrrd", "--report", "{w}/out.nrrd"], "out.nrrd", "out.nrrd"),
    "folder output onto a listed input": (["infer", "--model", "{w}/model.safetensors", "{w}/a.nrrd",
                                           "{w}/a-label.nrrd", "-o", "{w}"], "a-label.nrrd", "a-label.nrrd"),
    "evaluate --csv onto the truth": (["evaluate", "--pred", "{w}/scan.nrrd", "--gt", "{w}/truth.nrrd", "--csv",
                                       "{w}/truth.nrrd"], "truth.nrrd", "truth.nrrd"),
    "evaluate --json onto the prediction by a link": (["evaluate", "--pred", "{w}/scan.nrrd", "--gt",
                                                       "{w}/truth.nrrd", "--json", "{w}/link.nrrd"],
                                                      "link.nrrd", "scan.nrrd"),
    "import-official onto its .pth": (["import-official", "{w}/official.pth", "-o", "{w}/official.pth"],
                                      "official.pth", "official.pth"),
    "convert onto its model by a link": (["convert", "{w}/model.safetensors", "-o", "{w}/results/model.safetensors"],
                                         "results/model.safetensors", "model.safetensors"),
}


@pytest.mark.parametrize("case", OVERWRITES)
def test_an_output_that_is_an_input_is_refused_before_any_work_and_the_input_is_intact(work, case):
    _links(work)
    command, output, source = OVERWRITES[case]
    before = digests(work)
    proc = run_dtc(*(a.format(w=work) for a in command), check=False)
    line = one_line(proc.stderr)
    assert proc.returncode == EXIT_BAD_INPUT and line.startswith(f"dtc {command[0]}: error: ")
    assert f"{work / output}: is " in line and str(work / source) in line  # both paths named
    assert digests(work) == before  # nothing replaced, nothing written


def test_a_case_variant_of_an_input_is_refused_where_the_file_system_ignores_case(work):
    (work / "Probe").write_text("")
    if not (work / "probe").exists():
        pytest.skip(f"{work} is on a case-sensitive file system: SCAN.NRRD is another file there")
    before = digests(work)
    proc = run_dtc(*[a.format(w=work) for a in INFER], "-o", work / "SCAN.NRRD", check=False)
    assert proc.returncode == EXIT_BAD_INPUT and "SCAN.NRRD: is the input" in proc.stderr
    assert digests(work) == before


def test_a_serve_request_that_would_replace_its_input_is_answered_with_exit_2(work):
    before = digests(work)
    request = {"id": 7, "infer": ["--model", str(work / "model.safetensors"), str(work / "scan.nrrd"),
                                  "-o", str(work / "scan.nrrd")]}
    proc = run_dtc("serve", "--request", json.dumps(request))
    assert events(proc.stdout, "answer") == [{"event": "answer", "id": 7, "code": EXIT_BAD_INPUT}]
    assert f"{work / 'scan.nrrd'}: is the input" in proc.stderr
    assert digests(work) == before


def test_a_training_whose_outputs_would_replace_its_datalist_is_refused(work):
    run = work / "run"
    run.mkdir()
    datalist = run / "train_config.json"  # the name of the configuration every run writes
    datalist.write_text(json.dumps({"labeled": [{"image": "../scan.nrrd", "label": "../truth.nrrd"}]}))
    before = digests(work)
    proc = run_dtc("train", "--datalist", datalist, "-o", run, *TINY, check=False, in_process=True)
    assert proc.returncode == EXIT_BAD_INPUT and f"{datalist}: is the input {datalist}" in proc.stderr
    assert digests(work) == before and not events(proc.stdout, "progress")


def test_an_earlier_output_is_still_replaced(work):
    out = work / "label.nrrd"
    for _ in range(2):
        first = out.stat().st_ino if out.exists() else None
        run_dtc(*[a.format(w=work) for a in INFER], "-o", out)
    assert first is not None and out.stat().st_ino != first  # a new file took the name (an atomic rename)
    assert sitk.ReadImage(str(out)).GetSize() == (24, 24, 16)


# ---- 2. a failed write leaves nothing under its name --------------------------------------------------------

@pytest.mark.parametrize("suffix, keep", [(".nrrd", 0), (".nii.gz", 0), (".mha", 0), (".nii.gz", 0.5),
                                          (".nii", 0.5)])
def test_an_image_writer_that_leaves_an_empty_or_partial_file_fails_in_one_line(work, monkeypatch, suffix, keep):
    """Simulated at the writer's boundary: SimpleITK's real writer writes the file, which is then cut to
    `keep` of its size, as a full disk leaves it (ITK's NIfTI writer reports such a short write on stderr
    only; test_a_real_full_disk_... below meets it on a real full tmpfs). The label there before stays."""
    out = work / f"label{suffix}"
    out.write_bytes(b"an earlier label")
    real_write = sitk.WriteImage

    def write_then_cut(image, name, *args):
        real_write(image, name, *args)
        with open(name, "r+b") as f:
            f.truncate(int(os.path.getsize(name) * keep))

    monkeypatch.setattr(sitk, "WriteImage", write_then_cut)
    proc = run_dtc(*[a.format(w=work) for a in INFER], "-o", out, check=False)
    line = one_line(proc.stderr)
    assert proc.returncode == EXIT_ERROR and line.startswith(f"dtc infer: error: {out}: ")
    assert "Nothing was left half-written" in line
    assert out.read_bytes() == b"an earlier label"
    assert sorted(p.name for p in work.iterdir() if p.name.startswith(".")) == []  # no temporary left


@pytest.mark.skipif(not full_disk.available(), reason="no private mount namespace with a tmpfs here")
def test_a_real_full_disk_fails_every_writer_in_one_line_and_keeps_the_earlier_files(work):
    """A tmpfs filled to its last byte in a private mount namespace (full_disk.py): the label (NIfTI, whose
    writer says nothing, and NRRD), the model file of import-official and a torch checkpoint all meet ENOSPC."""
    disk = full_disk.disk(work)
    dtc = [sys.executable, "-m", "dtc_training"]
    earlier = {"label.nii.gz": b"an earlier label", "model.safetensors": b"an earlier model"}
    outcomes = full_disk.run_on_full_disk(work, [
        dtc + [a.format(w=work) for a in INFER] + ["-o", disk / "label.nii.gz"],
        dtc + [a.format(w=work) for a in INFER] + ["-o", disk / "other.nrrd"],
        dtc + ["import-official", work / "official.pth", "-o", disk / "model.safetensors"],
        [sys.executable, "-c", "import torch; from dtc_training.files import atomic_torch_save; "
                               f"atomic_torch_save({{'w': torch.zeros(100000)}}, {str(disk / 'checkpoint.pt')!r})"],
    ], earlier=earlier)
    expected = {name: hashlib.md5(data).hexdigest() for name, data in earlier.items()}
    for outcome, target in zip(outcomes[:3], ("label.nii.gz", "other.nrrd", "model.safetensors")):
        errors = [line for line in outcome.stderr.splitlines() if "error" in line or "Traceback" in line]
        assert outcome.returncode == EXIT_ERROR and len(errors) == 1, outcome.stderr
        assert errors[0].startswith("dtc ") and f"{disk / target}: " in errors[0], outcome.stderr
        assert outcome.files == expected  # the earlier files whole, nothing new, no temporary
    assert "WriteError" in outcomes[3].stderr and "No space left on device" in outcomes[3].stderr
    assert outcomes[3].files == expected


@pytest.mark.skipif(not full_disk.available(), reason="no private mount namespace with a tmpfs here")
def test_a_nearly_full_disk_that_takes_part_of_a_nifti_label_fails_in_one_line(work):
    disk = full_disk.disk(work)
    [outcome] = full_disk.run_on_full_disk(
        work, [[sys.executable, "-m", "dtc_training", *[a.format(w=work) for a in INFER], "-o", disk / "l.nii"]],
        free=4096)  # one page of the 9568 bytes the label needs: ITK's NIfTI writer stops without a word
    assert outcome.returncode == EXIT_ERROR and "Traceback" not in outcome.stderr
    assert f"{disk / 'l.nii'}: the written image holds " in outcome.stderr
    assert outcome.files == {}


# ---- 3. a training that diverges stops and saves nothing of it ----------------------------------------------

def strict(line: str) -> dict:
    return json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} is not JSON: {line}"))


@pytest.fixture(scope="module")
def datalist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantoms")
    run_dtc("make-phantoms", "-o", out, "--count", 4, "--labeled", 2, "--validation", 0,
            "--size", 32, 32, 32, "--spacing", 2.5, 2.5, 2.5, "--seed", 3)
    return out / "datalist.json"


def test_a_diverging_training_stops_with_exit_4_keeps_its_last_good_checkpoint_and_writes_no_model(
        datalist, tmp_path):
    run_dtc("train", "--datalist", datalist, "-o", tmp_path, "--iterations", 2, "--checkpoint-every", 1, *TINY)
    model = tmp_path / "model.safetensors"
    finished = model.read_bytes()
    proc = run_dtc("train", "--datalist", datalist, "-o", tmp_path, "--resume", "--iterations", 8,
                   "--lr", "1e38", "--progress", "json", check=False)
    assert proc.returncode == EXIT_DIVERGED, proc.stderr
    [line] = [line for line in proc.stderr.splitlines() if "error" in line]
    assert line.startswith("dtc train: error: the training diverged at iteration ") and "--lr" in line
    [diverged] = events(proc.stdout, "diverged")
    saved = events((tmp_path / "progress.jsonl").read_text(), "checkpoint")[-1]["iteration"]  # of either session
    assert diverged["checkpoint_iteration"] == saved < diverged["iteration"]
    # what became non-finite: the loss (written as a string), or the weights the step just made (their sums)
    assert diverged["loss"] in ("nan", "inf") or "the weights became NaN or infinite" in diverged["message"]
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["iteration"] == saved and all(torch.isfinite(t).all() for t in state["model"].values()
                                               if t.is_floating_point())
    assert model.read_bytes() == finished  # the earlier run's model: none of the diverged one
    for text in (proc.stdout, (tmp_path / "progress.jsonl").read_text()):
        assert all(strict(line) for line in text.splitlines() if line.startswith("{"))


def test_a_run_that_diverges_before_its_first_checkpoint_leaves_no_checkpoint_and_no_model(datalist, tmp_path):
    proc = run_dtc("train", "--datalist", datalist, "-o", tmp_path, "--iterations", 6, "--lr", "1e38", *TINY,
                   check=False)
    assert proc.returncode == EXIT_DIVERGED and "no checkpoint or model was written" in proc.stderr
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "model.safetensors").exists()
    assert not events(proc.stdout, "done")


def test_progress_is_strict_json_whatever_the_values(tmp_path):
    import io

    stream = io.StringIO()
    progress = ProgressReporter(tmp_path / "progress.jsonl", "json", stream=stream)
    progress.emit("progress", iteration=1, loss=float("nan"), lr=float("inf"), terms=[float("-inf"), 0.5])
    progress.close()
    for text in (stream.getvalue(), (tmp_path / "progress.jsonl").read_text()):
        record = strict(text.strip())
        assert (record["loss"], record["lr"], record["terms"]) == ("nan", "inf", ["-inf", 0.5])
        assert float(record["loss"]) != float(record["loss"])  # a reader gets its NaN back with float()
    assert strict_json({"a": 1.5}) == '{"a": 1.5}'


# ---- 5. options are range-checked as they are parsed ----------------------------------------------------------

OPTIONS = [
    (INFER + ["-o", "{w}/o.nrrd", "--memory-gb", "inf"], "argument --memory-gb: inf: must be a finite number"),
    (INFER + ["-o", "{w}/o.nrrd", "--memory-gb", "-1"], "argument --memory-gb: -1: must be positive"),
    (["train", "--datalist", "{w}/d.json", "-o", "{w}/r", "--lr", "inf"], "argument --lr: inf: must be a finite"),
    (["train", "--datalist", "{w}/d.json", "-o", "{w}/r", "--lr", "nan"], "argument --lr: nan: must be a finite"),
    (["train", "--datalist", "{w}/d.json", "-o", "{w}/r", "--spacing", "1", "0", "1"],
     "argument --spacing: 0: must be positive"),
    (["train", "--datalist", "{w}/d.json", "-o", "{w}/r", "--checkpoint-minutes", "inf"], "--checkpoint-minutes: inf"),
    (["train", "--datalist", "{w}/d.json", "-o", "{w}/r", "--labeled", "-2"], "argument --labeled: -2: must be at "),
    (["make-phantoms", "-o", "{w}/p", "--size", "0", "8", "8"], "argument --size: 0: must be at least 2"),
    (["make-phantoms", "-o", "{w}/p", "--spacing", "nan", "1", "1"], "argument --spacing: nan: must be a finite"),
    (["make-phantoms", "-o", "{w}/p", "--seed", "-1"], "argument --seed: -1: must be at least 0"),
    (["make-phantoms", "-o", "{w}/p", "--count", "0"], "argument --count: 0: must be at least 1"),
    (["import-official", "{w}/official.pth", "-o", "{w}/m.safetensors", "--spacing", "1", "inf", "1"],
     "argument --spacing: inf: must be a finite number"),
    (["evaluate", "--model", "{w}/model.safetensors", "--la-root", "{w}", "--max-cases", "0"],
     "argument --max-cases: 0: must be at least 1"),
    (["serve", "--idle-exit", "-1"], "argument --idle-exit: -1: must be at least 0"),
]


@pytest.mark.parametrize("command, message", OPTIONS, ids=[" ".join(c[-2:]) for c, _ in OPTIONS])
def test_an_out_of_range_option_is_refused_as_it_is_parsed(work, command, message):
    before = digests(work)
    proc = run_dtc(*(a.format(w=work) for a in command), check=False, in_process=True)
    assert proc.returncode == EXIT_BAD_INPUT and message in proc.stderr and "Traceback" not in proc.stderr
    assert f"dtc {command[0]}: error: argument" in proc.stderr
    assert digests(work) == before


def test_a_configuration_with_an_infinity_is_refused_where_it_does_not_come_from_the_command_line():
    with pytest.raises(InputError, match="--lr must be a finite number"):
        TrainConfig(lr=float("inf")).check()  # from a checkpoint or the Python API


@pytest.mark.parametrize("command", [
    ["train", "--datalist", "{w}/d.json", "-o", "{w}/afile"],
    ["make-phantoms", "-o", "{w}/afile"],
    INFER + ["-o", "{w}/afile"],  # no image suffix: a folder to receive scan-label.nrrd
    ["import-official", "{w}/official.pth", "-o", "{w}/afile/m.safetensors"],
    ["evaluate", "--pred", "{w}/scan.nrrd", "--gt", "{w}/truth.nrrd", "--json", "{w}/afile/r.json"],
], ids=lambda c: c[0])
def test_an_existing_file_given_as_an_output_folder_is_one_line(work, command):
    (work / "afile").write_text("not a folder")
    proc = run_dtc(*(a.format(w=work) for a in command), check=False, in_process=True)
    assert proc.returncode == EXIT_BAD_INPUT and "Traceback" not in proc.stderr
    assert one_line(proc.stderr) == f"dtc {command[0]}: error: {work / 'afile'}: is a file, not a folder; " \
                                    "choose another output folder"
