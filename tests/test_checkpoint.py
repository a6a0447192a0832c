import torch

from brainseg.checkpoint import discover, load_checkpoint, save_checkpoint
from brainseg.config import BrainsegConfig, InferenceConfig, ModelConfig
from brainseg.model import UNet3D


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
