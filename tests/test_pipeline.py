"""What a segmentation reports beside its labels: the scans' doubtful points, what post-processing
removed, and the record of what made it; and how .npy scans, which carry no geometry, are read."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from brainseg.checkpoint import load_checkpoint
from brainseg.config import PostprocessConfig, PreprocessConfig
from brainseg.decode import NPY_AFFINE
from brainseg.errors import InputError
from brainseg.io import load_case, load_files
from brainseg.labelmaps import read_label_map
from brainseg.pipeline import segment_case
from brainseg.preprocess import prepare, unstripped_warning
from brainseg.report import run_record
from conftest import BRATS, LPS, needs_data, synthetic_images, write_case


def _all_tumour(batch: torch.Tensor) -> torch.Tensor:
    """Every window voxel is WT, TC and ET."""
    return torch.full((batch.shape[0], 3, *batch.shape[2:]), 8.0)


def test_npy_scans_go_through_as_their_arrays_stand(tmp_path, tiny_checkpoint):
    """An array saved from a BraTS NIfTI (LPS voxel order) is neither flipped for the network nor mirrored."""
    paths = write_case(tmp_path / "nifti")
    npy = tmp_path / "npy"
    npy.mkdir()
    for modality, path in paths.items():
        np.save(npy / f"case01_{modality}.npy", np.asarray(load_case([paths[modality].parent]).images[modality]))
    nifti_case, npy_case = load_case([tmp_path / "nifti"]), load_case([npy])
    assert nifti_case.has_geometry and not npy_case.has_geometry
    np.testing.assert_array_equal(npy_case.affine, NPY_AFFINE)
    config = PreprocessConfig()
    assert torch.equal(prepare(npy_case, config).image, prepare(nifti_case, config).image)
    loaded = load_checkpoint(tiny_checkpoint)
    np.testing.assert_array_equal(segment_case(npy_case, loaded, device="cpu").labels, segment_case(nifti_case, loaded, device="cpu").labels)
    # a NIfTI reference on .npy scans: only the shapes can be compared
    reference = tmp_path / "case01_seg.nii.gz"
    nib.save(nib.Nifti1Image(segment_case(nifti_case, loaded, device="cpu").labels, LPS), reference)
    assert read_label_map(reference, case=npy_case).values.shape == npy_case.shape


def test_a_npy_scan_beside_nifti_scans_takes_their_grid(tmp_path, caplog):
    """Only the .npy lacks a voxel-to-world matrix: the case keeps the NIfTI scans' 2 mm RAS grid, whichever
    modality the .npy is, and warns that the .npy was taken to be stored as they are; with .npy alone it says
    that the whole grid is assumed."""
    ras_2mm = np.diag([2.0, 2.0, 2.0, 1.0])
    paths = write_case(tmp_path / "nifti", affine=ras_2mm)
    for modality in ("flair", "t2"):
        npy = tmp_path / f"{modality}.npy"
        np.save(npy, np.asarray(nib.load(paths[modality]).dataobj))
        files = [npy if m == modality else p for m, p in paths.items()]
        with caplog.at_level(logging.WARNING, logger="brainseg.io"):
            case = load_case(files)
        assert case.has_geometry and case.spacing == (2.0, 2.0, 2.0)
        np.testing.assert_array_equal(case.affine, ras_2mm)
        assert case.assumed_on_grid == (npy.name,)
        assert f"{npy.name}: no voxel-to-world matrix (.npy), taken to lie on " in caplog.text
        assert "no scan carries" not in caplog.text
        caplog.clear()
    for modality, path in paths.items():
        np.save(tmp_path / f"case01_{modality}.npy", np.asarray(nib.load(path).dataobj))
    with caplog.at_level(logging.WARNING, logger="brainseg.io"):
        case = load_case([tmp_path / f"case01_{m}.npy" for m in paths])
    assert not case.has_geometry and "no scan carries a voxel-to-world matrix" in caplog.text


def test_scans_without_zero_background_are_said_to_look_not_skull_stripped():
    images = synthetic_images()
    brain = np.any([v != 0 for v in images.values()], axis=0)
    assert unstripped_warning(brain, voxel_ml=0.001) is None
    noisy = np.ones_like(brain)
    noisy[0] = False  # one face clean: of the 9568 border voxels of 40x44x36, 1584 + 2x36 + 2x44 are zero
    said = unstripped_warning(noisy, voxel_ml=0.001)
    assert said.startswith("82% of the voxels on the volume's border are non-zero") and "skull-strip" in said


def test_a_head_with_zeroed_background_is_said_to_look_not_skull_stripped():
    head = np.zeros((60, 60, 60), dtype=bool)
    head[5:-5, 5:-5, 5:-5] = True  # zero border; 50^3 voxels
    assert unstripped_warning(head, voxel_ml=0.019) is None  # 2,375 mL
    said = unstripped_warning(head, voxel_ml=0.021)  # 2,625 mL
    assert said.startswith("the scans are non-zero over 2,625 mL, more than a skull-stripped adult brain")
    assert "not skull-stripped" in said


@needs_data()
def test_real_brains_pass_and_the_same_brains_with_skull_and_scalp_do_not():
    folder = BRATS / "Brats18_CBICA_AME_1"  # 1,729 mL: the second-largest brain of the 24
    case = load_case([folder])
    config = PreprocessConfig()
    assert prepare(case, config).warnings == []
    brain = np.any([image != 0 for image in case.images.values()], axis=0)
    # a 12 mm shell of bone and scalp around the brain, background still 0 (e.g. thresholded air)
    shell = ndimage.binary_dilation(brain, iterations=12) & ~brain
    for image in case.images.values():
        image[shell] = np.percentile(image[brain], 90)
    warnings = prepare(case, config).warnings
    assert len(warnings) == 1 and "mL, more than a skull-stripped adult brain" in warnings[0]


def test_a_segmentation_carries_the_warnings_and_logs_them(tmp_path, tiny_checkpoint, caplog):
    write_case(tmp_path / "case")
    case = load_case([tmp_path / "case"])
    loaded = load_checkpoint(tiny_checkpoint)
    assert segment_case(case, loaded, device="cpu", predictor=_all_tumour).warnings == []
    rng = np.random.default_rng(0)
    for image in case.images.values():
        image[image == 0] = rng.uniform(1, 30, int((image == 0).sum()))  # a scanned head's noise around the brain
    with caplog.at_level(logging.WARNING):
        result = segment_case(case, loaded, device="cpu", predictor=_all_tumour)
    assert len(result.warnings) == 1 and "not skull-stripped" in result.warnings[0]
    assert "case01: 100% of the voxels on the volume's border" in caplog.text


def test_what_post_processing_removed_is_reported_in_millilitres(tmp_path, tiny_checkpoint):
    write_case(tmp_path / "case")
    case = load_case([tmp_path / "case"])
    loaded = load_checkpoint(tiny_checkpoint)
    kept = segment_case(case, loaded, postprocess=PostprocessConfig(), device="cpu", predictor=_all_tumour)
    wt_ml = np.count_nonzero(kept.labels) * np.prod(case.spacing) / 1000
    assert kept.removed_ml == 0 and wt_ml > 0
    gone = segment_case(case, loaded, postprocess=PostprocessConfig(min_component_voxels=10**6), device="cpu", predictor=_all_tumour)
    assert not gone.labels.any() and gone.removed_ml == wt_ml


def test_the_run_record_names_the_exact_weights_and_settings(tmp_path, tiny_checkpoint):
    write_case(tmp_path / "case")
    loaded = load_checkpoint(tiny_checkpoint)
    result = segment_case(load_case([tmp_path / "case"]), loaded, device="cpu")
    record = run_record(loaded, loaded.config.inference, loaded.config.postprocess, result)
    assert record["checkpoint_sha256"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert record["device"] == "cpu" and record["precision"] == result.precision and record["windows"] == result.windows
    assert record["settings"]["inference"]["patch_size"] == [16, 16, 16] and record["model"] == "tiny"
    assert record["window_shape"] == [16, 16, 16]
    # "whole brain" asks for 512 voxels a side; the record says which window ran: the model grid, rounded
    # up to the tiny network's divisor
    whole = replace(loaded.config.inference, patch_size=(512, 512, 512))
    result = segment_case(load_case([tmp_path / "case"]), loaded, whole, device="cpu")
    grid = prepare(load_case([tmp_path / "case"]), loaded.config.preprocess).image.shape[1:]
    divisor = loaded.config.model.divisor
    assert result.windows == 1
    assert run_record(loaded, whole, loaded.config.postprocess, result)["window_shape"] == [-(-n // divisor) * divisor for n in grid]


def test_scans_named_for_different_cases_are_logged(caplog):
    images = synthetic_images()
    from io import BytesIO

    def npy(array):
        buffer = BytesIO()
        np.save(buffer, array)
        return buffer.getvalue()

    files = {f"caseA_{m}.npy": npy(images[m]) for m in ("flair", "t1", "t1ce")} | {"caseB_t2.npy": npy(images["t2"])}
    with caplog.at_level(logging.WARNING):
        load_files(files)
    assert "the scans' file names name 2 cases (casea, caseb)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # names that are the modality alone, or BIDS names, name no case
        load_files({f"{m}.npy": npy(images[m]) for m in ("flair", "t1", "t1ce", "t2")})
        load_files({"sub-01_FLAIR.npy": npy(images["flair"]), "sub-01_T1w.npy": npy(images["t1"]),
                    "sub-01_ce-gadolinium_T1w.npy": npy(images["t1ce"]), "sub-01_T2w.npy": npy(images["t2"])})
    assert "cases (" not in caplog.text


def test_a_scan_stored_in_another_orientation_is_reoriented_not_refused(tmp_path):
    """The same voxels flipped along x with the matching affine: nothing is misregistered."""
    paths = write_case(tmp_path / "case")
    original = load_case([tmp_path / "case"])
    t2 = nib.load(paths["t2"])
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = t2.shape[0] - 1
    nib.save(nib.Nifti1Image(np.asarray(t2.dataobj)[::-1], t2.affine @ flip), paths["t2"])
    case = load_case([tmp_path / "case"])
    np.testing.assert_array_equal(case.images["t2"], original.images["t2"])
    np.testing.assert_array_equal(case.affine, original.affine)
    labels = np.zeros(case.shape, np.uint8)
    labels[5:9, 6:10, 7:11] = 2
    reference = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(labels[::-1].copy(), t2.affine @ flip), reference)
    np.testing.assert_array_equal(read_label_map(reference, case=case).values, labels)
    shifted = t2.affine.copy()
    shifted[0, 3] += 10  # really another position: refused
    nib.save(nib.Nifti1Image(np.asarray(t2.dataobj), shifted), paths["t2"])
    with pytest.raises(InputError, match="voxel-to-world matrix differs"):
        load_case([tmp_path / "case"])


def test_an_uncompressed_nifti_named_nii_gz_is_read(tmp_path):
    from brainseg.decode import read_volume

    image = nib.Nifti1Image(np.arange(60, dtype=np.float32).reshape(3, 4, 5), LPS)
    array, affine, _ = read_volume(image.to_bytes(), "scan_flair.nii.gz")
    np.testing.assert_array_equal(array, image.get_fdata())
    np.testing.assert_array_equal(affine, LPS)
    with pytest.raises(InputError, match=r"x.nii.gz: named .gz but not gzip-compressed, nor an uncompressed NIfTI"):
        read_volume(b"\x89PNG" + bytes(400), "x.nii.gz")


def test_segment_case_refuses_a_case_without_all_four_scans_and_a_window_the_network_cannot_run(tmp_path, tiny_checkpoint):
    from dataclasses import replace

    from brainseg.config import SettingError
    from brainseg.io import Case

    write_case(tmp_path / "case")
    case = load_case([tmp_path / "case"])
    loaded = load_checkpoint(tiny_checkpoint)
    grid_only = Case(images={"flair": case.images["flair"]}, affine=case.affine)  # enough to write a map on
    with pytest.raises(InputError, match="the case has no T1, T1CE, T2; expected four scans"):
        segment_case(grid_only, loaded, device="cpu")
    divisor = loaded.config.model.divisor
    with pytest.raises(SettingError, match=f"expected a window with a side longer than {divisor} voxels"):
        segment_case(case, loaded, inference=replace(loaded.config.inference, patch_size=(divisor,) * 3), device="cpu")


def test_the_package_offers_the_notebook_calls_without_importing_them_up_front():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import sys, brainseg; print('torch' in sys.modules)"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"  # importing the package loads no network code
    from brainseg.pipeline import segment_case as defined
    from brainseg.scoring import evaluate_files

    import brainseg

    assert brainseg.segment_case is defined and brainseg.evaluate_files is evaluate_files
    for name in brainseg.__all__:
        assert getattr(brainseg, name) is not None, name
    with pytest.raises(AttributeError, match="has no attribute 'segment'"):
        brainseg.segment


def test_a_segmentation_shows_its_volumes_not_its_arrays(tmp_path, tiny_checkpoint):
    write_case(tmp_path / "case")
    result = segment_case(load_case(tmp_path / "case"), load_checkpoint(tiny_checkpoint), device="cpu", predictor=_all_tumour)
    shown = repr(result)
    assert shown.startswith("Segmentation(labels (40, 44, 36) uint8, WT ") and "array(" not in shown


def test_a_constant_array_given_to_the_library_is_refused_naming_it(tiny_checkpoint):
    """Files are checked as they are read; a caller's arrays are checked before the network runs."""
    from brainseg.checkpoint import load_checkpoint
    from brainseg.errors import InputError
    from brainseg.io import Case
    from brainseg.pipeline import segment_case

    images = synthetic_images()
    case = Case({**images, "t1": np.full_like(images["t1"], 7.0)}, LPS)
    with pytest.raises(InputError, match=r"^t1: every voxel has the value 7; expected an MRI scan with contrast"):
        segment_case(case, load_checkpoint(tiny_checkpoint))
