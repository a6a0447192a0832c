"""Dice + cross-entropy on logits, against values worked out by hand."""
import math

import pytest
import torch
import torch.nn.functional as F

from brainseg.losses import dice_ce_loss, soft_dice

# one voxel of each kind, as WT/TC/ET shares: background, edema, necrotic core, enhancing, and a
# 2 mm voxel 60 % inside the whole tumour and 40 % inside the core, which belongs to edema
TARGET = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1], [0.6, 0.4, 0.0]]).T.reshape(1, 3, 5, 1, 1)
LABELS = torch.tensor([0, 2, 1, 3, 2])  # internal: 0 bg, 1 NCR, 2 ED, 3 ET


def test_soft_dice_known_values():
    target = torch.tensor([1.0, 0, 0, 0]).reshape(1, 1, 4)
    assert soft_dice(target, target).item() == pytest.approx(1.0)
    assert soft_dice(torch.tensor([1.0, 1, 0, 0]).reshape(1, 1, 4), target).item() == pytest.approx(2 / 3, abs=1e-4)
    assert soft_dice(torch.tensor([0.0, 1, 1, 1]).reshape(1, 1, 4), target).item() == pytest.approx(0.0, abs=1e-4)


def test_region_loss_at_zero_logits_is_one_minus_dice_plus_log_two():
    target = torch.ones(2, 3, 4, 4, 4)
    loss, dice = dice_ce_loss(torch.zeros(2, 3, 4, 4, 4), target, "regions")
    # p = 0.5 everywhere: Dice = 2 * 0.5n / (0.5n + n) = 2/3, BCE = ln 2
    assert dice.item() == pytest.approx(2 / 3, abs=1e-4)
    assert loss.item() == pytest.approx(1 / 3 + math.log(2), abs=1e-4)


def test_region_loss_vanishes_for_confident_correct_logits():
    hard = (TARGET >= 0.5).float()
    loss, dice = dice_ce_loss(40 * (2 * hard - 1), hard, "regions")
    assert loss.item() < 1e-4 and dice.item() == pytest.approx(1.0, abs=1e-4)


def test_label_loss_maps_nested_regions_to_labels():
    right = 40 * F.one_hot(LABELS, 4).T.reshape(1, 4, 5, 1, 1).float()
    loss, dice = dice_ce_loss(right, TARGET, "labels")
    assert loss.item() < 1e-4 and dice.item() == pytest.approx(1.0, abs=1e-4)
    # the same confident logits one label off score badly: the mapping, not the logits, decides
    wrong = 40 * F.one_hot(LABELS.roll(1), 4).T.reshape(1, 4, 5, 1, 1).float()
    assert dice_ce_loss(wrong, TARGET, "labels")[0].item() > 10


def test_label_loss_at_zero_logits_is_log_four_plus_dice_term():
    loss, dice = dice_ce_loss(torch.zeros(1, 4, 5, 1, 1), TARGET, "labels")
    # p = 1/4 per label; foreground channels NCR, ED, ET hold 1, 2, 1 of the 5 voxels
    expected = sum(2 * 0.25 * n / (0.25 * 5 + n) for n in (1, 2, 1)) / 3
    assert dice.item() == pytest.approx(expected, abs=1e-4)
    assert loss.item() == pytest.approx(1 - expected + math.log(4), abs=1e-4)
