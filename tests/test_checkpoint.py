import numpy as np
import pytest
import torch

from brainseg.checkpoint import discover, load_checkpoint, save_checkpoint
from brainseg.cli import main
from brainseg.config import BrainsegConfig, InferenceConfig, ModelConfig, to_plain
from brainseg.errors import CheckpointError
from brainseg.model import UNet3D
from conftest import write_case


def test_round_trip_keeps_config_weights_and_provenance(tmp_path):
    config = BrainsegConfig(model=ModelConfig(features=(4, 8), norm="batch"), inference=InferenceConfig(patch_size=(32, 32, 16)))
    model = UNet3D(config.model)
    path = save_checkpoint(tmp_path / "m.pt", model, config, {"validation": {"dice": {"WT": 0.5}}})
    loaded = load_checkpoint(path)
    assert loaded.config == config
    assert loaded.provenance["validation"]["dice"]["WT"] == 0.5
    restored = loaded.model.state_dict()
    for key, value in model.state_dict().items():
        expected = value.half().float() if value.is_floating_point() else value  # stored as fp16
        torch.testing.assert_close(restored[key], expected)
    assert not loaded.model.training


def test_discover_lists_default_first(tmp_path):
    config = BrainsegConfig(model=ModelConfig(features=(4, 8)))
    for name in ("zeta.pt", "brainseg_default.pt", "alpha.pth"):
        save_checkpoint(tmp_path / name, UNet3D(config.model), config)
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in discover([tmp_path])] == ["brainseg_default.pt", "alpha.pth", "zeta.pt"]


def _with_setting(tmp_path, section: str, **changes):
    """A tiny checkpoint whose stored configuration has ``changes`` in ``section`` (as a hand-edited file would)."""
    config = BrainsegConfig(model=ModelConfig(features=(4, 8)), inference=InferenceConfig(patch_size=(16, 16, 16)))
    path = save_checkpoint(tmp_path / "edited.pt", UNet3D(config.model), config)
    payload = torch.load(path, weights_only=True)
    payload["config"][section].update(changes)
    torch.save(payload, path)
    return path


BAD_SETTINGS = [
    ("preprocess", {"spacing": [0.0, 2.0, 2.0]}, "preprocess.spacing: got (0.0, 2.0, 2.0); expected three numbers from 0.5 to 8"),
    ("preprocess", {"spacing": [-1.0, -1.0, -1.0]}, "preprocess.spacing: got (-1.0, -1.0, -1.0)"),
    ("preprocess", {"orientation": "XYZ"}, "preprocess.orientation: got 'XYZ'; expected three axis codes"),
    ("preprocess", {"orientation": "LRS"}, "preprocess.orientation: got 'LRS'"),
    ("preprocess", {"crop_margin": -1}, "preprocess.crop_margin: got -1; expected a whole number >= 0"),
    ("inference", {"patch_size": [0, 16, 16]}, "inference.patch_size: got (0, 16, 16); expected three whole numbers 1-512 (voxels)"),
    ("inference", {"patch_size": [16, 16]}, "inference.patch_size: got (16, 16)"),
    ("inference", {"patch_size": [16, 16, 4096]}, "inference.patch_size: got (16, 16, 4096); expected three whole numbers 1-512 (voxels)"),
    ("inference", {"overlap": 1.0}, "inference.overlap: got 1.0; expected a number >= 0 and < 1"),
    ("inference", {"threshold": 0.0}, "inference.threshold: got 0.0; expected a number > 0 and < 1"),
    ("postprocess", {"min_component_voxels": -5}, "postprocess.min_component_voxels: got -5"),
    ("model", {"dropout": 1.0}, "model.dropout: got 1.0; expected a number >= 0 and < 1"),
]


@pytest.mark.parametrize("section, changes, message", BAD_SETTINGS, ids=[f"{s}-{next(iter(c))}-{i}" for i, (s, c, _) in enumerate(BAD_SETTINGS)])
def test_out_of_range_setting_is_refused_naming_the_checkpoint(tmp_path, section, changes, message):
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(_with_setting(tmp_path, section, **changes))
    assert str(refused.value).startswith(f"edited.pt: invalid configuration: {message}"), str(refused.value)


def test_segment_with_a_zero_spacing_checkpoint_is_one_error_line(tmp_path, capsys):
    write_case(tmp_path / "case")
    bad = _with_setting(tmp_path, "preprocess", spacing=[0.0, 0.0, 0.0])
    out = tmp_path / "seg.nii.gz"
    assert main(["segment", str(tmp_path / "case"), "-o", str(out), "--checkpoint", str(bad), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: edited.pt: invalid configuration: preprocess.spacing: got (0.0, 0.0, 0.0); expected three numbers from 0.5 to 8 (millimetres)"]
    assert not out.exists()


def test_to_plain_gives_json_types():
    value = {"a": (1, np.float32(0.5)), 2: np.arange(3), "n": float("nan"), "ok": [True, "x"]}
    assert to_plain(value) == {"a": [1, 0.5], "2": [0, 1, 2], "n": None, "ok": [True, "x"]}
    assert BrainsegConfig.from_dict(BrainsegConfig().to_dict()) == BrainsegConfig()


def test_a_checkpoint_with_non_finite_weights_is_refused_naming_it(tmp_path):
    """A diverged run's weights would mark nothing, silently: refused when loaded."""
    config = BrainsegConfig(model=ModelConfig(features=(4, 8)))
    model = UNet3D(config.model)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    save_checkpoint(tmp_path / "diverged.pt", model, config)
    with pytest.raises(CheckpointError, match=r"^diverged\.pt: 1 weight tensors hold NaN or infinite values"):
        load_checkpoint(tmp_path / "diverged.pt")
