"""A zip of one case: its image files, and a message for each way an archive can be unusable."""
import io
import zipfile

import pytest

from brainseg import archive
from brainseg.archive import Member, image_members
from brainseg.errors import InputError


def _zip(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def test_members_are_the_image_files_by_name_with_folders_flattened_and_metadata_skipped():
    data = _zip({"case/c_t1.nii.gz": b"t1", "case/c_flair.nii": b"flair", "case/c_t2.NPY": b"t2",
                 "case/notes.txt": b"x", "__MACOSX/case/._c_t1.nii.gz": b"meta", "case/.hidden.nii.gz": b"h",
                 "case/sub/": b""})
    assert image_members(data, "c.zip") == [Member("c_flair.nii", b"flair"), Member("c_t1.nii.gz", b"t1"),
                                            Member("c_t2.NPY", b"t2")]


@pytest.mark.parametrize("data, message", [
    (b"PK\x03\x04 cut short", "c.zip: not a readable zip file (damaged or truncated)"),
    (b"", "c.zip: not a readable zip file"),
    (_zip({}), "c.zip: holds no .nii, .nii.gz, .nrrd, .mha or .npy file (it is empty)"),
    (_zip({"a/scan.dcm": b"x", "readme.txt": b"y"}), "c.zip: holds no .nii, .nii.gz, .nrrd, .mha or .npy file (it holds a/scan.dcm, readme.txt)"),
    (_zip({"a/c_t1.nii.gz": b"1", "b/c_t1.nii.gz": b"2"}), "c.zip: holds two files named c_t1.nii.gz"),
    (_zip({f"c{i}_t1.nii.gz": b"1" for i in range(archive.MAX_MEMBERS + 1)}), "c.zip: holds 65 image files"),
    (_zip({f"{case}/{case}_{m}.nii.gz": b"x" for case in ("a1", "b2") for m in ("flair", "t1", "t1ce", "t2")}),
     "c.zip: holds the scans of 2 cases (a1, b2); expected one case's files"),
])
def test_an_unusable_zip_is_named_and_said_why(data, message):
    with pytest.raises(InputError) as raised:
        image_members(data, "c.zip")
    assert str(raised.value).startswith(message)


def test_the_inflated_size_is_checked_before_inflating_and_a_damaged_member_is_said(monkeypatch):
    data = _zip({"c_t1.nii.gz": b"\0" * 5000})
    monkeypatch.setattr(archive, "MAX_ARCHIVE_BYTES", 4000)
    with pytest.raises(InputError, match=r"c.zip: its image files inflate to 0.0 GB; expected one case's"):
        image_members(data, "c.zip")
    monkeypatch.undo()
    # a damaged member costs itself: the others are read
    stored = bytearray(_zip({"c_t1.nii.gz": b"abcdefgh" * 100, "c_t2.nii.gz": b"t2"}, zipfile.ZIP_STORED))
    stored[stored.index(b"abcdefgh")] ^= 0xFF  # one byte of the member changed: its CRC no longer matches
    t1, t2 = image_members(bytes(stored), "c.zip")
    assert t1.data is None and t1.error.startswith("c_t1.nii.gz: damaged inside c.zip (BadZipFile: Bad CRC-32")
    assert t2 == Member("c_t2.nii.gz", b"t2")
    deflated = bytearray(_zip({"c_t1.nii.gz": bytes(range(256)) * 64}))
    start = deflated.index(b"c_t1.nii.gz") + len("c_t1.nii.gz")  # the local header's name, then the stream
    deflated[start:start + 8] = b"\xff" * 8  # a damaged deflate stream: zlib's own error, not zipfile's
    assert image_members(bytes(deflated), "c.zip")[0].error.startswith("c_t1.nii.gz: damaged inside c.zip (error: ")
    encrypted = bytearray(_zip({"c_t1.nii.gz": b"t1"}, zipfile.ZIP_STORED))
    for header in (b"PK\x03\x04", b"PK\x01\x02"):  # the encryption flag in the local and the central header
        at = encrypted.index(header) + (6 if header == b"PK\x03\x04" else 8)
        encrypted[at] |= 0x1
    assert image_members(bytes(encrypted), "c.zip")[0].error == "c_t1.nii.gz: encrypted inside c.zip; expected an unencrypted zip"


def test_a_windows_zip_with_backslashes_is_flattened_too():
    data = _zip({"case\\c_t1.nii.gz": b"t1", "__MACOSX\\case\\._c_t1.nii.gz": b"meta"})
    assert image_members(data, "c.zip") == [Member("c_t1.nii.gz", b"t1")]


def test_segment_reads_a_zip_of_a_case_as_its_folder(tmp_path, tiny_checkpoint):
    import nibabel as nib
    import numpy as np

    from brainseg.cli import main
    from conftest import write_case

    paths = write_case(tmp_path / "case", prefix="c_")
    four = np.stack([np.asarray(nib.load(paths[m]).dataobj) for m in ("flair", "t1", "t1ce", "t2")], axis=-1)
    with zipfile.ZipFile(tmp_path / "four.zip", "w") as z:  # one 4-channel image zipped alone
        z.writestr("BRATS_001.nii.gz", nib.Nifti1Image(four, nib.load(paths["t1"]).affine).to_bytes())
    (tmp_path / "case" / "c_seg.nii.gz").write_bytes(paths["t1"].read_bytes())  # a segmentation beside: not a scan
    with zipfile.ZipFile(tmp_path / "case.zip", "w") as z:
        for p in sorted((tmp_path / "case").iterdir()):
            z.write(p, f"case/{p.name}")
    common = ["--checkpoint", str(tiny_checkpoint), "--no-progress"]
    assert main(["segment", str(tmp_path / "case"), "-o", str(tmp_path / "folder.nii.gz"), *common]) == 0
    assert main(["segment", str(tmp_path / "case.zip"), "-o", str(tmp_path / "zip.nii.gz"), *common]) == 0
    assert main(["segment", str(tmp_path / "four.zip"), "-o", str(tmp_path / "four.nii.gz"), *common]) == 0
    folder = nib.load(tmp_path / "folder.nii.gz")
    for name in ("zip", "four"):
        zipped = nib.load(tmp_path / f"{name}.nii.gz")
        np.testing.assert_array_equal(np.asarray(zipped.dataobj), np.asarray(folder.dataobj))
        np.testing.assert_array_equal(zipped.affine, folder.affine)


def test_nrrd_and_mha_members_are_read_and_a_detached_header_is_refused_by_name(tmp_path):
    """A zip of a case saved from 3D Slicer / ITK-SNAP reads as the NIfTI case; a detached header's member is
    listed (its .raw is not), so that reading it says what to do."""
    import numpy as np

    from brainseg.io import load_case
    from conftest import itk_copy, write_case

    write_case(tmp_path / "nifti")
    nifti = load_case(tmp_path / "nifti")
    paths = write_case(tmp_path / "mixed", suffix=(".nrrd", ".mha", ".nrrd", ".mha"))
    members = {f"case/{p.name}": p.read_bytes() for p in paths.values()}
    assert [m.name for m in image_members(_zip({**members, "case/x_flair.raw": b"raw"}), "c.zip")] == [
        "case01_flair.nrrd", "case01_t1.mha", "case01_t1ce.nrrd", "case01_t2.mha"]
    (tmp_path / "case.zip").write_bytes(_zip(members))
    zipped = load_case(tmp_path / "case.zip")
    for modality, image in nifti.images.items():
        np.testing.assert_array_equal(zipped.images[modality], image)
    np.testing.assert_allclose(zipped.affine, nifti.affine, atol=1e-6)
    detached = itk_copy(tmp_path / "nifti" / "case01_flair.nii.gz", tmp_path / "case01_flair.nhdr", compress=False)
    swapped = {k: v for k, v in members.items() if not k.endswith("flair.nrrd")} | {"case/case01_flair.nhdr": detached.read_bytes()}
    (tmp_path / "detached.zip").write_bytes(_zip(swapped))
    with pytest.raises(InputError, match=r"^case01_flair.nhdr: a detached NRRD header: its voxels are in another file "
                                         r"\(case01_flair.raw\)"):
        load_case(tmp_path / "detached.zip")
