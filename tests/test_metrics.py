import math

import numpy as np
import pytest

from brainseg.labels import ET, NCR, ED
from brainseg.metrics import HD95_ONE_EMPTY, dice, evaluate, hd95, mask_metrics, slice_stats, volume_stats


def box(shape, sl):
    m = np.zeros(shape, bool)
    m[sl] = True
    return m


def test_dice_hand_computed():
    a = box((10, 10, 10), np.s_[0:4, 0:5, 0:1])  # 20 voxels
    b = box((10, 10, 10), np.s_[2:6, 0:5, 0:1])  # 20 voxels, 10 shared
    assert dice(a, b) == pytest.approx(2 * 10 / 40)
    m = mask_metrics(a, b, (1, 1, 1))
    assert m["iou"] == pytest.approx(10 / 30)
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(0.5)
    assert m["specificity"] == pytest.approx(970 / 980)
    assert m["accuracy"] == pytest.approx(980 / 1000)


def test_empty_versus_empty_is_perfect_and_one_empty_is_worst():
    empty = np.zeros((5, 5, 5), bool)
    full = box((5, 5, 5), np.s_[1:3, 1:3, 1:3])
    assert dice(empty, empty) == 1.0 and hd95(empty, empty) == 0.0
    assert dice(full, empty) == 0.0 and hd95(full, empty) == HD95_ONE_EMPTY


def test_every_metric_of_empty_masks_follows_the_stated_convention():
    """Both empty: perfect on every score; one empty: the worst (the values evaluate's CSV and JSON carry)."""
    empty = np.zeros((5, 5, 5), bool)
    full = box((5, 5, 5), np.s_[1:3, 1:3, 1:3])  # 8 voxels
    assert mask_metrics(empty, empty, (1, 1, 1)) == {
        "dice": 1.0, "hd95": 0.0, "iou": 1.0, "precision": 1.0, "recall": 1.0, "specificity": 1.0, "accuracy": 1.0,
        "pred_voxels": 0, "ref_voxels": 0}
    assert mask_metrics(empty, full, (1, 1, 1)) == {  # nothing predicted: nothing right, all 8 missed
        "dice": 0.0, "hd95": HD95_ONE_EMPTY, "iou": 0.0, "precision": 0.0, "recall": 0.0, "specificity": 1.0,
        "accuracy": 117 / 125, "pred_voxels": 0, "ref_voxels": 8}
    assert mask_metrics(full, empty, (1, 1, 1)) == {  # 8 false positives among 125 negatives
        "dice": 0.0, "hd95": HD95_ONE_EMPTY, "iou": 0.0, "precision": 0.0, "recall": 0.0, "specificity": 117 / 125,
        "accuracy": 117 / 125, "pred_voxels": 8, "ref_voxels": 0}


def test_zero_one_integer_masks_score_as_boolean_ones():
    """A 0/1 uint8 mask (how a NIfTI mask loads) gives the boolean mask's scores, distances included."""
    from brainseg.lesion_metrics import lesion_wise

    a = box((30, 30, 30), np.s_[5:15, 5:15, 5:15])
    b = box((30, 30, 30), np.s_[8:18, 5:15, 5:15])
    assert hd95(a.astype(np.uint8), b.astype(np.uint8)) == pytest.approx(3.0)
    assert mask_metrics(a.astype(np.uint8), b.astype(np.int16), (1, 1, 1)) == mask_metrics(a, b, (1, 1, 1))
    assert lesion_wise(a.astype(np.uint8), b.astype(np.uint8), (1, 1, 1)) == lesion_wise(a, b, (1, 1, 1))


def test_hd95_takes_the_larger_directed_distance():
    """One voxel against that voxel plus another 20 mm away: from the first nothing is far (0 mm); from the
    second, the surface distances are 0 and 20 mm, whose 95th percentile (linear) is 19 mm."""
    a = box((8, 8, 30), np.s_[4, 4, 5])
    b = a | box((8, 8, 30), np.s_[4, 4, 25])
    assert hd95(a, b) == pytest.approx(19.0)
    assert hd95(b, a) == pytest.approx(19.0)


def _hd95_by_definition(pred, ref, spacing):
    """HD95 as the docstring defines it, by brute force: surface voxels have any of their 26 neighbours
    outside (outside the volume counts as outside); all pairwise distances in mm."""
    from itertools import product

    from scipy.spatial.distance import cdist

    def surface(mask):
        padded = np.pad(mask, 1)
        inside_all = np.ones_like(mask)
        for offset in product((-1, 0, 1), repeat=3):
            inside_all &= padded[tuple(slice(1 + o, 1 + o + n) for o, n in zip(offset, mask.shape))]
        return np.argwhere(mask & ~inside_all) * np.asarray(spacing)

    distances = cdist(surface(pred), surface(ref))
    return max(np.percentile(distances.min(axis=1), 95), np.percentile(distances.min(axis=0), 95))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_matches_its_definition_on_irregular_shapes(seed):
    """Random non-convex blobs, where 6- and 26-neighbour surfaces differ, on an anisotropic grid."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    pred = ndimage.gaussian_filter(rng.random((16, 14, 12)), 1.5) > 0.5
    ref = ndimage.gaussian_filter(rng.random((16, 14, 12)), 1.5) > 0.5
    assert pred.any() and ref.any() and not pred.all()
    spacing = (1.0, 1.5, 2.5)
    assert hd95(pred, ref, spacing) == pytest.approx(_hd95_by_definition(pred, ref, spacing))


def test_hd95_of_shifted_cube_uses_spacing():
    a = box((30, 30, 30), np.s_[5:15, 5:15, 5:15])
    b = box((30, 30, 30), np.s_[8:18, 5:15, 5:15])  # shifted 3 voxels along x
    assert hd95(a, b, (1, 1, 1)) == pytest.approx(3.0)
    assert hd95(a, b, (2, 1, 1)) == pytest.approx(6.0)
    assert hd95(a, a) == 0.0


def test_evaluate_regions_and_label_keys():
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[2:5, 2:5, 2:5] = ED
    ref[3, 3, 3] = ET
    pred = ref.copy()
    pred[3, 3, 3] = NCR  # ET missed, called necrosis: WT and TC unchanged, ET empty
    result = evaluate(pred, ref, (1, 1, 1))
    assert result["regions"]["WT"]["dice"] == 1.0
    assert result["regions"]["TC"]["dice"] == 1.0
    assert result["regions"]["ET"]["dice"] == 0.0
    assert set(result["labels"]) == {"1", "2", "4"}
    # per label, from the data: ref has 26 ED voxels (3x3x3 cube less its centre) + 1 ET voxel;
    # pred has the same 26 ED voxels + 1 NCR voxel at the centre.
    labels = result["labels"]
    # NCR (file 1): predicted once, absent from ref -> no overlap, one mask empty
    assert labels["1"]["dice"] == 0.0
    assert (labels["1"]["pred_voxels"], labels["1"]["ref_voxels"]) == (1, 0)
    assert labels["1"]["hd95"] == HD95_ONE_EMPTY
    # ED (file 2): identical 26-voxel masks -> perfect
    assert labels["2"]["dice"] == 1.0 and labels["2"]["hd95"] == 0.0
    assert labels["2"]["pred_voxels"] == labels["2"]["ref_voxels"] == 26
    # ET (file 4 in brats2018, internal 3): in ref once, never predicted. Comparing masks by the
    # file value 4 instead would find both empty and score dice 1.
    assert labels["4"]["dice"] == 0.0
    assert (labels["4"]["pred_voxels"], labels["4"]["ref_voxels"]) == (0, 1)
    assert labels["4"]["hd95"] == HD95_ONE_EMPTY
    labels_2023 = evaluate(pred, ref, (1, 1, 1), "brats2023")["labels"]
    assert set(labels_2023) == {"1", "2", "3"}
    # brats2023 only renames ET's key to 3; the values are those of the internal labels above
    assert labels_2023["3"]["dice"] == 0.0
    assert (labels_2023["3"]["pred_voxels"], labels_2023["3"]["ref_voxels"]) == (0, 1)
    assert labels_2023["1"]["dice"] == 0.0 and labels_2023["1"]["pred_voxels"] == 1
    assert labels_2023["2"]["dice"] == 1.0 and labels_2023["2"]["ref_voxels"] == 26


def test_volume_stats_in_ml_from_spacing():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[:2, :5, :1] = NCR  # 10 voxels
    labels[5:, :, :2] = ED  # 100 voxels
    labels[9, 9, 9] = ET
    stats = volume_stats(labels, (1.0, 2.0, 3.0), brain_voxels=500)
    assert stats["labels"]["1"]["voxels"] == 10
    assert stats["labels"]["1"]["ml"] == pytest.approx(0.06)  # 10 x 6 mm3
    assert stats["regions"]["WT"]["voxels"] == 10 + 100 + 1
    assert stats["regions"]["TC"]["voxels"] == 11
    assert stats["regions"]["ET"]["brain_percent"] == pytest.approx(0.2)


def test_slice_stats_counts_labels_per_slice():
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[1, :2, :3] = ED
    rows = slice_stats(labels, axis=0)
    assert rows.shape == (4, 4)
    assert rows[1, ED] == 6 and rows[0, ED] == 0 and rows[1].sum() == 30
