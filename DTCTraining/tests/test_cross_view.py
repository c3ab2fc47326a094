"""`dtc train --cross-view W`: the two heads' agreement on an unlabeled crop as the pseudo-label of its
intensity-perturbed strong view; off (0) leaves training exactly as it was."""
import math

import pytest
import torch

from conftest import TINY, events, run_dtc
from dtc_training import strong_view
from dtc_training.checkpoint import load_checkpoint
from dtc_training.config import TrainConfig
from dtc_training.losses import DTCLoss, cross_view_loss, dual_task_pseudo_label, sigmoid_rampup
from dtc_training.model_io import load_model
from dtc_training.strong_view import strong_views
from test_train_inputs import assert_refused

# Four voxels: seg head sure of 1, 0, 1, 0; level-set head (k = 1500) sure of 1, 0, 0, 1.
SEG_LOGITS = torch.tensor([3.0, -3.0, 3.0, -3.0])
LEVELSET = torch.tensor([-0.01, 0.01, 0.01, -0.01])  # negative inside: sigmoid(-k z) is 1 there


def test_the_pseudo_label_is_the_heads_mean_and_trusted_where_they_agree():
    seg_logits, levelset = SEG_LOGITS.clone().requires_grad_(), LEVELSET.clone().requires_grad_()
    label, confident = dual_task_pseudo_label(seg_logits, levelset, k=1500)
    assert confident.tolist() == [True, True, False, False]
    # where they disagree the surer head wins: mean (0.95 + 0) / 2 < 0.5, (0.05 + 1) / 2 > 0.5
    assert label.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert not label.requires_grad and not confident.requires_grad  # a target, not a path for gradients


def test_the_loss_is_the_cross_entropy_over_the_confident_voxels_only():
    strong = torch.tensor([2.0, 0.0, 5.0, -5.0], requires_grad=True)
    loss = cross_view_loss(strong, SEG_LOGITS, LEVELSET, k=1500)
    assert loss.item() == pytest.approx((math.log1p(math.exp(-2.0)) + math.log(2.0)) / 2, rel=1e-6)
    loss.backward()
    assert strong.grad[2:].tolist() == [0.0, 0.0] and (strong.grad[:2] != 0).all()


def test_heads_that_disagree_everywhere_give_a_zero_loss_not_nan():
    opposite = torch.tensor([0.01, -0.01, 0.01, -0.01])  # the level-set head sure of 0, 1, 0, 1
    assert not dual_task_pseudo_label(SEG_LOGITS, opposite, k=1500)[1].any()
    strong = torch.randn(4, requires_grad=True)
    loss = cross_view_loss(strong, SEG_LOGITS, opposite, k=1500)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(strong.grad, torch.zeros(4))
    nothing = torch.zeros(0, 1, 4, 4, 4)  # a batch without unlabeled items
    assert cross_view_loss(nothing, nothing, nothing, k=1500).item() == 0.0


def test_the_term_joins_the_total_on_the_consistency_ramp_and_off_adds_nothing():
    torch.manual_seed(0)
    seg, levelset, strong = torch.randn(3, 1, 4, 4, 4), torch.randn(3, 1, 4, 4, 4) / 500, torch.randn(2, 1, 4, 4, 4)
    label, target = (torch.rand(1, 1, 4, 4, 4) > 0.5).float(), torch.randn(1, 1, 4, 4, 4)
    off = DTCLoss()(seg, levelset, label, target, 1, 3000, strong_logits=strong)
    assert "loss_cross_view" not in off and "cross_view_weight" not in off
    on = DTCLoss(cross_view=2.0)(seg, levelset, label, target, 1, 3000, strong_logits=strong)
    assert on["cross_view_weight"] == pytest.approx(2.0 * DTCLoss().consistency_weight(3000))
    assert on["loss_cross_view"].item() == pytest.approx(cross_view_loss(strong, seg[1:], levelset[1:], 1500).item())
    added = on["cross_view_weight"] * on["loss_cross_view"].item()
    assert on["loss"].item() == pytest.approx(off["loss"].item() + added)
    # with the consistency off the term keeps the ramp's shape
    assert DTCLoss(consistency=0, cross_view=2.0).cross_view_weight(3000) == pytest.approx(2 * sigmoid_rampup(20, 40))


def test_the_strong_view_is_an_affine_intensity_change_plus_noise_of_each_voxel(monkeypatch):
    images = torch.randn(3, 1, 8, 8, 6)
    noisy = strong_views(images, seed=7, iteration=5)
    monkeypatch.setattr(strong_view, "NOISE_SIGMA", 0.0)  # the same draws of scale and shift, no noise
    affine = strong_views(images, seed=7, iteration=5)
    assert noisy.shape == images.shape and not torch.equal(noisy, images)
    for x, y in zip(images.flatten(1), affine.flatten(1)):  # each voxel a x + b of itself: nothing moved
        a, b = torch.linalg.lstsq(torch.stack([x, torch.ones_like(x)], 1), y[:, None]).solution[:, 0].tolist()
        assert 0.7 <= a <= 1.3 and -0.3 <= b <= 0.3
        torch.testing.assert_close(y, a * x + b, rtol=0, atol=1e-5)
    noise = noisy - affine
    assert noise.std().item() == pytest.approx(0.1, rel=0.1) and abs(noise.mean().item()) < 0.02
    assert abs(torch.corrcoef(torch.stack([noise.flatten(), images.flatten()]))[0, 1]) < 0.1


def test_the_strong_view_is_reproducible_and_differs_across_iterations_and_ranks():
    images = torch.randn(2, 1, 8, 8, 6)
    first = strong_views(images, seed=7, iteration=5)
    assert torch.equal(first, strong_views(images.clone(), seed=7, iteration=5))
    for other in (dict(seed=7, iteration=6), dict(seed=8, iteration=5), dict(seed=7, iteration=5, rank=1)):
        assert not torch.allclose(first, strong_views(images, **other), atol=0.05)


def test_cross_view_0_trains_exactly_as_without_the_flag(phantoms, tmp_path):
    records, weights = {}, {}
    for name, flags in (("without", []), ("zero", ["--cross-view", 0])):
        proc = run_dtc("train", "--datalist", phantoms, "-o", tmp_path / name, "--iterations", 2, *flags, *TINY)
        records[name] = [{k: v for k, v in p.items() if k not in ("time", "it_per_s", "eta_s")}
                         for p in events(proc.stdout, "progress")]
        weights[name] = load_checkpoint(tmp_path / name / "checkpoint.pt")["model"]
    assert len(records["zero"]) == 2 and records["zero"] == records["without"]
    assert "loss_cross_view" not in records["zero"][0]
    assert all(torch.equal(weights["zero"][k], v) for k, v in weights["without"].items())


def test_cross_view_trains_logs_its_term_records_the_switch_and_resumes_with_it(phantoms, tmp_path):
    common = ["--datalist", phantoms, "--cross-view", 1, "--lr-schedule", "step", *TINY]
    whole = run_dtc("train", "-o", tmp_path / "whole", "--iterations", 3, *common)
    split = run_dtc("train", "-o", tmp_path / "split", "--iterations", 2, *common)
    first = events(split.stdout, "progress")[0]
    assert math.isfinite(first["loss_cross_view"]) and first["loss_cross_view"] > 0
    assert first["cross_view_weight"] == pytest.approx(sigmoid_rampup(0, 40))
    total = (first["loss_dice"] + 0.3 * first["loss_levelset"] + first["consistency_weight"] * first["loss_consistency"]
             + first["cross_view_weight"] * first["loss_cross_view"])
    assert first["loss"] == pytest.approx(total, rel=1e-5)  # the term is in the loss that is optimised
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["config"]["cross_view"] == 1.0
    assert load_model(tmp_path / "split" / "model.safetensors")[1]["config"]["cross_view"] == 1.0
    # resumed without the flag: the run's own switch, and the perturbations an uninterrupted run drew
    resumed = run_dtc("train", "--datalist", phantoms, "-o", tmp_path / "split", "--resume", "--iterations", 3,
                      "--progress", "json")
    got, expected = events(resumed.stdout, "progress")[-1], events(whole.stdout, "progress")[-1]
    assert got["iteration"] == expected["iteration"] == 3
    assert got["loss_cross_view"] == pytest.approx(expected["loss_cross_view"], rel=1e-5)
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["config"]["cross_view"] == 1.0


def test_a_negative_weight_is_refused_before_any_data_is_read(tmp_path):
    proc = run_dtc("train", "--datalist", tmp_path / "absent.json", "-o", tmp_path / "run", "--cross-view", -1,
                   check=False, in_process=True)
    assert_refused(proc, "--cross-view must be >= 0")
    assert "absent.json" not in proc.stderr and "Traceback" not in proc.stderr
    assert TrainConfig.from_dict({"iterations": 10}).cross_view == 0  # a run saved before the switch existed
