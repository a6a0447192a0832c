"""The command-line contract, on synthetic cases and a tiny checkpoint (fast)."""
import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from brainseg.cli import main
from conftest import LPS, write_case


def test_segment_writes_label_map_on_input_grid_and_stats(tmp_path, tiny_checkpoint, capsys):
    write_case(tmp_path / "case")
    out = tmp_path / "out" / "seg.nii.gz"
    code = main(["segment", str(tmp_path / "case"), "-o", str(out), "--checkpoint", str(tiny_checkpoint),
                 "--stats", str(tmp_path / "stats.json"), "--patch-size", "16", "16", "8", "--overlap", "0.5"])
    assert code == 0
    image = nib.load(out)
    assert image.shape == (40, 44, 36)
    np.testing.assert_allclose(image.affine, LPS)
    assert set(np.unique(np.asarray(image.dataobj)).tolist()) <= {0, 1, 2, 4}
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert set(stats["regions"]) == {"WT", "TC", "ET"}
    assert set(stats["labels"]) == {"1", "2", "4"}
    assert stats["regions"]["WT"]["ml"] == pytest.approx(stats["regions"]["WT"]["voxels"] / 1000)
    assert {"preprocess", "windows", "save", "total"} <= set(stats["seconds"])
    assert "WT whole tumour" in capsys.readouterr().out


def test_cohort_mode_resumes_and_splits_by_rank(tmp_path, tiny_checkpoint, monkeypatch):
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


def test_save_probabilities_beside_each_label_map(tmp_path, tiny_checkpoint):
    write_case(tmp_path / "case")
    out = tmp_path / "seg.nii.gz"
    assert main(["segment", str(tmp_path / "case"), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--no-progress", "--save-probabilities"]) == 0
    probabilities = nib.load(tmp_path / "seg_probabilities.nii.gz")
    assert probabilities.shape == (40, 44, 36, 3)
    np.testing.assert_allclose(probabilities.affine, LPS)
    p = np.asarray(probabilities.dataobj)
    labels = np.asarray(nib.load(out).dataobj)
    assert 0.0 <= p.min() and p.max() <= 1.0
    # labels are the thresholded probabilities (float16 storage rounds voxels at the boundary)
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
    assert main(["evaluate", str(tmp_path / "p" / "c1_seg.nii.gz"), str(tmp_path / "r" / "c1" / "c1_seg.nii.gz"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["regions"]["WT"]["dice"] == pytest.approx(2 * 100 / 225)
    assert result["regions"]["ET"]["dice"] == 1.0
    assert main(["evaluate", str(tmp_path / "p"), str(tmp_path / "r"), "--csv", str(tmp_path / "t.csv")]) == 0
    assert "c1" in capsys.readouterr().out
    assert (tmp_path / "t.csv").read_text().startswith("case,dice_WT")


def test_user_error_is_one_line_exit_2_and_no_output(tmp_path, tiny_checkpoint):
    paths = write_case(tmp_path / "case")
    paths["t1"].unlink()
    out = tmp_path / "seg.nii.gz"
    proc = subprocess.run([sys.executable, "-m", "brainseg.cli", "segment", str(tmp_path / "case"), "-o", str(out),
                           "--checkpoint", str(tiny_checkpoint)], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: missing modality T1")
    assert not out.exists()


def test_help_does_not_import_torch():
    code = "import sys; from brainseg.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
