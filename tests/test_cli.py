"""The command-line contract, on synthetic cases and a tiny checkpoint (fast)."""
import csv
import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from brainseg.cli import main
from brainseg.labelmaps import read_label_map
from conftest import LPS, synthetic_images, write_case


def test_segment_writes_label_map_on_input_grid_and_stats(tmp_path, tiny_checkpoint, capsys):
    write_case(tmp_path / "case")
    out = tmp_path / "out" / "seg.nii.gz"
    code = main(["segment", str(tmp_path / "case"), "-o", str(out), "--checkpoint", str(tiny_checkpoint),
                 "--stats", str(tmp_path / "stats.json"), "--patch-size", "16", "16", "8", "--overlap", "0.5",
                 "--max-component-distance", "25"])
    assert code == 0
    image = nib.load(out)
    assert image.shape == (40, 44, 36)
    np.testing.assert_allclose(image.affine, LPS)
    labels = np.asarray(image.dataobj)
    assert set(np.unique(labels).tolist()) <= {0, 1, 2, 4}
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert set(stats["regions"]) == {"WT", "TC", "ET"}
    assert set(stats["labels"]) == {"1", "2", "4"}
    assert stats["regions"]["WT"]["ml"] == pytest.approx(stats["regions"]["WT"]["voxels"] / 1000)
    # the statistics describe the label map written, voxel for voxel
    assert stats["regions"]["WT"]["voxels"] == np.count_nonzero(labels) > 0
    assert stats["regions"]["TC"]["voxels"] == np.count_nonzero(np.isin(labels, (1, 4)))
    assert stats["regions"]["ET"]["voxels"] == np.count_nonzero(labels == 4)
    for label in ("1", "2", "4"):
        assert stats["labels"][label]["voxels"] == np.count_nonzero(labels == int(label)), label
    # --patch-size/--overlap took effect: the window count is the one they imply on the model grid
    assert stats["windows"] == _windows_on_model_grid((16, 16, 8), 0.5) == 16
    assert _windows_on_model_grid((16, 16, 16), 0.5) == 8  # the checkpoint's own patch would give another count
    assert {"preprocess", "windows", "save", "total"} <= set(stats["seconds"])
    # the settings used are recorded: the checkpoint's, with the overrides given
    assert stats["settings"] == {"inference": {"patch_size": [16, 16, 8], "overlap": 0.5, "batch_size": 1, "tta": False, "threshold": 0.5},
                                 "postprocess": {"min_component_voxels": 0, "min_et_voxels": 0, "max_component_distance_mm": 25.0,
                                                 "min_core_component_voxels": 50}}
    assert "WT whole tumour" in capsys.readouterr().out


def _windows_on_model_grid(patch, overlap) -> int:
    """Windows a run of ``patch``/``overlap`` places on write_case's images, derived from the images themselves:
    brain box (nonzero in any scan, grown by the crop margin) at 1 mm, resampled to the model spacing."""
    from brainseg.config import PreprocessConfig
    from brainseg.inference import plan_windows

    config = PreprocessConfig()  # the tiny checkpoint's preprocessing: the defaults
    brain = np.zeros((40, 44, 36), bool)
    for image in synthetic_images().values():
        brain |= image.astype(np.int16) != 0  # as written to disk
    box = []
    for axis in range(3):
        idx = np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(min(idx[-1] + 1 + config.crop_margin, brain.shape[axis]) - max(idx[0] - config.crop_margin, 0))
    model_shape = tuple(max(int(round(n * 1.0 / t)), 1) for n, t in zip(box, config.spacing))
    return len(plan_windows(model_shape, patch, overlap).starts)


def test_cohort_mode_resumes_and_splits_by_rank(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    for name in ("a", "b", "c"):
        write_case(tmp_path / "cohort" / name, prefix=f"{name}_")
    out = tmp_path / "preds"
    args = ["segment", str(tmp_path / "cohort"), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--no-progress"]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(args) == 0
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == ["b_seg.nii.gz"]
    monkeypatch.setenv("RANK", "0")
    assert main(args) == 0
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == ["a_seg.nii.gz", "b_seg.nii.gz", "c_seg.nii.gz"]
    before = (out / "a_seg.nii.gz").stat().st_mtime_ns
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert main(args) == 0  # everything done: skipped, nothing rewritten
    assert (out / "a_seg.nii.gz").stat().st_mtime_ns == before
    (out / "c_stats.json").unlink()  # a run stopped between the label map and its statistics
    assert main(args) == 0
    c_stats = json.loads((out / "c_stats.json").read_text())
    a_stats = json.loads((out / "a_stats.json").read_text())
    assert c_stats["regions"] == a_stats["regions"]  # same synthetic images, same result
    assert c_stats["regions"]["WT"]["voxels"] == np.count_nonzero(np.asarray(nib.load(out / "c_seg.nii.gz").dataobj)) > 0
    assert (out / "a_seg.nii.gz").stat().st_mtime_ns == before
    # other label values asked for: every case is redone, so the folder never holds two conventions
    brats = np.asarray(nib.load(out / "a_seg.nii.gz").dataobj)
    assert main(args + ["--labels", "msd"]) == 0
    for name in ("a", "b", "c"):
        assert json.loads((out / f"{name}_stats.json").read_text())["label_convention"] == "msd"
    np.testing.assert_array_equal(np.asarray(nib.load(out / "a_seg.nii.gz").dataobj), np.choose(brats, [0, 2, 1, 0, 3]))
    again = (out / "a_seg.nii.gz").stat().st_mtime_ns
    assert main(args + ["--labels", "msd"]) == 0 and (out / "a_seg.nii.gz").stat().st_mtime_ns == again
    # another threshold: a sweep must not score the earlier label maps again
    capsys.readouterr()
    assert main(args + ["--labels", "msd", "--threshold", "0.9"]) == 0
    assert "a: redone, its statistics record settings other than this run's" in capsys.readouterr().err
    assert json.loads((out / "a_stats.json").read_text())["settings"]["inference"]["threshold"] == 0.9
    assert (out / "a_seg.nii.gz").stat().st_mtime_ns != again


def test_cohort_goes_on_past_an_unreadable_case_and_skips_what_is_not_a_case(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    from pathlib import Path

    for name in ("a", "b", "c"):
        write_case(tmp_path / "cohort" / name, prefix=f"{name}_")
    (tmp_path / "cohort" / ".ipynb_checkpoints").mkdir()
    out = tmp_path / "cohort" / "preds"  # the output folder inside the input folder
    real_read = Path.read_bytes

    def failing_disk(path):
        if path.name == "b_t2.nii.gz":
            raise OSError(5, "Input/output error")
        return real_read(path)

    monkeypatch.setattr(Path, "read_bytes", failing_disk)
    args = ["segment", str(tmp_path / "cohort"), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--no-progress"]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"error: b: {tmp_path / 'cohort' / 'b' / 'b_t2.nii.gz'}: cannot be read (Input/output error); expected a readable file"]
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == ["a_seg.nii.gz", "c_seg.nii.gz"]
    assert f"2 of 3 cases segmented into {out}" in captured.out
    monkeypatch.setattr(Path, "read_bytes", real_read)
    assert main(args) == 0  # resumed: only b is done now, and preds/ is still not a case
    assert f"3 of 3 cases segmented into {out} (2 by an earlier run)" in capsys.readouterr().out


def test_cohort_goes_on_past_a_case_that_fails_unexpectedly(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    """An error nothing foresaw (numpy's, torch's) ends that case, named, not the cohort."""
    import brainseg.pipeline

    for name in ("a", "b", "c"):
        write_case(tmp_path / "cohort" / name, prefix=f"{name}_")
    real = brainseg.pipeline.segment_case

    def failing(case, *args, **kwargs):
        if case.sources["flair"].startswith("b_"):
            raise RuntimeError("Expected more than 1 spatial element when training")
        return real(case, *args, **kwargs)

    monkeypatch.setattr(brainseg.pipeline, "segment_case", failing)
    out = tmp_path / "preds"
    assert main(["segment", str(tmp_path / "cohort"), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == ["error: b: failed unexpectedly (RuntimeError: Expected more than 1 spatial "
                                                 "element when training); the other cases go on"]
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == ["a_seg.nii.gz", "c_seg.nii.gz"]


def test_cohort_with_no_case_folders_or_an_unwritable_output_fails_before_any_inference(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    import tempfile

    import brainseg.pipeline

    monkeypatch.setattr(brainseg.pipeline, "segment_case", lambda *a, **k: pytest.fail("segmented before the check"))
    (tmp_path / "empty" / ".ipynb_checkpoints").mkdir(parents=True)
    assert main(["segment", str(tmp_path / "empty"), "-o", str(tmp_path / "empty" / "preds"), "--checkpoint", str(tiny_checkpoint)]) == 2
    assert "no case folders (hidden folders and the output folder" in capsys.readouterr().err
    write_case(tmp_path / "cohort" / "a", prefix="a_")
    assert main(["segment", str(tmp_path / "cohort"), "-o", str(tmp_path / "cohort" / "."), "--checkpoint", str(tiny_checkpoint)]) == 2
    assert "is the folder of cases itself; choose another output folder" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "cohort").iterdir()) == ["a"]

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    out = tmp_path / "preds"
    assert main(["segment", str(tmp_path / "cohort"), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {out}: Permission denied; expected a folder the results can be written to"


def test_single_case_output_through_a_file_is_refused_before_inference(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    import brainseg.pipeline

    write_case(tmp_path / "case")
    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(brainseg.pipeline, "segment_case", lambda *a, **k: pytest.fail("segmented before the check"))
    out = tmp_path / "out" / "seg.nii.gz"
    status = main(["segment", str(tmp_path / "case"), "-o", str(out), "--checkpoint", str(tiny_checkpoint),
                   "--save-probabilities", "--stats", str(tmp_path / "afile" / "stats.json")])
    assert status == 2
    assert f"error: {tmp_path / 'afile'}: is a file, not a folder; cannot write" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_segment_writes_a_slicer_segmentation_holding_the_nifti_label_map(tmp_path, tiny_checkpoint, capsys):
    write_case(tmp_path / "case")
    common = [str(tmp_path / "case"), "--checkpoint", str(tiny_checkpoint), "--no-progress"]
    assert main(["segment", *common, "-o", str(tmp_path / "seg.nii.gz")]) == 0
    assert main(["segment", *common, "-o", str(tmp_path / "case01.seg.nrrd"), "--save-probabilities"]) == 0
    nifti = np.asarray(nib.load(tmp_path / "seg.nii.gz").dataobj)
    assert np.isin(nifti, (1, 2, 4)).sum() > 100  # the comparison below is not of two empty maps
    slicer = read_label_map(tmp_path / "case01.seg.nrrd")
    assert slicer.read_as() == ("brats2023", "segments")
    np.testing.assert_array_equal(slicer.internal()[0], read_label_map(tmp_path / "seg.nii.gz").internal()[0])
    np.testing.assert_allclose(slicer.affine, LPS, atol=1e-6)
    assert nib.load(tmp_path / "case01_probabilities.nii.gz").shape == (40, 44, 36, 3)
    assert main(["segment", *common, "-o", str(tmp_path / "seg.nrrd")]) == 2
    assert "seg.nrrd: output must end in .nii.gz, .nii or .seg.nrrd" in capsys.readouterr().err


def test_save_probabilities_beside_each_label_map(tmp_path, tiny_checkpoint):
    write_case(tmp_path / "case")
    out = tmp_path / "seg.nii.gz"
    assert main(["segment", str(tmp_path / "case"), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--no-progress", "--save-probabilities",
                 "--min-core-component", "0"]) == 0  # probabilities are before post-processing
    probabilities = nib.load(tmp_path / "seg_probabilities.nii.gz")
    assert probabilities.shape == (40, 44, 36, 3)
    np.testing.assert_allclose(probabilities.affine, LPS)
    p = np.asarray(probabilities.dataobj)
    labels = np.asarray(nib.load(out).dataobj)
    # labels are the thresholded probabilities (float16 storage rounds voxels at the boundary)
    core = np.isin(labels, (1, 4))
    assert core.sum() > 100  # the TC check below is not vacuous
    assert (p[..., 1][core] > 0.5 - 1e-3).all()
    assert (p[..., 1][labels == 2] <= 0.5 + 1e-3).all()
    # regions nest (TC inside WT): a TC probability over 0.5 outside WT is background, never core
    assert (p[..., 0][(labels == 0) & (p[..., 1] > 0.5 + 1e-3)] <= 0.5 + 1e-3).all()
    assert (p[..., 0][labels == 0] <= 0.5 + 1e-3).all()
    assert (p[..., 0][labels > 0] > 0.5 - 1e-3).all()
    assert (p[..., 2][labels == 4] > 0.5 - 1e-3).all()
    # cohort: CASE_seg_probabilities.nii.gz; a resumed run writes the probabilities an earlier one lacked
    write_case(tmp_path / "cohort" / "a", prefix="a_")
    args = ["segment", str(tmp_path / "cohort"), "-o", str(tmp_path / "preds"), "--checkpoint", str(tiny_checkpoint), "--no-progress"]
    assert main(args) == 0
    assert not (tmp_path / "preds" / "a_seg_probabilities.nii.gz").exists()
    assert main(args + ["--save-probabilities"]) == 0
    assert nib.load(tmp_path / "preds" / "a_seg_probabilities.nii.gz").shape == (40, 44, 36, 3)


def test_evaluate_files_and_folders(tmp_path, capsys):
    ref = np.zeros((20, 20, 20), np.uint8)
    ref[5:10, 5:10, 5:10] = 2
    ref[6:8, 6:8, 6:8] = 4
    pred = ref.copy()
    pred[9, 5:10, 5:10] = 0  # 25 edema voxels missed
    (tmp_path / "p").mkdir()
    (tmp_path / "r" / "c1").mkdir(parents=True)
    nib.save(nib.Nifti1Image(pred, LPS), tmp_path / "p" / "c1_seg.nii.gz")
    nib.save(nib.Nifti1Image(ref, LPS), tmp_path / "r" / "c1" / "c1_seg.nii.gz")
    files = [str(tmp_path / "p" / "c1_seg.nii.gz"), str(tmp_path / "r" / "c1" / "c1_seg.nii.gz")]
    assert main(["evaluate", *files, "--csv", str(tmp_path / "one.csv")]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("c1 ")  # the row names the reference's case
    with (tmp_path / "one.csv").open(newline="") as f:
        assert [(r["case"], float(r["dice_WT"])) for r in csv.DictReader(f)] == [("c1", pytest.approx(2 * 100 / 225))]
    assert main(["evaluate", *files, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["regions"]["WT"]["dice"] == pytest.approx(2 * 100 / 225)
    assert result["regions"]["ET"]["dice"] == 1.0
    # the known answer, from the arrays themselves: WT is every labelled voxel, ET is label 4
    wt_dice = 2 * np.count_nonzero((pred > 0) & (ref > 0)) / (np.count_nonzero(pred > 0) + np.count_nonzero(ref > 0))
    assert wt_dice == pytest.approx(2 * 100 / 225)
    assert np.array_equal(pred == 4, ref == 4)  # ET untouched: Dice exactly 1
    assert main(["evaluate", str(tmp_path / "p"), str(tmp_path / "r"), "--csv", str(tmp_path / "t.csv")]) == 0
    assert "c1" in capsys.readouterr().out
    assert (tmp_path / "t.csv").read_text().startswith("case,dice_WT")
    assert main(["evaluate", str(tmp_path / "p"), str(tmp_path / "r"), "--json"]) == 0

    def strict(constant):  # NaN / Infinity are not JSON: jq and most parsers refuse them
        raise ValueError(f"{constant} in the output")

    folders = json.loads(capsys.readouterr().out, parse_constant=strict)
    assert list(folders["cases"]) == ["c1"]
    assert folders["summary"]["WT"]["dice"]["std"] is None  # one case: no spread, written as null
    assert folders["cases"]["c1"]["regions"]["WT"]["dice"] == pytest.approx(wt_dice)
    assert folders["cases"]["c1"]["regions"]["ET"]["dice"] == 1.0
    assert folders["summary"]["WT"]["dice"]["mean"] == pytest.approx(wt_dice)
    with (tmp_path / "t.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["case"] for row in rows] == ["c1"]
    assert float(rows[0]["dice_WT"]) == pytest.approx(wt_dice)
    assert float(rows[0]["dice_ET"]) == 1.0


def test_evaluate_reads_the_label_conventions_it_is_told(tmp_path, capsys):
    """A Decathlon reference (1 edema, 2 non-enhancing, 3 enhancing) and a BraTS 2024 one (4 = resection
    cavity) against a perfect prediction in brainseg's BraTS 2018 values."""
    pred = np.zeros((20, 20, 20), np.uint8)
    pred[4:12, 4:12, 4:12] = 2  # edema
    pred[6:10, 6:10, 6:10] = 1  # necrotic core
    pred[7:9, 7:9, 7:9] = 4  # enhancing
    msd = np.choose(pred, [0, 2, 1, 0, 3]).astype(np.uint8)  # 2018 value -> MSD value
    post = pred.copy()
    post[post == 4] = 3
    post[14:18, 14:18, 14:18] = 4  # a resection cavity away from the tumour
    p = _save_labels(tmp_path / "p.nii.gz", pred)
    scores = {}
    for name, ref, option in (("msd", msd, "msd"), ("msd-guessed", msd, "auto"), ("post", post, "brats2024")):
        r = _save_labels(tmp_path / f"{name}.nii.gz", ref)
        assert main(["evaluate", str(p), str(r), "--json", "--reference-labels", option]) == 0
        result = json.loads(capsys.readouterr().out)
        scores[name] = {k: v["dice"] for k, v in result["regions"].items()}
        read_as = result["label_conventions"]
        assert read_as["prediction"] == "brats2018" and read_as["reference"] == ("brats2023" if option == "auto" else option)
        assert read_as["guessed"] == (["prediction", "reference"] if option == "auto" else ["prediction"])
    assert scores["msd"] == scores["post"] == {"WT": 1.0, "TC": 1.0, "ET": 1.0}
    assert main(["evaluate", str(p), str(tmp_path / "msd.nii.gz"), "--reference-labels", "msd"]) == 0
    assert "labels read as: prediction brats2018 (guessed from the values), reference msd" in capsys.readouterr().out
    # read as BraTS 2023 (the guess: it holds 3), the Decathlon map's edema would be core
    tc_pred, tc_wrong = np.isin(pred, (1, 4)), np.isin(msd, (1, 3))
    assert scores["msd-guessed"]["TC"] == pytest.approx(2 * (tc_pred & tc_wrong).sum() / (tc_pred.sum() + tc_wrong.sum()))
    assert scores["msd-guessed"]["TC"] < 0.5
    # the prediction's convention can be named too; a wrong one is refused with the values it found
    assert main(["evaluate", str(p), str(r), "--reference-labels", "brats2024", "--prediction-labels", "brats2023"]) == 2
    assert "p.nii.gz: unexpected label values [4]; brats2023 label maps hold only [0, 1, 2, 3]" in capsys.readouterr().err


def test_evaluate_reads_a_brats2023_named_map_with_a_resection_cavity_and_no_et(tmp_path, capsys):
    """BraTS 2024 post-treatment: 4 is the resection cavity. Without a 3 beside it the values alone
    would say BraTS 2018 (4 = ET); the BraTS 2023+ file name says ET is 3, so the 4 is not tumour."""
    pred = np.zeros((20, 20, 20), np.uint8)
    pred[4:12, 4:12, 4:12] = 2  # edema
    pred[6:10, 6:10, 6:10] = 1  # necrotic core, no enhancing tumour
    ref = pred.copy()
    ref[14:18, 14:18, 14:18] = 4  # a cavity away from the tumour
    p = _save_labels(tmp_path / "p.nii.gz", pred)
    for name, read_as, et_dice in (("BraTS-GLI-02073-100-seg.nii.gz", "brats2024", 1.0), ("case_seg.nii.gz", "brats2018", 0.0)):
        r = _save_labels(tmp_path / name, ref)
        assert main(["evaluate", str(p), str(r), "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["label_conventions"]["reference"] == read_as
        assert result["regions"]["ET"]["dice"] == et_dice  # the cavity read as ET: the prediction has none
    assert result["label_conventions"]["read_from"]["reference"] == "values"
    assert main(["evaluate", str(p), str(tmp_path / "BraTS-GLI-02073-100-seg.nii.gz")]) == 0
    assert "reference brats2024 (from its BraTS 2023+ file name)" in capsys.readouterr().out


def test_evaluate_reads_a_prediction_with_a_cavity_as_its_brats2024_reference_and_refuses_a_ped_4(tmp_path, capsys):
    """A BraTS 2024 prediction may mark the cavity (4) beside ET (3): its values alone cannot tell 2018 from
    2024, its reference's name can. Without such a reference the message names the prediction's option.
    BraTS-PEDs 2024 maps hold four tumour labels: a 4 there is not a cavity, and is not guessed."""
    labels = _evaluate_label_map()
    labels[labels == 4] = 3
    labels[14:18, 14:18, 14:18] = 4  # the cavity
    p = _save_labels(tmp_path / "BraTS-GLI-02073-100.nii.gz", labels)
    r = _save_labels(tmp_path / "refs" / "BraTS-GLI-02073-100-seg.nii.gz", labels)
    assert main(["evaluate", str(p), str(r), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["label_conventions"]["prediction"] == "brats2024"
    assert result["label_conventions"]["read_from"]["prediction"] == "reference"
    assert [result["regions"][region]["dice"] for region in ("WT", "TC", "ET")] == [1.0, 1.0, 1.0]
    plain = _save_labels(tmp_path / "refs" / "case_seg.nii.gz", _evaluate_label_map())
    assert main(["evaluate", str(p), str(plain)]) == 2
    err = capsys.readouterr().err
    assert f"{p}: holds both labels 3 and 4" in err and "name its labels brats2024 (evaluate --prediction-labels)" in err
    ped = _save_labels(tmp_path / "refs" / "BraTS-PED-00001-000-seg.nii.gz", labels)
    assert main(["evaluate", str(p), str(ped)]) == 2
    err = capsys.readouterr().err
    assert "a BraTS-PED label map holding label 4" in err and "its edema would be taken for resection cavity" in err


def test_segment_writes_the_label_values_it_is_told(tmp_path, tiny_checkpoint):
    write_case(tmp_path / "case")
    outputs = {}
    for option in (None, "msd"):
        out = tmp_path / f"{option}.nii.gz"
        extra = ["--labels", option] if option else []
        assert main(["segment", str(tmp_path / "case"), "-o", str(out), "--checkpoint", str(tiny_checkpoint),
                     "--stats", str(tmp_path / f"{option}.json"), "--no-progress", *extra]) == 0
        outputs[option] = np.asarray(nib.load(out).dataobj)
    assert np.count_nonzero(outputs[None]) > 0
    np.testing.assert_array_equal(outputs["msd"], np.choose(outputs[None], [0, 2, 1, 0, 3]))
    stats = json.loads((tmp_path / "msd.json").read_text())
    assert stats["label_convention"] == "msd"
    assert stats["labels"]["1"]["name"] == "edema" and stats["labels"]["2"]["name"] == "necrotic core"
    assert stats["labels"]["1"]["voxels"] == np.count_nonzero(outputs["msd"] == 1)


def _evaluate_label_map() -> np.ndarray:
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[5:10, 5:10, 5:10] = 2
    labels[6:8, 6:8, 6:8] = 4
    return labels


def _save_labels(path, labels=None, affine=LPS):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(_evaluate_label_map() if labels is None else labels, affine), path)
    return path


def test_evaluate_lesion_wise_scores_a_false_positive_speck(tmp_path, capsys):
    ref, pred = tmp_path / "r", tmp_path / "p"
    _save_labels(ref / "c1" / "c1_seg.nii.gz")  # one 125-voxel tumour with an 8-voxel ET: a lesion too small to score
    speckled = _evaluate_label_map()
    speckled[17, 17, 17] = 4  # 7 voxels from the tumour: a false positive of WT, TC and ET
    _save_labels(pred / "c1_seg.nii.gz", speckled)
    assert main(["evaluate", str(pred), str(ref), "--lesion-wise", "--json", "--csv", str(tmp_path / "s.csv")]) == 0
    payload = json.loads(capsys.readouterr().out)
    lesions = payload["cases"]["c1"]["lesion_wise"]
    assert lesions["challenge"] == "GLI"
    wt, tc = lesions["regions"]["WT"], lesions["regions"]["TC"]
    assert (wt["dice"], wt["hd95"], wt["matched"], wt["false_positives"]) == (0.5, 187.0, 1, 1)  # (1 + 0) / 2
    assert (tc["dice"], tc["hd95"], tc["small_lesions"], tc["false_positives"]) == (0.0, 374.0, 1, 1)
    assert payload["summary"]["lesion_wise"]["WT"]["dice"]["mean"] == 0.5
    assert payload["cases"]["c1"]["regions"]["WT"]["dice"] == pytest.approx(250 / 251)  # the volume Dice hardly sees it
    with open(tmp_path / "s.csv") as f:
        row = next(csv.DictReader(f))
    assert (row["lesion_challenge"], float(row["lesion_dice_WT"]), int(row["lesion_false_positives_ET"])) == ("GLI", 0.5, 1)
    assert main(["evaluate", str(pred / "c1_seg.nii.gz"), str(ref / "c1" / "c1_seg.nii.gz"), "--lesion-challenge", "MET"]) == 0
    out = capsys.readouterr().out
    assert "lesion-wise (BraTS 2023+ MET: lesions whose 1-voxel dilations meet merged, those of at most 2 mm^3 left out" in out
    # the flag before the files leaves them to the positional arguments
    assert main(["evaluate", "--lesion-wise", str(pred / "c1_seg.nii.gz"), str(ref / "c1" / "c1_seg.nii.gz")]) == 0
    assert "lesion-wise (BraTS 2023+ GLI" in capsys.readouterr().out
    assert "lesions found / missed / false positives: WT 1 / 0 / 1, TC 1 / 0 / 1, ET 1 / 0 / 1" in out  # 8 voxels > 2 mm^3


def test_evaluate_lesion_wise_takes_each_case_s_challenge_from_its_reference_name(tmp_path, capsys):
    """A BraTS-MET reference is scored with the metastases challenge's rules (8 voxels of ET count as a
    lesion there, not under GLI's 50 mm^3); a name that says nothing keeps GLI; --lesion-challenge wins."""
    ref, pred = tmp_path / "r", tmp_path / "p"
    labels = np.where(_evaluate_label_map() == 4, 3, _evaluate_label_map()).astype(np.uint8)  # 2023 values
    for case in ("BraTS-MET-00001-000", "BraTS-GLI-00001-000", "c1"):
        _save_labels(ref / case / f"{case}-seg.nii.gz", labels)
        _save_labels(pred / f"{case}.nii.gz", labels)
    assert main(["evaluate", str(pred), str(ref), "--lesion-wise", "--json"]) == 0
    cases = json.loads(capsys.readouterr().out)["cases"]
    assert {c: res["lesion_wise"]["challenge"] for c, res in cases.items()} == {
        "BraTS-GLI-00001-000": "GLI", "BraTS-MET-00001-000": "MET", "c1": "GLI"}
    assert cases["BraTS-MET-00001-000"]["lesion_wise"]["regions"]["ET"]["matched"] == 1
    assert cases["c1"]["lesion_wise"]["regions"]["ET"]["small_lesions"] == 1
    assert main(["evaluate", str(pred), str(ref), "--lesion-wise"]) == 0
    assert "lesion-wise (BraTS 2023+ GLI (2 cases): lesions whose 3-voxel dilations meet merged, those of at most 50 mm^3 " \
           "left out; BraTS 2023+ MET (1 case): lesions whose 1-voxel" in capsys.readouterr().out
    assert main(["evaluate", str(pred), str(ref), "--lesion-challenge", "PED", "--json"]) == 0
    assert {res["lesion_wise"]["challenge"] for res in json.loads(capsys.readouterr().out)["cases"].values()} == {"PED"}


def test_evaluate_folders_reports_what_the_summary_leaves_out(tmp_path, capsys, caplog):
    """A few predictions against a full data folder are scored; the cases left out are said, not hidden."""
    pred, ref = tmp_path / "p", tmp_path / "r"
    for k in range(1, 8):
        _save_labels(ref / f"c{k}" / f"c{k}_seg.nii.gz")
    predicted = _evaluate_label_map()
    predicted[9, 5:10, 5:10] = 0  # 25 of the 125 WT voxels missed: Dice 1.0 would mean the prediction went unread
    _save_labels(pred / "c1_seg.nii.gz", predicted)
    _save_labels(pred / "x9_seg.nii.gz")  # named like no case
    _save_labels(pred / "c1_seg_probabilities.nii.gz", np.zeros((20, 20, 20, 3), np.float32))  # not a prediction
    assert main(["evaluate", str(pred), str(ref), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result["cases"]) == ["c1"]
    reference = _evaluate_label_map()
    wt_dice = 2 * np.count_nonzero((predicted > 0) & (reference > 0)) / (np.count_nonzero(predicted > 0) + np.count_nonzero(reference > 0))
    assert wt_dice == pytest.approx(2 * 100 / 225)
    assert result["cases"]["c1"]["regions"]["WT"]["dice"] == pytest.approx(wt_dice)
    assert result["cases"]["c1"]["regions"]["ET"]["dice"] == 1.0  # label 4 untouched
    assert result["summary"]["WT"]["dice"]["mean"] == pytest.approx(wt_dice)
    assert result["matching"] == {
        "scored": 1, "scored_as_empty": [], "references": 7, "errors": {},
        "unmatched_references": ["c2", "c3", "c4", "c5", "c6", "c7"], "unmatched_predictions": ["x9_seg.nii.gz"],
        "missing_scored_as_empty": False,
    }
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        f"6 of 7 reference cases have no prediction in {pred}: c2, c3, c4, c5, c6 and 1 more; the summary leaves them out (unless "
        f"--missing-as-empty scores them as empty predictions)",
        f"1 prediction files in {pred} match no reference case in {ref}: x9_seg.nii.gz",
    ]
    assert main(["evaluate", str(pred), str(ref)]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "scored 1 of 7 reference cases; no prediction for c2, c3, c4, c5, c6 and 1 more; "
        "predictions matching no case: x9_seg.nii.gz",
        "labels read as: prediction brats2018 (guessed from the values), reference brats2018 (guessed from the values)",
    ]


def test_evaluate_folders_given_the_wrong_way_round_says_so(tmp_path, capsys):
    _save_labels(tmp_path / "r" / "c1" / "c1_seg.nii.gz")
    _save_labels(tmp_path / "p" / "c1_seg.nii.gz")
    assert main(["evaluate", str(tmp_path / "r"), str(tmp_path / "p")]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "it holds case folders with segmentations: the predictions come first, then the references")
    # predictions kept in per-case folders, given in the right order: no such hint
    _save_labels(tmp_path / "q" / "c1" / "c1_pred.nii.gz")
    assert main(["evaluate", str(tmp_path / "q"), str(tmp_path / "r")]) == 2
    assert "come first" not in capsys.readouterr().err


def test_evaluate_folders_score_the_cases_a_bad_file_leaves(tmp_path, capsys):
    pred, ref = tmp_path / "p", tmp_path / "r"
    for case in ("c1", "c2", "c3"):
        _save_labels(ref / case / f"{case}_seg.nii.gz")
        _save_labels(pred / f"{case}_seg.nii.gz")
    _save_labels(pred / "c2_seg.nii.gz", _evaluate_label_map()[:, :, :18])  # another grid
    assert main(["evaluate", str(pred), str(ref), "--json"]) == 2
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert list(result["cases"]) == ["c1", "c3"] and list(result["matching"]["errors"]) == ["c2"]
    assert "shape (20, 20, 18) differs" in result["matching"]["errors"]["c2"]  # the reason, not only the case
    assert result["matching"]["scored"] == 2 and result["summary"]["WT"]["dice"]["mean"] == 1.0
    assert {k: result["summary"]["WT"]["dice"][k] for k in ("std", "min", "max", "n")} == {"std": 0.0, "min": 1.0, "max": 1.0, "n": 2}
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: c2: ") and "c2_seg.nii.gz" in lines[0]
    assert main(["evaluate", str(pred), str(ref)]) == 2
    assert "scored 2 of 3 reference cases; errors (above) in c2" in capsys.readouterr().out


def test_evaluate_folders_with_no_case_in_common_is_an_error(tmp_path, capsys):
    pred, ref = tmp_path / "p", tmp_path / "r"
    _save_labels(ref / "c1" / "c1_seg.nii.gz")
    _save_labels(pred / "other_seg.nii.gz")
    assert main(["evaluate", str(pred), str(ref)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"error: {pred}: no prediction named like a case of {ref} (c1); expected CASE_seg.nii.gz or CASE.nii.gz, "
        f"found other_seg.nii.gz\n"
    )


@pytest.mark.parametrize("change", ["flipped", "shifted"])
def test_evaluate_refuses_a_prediction_off_the_reference_grid(tmp_path, capsys, change):
    """Same shape and voxel size, other geometry: scoring it would compare different anatomy."""
    moved = LPS.copy()
    if change == "flipped":
        moved[0, 0] = 1.0
    else:
        moved[:3, 3] += (0.0, 0.0, 2.0)
    ref = _save_labels(tmp_path / "r" / "c1" / "c1_seg.nii.gz")
    pred = _save_labels(tmp_path / "p" / "c1_seg.nii.gz", affine=moved)
    for args, case in (([str(pred), str(ref)], ""), ([str(pred.parent), str(tmp_path / "r")], "c1: ")):
        assert main(["evaluate", *args]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.startswith(
            f"error: {case}{pred}: its voxel-to-world matrix differs from {ref}'s by up to 2 mm; "
            f"expected a prediction on the reference's grid"
        )


def test_evaluate_scores_a_prediction_stored_in_another_orientation_on_the_same_voxels(tmp_path, capsys):
    """A RAS copy with its axes permuted holds the reference's voxels exactly: it is reoriented, not refused."""
    ref_labels = _evaluate_label_map()
    ref_labels[5, 5:10, 5:10] = 0  # not symmetric, so a wrong flip would show
    ref = _save_labels(tmp_path / "r.nii.gz", ref_labels)
    canonical = nib.as_closest_canonical(nib.load(ref))
    permuted = nib.Nifti1Image(np.transpose(np.asarray(canonical.dataobj), (2, 0, 1)),
                               canonical.affine[:, [2, 0, 1, 3]])
    assert permuted.shape == (20, 20, 20) and not np.allclose(permuted.affine, LPS)
    nib.save(permuted, tmp_path / "p.nii.gz")
    assert main(["evaluate", str(tmp_path / "p.nii.gz"), str(ref), "--json"]) == 0
    regions = json.loads(capsys.readouterr().out)["regions"]
    assert [regions[r]["dice"] for r in ("WT", "TC", "ET")] == [1.0, 1.0, 1.0]
    off = permuted.affine.copy()
    off[:3, 3] += 1.0
    nib.save(nib.Nifti1Image(np.asarray(permuted.dataobj), off), tmp_path / "q.nii.gz")
    assert main(["evaluate", str(tmp_path / "q.nii.gz"), str(ref)]) == 2  # 1 mm off: other voxels, refused


def test_evaluate_file_against_folder_names_both(tmp_path, capsys):
    ref = _save_labels(tmp_path / "r" / "c1_seg.nii.gz")
    assert main(["evaluate", str(tmp_path / "r"), str(ref)]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'r'} is a folder but {ref} is a file; give two files (a prediction and its reference) "
        f"or two folders\n"
    )


def test_segment_an_empty_folder_says_so_of_the_input(tmp_path, tiny_checkpoint, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["segment", str(tmp_path / "empty"), "-o", str(tmp_path / "out"), "--checkpoint", str(tiny_checkpoint)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'empty'}: no .nii, .nii.gz, .nrrd, .mha or .npy files in this folder\n"
    packed = tmp_path / "packed"  # what is there is said: files compressed twice over
    packed.mkdir()
    for name in ("c_flair", "c_t1", "c_t1ce", "c_t2"):
        (packed / f"{name}.nii.gz.gz").write_bytes(b"")
    assert main(["segment", str(packed), "-o", str(tmp_path / "p.nii.gz"), "--checkpoint", str(tiny_checkpoint)]) == 2
    assert capsys.readouterr().err == (
        f"error: {packed}: no .nii, .nii.gz, .nrrd, .mha or .npy files in this folder (it holds c_flair.nii.gz.gz, "
        f"c_t1.nii.gz.gz, c_t1ce.nii.gz.gz, c_t2.nii.gz.gz; decompress the .gz / .zip layer over the .nii or "
        f".nii.gz files)\n")


def test_a_case_extracted_into_case_case_is_one_case_and_a_cohort_of_one_stays_a_cohort(tmp_path, tiny_checkpoint, capsys):
    """CASE/CASE/ (a zip extracted into a folder of its name) and a folder of cases holding one case look
    alike: a label map's name as the output says one case, a folder says a cohort. A label map written into
    the outer folder leaves it one case."""
    write_case(tmp_path / "c1" / "c1", prefix="c1_")
    reference = np.zeros((40, 44, 36), np.uint8)
    reference[10:30, 10:30, 10:25] = 2
    _save_labels(tmp_path / "c1" / "c1" / "c1_seg.nii.gz", reference)
    common = ["--checkpoint", str(tiny_checkpoint), "--no-progress"]
    inside = tmp_path / "c1" / "pred.nii.gz"
    for out in (tmp_path / "one.nii.gz", inside, inside):  # twice inside: the first label map there changes nothing
        assert main(["segment", str(tmp_path / "c1"), "-o", str(out), *common]) == 0
    assert main(["segment", str(tmp_path / "c1"), "-o", str(tmp_path / "cohort"), *common]) == 0
    capsys.readouterr()
    one = np.asarray(nib.load(tmp_path / "one.nii.gz").dataobj)
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "cohort" / "c1_seg.nii.gz").dataobj), one)
    np.testing.assert_array_equal(np.asarray(nib.load(inside).dataobj), one)
    # the case folder as the reference of one prediction file: its segmentation, read through too
    wt = one > 0
    expected = 2 * np.count_nonzero(wt & (reference > 0)) / (np.count_nonzero(wt) + np.count_nonzero(reference))
    for prediction in (tmp_path / "one.nii.gz", inside):
        assert main(["evaluate", str(prediction), str(tmp_path / "c1"), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["regions"]["WT"]["dice"] == pytest.approx(expected)


def test_evaluate_against_one_case_folder_scores_its_segmentation(tmp_path, capsys):
    """A case folder as the reference is one case: its segmentation, not its scans taken for references."""
    write_case(tmp_path / "data" / "c1", prefix="c1_")
    ref = _save_labels(tmp_path / "data" / "c1" / "c1_seg.nii.gz")
    (tmp_path / "pred").mkdir()
    shutil.copy(ref, tmp_path / "pred" / "c1_seg.nii.gz")
    for pred in (tmp_path / "pred", tmp_path / "pred" / "c1_seg.nii.gz"):  # a folder of predictions, or the file
        assert main(["evaluate", str(pred), str(tmp_path / "data" / "c1"), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        result = out["cases"]["c1"] if "cases" in out else out
        assert [result["regions"][r]["dice"] for r in ("WT", "TC", "ET")] == [1.0, 1.0, 1.0]
        assert "matching" not in out or out["matching"]["references"] == 1
    # a flat folder of several cases' scans and maps: the maps are the references, the scans are not
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("c1_flair.nii.gz", "c1_t1.nii.gz", "c1_seg.nii.gz"):
        shutil.copy(tmp_path / "data" / "c1" / name, flat / name)
    assert main(["evaluate", str(tmp_path / "pred"), str(flat), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["matching"]["references"] == 1


def test_user_error_is_one_line_exit_2_and_no_output(tmp_path, tiny_checkpoint):
    paths = write_case(tmp_path / "case")
    paths["t1"].unlink()
    out = tmp_path / "seg.nii.gz"
    proc = subprocess.run([sys.executable, "-m", "brainseg.cli", "segment", str(tmp_path / "case"), "-o", str(out),
                           "--checkpoint", str(tiny_checkpoint)], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'case'}: missing modality T1")
    assert not out.exists()
    # the same file twice is said as such, not as a missing modality
    proc = subprocess.run([sys.executable, "-m", "brainseg.cli", "segment", str(paths["flair"]), str(paths["flair"]),
                           str(paths["t1ce"]), str(paths["t2"]), "-o", str(out), "--checkpoint", str(tiny_checkpoint)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {paths['flair']}: given twice; expected four different files: FLAIR, T1, T1ce, T2"


def test_help_does_not_import_torch():
    code = "import sys; from brainseg.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


# ---- brainseg bench: input checked up front, child failures reported, work folder removed ---------


def _bench(case, checkpoint, *options):
    return main(["bench", str(case), "--checkpoint", str(checkpoint), "--compare", *options])


@pytest.fixture
def bench_temp(tmp_path, monkeypatch):
    """A private temporary folder, so the test can see what bench leaves behind."""
    import tempfile

    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_bench_bad_case_folder_is_the_segment_error_and_runs_nothing(tmp_path, tiny_checkpoint, bench_temp, capsys):
    write_case(tmp_path / "case")["t1"].unlink()
    assert _bench(tmp_path / "case", tiny_checkpoint) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'case'}: missing modality T1"), err
    assert list(bench_temp.iterdir()) == []


def test_bench_needs_at_least_one_repeat(tmp_path, tiny_checkpoint, bench_temp, capsys):
    write_case(tmp_path / "case")
    assert _bench(tmp_path / "case", tiny_checkpoint, "--repeats", "0") == 2
    assert capsys.readouterr().err == "error: --repeats: got 0; expected a whole number >= 1\n"
    assert list(bench_temp.iterdir()) == []


def test_bench_child_failure_is_one_error_line_and_the_work_folder_goes(tmp_path, tiny_checkpoint, bench_temp, monkeypatch, capsys):
    write_case(tmp_path / "case")
    child = tmp_path / "python"  # stands in for the interpreter each variant runs in
    child.write_text("#!/bin/sh\necho 'Traceback (most recent call last):' >&2\necho 'error: out of memory' >&2\nexit 3\n")
    child.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(child))
    assert _bench(tmp_path / "case", tiny_checkpoint, "--repeats", "1") == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: bench: the brainseg run failed (exit status 3): out of memory"]
    assert list(bench_temp.iterdir()) == []


@pytest.mark.slow
def test_bench_reports_and_removes_its_work_folder(tmp_path, tiny_checkpoint, bench_temp):
    write_case(tmp_path / "case")
    report = tmp_path / "bench.json"
    assert _bench(tmp_path / "case", tiny_checkpoint, "--repeats", "1", "--json", str(report), "--device", "cpu") == 0
    figures = json.loads(report.read_text())
    assert list(figures["variants"]) == ["brainseg", "brainseg-fp32"] and figures["repeats"] == 1
    assert set(figures["agreement_dice_vs_fp32"]["brainseg"]) == {"WT", "TC", "ET"}
    assert list(bench_temp.iterdir()) == []


def test_forward_padded_pads_to_the_divisor_and_crops_back():
    import torch

    from brainseg.inference import forward_padded

    seen = []

    def plus_one(x):
        seen.append(tuple(x.shape[2:]))
        return x[:, :1] + 1

    batch = torch.rand(2, 3, 17, 16, 9)
    out = forward_padded(plus_one, batch, 8)
    assert seen == [(24, 16, 16)]
    assert torch.equal(out, batch[:, :1] + 1)


def test_paired_difference_against_hand_computed_values():
    from brainseg.comparison import paired_difference

    d = paired_difference([0.8, 0.6, 0.7, float("nan")], [0.9, 0.7, 0.6, 0.5], "dice")
    assert d.cases == 3  # the case without a first value is left out
    assert d.mean_difference == pytest.approx(0.1 / 3)
    assert (d.first_mean, d.second_mean) == (pytest.approx(0.7), pytest.approx(2.2 / 3))
    assert (d.second_better, d.first_better) == (2, 1)
    # differences 0.1, 0.1, -0.1: sd 0.11547, standard error 0.066667, t(0.975, 2 df) = 4.302653
    assert (d.ci_low, d.ci_high) == (pytest.approx(0.1 / 3 - 0.286844, abs=1e-5), pytest.approx(0.1 / 3 + 0.286844, abs=1e-5))
    hd = paired_difference([5.0, 9.0], [4.0, 12.0], "hd95")
    assert (hd.second_better, hd.first_better) == (1, 1) and hd.mean_difference == pytest.approx(1.0)  # lower wins
    # differences -1, 3: sd 2.828427, standard error 2, t(0.975, 1 df) = 12.706205
    assert (hd.ci_low, hd.ci_high) == (pytest.approx(1 - 25.41241, abs=1e-4), pytest.approx(1 + 25.41241, abs=1e-4))
    assert (paired_difference([1.0, 1.0], [1.0, 1.0], "dice").ci_low, paired_difference([1.0, 1.0], [1.0, 1.0], "dice").ci_high) == (0.0, 0.0)
    one = paired_difference([0.5], [0.7], "dice")
    assert one.mean_difference == pytest.approx(0.2) and one.to_dict()["ci_low"] is None  # no spread from one case
    with pytest.raises(ValueError, match="same cases"):
        paired_difference([1.0], [1.0, 2.0], "dice")


def test_evaluate_compares_two_prediction_folders_case_by_case(tmp_path, capsys, caplog):
    ref, first, second = tmp_path / "r", tmp_path / "a", tmp_path / "b"
    reference = _evaluate_label_map()
    worse = reference.copy()
    worse[9, 5:10, 5:10] = 0  # 25 of 125 WT voxels missed: WT Dice 200/225
    for k in (1, 2, 3, 4):
        _save_labels(ref / f"c{k}" / f"c{k}_seg.nii.gz")
        _save_labels(second / f"c{k}_seg.nii.gz", reference if k < 3 else worse)
        if k < 4:  # c4: only the second folder has it, so the pairing leaves it out
            _save_labels(first / f"c{k}_seg.nii.gz", worse)
    assert main(["evaluate", str(first), str(ref), "--compare", str(second), "--json"]) == 0
    comparison = json.loads(capsys.readouterr().out)["comparison"]
    assert comparison["cases"] == ["c1", "c2", "c3"]
    assert "comparison leaves out 1 case(s) only one folder scored: c4" in caplog.text
    wt = comparison["difference"]["WT"]["dice"]
    assert wt["mean_difference"] == pytest.approx(2 / 3 * (1 - 200 / 225))
    assert (wt["second_better"], wt["first_better"], wt["cases"]) == (2, 0, 3)
    # differences d, d, 0 with d = 25/225: standard error d / 3, t(0.975, 2 df) = 4.302653
    assert wt["ci_high"] - wt["mean_difference"] == pytest.approx(4.302653 * (25 / 225) / 3, abs=1e-6)
    assert comparison["difference"]["ET"]["dice"]["mean_difference"] == 0.0  # ET untouched on both sides
    assert main(["evaluate", str(first), str(ref), "--compare", str(second)]) == 0
    out = capsys.readouterr().out
    assert f"comparison on 3 cases: {second} minus {first}" in out
    assert "with 3 cases the interval assumes the per-case differences are roughly normal" in out
    assert main(["evaluate", str(first / "c1_seg.nii.gz"), str(ref / "c1" / "c1_seg.nii.gz"), "--compare", str(second)]) == 2
    assert "--compare" in capsys.readouterr().err
    # a bad file of the second folder is its own error, not the first folder's
    (second / "c2_seg.nii.gz").write_bytes(b"not a nifti")
    assert main(["evaluate", str(first), str(ref), "--compare", str(second)]) == 2
    captured = capsys.readouterr()
    assert f"error: c2 in {second}: " in captured.err
    lines = captured.out.splitlines()
    assert lines[lines.index("") - 2].startswith("scored 3 of 4 reference cases; no prediction for c4")  # the first folder's
    assert f"{second}: scored 3 of 4 reference cases; errors (above) in c2" in captured.out
    assert "comparison on 2 cases" in captured.out


def test_bench_uniform_loop_runs_without_monai(tmp_path, tiny_checkpoint, monkeypatch):
    """The replaced app's loop is plain torch: a machine without MONAI still measures it."""
    from brainseg import bench

    monkeypatch.setitem(sys.modules, "monai", None)  # import monai raises ImportError
    monkeypatch.setitem(sys.modules, "monai.inferers", None)
    # windows of 128x128x64 every 64x64x32 where they fit: 2 x 1 x 2 in this volume, the last 16 / 8 /
    # 16 voxels of each axis never predicted; a volume smaller than one window gets none
    for shape, windows, unpredicted in [((200, 136, 104), 4, 1 - (192 * 128 * 96) / (200 * 136 * 104)), ((40, 44, 36), 0, 1.0)]:
        write_case(tmp_path / str(shape[0]), shape=shape)
        stats = tmp_path / "stats.json"
        bench._worker("uniform-1mm", str(tmp_path / str(shape[0])), str(tiny_checkpoint), str(tmp_path / "out.nii.gz"), str(stats), "cpu")
        figures = json.loads(stats.read_text())
        assert figures["windows"] == windows
        assert figures["unpredicted_share"] == pytest.approx(unpredicted)


def test_statistics_cannot_overwrite_the_label_map(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    import brainseg.pipeline

    write_case(tmp_path / "case")
    monkeypatch.setattr(brainseg.pipeline, "segment_case", lambda *a, **k: pytest.fail("segmented before the check"))
    out = tmp_path / "seg.nii.gz"
    assert main(["segment", str(tmp_path / "case"), "-o", str(out), "--stats", str(out), "--checkpoint", str(tiny_checkpoint)]) == 2
    assert "--stats names the label map's or the probabilities' own path" in capsys.readouterr().err and not out.exists()


def test_a_window_too_small_for_the_network_is_refused_before_any_inference(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    import brainseg.pipeline

    write_case(tmp_path / "case")
    monkeypatch.setattr(brainseg.pipeline, "segment_case", lambda *a, **k: pytest.fail("segmented before the check"))
    args = ["segment", str(tmp_path / "case"), "-o", str(tmp_path / "seg.nii.gz"), "--checkpoint", str(tiny_checkpoint)]
    assert main(args + ["--patch-size", "2", "1", "2"]) == 2  # the tiny network pools once: padded to 2x2x2, one voxel deep down
    assert "--patch-size: got (2, 1, 2); expected a window with a side longer than 2 voxels for this checkpoint's network (1 pooling)" in capsys.readouterr().err


def test_an_output_folder_that_takes_no_file_is_refused_before_any_inference(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    import errno
    import tempfile
    from pathlib import Path

    import brainseg.pipeline

    write_case(tmp_path / "case")
    monkeypatch.setattr(brainseg.pipeline, "segment_case", lambda *a, **k: pytest.fail("segmented before the check"))
    real = tempfile.mkstemp
    locked = tmp_path / "locked"
    locked.mkdir()

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == locked:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    out = locked / "sub" / "seg.nii.gz"
    assert main(["segment", str(tmp_path / "case"), "-o", str(out), "--checkpoint", str(tiny_checkpoint)]) == 2
    assert f"{out}: cannot write in {locked} (Read-only file system); choose another output path" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "case"), "--checkpoint", str(tiny_checkpoint), "--json", str(locked / "b.json")]) == 2
    assert f"{locked / 'b.json'}: cannot write in {locked}" in capsys.readouterr().err


def test_evaluate_warns_that_a_npy_prediction_is_taken_in_the_reference_voxel_order(tmp_path, caplog, capsys):
    import logging

    ref = np.zeros((20, 20, 20), np.uint8)
    ref[5:10, 5:10, 5:10] = 2
    nib.save(nib.Nifti1Image(ref, LPS), tmp_path / "ref.nii.gz")
    np.save(tmp_path / "pred.npy", ref)
    with caplog.at_level(logging.WARNING, logger="brainseg.scoring"):
        assert main(["evaluate", str(tmp_path / "pred.npy"), str(tmp_path / "ref.nii.gz"), "--json"]) == 0
    assert f"{tmp_path / 'pred.npy'}: no voxel-to-world matrix (.npy), taken to be stored as {tmp_path / 'ref.nii.gz'} is" in caplog.text
    assert json.loads(capsys.readouterr().out)["regions"]["WT"]["dice"] == 1.0
    caplog.clear()
    nib.save(nib.Nifti1Image(ref, LPS), tmp_path / "pred.nii.gz")
    with caplog.at_level(logging.WARNING, logger="brainseg.scoring"):
        assert main(["evaluate", str(tmp_path / "pred.nii.gz"), str(tmp_path / "ref.nii.gz")]) == 0
    assert "voxel-to-world" not in caplog.text


def test_cohort_reads_hgg_and_lgg_groups_and_skips_a_file_beside_the_case_folders(tmp_path, tiny_checkpoint, capsys, caplog):
    """BraTS 2018-2019 training data comes as HGG/ and LGG/ folders of case folders; a stray label map at
    the top must not make the whole folder one (incomplete) case."""
    write_case(tmp_path / "brats19" / "HGG" / "h1", prefix="h1_")
    write_case(tmp_path / "brats19" / "LGG" / "l1", prefix="l1_")
    write_case(tmp_path / "brats19" / "x1", prefix="x1_")  # a case beside the groups
    _save_labels(tmp_path / "brats19" / "BraTS20_Training_001_seg.nii.gz")
    out = tmp_path / "preds"
    args = ["segment", str(tmp_path / "brats19"), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--no-progress"]
    assert main(args) == 0
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == ["h1_seg.nii.gz", "l1_seg.nii.gz", "x1_seg.nii.gz"]
    assert f"3 of 3 cases segmented into {out}" in capsys.readouterr().out
    assert "BraTS20_Training_001_seg.nii.gz: a file beside the case folders, not in one: skipped" in caplog.text
    write_case(tmp_path / "brats19" / "LGG" / "h1", prefix="h1_")  # one name in two groups: outputs would collide
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'brats19' / 'HGG' / 'h1'} and {tmp_path / 'brats19' / 'LGG' / 'h1'}: two cases named h1" in err


def test_evaluate_reads_references_in_groups_with_any_suffix_case_and_brats2020s_segm_name(tmp_path, capsys):
    """HGG/LGG reference groups, BraTS 2020 case 355's W39_1998.09.19_Segm.nii, .NII.GZ suffixes on flat
    references and on predictions, and predictions named in another case are all found."""
    ref = _evaluate_label_map()
    pred = ref.copy()
    pred[9, 5:10, 5:10] = 0
    expected = 2 * np.count_nonzero((pred > 0) & (ref > 0)) / (np.count_nonzero(pred > 0) + np.count_nonzero(ref > 0))
    for case in ("BraTS20_Training_355", "c2"):
        write_case(tmp_path / "refs" / "HGG" / case, prefix=f"{case}_")
    _save_labels(tmp_path / "refs" / "HGG" / "BraTS20_Training_355" / "W39_1998.09.19_Segm.nii")
    _save_labels(tmp_path / "refs" / "HGG" / "c2" / "c2_seg.nii.gz")
    _save_labels(tmp_path / "preds" / "BraTS20_Training_355_seg.NII.GZ", pred)
    _save_labels(tmp_path / "preds" / "C2.nii.gz", pred)  # a name's case, too, as a Windows or macOS disk keeps it
    assert main(["evaluate", str(tmp_path / "preds"), str(tmp_path / "refs"), "--json"]) == 0
    cases = json.loads(capsys.readouterr().out)["cases"]
    assert sorted(cases) == ["BraTS20_Training_355", "c2"]
    assert [cases[c]["regions"]["WT"]["dice"] for c in sorted(cases)] == [pytest.approx(expected)] * 2
    # two cases whose names differ only in case each take the prediction named exactly for them
    write_case(tmp_path / "refs" / "HGG" / "C2", prefix="C2_")
    _save_labels(tmp_path / "refs" / "HGG" / "C2" / "C2_seg.nii.gz", ref)
    _save_labels(tmp_path / "preds" / "c2.nii.gz", ref)  # C2.nii.gz holds pred
    assert main(["evaluate", str(tmp_path / "preds"), str(tmp_path / "refs"), "--json"]) == 0
    cases = json.loads(capsys.readouterr().out)["cases"]
    assert (cases["C2"]["regions"]["WT"]["dice"], cases["c2"]["regions"]["WT"]["dice"]) == (pytest.approx(expected), 1.0)
    _save_labels(tmp_path / "flat" / "BraTS-GLI-00000-000-seg.NII.GZ", np.where(ref == 4, 3, ref).astype(np.uint8))
    _save_labels(tmp_path / "preds2" / "BraTS-GLI-00000-000.nii.gz", np.where(pred == 4, 3, pred).astype(np.uint8))
    assert main(["evaluate", str(tmp_path / "preds2"), str(tmp_path / "flat"), "--json"]) == 0
    cases = json.loads(capsys.readouterr().out)["cases"]
    assert list(cases) == ["BraTS-GLI-00000-000"]
    assert cases["BraTS-GLI-00000-000"]["regions"]["WT"]["dice"] == pytest.approx(expected)
    assert cases["BraTS-GLI-00000-000"]["regions"]["ET"]["dice"] == 1.0


def test_folders_that_only_hold_a_subfolder_stay_cases_and_are_not_read_as_groups(tmp_path):
    """P2/derived/, BIDS's sub-01/anat/ and a zip extracted into CASE/CASE/ hold one folder each: each stays
    one case, named by the outer folder and read from the inner one, not a group whose 'derived' or 'anat'
    cases would clash by name."""
    from brainseg.naming import case_folders

    cohort = tmp_path / "cohort"
    write_case(cohort / "P1", prefix="P1_")
    for name in ("P2", "P3"):
        write_case(cohort / name / "derived", prefix=f"{name}_")
    write_case(cohort / "P4" / "P4" / "P4", prefix="P4_")  # extracted twice over
    (cohort / "P5" / "empty").mkdir(parents=True)  # no scans inside: stays itself, and fails on its own
    (cohort / "__MACOSX" / "P1").mkdir(parents=True)  # a Mac zip's metadata is no case
    assert case_folders(cohort) == {"P1": cohort / "P1", "P2": cohort / "P2" / "derived", "P3": cohort / "P3" / "derived",
                                    "P4": cohort / "P4" / "P4" / "P4", "P5": cohort / "P5"}
    write_case(tmp_path / "two" / "site_a" / "c1", prefix="c1_")  # two cases: a group, whatever its name
    write_case(tmp_path / "two" / "site_a" / "c2", prefix="c2_")
    write_case(tmp_path / "two" / "HGG" / "c3", prefix="c3_")  # BraTS's own group name: one case is enough
    assert list(case_folders(tmp_path / "two")) == ["c1", "c2", "c3"]
    write_case(tmp_path / "nested" / "site_a" / "c1" / "c1", prefix="c1_")  # groups of extracted cases
    write_case(tmp_path / "nested" / "site_a" / "c2" / "c2", prefix="c2_")
    write_case(tmp_path / "nested" / "HGG" / "c3" / "c3", prefix="c3_")
    nested = tmp_path / "nested"
    assert case_folders(nested) == {"c1": nested / "site_a" / "c1" / "c1", "c2": nested / "site_a" / "c2" / "c2",
                                    "c3": nested / "HGG" / "c3" / "c3"}


def test_evaluate_refuses_two_predictions_of_one_case_and_skips_a_predictions_folder_among_the_references(tmp_path, capsys):
    for case in ("A", "B"):
        write_case(tmp_path / "refs" / case, prefix=f"{case}_")
        _save_labels(tmp_path / "refs" / case / f"{case}_seg.nii.gz")
    preds = tmp_path / "refs" / "preds"  # segment's output folder may lie inside the folder of cases
    _save_labels(preds / "A_seg.nii.gz")
    _save_labels(preds / "B_seg.nii.gz")
    assert main(["evaluate", str(preds), str(tmp_path / "refs"), "--json"]) == 0
    assert sorted(json.loads(capsys.readouterr().out)["cases"]) == ["A", "B"]
    _save_labels(preds / "A_seg.NII.GZ")
    assert main(["evaluate", str(preds), str(tmp_path / "refs")]) == 2
    assert f"A_seg.NII.GZ, A_seg.nii.gz in {preds}: two predictions for case A; expected one" in capsys.readouterr().err


def test_evaluate_scores_missing_predictions_as_empty_ones_when_asked(tmp_path, capsys, caplog):
    """BraTS's platform scores a case without a prediction as an empty one: Dice 0 and HD95 373.13 mm where
    the reference has the region, Dice 1 / HD95 0 where it has none."""
    from brainseg.metrics import HD95_ONE_EMPTY

    ref, pred = tmp_path / "r", tmp_path / "p"
    no_et = np.where(_evaluate_label_map() == 4, 1, _evaluate_label_map()).astype(np.uint8)  # core, no enhancing
    _save_labels(ref / "c1" / "c1_seg.nii.gz")
    _save_labels(ref / "c2" / "c2_seg.nii.gz", no_et)
    _save_labels(ref / "c3" / "c3_seg.nii.gz")
    _save_labels(pred / "c1_seg.nii.gz")  # perfect
    (pred / "c3_seg.nii.gz").write_bytes(b"not a nifti")  # unreadable: as good as missing
    assert main(["evaluate", str(pred), str(ref), "--json"]) == 2
    assert list(json.loads(capsys.readouterr().out)["cases"]) == ["c1"]  # by default: left out
    assert main(["evaluate", str(pred), str(ref), "--json", "--missing-as-empty", "--lesion-wise"]) == 2
    result = json.loads(capsys.readouterr().out)
    cases = result["cases"]
    assert list(cases) == ["c1", "c2", "c3"] and cases["c2"]["missing"] and cases["c3"]["missing"]
    assert [cases["c2"]["regions"][r]["dice"] for r in ("WT", "TC", "ET")] == [0.0, 0.0, 1.0]
    assert [cases["c2"]["regions"][r]["hd95"] for r in ("WT", "TC", "ET")] == [HD95_ONE_EMPTY, HD95_ONE_EMPTY, 0.0]
    assert [cases["c3"]["regions"][r]["dice"] for r in ("WT", "TC", "ET")] == [0.0, 0.0, 0.0]
    assert cases["c2"]["lesion_wise"]["regions"]["WT"]["missed"] == 1
    assert result["summary"]["WT"]["dice"]["mean"] == pytest.approx(1 / 3)
    assert result["summary"]["ET"]["dice"]["mean"] == pytest.approx(2 / 3)
    assert result["matching"]["missing_scored_as_empty"] is True
    assert result["matching"]["scored"] == result["summary"]["WT"]["dice"]["n"] == 3  # the counts say what the means cover
    assert result["matching"]["scored_as_empty"] == ["c2", "c3"] and list(result["matching"]["errors"]) == ["c3"]
    caplog.clear()
    assert main(["evaluate", str(pred), str(ref), "--missing-as-empty"]) == 2
    assert "1 of 3 reference cases have no prediction in" in caplog.text
    assert "c2; they are scored as empty predictions where their reference can be read (--missing-as-empty)" in caplog.text
    out = capsys.readouterr().out
    assert ("scored 3 of 3 reference cases; errors (above) in c3; no prediction for c2; scored as empty predictions "
            "(--missing-as-empty): c2, c3") in out
    # a reference that cannot be read: said once, counted as an error, in no mean
    (ref / "c2" / "c2_seg.nii.gz").write_bytes(b"not a nifti either")
    (pred / "c3_seg.nii.gz").unlink()
    assert main(["evaluate", str(pred), str(ref), "--json", "--missing-as-empty"]) == 2
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert list(result["cases"]) == ["c1", "c3"] and result["summary"]["WT"]["dice"]["n"] == result["matching"]["scored"] == 2
    assert list(result["matching"]["errors"]) == ["c2"] and result["matching"]["scored_as_empty"] == ["c3"]
    assert [line.split(":")[0] for line in captured.err.splitlines() if line.startswith("error:")] == ["error"]
    assert captured.err.count("error: c2:") == 1


def test_evaluate_compares_lesion_wise_scores_too_and_prints_no_spread_for_one_case(tmp_path, capsys):
    ref, first, second = tmp_path / "r", tmp_path / "a", tmp_path / "b"
    reference = _evaluate_label_map()
    speck = reference.copy()
    speck[15:18, 15:18, 15:18] = 2  # a 27-voxel false positive far from the tumour: lesion-wise WT loses, volume-wise hardly
    _save_labels(ref / "c1" / "c1_seg.nii.gz")
    _save_labels(first / "c1_seg.nii.gz")
    _save_labels(second / "c1_seg.nii.gz", speck)
    assert main(["evaluate", str(first), str(ref), "--compare", str(second), "--lesion-wise", "--json"]) == 0
    difference = json.loads(capsys.readouterr().out)["comparison"]["difference"]["WT"]
    assert difference["dice"]["mean_difference"] == pytest.approx(2 * 125 / (125 + 152) - 1)
    # lesion-wise: the one lesion still scores 1, the speck a 0 (min volume 50 mm^3 applies to reference lesions only)
    assert difference["lesion_dice"]["mean_difference"] == pytest.approx(-0.5)
    assert difference["lesion_dice"]["first_better"] == 1
    assert main(["evaluate", str(first), str(ref), "--compare", str(second), "--lesion-wise"]) == 0
    out = capsys.readouterr().out
    assert "WT      lesion_dice      1.000    0.500      -0.500" in out
    assert "roughly normal" not in out  # one case: no interval to qualify
    std = next(line for line in out.splitlines() if line.startswith("std "))
    assert "nan" not in std and std.split()[1:] == ["-"] * 6


def test_under_torchrun_bad_input_is_said_once_by_rank_zero(tmp_path, monkeypatch, capsys):
    args = ["segment", str(tmp_path / "no-case"), "-o", str(tmp_path / "out")]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(args) == 2 and capsys.readouterr().err == ""  # the same line would be rank 0's again
    monkeypatch.setenv("RANK", "0")
    assert main(args) == 2
    assert capsys.readouterr().err.strip().startswith(f"error: {tmp_path / 'out'}: output must end in .nii.gz, .nii or .seg.nrrd")


def test_evaluate_refuses_to_score_references_against_themselves(tmp_path, capsys):
    """`brainseg evaluate X X` would score every case as perfect."""
    _save_labels(tmp_path / "labels" / "c1_seg.nii.gz")
    _save_labels(tmp_path / "labels" / "c2_seg.nii.gz")
    assert main(["evaluate", str(tmp_path / "labels"), str(tmp_path / "labels")]) == 2
    assert "the predictions of c1, c2 are the reference files themselves" in capsys.readouterr().err
    file = tmp_path / "labels" / "c1_seg.nii.gz"
    assert main(["evaluate", str(file), str(file)]) == 2
    assert f"{file}: given as both the prediction and the reference" in capsys.readouterr().err
    (tmp_path / "link").symlink_to(tmp_path / "labels")  # the same folder by another path
    assert main(["evaluate", str(tmp_path / "link"), str(tmp_path / "labels")]) == 2
    assert "are the reference files themselves" in capsys.readouterr().err


def test_segment_and_evaluate_read_nrrd_and_mha_cases_as_their_nifti_copies(tmp_path, tiny_checkpoint, capsys):
    """A cohort saved from 3D Slicer / ITK-SNAP (one case in mixed formats) gives the NIfTI cohort's label maps,
    lying where the NRRD scans lie; NRRD references and predictions are scored; a detached header costs its case."""
    import SimpleITK as sitk

    from conftest import itk_copy

    permuted = np.array([[0, 0, 1.0, -20], [-1.0, 0, 0, 30], [0, -1.0, 0, 40], [0, 0, 0, 1]])  # axes out of RAS order
    for folder, suffixes in (("nifti", [".nii.gz"] * 4), ("itk", [".nrrd", ".mha", ".nii.gz", ".nrrd"])):
        write_case(tmp_path / folder / "c1", prefix="c1_", suffix=suffixes, affine=permuted)
    itk_copy(write_case(tmp_path / "detached" / "c2", prefix="c2_")["flair"], tmp_path / "itk" / "c2" / "c2_flair.nhdr",
             compress=False)
    for name in ("c2_t1", "c2_t1ce", "c2_t2"):
        shutil.copy(tmp_path / "detached" / "c2" / f"{name}.nii.gz", tmp_path / "itk" / "c2")
    common = ["--checkpoint", str(tiny_checkpoint), "--no-progress", "--patch-size", "16", "16", "16"]
    assert main(["segment", str(tmp_path / "nifti"), "-o", str(tmp_path / "out_nifti"), *common]) == 0
    assert main(["segment", str(tmp_path / "itk"), "-o", str(tmp_path / "out_itk"), *common]) == 2
    assert capsys.readouterr().err == (
        "error: c2: c2_flair.nhdr: a detached NRRD header: its voxels are in another file (c2_flair.raw), which a single "
        "file given or uploaded cannot bring along; save the scan as a single .nrrd file (or .nii.gz)\n")
    expected, written = nib.load(tmp_path / "out_nifti" / "c1_seg.nii.gz"), nib.load(tmp_path / "out_itk" / "c1_seg.nii.gz")
    assert np.unique(np.asarray(expected.dataobj)).size > 1  # the tiny network labels something: equality says more
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(expected.dataobj))
    np.testing.assert_allclose(written.affine, permuted, atol=1e-6)
    scan, labels = sitk.ReadImage(str(tmp_path / "itk" / "c1" / "c1_flair.nrrd")), sitk.ReadImage(str(written.get_filename()))
    assert labels.GetSize() == scan.GetSize()
    for what in ("GetOrigin", "GetSpacing", "GetDirection"):
        np.testing.assert_allclose(getattr(labels, what)(), getattr(scan, what)(), atol=1e-6)
    # the references as .nrrd beside the scans, the predictions as .mha: scored as the NIfTI files are
    reference = _evaluate_label_map()
    itk_copy(nib.Nifti1Image(reference, LPS), tmp_path / "refs" / "c1" / "c1_seg.nrrd")
    itk_copy(nib.Nifti1Image(reference, LPS), tmp_path / "preds" / "c1_seg.mha")
    assert main(["evaluate", str(tmp_path / "preds"), str(tmp_path / "refs"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [result["cases"]["c1"]["regions"][r]["dice"] for r in ("WT", "TC", "ET")] == [1.0, 1.0, 1.0]


def test_evaluate_pairs_slicer_segmentations_named_for_their_case(tmp_path, capsys):
    """3D Slicer saves a segmentation named for its case as CASE.seg.nrrd: as a reference it is case CASE (not
    "CASE.seg"), and as a prediction it is found for reference CASE_seg.nii.gz."""
    from conftest import itk_copy

    reference = _evaluate_label_map()
    for case in ("c1", "c2"):
        itk_copy(nib.Nifti1Image(reference, LPS), tmp_path / "slicer" / f"{case}.seg.nrrd")
        _save_labels(tmp_path / "nifti" / f"{case}_seg.nii.gz", reference)
    for preds, refs in (("nifti", "slicer"), ("slicer", "nifti")):
        assert main(["evaluate", str(tmp_path / preds), str(tmp_path / refs), "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert sorted(result["cases"]) == ["c1", "c2"]
        assert [result["cases"]["c1"]["regions"][r]["dice"] for r in ("WT", "TC", "ET")] == [1.0, 1.0, 1.0]
