import gzip

import nibabel as nib
import numpy as np
import pytest

from brainseg.decode import MAX_BYTES
from brainseg.errors import InputError
from brainseg.io import Case, load_case
from brainseg.labelmaps import probabilities_bytes, read_label_map, save_labels, save_probabilities
from brainseg.naming import assign_modalities, case_files, convention_from_names, modality_from_name
from conftest import BRATS, LPS, SAMPLE_2023, needs_data, write_case

NAMES = [
    # BraTS 2018-2020
    ("Brats18_2013_11_1_flair.nii.gz", "flair"),
    ("Brats18_2013_11_1_t1.nii.gz", "t1"),
    ("Brats18_2013_11_1_t1ce.nii.gz", "t1ce"),
    ("Brats18_2013_11_1_t2.nii.gz", "t2"),
    ("Brats18_2013_11_1_seg.nii.gz", "seg"),
    ("BraTS20_Training_001_flair.nii", "flair"),
    ("BraTS20_Training_001_t1ce.nii", "t1ce"),
    # BraTS 2021
    ("BraTS2021_00000_flair.nii.gz", "flair"),
    ("BraTS2021_00000_t1.nii.gz", "t1"),
    ("BraTS2021_00000_t1ce.nii.gz", "t1ce"),
    ("BraTS2021_00000_t2.nii.gz", "t2"),
    # BraTS 2023+
    ("BraTS-GLI-00001-000-t2f.nii.gz", "flair"),
    ("BraTS-GLI-00001-000-t1n.nii.gz", "t1"),
    ("BraTS-GLI-00001-000-t1c.nii.gz", "t1ce"),
    ("BraTS-GLI-00001-000-t2w.nii.gz", "t2"),
    ("BraTS-GLI-00001-000-seg.nii.gz", "seg"),
    # variants
    ("patient_T1CE.nii.gz", "t1ce"),
    ("patient_t1gd.nii", "t1ce"),
    ("FLAIR.nii.gz", "flair"),
    ("sub-01_T1w.nii.gz", "t1"),
    ("sub-01_T2w.nii.gz", "t2"),
    ("scan_t1c.npy", "t1ce"),
    ("sub-01_ce-gadolinium_T1w.nii.gz", "t1ce"),  # BIDS: the ce entity on a T1w
    ("sub-01_ce-gadolinium_T1w_seg.nii.gz", "seg"),
    ("t1.npy", "t1"),
    ("notes.nii.gz", None),
    # 3D Slicer's NRRD and ITK-SNAP's MetaImage, named as NIfTI files are
    ("Brats18_2013_11_1_flair.nrrd", "flair"),
    ("BraTS-GLI-00001-000-t2f.mha", "flair"),
    ("BraTS-GLI-00001-000-t1c.NRRD", "t1ce"),
    ("T1.nrrd", "t1"),
    ("case01t1ce.mha", "t1ce"),
    ("Segmentation.seg.nrrd", "seg"),  # Slicer's segmentation files
    ("flair.nhdr", "flair"),  # a detached header is a scan by name, refused when read
]


@pytest.mark.parametrize("name,expected", NAMES)
def test_modality_from_every_naming_generation(name, expected):
    assert modality_from_name(name) == expected


def test_t1_never_captures_t1ce_in_any_order():
    names = ["x_t1ce.nii.gz", "x_t1.nii.gz", "x_t2.nii.gz", "x_flair.nii.gz"]
    for order in (names, names[::-1], names[1:] + names[:1]):
        assert assign_modalities(order) == {
            "t1ce": "x_t1ce.nii.gz", "t1": "x_t1.nii.gz", "t2": "x_t2.nii.gz", "flair": "x_flair.nii.gz"}


def test_convention_from_names():
    assert convention_from_names(["BraTS-GLI-00001-000-t2f.nii.gz"]) == "brats2023"
    assert convention_from_names(["BraTS2021_00000_flair.nii.gz"]) == "brats2018"
    assert convention_from_names(["BraTS-GLI-00001-000-t2f.mha", "BraTS-GLI-00001-000-t1n.nrrd"]) == "brats2023"


def test_a_case_folder_of_nrrd_and_mha_files_is_found_and_named(tmp_path):
    """2023 names in NRRD / MetaImage: the files found by modality, the case named and its labels BraTS 2023+."""
    from brainseg.report import case_name

    write_case(tmp_path / "c", names=("t2f", "t1n", "t1c", "t2w"), prefix="BraTS-GLI-00009-000-",
               suffix=(".nrrd", ".mha", ".nrrd", ".nii.gz"))
    (tmp_path / "c" / "BraTS-GLI-00009-000-t2f.raw").write_bytes(b"")  # a detached header's data: no image by itself
    assert {m: p.name for m, p in case_files(tmp_path / "c").items()} == {
        "flair": "BraTS-GLI-00009-000-t2f.nrrd", "t1": "BraTS-GLI-00009-000-t1n.mha",
        "t1ce": "BraTS-GLI-00009-000-t1c.nrrd", "t2": "BraTS-GLI-00009-000-t2w.nii.gz"}
    case = load_case(tmp_path / "c")
    assert case.convention == "brats2023" and case_name(case.sources) == "BraTS-GLI-00009-000"


BIDS = ("FLAIR", "T1w", "T1wce", "T2w")


def test_bids_t2w_name_keeps_the_2018_convention(tmp_path, caplog):
    """sub-01_T2w holds the token t2w, but only BraTS 2023+ names (...-t2w) write ET as 3."""
    names = [f"sub-01_{n}.nii.gz" for n in BIDS]
    assert assign_modalities(names)["t2"] == "sub-01_T2w.nii.gz"
    assert convention_from_names(names) == "brats2018"
    assert convention_from_names(["BraTS-MEN-00004-000-t2w.nii.gz"]) == "brats2023"
    paths = write_case(tmp_path, names=BIDS, prefix="sub-01_")
    with caplog.at_level("INFO", logger="brainseg.naming"):
        case = load_case(list(paths.values()))
    assert case.convention == "brats2018"
    assert case.sources["t2"] == "sub-01_T2w.nii.gz" and case.sources["t1ce"] == "sub-01_T1wce.nii.gz"
    assert "label convention brats2018 (ET = 4): no BraTS 2023+ name among sub-01_FLAIR.nii.gz" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="brainseg.naming"):
        assert convention_from_names(["BraTS-GLI-00001-000-t1n.nii.gz"]) == "brats2023"
    assert "label convention brats2023 (ET = 3): BraTS-GLI-00001-000-t1n.nii.gz is a BraTS 2023+ name" in caplog.text


def test_missing_and_duplicate_modalities_are_named():
    with pytest.raises(InputError, match="missing modality T2"):
        assign_modalities(["a_flair.nii", "a_t1.nii", "a_t1ce.nii"])
    with pytest.raises(InputError, match="a_t1.nii and b_t1.nii are both T1"):
        assign_modalities(["a_t1.nii", "b_t1.nii", "a_t2.nii", "a_flair.nii"])
    with pytest.raises(InputError, match="looks like a segmentation"):
        assign_modalities(["a_seg.nii", "a_t1.nii", "a_t2.nii", "a_flair.nii"])


def test_folder_ignores_seg_and_loads_any_suffix(tmp_path):
    write_case(tmp_path / "c", suffix=".nii")
    nib.save(nib.Nifti1Image(np.zeros((40, 44, 36), np.uint8), LPS), tmp_path / "c" / "case01_seg.nii")
    assert set(case_files(tmp_path / "c")) == {"flair", "t1", "t1ce", "t2"}
    case = load_case([tmp_path / "c"])
    assert case.shape == (40, 44, 36)
    np.testing.assert_allclose(case.affine, LPS)
    assert case.spacing == (1.0, 1.0, 1.0)


def test_four_files_in_any_order_and_2023_names(tmp_path):
    paths = write_case(tmp_path, names=("t2f", "t1n", "t1c", "t2w"), prefix="BraTS-GLI-00009-000-")
    case = load_case([paths["t2"], paths["flair"], paths["t1ce"], paths["t1"]])
    assert case.convention == "brats2023"
    assert case.sources["t1ce"].endswith("-t1c.nii.gz")


def test_stacked_npy_with_channel_order(tmp_path):
    from conftest import synthetic_images

    images = synthetic_images()
    stacked = np.stack([images[m] for m in ("t1", "t1ce", "t2", "flair")])
    np.save(tmp_path / "case.npy", stacked)
    case = load_case([tmp_path / "case.npy"], channel_order=("t1", "t1ce", "t2", "flair"))
    np.testing.assert_array_equal(case.images["flair"], images["flair"])
    np.testing.assert_array_equal(case.images["t1"], images["t1"])


def test_save_labels_keeps_geometry_and_clears_private_fields(tmp_path):
    oblique = LPS.copy()
    oblique[:3, :3] = oblique[:3, :3] @ np.array([[1, 0, 0], [0, 0.8, -0.6], [0, 0.6, 0.8]]) * [1.0, 1.2, 3.0]
    paths = write_case(tmp_path / "c", affine=oblique)
    img = nib.load(paths["flair"])
    img.header["descrip"] = b"PATIENT NAME"
    img.header["cal_min"], img.header["cal_max"] = 0, 2000  # the scan's display window
    img.header.set_intent("t test", (10.0,))
    nib.save(img, paths["flair"])
    case = load_case([tmp_path / "c"])
    labels = np.zeros(case.shape, np.uint8)
    labels[5:9, 6:8, 7] = 3  # internal ET
    out = save_labels(labels, case, tmp_path / "out" / "seg.nii.gz", "brats2018")
    saved = nib.load(out)
    assert saved.shape == case.shape
    np.testing.assert_allclose(saved.affine, oblique, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(saved.dataobj), np.where(labels == 3, 4, labels))
    assert saved.header["descrip"].item() == b"brainseg labels brats2018"  # the patient's text is gone
    assert saved.get_data_dtype() == np.uint8
    # labels 0-4 in a 0-2000 window would show black; a t statistic they are not
    assert (saved.header["cal_min"], saved.header["cal_max"]) == (0, 0)
    assert saved.header.get_intent()[0] == "label"
    probabilities = nib.load(save_probabilities(np.zeros((3, *case.shape), np.float16), case, tmp_path / "p.nii.gz"))
    assert probabilities.header["cal_max"] == 0 and probabilities.header.get_intent()[0] == "estimate"


def test_save_probabilities_writes_one_4d_volume_per_channel_on_the_case_grid(tmp_path):
    paths = write_case(tmp_path / "c")
    case = load_case([tmp_path / "c"])
    rng = np.random.default_rng(0)
    probabilities = rng.random((3,) + case.shape).astype(np.float16)
    out = save_probabilities(probabilities, case, tmp_path / "p.nii.gz")
    saved = nib.load(out)
    assert saved.shape == case.shape + (3,)
    np.testing.assert_allclose(saved.affine, nib.load(paths["flair"]).affine, atol=1e-5)
    assert saved.get_data_dtype() == np.float32
    data = np.asarray(saved.dataobj)
    for channel in range(3):  # channel k of the file is channel k of the array, voxel for voxel
        np.testing.assert_array_equal(data[..., channel], probabilities[channel].astype(np.float32))
    assert saved.header["descrip"].item() == b"probabilities WT,TC,ET"
    downloaded = nib.Nifti1Image.from_bytes(gzip.decompress(probabilities_bytes(probabilities, case)))
    np.testing.assert_array_equal(np.asarray(downloaded.dataobj), data)
    for bad in (probabilities[:2], probabilities[:, :-1]):  # two channels; a grid one voxel short
        with pytest.raises(ValueError, match="expected 3 or 4 channels"):
            save_probabilities(bad, case, tmp_path / "bad.nii.gz")
    assert not (tmp_path / "bad.nii.gz").exists()


@needs_data()
def test_real_brats_case_loads():
    case = load_case([BRATS / "Brats18_CBICA_AME_1"])
    assert case.shape == (240, 240, 155)
    assert nib.aff2axcodes(case.affine) == ("L", "P", "S")
    assert case.convention == "brats2018"


@needs_data(SAMPLE_2023)
def test_real_2023_sample_loads():
    case = load_case([SAMPLE_2023])
    assert case.convention == "brats2023"
    assert set(case.images) == {"flair", "t1", "t1ce", "t2"}


def test_multi_member_gzip_reads_whole_image():
    """bgzip and concatenated gzip files hold several members; all of them are image data."""
    import gzip

    from brainseg.decode import read_volume

    raw = nib.Nifti1Image(np.arange(1000, dtype=np.float32).reshape(10, 10, 10), np.eye(4)).to_bytes()
    array, _, _ = read_volume(gzip.compress(raw[:500]) + gzip.compress(raw[500:]), "x.nii.gz")
    np.testing.assert_array_equal(array.ravel(), np.arange(1000))
    with pytest.raises(InputError, match="truncated"):
        read_volume(gzip.compress(raw[:500]) + gzip.compress(raw[500:])[:-30], "x.nii.gz")


def test_folder_skips_files_that_name_no_or_several_modalities(tmp_path):
    write_case(tmp_path / "c")
    for extra in ("case01_flair_t2_diff.nii.gz", "brainmask.nii.gz"):
        nib.save(nib.Nifti1Image(np.ones((40, 44, 36), np.float32), LPS), tmp_path / "c" / extra)
    assert {p.name for p in case_files(tmp_path / "c").values()} == {
        "case01_flair.nii.gz", "case01_t1.nii.gz", "case01_t1ce.nii.gz", "case01_t2.nii.gz"}


def test_read_label_map_from_a_path_checks_the_file_first(tmp_path):
    with pytest.raises(InputError, match=r"nowhere_seg.nii.gz: no such file"):
        read_label_map(tmp_path / "nowhere_seg.nii.gz")
    big = tmp_path / "big_seg.nii.gz"
    with open(big, "wb") as f:
        f.truncate(MAX_BYTES + 1)  # sparse: takes no disk space
    with pytest.raises(InputError, match=r"big_seg.nii.gz: 2.1 GB is too large; expected at most 2 GB"):
        read_label_map(big)


def test_read_label_map_keeps_file_values_and_geometry(tmp_path):
    values = np.zeros((6, 7, 8), np.int32)
    values[2:4, 2:4, 2:4] = 4
    nib.save(nib.Nifti1Image(values, LPS), tmp_path / "c_seg.nii.gz")
    labels = read_label_map(tmp_path / "c_seg.nii.gz")
    assert labels.values.dtype == np.uint8 and np.array_equal(labels.values, values)
    np.testing.assert_allclose(labels.affine, LPS)
    assert labels.name == str(tmp_path / "c_seg.nii.gz") and labels.spacing == (1.0, 1.0, 1.0)
    internal, convention = labels.internal()
    assert convention == "brats2018" and internal.max() == 3
    # the app reads uploads by bytes and shows labels[0].shape: the result indexes as (values, affine)
    from_bytes = read_label_map((tmp_path / "c_seg.nii.gz").read_bytes(), "upload_seg.nii.gz")
    assert from_bytes[0].shape == (6, 7, 8) and from_bytes.name == "upload_seg.nii.gz"


def test_a_label_map_brainseg_wrote_is_read_in_the_values_it_names(tmp_path):
    """Decathlon values (1 edema, 2 core, 3 ET) would be guessed as BraTS 2023 (1 core, 2 edema); the
    header brainseg writes says which they are. Another tool's description is not taken for it."""
    write_case(tmp_path / "c")
    case = load_case([tmp_path / "c"])
    labels = np.zeros(case.shape, np.uint8)
    labels[4:12, 4:12, 4:12] = 2  # edema
    labels[6:10, 6:10, 6:10] = 1  # necrotic core
    labels[7:9, 7:9, 7:9] = 3  # enhancing
    out = save_labels(labels, case, tmp_path / "seg.nii.gz", "msd")
    read = read_label_map(out)
    assert read.declared == "msd"
    internal, convention = read.internal()
    assert convention == "msd" and np.array_equal(internal, labels)
    assert read.internal("brats2023")[1] == "brats2023"  # a named convention still wins
    image = nib.load(out)
    image.header["descrip"] = b"brainseg labels unknown"
    nib.save(image, tmp_path / "other.nii.gz")
    other = read_label_map(tmp_path / "other.nii.gz")
    assert other.declared is None and other.internal()[1] == "brats2023"  # guessed from the 3


def test_a_case_from_arrays_is_checked_like_files(tmp_path):
    from brainseg.io import Case

    image = np.random.default_rng(0).random((10, 12, 8)).astype(np.float32)
    four = {m: image for m in ("flair", "t1", "t1ce", "t2")}
    assert Case(images=four, affine=LPS).shape == (10, 12, 8)
    bad = [
        (dict(images={**four, "T1ce": image}, affine=LPS), r"images: got \['T1ce', 'flair', 't1', 't1ce', 't2'\]; expected arrays named"),
        (dict(images={**four, "t2": image[:5]}, affine=LPS), r"the modalities' shapes differ \(.*t2 \(5, 12, 8\)\)"),
        (dict(images={**four, "t1": image[..., 0]}, affine=LPS), r"t1: an array of shape \(10, 12\); expected a 3D volume"),
        (dict(images={**four, "t2": np.where(image > 0.9, np.nan, image)}, affine=LPS), r"t2: \d+ voxels are NaN or infinite"),
        (dict(images=four, affine=np.eye(3)), r"affine: got .*; expected a 4x4 voxel-to-world matrix"),
        (dict(images=four, affine=np.diag([1.0, 0.0, 1.0, 1.0])), r"affine: voxels of 1 x 0 x 1 mm; expected each side between"),
        (dict(images=four, affine=np.array([[1.0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]])), r"non-singular"),
        (dict(images=four, affine=LPS, convention="BraTS2018"), r"convention: got 'BraTS2018'; expected one of brats2018"),
    ]
    for kwargs, message in bad:
        with pytest.raises(InputError, match=message):
            Case(**kwargs)


def test_load_case_takes_one_folder_given_on_its_own(tmp_path):
    write_case(tmp_path / "case")
    assert load_case(str(tmp_path / "case")).shape == load_case([tmp_path / "case"]).shape == (40, 44, 36)
    assert load_case(tmp_path / "case").sources == load_case([tmp_path / "case"]).sources


def test_unscaled_small_integers_stay_integers_and_scaled_ones_are_applied():
    from brainseg.decode import read_volume

    data = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4) - 5
    plain = nib.Nifti1Image(data, LPS)
    array, _, _ = read_volume(plain.to_bytes(), "scan_t1.nii")
    assert array.dtype == np.int16 and (array == data).all()  # half of float32's memory, exact
    scaled = nib.Nifti1Image(data, LPS)
    scaled.header.set_slope_inter(2.0, 10.0)
    array, _, _ = read_volume(scaled.to_bytes(), "scan_t1.nii")
    assert array.dtype == np.float32 and (array == data * 2.0 + 10.0).all()


def test_a_label_map_of_arrays_without_a_header_carries_both_matrices(tmp_path):
    """A notebook's Case (no file header): the written map's qform and sform both hold its affine, so a
    reader that trusts only one of them places it right."""
    affine = np.diag([-2.0, -2.0, 2.0, 1.0])
    affine[:3, 3] = (10, 20, -30)
    case = Case({"flair": np.zeros((4, 5, 6), np.float32)}, affine)
    saved = nib.load(save_labels(np.zeros((4, 5, 6), np.uint8), case, tmp_path / "seg.nii.gz", "brats2018"))
    assert (saved.header["qform_code"], saved.header["sform_code"]) == (2, 2)
    np.testing.assert_allclose(saved.get_qform(), affine)
    np.testing.assert_allclose(saved.get_sform(), affine)


@pytest.mark.parametrize("reference, scans, other", [
    ("case9_seg.nii.gz", ["case7_flair.nii.gz", "case7_t1.nii.gz"], "case9"),
    ("BraTS-GLI-00999-000-seg.nii.gz", ["Brats18_CBICA_ABM_1_flair.nii.gz"], "brats_gli_00999_000"),
    ("Brats18_CBICA_ABM_1_seg.nii.gz", ["Brats18_CBICA_ABM_1_flair.nii.gz"], None),
    ("Brats18_CBICA_ABM_1_GlistrBoost_ManuallyCorrected.nii.gz", ["Brats18_CBICA_ABM_1_flair.nii.gz"], None),  # BraTS's own
    ("BRATS_001.nii.gz", ["BRATS_001_0000.nii.gz", "BRATS_001_0001.nii.gz"], None),  # nnU-Net's labelsTr / imagesTr
    ("sub-01_ses-01_dseg.nii.gz", ["sub-01_ses-01_T1w.nii.gz", "sub-01_ses-01_FLAIR.nii.gz"], None),  # BIDS
    ("ground_truth.nii.gz", ["case7_flair.nii.gz"], None),  # no case id in the name: nothing to compare
    ("case9_seg.nii.gz", ["flair.nii.gz", "t1.nii.gz"], None),  # nor in the scans' names
])
def test_a_reference_named_for_another_case_is_told_from_the_usual_names(reference, scans, other):
    from brainseg.naming import names_another_case

    assert names_another_case(reference, scans) == other


def test_macos_metadata_files_beside_the_scans_are_not_taken_for_them(tmp_path):
    """Archives made on a Mac carry "._NAME" files (resource forks, not images) beside every scan."""
    paths = write_case(tmp_path / "case")
    for path in paths.values():
        (path.parent / f"._{path.name}").write_bytes(b"\x00\x05\x16\x07" * 64)
    (tmp_path / "case" / "._case01_seg.nii.gz").write_bytes(b"\x00\x05\x16\x07" * 64)
    assert case_files(tmp_path / "case") == paths
    assert load_case(tmp_path / "case").sources["flair"] == "case01_flair.nii.gz"


def test_the_same_file_for_two_channels_is_refused(tmp_path):
    from brainseg.io import load_channel_files

    paths = write_case(tmp_path / "case")
    with pytest.raises(InputError, match="given twice; expected four different files"):
        load_channel_files([paths["t1"]] * 4, ["flair", "t1", "t1ce", "t2"])


def test_arrays_that_are_not_intensities_are_refused_naming_the_modality():
    from conftest import synthetic_images

    images = synthetic_images()
    with pytest.raises(InputError, match=r"^t1: an array of type object; expected real-valued intensities"):
        Case({**images, "t1": images["t1"].astype(object)}, LPS)
    with pytest.raises(InputError, match=r"voxels of 0\.001 x 0\.001 x 0\.001 mm; expected each side between 0\.05 and 30 mm"):
        Case(images, np.diag([0.001, 0.001, 0.001, 1.0]))  # a header in metres
    Case(images, np.diag([0.18, 0.18, 13.0, 1.0]))  # 7 T in-plane, thick slices with a gap: real scans, read


def test_a_copy_of_one_scan_under_another_modality_name_is_refused(tmp_path):
    import shutil

    paths = write_case(tmp_path / "c")
    shutil.copy(paths["t1"], paths["t2"])  # a missing T2 "filled in" with the T1
    with pytest.raises(InputError, match=r"case01_t1.nii.gz \(T1\) and .*case01_t2.nii.gz \(T2\) hold the same image; "
                                         r"expected four different scans"):
        load_case(tmp_path / "c")


def test_scans_that_record_no_orientation_are_read_and_warned_about(tmp_path, caplog):
    paths = write_case(tmp_path / "c")
    for path in paths.values():
        image = nib.load(path)
        image = nib.Nifti1Image(np.asarray(image.dataobj), image.affine)
        image.set_qform(None, code=0)
        image.set_sform(None, code=0)
        nib.save(image, path)
    case = load_case(tmp_path / "c")
    assert case.shape == (40, 44, 36)
    assert "case01_flair.nii.gz" in caplog.text and "the header records no orientation (qform and sform codes both 0;" in caplog.text
    caplog.clear()
    load_case(write_case(tmp_path / "d").values())
    assert "records no orientation" not in caplog.text


def test_a_label_map_covering_part_of_the_grid_is_placed_on_it_whatever_its_orientation():
    from brainseg.io import labels_onto_grid

    shape, affine = (20, 22, 18), np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[:3, 3] = (10.0, 12.0, -5.0)
    full = np.zeros(shape, np.uint8)
    full[5:9, 6:12, 4:7], full[6, 8, 5] = 2, 4
    # the crop [3:12, 4:15, 2:10], stored as RAS (x and y flipped), as another tool may write it
    crop = full[3:12, 4:15, 2:10][::-1, ::-1]
    crop_affine = affine @ np.array([[-1, 0, 0, 11], [0, -1, 0, 14], [0, 0, 1, 2], [0, 0, 0, 1.0]])
    np.testing.assert_array_equal(labels_onto_grid(crop, crop_affine, shape, affine), full)
    # reaching beyond the grid, or the grid's own size moved by whole voxels: not a part of this grid
    beyond = crop_affine.copy()
    beyond[:3, 3] = affine[:3, :3] @ (-1, 4, 2) + affine[:3, 3]
    assert labels_onto_grid(crop, beyond, shape, affine) is None
    moved = affine.copy()
    moved[:3, 3] += affine[:3, :3] @ (0, 0, 1)
    assert labels_onto_grid(full, moved, shape, affine) is None
    # shifted by part of a voxel, or on other voxel sides: it would need resampling
    half = crop_affine.copy()
    half[0, 3] += 0.5
    assert labels_onto_grid(crop, half, shape, affine) is None
    assert labels_onto_grid(crop, crop_affine @ np.diag([2.0, 1, 1, 1]), shape, affine) is None
    assert labels_onto_grid(np.zeros_like(crop), crop_affine, shape, affine) is None  # no labels: no crop of anything
