"""Statistics tables, CSV/JSON payloads, model cards, and the upload helpers the app builds on."""
from __future__ import annotations

import csv
import gzip
import io
import json

import nibabel as nib
import numpy as np
import pytest

from brainseg import report
from brainseg.config import BrainsegConfig, PreprocessConfig
from brainseg.errors import InputError
from brainseg.io import Case, assemble_case, read_scan
from brainseg.labelmaps import labels_bytes, read_label_map
from brainseg.labels import ED, ET, NCR, from_internal
from brainseg.lesion_metrics import lesion_wise_scores
from brainseg.metrics import evaluate, volume_stats
from brainseg.naming import case_stems

LPS2 = np.array([[-2.0, 0, 0, 80], [0, -2.0, 0, 90], [0, 0, 2.0, -10], [0, 0, 0, 1]])


def labels_with_known_volumes() -> np.ndarray:
    labels = np.zeros((10, 10, 10), dtype=np.uint8)
    labels[0:5, 0:4, 0] = ED  # 20 voxels
    labels[5, 0:3, 0] = NCR  # 3
    labels[6, 0:2, 1] = ET  # 2
    return labels


def test_volume_rows_in_millilitres_and_share_of_brain():
    stats = volume_stats(labels_with_known_volumes(), (2.0, 2.0, 2.0), "brats2018", brain_voxels=500)
    rows = report.volume_rows(stats)
    assert [r["structure"] for r in rows] == [
        "whole tumour (WT)", "tumour core (TC)", "enhancing tumour (ET)",
        "necrotic core (label 1)", "edema (label 2)", "enhancing tumour (label 4)",
    ]
    assert [r["voxels"] for r in rows] == [25, 5, 2, 3, 20, 2]
    assert rows[0]["volume_ml"] == 0.2  # 25 voxels x 8 mm^3
    assert rows[0]["brain_percent"] == 5.0
    text = report.rows_csv(rows)
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert parsed[0] == {"structure": "whole tumour (WT)", "kind": "region", "voxels": "25", "volume_ml": "0.2", "brain_percent": "5.0"}
    assert len(parsed) == 6


def test_label_rows_follow_the_2023_convention():
    stats = volume_stats(labels_with_known_volumes(), (1.0, 1.0, 1.0), "brats2023")
    rows = report.volume_rows(stats)
    assert rows[-1]["structure"] == "enhancing tumour (label 3)" and rows[-1]["brain_percent"] is None
    assert report.rows_csv(rows).splitlines()[1].endswith(",")  # missing share: an empty cell


def test_slice_rows():
    rows = report.slice_rows([100, 3, 20, 2], pixel_mm2=4.0, convention="brats2018")
    assert {r["structure"]: r["voxels"] for r in rows} == {
        "whole tumour (WT)": 25, "tumour core (TC)": 5, "enhancing tumour (ET)": 2,
        "necrotic core (label 1)": 3, "edema (label 2)": 20, "enhancing tumour (label 4)": 2,
    }
    assert rows[0]["area_mm2"] == 100.0


def test_agreement_and_metric_rows():
    a = labels_with_known_volumes()
    b = a.copy()
    b[b == ED] = 0  # WT of b: 5 voxels, all inside a's 25
    agreement = report.agreement(a, b)
    assert agreement["WT"] == pytest.approx(2 * 5 / 30)
    assert agreement["TC"] == 1.0 and agreement["ET"] == 1.0
    rows = report.metric_rows(evaluate(b, a, (1.0, 1.0, 1.0)))
    assert rows[0]["dice"] == round(10 / 30, 4) and rows[0]["reference_voxels"] == 25 and rows[0]["predicted_voxels"] == 5
    assert rows[1]["dice"] == 1.0 and rows[1]["hd95_mm"] == 0.0
    assert "lesion_dice" not in rows[0]
    scored = {**evaluate(b, a, (2.0, 2.0, 2.0)), "lesion_wise": lesion_wise_scores(b, a, (2.0, 2.0, 2.0))}
    rows = report.metric_rows(scored)
    # at 2 mm one WT lesion of 200 mm^3, found: its Dice is the volume's; the TC (40 mm^3) and ET (16 mm^3)
    # lesions are at most 50 mm^3, not scored
    assert (rows[0]["lesion_dice"], rows[0]["lesions"]) == (round(10 / 30, 4), "1 / 0 / 0")
    assert (rows[1]["lesion_dice"], rows[1]["lesion_hd95_mm"], rows[1]["lesions"]) == (1.0, 0.0, "0 / 0 / 0")
    with pytest.raises(ValueError):
        report.agreement(a, a[:5])


def test_json_payload_is_strict_json():
    payload = {"a": np.float64(1.5), "b": np.int64(3), "c": np.arange(3), "nan": float("nan"), "inf": np.float32("inf")}
    assert json.loads(report.to_json(payload)) == {"a": 1.5, "b": 3, "c": [0, 1, 2], "nan": None, "inf": None}


def test_case_name_from_any_brats_generation():
    assert report.case_name({"flair": "Brats18_CBICA_ABM_1_flair.nii.gz"}) == "Brats18_CBICA_ABM_1"
    assert report.case_name({"flair": "BraTS-GLI-00001-000-t2f.nii.gz"}) == "BraTS-GLI-00001-000"
    assert report.case_name({"flair": "BraTS20_Training_001_flair.nii"}) == "BraTS20_Training_001"
    assert report.case_name({"flair": "patient scan (1).nii.gz"}) == "patient_scan_1"
    assert report.case_name({}) == "case"
    # the modality word where it stands, as the check that four scans name one case reads it
    assert report.case_name({"flair": "case01_flair_reg.nii.gz"}) == "case01_reg"
    assert case_stems(["case01_flair_reg.nii.gz", "case01_t1_reg.nii.gz"]) == ["case01_reg"]
    assert report.case_name({"t1ce": "sub-01_ce-gadolinium_T1w.nii.gz"}) == "sub-01"
    assert report.case_name({"flair": "BRATS_001.nii.gz[0]"}) == "BRATS_001"


def test_model_card_prefers_the_markdown_file_beside_the_checkpoint(tmp_path):
    checkpoint = tmp_path / "mymodel.pt"
    provenance = {
        "train_cases": ["a", "b", "c"], "validation_cases": ["d"], "data": "../shared/data/brats",
        "validation": {"dice": {"WT": 0.91, "TC": 0.85, "ET": 0.8}, "hd95": {"WT": 4.2, "TC": 6.0, "ET": 3.1}},
        "step": 1000, "training_seconds": 600, "hardware": "cpu",
    }
    card = report.model_card(checkpoint, BrainsegConfig(), provenance)
    assert "3 cases, validated on 1" in card
    assert "WT 0.910, TC 0.850, ET 0.800" in card
    assert "WT 4.2 mm" in card and "1000 steps (10.0 min" in card
    assert "not a usable" not in card and "N4" not in card
    corrected = BrainsegConfig(preprocess=PreprocessConfig(bias_correction=("t1", "t1ce")))
    assert "at 2 mm, N4 bias-field correction of T1, T1CE" in report.model_card(checkpoint, corrected, provenance)
    weak = report.model_card(checkpoint, BrainsegConfig(), {"validation": {"dice": {"WT": 0.1, "TC": 0.2, "ET": 0.1}}})
    assert "not a usable tumour segmenter" in weak
    (tmp_path / "mymodel.md").write_text("# My model\nTrained on everything.")
    assert report.model_card(checkpoint, BrainsegConfig(), provenance) == "# My model\nTrained on everything."


def _nifti(array: np.ndarray, affine=LPS2, gz=True) -> bytes:
    raw = nib.Nifti1Image(array, affine).to_bytes()
    return gzip.compress(raw) if gz else raw


def _scan(seed: int, shape=(12, 10, 8)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random(shape) * 100 + 1).astype(np.float32)


def test_read_scan_and_assemble_a_case_assigned_by_hand():
    scans = {m: read_scan(_nifti(_scan(i)), f"upload_{i}.nii.gz") for i, m in enumerate(("flair", "t1", "t1ce", "t2"))}
    assert scans["t1"].spacing == (2.0, 2.0, 2.0) and scans["t1"].name == "upload_1.nii.gz"
    case = assemble_case(scans)
    assert case.sources == {"flair": "upload_0.nii.gz", "t1": "upload_1.nii.gz", "t1ce": "upload_2.nii.gz", "t2": "upload_3.nii.gz"}
    assert np.array_equal(case.images["t1ce"], _scan(2)) and np.allclose(case.affine, LPS2)
    with pytest.raises(InputError, match="missing modality T2"):
        assemble_case({m: scans[m] for m in ("flair", "t1", "t1ce")})
    scans["t2"] = read_scan(_nifti(_scan(3, (12, 10, 9))), "other_t2.nii.gz")
    with pytest.raises(InputError, match=r"other_t2.nii.gz: shape \(12, 10, 9\) differs"):
        assemble_case(scans)


def test_read_scan_refuses_a_label_map_and_a_truncated_file():
    with pytest.raises(InputError, match="like a segmentation"):
        read_scan(_nifti(labels_with_known_volumes().astype(np.float32)), "x_t1.nii.gz")
    with pytest.raises(InputError, match="x_t2.nii.gz"):
        read_scan(_nifti(_scan(0))[:-200], "x_t2.nii.gz")


def _case(shape=(10, 10, 10)) -> Case:
    return Case({m: _scan(i, shape) for i, m in enumerate(("flair", "t1", "t1ce", "t2"))}, LPS2, None, {"flair": "c_flair.nii.gz"})


def read_reference(data, name, case, convention=None):
    """A reference as the app reads one: checked on the case's grid, in the convention named or found."""
    return read_label_map(data, name, case).internal(convention)


def test_read_reference_maps_either_convention_to_internal_labels():
    case = _case()
    internal = labels_with_known_volumes()
    for convention in ("brats2018", "brats2023"):
        data = _nifti(from_internal(internal, convention))
        labels, found = read_reference(data, "c_seg.nii.gz", case)
        assert found == ("brats2023" if convention == "brats2023" else "brats2018")
        assert np.array_equal(labels, internal)


def test_read_reference_refuses_another_grid_or_foreign_values():
    case = _case()
    with pytest.raises(InputError, match=r"c_seg.nii.gz: shape \(10, 10, 9\) differs"):
        read_reference(_nifti(np.zeros((10, 10, 9), np.uint8)), "c_seg.nii.gz", case)
    with pytest.raises(InputError, match="voxel-to-world matrix differs"):
        read_reference(_nifti(np.zeros((10, 10, 10), np.uint8), np.eye(4)), "c_seg.nii.gz", case)
    bad = np.zeros((10, 10, 10), np.uint8)
    bad[0, 0, 0] = 7
    with pytest.raises(InputError, match=r"unexpected label values \[7\]"):
        read_reference(_nifti(bad), "c_seg.nii.gz", case)
    buffer = io.BytesIO()
    np.save(buffer, from_internal(labels_with_known_volumes(), "brats2018"))
    labels, _ = read_reference(buffer.getvalue(), "c_seg.npy", case)  # no geometry in .npy: shape only
    assert np.array_equal(labels, labels_with_known_volumes())


def test_downloaded_segmentation_lies_on_the_scans_grid():
    case = _case()
    internal = labels_with_known_volumes()
    image = nib.Nifti1Image.from_bytes(gzip.decompress(labels_bytes(internal, case, "brats2018")))
    assert np.allclose(image.affine, LPS2)
    assert np.array_equal(np.asarray(image.dataobj), from_internal(internal, "brats2018"))
    assert sorted(np.unique(np.asarray(image.dataobj)).tolist()) == [0, 1, 2, 4]


def test_comparison_rows_with_and_without_truth():
    a = labels_with_known_volumes()
    b = a.copy()
    b[b == ED] = 0
    rows = report.comparison_rows(("m1", a), ("m2", b), (2.0, 2.0, 2.0))
    assert rows[0] == {"region": "WT", "m1 (mL)": 0.2, "m2 (mL)": 0.04, "Dice between them": round(10 / 30, 4)}
    with_truth = report.comparison_rows(("m1", a), ("m1", b), (1.0, 1.0, 1.0), truth=a)
    assert with_truth[0]["m1 vs truth (Dice)"] == 1.0
    assert with_truth[0]["m1 (second run) vs truth (Dice)"] == round(10 / 30, 4)
