"""BraTS 2023+ lesion-wise scores against hand-computed cases and a literal re-statement of the rules."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from brainseg.lesion_metrics import MISSED_HD95, lesion_wise, lesion_wise_scores
from brainseg.metrics import dice, hd95


def _volume(shape=(40, 40, 40)) -> np.ndarray:
    return np.zeros(shape, dtype=bool)


def test_a_perfect_lesion_a_missed_one_and_a_false_positive():
    ref, pred = _volume(), _volume()
    ref[2:6, 2:6, 2:6] = ref[30:34, 30:34, 30:34] = True  # two 64-voxel lesions far apart
    pred[2:6, 2:6, 2:6] = True  # the first found exactly
    pred[2:5, 30:33, 2:5] = True  # 27 voxels touching no lesion
    scores = lesion_wise(pred, ref, (1, 1, 1))
    assert (scores.matched, scores.missed, scores.false_positives, scores.small_lesions) == (1, 1, 1, 0)
    assert scores.dice == pytest.approx((1 + 0 + 0) / 3)
    assert scores.hd95 == pytest.approx((0 + MISSED_HD95 + MISSED_HD95) / 3)


def test_lesions_closer_than_the_dilation_are_one_lesion():
    ref, pred = _volume(), _volume()
    ref[10:14, 10:14, 10:14] = ref[10:14, 16:20, 10:14] = True  # a 2-voxel gap: merged by 3 dilations
    pred[10:14, 10:14, 10:14] = True
    merged = lesion_wise(pred, ref, (1, 1, 1), dilation=3)
    assert (merged.matched, merged.missed, merged.false_positives) == (1, 0, 0)
    assert merged.dice == pytest.approx(2 * 64 / (64 + 128))
    apart = lesion_wise(pred, ref, (1, 1, 1), dilation=0)  # no merging: one found, one missed
    assert (apart.matched, apart.missed) == (1, 1) and apart.dice == pytest.approx(0.5)


def test_a_prediction_near_a_lesion_matches_it_and_small_lesions_are_left_out():
    ref, pred = _volume(), _volume()
    ref[10:14, 10:14, 10:14] = True
    pred[10:14, 10:14, 16:18] = True  # 2 voxels off the lesion: inside its 3-voxel extent, no overlap
    near = lesion_wise(pred, ref, (1, 1, 1))
    assert (near.matched, near.false_positives, near.dice) == (1, 0, 0.0)
    assert near.hd95 == pytest.approx(hd95(pred, ref))
    small = _volume()
    small[20:23, 20:23, 20:23] = True  # 27 mm^3 <= 50: not scored, and what touches it is no false positive
    left_out = lesion_wise(small.copy(), small, (1, 1, 1))
    assert (left_out.dice, left_out.hd95, left_out.small_lesions, left_out.false_positives) == (1.0, 0.0, 1, 0)
    # the same voxels at 2 mm are 216 mm^3: scored
    assert lesion_wise(_volume(), small, (2, 2, 2)).missed == 1


def test_empty_masks_score_perfectly_and_empty_reference_with_prediction_scores_zero():
    empty = _volume()
    assert lesion_wise(empty, empty, (1, 1, 1)).dice == 1.0
    blob = _volume()
    blob[5:9, 5:9, 5:9] = True
    scores = lesion_wise(blob, empty, (1, 1, 1))
    assert (scores.dice, scores.hd95, scores.false_positives) == (0.0, MISSED_HD95, 1)
    with pytest.raises(ValueError, match="shape"):
        lesion_wise(blob, blob[:-1], (1, 1, 1))


def _literal(pred, ref, spacing, dilation, min_volume):
    """The rules as stated, step by step: merge by dilated components, dilate each merged lesion on its own."""
    grow = ndimage.generate_binary_structure(3, 2)
    full = np.ones((3, 3, 3))
    ref_cc, _ = ndimage.label(ref, full)
    pred_cc, n_pred = ndimage.label(pred, full)
    grown_cc, n_grown = ndimage.label(ndimage.binary_dilation(ref, grow, iterations=dilation), full)
    dices, distances, touched = [], [], set()
    for k in range(1, n_grown + 1):
        lesion = (ref_cc > 0) & (grown_cc == k)
        extent = ndimage.binary_dilation(lesion, grow, iterations=dilation)
        hits = set(np.unique(pred_cc[extent]).tolist()) - {0}
        touched |= hits
        if lesion.sum() * np.prod(spacing) <= min_volume:
            continue
        found = np.isin(pred_cc, list(hits))
        dices.append(dice(found, lesion) if hits else 0.0)
        distances.append(hd95(found, lesion, spacing) if hits else MISSED_HD95)
    fp = n_pred - len(touched)
    n = len(dices) + fp
    return (1.0, 0.0) if n == 0 else (sum(dices) / n, (sum(distances) + MISSED_HD95 * fp) / n)


@pytest.mark.parametrize("seed", range(6))
def test_scores_equal_a_literal_statement_of_the_rules_on_random_blobs(seed):
    rng = np.random.default_rng(seed)
    cube, shape = np.ones((3, 3, 3)), (40, 40, 32)
    # lesions: cubes of 27 to 343 voxels, some touching; the prediction shifted by up to a voxel and thinned,
    # a few lesions cut out of it (missed) and a few specks added (false positives)
    ref = ndimage.binary_dilation(rng.random(shape) > 0.9998, cube, iterations=int(rng.integers(1, 4)))
    ref |= ndimage.binary_dilation(rng.random(shape) > 0.9997, cube, iterations=1)
    pred = np.roll(ref, int(rng.integers(-1, 2)), axis=0) & (rng.random(shape) > 0.05)
    pred &= ~ndimage.binary_dilation(rng.random(shape) > 0.9998, cube, iterations=4)
    pred |= ndimage.binary_dilation(rng.random(shape) > 0.9998, cube, iterations=1)
    spacing = (1.0, 1.0, float(rng.choice([1.0, 2.0])))
    for dilation, min_volume in ((3, 50.0), (1, 2.0)):
        scores = lesion_wise(pred, ref, spacing, dilation, min_volume)
        expected_dice, expected_hd95 = _literal(pred, ref, spacing, dilation, min_volume)
        assert scores.dice == pytest.approx(expected_dice) and scores.hd95 == pytest.approx(expected_hd95)


def test_regions_use_the_challenge_parameters():
    ref = np.zeros((30, 30, 30), dtype=np.uint8)
    ref[5:15, 5:15, 5:15] = 2  # edema
    ref[8:12, 8:12, 8:12] = 3  # ET inside it: 64 voxels
    pred = ref.copy()
    pred[20:22, 20:22, 20:22] = 3  # an 8-voxel ET speck far away: a WT, TC and ET false positive
    scores = lesion_wise_scores(pred, ref, (1, 1, 1), "GLI")["regions"]
    for region in ("WT", "TC", "ET"):
        assert (scores[region]["dice"], scores[region]["false_positives"]) == (0.5, 1)
    with pytest.raises(ValueError, match="unknown BraTS challenge 'XYZ'"):
        lesion_wise_scores(pred, ref, (1, 1, 1), "XYZ")


def test_another_surface_distance_can_be_given_and_penalties_stay():
    """The lesion rules with another HD95 convention (the challenge's area-weighted one, say): matched lesions
    take the given distance, a false-positive piece still the 374 mm penalty."""
    ref = np.zeros((30, 30, 30), bool)
    ref[2:8, 2:8, 2:8] = True
    pred = ref.copy()
    pred[20:24, 20:24, 20:24] = True  # a piece far from the lesion: a false positive
    scores = lesion_wise(pred, ref, (1.0, 1.0, 1.0), distance=lambda p, r, s: 2.5)
    assert (scores.matched, scores.false_positives) == (1, 1)
    assert scores.hd95 == pytest.approx((2.5 + 374.0) / 2)
