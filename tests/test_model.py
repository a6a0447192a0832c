import pytest
import torch

from brainseg.config import BrainsegConfig, ModelConfig
from brainseg.model import UNet3D


@pytest.mark.parametrize("norm,residual", [("batch", False), ("instance", True)])
def test_forward_returns_logits_in_train_and_eval(norm, residual):
    torch.manual_seed(0)
    model = UNet3D(ModelConfig(features=(4, 8, 16), norm=norm, residual=residual))
    x = torch.randn(2, 4, 16, 16, 8)
    model.train()
    train_out = model(x)
    model.eval()
    eval_out = model(x)
    assert train_out.shape == eval_out.shape == (2, 3, 16, 16, 8)
    # logits take negative values, probabilities (sigmoid or softmax) never do: in both modes, since the
    # replaced app returned softmax in one mode only
    assert (train_out < 0).any() and (eval_out < 0).any()
    probs = model.predict(x)
    torch.testing.assert_close(probs, torch.sigmoid(eval_out))


def test_default_architecture_matches_the_design():
    model = UNet3D(BrainsegConfig().model)
    widths = [e.body[0].out_channels for e in model.encoders]
    assert widths == [24, 48, 96, 192]  # the shipped model's: `brainseg train` starts from its recipe
    assert model.bottleneck.body[0].out_channels == 320
    assert any(isinstance(m, torch.nn.Dropout3d) and m.p == 0.2 for m in model.bottleneck.modules())
    assert model.encoders[0].body[0].in_channels == 4


def test_shape_error_says_how_to_pad():
    model = UNet3D(ModelConfig(features=(4, 8, 16)))
    with pytest.raises(ValueError, match=r"pad to \(20, 16, 8\)"):
        model(torch.randn(1, 4, 18, 16, 8))
