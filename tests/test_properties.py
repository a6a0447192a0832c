"""Property-based tests (hypothesis): NIfTI loading, window stitching, label conventions, geometry.

Each property is checked on generated inputs against an answer known by construction: the array
and matrix that were written, the input + 1 of an identity predictor, the original label map.
"""
from __future__ import annotations

import gzip
import itertools

import nibabel as nib
import nibabel.orientations as nio
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brainseg import MODALITIES
from brainseg.config import PreprocessConfig
from brainseg.decode import read_volume
from brainseg.errors import InputError
from brainseg.inference import sliding_window
from brainseg.io import Case
from brainseg.labelmaps import labels_bytes, save_labels
from brainseg.labels import CONVENTIONS, from_internal, to_internal
from brainseg.preprocess import orientation_transform, paste, prepare, reorient, to_box, unreorient

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# every axis permutation with every combination of flips: the 48 orientations of a voxel grid
ORIENTATIONS = [(perm, flips) for perm in itertools.permutations(range(3)) for flips in itertools.product((1, -1), repeat=3)]


def orientation_affine(perm, flips, zooms=(1.0, 1.0, 1.0), offset=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Voxel-to-world matrix whose voxel axis i runs along world axis perm[i], flipped where -1."""
    affine = np.zeros((4, 4))
    for axis, (world, flip) in enumerate(zip(perm, flips)):
        affine[world, axis] = flip * zooms[axis]
    affine[:3, 3] = offset
    affine[3, 3] = 1.0
    return affine


@st.composite
def affines(draw) -> np.ndarray:
    """RAS, LPS, any of the 48 orientations, or oblique; zooms 0.5-5 mm; any origin."""
    zooms = [draw(st.floats(0.5, 5.0)) for _ in range(3)]
    offset = [draw(st.floats(-200.0, 200.0)) for _ in range(3)]
    kind = draw(st.sampled_from(["ras", "lps", "any", "oblique"]))
    if kind == "oblique":
        angles = [draw(st.floats(-0.6, 0.6)) for _ in range(3)]
        rotation = np.eye(3)
        for axis, angle in enumerate(angles):
            c, s = np.cos(angle), np.sin(angle)
            a, b = [i for i in range(3) if i != axis]
            r = np.eye(3)
            r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
            rotation = rotation @ r
        affine = np.eye(4)
        affine[:3, :3] = rotation @ np.diag(zooms)
        affine[:3, 3] = offset
        return affine
    perm, flips = {"ras": ((0, 1, 2), (1, 1, 1)), "lps": ((0, 1, 2), (-1, -1, 1))}.get(kind) or draw(st.sampled_from(ORIENTATIONS))
    return orientation_affine(perm, flips, zooms, offset)


shapes = st.tuples(st.integers(2, 11), st.integers(2, 11), st.integers(2, 11))
DTYPES = [np.uint8, np.int16, np.int32, np.float32, np.float64]


@SETTINGS
@given(
    shape=shapes,
    affine=affines(),
    dtype=st.sampled_from(DTYPES),
    gz=st.booleans(),
    klass=st.sampled_from([nib.Nifti1Image, nib.Nifti2Image]),
    seed=st.integers(0, 2**16),
)
def test_nifti_round_trip(tmp_path, shape, affine, dtype, gz, klass, seed):
    """What was written is read back: values (float32, or the stored 8/16-bit integers), affine; and labels
    are saved on that grid."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    data = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype) if info else rng.normal(0, 1e3, shape).astype(dtype)
    image = klass(data, affine)
    image.set_data_dtype(dtype)
    raw = image.to_bytes()
    name = "scan_t1.nii.gz" if gz else "scan_t1.nii"
    array, read_affine, header = read_volume(gzip.compress(raw) if gz else raw, name)
    small_integers = np.issubdtype(dtype, np.integer) and np.dtype(dtype).itemsize <= 2
    assert array.dtype == (np.dtype(dtype) if small_integers else np.float32) and array.shape == shape
    np.testing.assert_array_equal(array, data if small_integers else data.astype(np.float32))
    stored = klass.from_bytes(raw).affine  # the header holds float32 (NIfTI-1) or float64 (NIfTI-2) matrices
    np.testing.assert_array_equal(read_affine, stored)
    np.testing.assert_allclose(read_affine, affine, atol=1e-4 * max(1.0, np.abs(affine).max()))

    labels = rng.integers(0, 4, shape).astype(np.uint8)
    case = Case({"t1": array}, read_affine, header)
    out = save_labels(labels, case, tmp_path / f"labels_{seed}.nii.gz", "brats2023")
    written = nib.load(out)
    np.testing.assert_array_equal(np.asarray(written.dataobj), labels)  # 2023 values are the internal ones
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(written.affine, read_affine)
    for key in ("qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d", "qoffset_x", "srow_x", "srow_y", "srow_z", "pixdim"):
        np.testing.assert_array_equal(written.header[key], header[key], err_msg=key)


@SETTINGS
@given(
    shape=st.tuples(*[st.integers(1, 20).map(lambda n: 2 * n - 1)] * 3),
    patch=st.tuples(*[st.integers(1, 24)] * 3),
    overlap=st.floats(0.0, 0.9, exclude_max=True),
    channels=st.integers(1, 3),
    batch_size=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_sliding_window_identity_predictor(shape, patch, overlap, channels, batch_size, seed):
    """An identity (+1) predictor gives the input + 1 back everywhere: every voxel is covered."""
    image = torch.from_numpy(np.random.default_rng(seed).normal(0, 10, (channels,) + shape).astype(np.float32))
    calls = []

    def progress(done, total):
        calls.append((done, total))

    out = sliding_window(lambda x: x + 1, image, patch, overlap, batch_size, progress)
    assert out.shape == image.shape
    torch.testing.assert_close(out, image + 1, atol=1e-5, rtol=1e-5)
    assert calls and calls[-1][0] == calls[-1][1]


@SETTINGS
@given(
    convention=st.sampled_from(sorted(CONVENTIONS)),
    shape=shapes,
    seed=st.integers(0, 2**16),
)
def test_label_conventions_round_trip(convention, shape, seed):
    internal = np.random.default_rng(seed).integers(0, 4, shape).astype(np.uint8)
    file_values = from_internal(internal, convention)
    assert set(np.unique(file_values).tolist()) <= set(CONVENTIONS[convention].values())
    np.testing.assert_array_equal(to_internal(file_values, convention), internal)
    np.testing.assert_array_equal(from_internal(to_internal(file_values, convention), convention), file_values)
    et = file_values[internal == 3]
    assert np.all(et == (4 if convention == "brats2018" else 3))


@SETTINGS
@given(
    convention=st.sampled_from(sorted(CONVENTIONS)),
    bad=st.integers(-1000, 1000),
    seed=st.integers(0, 2**16),
)
def test_unexpected_label_values_are_refused(convention, bad, seed):
    allowed = set(CONVENTIONS[convention].values())
    if bad in allowed:
        bad = 5 + abs(bad)
    labels = from_internal(np.random.default_rng(seed).integers(0, 4, (5, 6, 7)).astype(np.uint8), convention).astype(np.int32)
    labels[2, 3, 4] = bad
    with pytest.raises(InputError) as refused:
        to_internal(labels, convention, source="ref_seg.nii.gz")
    assert str(refused.value).startswith("ref_seg.nii.gz: unexpected label values")
    assert str(bad) in str(refused.value)


@pytest.mark.parametrize("perm, flips", ORIENTATIONS, ids=[f"{p}{f}" for p, f in ORIENTATIONS])
@pytest.mark.parametrize("target", ["LPS", "RAS"])
def test_reorient_round_trip_in_all_48_orientations(perm, flips, target):
    """Reorientation lands on ``target`` axes, keeps every voxel at its world position, and undoes."""
    shape = (5, 6, 7)
    array = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    affine = orientation_affine(perm, flips, zooms=(1.0, 2.0, 3.0), offset=(10.0, -20.0, 30.0))
    transform = orientation_transform(affine, target)
    moved = reorient(array, transform)
    moved_affine = affine @ nio.inv_ornt_aff(transform, shape)
    assert "".join(nio.aff2axcodes(moved_affine)) == target
    for index in [(0, 0, 0), (4, 5, 6), (1, 3, 2), (4, 0, 6)]:
        world = affine @ (*index, 1.0)
        moved_index = np.linalg.solve(moved_affine, world)[:3]
        assert np.allclose(moved_index, np.round(moved_index))
        assert moved[tuple(int(i) for i in np.round(moved_index))] == array[index]
    np.testing.assert_array_equal(unreorient(moved, transform), array)


@st.composite
def cases(draw, zooms=None) -> Case:
    """A four-modality case in any orientation with a brain box somewhere inside the grid."""
    shape = draw(st.tuples(st.integers(6, 16), st.integers(6, 16), st.integers(6, 16)))
    perm, flips = draw(st.sampled_from(ORIENTATIONS))
    zooms = zooms or tuple(draw(st.sampled_from([1.0, 1.5, 2.0, 3.0])) for _ in range(3))
    lo = [draw(st.integers(0, s - 3)) for s in shape]
    hi = [draw(st.integers(l + 2, s)) for l, s in zip(lo, shape)]
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    images = {}
    for m in MODALITIES:
        array = np.zeros(shape, np.float32)
        box = tuple(slice(l, h) for l, h in zip(lo, hi))
        array[box] = rng.uniform(10, 100, array[box].shape)
        images[m] = array
    return Case(images, orientation_affine(perm, flips, zooms, (5.0, 6.0, 7.0)))


@SETTINGS
@given(case=cases(), margin=st.integers(0, 3), spacing=st.sampled_from([1.0, 2.0, 3.5]))
def test_prepare_then_paste_restores_the_input_grid(case, margin, spacing):
    config = PreprocessConfig(spacing=(spacing,) * 3, crop_margin=margin)
    prepared = prepare(case, config)
    geometry = prepared.geometry
    brain = case.images["flair"] != 0
    assert prepared.brain_voxels == int(brain.sum())
    assert tuple(prepared.image.shape) == (4,) + tuple(geometry.model_shape)

    # the brain box, cut from the reoriented input, goes back to exactly where it came from
    for volume in (case.images["t1"], brain.astype(np.uint8)):
        boxed = np.ascontiguousarray(reorient(volume, geometry.transform)[geometry.box])
        np.testing.assert_array_equal(paste(boxed, geometry), volume)
    stacked = np.stack([reorient(case.images[m], geometry.transform)[geometry.box] for m in MODALITIES])
    np.testing.assert_array_equal(paste(np.ascontiguousarray(stacked), geometry), case.stacked())

    # a model-grid prediction comes back on the box grid, then on the input grid
    back = to_box(prepared.image, geometry)
    assert tuple(back.shape) == (4,) + geometry.box_shape
    assert paste(back.numpy(), geometry).shape == (4,) + case.shape


@SETTINGS
@given(case=cases(zooms=(2.0, 2.0, 2.0)), margin=st.integers(0, 3))
def test_prepare_at_the_model_spacing_gives_each_voxel_its_z_score(case, margin):
    """No resampling needed: the model input, pasted back, is each voxel's z-score in place."""
    prepared = prepare(case, PreprocessConfig(spacing=(2.0, 2.0, 2.0), crop_margin=margin))
    assert tuple(prepared.geometry.model_shape) == prepared.geometry.box_shape
    full = paste(to_box(prepared.image, prepared.geometry).numpy(), prepared.geometry)
    brain = case.images["flair"] != 0
    for channel, modality in enumerate(MODALITIES):
        values = case.images[modality][brain].astype(np.float64)
        expected = np.zeros(case.shape)
        expected[brain] = (values - values.mean()) / values.std()
        np.testing.assert_allclose(full[channel], expected, atol=1e-4)


def test_labels_bytes_is_the_saved_file(tmp_path):
    """The download and the file on disk hold the same image."""
    affine = orientation_affine((1, 0, 2), (-1, 1, 1), (1.0, 1.0, 2.0))
    case = Case({"t1": np.ones((4, 5, 6), np.float32)}, affine, nib.Nifti1Image(np.ones((4, 5, 6), np.float32), affine).header)
    labels = np.random.default_rng(0).integers(0, 4, (4, 5, 6)).astype(np.uint8)
    from_bytes = nib.Nifti1Image.from_bytes(gzip.decompress(labels_bytes(labels, case, "msd")))
    from_file = nib.load(save_labels(labels, case, tmp_path / "x.nii.gz", "msd"))
    np.testing.assert_array_equal(np.asarray(from_bytes.dataobj), np.asarray(from_file.dataobj))
    np.testing.assert_array_equal(from_bytes.affine, from_file.affine)
