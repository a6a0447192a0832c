"""Batch augmentation: each transform against what it must do to a known batch."""
import math

import numpy as np
import pytest
import torch

from brainseg.augment import Augmentation, _bias_field, _rotation, augment_batch

OFF = Augmentation(flip=0, affine=0, gamma=0, bias=0, noise=0, channel=0)


def _batch(n=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 4, size, size, size, generator=g)
    targets = (torch.rand(n, 3, size, size, size, generator=g) > 0.7).float()
    return images, targets


def _gen(seed=1):
    return torch.Generator().manual_seed(seed)


def test_all_off_returns_the_batch_unchanged():
    images, targets = _batch()
    out_i, out_t = augment_batch(images, targets, _gen(), OFF)
    assert torch.equal(out_i, images) and torch.equal(out_t, targets)


def test_flips_move_image_and_target_together():
    images, targets = _batch(n=8)
    images[:, 0] = targets[:, 0]  # a channel that must stay equal to the target after any flip
    out_i, out_t = augment_batch(images, targets, _gen(), Augmentation(flip=0.5, affine=0, gamma=0, bias=0, noise=0, channel=0))
    assert torch.equal(out_i[:, 0], out_t[:, 0])
    flipped = 0
    for k in range(8):  # each sample is its input flipped along some subset of the axes
        matches = [torch.equal(out_t[k], targets[k].flip([a for a, on in zip((1, 2, 3), bits) if on]))
                   for bits in np.ndindex(2, 2, 2)]
        assert any(matches)
        flipped += not matches[0]
    assert flipped > 0


def test_affine_keeps_image_and_target_aligned_and_targets_in_range():
    images, targets = _batch(n=6, size=24)
    targets = torch.zeros_like(targets)
    targets[:, :, 6:18, 8:16, 10:14] = 1
    images[:, 1] = targets[:, 1]
    out_i, out_t = augment_batch(images, targets, _gen(3), Augmentation(flip=0, affine=1.0, gamma=0, bias=0, noise=0, channel=0))
    assert torch.allclose(out_i[:, 1], out_t[:, 1], atol=1e-6)
    assert out_t.min() >= 0 and out_t.max() <= 1
    assert not torch.allclose(out_t, targets)
    # scales 0.85-1.15 per axis: the box's volume changes by at most 1.15^3 (plus interpolation at its faces)
    ratio = out_t[:, 0].sum(dim=(1, 2, 3)) / targets[:, 0].sum(dim=(1, 2, 3))
    assert ((ratio > 0.85**3 * 0.8) & (ratio < 1.15**3 * 1.2)).all()


def test_rotation_matrices_are_rotations():
    angles = torch.tensor([[0.3, -0.2, 0.1], [0.0, 0.0, math.pi / 2]])
    r = _rotation(angles)
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-6)
    assert torch.allclose(torch.linalg.det(r), torch.ones(2))
    assert torch.allclose(r[1], torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]), atol=1e-6)


def test_gamma_keeps_sign_and_order():
    images = torch.linspace(-3, 3, 4 * 8**3).reshape(1, 4, 8, 8, 8)
    targets = torch.zeros(1, 3, 8, 8, 8)
    out, _ = augment_batch(images, targets, _gen(), Augmentation(flip=0, affine=0, gamma=1.0, bias=0, noise=0, channel=0))
    assert torch.equal(out.sign(), images.sign())
    assert (out.flatten().diff() > 0).all()
    assert not torch.allclose(out, images)
    # one power for the whole sample, within exp(+-0.3)
    x, y = images.abs().flatten(), out.abs().flatten()
    keep = (x - 1).abs() > 0.2
    powers = y[keep].log() / x[keep].log()
    assert torch.allclose(powers, powers[0].expand_as(powers), atol=1e-3)
    assert math.exp(-0.3) <= float(powers[0]) <= math.exp(0.3)


def test_bias_field_is_one_without_coefficients_and_smooth_with():
    flat = _bias_field((8, 8, 8), torch.zeros(1, 20))
    assert torch.allclose(flat, torch.ones_like(flat))
    coefficients = torch.zeros(1, 20)
    coefficients[0, 0] = 0.3  # the constant term alone: exp(0.3) everywhere
    assert torch.allclose(_bias_field((4, 4, 4), coefficients), torch.full((1, 1, 4, 4, 4), math.exp(0.3)))


def test_intensity_transforms_leave_targets_alone():
    images, targets = _batch()
    settings = Augmentation(flip=0, affine=0, gamma=1, bias=1, noise=1, channel=1)
    out_i, out_t = augment_batch(images, targets, _gen(), settings)
    assert torch.equal(out_t, targets)
    assert not torch.allclose(out_i, images)


def test_same_seed_same_batch_and_shapes_kept():
    images, targets = _batch(n=3, size=12)
    a = augment_batch(images, targets, _gen(5))
    b = augment_batch(images, targets, _gen(5))
    c = augment_batch(images, targets, _gen(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == images.shape and a[1].shape == targets.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda_with_a_cuda_generator():
    images, targets = _batch()
    g = torch.Generator(device="cuda").manual_seed(0)
    out_i, out_t = augment_batch(images.cuda(), targets.cuda(), g)
    assert out_i.device.type == "cuda" and out_t.shape == targets.shape


def test_quarter_turn_of_a_patch_that_is_not_a_cube_turns_a_box_without_shearing():
    import torch.nn.functional as F

    from brainseg.augment import _affine_theta

    shape = (32, 48, 8)  # X, Y, Z
    volume = torch.zeros(1, 1, *shape)
    volume[0, 0, 14:18, 16:32, :] = 1  # 4 x 16 voxels in the X-Y plane
    # affine_grid orders axes Z, Y, X: a turn about its first axis turns the X-Y plane
    theta = _affine_theta(torch.tensor([[math.pi / 2, 0.0, 0.0]]), torch.ones(1, 3), shape)
    grid = F.affine_grid(theta, [1, 1, *shape], align_corners=False)
    turned = F.grid_sample(volume, grid, mode="nearest", align_corners=False)[0, 0]
    inside = turned[:, :, 4].nonzero()
    extent = inside.max(0).values - inside.min(0).values + 1
    assert extent.tolist() == [16, 4]  # 16 along X, 4 along Y: the box turned, its sides kept
    assert turned.sum() == volume.sum()


def test_a_batch_of_one_in_bfloat16_keeps_its_dtype_and_shape():
    images, targets = _batch(n=1, size=12)
    out_i, out_t = augment_batch(images.bfloat16(), targets, _gen(2), Augmentation(flip=1, affine=1, gamma=1, bias=1, noise=1, channel=1))
    assert out_i.dtype == torch.bfloat16 and out_i.shape == images.shape and out_t.shape == targets.shape
    assert out_t.min() >= 0 and out_t.max() <= 1


def test_engine_choice_follows_the_device_and_what_is_installed(monkeypatch, caplog):
    from brainseg.augment import choose_engine
    from brainseg.config import SettingError

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_engine("auto", cpu) == "torchio"
    assert choose_engine("auto", cuda) == "torch"
    assert choose_engine("torch", cpu) == "torch" and choose_engine("torchio", cuda) == "torchio"
    with pytest.raises(SettingError, match="augmentation"):
        choose_engine("kornia", cpu)
    monkeypatch.setitem(__import__("sys").modules, "torchio", None)  # not installed
    assert choose_engine("auto", cpu) == "torch"
    assert "TorchIO is not installed" in caplog.text
    with pytest.raises(SettingError, match="TorchIO is not installed"):
        choose_engine("torchio", cpu)


def test_torchio_engine_with_nothing_drawn_returns_the_patch_and_moves_image_and_target_together():
    from brainseg.augment import augment_patch, torchio_transform

    rng = np.random.default_rng(0)
    image = rng.standard_normal((4, 16, 16, 16)).astype(np.float32)
    target = (rng.random((3, 16, 16, 16)) > 0.7).astype(np.float32)
    same = augment_patch(torchio_transform(OFF), image, target, rng, OFF)
    np.testing.assert_allclose(same[0], image, atol=1e-6)
    np.testing.assert_array_equal(same[1], target)
    image[1] = target[1]
    flips = Augmentation(flip=1.0, affine=1.0, gamma=0, bias=0, noise=0, channel=0)
    out_i, out_t = augment_patch(torchio_transform(flips), image, target, rng, flips)
    assert not np.allclose(out_t, target)
    np.testing.assert_allclose(out_i[1], out_t[1], atol=1e-4)  # one geometry for both
