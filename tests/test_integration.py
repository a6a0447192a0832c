"""End to end on real BraTS cases with the shipped checkpoint: geometry, labels and quality."""
import json

import nibabel as nib
import numpy as np
import pytest

from brainseg.checkpoint import default_checkpoint, load_checkpoint
from brainseg.cli import main
from brainseg.io import load_case
from brainseg.labels import region_masks, to_internal
from brainseg.metrics import dice
from conftest import BRATS, SAMPLE_2023, needs_data

VALIDATION_CASE = "Brats18_CBICA_AME_1"  # in the shipped model's validation split, never trained on

pytestmark = [needs_data(), pytest.mark.skipif(not default_checkpoint().exists(), reason="no shipped checkpoint")]


@pytest.fixture(scope="module")
def segmented(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("seg")
    out = out_dir / "seg.nii.gz"
    assert main(["segment", str(BRATS / VALIDATION_CASE), "-o", str(out), "--stats", str(out_dir / "s.json"), "--no-progress"]) == 0
    return out, json.loads((out_dir / "s.json").read_text())


def test_output_lies_on_the_input_grid(segmented):
    out, _ = segmented
    ref = nib.load(BRATS / VALIDATION_CASE / f"{VALIDATION_CASE}_flair.nii.gz")
    seg = nib.load(out)
    assert seg.shape == ref.shape
    np.testing.assert_array_equal(seg.affine, ref.affine)
    np.testing.assert_array_equal(seg.header.get_zooms(), ref.header.get_zooms())
    assert set(np.unique(np.asarray(seg.dataobj)).tolist()) <= {0, 1, 2, 4}


def test_quality_on_a_validation_case(segmented):
    out, stats = segmented
    pred = to_internal(np.asarray(nib.load(out).dataobj), "brats2018")
    ref = to_internal(np.asarray(nib.load(BRATS / VALIDATION_CASE / f"{VALIDATION_CASE}_seg.nii.gz").dataobj), "brats2018")
    p, r = region_masks(pred), region_masks(ref)
    # the shipped model's card reports this case; a broken pipeline (flipped axes, shifted paste,
    # wrong labels) scores near 0
    assert dice(p["WT"], r["WT"]) > 0.8
    assert dice(p["TC"], r["TC"]) > 0.6
    assert stats["bias_corrected"] == ["flair", "t1", "t1ce", "t2"]  # the shipped checkpoint's N4 default, as its card reports
    assert stats["regions"]["WT"]["voxels"] == int(p["WT"].sum())
    assert stats["regions"]["WT"]["ml"] == pytest.approx(p["WT"].sum() / 1000, abs=1e-3)


def test_ras_copy_gives_the_mirrored_result(tmp_path, segmented):
    """The same scan stored RAS must give the same segmentation, stored RAS."""
    out, _ = segmented
    case_dir = BRATS / VALIDATION_CASE
    (tmp_path / "ras").mkdir()
    for m in ("flair", "t1", "t1ce", "t2"):
        img = nib.load(case_dir / f"{VALIDATION_CASE}_{m}.nii.gz")
        data = np.asarray(img.dataobj)[::-1, ::-1].copy()
        flip = np.diag([-1.0, -1.0, 1.0, 1.0])
        flip[0, 3], flip[1, 3] = data.shape[0] - 1, data.shape[1] - 1
        nib.save(nib.Nifti1Image(data, img.affine @ flip), tmp_path / "ras" / f"case_{m}.nii")  # uncompressed too
    ras_out = tmp_path / "ras_seg.nii.gz"
    assert main(["segment", str(tmp_path / "ras"), "-o", str(ras_out), "--no-progress"]) == 0
    ras = nib.load(ras_out)
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")
    lps = np.asarray(nib.load(out).dataobj)
    mirrored = np.asarray(ras.dataobj)[::-1, ::-1]
    assert dice(mirrored > 0, lps > 0) > 0.99


def test_the_case_saved_as_nrrd_gives_the_same_label_map_lying_where_the_nrrd_scans_lie(tmp_path, segmented):
    """3D Slicer's format: the four scans as gzip-compressed .nrrd files (SimpleITK's own conversion) give the
    NIfTI folder's label map voxel for voxel, and it overlays the NRRD scans (their origin, spacing, directions)."""
    import SimpleITK as sitk

    from conftest import itk_copy

    out, _ = segmented
    for m in ("flair", "t1", "t1ce", "t2"):
        itk_copy(BRATS / VALIDATION_CASE / f"{VALIDATION_CASE}_{m}.nii.gz", tmp_path / "nrrd" / f"{VALIDATION_CASE}_{m}.nrrd")
    nrrd_out = tmp_path / "nrrd_seg.nii.gz"
    assert main(["segment", str(tmp_path / "nrrd"), "-o", str(nrrd_out), "--no-progress"]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(nrrd_out).dataobj), np.asarray(nib.load(out).dataobj))
    scan = sitk.ReadImage(str(tmp_path / "nrrd" / f"{VALIDATION_CASE}_flair.nrrd"))
    labels = sitk.ReadImage(str(nrrd_out))
    assert labels.GetSize() == scan.GetSize()
    for what in ("GetOrigin", "GetSpacing", "GetDirection"):
        np.testing.assert_allclose(getattr(labels, what)(), getattr(scan, what)(), atol=1e-6)


def test_volume_smaller_than_the_patch(tmp_path):
    case = load_case([BRATS / VALIDATION_CASE])
    (tmp_path / "small").mkdir()
    for m, image in case.images.items():
        crop = image[60:140, 50:130, 40:100]  # 80x80x60 mm around the tumour
        nib.save(nib.Nifti1Image(crop, case.affine), tmp_path / "small" / f"c_{m}.nii.gz")
    out = tmp_path / "small_seg.nii.gz"
    assert main(["segment", str(tmp_path / "small"), "-o", str(out), "--patch-size", "128", "128", "64", "--no-progress"]) == 0
    seg = nib.load(out)
    assert seg.shape == (80, 80, 60)
    # the one padded window still finds the tumour the crop holds (29 mL of the expert WT; measured
    # Dice 0.85 with the shipped features-24-320 model, 0.65 with the previous 16-256 one)
    truth = np.asarray(nib.load(BRATS / VALIDATION_CASE / f"{VALIDATION_CASE}_seg.nii.gz").dataobj)[60:140, 50:130, 40:100]
    assert dice(np.asarray(seg.dataobj) > 0, truth > 0) > 0.5


@needs_data(SAMPLE_2023)
def test_2023_names_give_2023_labels(tmp_path):
    out = tmp_path / "s.nii.gz"
    assert main(["segment", str(SAMPLE_2023), "-o", str(out), "--no-progress"]) == 0
    values = set(np.unique(np.asarray(nib.load(out).dataobj)).tolist())
    assert values <= {0, 1, 2, 3} and 3 in values


def test_checkpoint_carries_its_provenance():
    loaded = load_checkpoint(default_checkpoint())
    assert VALIDATION_CASE in loaded.provenance["validation_cases"]
    assert VALIDATION_CASE not in loaded.provenance["train_cases"]


def test_anisotropic_thick_slices_are_resampled_and_returned_on_their_grid(tmp_path):
    """A clinical-style 1x1x3 mm scan: every third axial slice of a real case."""
    case = load_case([BRATS / VALIDATION_CASE])
    thick = case.affine.copy()
    thick[:3, 2] *= 3
    (tmp_path / "thick").mkdir()
    for m, image in case.images.items():
        nib.save(nib.Nifti1Image(image[:, :, ::3], thick), tmp_path / "thick" / f"c_{m}.nii.gz")
    out = tmp_path / "thick_seg.nii.gz"
    assert main(["segment", str(tmp_path / "thick"), "-o", str(out), "--no-progress"]) == 0
    seg = nib.load(out)
    assert seg.shape == (240, 240, 52)
    np.testing.assert_allclose(seg.affine, thick)
    ref = to_internal(np.asarray(nib.load(BRATS / VALIDATION_CASE / f"{VALIDATION_CASE}_seg.nii.gz").dataobj), "brats2018")[:, :, ::3]
    pred = to_internal(np.asarray(seg.dataobj), "brats2018")
    assert dice(region_masks(pred)["WT"], region_masks(ref)["WT"]) > 0.75
