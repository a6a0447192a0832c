import numpy as np

from brainseg.labels import ED, ET, NCR
from brainseg.postprocess import clean_labels, remove_small_components


def test_small_components_removed_on_a_copy():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:8, 2:8, 2:8] = ED  # 216 voxels
    labels[4, 4, 4] = ET
    labels[15:17, 15:17, 15] = NCR  # 4 voxels, separate
    out = clean_labels(labels, min_component_voxels=10)
    assert out[15:17, 15:17, 15].max() == 0
    assert (out[2:8, 2:8, 2:8] == labels[2:8, 2:8, 2:8]).all()
    assert labels[15, 15, 15] == NCR  # input untouched


def test_diagonal_neighbours_are_one_component():
    mask = np.zeros((5, 5, 5), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = mask[2, 2, 2] = True
    assert remove_small_components(mask, 3).sum() == 3
    assert remove_small_components(mask, 4).sum() == 0


def test_small_et_becomes_necrosis():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:6, 2:6, 2:6] = ED
    labels[3, 3, 3:5] = ET
    out = clean_labels(labels, min_et_voxels=5)
    assert (out == ET).sum() == 0 and out[3, 3, 3] == NCR
    assert (clean_labels(labels, min_et_voxels=2) == ET).sum() == 2


def _two_blobs(gap: int) -> np.ndarray:
    """A 6x6x6 blob (216 voxels) and a 3x3x3 blob (27) on one row, ``gap`` empty voxels apart."""
    mask = np.zeros((40, 12, 12), bool)
    mask[2:8, 3:9, 3:9] = True
    mask[8 + gap:11 + gap, 4:7, 4:7] = True
    return mask


def test_distant_components_go_and_near_ones_stay():
    from brainseg.postprocess import remove_distant_components

    mask = _two_blobs(gap=8)  # nearest voxels at x = 7 and x = 16: 9 mm apart at 1 mm spacing
    assert remove_distant_components(mask, 9.0, (1, 1, 1)).sum() == 216 + 27
    assert remove_distant_components(mask, 8.9, (1, 1, 1)).sum() == 216  # the smaller one goes
    assert remove_distant_components(mask, 0.0, (1, 1, 1)).sum() == 216 + 27  # 0: off
    # the same voxels 2 mm apart along x: 18 mm
    assert remove_distant_components(mask, 10.0, (2, 1, 1)).sum() == 216
    assert remove_distant_components(mask, 18.0, (2, 1, 1)).sum() == 216 + 27
    assert remove_distant_components(mask, 10.0, (1, 2, 2)).sum() == 216 + 27  # y and z do not lengthen it


def test_the_largest_component_is_the_anchor_wherever_it_lies():
    from brainseg.postprocess import remove_distant_components

    mask = _two_blobs(gap=20)[::-1].copy()  # the small blob first along x
    kept = remove_distant_components(mask, 10.0, (1, 1, 1))
    assert kept.sum() == 216 and kept[::-1][2:8, 3:9, 3:9].all()


def test_clean_labels_removes_distant_tumour_with_all_its_labels():
    labels = np.zeros((40, 12, 12), np.uint8)
    labels[_two_blobs(gap=20)] = ED
    labels[29, 5, 5] = ET  # inside the distant blob
    labels[4, 5, 5] = NCR  # inside the main one
    out = clean_labels(labels, max_component_distance_mm=10.0)
    assert out[28:31].max() == 0
    assert (out[2:8] == labels[2:8]).all()
    assert (clean_labels(labels, max_component_distance_mm=25.0) == labels).all()


def test_both_rules_together_match_them_in_turn():
    labels = np.zeros((40, 12, 12), np.uint8)
    labels[_two_blobs(gap=20)] = ED  # 216 voxels at x 2-7, 27 at x 28-30
    labels[9, 1, 1] = ET  # one voxel about 3.5 mm from the large blob
    both = clean_labels(labels, min_component_voxels=10, max_component_distance_mm=10.0)
    assert (both > 0).sum() == 216 and (both[2:8] == labels[2:8]).all()
    in_turn = clean_labels(clean_labels(labels, min_component_voxels=10), max_component_distance_mm=10.0)
    assert (both == in_turn).all()
    assert (clean_labels(labels, min_component_voxels=10, max_component_distance_mm=25.0) > 0).sum() == 216 + 27
    assert clean_labels(labels, min_component_voxels=300, max_component_distance_mm=10.0).max() == 0  # all small


def test_small_core_and_enhancing_pieces_are_absorbed_but_each_region_keeps_its_largest():
    labels = np.zeros((30, 30, 30), dtype=np.uint8)
    labels[2:20, 2:20, 2:20] = ED
    labels[5:10, 5:10, 5:10] = NCR  # the tumour core: 125 voxels
    labels[6:8, 6:8, 6:8] = ET  # 8 voxels: small, but the largest ET piece
    labels[9, 9, 9] = ET  # a 1-voxel ET speck two voxels from it, inside the core
    labels[15:17, 15:17, 15:17] = NCR  # an 8-voxel core piece in the edema
    cleaned = clean_labels(labels, min_core_component_voxels=10)
    assert cleaned[9, 9, 9] == NCR  # the speck joins the core around it
    assert (cleaned[15:17, 15:17, 15:17] == ED).all()  # the small core piece becomes edema
    assert (cleaned[6:8, 6:8, 6:8] == ET).all()  # the largest ET piece stays, however small
    changed = cleaned != labels
    assert changed.sum() == 1 + 8 and (cleaned > 0).sum() == (labels > 0).sum()  # relabelled, not removed
    np.testing.assert_array_equal(clean_labels(labels, min_core_component_voxels=0), labels)
    only_speck = np.zeros_like(labels)
    only_speck[3, 3, 3] = ET  # a region that is one speck keeps it
    np.testing.assert_array_equal(clean_labels(only_speck, min_core_component_voxels=10), only_speck)
    # all ET in a small core piece apart from a larger, non-enhancing core: the piece stays, with its ET
    apart = np.zeros((30, 30, 30), dtype=np.uint8)
    apart[2:28, 2:28, 2:28] = ED
    apart[5:11, 5:11, 5:11] = NCR  # 216 voxels of core, no ET
    apart[20:23, 20:23, 20:23] = ET  # 27 voxels: the only ET, a core piece of its own
    cleaned = clean_labels(apart, min_core_component_voxels=50)
    assert (cleaned == ET).sum() == 27 and (cleaned == NCR).sum() == 216
