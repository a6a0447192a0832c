import nibabel as nib
import numpy as np
import pytest
import torch

from brainseg.config import PreprocessConfig
from brainseg.io import Case
from brainseg.preprocess import brain_box, orientation_transform, paste, prepare, reorient, unreorient, zscore
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


def test_prepare_halves_1mm_to_2mm_and_paste_restores_grid():
    images = synthetic_images((40, 44, 36))
    case = Case(images, LPS)
    prepared = prepare(case, PreprocessConfig(spacing=(2.0, 2.0, 2.0), crop_margin=0))
    box_shape = prepared.geometry.box_shape
    assert tuple(prepared.image.shape[1:]) == tuple(round(s / 2) for s in box_shape)
    # channel means inside the brain are ~0 after z-scoring
    assert abs(float(prepared.image[0][prepared.image[0] != 0].mean())) < 0.1
    box_ones = np.ones(box_shape, np.uint8)
    full = paste(box_ones, prepared.geometry)
    assert full.shape == case.shape
    assert full.sum() == np.prod(box_shape)
    # the pasted box is exactly the brain's bounding box in the input grid
    brain = images["flair"] != 0
    assert not (brain & (full == 0)).any()


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
