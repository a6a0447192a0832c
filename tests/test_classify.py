"""What a dropped file holds, whatever its name says (brainseg.classify)."""
import nibabel as nib
import numpy as np
import pytest

from brainseg.classify import classify_file
from brainseg.errors import InputError
from conftest import LPS, synthetic_images


def nifti_bytes(array: np.ndarray) -> bytes:
    return nib.Nifti1Image(array, LPS).to_bytes()


def labels() -> np.ndarray:
    out = np.zeros((40, 44, 36), np.uint8)
    out[10:20, 10:20, 10:20] = 2
    out[12:16, 12:16, 12:16] = 4
    return out


def test_files_are_read_as_their_names_say():
    scan = classify_file("case_flair.nii.gz", nifti_bytes(synthetic_images()["flair"]))
    assert (scan.kind, scan.modality, scan.misnamed, scan.error) == ("scan", "flair", False, None)
    seg = classify_file("case_seg.nii.gz", nifti_bytes(labels()))
    assert (seg.kind, seg.modality, seg.misnamed) == ("labels", "seg", False)
    assert sorted(np.unique(seg.value.values).tolist()) == [0, 2, 4]


def test_a_misnamed_file_is_read_as_what_it_holds():
    scan = classify_file("case_seg.nii.gz", nifti_bytes(synthetic_images()["t2"]))
    assert (scan.kind, scan.modality, scan.misnamed) == ("scan", None, True)  # its modality is for the user to choose
    seg = classify_file("case_t1.nii.gz", nifti_bytes(labels()))
    assert (seg.kind, seg.modality, seg.misnamed) == ("labels", "t1", True)
    four = np.stack([synthetic_images()[m] for m in ("flair", "t1", "t1ce", "t2")], axis=-1)
    case = classify_file("BRATS_001.nii.gz", nifti_bytes(four))
    assert case.kind == "case" and case.misnamed and sorted(case.value.images) == ["flair", "t1", "t1ce", "t2"]


def test_what_no_reading_accepts_says_why():
    mask = np.where(labels() > 0, 255, 0).astype(np.uint8)  # a mask, not labels 0-4, and too few values for a scan
    refused = classify_file("case_seg.nii.gz", nifti_bytes(mask))
    assert refused.kind is None and "case_seg.nii.gz" in refused.error and "255" in refused.error
    garbage = classify_file("case_t2.nii.gz", b"not a nifti file at all")
    assert garbage.kind is None and garbage.modality == "t2" and "case_t2.nii.gz" in garbage.error
    both = classify_file("flair_t1.nii.gz", b"")
    assert both.kind is None and both.error


def test_a_scan_given_as_a_reference_is_named_a_scan():
    from brainseg.classify import read_reference
    from brainseg.io import Case

    scans = synthetic_images()
    case = Case(scans, LPS)
    assert read_reference(nifti_bytes(labels()), "case_seg.nii.gz", case).values.shape == case.shape
    with pytest.raises(InputError, match=r"^case_seg.nii.gz: an MRI scan, not a segmentation"):
        read_reference(nifti_bytes(scans["t1"]), "case_seg.nii.gz", case)
    for name in ("case_seg.nii.gz", "case_truth.nii.gz"):  # a mask is no scan, whatever its name: its own error
        with pytest.raises(InputError, match=r"unexpected label values \[255\]"):
            read_reference(nifti_bytes(np.where(labels() > 0, 255, 0).astype(np.uint8)), name, case)
