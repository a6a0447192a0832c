"""NRRD and MetaImage files (3D Slicer's and ITK-SNAP's): read as the NIfTI file they were made from, geometry
included, and each way such a file can be unusable refused naming it."""
import gzip
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from brainseg import decode_itk
from brainseg.decode import MAX_VOXELS, read_bytes, read_volume
from brainseg.decode_itk import itk_affine
from brainseg.errors import InputError
from brainseg.io import load_case, orientation_recorded
from brainseg.labelmaps import read_label_map, save_labels
from conftest import BRATS, LPS, itk_copy, needs_data, synthetic_images, write_case

REAL_FLAIR = BRATS / "Brats18_CBICA_AME_1" / "Brats18_CBICA_AME_1_flair.nii.gz"
# (suffix, compressed): 3D Slicer saves .nrrd gzip-compressed, ITK-SNAP .mha either way
FORMATS = [(".nrrd", True), (".nrrd", False), (".mha", True), (".mha", False)]


def _oblique() -> np.ndarray:
    """A voxel-to-world matrix turned 0.4 rad about a slanted axis, with unequal voxel sides (orthogonal axes, as
    ITK requires)."""
    x, y, z = np.array([0.3, 0.2, 0.9]) / np.linalg.norm([0.3, 0.2, 0.9])
    cross = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    affine = np.eye(4)
    affine[:3, :3] = (np.eye(3) + np.sin(0.4) * cross + (1 - np.cos(0.4)) * cross @ cross) @ np.diag([-0.9, -1.1, 1.3])
    affine[:3, 3] = (-40.0, 60.0, -12.5)
    return affine


OBLIQUE = _oblique()


def _image(path: Path, what=sitk.ReadImage):
    return what(str(path))


def _read(path: Path):
    return read_volume(read_bytes(path), path.name)


@needs_data()
@pytest.mark.parametrize("suffix, compressed", FORMATS)
def test_a_real_scan_saved_as_nrrd_or_mha_reads_as_its_nifti(tmp_path, suffix, compressed):
    expected, expected_affine, _ = _read(REAL_FLAIR)
    path = itk_copy(REAL_FLAIR, tmp_path / f"Brats18_CBICA_AME_1_flair{suffix}", compressed)
    array, affine, header = _read(path)
    assert array.dtype == expected.dtype == np.int16  # small integers as stored, as from the NIfTI
    np.testing.assert_array_equal(array, expected)
    np.testing.assert_allclose(affine, expected_affine, atol=1e-6)
    assert nib.aff2axcodes(affine) == ("L", "P", "S")
    assert int(header["qform_code"]) == int(header["sform_code"]) == 1 and orientation_recorded(header)
    np.testing.assert_allclose(header.get_best_affine(), affine, atol=1e-5)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
@pytest.mark.parametrize("turn", ["permuted", "flipped", "oblique", "nibabel RAS"])
def test_reoriented_images_read_as_the_nifti_they_were_saved_from(tmp_path, suffix, turn):
    """The same voxels and world positions as nibabel gives the NIfTI, whatever the axis directions."""
    array = synthetic_images((20, 24, 18))["flair"].astype(np.int16)
    source = nib.Nifti1Image(array, OBLIQUE if turn == "oblique" else LPS)
    if turn == "nibabel RAS":
        source = nib.as_closest_canonical(source)
    nib.save(source, tmp_path / "source.nii.gz")
    image = sitk.ReadImage(str(tmp_path / "source.nii.gz"))
    if turn == "permuted":
        image = sitk.PermuteAxes(image, [2, 0, 1])
    if turn == "flipped":
        image = sitk.Flip(image, [True, False, True])
    sitk.WriteImage(image, str(tmp_path / "turned.nii.gz"))
    sitk.WriteImage(image, str(tmp_path / f"turned{suffix}"))
    expected, expected_affine, _ = _read(tmp_path / "turned.nii.gz")
    array, affine, _ = _read(tmp_path / f"turned{suffix}")
    np.testing.assert_array_equal(array, expected)
    np.testing.assert_allclose(affine, expected_affine, atol=1e-5)
    if turn == "permuted":  # ITK's x axis was the NIfTI's z: the array's first axis now runs inferior-superior
        assert nib.aff2axcodes(affine) == ("S", "L", "P")


def test_the_affine_puts_each_voxel_where_simpleitk_does():
    """Known answer: every corner voxel's RAS position is SimpleITK's LPS point with x and y negated."""
    image = sitk.Image([5, 6, 7], sitk.sitkInt16)
    image.SetSpacing((0.9, 1.1, 1.3))
    image.SetOrigin((10.0, -20.0, 30.0))
    image.SetDirection(sitk.VersorTransform((0.3, 0.2, 0.9), 0.4).GetMatrix())
    affine = itk_affine(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    for index in ((0, 0, 0), (4, 0, 0), (0, 5, 0), (0, 0, 6), (4, 5, 6)):
        x, y, z = image.TransformIndexToPhysicalPoint(index)
        np.testing.assert_allclose(affine @ [*index, 1], [-x, -y, z, 1], atol=1e-9)
    simple = itk_affine((10.0, 20.0, 30.0), (1.0, 2.0, 3.0), np.eye(3).ravel())
    np.testing.assert_array_equal(simple, [[-1, 0, 0, -10], [0, -2, 0, -20], [0, 0, 3, 30], [0, 0, 0, 1]])


def test_a_case_of_mixed_formats_reads_as_the_nifti_case(tmp_path):
    write_case(tmp_path / "nifti")
    nifti = load_case(tmp_path / "nifti")
    write_case(tmp_path / "mixed", suffix=(".nrrd", ".mha", ".nii.gz", ".nrrd"))
    mixed = load_case(tmp_path / "mixed")
    assert mixed.sources == {"flair": "case01_flair.nrrd", "t1": "case01_t1.mha", "t1ce": "case01_t1ce.nii.gz",
                             "t2": "case01_t2.nrrd"}
    for modality, image in nifti.images.items():
        np.testing.assert_array_equal(mixed.images[modality], image)
    np.testing.assert_allclose(mixed.affine, nifti.affine, atol=1e-6)
    assert mixed.has_geometry and mixed.header is not None and orientation_recorded(mixed.header)


def test_a_label_map_written_for_an_nrrd_case_lies_where_the_nrrd_does(tmp_path):
    """The output NIfTI, read back by SimpleITK, has the NRRD input's origin, spacing and directions."""
    write_case(tmp_path / "c", suffix=".nrrd", affine=OBLIQUE)
    case = load_case(tmp_path / "c")
    out = save_labels(np.zeros(case.shape, np.uint8), case, tmp_path / "seg.nii.gz", case.convention)
    scan, labels = _image(tmp_path / "c" / "case01_flair.nrrd"), _image(out)
    assert labels.GetSize() == scan.GetSize()
    np.testing.assert_allclose(labels.GetOrigin(), scan.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(labels.GetSpacing(), scan.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(labels.GetDirection(), scan.GetDirection(), atol=1e-5)


def test_a_reference_label_map_in_nrrd_reads_on_a_nifti_case(tmp_path):
    paths = write_case(tmp_path / "c")
    case = load_case(list(paths.values()))
    truth = np.zeros(case.shape, np.uint8)
    truth[10:20, 12:22, 8:16], truth[13:17, 15:19, 10:14] = 2, 4
    itk_copy(nib.Nifti1Image(truth, LPS), tmp_path / "case01_seg.nrrd")
    read = read_label_map(tmp_path / "case01_seg.nrrd", case=case)
    np.testing.assert_array_equal(read.values, truth)
    assert read.has_geometry and read.read_as() == ("brats2018", "values")


def test_the_temporary_copy_is_removed_after_reading_and_after_a_refusal(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    write_case(tmp_path / "c", suffix=".nrrd")
    data = (tmp_path / "c" / "case01_flair.nrrd").read_bytes()
    read_volume(data, "flair.nrrd")
    with pytest.raises(InputError):
        read_volume(data[: len(data) // 2], "flair.nrrd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


@pytest.mark.parametrize("suffix, single", [(".nhdr", ".nrrd"), (".mhd", ".mha")])
def test_a_detached_header_is_refused_naming_its_data_file(tmp_path, suffix, single):
    write_case(tmp_path / "c")
    header = itk_copy(tmp_path / "c" / "case01_flair.nii.gz", tmp_path / f"flair{suffix}", compress=False)
    kind = "NRRD" if suffix == ".nhdr" else "MetaImage"
    with pytest.raises(InputError) as raised:
        _read(header)
    assert str(raised.value) == (f"flair{suffix}: a detached {kind} header: its voxels are in another file (flair.raw), "
                                 f"which a single file given or uploaded cannot bring along; save the scan as a single "
                                 f"{single} file (or .nii.gz)")


NRRD_HEAD = (b"NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 2 2 2\n"
             b"space directions: (1,0,0) (0,1,0) (0,0,1)\nendian: little\nencoding: raw\n")


@pytest.mark.parametrize("name, data, message", [
    # a header pointing at another file would make the reader open that file on this machine
    ("x.nrrd", NRRD_HEAD + b"data file: /etc/passwd\n\n",
     "x.nrrd: a NRRD header whose voxels are in another file (/etc/passwd); a single file given or uploaded cannot "
     "bring that along: save the scan as a single .nrrd file, its voxels inside (or as .nii.gz)"),
    ("x.nrrd", NRRD_HEAD + b"DataFile: ../x.raw\n\n", "x.nrrd: a NRRD header whose voxels are in another file (../x.raw)"),
    ("x.mha", b"ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_SHORT\nElementDataFile = /etc/passwd\n",
     "x.mha: a MetaImage header whose voxels are in another file (/etc/passwd)"),
    ("x.mha", b"NDims = 3\nDimSize = 2 2 2\nElementType = MET_SHORT\nelementdatafile = LOCAL\nElementDataFile = /etc/passwd\n",
     "x.mha: a MetaImage header whose voxels are in another file (a second ElementDataFile line)"),
    ("x.nrrd", b"", "x.nrrd: the file is empty; expected a NIfTI (.nii/.nii.gz), NRRD (.nrrd), MetaImage (.mha) or .npy image"),
    ("x.nrrd", bytes(range(256)) * 20, "x.nrrd: not a NRRD file (no NRRD header at its start); expected a single-file "
                                       ".nrrd image as 3D Slicer or ITK-SNAP saves it"),
    ("x.mha", bytes(range(256)) * 20, "x.mha: not a MetaImage file (no MetaImage header at its start)"),
    ("x.nrrd", b"NRRD0004\n" + b"# comment\n" * 200_000, "x.nrrd: its NRRD header does not end within its first 1 MB"),
    ("x.nrrd", NRRD_HEAD + b"\n" + bytes(5), "x.nrrd: cannot be read as a NRRD image (fread got only 2 2-sized things, "
                                             "not 8 (25% of expected)); expected an intact single-file .nrrd image: "
                                             "a damaged or truncated file must be saved again"),
    ("x.nrrd", NRRD_HEAD.replace(b"2 2 2", b"2000 2000 2000") + b"\n",
     f"x.nrrd: the header gives size (2000, 2000, 2000); expected a 3D MRI volume of 1 to {MAX_VOXELS} voxels"),
    ("x.nrrd", NRRD_HEAD.replace(b"(0,1,0)", b"(1,0,0)") + b"\n" + bytes(16),
     "x.nrrd: the header's axis directions or origin are invalid (not finite unit vectors, two axes pointing the same "
     "way, or an origin no NIfTI header can hold)"),
    ("x.nrrd", NRRD_HEAD.replace(b"(1,0,0) (0,1,0) (0,0,1)", b"(0.001,0,0) (0,0.001,0) (0,0,0.001)") + b"\n" + bytes(16),
     "x.nrrd: voxels of 0.001 x 0.001 x 0.001 mm; expected each side between 0.05 and 30 mm"),
])
def test_an_unusable_file_is_refused_naming_it(name, data, message):
    with pytest.raises(InputError) as raised:
        read_volume(data, name)
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_compressed_voxels_cut_short_damaged_or_inflating_too_far_are_refused(tmp_path, suffix):
    """SimpleITK would read these unsaid: it stops inflating at the voxels it needs and checks no checksum."""
    write_case(tmp_path / "c")
    data = itk_copy(tmp_path / "c" / "case01_flair.nii.gz", tmp_path / f"x{suffix}").read_bytes()
    for cut in (1, 9):  # the gzip trailer (NRRD) or zlib checksum (MetaImage), then the stream's last bytes
        with pytest.raises(InputError) as raised:
            read_volume(data[:-cut], f"flair{suffix}")
        assert str(raised.value) == (f"flair{suffix}: the file is truncated (its compressed voxels end early); expected "
                                     f"an intact {suffix} file: save or download it again")
    damaged = bytearray(data)
    damaged[-2000:-1900] = bytes(100)
    with pytest.raises(InputError, match=f"^flair{suffix}: its compressed voxels are damaged"):
        read_volume(bytes(damaged), f"flair{suffix}")
    bomb = NRRD_HEAD.replace(b"encoding: raw", b"encoding: gzip") + b"\n" + gzip.compress(bytes(8 * 1024**2))
    with pytest.raises(InputError) as raised:
        read_volume(bomb, "x.nrrd")
    assert str(raised.value) == ("x.nrrd: its compressed voxels inflate to more than the 16 bytes its header describes; "
                                 "refused as a possible zip bomb; expected a .nrrd file holding one image")


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_damaged_copies_of_a_scan_are_refused_not_crashed_on(tmp_path, suffix):
    """Truncated anywhere, renamed NIfTI, compressed or not: an InputError naming the file, never another error."""
    write_case(tmp_path / "c")
    source = tmp_path / "c" / "case01_flair.nii.gz"
    for compressed in (True, False):
        data = itk_copy(source, tmp_path / f"x{suffix}", compressed).read_bytes()
        for cut in (0, 9, 300, len(data) // 2, len(data) - 1):
            with pytest.raises(InputError, match=f"^flair{suffix}: "):
                read_volume(data[:cut], f"flair{suffix}")
    with pytest.raises(InputError) as raised:
        read_volume(source.read_bytes(), f"flair{suffix}")
    kind = "NRRD" if suffix == ".nrrd" else "MetaImage"
    assert str(raised.value) == (f"flair{suffix}: holds a NIfTI (or gzip-compressed) file, not {kind}; name it "
                                 f".nii.gz / .nii as it is, or save the scan as {suffix} again")


@pytest.mark.parametrize("image, message", [
    (lambda: sitk.Image([20, 20], sitk.sitkInt16), "a 2D image of size (20, 20); expected one 3D volume (a single slice"),
    (lambda: sitk.Image([20, 20, 20, 4], sitk.sitkFloat32), "a 4D image of size (20, 20, 20, 4); expected one 3D volume"),
    (lambda: sitk.Image([20, 20, 20], sitk.sitkVectorUInt8, 3), "3 values per voxel (a vector or colour image); expected"),
    (lambda: sitk.Image([20, 20, 20], sitk.sitkComplexFloat32), "complex-valued data; expected a real-valued MRI"),
])
def test_images_that_are_no_grey_scale_volume_are_refused(tmp_path, image, message):
    sitk.WriteImage(image(), str(tmp_path / "x.nrrd"))
    with pytest.raises(InputError) as raised:
        _read(tmp_path / "x.nrrd")
    assert str(raised.value).startswith(f"x.nrrd: {message}")


def test_limits_are_checked_before_the_voxels_are_read(monkeypatch):
    """A header claiming a huge image is refused without reading (or allocating) its voxels."""
    executed = []
    real_reader = sitk.ImageFileReader

    class Reader(real_reader):
        def Execute(self):
            executed.append(True)
            return super().Execute()

    monkeypatch.setattr(sitk, "ImageFileReader", Reader)
    with pytest.raises(InputError, match="size"):
        read_volume(NRRD_HEAD.replace(b"2 2 2", b"600 600 600") + b"\n", "x.nrrd")
    assert executed == []
    assert decode_itk.itk_suffix("A.NRRD") == ".nrrd" and decode_itk.itk_suffix("a.nii.gz") is None


REAL_CASE = BRATS / "Brats18_CBICA_AME_1"
REAL_SEG = REAL_CASE / "Brats18_CBICA_AME_1_seg.nii.gz"


def _slicer_segmentation(path: Path, margin: int = 2, shift_mm=(0.0, 0.0, 0.0), layers: bool = False) -> Path:
    """The real segmentation as 3D Slicer saves a segmentation (.seg.nrrd): cropped to its labels' extent and a
    ``margin``, its origin moved by ``shift_mm``; ``layers``: the NCR and edema segments as overlapping layers."""
    image = sitk.ReadImage(str(REAL_SEG))
    z, y, x = np.nonzero(sitk.GetArrayViewFromImage(image))
    low = [max(0, int(v.min()) - margin) for v in (x, y, z)]
    high = [min(n, int(v.max()) + 1 + margin) for v, n in zip((x, y, z), image.GetSize())]
    crop = sitk.RegionOfInterest(image, [h - lo for lo, h in zip(low, high)], low)
    crop.SetOrigin([o + s for o, s in zip(crop.GetOrigin(), shift_mm)])
    if layers:
        crop = sitk.Compose([sitk.Cast(crop == 1, sitk.sitkUInt8), sitk.Cast(crop == 2, sitk.sitkUInt8)])
    crop.SetMetaData("Segment0_ID", "Segment_1")
    crop.SetMetaData("Segment0_Name", "necrosis")
    sitk.WriteImage(crop, str(path), True)
    return path


@needs_data()
def test_a_slicer_segmentation_cropped_to_its_labels_lies_on_the_case_and_scores_as_the_full_map(tmp_path):
    """Slicer keeps a segmentation's extent only: read against the case (the app's ground truth) it is the expert
    map on the scans' grid, and as a reference or a prediction it scores as the full map does."""
    from brainseg.scoring import evaluate_files

    path = _slicer_segmentation(tmp_path / "Segmentation.seg.nrrd")
    assert sitk.ReadImage(str(path)).GetSize() != sitk.ReadImage(str(REAL_SEG)).GetSize()
    case = load_case(REAL_CASE)
    full = read_label_map(REAL_SEG, case=case)
    placed = read_label_map(path, case=case)
    np.testing.assert_array_equal(placed.values, full.values)
    np.testing.assert_allclose(placed.affine, case.affine)
    # against a map that differs from the expert's (the expert map less a slab), as reference and as prediction
    edited = np.asarray(nib.load(REAL_SEG).dataobj).copy()
    edited[:, :, 70:75] = 0
    other = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(edited, nib.load(REAL_SEG).affine), other)
    for (pred, ref), (full_pred, full_ref) in (((other, path), (other, REAL_SEG)), ((path, other), (REAL_SEG, other))):
        scores, expected = evaluate_files(pred, ref)["regions"], evaluate_files(full_pred, full_ref)["regions"]
        assert expected["WT"]["dice"] < 0.99 and expected["WT"]["hd95"] > 0  # the slab matters: the test can fail
        for region in ("WT", "TC", "ET"):
            assert scores[region]["dice"] == pytest.approx(expected[region]["dice"])
            assert scores[region]["hd95"] == pytest.approx(expected[region]["hd95"])


@needs_data()
def test_a_slicer_segmentation_off_the_voxel_grid_or_in_layers_is_refused_saying_what_to_do(tmp_path):
    case = load_case(REAL_CASE)
    shifted = _slicer_segmentation(tmp_path / "shifted.seg.nrrd", shift_mm=(0.5, 0.0, 0.0))
    with pytest.raises(InputError, match=r"shifted.seg.nrrd: shape .* differs .* on the scans' grid"):
        read_label_map(shifted, case=case)
    beyond = _slicer_segmentation(tmp_path / "beyond.seg.nrrd", shift_mm=(-200.0, 0.0, 0.0))  # labels off the scans
    with pytest.raises(InputError, match="beyond.seg.nrrd: shape"):
        read_label_map(beyond, case=case)
    plain = _slicer_segmentation(tmp_path / "crop.nrrd")  # only Slicer's segmentations are taken to be crops
    with pytest.raises(InputError, match=r"crop.nrrd: shape .* differs"):
        read_label_map(plain, case=case)
    layered = _slicer_segmentation(tmp_path / "layers.seg.nrrd", layers=True)
    with pytest.raises(InputError, match=r"layers.seg.nrrd: 2 values per voxel.*overlapping segments.*export the "
                                         r"segments to a labelmap"):
        read_label_map(layered, case=case)


def _refusing_reader(monkeypatch, method: str) -> list:
    """SimpleITK's reader with ``method`` recording its call and failing, for headers the real one would hang or crash
    on: the list it records in stays empty when brainseg refuses them first."""
    called = []

    def refuse(self):
        called.append(method)
        raise RuntimeError(f"SimpleITK must not get to {method}")

    monkeypatch.setattr(sitk, "ImageFileReader", type("Reader", (sitk.ImageFileReader,), {method: refuse}))
    return called


@pytest.mark.parametrize("ndims, shown", [(b"-1", "-1"), (b"399999999", "399999999"),
                                          (b"3\nNDims = 399999999", "399999999"), (b"three", "three")])
def test_a_metaimage_dimension_count_metaio_cannot_take_is_refused_before_simpleitk_reads_it(monkeypatch, ndims, shown):
    """MetaIO (inside SimpleITK) loops without end on a negative NDims and crashes the whole process (the app's
    server with it) on a huge one followed by a TransformMatrix, whichever NDims line comes last."""
    opened = _refusing_reader(monkeypatch, "ReadImageInformation")  # the real one would hang or crash
    data = (b"ObjectType = Image\nNDims = " + ndims + b"\nTransformMatrix = 1 0 0 0 1 0 0 0 1\nDimSize = 2 2 2\n"
            b"ElementType = MET_SHORT\nElementDataFile = LOCAL\n" + bytes(16))
    with pytest.raises(InputError) as raised:
        read_volume(data, "x.mha")
    assert str(raised.value) == (f"x.mha: its MetaImage header gives NDims = {shown}; expected 3 (one 3D volume), as "
                                 f"ITK-SNAP and 3D Slicer save a scan: save it as .mha again")
    assert opened == []


@needs_data()
def test_a_slicer_segmentation_painted_on_one_slice_is_placed_on_the_case(tmp_path):
    """Cropped to its segments' extent, a segmentation drawn on one axial slice is one voxel thick: a part of the
    scans' grid, not a single-slice image."""
    from brainseg.scoring import evaluate_files

    truth = np.asarray(nib.load(REAL_SEG).dataobj)
    one_slice = np.zeros_like(truth)
    one_slice[:, :, 75] = truth[:, :, 75]
    full = tmp_path / "one_slice_seg.nii.gz"
    nib.save(nib.Nifti1Image(one_slice, nib.load(REAL_SEG).affine), full)
    image = sitk.ReadImage(str(full))
    z, y, x = np.nonzero(sitk.GetArrayViewFromImage(image))
    low, high = [int(v.min()) for v in (x, y, z)], [int(v.max()) + 1 for v in (x, y, z)]
    crop = sitk.RegionOfInterest(image, [h - lo for lo, h in zip(low, high)], low)
    crop.SetMetaData("Segment0_ID", "Segment_1")
    path = tmp_path / "Segmentation.seg.nrrd"
    sitk.WriteImage(crop, str(path), True)
    assert crop.GetSize()[2] == 1
    case = load_case(REAL_CASE)
    placed = read_label_map(path, case=case)
    np.testing.assert_array_equal(placed.values, one_slice)
    scores = evaluate_files(full, path)["regions"]
    assert [scores[r]["dice"] for r in ("WT", "TC", "ET")] == [1.0, 1.0, 1.0]


def test_an_empty_slicer_segmentation_is_refused_saying_it_is_empty(tmp_path):
    """3D Slicer saves a segmentation whose segments hold no voxel as a single voxel: said as such, not as a
    single-slice image or another grid."""
    write_case(tmp_path / "c")
    case = load_case(tmp_path / "c")
    empty = sitk.Image([1, 1, 1], sitk.sitkUInt8)
    empty.SetMetaData("Segment0_ID", "Segment_1")
    sitk.WriteImage(empty, str(tmp_path / "Segmentation.seg.nrrd"), True)
    expected = ("Segmentation.seg.nrrd: an empty 3D Slicer segmentation (no segment holds a voxel: Slicer saves it as "
                "a single voxel); expected the tumour's segments: paint them in Slicer's Segment Editor and save again")
    for given in ({}, {"case": case}):
        with pytest.raises(InputError) as raised:
            read_label_map(tmp_path / "Segmentation.seg.nrrd", "Segmentation.seg.nrrd", **given)
        assert str(raised.value) == expected


def test_a_nrrd_with_one_layer_on_a_list_axis_reads_as_the_volume_it_holds():
    """3D Slicer before 4.11 saved each segment as a layer of a 4D .seg.nrrd (a list axis first): with one segment,
    one value per voxel, the volume itself (SimpleITK calls it a one-component vector image)."""
    values = np.zeros((5, 6, 7), np.uint8)
    values[1:3, 2:5, 3:6] = 1
    plain = NRRD_HEAD.replace(b"type: short", b"type: uchar").replace(b"sizes: 2 2 2", b"sizes: 5 6 7")
    layered = plain.replace(b"dimension: 3", b"dimension: 4").replace(b"sizes: 5 6 7", b"sizes: 1 5 6 7").replace(
        b"space directions: ", b"space directions: none ") + b"kinds: list domain domain domain\nSegment0_ID:=Segment_1\n"
    voxels = values.tobytes(order="F")
    expected, expected_affine, _ = read_volume(plain + b"\n" + voxels, "x.nrrd")
    array, affine, _ = read_volume(layered + b"\n" + voxels, "x.seg.nrrd")
    np.testing.assert_array_equal(array, values)
    np.testing.assert_array_equal(array, expected)
    np.testing.assert_allclose(affine, expected_affine)
    assert array.dtype == np.uint8
    assert read_label_map(layered + b"\n" + voxels, "x.seg.nrrd").values.sum() == values.sum()


@pytest.mark.parametrize("transform, offset", [("1 0 0 0 1 0 0 1e308 1", "0 0 0"), ("2 0 0 0 2 0 0 0 2", "0 0 0"),
                                               ("1 0 0 0 1 0 0 0 1", "1e308 0 0")])
def test_axes_that_are_no_unit_vectors_or_an_origin_no_nifti_header_holds_are_refused_unread(monkeypatch, transform,
                                                                                             offset):
    """MetaImage's TransformMatrix is taken as it is: SimpleITK's reader loops without end on a direction of 1e308,
    one of length 2 would double the voxel sides checked from ElementSpacing unseen, and an origin of 1e308 would be
    infinite in the label map's NIfTI header."""
    executed = _refusing_reader(monkeypatch, "Execute")  # the real one would hang on the first
    data = (f"ObjectType = Image\nNDims = 3\nTransformMatrix = {transform}\nOffset = {offset}\nElementSpacing = 1 1.5 2\n"
            f"DimSize = 10 9 8\nElementType = MET_SHORT\nElementDataFile = LOCAL\n").encode() + bytes(1440)
    with pytest.raises(InputError) as raised:
        read_volume(data, "x.mha")
    assert str(raised.value) == ("x.mha: the header's axis directions or origin are invalid (not finite unit vectors, "
                                 "two axes pointing the same way, or an origin no NIfTI header can hold); expected a 3D "
                                 "voxel grid")
    assert executed == []


def test_a_slicer_segmentation_that_cannot_be_placed_says_why_and_what_to_do_in_slicer(tmp_path):
    """"Its shape differs" alone puzzles a Slicer user, whose segmentations are always cropped: the refusal says
    when a crop is placed, and how to export one on the scans' grid."""
    write_case(tmp_path / "c")
    case = load_case(tmp_path / "c")
    labels = np.zeros(case.shape, np.uint8)
    labels[10:20, 12:22, 8:16] = 2
    crop = sitk.RegionOfInterest(sitk.ReadImage(str(itk_copy(nib.Nifti1Image(labels, LPS), tmp_path / "full.nrrd"))),
                                 [10, 10, 8], [10, 12, 8])
    crop.SetOrigin([o + s for o, s in zip(crop.GetOrigin(), (0.5, 0.0, 0.0))])  # half a voxel off the scans' grid
    sitk.WriteImage(crop, str(tmp_path / "Segmentation.seg.nrrd"), True)
    with pytest.raises(InputError) as raised:
        read_label_map(tmp_path / "Segmentation.seg.nrrd", "Segmentation.seg.nrrd", case=case)
    assert str(raised.value) == (
        "Segmentation.seg.nrrd: shape (10, 10, 8) differs from case01_flair.nii.gz's (40, 44, 36); expected the "
        "segmentation of this case, on the scans' grid; a 3D Slicer segmentation covering part of it is placed on it "
        "when its voxels are the grid's shifted by whole voxels, inside it: in Slicer's Segmentations module, export "
        "it to a labelmap with the case's scans as the reference volume, and save that")


def _painted_in_another_order(path: Path, names: dict[int, str]) -> Path:
    """The real expert map as a Slicer user who painted edema first, then enhancing tumour, then necrosis gets it:
    values 1 edema, 2 enhancing, 3 necrotic core, each segment named (``names``: value -> name)."""
    image = sitk.ReadImage(str(REAL_SEG))
    expert = sitk.GetArrayFromImage(image)
    painted = np.zeros_like(expert)
    painted[expert == 2], painted[expert == 4], painted[expert == 1] = 1, 2, 3
    out = sitk.GetImageFromArray(painted)
    out.CopyInformation(image)
    for i, (value, name) in enumerate(sorted(names.items())):
        out.SetMetaData(f"Segment{i}_Name", name)
        out.SetMetaData(f"Segment{i}_LabelValue", str(value))
    sitk.WriteImage(out, str(path), True)
    return path


@needs_data()
def test_a_slicer_segmentation_is_read_by_its_segments_names_whatever_order_they_were_painted_in(tmp_path):
    """Values 1-3 read by value would be BraTS 2023's (1 necrotic core, 2 edema, 3 enhancing): wrong here."""
    from brainseg.scoring import evaluate_files

    case = load_case(REAL_CASE)
    expert, _ = read_label_map(REAL_SEG, case=case).internal()
    named = _painted_in_another_order(tmp_path / "Segmentation.seg.nrrd",
                                      {1: "Peritumoral edema", 2: "Enhancing tumor", 3: "Non-enhancing tumor core"})
    read = read_label_map(named, case=case)
    assert read.read_as() == ("brats2023", "segments")
    np.testing.assert_array_equal(read.internal()[0], expert)
    scores = evaluate_files(REAL_SEG, named)["regions"]
    assert [scores[r]["dice"] for r in ("WT", "TC", "ET")] == [1.0, 1.0, 1.0]
    # names that say no class (Slicer's own "Segment_1"), or one that says two: read by value, as before
    for names in ({1: "Segment_1", 2: "Segment_2", 3: "Segment_3"}, {1: "Edema", 2: "necrotic and enhancing", 3: "ET"}):
        unnamed = read_label_map(_painted_in_another_order(tmp_path / "x.seg.nrrd", names), case=case)
        assert unnamed.read_as() == ("brats2023", "values")
        assert not np.array_equal(unnamed.internal()[0], expert)


def test_segment_names_say_their_brats_class_and_a_cavity_makes_the_map_brats2024():
    from brainseg.slicer_segments import by_name, class_of_name

    said = {name: class_of_name(name) for name in ("Necrosis", "NCR/NET", "Non-enhancing tumour", "oedema",
                                                   "Enhancing tumor", "ET", "Resection cavity", "Tumor core",
                                                   "Segment_4", "necrotic and enhancing")}
    assert said == {"Necrosis": 1, "NCR/NET": 1, "Non-enhancing tumour": 1, "oedema": 2, "Enhancing tumor": 3,
                    "ET": 3, "Resection cavity": "cavity", "Tumor core": None, "Segment_4": None,
                    "necrotic and enhancing": None}
    # BraTS 2023's own name for edema holds "non-enhancing"; "non-contrast-enhancing" holds "enhancing"
    said = {name: class_of_name(name) for name in (
        "Surrounding non-enhancing FLAIR hyperintensity", "Surrounding Non-enhancing FLAIR Hyperintensity (SNFH)",
        "non-enhancing T2/FLAIR hyperintensity", "Non-contrast-enhancing tumor", "Contrast-enhancing tumor",
        "Non\u2011enhancing tumor", "Non-enhancement")}
    assert list(said.values()) == [2, 2, 2, 1, 3, 1, 1]
    header = (b"NRRD0004\ntype: uchar\nSegment0_Name:=Cavity\nSegment0_LabelValue:=7\nSegment1_Name:=Edema\n"
              b"Segment1_LabelValue:=5\n\n")
    values = np.array([0, 5, 7, 5], np.uint8)
    relabelled, convention = by_name(values, header, "s.seg.nrrd")
    assert convention == "brats2024" and relabelled.tolist() == [0, 2, 4, 2]
    assert by_name(values.astype(np.float32) + 0.5, header, "s.seg.nrrd") is None  # no label values: read as they are
    assert by_name(np.array([0, 5, 6]), header, "s.seg.nrrd") is None  # a value no segment names
    odd = "NRRD0004\nSegment0_Name:=Edema\nSegment0_LabelValue:=\u00b2\n\n".encode()  # a digit int() refuses
    assert by_name(np.array([0, 2]), odd, "s.seg.nrrd") is None


def test_a_convention_named_for_a_map_read_by_its_segments_names_does_not_relabel_it(tmp_path):
    """Read by name, the values are those the names give: a convention named for the file's own values (the
    Decathlon's 1 edema, 2 non-enhancing) would swap edema and necrosis."""
    values = np.zeros((6, 6, 6), np.uint8)
    values[1, 1, 1], values[2, 2, 2], values[3, 3, 3] = 1, 2, 3
    image = sitk.GetImageFromArray(values)
    for i, name in enumerate(("Edema", "Non-enhancing tumor", "Enhancing tumor")):
        image.SetMetaData(f"Segment{i}_Name", name)
        image.SetMetaData(f"Segment{i}_LabelValue", str(i + 1))
    sitk.WriteImage(image, str(tmp_path / "msd.seg.nrrd"), True)
    read = read_label_map(tmp_path / "msd.seg.nrrd")
    assert read.read_as("msd") == ("brats2023", "segments")
    labels, _ = read.internal("msd")
    assert [labels[1, 1, 1], labels[2, 2, 2], labels[3, 3, 3]] == [2, 1, 3]  # edema, necrotic core, enhancing


def test_a_label_map_saved_as_a_slicer_segmentation_overlays_the_case_with_named_coloured_segments(tmp_path):
    """What 3D Slicer opens as a segmentation: every class a named, coloured segment in the case's values, on the
    scans' grid (SimpleITK's reading of both), read back by brainseg by its names."""
    paths = write_case(tmp_path / "c", affine=OBLIQUE)
    case = load_case(list(paths.values()))
    labels = np.zeros(case.shape, np.uint8)
    labels[10:20, 12:22, 8:16], labels[13:17, 15:19, 10:14] = 2, 3  # edema around enhancing tumour, no necrosis
    path = save_labels(labels, case, tmp_path / "case01.seg.nrrd", "brats2018")
    written, scan = sitk.ReadImage(str(path)), sitk.ReadImage(str(paths["flair"]))
    assert written.GetSize() == scan.GetSize()
    for what in ("GetOrigin", "GetSpacing", "GetDirection"):
        np.testing.assert_allclose(getattr(written, what)(), getattr(scan, what)(), atol=1e-5)
    fields = {key: written.GetMetaData(key) for key in written.GetMetaDataKeys()}
    assert [fields[f"Segment{i}_Name"] for i in range(3)] == ["necrotic core", "edema", "enhancing tumour"]
    assert [fields[f"Segment{i}_LabelValue"] for i in range(3)] == ["1", "2", "4"]
    assert [fields[f"Segment{i}_Color"] for i in range(3)] == ["1 0.6471 0", "0 0.7843 0", "1 0 0"]
    # Slicer reads a shared layer cropped to its first segment's extent: each segment gets the layer's, the grid's
    # (necrosis's own, empty here, would have emptied all three)
    assert {fields[f"Segment{i}_Extent"] for i in range(3)} == {"0 39 0 43 0 35"}
    i0, i1, j0, j1, k0, k1 = map(int, fields["Segment0_Extent"].split())
    as_slicer_reads = sitk.GetArrayFromImage(written).transpose(2, 1, 0)[i0:i1 + 1, j0:j1 + 1, k0:k1 + 1]
    assert [(as_slicer_reads == v).sum() for v in (2, 4)] == [(labels == 2).sum(), (labels == 3).sum()]
    assert fields["Segmentation_MasterRepresentation"] == "Binary labelmap"
    read = read_label_map(path, case=case)
    assert read.read_as() == ("brats2023", "segments")
    np.testing.assert_array_equal(read.internal()[0], labels)


def test_a_nrrd_without_a_space_field_is_said_to_record_no_orientation(tmp_path, caplog):
    """Only "spacings": SimpleITK places it as LPS, which the file does not say; a NRRD with a space records it."""
    import logging

    voxels = np.arange(6 * 7 * 8, dtype=np.int16).reshape(8, 7, 6)  # (Z, Y, X) as the file stores x fastest
    header = b"NRRD0004\ntype: short\ndimension: 3\nsizes: 6 7 8\nspacings: 1 1.5 2\nencoding: raw\nendian: little\n\n"
    array, affine, nifti = read_volume(header + voxels.tobytes(), "case01_flair.nrrd")
    np.testing.assert_array_equal(array, voxels.transpose(2, 1, 0))
    np.testing.assert_allclose(affine, np.diag([-1.0, -1.5, 2.0, 1.0]))
    assert not orientation_recorded(nifti)
    _, _, spaced = read_volume(header.replace(b"spacings: 1 1.5 2\n", b"space: left-posterior-superior\nspace "
                                              b"directions: (1,0,0) (0,1.5,0) (0,0,2)\n") + voxels.tobytes(), "x.nrrd")
    assert orientation_recorded(spaced)
    for k, modality in enumerate(("flair", "t1", "t1ce", "t2")):
        (tmp_path / f"case01_{modality}.nrrd").write_bytes(header + (voxels * (k + 1)).tobytes())
    with caplog.at_level(logging.WARNING):
        load_case(tmp_path)
    assert "the header records no orientation (qform and sform codes both 0; in a NRRD, no space field)" in caplog.text
