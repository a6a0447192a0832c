"""Losses on logits: soft Dice (foreground only) plus cross-entropy."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from brainseg.labels import ED, ET, NCR


def soft_dice(probs: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mean soft Dice over channels, summed over the batch and space (batch Dice): (N, K, ...) -> ()."""
    dims = (0,) + tuple(range(2, probs.ndim))
    intersection = (probs * target).sum(dims)
    denominator = probs.sum(dims) + target.sum(dims)
    return ((2 * intersection + eps) / (denominator + eps)).mean()


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, output_mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Dice + cross-entropy for region (sigmoid) or label (softmax) outputs.

    Args:
        logits: (N, K, ...) float.
        target: (N, 3, ...) WT/TC/ET masks or soft shares in [0, 1].
    Returns:
        (loss, soft Dice of the foreground channels, detached)
    """
    logits = logits.float()
    target = target.float()
    if output_mode == "regions":
        probs = torch.sigmoid(logits)
        dice = soft_dice(probs, target)
        ce = F.binary_cross_entropy_with_logits(logits, target)
    else:
        labels = _regions_to_label_index(target)
        probs = torch.softmax(logits, dim=1)
        one_hot = F.one_hot(labels, logits.shape[1]).movedim(-1, 1).float()
        dice = soft_dice(probs[:, 1:], one_hot[:, 1:])
        ce = F.cross_entropy(logits, labels)
    return (1 - dice) + ce, dice.detach()


def _regions_to_label_index(target: torch.Tensor) -> torch.Tensor:
    """labels.regions_to_labels in torch, on the training device."""
    wt, tc, et = (target >= 0.5).unbind(1)  # soft shares: a voxel belongs where most of it lies
    labels = torch.zeros_like(wt, dtype=torch.long)
    labels[wt] = ED
    labels[wt & tc] = NCR
    labels[wt & tc & et] = ET
    return labels
