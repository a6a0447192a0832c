"""BraTS 2023+ lesion-wise Dice and HD95: each reference lesion scored on its own.

The challenge ranks by these since 2023 (Saluja et al., BraTS 2023 lesion-wise metrics): a volume-wide
Dice hides a missed small lesion next to a large one, a lesion-wise mean does not. Per region (WT, TC,
ET):

- reference lesions are its 26-connected components, merged when their dilations by ``dilation``
  iterations (18-connected structuring element) meet: up to 2 x ``dilation`` voxels apart;
- a predicted component (26-connected) matches every lesion whose dilated extent it touches; a lesion
  is scored by Dice and HD95 between it and the union of its matches (0 and ``MISSED_HD95`` without one);
- predicted components that match no lesion are false positives, each scored 0 and ``MISSED_HD95``;
- lesions of at most ``min_volume_mm3`` are left out of the mean (their matches are not false positives);
- the score is the mean over the kept lesions and the false positives; 1 and 0 mm when there are none.

HD95 is brainseg's (the larger directed 95th percentile between surface voxels); the challenge's code
weights surface elements by area, so its values differ slightly: on the shipped model's validation cases
the lesion-wise means by 0.05 / 0.11 / 0.20 mm (WT / TC / ET; 0.05 / 0.11 / 0.63 mm volume-wise), one case
by at most 0.67 mm lesion-wise and 2.40 mm volume-wise (``scripts/hd95_convention_check.py``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import cc3d
import numpy as np
from scipy import ndimage

from brainseg.config import LESION_CHALLENGES
from brainseg.labels import REGIONS, region_masks
from brainseg.metrics import as_masks, bounding_box, dice, hd95

MISSED_HD95 = 374.0  # the challenge's penalty for a missed lesion or a false positive, in mm
_GROW = ndimage.generate_binary_structure(3, 2)


@dataclass(frozen=True)
class LesionScores:
    """Lesion-wise scores of one region of one case."""

    dice: float
    hd95: float
    matched: int  # scored reference lesions some predicted component touches
    missed: int  # scored reference lesions none touches
    false_positives: int  # predicted components touching no reference lesion
    small_lesions: int  # reference lesions at or below the volume threshold, left out

    def to_dict(self) -> dict:
        return asdict(self)


def lesion_wise(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], dilation: int = 3,
                min_volume_mm3: float = 50.0, distance: Callable = hd95) -> LesionScores:
    """Lesion-wise Dice and HD95 of two boolean masks of one region (see the module's description);
    ``distance(pred, ref, spacing)`` measures each lesion's HD95 (another surface convention can be given)."""
    pred, ref = as_masks(pred, ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if dilation < 0:
        raise ValueError(f"dilation must be >= 0 iterations, got {dilation}")
    if not (pred.any() or ref.any()):
        return LesionScores(1.0, 0.0, 0, 0, 0, 0)
    box = bounding_box(pred | ref, dilation + 1)
    pred, ref = pred[box], ref[box]
    pred_cc = cc3d.connected_components(pred, connectivity=26)
    # one lesion per component of the dilated reference; that component is also the lesion's dilated extent
    extent = ndimage.binary_dilation(ref, _GROW, iterations=dilation) if dilation else ref
    extent_cc = cc3d.connected_components(extent, connectivity=26)
    voxel_mm3 = float(np.prod(spacing))
    dices, distances, matched_components = [], [], set()
    matched = missed = small = 0
    for lesion_id in range(1, int(extent_cc.max()) + 1):
        in_extent = extent_cc == lesion_id
        lesion = ref & in_extent
        touching = np.unique(pred_cc[in_extent])
        touching = touching[touching != 0]
        matched_components.update(touching.tolist())
        if lesion.sum() * voxel_mm3 <= min_volume_mm3:
            small += 1
            continue
        if touching.size:
            found = np.isin(pred_cc, touching)
            dices.append(dice(found, lesion))
            distances.append(distance(found, lesion, spacing))
            matched += 1
        else:
            dices.append(0.0)
            distances.append(MISSED_HD95)
            missed += 1
    false_positives = int(pred_cc.max()) - len(matched_components)
    count = len(dices) + false_positives
    if count == 0:
        return LesionScores(1.0, 0.0, 0, 0, 0, small)
    return LesionScores(float(sum(dices)) / count, (float(sum(distances)) + MISSED_HD95 * false_positives) / count,
                        matched, missed, false_positives, small)


def lesion_wise_scores(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], challenge: str = "GLI") -> dict:
    """{"challenge": name, "regions": {"WT"|"TC"|"ET": LesionScores dict}} of two internal label maps,
    scored with that challenge's parameters (``config.LESION_CHALLENGES``)."""
    if challenge not in LESION_CHALLENGES:
        raise ValueError(f"unknown BraTS challenge {challenge!r}; expected one of {', '.join(LESION_CHALLENGES)}")
    dilation, min_volume = LESION_CHALLENGES[challenge]
    pred_regions, ref_regions = region_masks(pred), region_masks(ref)
    return {"challenge": challenge,
            "regions": {r: lesion_wise(pred_regions[r], ref_regions[r], spacing, dilation, min_volume).to_dict() for r in REGIONS}}
