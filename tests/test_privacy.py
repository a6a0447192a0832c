"""Exported label maps carry the scan's geometry exactly and none of its free-text header fields.

Free-text NIfTI fields (and header extensions, where DICOM converters put tags) may hold patient
information; the exported file must not, while overlaying the input in any viewer.
"""
from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from brainseg import MODALITIES
from brainseg.cli import main
from brainseg.io import load_case
from brainseg.labelmaps import PRIVATE_HEADER_FIELDS, labels_bytes, save_labels

SECRETS = {"descrip": b"Jane Doe 1970-01-01", "aux_file": b"jdoe_notes", "db_name": b"HOSPITAL-7", "intent_name": b"MRN4242"}
DICOM_TAGS = b"(0010,0010) PatientName=Doe^Jane (0010,0020) PatientID=MRN4242"
GEOMETRY = ("dim", "pixdim", "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d",
            "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z", "xyzt_units")
SHAPE = (14, 16, 12)


def oblique_affine() -> np.ndarray:
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([-0.9, -1.1, 2.5])
    affine[:3, 3] = (81.5, 120.25, -33.0)
    return affine


def identifying_scan(seed: int, qform_code: int, sform_code: int) -> nib.Nifti1Image:
    """A scan whose header names a patient, with a qform that differs from its oblique sform."""
    rng = np.random.default_rng(seed)
    data = np.zeros(SHAPE, np.int16)
    data[2:-2, 2:-2, 2:-2] = rng.integers(20, 900, (10, 12, 8))
    image = nib.Nifti1Image(data, None)
    image.set_sform(oblique_affine(), sform_code)
    image.set_qform(np.diag([-1.0, -1.0, 2.5, 1.0]) + np.array([[0, 0, 0, 80], [0, 0, 0, 119], [0, 0, 0, -30], [0, 0, 0, 0]]), qform_code)
    image.header.set_xyzt_units("mm", "sec")
    for key, value in SECRETS.items():
        image.header[key] = value
    image.header.extensions.append(nib.nifti1.Nifti1Extension(2, DICOM_TAGS))
    return image


def write_case(folder, qform_code=1, sform_code=4) -> dict[str, object]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i, m in enumerate(MODALITIES):
        paths[m] = folder / f"case_{m}.nii.gz"
        nib.save(identifying_scan(i, qform_code, sform_code), paths[m])
    return paths


def assert_private_and_aligned(exported: nib.Nifti1Image, raw: bytes, source: nib.Nifti1Header,
                               descrip: bytes = b"brainseg labels brats2018") -> None:
    """Free text holds only what brainseg writes there (a label map names its label values)."""
    for key in PRIVATE_HEADER_FIELDS:
        assert exported.header[key].item() == (descrip if key == "descrip" else b""), key
    assert len(exported.header.extensions) == 0
    for secret in [*SECRETS.values(), b"Doe^Jane", b"MRN4242"]:
        assert secret not in raw, secret
    for key in GEOMETRY:
        np.testing.assert_array_equal(exported.header[key], source[key], err_msg=key)
    np.testing.assert_array_equal(exported.affine, source.get_best_affine())


@pytest.mark.parametrize("qform_code, sform_code", [(1, 4), (2, 1), (0, 2), (1, 0)])
def test_exported_labels_are_cleared_and_keep_geometry(tmp_path, qform_code, sform_code):
    paths = write_case(tmp_path / "case", qform_code, sform_code)
    source = nib.load(paths["flair"]).header
    assert source["descrip"].item() == SECRETS["descrip"]  # the input really carries the secrets
    case = load_case([tmp_path / "case"])
    labels = np.random.default_rng(0).integers(0, 4, SHAPE).astype(np.uint8)  # internal 0-3
    file_values = np.array([0, 1, 2, 4], np.uint8)[labels]  # BraTS 2018: ET written as 4

    saved = save_labels(labels, case, tmp_path / "out" / "labels.nii.gz", "brats2018")
    raw = gzip.decompress(saved.read_bytes())
    assert_private_and_aligned(nib.Nifti1Image.from_bytes(raw), raw, source)

    raw = gzip.decompress(labels_bytes(labels, case, "msd"))
    exported = nib.Nifti1Image.from_bytes(raw)
    assert_private_and_aligned(exported, raw, source, descrip=b"brainseg labels msd")
    np.testing.assert_array_equal(np.asarray(nib.load(saved).dataobj), file_values)
    np.testing.assert_array_equal(np.asarray(exported.dataobj), np.array([0, 2, 1, 3], np.uint8)[labels])

    # exporting does not alter the loaded case's own header
    assert case.header["descrip"].item() == SECRETS["descrip"]
    assert len(case.header.extensions) == 1


def test_segment_command_writes_a_cleared_file_on_the_input_grid(tmp_path, tiny_checkpoint, capsys):
    paths = write_case(tmp_path / "case")
    out = tmp_path / "seg.nii.gz"
    status = main(["segment", str(tmp_path / "case"), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--no-progress"])
    assert status == 0, capsys.readouterr().err
    raw = gzip.decompress(out.read_bytes())
    exported = nib.Nifti1Image.from_bytes(raw)
    assert_private_and_aligned(exported, raw, nib.load(paths["flair"]).header)
    assert exported.shape == SHAPE


def test_a_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    """The label map appears whole or not at all; its temporary file is removed."""
    write_case(tmp_path / "case")
    case = load_case([tmp_path / "case"])
    target = tmp_path / "out" / "labels.nii.gz"

    def broken_save(image, filename):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError):
        save_labels(np.zeros(SHAPE, np.uint8), case, target, "brats2018")
    assert list((tmp_path / "out").iterdir()) == []
