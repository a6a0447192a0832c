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
