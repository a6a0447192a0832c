"""Training on real cases: a few steps alone, resumed, and under torchrun with two processes."""
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from brainseg.cli import main
from brainseg.checkpoint import load_checkpoint
from brainseg.config import MODALITIES, BrainsegConfig, InferenceConfig, ModelConfig, PreprocessConfig, SettingError
from brainseg.errors import InputError
from brainseg.data import TrainingCase, sample_patch, to_training_case
from brainseg.io import Case
from brainseg.model import UNet3D
from brainseg.train import Distributed, TrainConfig, learning_rate, shared_minutes
from conftest import BRATS, LPS, needs_data

CASES = ("Brats18_CBICA_ABM_1", "Brats18_CBICA_ALU_1", "Brats18_TCIA01_425_1")


def test_learning_rate_warms_up_then_anneals():
    config = TrainConfig(lr=1e-3, warmup_steps=10, max_steps=110)
    assert learning_rate(0, config) == pytest.approx(1e-4)
    assert learning_rate(10, config) == pytest.approx(1e-3)
    assert learning_rate(110, config) == pytest.approx(1e-5)
    timed = TrainConfig(lr=1e-3, warmup_steps=10, max_steps=10_000, time_limit_minutes=10)
    assert learning_rate(20, timed, minutes=10) == pytest.approx(1e-5)  # the clock ran out first
    short = TrainConfig(lr=1e-3, warmup_steps=100, max_steps=40)  # warm-up cut to a tenth of the run: 4 steps
    assert [learning_rate(s, short) for s in (0, 3, 4)] == pytest.approx([2.5e-4, 1e-3, 1e-3])


def test_a_resumed_run_goes_on_down_the_schedule_rather_than_back_up():
    """The time limit counts again from a resumption; the decay it drives goes on from where it was. More
    --max-steps without a clock go by the new length, as a longer run would."""
    from brainseg.train import clock_share, schedule_progress

    timed = TrainConfig(lr=1e-3, warmup_steps=10, max_steps=10_000, time_limit_minutes=60)
    stopped = clock_share(timed, minutes=30)  # killed halfway through its hour
    assert stopped == pytest.approx(0.5)
    at_stop = learning_rate(1000, timed, minutes=30)
    assert learning_rate(1000, timed, minutes=0, start=stopped) == pytest.approx(at_stop)  # no jump back up
    assert learning_rate(1500, timed, minutes=60, start=stopped) == pytest.approx(1e-5)  # annealed at the new limit
    assert schedule_progress(1200, timed, minutes=30, start=stopped) == pytest.approx(0.75)  # half of what was left
    assert clock_share(timed, 30, stopped) == pytest.approx(0.75)  # what the next state.pt saves
    longer = replace(timed, time_limit_minutes=0, max_steps=20_000)
    untimed = replace(timed, time_limit_minutes=0)  # a run the steps alone decayed, resumed twice as long:
    assert learning_rate(1000, longer) > learning_rate(1000, untimed)  # where a 20000-step run is at step 1000
    assert learning_rate(1000, longer, start=stopped) == pytest.approx(at_stop)  # the run-down clock is kept
    assert learning_rate(20_000, longer, start=stopped) == pytest.approx(1e-5)


def test_patches_are_tumour_aware_and_reach_the_edges():
    image = np.ones((4, 30, 30, 30), np.float32)
    target = np.zeros((3, 30, 30, 30), np.uint8)
    target[:, 28:, 28:, 28:] = 1  # tumour in a corner
    item = TrainingCase("c", image, target, np.ones((30, 30, 30), bool))
    rng = np.random.default_rng(0)
    hits = [sample_patch(item, (16, 16, 16), rng, tumour_share=1.0)[1].any() for _ in range(20)]
    assert all(hits)  # every tumour-centred patch holds tumour, even at the volume's corner
    none = [sample_patch(item, (16, 16, 16), rng, tumour_share=0.0)[1].any() for _ in range(200)]
    assert 0 < sum(none) < 100  # random patches reach the corner sometimes, not mostly
    small = TrainingCase("s", image[:, :10], target[:, :10], np.ones((10, 30, 30), bool))
    patch, _ = sample_patch(small, (16, 16, 16), rng, 0.5)
    assert patch.shape == (4, 16, 16, 16)  # padded where the volume is smaller


def test_targets_hold_the_share_of_each_coarse_voxel_inside_the_region():
    images = {m: np.full((40, 40, 40), 100.0 + k, np.float32) for k, m in enumerate(("flair", "t1", "t1ce", "t2"))}
    labels = np.zeros((40, 40, 40), np.uint8)
    labels[10:13, 10:20, 10:20] = 2  # edema three 1 mm voxels thick: one whole 2 mm voxel and half of the next
    item = to_training_case(Case(images, LPS), labels, PreprocessConfig(), "c")
    assert item.target.shape == (3, 20, 20, 20) and item.target.dtype == np.float16
    # LPS input is already in model orientation; the brain box is the whole volume
    assert [float(item.target[0, x, 7, 7]) for x in (4, 5, 6, 7)] == [0.0, 1.0, 0.5, 0.0]
    assert not item.target[1:].any()  # edema only: no tumour core, no enhancing tumour


def test_soft_targets_still_centre_patches_on_tumour():
    target = np.zeros((3, 30, 30, 30), np.float16)
    target[0, 28:, 28:, 28:] = 0.75
    target[0, 5, 5, 5] = 0.25  # mostly outside the region: never a centre
    item = TrainingCase("c", np.ones((4, 30, 30, 30), np.float32), target, np.ones((30, 30, 30), bool))
    rng = np.random.default_rng(0)
    assert all(sample_patch(item, (8, 8, 8), rng, tumour_share=1.0)[1][0].max() == 0.75 for _ in range(20))


def test_centres_come_from_the_brain_and_every_present_region():
    shape = (40, 40, 40)
    index = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)  # each voxel holds its flat index
    brain = np.zeros(shape, bool)
    brain[30:, 30:, 30:] = True
    target = np.zeros((3, *shape), np.float16)
    target[:, 35, 35, 35] = 1.0  # one voxel inside all three regions
    target[0, 5, 5, 5] = 1.0  # a whole-tumour voxel outside the brain
    item = TrainingCase("c", np.stack([index] * 4), target, brain)
    corner, far = np.ravel_multi_index((35, 35, 35), shape), np.ravel_multi_index((5, 5, 5), shape)
    assert [v.tolist() for v in item.region_voxels] == [[far, corner], [corner], [corner]]
    rng = np.random.default_rng(1)
    starts = [np.unravel_index(int(sample_patch(item, (4, 4, 4), rng, 0.0)[0][0, 0, 0, 0]), shape) for _ in range(50)]
    assert all(min(s) >= 28 for s in starts)  # centres inside the brain corner [30, 40)
    centred = [sample_patch(item, (4, 4, 4), rng, 1.0)[1] for _ in range(60)]
    # WT is picked a third of the time, then either of its two voxels: about 10 windows hold WT only
    assert 3 <= sum(not w[2].any() for w in centred) <= 20
    assert all(w[0].any() for w in centred)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for case in CASES:
        os.symlink(BRATS / case, root / case)
    return root


TRAIN_ARGS = ["--max-steps", "2", "--val-every", "2", "--patch-size", "32", "32", "32", "--batch-size", "1",
              "--validation", CASES[0]]


@needs_data()
def test_train_writes_checkpoints_logs_and_resumes(small_data, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--data", str(small_data), "--output", str(out), *TRAIN_ARGS]) == 0
    for name in ("best.pt", "last.pt", "state.pt", "metrics.csv", "split.json", "curves.png"):
        assert (out / name).is_file(), name
    split = json.loads((out / "split.json").read_text())
    assert split == {"train": sorted(CASES[1:]), "validation": [CASES[0]]}
    loaded = load_checkpoint(out / "best.pt")
    assert loaded.provenance["validation_cases"] == [CASES[0]]
    with (out / "metrics.csv").open() as f:  # the checkpoint records the scores of the step it holds
        row = next(r for r in csv.DictReader(f) if int(r["step"]) == loaded.provenance["step"])
    assert loaded.provenance["validation"]["dice"]["WT"] == pytest.approx(float(row["val_dice_WT"]))

    # the run's config.json repeats it; options given beside it win
    again = tmp_path / "again"
    assert main(["train", "--config", str(out / "config.json"), "--output", str(again), "--lr", "0.001"]) == 0
    first, second = (json.loads((d / "config.json").read_text()) for d in (out, again))
    assert second["train"] == {**first["train"], "output": str(again), "lr": 0.001}
    assert second["model"] == first["model"]
    assert json.loads((again / "split.json").read_text()) == split

    args = ["train", "--data", str(small_data), "--output", str(out), *TRAIN_ARGS]
    args[args.index("--max-steps") + 1] = "4"
    assert main(args + ["--resume", str(out / "state.pt")]) == 0
    with (out / "metrics.csv").open() as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [2, 4]
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["step"] == 4 and "stale" in state

    # a resume that fails on its data leaves the run's settings as they were
    broken = tmp_path / "broken"
    broken.mkdir()
    for case in CASES:
        os.symlink(BRATS / case, broken / case)
    (broken / "Brats18_X_1").mkdir()
    for scan in sorted((BRATS / CASES[1]).iterdir()):
        name = scan.name.replace(CASES[1], "Brats18_X_1")
        if scan.name.endswith("_seg.nii.gz"):
            (broken / "Brats18_X_1" / name).write_bytes(scan.read_bytes()[:2000])  # truncated
        else:
            os.symlink(scan, broken / "Brats18_X_1" / name)
    recorded = (out / "config.json").read_text()
    failed = ["train", "--data", str(broken), "--output", str(out), "--resume", str(out), "--max-steps", "6", "--lr", "0.001"]
    assert main(failed) == 2
    assert (out / "config.json").read_text() == recorded
    # another run's state into a folder that holds a run: refused, not mixed into it
    assert main(["train", "--output", str(again), "--resume", str(out / "state.pt"), "--max-steps", "6"]) == 2
    # into a new folder: its best checkpoint and history come along
    moved = tmp_path / "moved"
    assert main(["train", "--output", str(moved), "--resume", str(out / "state.pt"), "--max-steps", "6"]) == 0
    assert (moved / "best.pt").is_file() and (moved / "best_validation.json").is_file()
    with (moved / "metrics.csv").open() as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [2, 4, 6]


def test_a_resumed_run_counts_patience_on_from_its_state(tmp_path):
    from brainseg.train import _resume

    model = UNet3D(ModelConfig(features=(4, 8)))
    optimizer = torch.optim.AdamW(model.parameters())
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": 6, "best_score": 0.7,
             "seconds": 12.0, "stale": 3}
    path = tmp_path / "state.pt"
    torch.save(state, path)
    resumed = _resume(path, TrainConfig(resume=str(path), max_steps=10), model, optimizer)
    assert (resumed.step, resumed.best_score, resumed.seconds, resumed.stale, resumed.clock) == (6, 0.7, 12.0, 3, 0.0)
    # no clock share saved above: the steps decide the decay
    assert resumed.saved() == {"step": 6, "best_score": 0.7, "seconds": 12.0, "stale": 3, "clock_share": 0.0}
    torch.save({**state, "clock_share": 0.9}, path)
    assert _resume(path, TrainConfig(resume=str(path), max_steps=10), model, optimizer).clock == 0.9
    torch.save({**state, "clock_share": 1.0}, path)  # stopped at its limit: trained on from the peak
    assert _resume(path, TrainConfig(resume=str(path), max_steps=10), model, optimizer).clock == 0.0
    del state["stale"]  # a state saved before the count was kept starts it at 0
    torch.save(state, path)
    assert _resume(path, TrainConfig(resume=str(path), max_steps=10), model, optimizer).stale == 0


def test_folders_that_are_not_labelled_cases_are_said_to_be_left_out(tmp_path, caplog):
    import logging

    import nibabel as nib

    from brainseg.data import find_cases
    from brainseg.train import validation_split
    from conftest import write_case

    labels = np.zeros((40, 44, 36), np.uint8)
    labels[10:20, 10:20, 10:20] = 2
    for name in ("good1", "good2", "short", "unlabelled"):
        paths = write_case(tmp_path / name, prefix=f"{name}_")
        if name != "unlabelled":
            nib.save(nib.Nifti1Image(labels, LPS), tmp_path / name / f"{name}_seg.nii.gz")
        if name == "short":
            paths["t1"].unlink()
    (tmp_path / ".ipynb_checkpoints").mkdir()  # hidden: not a case, and nothing to say about it
    with caplog.at_level(logging.WARNING, logger="brainseg.data"):
        assert [c.name for c in find_cases(tmp_path)] == ["good1", "good2"]
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and any("short: left out (missing modality T1" in m for m in said)
    assert any("unlabelled: left out (no segmentation" in m for m in said)
    # BraTS 2018-2019's training layout: case folders inside HGG/ and LGG/
    write_case(tmp_path / "HGG" / "good3", prefix="good3_")
    nib.save(nib.Nifti1Image(labels, LPS), tmp_path / "HGG" / "good3" / "good3_seg.nii.gz")
    assert [c.name for c in find_cases(tmp_path)] == ["good1", "good2", "good3"]
    shutil.rmtree(tmp_path / "HGG")
    with pytest.raises(InputError, match=r"holds no validation case unlabelled; .*\(unlabelled: no segmentation"):
        validation_split(["good1", "good2"], TrainConfig(data=str(tmp_path), validation=("unlabelled",)))


def test_a_resumed_run_draws_new_patches_rather_than_replaying_the_first_ones():
    from brainseg.train import _random_streams

    fresh, fresh_seed = _random_streams(3, 1, 0)
    assert fresh_seed == 1003 and fresh.integers(10**9) == np.random.default_rng(1003).integers(10**9)  # as runs always drew
    draws = {step: _random_streams(3, 1, step)[0].integers(10**9, size=4).tolist() for step in (0, 500, 1000)}
    assert len({tuple(d) for d in draws.values()}) == 3  # each part of a run draws its own
    assert _random_streams(3, 1, 500)[0].integers(10**9, size=4).tolist() == draws[500]  # and repeats when resumed again
    assert _random_streams(3, 1, 500)[1] != _random_streams(3, 0, 500)[1] != fresh_seed


@needs_data()
def test_train_from_python_keeps_stdout_and_the_plotting_backend_of_the_caller(small_data, tmp_path, capsys):
    """A notebook's stdout and inline matplotlib backend are the caller's; pathlib paths are fine."""
    import matplotlib

    from brainseg.config import BrainsegConfig
    from brainseg.train import train

    matplotlib.use("svg")  # stands in for a notebook's inline backend
    config = TrainConfig(data=small_data, output=tmp_path / "run", max_steps=2, val_every=2, patch_size=(32, 32, 32),
                         batch_size=1, validation=[CASES[0]])
    best = train(config, BrainsegConfig(model=ModelConfig(features=(8, 16, 32))), progress=False)
    assert best == tmp_path / "run" / "best.pt" and load_checkpoint(best).config.model.features == (8, 16, 32)
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    assert capsys.readouterr().out == "" and matplotlib.get_backend() == "svg"


def test_settings_that_do_not_fit_together_are_refused_before_any_data_is_read(tmp_path):
    from brainseg.config import BrainsegConfig
    from brainseg.train import train

    config = TrainConfig(data=str(tmp_path / "nothing here"), output=str(tmp_path / "run"), max_steps=2)
    with pytest.raises(SettingError, match="model.out_channels"):
        train(config, BrainsegConfig(model=ModelConfig(features=(8, 16, 32), out_channels=4)))  # regions need 3
    assert not (tmp_path / "run").exists()


def test_the_training_cache_tells_scans_corrected_with_other_fitting_levels_apart(tmp_path, monkeypatch):
    """Arrays N4-corrected with one number of fitting levels are not served for another (FLAIR and T2 were
    fitted in three levels before 2026-11-25, in two since); scans N4 does not touch keep their key."""
    import nibabel as nib

    import brainseg.bias
    from brainseg.data import find_cases, load_training_cases
    from conftest import write_case

    write_case(tmp_path / "data" / "case01", prefix="case01_")
    labels = np.zeros((40, 44, 36), np.uint8)
    labels[10:20, 10:20, 10:20] = 2
    nib.save(nib.Nifti1Image(labels, LPS), tmp_path / "data" / "case01" / "case01_seg.nii.gz")
    cache = tmp_path / "cache"

    def cached_after(config, levels):
        monkeypatch.setattr(brainseg.bias, "MODALITY_FIT_LEVELS", levels)
        load_training_cases(find_cases(tmp_path / "data"), config, cache)
        return len(list(cache.iterdir()))

    both, t1 = PreprocessConfig(bias_correction=("flair", "t1")), PreprocessConfig(bias_correction=("t1",))
    assert cached_after(both, {"flair": 2}) == 1
    assert cached_after(both, {"flair": 2}) == 1  # the same settings: read back
    assert cached_after(both, {}) == 2  # FLAIR fitted in three levels: prepared again
    assert cached_after(t1, {"flair": 2}) == 3
    assert cached_after(t1, {}) == 3  # T1's fit did not change: read back


def test_the_training_cache_is_read_again_when_a_segmentation_is_corrected(tmp_path, monkeypatch):
    """Cached arrays are keyed on the files' contents: a corrected map is not served from the cache, an
    unchanged case is, and no temporary file is left beside them."""
    import nibabel as nib

    from brainseg.data import find_cases, load_training_cases
    from conftest import write_case

    write_case(tmp_path / "data" / "case01", prefix="case01_")
    seg = tmp_path / "data" / "case01" / "case01_seg.nii.gz"
    labels = np.zeros((40, 44, 36), np.uint8)
    labels[10:20, 10:20, 10:20] = 2
    nib.save(nib.Nifti1Image(labels, LPS), seg)
    import brainseg.data

    prepared = []
    real = brainseg.data.to_training_case
    monkeypatch.setattr(brainseg.data, "to_training_case", lambda *a, **k: prepared.append(1) or real(*a, **k))
    cache, config = tmp_path / "cache", PreprocessConfig()
    first = load_training_cases(find_cases(tmp_path / "data"), config, cache)[0].target
    assert first[2].max() == 0  # no ET
    assert len(list(cache.iterdir())) == 1 and len(prepared) == 1
    (tmp_path / "data" / "case01" / "notes.txt").write_text("reader's notes")  # not one of the case's files
    load_training_cases(find_cases(tmp_path / "data"), config, cache)
    assert len(list(cache.iterdir())) == 1 and len(prepared) == 1  # read from the cache, not made again
    labels[12:18, 12:18, 12:18] = 4  # the expert corrects the map: ET inside
    nib.save(nib.Nifti1Image(labels, LPS), seg)
    corrected = load_training_cases(find_cases(tmp_path / "data"), config, cache)[0].target
    assert corrected[2].max() > 0.9 and len(prepared) == 2
    assert sorted(p.suffix for p in cache.iterdir()) == [".npz", ".npz"]
    for damaged in cache.iterdir():  # damaged outside brainseg: made again, not a traceback
        damaged.write_bytes(b"PK\x03\x04 not a whole zip")
    np.testing.assert_array_equal(load_training_cases(find_cases(tmp_path / "data"), config, cache)[0].target, corrected)


@needs_data()
def test_training_reads_segmentations_in_the_convention_it_is_told(tmp_path):
    """One real case with its segmentation rewritten as Decathlon Task01 and as BraTS 2024 post-treatment
    (a resection cavity added outside the tumour) gives the same targets as the original once named."""
    import nibabel as nib

    from brainseg.data import find_cases, load_training_cases
    from brainseg.labels import from_internal, to_internal

    case = CASES[0]
    seg = nib.load(BRATS / case / f"{case}_seg.nii.gz")
    internal = to_internal(np.asarray(seg.dataobj), "brats2018")
    post = from_internal(internal, "brats2023")
    post[20:40, 20:40, 20:40][post[20:40, 20:40, 20:40] == 0] = 4
    assert (post == 4).sum() > 1000
    folders = {}
    for name, values in (("msd", from_internal(internal, "msd")), ("brats2024", post)):
        folder = tmp_path / name / case
        folder.mkdir(parents=True)
        for modality in ("flair", "t1", "t1ce", "t2"):
            os.symlink(BRATS / case / f"{case}_{modality}.nii.gz", folder / f"{case}_{modality}.nii.gz")
        nib.save(nib.Nifti1Image(values, seg.affine), folder / f"{case}_seg.nii.gz")
        folders[name] = folder
    config = PreprocessConfig()
    truth = load_training_cases([s for s in find_cases(BRATS) if s.name == case], config)[0].target
    for name, folder in folders.items():
        named = load_training_cases(find_cases(folder.parent), config, tmp_path / "cache", name)[0].target
        np.testing.assert_array_equal(named, truth, err_msg=name)
    guessed = load_training_cases(find_cases(folders["msd"].parent), config, tmp_path / "cache")[0].target  # read as BraTS 2023+
    assert not np.array_equal(guessed, truth)  # and not a cached copy of the named read
    with pytest.raises(SettingError, match=r"^labels: unknown label convention 'brats2019'"):
        TrainConfig(labels="brats2019")


@needs_data()
def test_init_starts_from_a_checkpoints_weights_and_settings(small_data, tmp_path, tiny_checkpoint):
    out = tmp_path / "init"
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"model": {"postprocess": {"min_component_voxels": 7}}}))
    # lr 0: AdamW leaves the weights where they started, so the run's checkpoint must equal the source
    assert main(["train", "--data", str(small_data), "--output", str(out), *TRAIN_ARGS, "--init", str(tiny_checkpoint),
                 "--lr", "0", "--config", str(settings)]) == 0
    start, trained = load_checkpoint(tiny_checkpoint), load_checkpoint(out / "last.pt")
    assert trained.config.model == start.config.model  # the source's (4, 8) network, not the default one
    assert trained.config.postprocess.min_component_voxels == 7  # --config's post-processing applies
    assert trained.config.inference.patch_size == (32, 32, 32)  # windows follow the training patch
    weights = trained.model.state_dict()
    assert all(torch.equal(v, weights[k]) for k, v in start.model.state_dict().items())


@needs_data()
@pytest.mark.slow
def test_torchrun_two_processes_writes_a_usable_checkpoint(small_data, tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    brainseg = Path(sys.executable).parent / "brainseg"
    out = tmp_path / "ddp"
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", str(brainseg), "train", "--data", str(small_data),
                           "--output", str(out), *TRAIN_ARGS[:2], "--val-every", "4", *TRAIN_ARGS[4:], "--threads", "1"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "best.pt").is_file()
    assert proc.stdout.count("best checkpoint:") == 1  # from rank 0 only
    seg = tmp_path / "seg.nii.gz"
    assert main(["segment", str(BRATS / CASES[0]), "-o", str(seg), "--checkpoint", str(out / "best.pt"), "--no-progress"]) == 0
    assert seg.is_file()


# ---- settings are checked before any data is read -------------------------------------------

BAD_OPTIONS = [
    (["--val-every", "0"], "--val-every: got 0; expected a whole number >= 1"),
    (["--spacing", "0"], "--spacing: got (0.0, 0.0, 0.0); expected three numbers from 0.5 to 8 (millimetres)"),
    (["--spacing", "-2"], "--spacing: got (-2.0, -2.0, -2.0); expected three numbers from 0.5 to 8 (millimetres)"),
    (["--batch-size", "0"], "--batch-size: got 0; expected a whole number >= 1"),
    (["--max-steps", "0"], "--max-steps: got 0; expected a whole number >= 1"),
    (["--patch-size", "40", "64", "64"], "--patch-size: got (40, 64, 64); expected multiples of 16 for this network (4 poolings), such as (48, 64, 64)"),
    (["--patch-size", "0", "64", "64"], "--patch-size: got (0, 64, 64); expected three whole numbers 1-512 (voxels)"),
    (["--patch-size", "16", "16", "16"], "--patch-size: got (16, 16, 16); expected a side longer than 16 voxels for this "
                                         "network (4 poolings), such as (32, 32, 32)"),
    (["--spacing", "1e6"], "--spacing: got (1000000.0, 1000000.0, 1000000.0); expected three numbers from 0.5 to 8 (millimetres)"),
    (["--time-limit", "-5"], "--time-limit: got -5.0; expected a number >= 0"),
    (["--lr", "nan"], "--lr: got nan; expected a number >= 0"),
    (["--seed", "-1"], "--seed: got -1; expected a whole number >= 0"),
]


@pytest.mark.parametrize("options, message", BAD_OPTIONS, ids=[" ".join(o) for o, _ in BAD_OPTIONS])
def test_bad_train_option_is_one_error_line_naming_it_before_data_is_read(options, message, tmp_path, capsys):
    # the data folder does not exist: had the data been looked at first, that would be the error
    status = main(["train", "--data", str(tmp_path / "no-data"), "--output", str(tmp_path / "run"), *options])
    err = capsys.readouterr().err
    assert status == 2
    assert err.strip().splitlines() == ["error: " + message], err
    assert not (tmp_path / "run").exists()


def _bad_states(tmp_path):
    """(file, extra options, expected error) for --resume mistakes users make."""
    model = UNet3D(ModelConfig())
    state = {"model": model.state_dict(), "optimizer": torch.optim.AdamW(model.parameters()).state_dict(),
             "step": 1, "best_score": 0.5}
    torch.save(state, tmp_path / "state.pt")
    torch.save({"format": "brainseg", "weights": model.state_dict()}, tmp_path / "best.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file at all" * 10)
    return [
        (tmp_path / "garbage.pt", [], "cannot be read as a training state (UnpicklingError: truncated, or not a state.pt"),
        (tmp_path / "best.pt", [], "holds no training state; expected the state.pt of a run folder (best.pt and last.pt are checkpoints"),
        (tmp_path / "state.pt", ["--residual"], "its weights do not fit the network these settings build; resume without model options"),
        (tmp_path / "missing.pt", [], "no such file; expected the state.pt of an earlier run's folder"),
        (tmp_path / "no-run", [], "no such file; expected the state.pt of an earlier run's folder"),  # a mistyped folder
        (tmp_path, ["--residual"], "its weights do not fit"),  # a run folder stands for its state.pt
    ]


def test_config_file_settings_and_where_a_bad_one_came_from(tmp_path, capsys):
    from brainseg.run_config import build_configs

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"train": {"data": "d", "weight_decay": 1e-4, "output": "old", "resume": "old/state.pt"},
                                "model": {"model": {"features": [8, 16, 32], "output_mode": "labels"}}}))
    tc, config = build_configs(path, {"output": "new", "seed": 3}, {"preprocess.spacing": (1.5, 1.5, 1.5)})
    assert (tc.data, tc.output, tc.resume, tc.weight_decay, tc.seed) == ("d", "new", "", 1e-4, 3)  # not the old run's folder
    assert config.model.features == (8, 16, 32) and config.model.out_channels == 4  # the head follows the mode
    assert config.preprocess.spacing == (1.5, 1.5, 1.5)
    cases = [
        ({"train": {"data": "d", "lr": -1}}, [], f"error: {path}: setting lr: got -1; expected a number >= 0"),
        ({"train": {"data": "d", "lr": 1}}, ["--lr", "-1"], "error: --lr: got -1.0; expected a number >= 0"),
        ({"train": {"data": "d"}, "model": {"model": {"dropout": 3}}}, [],
         f"error: {path}: setting model.dropout: got 3; expected a number >= 0 and < 1"),
        # JSON types Python would take the wrong way: "false" is true, a string is a list of letters
        ({"train": {"data": "d", "augment": "false"}}, [], f"error: {path}: setting augment: got 'false'; expected true or false"),
        ({"train": {"data": "d"}, "model": {"model": {"residual": "no"}}}, [], f"error: {path}: setting model.residual: got 'no'"),
        ({"train": {"data": "d", "validation": "ab"}}, [], f"error: {path}: setting validation: got 'ab'; expected a list of case ids"),
        ({"train": {"data": None}}, [], f"error: {path}: setting data: got None; expected a path or name as text"),
        # settings that do not fit together are refused before any data is read, naming where they came from
        ({"train": {"data": "d"}, "model": {"model": {"in_channels": 3}}}, [], f"error: {path}: setting model.in_channels: 3 input channels for 4"),
        ({"train": {"data": "d", "patch_size": [40, 40, 40]}}, [], f"error: {path}: setting patch_size: got (40, 40, 40); expected multiples of 16"),
        ({"train": {"data": "d"}}, ["--patch-size", "40", "64", "64"], "error: --patch-size: got (40, 64, 64); expected multiples of 16"),
        ({"train": {"data": "d", "lrr": 1}}, [], f"error: {path}: unknown train settings ['lrr']; expected some of"),
        ({"model": {"modle": {}}}, [], f"error: {path}: \"model\" holds ['modle']; expected some of the sections"),
        ({"train": {}}, [], "error: --data: required (or \"data\" in the --config file's \"train\" section)"),
        ([1, 2], [], f"error: {path}: holds list; expected a JSON object"),
    ]
    for content, options, message in cases:
        path.write_text(json.dumps(content))
        assert main(["train", "--config", str(path), "--output", str(tmp_path / "run"), *options]) == 2
        assert capsys.readouterr().err.startswith(message), message
    assert not (tmp_path / "run").exists()

    # a yes/no setting from the file can be turned back by its option either way
    path.write_text(json.dumps({"train": {"data": "d", "augment": False}, "model": {"model": {"residual": True}}}))
    tc, config = build_configs(path, {"output": "o", "augment": True}, {"model.residual": False})
    assert tc.augment is True and config.model.residual is False


def test_init_patches_are_checked_against_the_checkpoints_network(tiny_checkpoint):
    from brainseg.run_config import build_configs

    options = {"data": "d", "output": "o", "patch_size": (18, 18, 18)}
    with pytest.raises(SettingError, match="expected multiples of 16"):  # the default network: 4 poolings
        build_configs(None, options, {})
    tc, _ = build_configs(None, {**options, "init": str(tiny_checkpoint)}, {})  # its network pools once
    assert tc.patch_size == (18, 18, 18)


def test_init_keeps_the_checkpoints_network_and_takes_the_given_inference_settings(tiny_checkpoint, tmp_path, caplog):
    from brainseg.run_config import build_configs

    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"model": {"model": {"features": [8, 16]}, "inference": {"threshold": 0.4},
                                          "postprocess": {"min_component_voxels": 7}}}))
    options = {"data": "d", "output": "o", "patch_size": (16, 16, 16), "init": str(tiny_checkpoint)}
    _, config = build_configs(path, options, {"inference.overlap": 0.25})
    assert config.model.features == (4, 8)  # the weights' network, not the file's
    assert "using its model settings, not the ones given" in caplog.text
    assert (config.inference.threshold, config.inference.overlap, config.postprocess.min_component_voxels) == (0.4, 0.25, 7)
    assert config.inference.tta is False and config.preprocess.spacing == (2.0, 2.0, 2.0)  # the rest: the checkpoint's
    _, plain = build_configs(None, options, {})
    assert plain == load_checkpoint(tiny_checkpoint).config


def test_bias_correct_option_chooses_the_scans_n4_corrects_with_and_without_init(tiny_checkpoint, tmp_path, monkeypatch, caplog):
    import brainseg.train

    runs = []
    monkeypatch.setattr(brainseg.train, "train", lambda tc, config: runs.append(config) or tmp_path / "best.pt")
    common = ["train", "--data", "d", "--output", str(tmp_path / "o"), "--patch-size", "32", "32", "32"]
    assert main([*common, "--bias-correct", "all"]) == 0
    assert main([*common, "--init", str(tiny_checkpoint), "--bias-correct", "t1ce,t1"]) == 0
    assert main([*common, "--init", str(tiny_checkpoint), "--bias-correct", "t1", "--spacing", "3"]) == 0
    assert main([*common, "--init", str(tiny_checkpoint)]) == 0
    assert [c.preprocess.bias_correction for c in runs] == [MODALITIES, ("t1", "t1ce"), ("t1",), ()]
    assert runs[1].model == load_checkpoint(tiny_checkpoint).config.model  # the weights' network stays
    assert runs[2].preprocess.spacing == (2.0, 2.0, 2.0)  # the grid is the weights', N4 is not
    assert caplog.text.count("using its preprocess settings, not the ones given") == 1
    with pytest.raises(SystemExit):  # argparse names the unknown scan
        main([*common, "--bias-correct", "t1,adc"])


def test_a_fine_tune_takes_the_given_n4_scans_and_says_so(tiny_checkpoint, caplog):
    from brainseg.train import settings_from

    start = load_checkpoint(tiny_checkpoint).config
    assert settings_from("ck.pt", start, None) == start
    given = BrainsegConfig(preprocess=PreprocessConfig(bias_correction=("t1", "t1ce"), spacing=(3.0, 3.0, 3.0)),
                           inference=InferenceConfig(threshold=0.3))
    chosen = settings_from("ck.pt", start, given)
    assert chosen.preprocess == replace(start.preprocess, bias_correction=("t1", "t1ce"))  # not the given spacing
    assert (chosen.model, chosen.inference.threshold) == (start.model, 0.3)
    assert "using its model and preprocessing settings" in caplog.text
    assert "fine-tuning with N4 bias-field correction of t1, t1ce, where its weights were trained with none" in caplog.text
    caplog.clear()
    same = settings_from("ck.pt", start, replace(start, inference=InferenceConfig(threshold=0.3)))
    assert same.preprocess == start.preprocess and caplog.text == ""


def test_a_resumed_run_takes_its_own_settings_unless_told_otherwise(tmp_path):
    from brainseg.run_config import build_configs

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({
        "train": {"data": "/data", "output": str(run), "weight_decay": 0.01, "time_limit_minutes": 30.0},
        "model": {"model": {"features": [8, 16, 32], "dropout": 0.0}}}))
    (run / "state.pt").write_bytes(b"")  # settings come before the state is read; only its presence is checked here
    tc, config = build_configs(None, {"output": str(run), "resume": str(run / "state.pt"), "time_limit_minutes": 5.0}, {})
    assert (tc.data, tc.weight_decay, tc.time_limit_minutes) == ("/data", 0.01, 5.0)  # the option wins
    assert config.model.features == (8, 16, 32) and config.model.dropout == 0.0  # no option could have said so
    fresh, _ = build_configs(None, {"output": str(tmp_path / "new"), "data": "/data"}, {})
    assert fresh.weight_decay == TrainConfig.weight_decay  # a fresh run does not borrow anyone's settings


def test_resume_mistakes_are_one_error_line_naming_the_file(tmp_path, capsys):
    for path, options, message in _bad_states(tmp_path):
        status = main(["train", "--data", str(tmp_path / "no-data"), "--output", str(tmp_path / "run"),
                       "--max-steps", "5", "--resume", str(path), *options])
        err = capsys.readouterr().err
        named = path / "state.pt" if path.is_dir() else path
        assert status == 2 and err.startswith(f"error: {named}: ") and message in err, err
        assert len(err.strip().splitlines()) == 1, err
    # without --data (the run's config.json would give it), a mistyped path is still what is said
    assert main(["train", "--output", str(tmp_path / "run"), "--resume", str(tmp_path / "no-run"), "--max-steps", "5"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path / 'no-run'}: no such file; expected the state.pt of an "
                                               f"earlier run's folder")


def test_an_output_path_through_a_file_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    status = main(["train", "--data", str(tmp_path / "no-data"), "--output", str(tmp_path / "afile")])
    assert status == 2
    assert f"error: {tmp_path / 'afile'}: is a file, not a folder" in capsys.readouterr().err


@needs_data()
def test_validation_cases_not_in_the_data_are_named_with_what_is_there(small_data, tmp_path, capsys):
    assert main(["train", "--data", str(small_data), "--output", str(tmp_path / "run"), "--validation", "Brats18_X_1"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {small_data}: holds no validation case Brats18_X_1; name cases of this folder with --validation "
        f"(it holds {', '.join(sorted(CASES))})")


def test_train_config_names_the_field_out_of_range():
    with pytest.raises(SettingError, match=r"^val_every: got 0; expected a whole number >= 1$") as refused:
        TrainConfig(val_every=0)
    assert refused.value.setting == "val_every"
    with pytest.raises(SettingError, match=r"^tumour_share: got 1.5; expected a number >= 0 and <= 1$"):
        TrainConfig(tumour_share=1.5)
    with pytest.raises(SettingError, match=r"^spacing: got \(2.0, 0.0, 2.0\)"):
        PreprocessConfig(spacing=(2.0, 0.0, 2.0))


def test_resume_with_no_steps_left_is_refused_before_data_is_read(tmp_path, capsys):
    model = UNet3D(ModelConfig())
    optimizer = torch.optim.AdamW(model.parameters())
    state = tmp_path / "state.pt"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": 4, "best_score": 0.5}, state)
    status = main(["train", "--data", str(tmp_path / "no-data"), "--output", str(tmp_path / "run"), "--resume", str(state), "--max-steps", "4"])
    assert status == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --max-steps: got 4, but {state} has done 4 steps already; expected more steps than that to resume"]


# ---- under DDP every rank reads rank 0's clock ----------------------------------------------

DDP_CLOCK = """
import time
import torch.distributed as dist
from brainseg.train import setup_distributed, shared_minutes
ddp = setup_distributed()
# rank 1's clock says ten minutes more than rank 0's: on its own it would stop a 5-minute run
started = time.time() - (600 if ddp.rank == 1 else 0)
print(ddp.rank, shared_minutes(started, ddp))
dist.destroy_process_group()
"""


def test_every_rank_takes_rank_0s_elapsed_time():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", DDP_CLOCK], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    minutes = dict(out.split() for out, _ in outputs)
    assert float(minutes["1"]) == float(minutes["0"]) < 1.0


def test_single_process_minutes_are_the_local_clock():
    assert shared_minutes(time.time() - 120, Distributed()) == pytest.approx(2.0, abs=0.01)


def test_torchio_engine_missing_is_refused_before_any_data_is_read(tmp_path, monkeypatch, capsys):
    from brainseg.cli import main

    monkeypatch.setitem(sys.modules, "torchio", None)  # not installed
    # no data folder at all: a refusal that came after reading data would name the folder instead
    assert main(["train", "--data", str(tmp_path / "absent"), "--output", str(tmp_path / "run"),
                 "--augmentation", "torchio", "--max-steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "augmentation" in err and "TorchIO is not installed" in err and "absent" not in err


def test_a_new_run_into_an_earlier_runs_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.csv").write_text("step\n1\n")
    (out / "last.pt").write_bytes(b"an earlier run's checkpoint")
    assert main(["train", "--data", str(tmp_path / "data"), "--output", str(out), "--max-steps", "1"]) == 2
    assert f"{out}: holds an earlier run (last.pt, metrics.csv); continue it with --resume {out}" in capsys.readouterr().err
    assert (out / "metrics.csv").read_text() == "step\n1\n" and (out / "last.pt").read_bytes() == b"an earlier run's checkpoint"


def test_init_still_refuses_a_misspelt_setting(tiny_checkpoint, tmp_path):
    from brainseg.errors import InputError
    from brainseg.run_config import build_configs

    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"model": {"model": {"featurs": [8, 16]}}}))
    options = {"data": "d", "output": "o", "patch_size": (16, 16, 16)}
    for extra in ({}, {"init": str(tiny_checkpoint)}):
        with pytest.raises(InputError, match="featurs"):
            build_configs(path, {**options, **extra}, {})


def _tiny_run(tmp_path: Path, checkpoint: Path) -> list[str]:
    """``brainseg train`` arguments for two small synthetic cases (case02 validates), from ``checkpoint``'s
    weights: seconds per run, where the run's control flow, not what it learns, is tested."""
    import nibabel as nib
    from conftest import synthetic_images, write_case

    for name in ("case01", "case02"):
        write_case(tmp_path / "data" / name, prefix=f"{name}_")
        labels = np.where(synthetic_images()["flair"] > 150, 2, 0).astype(np.uint8)
        nib.save(nib.Nifti1Image(labels, LPS), tmp_path / "data" / name / f"{name}_seg.nii.gz")
    return ["train", "--data", str(tmp_path / "data"), "--output", str(tmp_path / "run"), "--init", str(checkpoint),
            "--patch-size", "16", "16", "16", "--batch-size", "1", "--validation", "case02", "--threads", "1"]


def _scripted_validation(monkeypatch, scores: list[float]) -> None:
    """Validation rounds that score ``scores`` in turn, whatever the weights."""
    from brainseg.labels import REGIONS

    left = iter(scores)

    def scripted(model, config, cases, device):
        score = next(left)
        return {"per_case": {}, "dice": {r: score for r in REGIONS}, "hd95": {r: 1.0 for r in REGIONS}, "score": score}

    monkeypatch.setattr("brainseg.train.validate", scripted)


def _metrics_steps(out: Path) -> list[int]:
    with (out / "metrics.csv").open() as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_a_run_stops_patience_validations_after_its_best_one(tmp_path, tiny_checkpoint, monkeypatch):
    _scripted_validation(monkeypatch, [0.5, 0.6, 0.55, 0.58, 0.9])
    out = tmp_path / "run"
    assert main([*_tiny_run(tmp_path, tiny_checkpoint), "--max-steps", "10", "--val-every", "1", "--patience", "2"]) == 0
    assert _metrics_steps(out) == [1, 2, 3, 4]  # two validations below step 2's 0.6: stopped before 0.9
    assert load_checkpoint(out / "best.pt").provenance["step"] == 2
    assert load_checkpoint(out / "last.pt").provenance["step"] == 4
    state = torch.load(out / "state.pt", weights_only=True)
    assert (state["step"], state["best_score"], state["stale"]) == (4, 0.6, 2)


def test_a_run_past_its_time_limit_validates_saves_and_stops(tmp_path, tiny_checkpoint, monkeypatch):
    _scripted_validation(monkeypatch, [0.5])
    out = tmp_path / "run"
    # a limit of a few microseconds: past it after the first step, between the scheduled validations
    assert main([*_tiny_run(tmp_path, tiny_checkpoint), "--max-steps", "10", "--val-every", "5", "--time-limit", "1e-7"]) == 0
    assert _metrics_steps(out) == [1]
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["step"] == 1 and state["clock_share"] == 1.0  # a resume trains on from the peak (see _resume)


def test_a_diverging_run_stops_with_one_error_line_before_its_weights_turn_nan(tmp_path, tiny_checkpoint, capsys):
    """A learning rate far too high makes the loss NaN: the run says so and which setting to change, and no
    checkpoint holds NaN weights (a NaN network marks nothing, silently)."""
    out = tmp_path / "run"
    status = main([*_tiny_run(tmp_path, tiny_checkpoint), "--max-steps", "4", "--val-every", "4", "--lr", "1e30"])
    err = capsys.readouterr().err
    assert status == 2
    assert "error: --lr: got 1e+30; training diverged at step " in err and "expected a smaller learning rate" in err
    assert not (out / "best.pt").exists() and not (out / "last.pt").exists()
