import math

import pytest
import torch

from dtc_training.config import TrainConfig
from dtc_training.losses import DTCLoss, dice_loss, levelset_to_mask, sigmoid_rampup


def test_dice_loss_by_hand():
    prob = torch.tensor([0.5, 1.0, 0.0, 0.25])
    target = torch.tensor([1.0, 1.0, 0.0, 0.0])
    # 1 - (2 * 1.5 + s) / ((0.25 + 1 + 0 + 0.0625) + 2 + s)
    expected = 1 - (3 + 1e-5) / (3.3125 + 1e-5)
    assert dice_loss(prob, target).item() == pytest.approx(expected, rel=1e-6)
    assert dice_loss(target, target).item() == pytest.approx(0, abs=1e-6)


def test_dice_is_batch_global_not_a_mean_over_items():
    prob = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    target = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    assert dice_loss(prob, target).item() == pytest.approx(1 - (4 + 1e-5) / (2 + 3 + 1e-5), rel=1e-6)


@pytest.mark.parametrize("t, w", [(0, 0.0067), (750, 0.0218), (1500, 0.0601), (3000, 0.2865),
                                  (4500, 0.7316), (5850, 0.9969), (5999, 0.9969)])
def test_consistency_ramp_matches_reference_table(t, w):
    assert DTCLoss().consistency_weight(t) == pytest.approx(w, abs=5e-5)


def test_ramp_edges():
    assert sigmoid_rampup(0, 0) == 1.0
    assert sigmoid_rampup(40, 40) == 1.0 and sigmoid_rampup(99, 40) == 1.0
    assert DTCLoss().consistency_weight(149) == DTCLoss().consistency_weight(0)


def test_learning_rate_steps_as_the_official_code():
    cfg = TrainConfig(lr_schedule="step")
    assert [cfg.lr_at(t) for t in (0, 2499, 2500, 4999, 5000, 5999)] == pytest.approx(
        [0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001])


def test_poly_learning_rate_decays_to_zero_at_the_last_iteration():
    cfg = TrainConfig(iterations=1000)  # the default schedule
    assert [cfg.lr_at(t) for t in (0, 500, 999)] == pytest.approx([0.01, 0.01 * 0.5 ** 0.9, 0.01 * 0.001 ** 0.9])


def test_task_transform_is_a_step_at_zero_with_inside_negative():
    z = torch.tensor([-0.01, -0.00306, 0.0, 0.00306, 0.01])
    assert levelset_to_mask(z, 1500).tolist() == pytest.approx([1.0, 0.99, 0.5, 0.01, 0.0], abs=2e-3)


def test_each_term_of_the_total_on_hand_built_inputs():
    seg = torch.tensor([0.0, 2.0, -2.0, 1.0]).reshape(4, 1, 1, 1, 1)  # items 0-1 labeled
    levelset = torch.tensor([-0.5, 0.2, 0.001, -0.001]).reshape(4, 1, 1, 1, 1)
    label = torch.tensor([1.0, 0.0]).reshape(2, 1, 1, 1, 1)
    target = torch.tensor([-1.0, 0.6]).reshape(2, 1, 1, 1, 1)
    loss = DTCLoss(k=1500, levelset_weight=0.3)
    terms = loss(seg, levelset, label, target, n_labeled=2, iteration=0)
    p = torch.sigmoid(seg.flatten())
    expected_dice = 1 - (2 * p[0] + 1e-5) / (p[0] ** 2 + p[1] ** 2 + 1 + 1e-5)
    expected_lsf = ((0.5 ** 2) + (0.4 ** 2)) / 2
    q = torch.sigmoid(-1500 * levelset.flatten())
    expected_cons = ((q - p) ** 2).mean()  # over all four items
    assert terms["loss_dice"].item() == pytest.approx(expected_dice.item(), rel=1e-5)
    assert terms["loss_levelset"].item() == pytest.approx(expected_lsf, rel=1e-5)
    assert terms["loss_consistency"].item() == pytest.approx(expected_cons.item(), rel=1e-5)
    w = math.exp(-5)
    assert terms["loss"].item() == pytest.approx(expected_dice.item() + 0.3 * expected_lsf + w * expected_cons.item(), rel=1e-5)


def test_consistency_is_computed_in_float32_under_bf16():
    levelset = torch.tensor([-0.001], dtype=torch.bfloat16)
    assert levelset_to_mask(levelset, 1500).dtype == torch.float32


def test_cross_entropy_is_reported_always_and_added_only_with_its_weight():
    seg = torch.tensor([0.0, 2.0, -2.0]).reshape(3, 1, 1, 1, 1)  # items 0-1 labeled
    levelset = torch.tensor([-0.5, 0.2, 0.001]).reshape(3, 1, 1, 1, 1)
    label = torch.tensor([1.0, 0.0]).reshape(2, 1, 1, 1, 1)
    target = torch.tensor([-1.0, 0.6]).reshape(2, 1, 1, 1, 1)
    # -log sigmoid(0) for the foreground item, -log(1 - sigmoid(2)) for the background one
    expected_ce = (math.log(2) + math.log(1 + math.exp(2))) / 2
    official = DTCLoss()(seg, levelset, label, target, n_labeled=2, iteration=0)
    weighted = DTCLoss(ce_weight=0.5)(seg, levelset, label, target, n_labeled=2, iteration=0)
    assert official["loss_ce"].item() == pytest.approx(expected_ce, rel=1e-5)
    assert weighted["loss"].item() == pytest.approx(official["loss"].item() + 0.5 * expected_ce, rel=1e-5)
