import numpy as np
import pytest

from brainseg.errors import InputError
from brainseg.labels import from_internal, guess_convention, region_masks, regions_to_labels, to_internal


def test_both_conventions_map_et():
    file_2018 = np.array([0, 1, 2, 4])
    file_2023 = np.array([0, 1, 2, 3])
    np.testing.assert_array_equal(to_internal(file_2018, "brats2018"), [0, 1, 2, 3])
    np.testing.assert_array_equal(to_internal(file_2023, "brats2023"), [0, 1, 2, 3])
    np.testing.assert_array_equal(from_internal(np.array([0, 1, 2, 3], np.uint8), "brats2018"), file_2018)
    assert guess_convention(file_2018) == "brats2018" and guess_convention(file_2023) == "brats2023"


def test_unexpected_label_refused_with_source():
    with pytest.raises(InputError, match=r"ref.nii.gz: unexpected label values \[3\]"):
        to_internal(np.array([0, 3, 4]), "brats2018", "ref.nii.gz")


def test_regions_nest_and_invert():
    labels = np.array([0, 1, 2, 3], np.uint8)
    m = region_masks(labels)
    np.testing.assert_array_equal(m["WT"], [0, 1, 1, 1])
    np.testing.assert_array_equal(m["TC"], [0, 1, 0, 1])
    np.testing.assert_array_equal(m["ET"], [0, 0, 0, 1])
    np.testing.assert_array_equal(regions_to_labels(m["WT"], m["TC"], m["ET"]), labels)
    # ET outside TC/WT is not tumour by the nesting rule
    assert regions_to_labels(np.array([False]), np.array([False]), np.array([True]))[0] == 0


def test_both_3_and_4_refused_naming_the_file():
    with pytest.raises(InputError, match=r"^ref_seg.nii.gz: holds both labels 3 and 4; expected one of them"):
        guess_convention(np.array([0, 3, 4]), "ref_seg.nii.gz")


def test_decathlon_order_swaps_edema_and_core():
    msd = np.array([0, 1, 2, 3])  # MSD Task01: 1 edema, 2 non-enhancing tumour, 3 enhancing
    internal = to_internal(msd, "msd")
    np.testing.assert_array_equal(internal, [0, 2, 1, 3])  # internal: 1 NCR, 2 ED, 3 ET
    np.testing.assert_array_equal(region_masks(internal)["TC"], [0, 0, 1, 1])  # core: non-enhancing + enhancing
    np.testing.assert_array_equal(from_internal(internal, "msd"), msd)


def test_brats2024_resection_cavity_is_not_tumour():
    file_2024 = np.array([0, 1, 2, 3, 4])  # 4: resection cavity
    internal = to_internal(file_2024, "brats2024")
    np.testing.assert_array_equal(internal, [0, 1, 2, 3, 0])
    np.testing.assert_array_equal(region_masks(internal)["WT"], [0, 1, 1, 1, 0])
    with pytest.raises(InputError, match=r"holds both labels 3 and 4.*brats2024"):
        guess_convention(file_2024, "post_seg.nii.gz")
    with pytest.raises(InputError, match=r"x.nii: unexpected label values \[4\]; brats2023 label maps hold only \[0, 1, 2, 3\]"):
        to_internal(file_2024, "brats2023", "x.nii")


def test_maps_that_are_not_internal_labels_are_refused_with_what_to_do():
    from brainseg.metrics import evaluate, volume_stats
    from brainseg.render import label_rgb, overlay

    brats = np.zeros((6, 6, 6), dtype=np.uint8)
    brats[2, 2, 2] = 4  # a BraTS 2018 file's ET, not converted
    calls = [lambda: from_internal(brats, "brats2023"), lambda: evaluate(brats, brats, (1, 1, 1)),
             lambda: volume_stats(brats, (1, 1, 1)), lambda: label_rgb(brats[2]), lambda: overlay(brats[2] * 0, brats[2])]
    for call in calls:
        with pytest.raises(ValueError, match=r"holds the values \[4\]; expected internal labels 0-3 .*labels.to_internal"):
            call()
    with pytest.raises(ValueError, match="float32 values; expected integer internal labels 0-3"):
        from_internal(brats.astype(np.float32), "brats2018")
    np.testing.assert_array_equal(from_internal(to_internal(brats, "brats2018"), "brats2018"), brats)
    with pytest.raises(ValueError, match=r"spacing \(1, 1\): expected one voxel size in mm per axis of the 3D maps"):
        evaluate(brats * 0, brats * 0, (1, 1))
