"""Decathlon / nnU-Net dataset folders: finding cases, channel order and label values from dataset.json,
and segment / evaluate / train on them."""
import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from brainseg.cli import main
from brainseg.config import TrainConfig
from brainseg.data import find_cases, load_reference
from brainseg.datasets import Description, describe, image_cases
from brainseg.errors import InputError
from brainseg.labels import CONVENTIONS, ED, ET, NCR, from_internal
from brainseg.train import DEFAULT_VALIDATION, validation_split
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
    (True, ("t2", "t1ce", "flair", "t1"), {"modality": {"0": "T2w", "1": "T1-Gd", "2": "T2-FLAIR", "3": "T1"}, "labels": MSD_LABELS}),
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
    ({"background": 0, "NETC": 1, "SNFH": 2, "ET": 3, "RC": 4}, "brats2024"),  # BraTS 2024 post-treatment names
    ({"0": "background", "1": "edema", "2": "edema", "3": "enhancing"}, None),  # edema twice: no guessing a role
])
def test_label_values_are_read_from_the_description(tmp_path, labels, expected):
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": labels}))
    assert describe(tmp_path).label_convention == expected


def test_a_bad_description_or_case_is_named(tmp_path):
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(InputError, match="dataset.json: not a readable JSON file"):
        describe(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1", "1": "T2", "2": "ADC"}}))
    with pytest.raises(InputError, match=r"dataset.json: channels .*'ADC'.*; expected four numbered names"):
        describe(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1", "1": "T2", "2": "ADC", "3": "FLAIR"}}))
    with pytest.raises(InputError, match=r"dataset.json: channel 2 'ADC' names no MRI modality brainseg reads; "
                                         r"expected one each of FLAIR \(T2-FLAIR"):
        describe(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"modality": {"0": "T1", "1": "T1w", "2": "T2", "3": "FLAIR"}}))
    with pytest.raises(InputError, match=r"channel 1 'T1w' is T1 a second time"):
        describe(tmp_path)
    for labels in ({"whole tumor": [1, None]}, {"whole tumor": [1, "x"]}, {"edema": True}):
        (tmp_path / "dataset.json").write_text(json.dumps({"labels": labels}))
        with pytest.raises(InputError, match=r"dataset.json: label '.*' has value .*; expected a whole number"):
            describe(tmp_path)
    write_decathlon(tmp_path / "ds", cases=("c1", "c2"), four_d=False)
    (tmp_path / "ds" / "imagesTr" / "c1_0002.nii.gz").unlink()
    described = Description(found=True)
    c1, c2 = image_cases(tmp_path / "ds" / "imagesTr", described)  # one bad case does not hide the others
    with pytest.raises(InputError, match="case c1 has files c1_0000.nii.gz, c1_0001.nii.gz, c1_0003.nii.gz"):
        c1.load()
    assert c2.load().shape == (40, 44, 36)
    # channel files need a dataset.json to say which is which; 4D files fall back to the Decathlon's order
    with pytest.raises(InputError, match="case c2 is one file per channel, and no dataset.json"):
        image_cases(tmp_path / "ds" / "imagesTr", Description())[1].load()
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
    from brainseg.io import Case
    from brainseg.labelmaps import save_labels

    case = Case({"flair": np.zeros(truth_labels().shape, np.float32)}, LPS, nib.load(root / "labelsTr" / "c1.nii.gz").header)
    save_labels(truth_labels(), case, out / "c1_seg.nii.gz", "msd")
    (out / "c2_seg.nii.gz").unlink()
    assert main(["evaluate", str(out), str(root / "labelsTr"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["cases"]["c1"]
    assert [result["regions"][r]["dice"] for r in ("WT", "TC", "ET")] == [1.0, 1.0, 1.0]
    assert result["label_conventions"]["read_from"] == {"prediction": "header", "reference": "dataset.json"}
    assert main(["evaluate", str(out), str(root / "labelsTr"), "--reference-labels", "brats2023", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cases"]["c1"]["regions"]["TC"]["dice"] < 0.9
    # another tool's prediction (nnU-Net's: no brainseg header) holds the dataset's values too; its 1-3
    # alone would read as BraTS 2023, so it is read as its reference is
    nib.save(nib.Nifti1Image(from_internal(truth_labels(), "msd"), LPS), out / "c1_seg.nii.gz")
    assert main(["evaluate", str(out), str(root / "labelsTr"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["cases"]["c1"]
    assert [result["regions"][r]["dice"] for r in ("WT", "TC", "ET")] == [1.0, 1.0, 1.0]
    assert result["label_conventions"]["read_from"] == {"prediction": "reference", "reference": "dataset.json"}
    assert main(["evaluate", str(out), str(root / "labelsTr")]) == 0
    assert "prediction msd (read as its reference is)" in capsys.readouterr().out


def test_a_post_treatment_dataset_is_segmented_in_its_tumour_values(tmp_path, tiny_checkpoint, capsys):
    """A BraTS 2024 dataset.json (4 = resection cavity) names a convention brainseg only reads: outputs are
    written in its tumour labels' values (BraTS 2023's), and a second run finds them done."""
    root = tmp_path / "post"
    write_decathlon(root, description={"labels": {"background": 0, "NETC": 1, "SNFH": 2, "ET": 3, "RC": 4}})
    out = tmp_path / "pred"
    for _ in range(2):
        assert main(["segment", str(root / "imagesTr"), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "2 of 2 cases segmented" in printed and "(2 by an earlier run)" in printed
    assert nib.load(out / "c1_seg.nii.gz").header["descrip"].item() == b"brainseg labels brats2023"
    assert json.loads((out / "c1_stats.json").read_text())["label_convention"] == "brats2023"
    one = tmp_path / "one.nii.gz"
    assert main(["segment", str(root / "imagesTr" / "c1.nii.gz"), "-o", str(one), "--checkpoint", str(tiny_checkpoint),
                 "--no-progress"]) == 0
    assert nib.load(one).header["descrip"].item() == b"brainseg labels brats2023"


def test_one_case_of_channel_files_is_read_in_its_datasets_order(tmp_path, tiny_checkpoint, capsys):
    """nnU-Net channel files name no modality; given alone they are read as the dataset.json orders them."""
    root = tmp_path / "Dataset001"
    order = ("t1", "t1ce", "t2", "flair")
    write_decathlon(root, cases=("c1",), four_d=False, order=order,
                    description={"channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "Flair"}, "labels": NNUNET_REGIONS})
    files = [str(root / "imagesTr" / f"c1_{k:04d}.nii.gz") for k in range(4)]
    one, folder = tmp_path / "one.nii.gz", tmp_path / "folder"
    assert main(["segment", *reversed(files), "-o", str(one), "--checkpoint", str(tiny_checkpoint), "--no-progress"]) == 0
    assert main(["segment", str(root / "imagesTr"), "-o", str(folder), "--checkpoint", str(tiny_checkpoint), "--no-progress"]) == 0
    # the same as the cohort's read of the case, in the dataset's values
    np.testing.assert_array_equal(np.asarray(nib.load(one).dataobj), np.asarray(nib.load(folder / "c1_seg.nii.gz").dataobj))
    assert nib.load(one).header["descrip"].item() == b"brainseg labels msd"
    capsys.readouterr()
    plain = shutil.copytree(root / "imagesTr", tmp_path / "plain")  # outside a dataset the names say nothing
    files = [str(plain / f"c1_{k:04d}.nii.gz") for k in range(4)]
    assert main(["segment", *files, "-o", str(one), "--checkpoint", str(tiny_checkpoint), "--no-progress"]) == 2
    assert "c1_0000.nii.gz: cannot tell which modality this is" in capsys.readouterr().err


def test_folders_beside_another_dataset_json_keep_their_meaning(tmp_path, tiny_checkpoint, capsys):
    """A MONAI datalist is also called dataset.json: case folders and folders of them beside one stay so."""
    from conftest import write_case

    (tmp_path / "dataset.json").write_text(json.dumps({"training": [{"image": "x", "label": "y"}]}))
    write_case(tmp_path / "cohort" / "c1")
    write_case(tmp_path / "images" / "c2")  # a folder of case folders that happens to be called images
    one = tmp_path / "one.nii.gz"
    assert main(["segment", str(tmp_path / "cohort" / "c1"), "-o", str(one), "--checkpoint", str(tiny_checkpoint), "--no-progress"]) == 0
    for cohort in ("cohort", "images"):
        assert main(["segment", str(tmp_path / cohort), "-o", str(tmp_path / f"out_{cohort}"), "--checkpoint",
                     str(tiny_checkpoint), "--no-progress"]) == 0
    assert (tmp_path / "out_images" / "c2_seg.nii.gz").is_file()


def test_one_bad_case_of_an_images_folder_costs_only_itself(tmp_path, tiny_checkpoint, capsys):
    root = tmp_path / "ds"
    write_decathlon(root, cases=("c1", "c2", "c3"), four_d=False,
                    description={"channel_names": {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}, "labels": MSD_LABELS})
    (root / "imagesTr" / "c2_0003.nii.gz").unlink()
    (root / "labelsTr" / "._c1.nii.gz").write_bytes(b"AppleDouble")
    out = root / "imagesTr" / "pred"  # inside the images folder: still a cohort when resumed
    args = ["segment", str(root / "imagesTr"), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--no-progress"]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "error: c2: " in captured.err and "case c2 has files c2_0000.nii.gz" in captured.err
    assert "2 of 3 cases segmented" in captured.out
    assert main(args) == 2  # resumed: the two done cases are not redone
    assert "(2 by an earlier run)" in capsys.readouterr().out
    # "._c1" is no reference case; c2 has no prediction to score
    assert main(["evaluate", str(out), str(root / "labelsTr"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert sorted(result["cases"]) == ["c1", "c3"] and result["matching"]["unmatched_references"] == ["c2"]


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
    assert validation_split(list(reversed(names)), TrainConfig(seed=0)) == drawn  # not the listing's order
    assert any(validation_split(names, TrainConfig(seed=s)) != drawn for s in range(1, 6))
    assert validation_split(names, TrainConfig(validation=())) == ()  # --validation alone: train on every case


def test_a_resumed_run_keeps_the_split_it_began_with(tmp_path):
    names = [f"case{k:02d}" for k in range(12)]
    saved = tmp_path / "split.json"
    saved.write_text(json.dumps({"train": names[2:], "validation": names[:2]}))
    resumed = TrainConfig(resume=str(tmp_path / "state.pt"), seed=7)  # another seed would draw other cases
    assert validation_split(names, resumed, saved) == ("case00", "case01")
    assert validation_split(names, TrainConfig(seed=7), saved) != ("case00", "case01")  # a fresh run draws anew
    with pytest.raises(InputError, match=r"--validation case05: the resumed run validated on case00, case01"):
        validation_split(names, TrainConfig(resume="x", validation=("case05",)), saved)
    saved.write_text("[]")
    with pytest.raises(InputError, match="split.json: not the split.json brainseg train writes"):
        validation_split(names, resumed, saved)


def test_a_maps_header_wins_over_its_datasets_description_everywhere(tmp_path, capsys):
    """A brainseg-written BraTS 2023 map among Decathlon-valued ones: training and evaluate read it alike."""
    from brainseg.io import Case
    from brainseg.labelmaps import save_labels

    root = tmp_path / "ds"
    write_decathlon(root, cases=("c1",), description={"labels": MSD_LABELS})
    reference = root / "labelsTr" / "c1.nii.gz"
    case = Case({"flair": np.zeros(truth_labels().shape, np.float32)}, LPS, nib.load(reference).header)
    save_labels(truth_labels(), case, reference, "brats2023")  # 1 core, 2 edema: swapped if read as msd
    (source,) = find_cases(root)
    case, labels = load_reference(source)
    np.testing.assert_array_equal(labels, truth_labels())
    from brainseg.config import PreprocessConfig
    from brainseg.data import load_training_cases, to_training_case

    (trained,) = load_training_cases([source], PreprocessConfig())  # training targets read it alike
    np.testing.assert_array_equal(trained.target, to_training_case(case, truth_labels(), PreprocessConfig(), "c1").target)
    shutil.copy(reference, tmp_path / "c1_pred.nii.gz")
    assert main(["evaluate", str(tmp_path / "c1_pred.nii.gz"), str(reference), "--json"]) == 0
    read = json.loads(capsys.readouterr().out)["label_conventions"]
    assert read["reference"] == "brats2023" and read["read_from"]["reference"] == "header"


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
