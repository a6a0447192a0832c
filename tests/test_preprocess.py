import nibabel as nib
import numpy as np
import pytest
import torch

from brainseg.config import PreprocessConfig
from brainseg.io import Case
from brainseg.preprocess import Geometry, brain_box, downsample, orientation_transform, paste, prepare, reorient, unreorient, zscore
from conftest import LPS, synthetic_images


def ras_copy(images, affine):
    """The same scan stored RAS: x and y flipped, affine adjusted so world positions match."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    shape = next(iter(images.values())).shape
    flip[0, 3], flip[1, 3] = shape[0] - 1, shape[1] - 1
    return {m: v[::-1, ::-1].copy() for m, v in images.items()}, affine @ flip


def test_reorient_round_trip_any_axes():
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    affine = np.array([[0, 0, 2.0, 0], [-1.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 0, 1]])
    t = orientation_transform(affine, "LPS")
    moved = reorient(array, t)
    assert moved.shape == (4, 2, 3)  # L-R axis is input k, A-P is i, S-I is j
    np.testing.assert_array_equal(unreorient(moved, t), array)


def test_zscore_inside_mask_only():
    image = np.array([[[0, 2, 4, 0]]], np.float32)
    out = zscore(image, image > 0)
    np.testing.assert_allclose(out, [[[0, -1, 1, 0]]])


def test_brain_box_with_margin_clipped():
    mask = np.zeros((10, 10, 10), bool)
    mask[3:5, 0:2, 8:10] = True
    assert brain_box(mask, 1) == (slice(2, 6), slice(0, 3), slice(7, 10))


# The synthetic brain of shape (40, 44, 36) (the same in every modality) spans, from np.nonzero,
# x 3..36, y 3..40, z 2..33 (inclusive); LPS input is already in model orientation, so the box is in
# input coordinates. Margin m grows each side by m, clipped to [0, size):
#   m=0: 3:37, 3:41, 2:34;  m=2: 1:39, 1:43, 0:36 (reaches every z edge exactly);
#   m=3: 0:40, 0:44, 0:36 (z clipped on both sides: -1 -> 0 and 37 -> 36).
@pytest.mark.parametrize("margin,expected_box", [
    (0, ((3, 37), (3, 41), (2, 34))),
    (2, ((1, 39), (1, 43), (0, 36))),  # the default crop_margin
    (3, ((0, 40), (0, 44), (0, 36))),
])
def test_prepare_halves_1mm_to_2mm_and_paste_restores_grid(margin, expected_box):
    images = synthetic_images((40, 44, 36))
    case = Case(images, LPS)
    brain = images["flair"] != 0
    nonzero = [(int(i.min()), int(i.max())) for i in np.nonzero(brain)]
    assert nonzero == [(3, 36), (3, 40), (2, 33)]  # the data the expected boxes above come from
    assert all((images[m] != 0).sum() == brain.sum() for m in images)  # every modality: the same brain
    config = PreprocessConfig(spacing=(2.0, 2.0, 2.0), crop_margin=margin)
    if margin == 2:
        assert PreprocessConfig().crop_margin == 2
    prepared = prepare(case, config)
    assert tuple((s.start, s.stop) for s in prepared.geometry.box) == expected_box
    box_shape = prepared.geometry.box_shape
    assert tuple(prepared.image.shape[1:]) == tuple(round(s / 2) for s in box_shape)
    # channel means inside the brain are ~0 after z-scoring
    assert abs(float(prepared.image[0][prepared.image[0] != 0].mean())) < 0.1
    box_ones = np.ones(box_shape, np.uint8)
    full = paste(box_ones, prepared.geometry)
    assert full.shape == case.shape
    assert full.sum() == np.prod(box_shape)
    # the pasted box is exactly the brain's bounding box (grown by the margin) in the input grid
    assert not (brain & (full == 0)).any()
    expected_full = np.zeros(case.shape, np.uint8)
    expected_full[tuple(slice(a, b) for a, b in expected_box)] = 1
    np.testing.assert_array_equal(full, expected_full)


def test_lps_and_ras_copies_give_the_same_model_input():
    images = synthetic_images((30, 34, 28))
    ras_images, ras_affine = ras_copy(images, LPS)
    assert nib.aff2axcodes(ras_affine) == ("R", "A", "S")
    config = PreprocessConfig()
    a = prepare(Case(images, LPS), config)
    b = prepare(Case(ras_images, ras_affine), config)
    torch.testing.assert_close(a.image, b.image)
    labels = (a.image[0] > 0.5).numpy().astype(np.uint8)
    from brainseg.preprocess import to_box
    box_a = (to_box(torch.from_numpy(labels[None]).float(), a.geometry)[0] > 0.5).numpy().astype(np.uint8)
    full_a = paste(box_a, a.geometry)
    full_b = paste(box_a, b.geometry)
    np.testing.assert_array_equal(full_b, full_a[::-1, ::-1])


def test_post_processing_measures_distance_in_the_reoriented_boxs_millimetres(tmp_path, tiny_checkpoint, monkeypatch):
    """Stored S, L, P with 3, 1, 2 mm voxels: after reorienting to LPS the box's voxels are 1 x 2 x 3 mm,
    and that is the spacing the distance rule must use."""
    from brainseg import pipeline
    from brainseg.checkpoint import load_checkpoint
    from brainseg.io import load_case
    from conftest import write_case

    permuted = np.array([[0.0, -1.0, 0, 0], [0, 0, -2.0, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]])
    write_case(tmp_path / "case", affine=permuted, shape=(36, 40, 44))
    case = load_case([tmp_path / "case"])
    assert case.spacing == (3.0, 1.0, 2.0)
    assert prepare(case, PreprocessConfig()).geometry.spacing == (1.0, 2.0, 3.0)
    seen = []
    real = pipeline.clean_labels
    monkeypatch.setattr(pipeline, "clean_labels", lambda labels, *args: seen.append(args) or real(labels, *args))
    pipeline.segment_case(case, load_checkpoint(tiny_checkpoint))
    assert seen == [(0, 0, 10.0, (1.0, 2.0, 3.0), 50)]  # min component, ET rule, distance, spacing, core pieces


@pytest.mark.parametrize("fine, share", [(0.5, 0.25), (0.5, 0.75), (2 / 3, 1 / 3)])
def test_scans_finer_than_half_the_model_spacing_are_averaged_not_skipped(fine, share):
    """Going from 0.5 mm to 2 mm, a quarter of each block filled reads a quarter: trilinear alone
    reads two of every four slices (0 or 1 here). 1 mm to 2 mm stays the exact two-voxel average."""
    ratio = round(2 / fine)
    n = 24 * ratio
    slab = np.zeros((1, 8, 8, n), np.float32)
    filled = round(share * ratio)
    for k in range(filled):  # the same slices of every block
        slab[..., k::ratio] = 1
    geometry = Geometry(np.array([[0, 1], [1, 1], [2, 1]]), slab.shape[1:], (slice(0, 8),) * 2 + (slice(0, n),),
                        (8, 8, 24), (2.0, 2.0, fine), (2.0, 2.0, 2.0))
    out = downsample(torch.from_numpy(slab), geometry)[0, 4, 4, 2:-2].numpy()  # away from the ends
    np.testing.assert_allclose(out, filled / ratio, atol=1e-6)
    geometry = Geometry(geometry.transform, (8, 8, 48), (slice(0, 8),) * 2 + (slice(0, 48),), (8, 8, 24), (2.0, 2.0, 1.0),
                        (2.0, 2.0, 2.0))
    ramp = torch.arange(48, dtype=torch.float32).expand(1, 8, 8, 48).contiguous()
    np.testing.assert_allclose(downsample(ramp, geometry)[0, 0, 0].numpy(), np.arange(24) * 2 + 0.5, atol=1e-5)


def test_one_millimetre_voxels_written_with_float_noise_stay_on_the_trilinear_path():
    """A 1 mm affine stored as 0.99999994 mm (float32) gives the model exactly what 1 mm gives."""
    images = synthetic_images()
    noisy = LPS.copy()
    noisy[:3, :3] *= np.float32(0.99999994)
    exact, off = (prepare(Case(images, a), PreprocessConfig()).image for a in (LPS, noisy))
    assert torch.equal(exact, off)


@pytest.mark.parametrize("scale", [1e20, 1e-30])
def test_zscore_gives_the_same_result_at_any_intensity_scale(scale):
    """A scan stored with extreme but finite intensities is the same scan: float32 sums of squares would
    overflow (1e20) or fall under a fixed floor (1e-30) and blank it."""
    image = synthetic_images()["flair"]
    mask = image != 0
    expected = zscore(image, mask)
    np.testing.assert_allclose(zscore(image * np.float32(scale), mask), expected, atol=1e-4)
    assert expected[mask].std() == pytest.approx(1.0, abs=1e-4)
