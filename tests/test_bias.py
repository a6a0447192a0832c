"""N4 bias-field correction (brainseg.bias), the optional preprocessing step, chosen per modality."""
import argparse
import json

import numpy as np
import pytest

from brainseg.bias import n4_correct
from brainseg.cli import main, modality_list
from brainseg.config import PreprocessConfig, SettingError


def ball(shape=(64, 64, 64)) -> tuple[np.ndarray, np.ndarray]:
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    inside = (grid ** 2).sum(0) < 0.8
    return grid, inside


def biased_ball(shape=(64, 64, 64)) -> tuple[np.ndarray, np.ndarray]:
    """One tissue of intensity 100 under a field rising 2.7x from one side of the ball to the other."""
    grid, inside = ball(shape)
    rng = np.random.default_rng(0)
    tissue = np.where(inside, 100 + rng.normal(0, 2, inside.shape), 0).astype(np.float32)
    return (tissue * np.exp(0.5 * grid[0])).astype(np.float32), inside


@pytest.mark.parametrize("levels", [3, 2])
def test_a_smooth_field_over_one_tissue_is_divided_out(levels):
    """After N4 the tissue's spread inside a brain-sized ball (115 mm across, 2 mm voxels) falls to a
    fraction of what the field made it; the stiffer two-level field (FLAIR, T2) too."""
    biased, inside = biased_ball()
    corrected = n4_correct(biased, inside, (2.0, 2.0, 2.0), levels)
    spread = lambda image: float(image[inside].std() / image[inside].mean())
    assert spread(biased) > 0.15
    assert spread(corrected) < 0.2 * spread(biased)
    assert (corrected[~inside] == 0).all() and corrected.dtype == np.float32


def test_the_field_does_not_depend_on_how_much_empty_volume_surrounds_the_brain():
    """The same brain cut tightly (a brain box) or inside a larger field of view gets the same correction:
    N4's lattice spans a fixed 240 mm around it, not whatever volume it was handed (before, the tight box
    got a twice finer lattice and the corrections differed by several percent)."""
    biased, inside = biased_ball()
    tight = n4_correct(biased, inside, (2.0, 2.0, 2.0))
    wide_image, wide_mask = np.zeros((96, 96, 96), np.float32), np.zeros((96, 96, 96), bool)
    wide_image[16:80, 16:80, 16:80], wide_mask[16:80, 16:80, 16:80] = biased, inside
    wide = n4_correct(wide_image, wide_mask, (2.0, 2.0, 2.0))[16:80, 16:80, 16:80]
    # N4 fixes the field up to a constant factor, which the z-scoring after it takes out
    relative = np.abs(tight[inside] / tight[inside].mean() / (wide[inside] / wide[inside].mean()) - 1)
    assert relative.max() < 0.002  # 0.012 with the lattice spanning whatever volume N4 was handed


def test_flair_and_t2_get_the_stiffer_field(monkeypatch, tmp_path):
    """Preparing a case fits FLAIR's and T2's fields in two levels (their edema is large and bright, and a
    more flexible field divides part of it out) and T1's and T1ce's in three."""
    import brainseg.preprocess as preprocess
    from brainseg.io import load_case
    from conftest import write_case

    used = []
    monkeypatch.setattr(preprocess, "n4_correct", lambda image, mask, spacing, levels: used.append(levels) or image)
    write_case(tmp_path / "case")
    config = PreprocessConfig(bias_correction=True)
    preprocess.prepare(load_case([tmp_path / "case"]), config)
    assert dict(zip(config.modalities, used)) == {"flair": 2, "t1": 3, "t1ce": 3, "t2": 2}


def test_the_option_names_modalities_and_reads_older_true_false():
    assert PreprocessConfig().bias_correction == ()
    assert PreprocessConfig(bias_correction=True).bias_correction == ("flair", "t1", "t1ce", "t2")
    assert PreprocessConfig(bias_correction=False).bias_correction == ()
    assert PreprocessConfig(bias_correction=["t1ce", "t1"]).bias_correction == ("t1", "t1ce")  # the input order
    for wrong in ("yes", ["t1", "t1"], ["t3"], [1]):
        with pytest.raises(SettingError, match=r"^bias_correction: got .*; expected some of this model's input scans"):
            PreprocessConfig(bias_correction=wrong)
    with pytest.raises(SettingError, match=r"^bias_correction: got t1; expected some of this model's input scans "
                                           r"\(flair, t1ce\), each once"):
        PreprocessConfig(modalities=("flair", "t1ce"), bias_correction=["t1"])


def test_the_command_line_value_is_all_none_or_a_list():
    assert modality_list("all") is True and modality_list("none") == ()
    assert modality_list("T1, t1ce") == ("t1", "t1ce")
    for wrong, said in (("t1,t3", "unknown t3"), ("t1,t1", "t1 given twice"), (",", "nothing given"),
                        ("all,t1", "all and none stand alone, not in a list")):
        with pytest.raises(argparse.ArgumentTypeError, match=f"{said}; expected all, none, or some of flair,t1,t1ce,t2"):
            modality_list(wrong)


def test_segmenting_with_correction_changes_only_the_chosen_scans_and_says_so(tmp_path, tiny_checkpoint):
    from brainseg.checkpoint import load_checkpoint
    from brainseg.io import load_case
    from brainseg.pipeline import segment_case
    from brainseg.preprocess import prepare
    from brainseg.report import run_record
    from conftest import write_case

    write_case(tmp_path / "case")
    case, loaded = load_case([tmp_path / "case"]), load_checkpoint(tiny_checkpoint)
    plain = segment_case(case, loaded, device="cpu")
    corrected = segment_case(case, loaded, device="cpu", bias_correction=["t1ce"])
    assert (plain.bias_corrected, corrected.bias_corrected) == ((), ("t1ce",))
    assert run_record(loaded, loaded.config.inference, loaded.config.postprocess, corrected)["bias_corrected"] == ["t1ce"]
    config = loaded.config.preprocess
    before = prepare(case, config).image
    after = prepare(case, PreprocessConfig(**{**config.__dict__, "bias_correction": ("t1ce",)})).image
    changed = [not np.array_equal(before[c], after[c]) for c in range(4)]
    assert changed == [m == "t1ce" for m in config.modalities]


def test_segment_records_the_corrected_scans_and_a_cohort_keeps_older_uncorrected_results(tmp_path, tiny_checkpoint, capsys):
    from conftest import write_case

    write_case(tmp_path / "cohort" / "a", prefix="a_")
    out = tmp_path / "preds"
    args = ["segment", str(tmp_path / "cohort"), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--no-progress"]
    assert main(args) == 0
    stats_path = out / "a_stats.json"
    stats = json.loads(stats_path.read_text())
    assert stats["bias_corrected"] == []  # the tiny checkpoint corrects nothing
    stats["bias_corrected"] = False  # as brainseg wrote it before the choice per modality
    stats_path.write_text(json.dumps(stats))
    before = (out / "a_seg.nii.gz").stat().st_mtime_ns
    assert main(args) == 0 and (out / "a_seg.nii.gz").stat().st_mtime_ns == before  # the same run: kept
    capsys.readouterr()
    assert main(args + ["--bias-correct", "t1,t1ce"]) == 0
    assert "a: redone, its statistics record bias correction other than this run's" in capsys.readouterr().err
    assert json.loads(stats_path.read_text())["bias_corrected"] == ["t1", "t1ce"]
    assert main(args + ["--bias-correct", "all"]) == 0
    stats = json.loads(stats_path.read_text())
    stats["bias_corrected"] = True  # older brainseg's "all four"
    stats_path.write_text(json.dumps(stats))
    before = (out / "a_seg.nii.gz").stat().st_mtime_ns
    assert main(args + ["--bias-correct", "all"]) == 0 and (out / "a_seg.nii.gz").stat().st_mtime_ns == before


def test_a_cohort_keeps_a_case_whose_normalised_scan_n4_skipped(tmp_path, tiny_checkpoint, capsys):
    """The statistics record the scans asked for beside those corrected: a scan N4 skipped (already
    normalised) does not make every later run with the same setting redo the case."""
    import nibabel as nib
    from conftest import write_case

    paths = write_case(tmp_path / "cohort" / "a", prefix="a_")
    t1ce = nib.load(paths["t1ce"])
    data = np.asarray(t1ce.dataobj, dtype=np.float32)
    brain = data != 0
    data[brain] = (data[brain] - data[brain].mean()) / data[brain].std()
    nib.save(nib.Nifti1Image(data, t1ce.affine), paths["t1ce"])
    out = tmp_path / "preds"
    args = ["segment", str(tmp_path / "cohort"), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--no-progress",
            "--bias-correct", "t1,t1ce"]
    assert main(args) == 0
    stats = json.loads((out / "a_stats.json").read_text())
    assert (stats["bias_correction"], stats["bias_corrected"]) == (["t1", "t1ce"], ["t1"])
    before = (out / "a_seg.nii.gz").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0 and (out / "a_seg.nii.gz").stat().st_mtime_ns == before
    assert "redone" not in capsys.readouterr().err
    assert main(args[:-2] + ["--bias-correct", "t1"]) == 0  # another setting: redone, though N4 ran on the same scan
    assert "a: redone, its statistics record bias correction other than this run's" in capsys.readouterr().err


def test_a_scan_the_checkpoint_does_not_read_is_named_under_the_option(tmp_path, capsys):
    from brainseg.checkpoint import save_checkpoint
    from brainseg.config import BrainsegConfig, ModelConfig
    from brainseg.model import UNet3D
    from conftest import write_case

    write_case(tmp_path / "case")
    config = BrainsegConfig(model=ModelConfig(in_channels=2, features=(4, 8)),
                            preprocess=PreprocessConfig(modalities=("flair", "t1ce")))
    save_checkpoint(tmp_path / "two.pt", UNet3D(config.model), config)
    out = tmp_path / "seg.nii.gz"
    assert main(["segment", str(tmp_path / "case"), "-o", str(out), "--checkpoint", str(tmp_path / "two.pt"),
                 "--bias-correct", "t1", "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --bias-correct: got t1; expected some of this model's input scans "
                                               "(flair, t1ce), each once (true: all, false: none)")
    assert not out.exists()


def test_a_scan_normalised_already_is_not_n4_corrected_and_the_user_is_told(tiny_checkpoint):
    """N4 fits a multiplicative field to the logarithm of magnitudes; a z-scored T1ce (half its brain
    negative) is left as it is, with a warning, and the result does not claim it was corrected."""
    from brainseg.checkpoint import load_checkpoint
    from brainseg.io import Case
    from brainseg.pipeline import segment_case
    from conftest import LPS, synthetic_images

    images = synthetic_images()
    brain = images["t1ce"] != 0
    t1ce = images["t1ce"]
    images["t1ce"] = np.where(brain, (t1ce - t1ce[brain].mean()) / t1ce[brain].std(), 0).astype(np.float32)
    result = segment_case(Case(images, LPS), load_checkpoint(tiny_checkpoint), device="cpu", bias_correction=["t1", "t1ce"])
    assert result.bias_corrected == ("t1",)
    assert any(w.startswith("T1CE: negative intensities inside the brain, so already normalised; N4 bias-field "
                            "correction skipped for it") for w in result.warnings)
