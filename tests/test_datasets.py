"""Decathlon / nnU-Net dataset folders: finding cases, channel order and label values from dataset.json,
and segment / evaluate / train on them."""
import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from brainseg.cli import main
from brainseg.data import find_cases, load_reference
from brainseg.datasets import Description, describe, image_cases
from brainseg.errors import InputError
from brainseg.labels import CONVENTIONS, ED, ET, NCR, from_internal
from brainseg.train import DEFAULT_VALIDATION, TrainConfig, validation_split
from conftest import BRATS, LPS, needs_data, synthetic_images

MSD_LABELS = {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}
NNUNET_REGIONS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}


def truth_labels(shape=(40, 44, 36)) -> np.ndarray:
    """Internal labels with all three tumour classes: ET inside NCR inside edema."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    r2 = ((grid - 0.2) ** 2).sum(0)
    labels = np.zeros(shape, np.uint8)
    labels[r2 < 0.15] = ED
    labels[r2 < 0.08] = NCR
    labels[r2 < 0.03] = ET
    return labels


def write_decathlon(root, cases=("c1", "c2"), four_d=True, order=("flair", "t1", "t1ce", "t2"), description=None):
    """A dataset folder as the Decathlon (one 4D file per case) or nnU-Net (one file per channel) writes it."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    images = synthetic_images()
    for case in cases:
        if four_d:
            stack = np.stack([images[m] for m in order], axis=-1)
            nib.save(nib.Nifti1Image(stack, LPS), root / "imagesTr" / f"{case}.nii.gz")
            (root / "imagesTr" / f"._{case}.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
        else:
            for k, m in enumerate(order):
                nib.save(nib.Nifti1Image(images[m], LPS), root / "imagesTr" / f"{case}_{k:04d}.nii.gz")
        nib.save(nib.Nifti1Image(from_internal(truth_labels(), "msd"), LPS), root / "labelsTr" / f"{case}.nii.gz")
    if description is not None:
        (root / "dataset.json").write_text(json.dumps(description))
    return images


@pytest.mark.parametrize("four_d, order, description", [
    (True, ("flair", "t1", "t1ce", "t2"), {"modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}, "labels": MSD_LABELS}),
    (False, ("t1", "t1ce", "t2", "flair"), {"channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "Flair"}, "labels": NNUNET_REGIONS}),
])
def test_dataset_cases_load_in_their_channel_order_and_label_values(tmp_path, four_d, order, description):
    images = write_decathlon(tmp_path / "ds", four_d=four_d, order=order, description=description)
    cases = find_cases(tmp_path / "ds")
    assert [c.name for c in cases] == ["c1", "c2"]  # the "._c1.nii.gz" metadata files are no cases
    assert cases[0].channels == order and cases[0].label_convention == "msd"
    case, labels = load_reference(cases[0])
    for modality in ("flair", "t1", "t1ce", "t2"):
        np.testing.assert_array_equal(case.images[modality], images[modality])
    np.testing.assert_array_equal(labels, truth_labels())  # 1 read as edema, 2 as necrotic core


@pytest.mark.parametrize("labels, expected", [
    (MSD_LABELS, "msd"),
    ({"background": 0, "edema": 1, "non-enhancing tumor": 2, "enhancing tumour": 3}, "msd"),
    (NNUNET_REGIONS, "msd"),
    ({"0": "background", "1": "NCR", "2": "ED", "4": "ET"}, "brats2018"),
    ({"background": 0, "necrotic core": 1, "edema": 2, "enhancing tumour": 3}, "brats2023"),
    ({"0": "background", "1": "tumour"}, None),
])
def test_label_values_are_read_from_the_description(tmp_path, labels, expected):
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": labels}))
    assert describe(tmp_path).label_convention == expected


def test_a_bad_description_or_case_is_named(tmp_path):
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(InputError, match="dataset.json: not a readable JSON file"):
        describe(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1", "1": "T2", "2": "ADC"}}))
    with pytest.raises(InputError, match=r"channels \['T1', 'T2', 'ADC'\]; expected the four MRI modalities"):
        describe(tmp_path)
    write_decathlon(tmp_path / "ds", cases=("c1",), four_d=False)
    (tmp_path / "ds" / "imagesTr" / "c1_0002.nii.gz").unlink()
    with pytest.raises(InputError, match="case c1 has files c1_0000.nii.gz, c1_0001.nii.gz, c1_0003.nii.gz"):
        image_cases(tmp_path / "ds" / "imagesTr", Description())
    shutil.rmtree(tmp_path / "ds" / "labelsTr")
    with pytest.raises(InputError, match="has imagesTr but no labelsTr"):
        find_cases(tmp_path / "ds")


def test_segment_and_evaluate_a_dataset_in_its_own_label_values(tmp_path, tiny_checkpoint, capsys):
    root = tmp_path / "Task01"
    write_decathlon(root, description={"labels": MSD_LABELS})
    out = tmp_path / "pred"
    assert main(["segment", str(root / "imagesTr"), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--no-progress"]) == 0
    assert "2 of 2 cases segmented" in capsys.readouterr().out
    written = nib.load(out / "c1_seg.nii.gz")
    assert written.header["descrip"].item() == b"brainseg labels msd"
    assert json.loads((out / "c1_stats.json").read_text())["label_convention"] == "msd"

    # a perfect prediction in MSD values scores 1.0 only if both sides are read as MSD: guessed from the
    # values (a 3 means BraTS 2023) edema and necrotic core would swap on one side
    from brainseg.io import Case, save_labels

    case = Case({"flair": np.zeros(truth_labels().shape, np.float32)}, LPS, nib.load(root / "labelsTr" / "c1.nii.gz").header)
    save_labels(truth_labels(), case, out / "c1_seg.nii.gz", "msd")
    (out / "c2_seg.nii.gz").unlink()
    assert main(["evaluate", str(out), str(root / "labelsTr"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["cases"]["c1"]
    assert [result["regions"][r]["dice"] for r in ("WT", "TC", "ET")] == [1.0, 1.0, 1.0]
    assert result["label_conventions"]["read_from"] == {"prediction": "header", "reference": "dataset.json"}
    assert main(["evaluate", str(out), str(root / "labelsTr"), "--reference-labels", "brats2023", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cases"]["c1"]["regions"]["TC"]["dice"] < 0.9


def test_a_dataset_root_is_not_a_cohort(tmp_path, tiny_checkpoint, capsys):
    write_decathlon(tmp_path / "ds", description={"labels": MSD_LABELS})
    assert main(["segment", str(tmp_path / "ds"), "-o", str(tmp_path / "pred"), "--checkpoint", str(tiny_checkpoint)]) == 2
    assert "is a Decathlon / nnU-Net dataset folder; give its imagesTs (or imagesTr) folder" in capsys.readouterr().err


def test_validation_split_is_the_fixed_one_named_or_drawn_with_the_seed():
    names = [f"case{k:02d}" for k in range(12)]
    assert validation_split(names + list(DEFAULT_VALIDATION), TrainConfig()) == DEFAULT_VALIDATION
    assert validation_split(names, TrainConfig(validation=("case03",))) == ("case03",)
    with pytest.raises(InputError, match=r"holds no validation case case99; .* \(it holds case00"):
        validation_split(names, TrainConfig(validation=("case99",)))
    drawn = validation_split(names, TrainConfig(seed=0))
    assert len(drawn) == 2 and set(drawn) <= set(names)  # a fifth of 12, rounded
    assert validation_split(list(reversed(names)), TrainConfig(seed=0)) == drawn  # same on every resume
    assert any(validation_split(names, TrainConfig(seed=s)) != drawn for s in range(1, 6))


@needs_data()
def test_a_real_case_reads_the_same_in_the_decathlon_layout(tmp_path):
    """Brats18_CBICA_AME_1 stacked as the Decathlon's Task01 stores it: same scans, same labels."""
    name = "Brats18_CBICA_AME_1"
    scans = {m: nib.load(BRATS / name / f"{name}_{m}.nii.gz") for m in ("flair", "t1", "t1ce", "t2", "seg")}
    root = tmp_path / "Task01"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    stack = np.stack([np.asarray(scans[m].dataobj) for m in ("flair", "t1", "t1ce", "t2")], axis=-1)
    nib.save(nib.Nifti1Image(stack, scans["flair"].affine, scans["flair"].header), root / "imagesTr" / f"{name}.nii.gz")
    brats = np.asarray(scans["seg"].dataobj).astype(np.uint8)
    msd = np.array([CONVENTIONS["msd"][k] for k in (0, NCR, ED)] + [0, CONVENTIONS["msd"][ET]], np.uint8)[brats]
    nib.save(nib.Nifti1Image(msd, scans["flair"].affine), root / "labelsTr" / f"{name}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
                                                   "labels": MSD_LABELS}))
    (source,) = find_cases(root)
    case, labels = load_reference(source)
    folder_case, folder_labels = load_reference(BRATS / name)
    np.testing.assert_array_equal(labels, folder_labels)
    for modality in ("flair", "t1", "t1ce", "t2"):
        np.testing.assert_array_equal(case.images[modality], folder_case.images[modality])
    np.testing.assert_allclose(case.affine, folder_case.affine)
