import math

import numpy as np
import pytest
import torch

from brainseg.config import SettingError
from brainseg.inference import gaussian_importance, plan_windows, sliding_window, window_starts


@pytest.mark.parametrize("size,patch,overlap,expected", [
    (10, 4, 0.5, [0, 2, 4, 6]),
    (240, 128, 0.5, [0, 56, 112]),
    (155, 64, 0.5, [0, 30, 61, 91]),
    (4, 8, 0.5, [0]),
    (8, 8, 0.7, [0]),
    (9, 8, 0.0, [0, 1]),
])
def test_window_starts_spread_evenly_and_end_at_edge(size, patch, overlap, expected):
    starts = window_starts(size, patch, overlap)
    assert starts == expected
    assert starts[-1] + patch == max(size, patch)


def test_windows_cover_every_voxel():
    plan = plan_windows((240, 240, 155), (128, 128, 64), 0.5)
    covered = np.zeros(plan.padded_shape, bool)
    for start in plan.starts:
        covered[tuple(slice(s, s + p) for s, p in zip(start, (128, 128, 64)))] = True
    assert covered.all()
    assert len(plan.starts) == 3 * 3 * 4


def test_gaussian_has_no_zeros_and_peaks_in_the_centre():
    w = gaussian_importance((9, 8, 7))
    assert w.min() > 0
    assert float(w.max()) == 1.0
    # centre (4, 3.5, 3): the peak is shared by the two voxels either side of 3.5 on the even axis, and only them
    assert (w == w.max()).nonzero().tolist() == [[4, 3, 3], [4, 4, 3]]


def test_gaussian_weights_by_value():
    # patch 8: sigma = 8 x 1/8 = 1, centre (8 - 1) / 2 = 3.5, so index k has offset k - 3.5.
    # Before normalising, w[i,j,k] = exp(-((i-3.5)^2 + (j-3.5)^2 + (k-3.5)^2) / 2); the maximum is at
    # offsets (0.5, 0.5, 0.5): exp(-0.375). After dividing by it:
    #   [0,3,3]: offsets (3.5, 0.5, 0.5) -> exp(-(12.25 + 0.25 + 0.25) / 2 + 0.375) = exp(-6)
    #   [0,0,0]: offsets 3.5 on every axis -> exp(-3 x 12.25 / 2 + 0.375) = exp(-18) (positive: no clamp)
    w = gaussian_importance((8, 8, 8))
    assert w.shape == (8, 8, 8) and w.dtype == torch.float32
    assert float(w[3, 3, 3]) == pytest.approx(1.0)
    assert float(w[0, 3, 3]) == pytest.approx(math.exp(-6), rel=1e-6)
    assert float(w[3, 0, 3]) == pytest.approx(math.exp(-6), rel=1e-6)
    assert float(w[0, 0, 0]) == pytest.approx(math.exp(-18), rel=1e-6)
    # separable and symmetric: [1,2,3] offsets (2.5, 1.5, 0.5) -> exp(-(6.25 + 2.25 + 0.25) / 2 + 0.375)
    assert float(w[1, 2, 3]) == pytest.approx(math.exp(-4.0), rel=1e-6)
    torch.testing.assert_close(w, w.flip(0).flip(1).flip(2))


@pytest.mark.parametrize("shape", [(17, 23, 9), (5, 6, 7), (40, 33, 31)])
@pytest.mark.parametrize("patch", [(8, 8, 8), (16, 12, 10), (64, 64, 64)])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.8])
def test_identity_predictor_reconstructs_exactly(shape, patch, overlap):
    image = torch.randn((2,) + shape)
    out = sliding_window(lambda x: x + 1, image, patch, overlap, batch_size=3)
    assert out.shape == image.shape
    torch.testing.assert_close(out, image + 1, atol=1e-5, rtol=1e-5)  # float32 sums of up to ~100 windows


def test_predictor_sees_position_dependent_output_stitched_by_weight():
    # a predictor returning a constant per window: the stitched value at a voxel covered by one
    # window only is that window's constant
    calls = []

    def predictor(batch):
        calls.append(batch.shape[0])
        return torch.full((batch.shape[0], 1) + batch.shape[2:], float(len(calls)))

    out = sliding_window(predictor, torch.zeros(1, 12, 4, 4), (8, 4, 4), 0.5)
    assert out[0, 0, 0, 0] == 1.0 and out[0, -1, 0, 0] == 2.0
    assert 1.0 < out[0, 5, 2, 2] < 2.0
    # windows along x start at 0 and 4 (stride 8 x 0.5); y and z are one window each, so their
    # weights are the same in both windows and cancel. Along x (sigma 1, centre 3.5) voxel x lies at
    # offset x - 3.5 in window 1 (value 1) and x - 4 - 3.5 in window 2 (value 2), so
    #   out = 1 + w2 / (w1 + w2) = 1 + 1 / (1 + exp((d2^2 - d1^2) / 2))
    # x=4: d1 0.5, d2 3.5 -> 1 + 1/(1 + e^6);  x=5: d1 1.5, d2 2.5 -> 1 + 1/(1 + e^2) = 1.1192
    # x=6: d1 2.5, d2 1.5 -> 1 + 1/(1 + e^-2); x=7: d1 3.5, d2 0.5 -> 1 + 1/(1 + e^-6)
    # (uniform weights would give 1.5 at every overlapped voxel)
    mixed = [1 + 1 / (1 + math.exp(e)) for e in (6, 2, -2, -6)]
    expected = torch.tensor([1.0] * 4 + mixed + [2.0] * 4).reshape(12, 1, 1).expand(12, 4, 4)
    torch.testing.assert_close(out[0], expected.float(), atol=1e-6, rtol=1e-6)
    assert float(out[0, 5, 2, 2]) == pytest.approx(1.1192, abs=1e-4)


def test_progress_reports_every_window():
    seen = []
    sliding_window(lambda x: x, torch.zeros(1, 20, 20, 20), (8, 8, 8), 0.5, batch_size=4, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (64, 64)  # ceil((20 - 8) / 4) + 1 = 4 windows per axis
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="overlap"):
        plan_windows((10, 10, 10), (4, 4, 4), 1.0)
    with pytest.raises(ValueError, match="patch size"):
        plan_windows((10, 10, 10), (4, 4), 0.5)


def test_shared_model_is_never_changed_in_place():
    """App sessions share one cached model: each device/layout gets its own copy, made once."""
    from brainseg.config import ModelConfig
    from brainseg.inference import ModelPredictor
    from brainseg.model import UNet3D

    model = UNet3D(ModelConfig(features=(4, 8)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = ModelPredictor(model, torch.device("cpu"), "bf16")
    again = ModelPredictor(model, torch.device("cpu"), "bf16")
    plain = ModelPredictor(model, torch.device("cpu"), "fp32")
    assert fast.model is again.model and fast.model is not model and plain.model is not fast.model
    assert fast.model.encoders[0].body[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert model.encoders[0].body[0].weight.is_contiguous()  # the shared original keeps its layout
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])
    x = torch.randn(1, 4, 8, 8, 8)
    torch.testing.assert_close(plain(x), model.eval()(x))


def test_a_shared_model_whose_weights_change_is_copied_again():
    """A notebook that edits or reloads a model's weights segments with the weights it now holds."""
    from brainseg.config import ModelConfig
    from brainseg.inference import ModelPredictor
    from brainseg.model import UNet3D

    model = UNet3D(ModelConfig(features=(4, 8)))
    x = torch.randn(1, 4, 8, 8, 8)
    first = ModelPredictor(model, torch.device("cpu"), "fp32")
    before = first(x)
    with torch.no_grad():
        model.head.bias.fill_(-1000.0)  # in place: no region anywhere
    edited = ModelPredictor(model, torch.device("cpu"), "fp32")
    assert edited.model is not first.model and edited(x).max() < -900 and before.max() > -900
    other = UNet3D(ModelConfig(features=(4, 8)))
    model.load_state_dict(other.state_dict())
    torch.testing.assert_close(ModelPredictor(model, torch.device("cpu"), "fp32")(x), other.eval()(x))
    model.head.bias.data.fill_(500.0)  # through .data: no version counter moves
    torch.testing.assert_close(ModelPredictor(model, torch.device("cpu"), "fp32")(x), model.eval()(x))
    for p, q in zip(model.parameters(), UNet3D(ModelConfig(features=(4, 8))).parameters()):
        p.data = q.data.clone()  # new storage behind the same parameters
    torch.testing.assert_close(ModelPredictor(model, torch.device("cpu"), "fp32")(x), model.eval()(x))
    unchanged = ModelPredictor(model, torch.device("cpu"), "fp32")
    assert unchanged.model is ModelPredictor(model, torch.device("cpu"), "fp32").model  # no copy without a change


def test_threshold_decides_which_regions_a_voxel_joins(tiny_checkpoint):
    from dataclasses import replace

    from brainseg.checkpoint import LoadedModel, load_checkpoint
    from brainseg.pipeline import inference_settings, logits_to_labels

    # one voxel: P(WT) = sigmoid(2) = 0.88, P(TC) = sigmoid(-0.4) = 0.40, P(ET) = sigmoid(-1.5) = 0.18
    logits = torch.tensor([2.0, -0.4, -1.5]).reshape(3, 1, 1, 1)
    assert logits_to_labels(logits, "regions", 0.5)[0].item() == 2  # edema only
    assert logits_to_labels(logits, "regions", 0.3)[0].item() == 1  # necrotic core joins
    assert logits_to_labels(logits, "regions", 0.1)[0].item() == 3  # enhancing too
    loaded = load_checkpoint(tiny_checkpoint)
    assert inference_settings(loaded).threshold == 0.5
    assert inference_settings(loaded, threshold=0.3).threshold == 0.3
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(SettingError, match=r"threshold: got .*; expected a number > 0 and < 1"):
            inference_settings(loaded, threshold=bad)
    softmax = LoadedModel(loaded.model, replace(loaded.config, model=replace(loaded.config.model, output_mode="labels")))
    with pytest.raises(ValueError, match="argmax"):
        inference_settings(softmax, threshold=0.4)


def test_softmax_probabilities_sum_to_one_over_the_whole_grid(tmp_path, tiny_checkpoint):
    from dataclasses import replace

    from brainseg.checkpoint import LoadedModel, load_checkpoint
    from brainseg.io import load_case
    from brainseg.pipeline import segment_case
    from conftest import write_case

    write_case(tmp_path / "case", shape=(60, 64, 50))  # a margin of empty voxels outside the brain box
    loaded = load_checkpoint(tiny_checkpoint)
    labels_mode = LoadedModel(loaded.model, replace(loaded.config, model=replace(loaded.config.model, output_mode="labels", out_channels=4)))

    def four_classes(batch):  # background, NCR, ED, ET logits
        return torch.stack([batch[:, 0], -batch[:, 0], 0 * batch[:, 0], batch[:, 1] - 1], dim=1)

    result = segment_case(load_case([tmp_path / "case"]), labels_mode, predictor=four_classes)
    assert result.probabilities.shape == (4, 60, 64, 50)
    np.testing.assert_allclose(result.probabilities.astype(np.float32).sum(0), 1.0, atol=5e-3)
    assert result.probabilities[0, 0, 0, 0] == 1.0  # a corner outside the brain box is background


def test_windows_predicted_on_another_device_are_summed_on_the_images():
    """A GPU predictor's windows come back on the GPU while the image (and the sums) stay on the CPU.

    No GPU here, so the roles are mirrored: the image lives on 'meta' and the predictor answers on the
    CPU; without the move, the window sum fails with "Tensor on device cpu is not on the expected device".
    """
    image = torch.zeros(1, 10, 12, 9, device="meta")
    out = sliding_window(lambda batch: torch.zeros(batch.shape[0], 2, *batch.shape[2:]), image, (8, 8, 8), 0.5)
    assert out.device.type == "meta" and tuple(out.shape) == (2, 10, 12, 9)


def test_a_window_longer_than_the_volume_is_cut_to_it():
    """A 512-voxel window over a 70x86x73 brain: one window, rounded up to the network's divisor, the
    volume padded evenly around."""
    plan = plan_windows((70, 86, 73), (512, 512, 512), 0.5, divisor=16)
    assert plan.patch == (80, 96, 80) and plan.padded_shape == (80, 96, 80) and plan.starts == [(0, 0, 0)]
    assert plan.pad == [3, 4, 5, 5, 5, 5]  # F.pad order: last axis first
    assert plan_windows((70, 86, 73), (64, 64, 64), 0.5, divisor=16).patch == (64, 64, 64)
    image = torch.randn(2, 70, 86, 73)
    seen = []

    def predictor(batch):
        seen.append(tuple(batch.shape[2:]))
        return batch + 1

    predictor.divisor = 16
    out = sliding_window(predictor, image, (512, 512, 512), 0.5)
    assert seen == [(80, 96, 80)]
    torch.testing.assert_close(out, image + 1)


def test_a_volume_smaller_than_the_divisor_still_gets_a_window_the_network_can_run():
    """Cutting the window to a 10-voxel volume would leave one voxel at the deepest layer of a network with
    divisor 16, which instance normalisation refuses; the longest side keeps two divisors."""
    plan = plan_windows((10, 8, 6), (64, 64, 64), 0.5, divisor=16)
    assert plan.patch == (32, 16, 16) and len(plan.starts) == 1
    assert plan_windows((40, 8, 6), (64, 64, 64), 0.5, divisor=16).patch == (48, 16, 16)  # cut as before


def test_mirroring_tta_averages_the_unflipped_outputs_of_all_eight_mirrorings():
    from itertools import combinations

    from brainseg.config import ModelConfig
    from brainseg.inference import ModelPredictor
    from brainseg.model import UNet3D

    torch.manual_seed(0)
    model = UNet3D(ModelConfig(features=(4, 8))).eval()
    x = torch.randn(1, 4, 8, 10, 6)
    tta = ModelPredictor(model, torch.device("cpu"), "fp32", tta=True)(x)
    with torch.no_grad():
        mirrorings = [d for r in range(4) for d in combinations((2, 3, 4), r)]
        by_hand = sum(torch.flip(model(torch.flip(x, d)), d) if d else model(x) for d in mirrorings) / 8
        plain = model(x)
    assert len(mirrorings) == 8
    torch.testing.assert_close(tta, by_hand)
    assert not torch.allclose(tta, plain, atol=1e-3)  # a random network is not mirror-symmetric: TTA changes it

    pointwise = torch.nn.Conv3d(4, 3, 1).eval()  # a 1x1x1 network commutes with mirroring: TTA must not change it
    torch.testing.assert_close(ModelPredictor(pointwise, torch.device("cpu"), "fp32", tta=True)(x),
                               ModelPredictor(pointwise, torch.device("cpu"), "fp32")(x))
