"""The real `dtc train` CLI on phantoms: learning, resume, graceful stop."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import TINY, events, run_dtc
from dtc_training.cli import EXIT_ERROR, EXIT_INTERRUPTED, build_parser
from dtc_training.commands import train as train_command
from dtc_training.config import TrainConfig
from dtc_training.model_io import load_model


def test_short_training_learns_and_writes_a_loadable_model(phantoms, trained_run):
    run, proc = trained_run
    progress = events(proc.stdout, "progress")
    assert [p["iteration"] for p in progress] == list(range(1, 61))
    assert {"loss", "loss_dice", "loss_levelset", "loss_consistency", "lr", "it_per_s", "eta_s"} <= set(progress[0])
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(phantoms.parent / "labels/phantom_007.nrrd")))
    fraction = label.mean()
    chance = 2 * fraction / (1 + fraction)  # Dice of calling everything foreground
    dice = events(proc.stdout, "validation")[-1]["dice"]
    assert dice > 0.4 and dice > 5 * chance
    model, meta = load_model(run / "model.safetensors")
    assert meta["n_filters"] == 4 and meta["patch_size"] == [32, 32, 32] and meta["spacing"] is None
    assert meta["data"]["labeled"] == 3 and meta["data"]["unlabeled"] == 3 and meta["label_name"] == "Left atrium"
    assert (run / "progress.jsonl").read_text().count('"event": "progress"') == 60


# These resume tests extend a short run to stand in for an interrupted long one. That equals the long run
# only where the schedule does not depend on the total, so they train with the official steps; the poly
# decay's resume is tested below.
STEP = ["--lr-schedule", "step"]


def test_resume_gives_the_same_next_losses_as_an_uninterrupted_run(phantoms, tmp_path):
    whole = run_dtc("train", "--datalist", phantoms, "-o", tmp_path / "whole", "--iterations", 4, *STEP, *TINY)
    run_dtc("train", "--datalist", phantoms, "-o", tmp_path / "split", "--iterations", 2, *STEP, *TINY)
    # resumed with a DataLoader worker: batches do not depend on the worker layout
    resumed = run_dtc("train", "--datalist", phantoms, "-o", tmp_path / "split", "--resume", "--iterations", 4,
                      "--workers", 1, "--progress", "json")
    expected = {p["iteration"]: p["loss"] for p in events(whole.stdout, "progress")}
    got = {p["iteration"]: p["loss"] for p in events(resumed.stdout, "progress")}
    assert list(got) == [3, 4]
    assert got[3] == pytest.approx(expected[3], rel=1e-5) and got[4] == pytest.approx(expected[4], rel=1e-5)


def test_poly_decay_resumed_with_more_iterations_decays_over_the_new_total(phantoms, tmp_path):
    run_dtc("train", "--datalist", phantoms, "-o", tmp_path, "--iterations", 2, *TINY)
    resumed = run_dtc("train", "--datalist", phantoms, "-o", tmp_path, "--resume", "--iterations", 4,
                      "--progress", "json")
    lr = {e["iteration"]: e["lr"] for e in events(resumed.stdout, "progress")}  # the lr of step t - 1
    assert lr == pytest.approx({3: 0.01 * (1 - 2 / 4) ** 0.9, 4: 0.01 * (1 - 3 / 4) ** 0.9})
    assert "other data" not in resumed.stderr  # the same data
    # resumed with another datalist (here: without the unlabeled cases), it goes on with a warning
    other = json.loads(phantoms.read_text())
    other["unlabeled"] = []
    for entry in other["labeled"] + other["validation"]:
        entry.update({k: str(phantoms.parent / v) for k, v in entry.items()})
    (tmp_path / "other.json").write_text(json.dumps(other))
    again = run_dtc("train", "--datalist", tmp_path / "other.json", "-o", tmp_path, "--resume", "--iterations", 5)
    assert ("dtc train: warning: resuming on other data than the checkpoint was trained on (3 labeled, "
            "3 unlabeled, 2 validation; now 3 labeled, 0 unlabeled, 2 validation)") in again.stderr
    assert "warnings.warn(" not in again.stderr  # a message, not Python's file, line and source


def test_ema_model_is_the_moving_average_and_resumes_exactly(phantoms, tmp_path):
    ema = ["--ema", 0.5, "--checkpoint-every", 1, *STEP]
    run_dtc("train", "--datalist", phantoms, "-o", tmp_path / "whole", "--iterations", 3, *ema, *TINY)
    run_dtc("train", "--datalist", phantoms, "-o", tmp_path / "split", "--iterations", 2, *ema, *TINY)
    two = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    run_dtc("train", "--datalist", phantoms, "-o", tmp_path / "split", "--resume", "--iterations", 3,
            "--progress", "json")
    three = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    saved, _ = load_model(tmp_path / "whole" / "model.safetensors")
    resumed, _ = load_model(tmp_path / "split" / "model.safetensors")
    name = "block_one.conv.0.weight"
    # EMA after step 3 = 0.5 * EMA after step 2 + 0.5 * weights after step 3; the model file holds it
    expected = 0.5 * two["ema"][f"module.{name}"] + 0.5 * three["model"][name]
    torch.testing.assert_close(saved.state_dict()[name], expected)
    assert not torch.equal(saved.state_dict()[name], three["model"][name])
    for key, value in saved.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_recipe_switches_are_the_default_and_can_be_turned_off(phantoms, tmp_path):
    runs = {"default": [], "official": ["--no-intensity-augmentation", "--no-spatial-augmentation",
                                        "--no-low-contrast-augmentation", "--lr-schedule", "step"],
            "no-low-contrast": ["--no-low-contrast-augmentation"],
            "paper": ["--recipe", "paper"], "paper+intensity": ["--recipe", "paper", "--intensity-augmentation"]}
    switches = ("intensity_augmentation", "spatial_augmentation", "low_contrast_augmentation", "lr_schedule")

    def resolved(flags):  # what `dtc train` would train with, from its own parser (no training)
        argv = ["train", "--datalist", str(phantoms), "-o", str(tmp_path / "unused"), *flags]
        return [getattr(train_command._config(build_parser(argv).parse_args(argv)), key) for key in switches]

    assert {name: resolved(flags) for name, flags in runs.items()} == {
        "default": [True, True, True, "poly"], "official": [False, False, False, "step"],
        "no-low-contrast": [True, True, False, "poly"], "paper": [False, False, False, "step"],
        "paper+intensity": [True, False, False, "step"]}
    # a real training records what it trained with: a recipe and a switch overriding it
    run_dtc("train", "--datalist", phantoms, "-o", tmp_path / "run", "--iterations", 1, *runs["paper+intensity"],
            *TINY)
    used = json.loads((tmp_path / "run" / "train_config.json").read_text())["config"]
    assert [used[key] for key in switches] == [True, False, False, "step"]
    # a checkpoint written before the switches existed resumes without them, as it was trained
    old = TrainConfig.from_dict({"iterations": 10})
    assert (old.intensity_augmentation, old.spatial_augmentation, old.low_contrast_augmentation,
            old.lr_schedule) == (False, False, False, "step")


def test_levelset_target_switch_trains_and_is_recorded(phantoms, tmp_path):
    run_dtc("train", "--datalist", phantoms, "-o", tmp_path, "--iterations", 1, "--levelset-target", "volume", *TINY)
    assert json.loads((tmp_path / "train_config.json").read_text())["config"]["levelset_target"] == "volume"
    assert (tmp_path / "model.safetensors").exists()
    assert TrainConfig.from_dict({"iterations": 10}).levelset_target == "patch"  # the official target


def test_bf16_asked_for_on_the_cpu_runs_in_bf16(phantoms, tmp_path):
    losses = {}
    for amp in ("off", "bf16"):
        proc = run_dtc("train", "--datalist", phantoms, "-o", tmp_path / amp, "--iterations", 1, "--amp", amp, *TINY)
        assert events(proc.stdout, "start")[0]["bf16"] == (amp == "bf16")
        losses[amp] = events(proc.stdout, "progress")[0]["loss"]
    # The same seed and batch: only bf16 rounding can change the first loss (fp32 on the CPU is deterministic).
    assert losses["bf16"] != losses["off"]
    assert abs(losses["bf16"] - losses["off"]) < 0.05 * abs(losses["off"])


@pytest.mark.parametrize("how", ["SIGTERM", "SIGTERM to the group, with workers", "STOP file",
                                 pytest.param("SIGHUP", marks=pytest.mark.skipif(os.name == "nt", reason="POSIX"))])
def test_stop_request_leaves_a_loadable_checkpoint(phantoms, tmp_path, how):
    workers = ["--workers", "2"] if "workers" in how else []  # after TINY's --workers 0: this one counts
    child = subprocess.Popen([sys.executable, "-m", "dtc_training", "train", "--datalist", str(phantoms), "-o",
                              str(tmp_path), "--iterations", "1000", *map(str, TINY), *workers],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    for line in child.stdout:  # wait for training to be under way
        if '"event": "progress"' in line:
            break
    if how in ("SIGTERM", "SIGHUP"):  # SIGHUP: the terminal closed
        child.send_signal(getattr(signal, how))
    elif "group" in how:  # as a scheduler or `kill -- -PGID` does: the DataLoader workers get it too
        os.killpg(child.pid, signal.SIGTERM)
    else:
        (tmp_path / "STOP").touch()
    out, err = child.communicate(timeout=60)
    assert child.returncode == EXIT_INTERRUPTED, err
    stopped = events(out, "stopped")[0]
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["iteration"] == stopped["iteration"] < 1000
    assert not (tmp_path / "model.safetensors").exists() and not (tmp_path / "STOP").exists()  # the resume must not stop
    resumed = run_dtc("train", "--datalist", phantoms, "-o", tmp_path, "--resume", "--iterations",
                      stopped["iteration"] + 1, "--progress", "json")
    assert events(resumed.stdout, "progress")[0]["iteration"] == stopped["iteration"] + 1
    assert (tmp_path / "model.safetensors").exists()


def test_la_layout_loads_the_standard_split(la_root, tmp_path):
    from dtc_training.data import load_la

    data = load_la(la_root, labeled=2, unlabeled=1, holdout=1, spacing=(1.25, 1.25, 1.25))
    assert [len(data.labeled), len(data.unlabeled), len(data.validation)] == [2, 1, 1]
    assert data.labeled[0]["name"] == (la_root / "train.list").read_text().split()[0]
    x, y, z = data.labeled[0]["image"].shape
    assert z == 44 and data.labeled[0]["label"].shape == (x, y, z)  # 88 slices at half resolution
    assert set(np.unique(data.labeled[0]["label"])) == {0, 1}


def test_checkpoints_come_by_iterations_and_by_time_once_each(phantoms, tmp_path):
    # By time only: every iteration takes longer than 1e-5 minutes; by iterations only: every second one.
    # Either way the end is saved, once.
    for name, every, minutes, expected in (("time", 1000, 1e-5, [1, 2, 3]), ("iterations", 2, 0, [2, 3])):
        proc = run_dtc("train", "--datalist", phantoms, "-o", tmp_path / name, "--iterations", 3, *TINY,
                       "--checkpoint-every", every, "--checkpoint-minutes", minutes)
        assert [e["iteration"] for e in events(proc.stdout, "checkpoint")] == expected, name


def test_a_disk_that_fills_up_at_a_checkpoint_is_reported_and_the_run_resumes(phantoms, tmp_path):
    # The second checkpoint write fails half-way with ENOSPC, as on a full disk (a real one needs privileges).
    full_disk = textwrap.dedent("""
        import errno, sys, torch
        from dtc_training.cli import main
        real_save, calls = torch.save, []
        def save(obj, f, *args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                f.write(b"partial")
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_save(obj, f, *args, **kwargs)
        torch.save = save
        sys.exit(main(sys.argv[1:]))
    """)
    args = ["train", "--datalist", str(phantoms), "-o", str(tmp_path), "--iterations", "4", *map(str, TINY),
            "--checkpoint-every", "2", "--checkpoint-minutes", "0"]
    proc = subprocess.run([sys.executable, "-c", full_disk, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_ERROR, proc.stderr
    assert f"{tmp_path / 'checkpoint.pt'}: No space left on device" in proc.stderr and "--resume" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["iteration"] == 2  # the earlier one, whole
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    resumed = run_dtc("train", "--datalist", phantoms, "-o", tmp_path, "--resume")
    assert events(resumed.stdout, "progress")[0]["iteration"] == 3 and (tmp_path / "model.safetensors").is_file()


def test_a_run_whose_reader_goes_away_saves_a_checkpoint_and_stops(phantoms, tmp_path):
    # A GUI that starts `dtc train` reads its stdout; if the GUI crashes, the next progress line finds the
    # pipe broken: the run saves a checkpoint where it is and exits as a stopped run, never with a traceback.
    child = subprocess.Popen([sys.executable, "-m", "dtc_training", "train", "--datalist", str(phantoms), "-o",
                              str(tmp_path), "--iterations", "1000", *map(str, TINY)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in child.stdout:
        if '"event": "progress"' in line:
            break
    child.stdout.close()
    err = child.stderr.read()
    assert child.wait(60) == EXIT_INTERRUPTED, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    logged = [json.loads(line) for line in (tmp_path / "progress.jsonl").read_text().splitlines()]
    stopped = [r for r in logged if r["event"] == "stopped"][0]
    assert stopped["reason"] == "output closed" and 0 < stopped["iteration"] < 1000
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["iteration"] == stopped["iteration"]
