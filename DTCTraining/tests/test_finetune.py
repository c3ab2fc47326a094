"""`dtc train --init MODEL`: fine-tuning starts from the model's weights with its architecture, patch, spacing
and k, records where it started, refuses files it cannot start from before any data is read, and a resumed
fine-tuning continues from its checkpoint, never from the model again."""
import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from conftest import events, run_dtc
from dtc_training.finetune import file_sha256
from dtc_training.model import DualTaskVNet
from dtc_training.model_io import load_model, save_model
from dtc_training.trainer import MODEL_NAME

COMMON = ["--workers", "0", "--progress", "json", "--device", "cpu"]
META = {"n_filters": 4, "in_channels": 1, "patch_size": [32, 32, 32], "spacing": [2.0, 2.0, 2.0],
        "normalization": "zscore", "k": 1200.0, "label_name": "Phantom atrium"}


@pytest.fixture
def init_model(tmp_path):
    """An untrained 4-filter network whose weights no new network would have (its own seed), on a 2 mm grid
    (the phantoms are at 2.5 mm)."""
    torch.manual_seed(7)
    return save_model(tmp_path / "site.safetensors", DualTaskVNet(n_filters=4).eval(), META)


def parameters(net):
    return {name: p.detach().clone() for name, p in net.named_parameters()}


def test_fine_tuning_starts_from_the_model_with_its_settings(phantoms, init_model, tmp_path):
    out = tmp_path / "run"
    # one step with a vanishing learning rate: the weights after it are those the step started from
    proc = run_dtc("train", "--datalist", phantoms, "-o", out, "--init", init_model, "--iterations", 1,
                   "--lr", 1e-9, *COMMON)
    tuned, meta = load_model(out / MODEL_NAME)
    start = parameters(load_model(init_model)[0])
    for name, value in parameters(tuned).items():
        torch.testing.assert_close(value, start[name], atol=1e-7, rtol=0, msg=name)
    assert meta["n_filters"] == 4 and meta["patch_size"] == [32, 32, 32] and meta["spacing"] == [2.0, 2.0, 2.0]
    assert meta["k"] == 1200.0 and meta["label_name"] == "Phantom atrium"
    identity = {"path": str(init_model.resolve()), "sha256": file_sha256(init_model)}
    assert meta["init"] == identity
    assert json.loads((out / "train_config.json").read_text())["config"]["init"] == identity
    # the phantoms are at 2.5 mm: resampled to the model's 2 mm, and said so in one line
    warning = [line for line in proc.stderr.splitlines() if "not on the grid of" in line]
    assert len(warning) == 1 and "8 of 8 scans" in warning[0] and "2.5 x 2.5 x 2.5 mm" in warning[0]


def test_fine_tuning_defaults_and_a_resume_that_continues_from_the_checkpoint(phantoms, init_model, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "STOP").touch()  # asked before it starts: the run stops after its first iteration
    first = run_dtc("train", "--datalist", phantoms, "-o", out, "--init", init_model, *COMMON, check=False)
    assert first.returncode == 3, first.stderr
    config = json.loads((out / "train_config.json").read_text())["config"]
    assert (config["iterations"], config["lr"], config["rampup_step"]) == (200, 0.01, 5)  # config.FINE_TUNING
    # The model file goes away: a resume that read it again would fail, and one that re-initialised from it
    # would end one step behind the uninterrupted run.
    kept = shutil.move(init_model, tmp_path / "kept.safetensors")
    resumed = run_dtc("train", "--datalist", phantoms, "-o", out, "--init", init_model, "--resume",
                      "--iterations", 2, *COMMON)
    assert events(resumed.stdout, "start")[0]["iteration"] == 1 and "is ignored" not in resumed.stderr
    shutil.move(kept, init_model)
    whole = tmp_path / "whole"
    run_dtc("train", "--datalist", phantoms, "-o", whole, "--init", init_model, "--iterations", 2,
            "--rampup-step", 5, *COMMON)
    (a, meta), (b, _) = load_model(out / MODEL_NAME), load_model(whole / MODEL_NAME)
    for name, value in a.state_dict().items():
        torch.testing.assert_close(value, b.state_dict()[name], atol=1e-6, rtol=1e-5, msg=name)
    assert meta["init"]["path"] == str(init_model.resolve())


def test_a_resume_ignores_another_init_and_says_so(phantoms, init_model, tmp_path):
    out = tmp_path / "run"
    run_dtc("train", "--datalist", phantoms, "-o", out, "--iterations", 1, "--patch", 32, 32, 32,
            "--n-filters", 4, *COMMON)
    resumed = run_dtc("train", "--datalist", phantoms, "-o", out, "--resume", "--iterations", 2,
                      "--init", init_model, *COMMON)
    assert f"--init {init_model} is ignored" in resumed.stderr and "a new network" in resumed.stderr
    assert load_model(out / MODEL_NAME)[1]["init"] is None


def other_architecture(path):
    tensors = {"w": torch.zeros(2)}
    meta = {**META, "architecture": "UNet3D", "format_version": 1}
    save_file(tensors, str(path), metadata={"format": "dtc-model", "metadata": json.dumps(meta)})
    return path


def two_channels(path):
    return save_model(path, DualTaskVNet(in_channels=2, n_filters=4), {**META, "in_channels": 2})


def text(path):
    path.write_text("not a model\n")
    return path


@pytest.mark.parametrize("make, options, problem", [
    (text, [], "not a DTC model file"),
    (other_architecture, [], "'architecture' is 'UNet3D'"),
    (two_channels, [], "takes 2 input channels"),
    (lambda p: p, [], "model file not found"),
    (lambda p: save_model(p, DualTaskVNet(n_filters=4), META), ["--n-filters", "8"], "has 4 filters"),
    (lambda p: save_model(p, DualTaskVNet(n_filters=4), META), ["--spacing", "1", "1", "1"], "trained at 2 x 2 x 2 mm"),
], ids=["text", "architecture", "channels", "missing", "n-filters", "spacing"])
def test_a_model_it_cannot_start_from_is_refused_before_any_data_is_read(tmp_path, make, options, problem):
    bad = make(tmp_path / "start.safetensors")
    out = tmp_path / "run"
    proc = run_dtc("train", "--datalist", tmp_path / "no-such-datalist.json", "-o", out, "--init", bad, *options,
                   *COMMON, check=False, in_process=True)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("dtc train: error:")]
    assert len(lines) == 1 and str(bad) in lines[0] and problem in lines[0], proc.stderr
    assert "no-such-datalist" not in proc.stderr and not (out / "checkpoint.pt").exists()


def test_a_fine_tuning_cannot_write_its_model_over_the_model_it_starts_from(phantoms, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    start = save_model(out / MODEL_NAME, DualTaskVNet(n_filters=4), META)  # an earlier run's model
    proc = run_dtc("train", "--datalist", phantoms, "-o", out, "--init", start, "--overwrite", *COMMON,
                   check=False, in_process=True)
    assert proc.returncode == 2 and "is the input" in proc.stderr and str(start) in proc.stderr, proc.stderr
    assert load_model(start)[1]["n_filters"] == 4 and not (out / "checkpoint.pt").exists()
