"""Training augmentation: one recipe (``Augmentation``), two engines.

- ``torchio``: TorchIO's flip, affine, gamma, bias field and noise on one (image, target) patch at a
  time, then a per-channel scale and shift; runs on the CPU beside the training loop.
- ``torch``: the same transforms and ranges on whole (N, C, X, Y, Z) batches in torch, on the device
  the batch lives on, so a GPU run augments on the GPU instead of waiting on one CPU core (and needs
  neither TorchIO nor SimpleITK there). One difference: rotation fills the corners it brings in with 0,
  the background of the z-scored images, where TorchIO fills with the patch's minimum.

``auto`` takes ``torch`` on CUDA and ``torchio`` elsewhere. Targets are soft region shares and go
through the same geometry with linear interpolation; intensity transforms touch the image alone.
"""
from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from brainseg.config import AUGMENTATION_ENGINES, SettingError, require_choice

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Augmentation:
    """Probabilities (per sample; flips per sample and axis) and ranges of each transform."""

    flip: float = 0.5
    affine: float = 0.3
    scales: tuple[float, float] = (0.85, 1.15)  # per axis
    degrees: float = 15.0  # about each axis, uniform in +-degrees
    gamma: float = 0.3
    log_gamma: float = 0.3  # gamma = exp(uniform(+-log_gamma))
    bias: float = 0.15
    bias_coefficient: float = 0.3  # of each term of a cubic polynomial in the log field
    noise: float = 0.15
    noise_std: float = 0.1  # the standard deviation is uniform in [0, noise_std]
    channel: float = 0.3
    channel_scale: float = 0.1  # each channel times uniform(1 +- scale), plus uniform(+-shift)
    channel_shift: float = 0.1


def _chosen(p: float, n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=generator.device) < p


def _uniform(low: float, high: float, shape: tuple, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, device=generator.device)


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) rotations about the three axes by ``angles`` (N, 3) in radians."""
    c, s = angles.cos(), angles.sin()
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])

    def matrix(rows):
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)

    rx = matrix([[one, zero, zero], [zero, c[:, 0], -s[:, 0]], [zero, s[:, 0], c[:, 0]]])
    ry = matrix([[c[:, 1], zero, s[:, 1]], [zero, one, zero], [-s[:, 1], zero, c[:, 1]]])
    rz = matrix([[c[:, 2], -s[:, 2], zero], [s[:, 2], c[:, 2], zero], [zero, zero, one]])
    return rz @ ry @ rx


def _affine(images: torch.Tensor, targets: torch.Tensor, chosen: torch.Tensor, settings: Augmentation,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    n = int(chosen.sum())
    angles = _uniform(-settings.degrees, settings.degrees, (n, 3), generator) * (math.pi / 180)
    scales = _uniform(*settings.scales, (n, 3), generator)
    both = torch.cat([images[chosen], targets[chosen].to(images.dtype)], dim=1)
    theta = _affine_theta(angles, scales, both.shape[2:])
    grid = F.affine_grid(theta.to(both.dtype), list(both.shape), align_corners=False)
    moved = F.grid_sample(both, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    images, targets = images.clone(), targets.clone()
    images[chosen] = moved[:, : images.shape[1]]
    targets[chosen] = moved[:, images.shape[1]:].clamp(0, 1).to(targets.dtype)
    return images, targets


def _affine_theta(angles: torch.Tensor, scales: torch.Tensor, shape) -> torch.Tensor:
    """(N, 3, 4) matrices for ``affine_grid``: rotations by ``angles`` and per-axis ``scales`` about the centre.

    affine_grid works in coordinates normalised to [-1, 1] per axis (ordered last axis first); the
    rotation is made in voxel units and converted, so a patch that is not a cube is rotated, not sheared.
    """
    half = torch.tensor([float(s) for s in reversed(tuple(shape))], device=angles.device) / 2
    # output to input coordinates: dividing by the scale enlarges the content by it
    voxels = _rotation(angles) / scales[:, None, :]
    theta = torch.zeros(angles.shape[0], 3, 4, device=angles.device)
    theta[:, :, :3] = voxels * half[None, None, :] / half[None, :, None]
    return theta


@functools.lru_cache(maxsize=4)
def _polynomial_terms(shape: tuple, device: torch.device) -> torch.Tensor:
    """(T, X, Y, Z) the monomials x^i y^j z^k of ``_POWERS`` on [-1, 1]^3: one patch size, made once."""
    axes = [torch.linspace(-1, 1, s, device=device) for s in shape]
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([x**i * y**j * z**k for i, j, k in _POWERS])


def _bias_field(shape: tuple, coefficients: torch.Tensor) -> torch.Tensor:
    """(N, 1, X, Y, Z) multiplicative fields exp(sum c_ijk x^i y^j z^k), i + j + k <= 3, on [-1, 1]^3."""
    terms = _polynomial_terms(tuple(shape), coefficients.device)
    return torch.einsum("nt,txyz->nxyz", coefficients, terms).exp()[:, None]


_POWERS = [(i, j, k) for i in range(4) for j in range(4 - i) for k in range(4 - i - j)]


def augment_batch(images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator,
                  settings: Augmentation = Augmentation()) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented copies of ``images`` (N, C, X, Y, Z) and ``targets`` (N, K, X, Y, Z) in [0, 1].

    Random numbers come from ``generator``, which lives on the batch's device, so a seeded generator
    draws the same transforms again. The image comes back in its own dtype.
    """
    n, channels = images.shape[:2]
    dtype = images.dtype
    if settings.flip > 0:
        for axis in (2, 3, 4):
            flip = _chosen(settings.flip, n, generator)[:, None, None, None, None]
            images = torch.where(flip, images.flip(axis), images)
            targets = torch.where(flip, targets.flip(axis), targets)
    if settings.affine > 0 and (chosen := _chosen(settings.affine, n, generator)).any():
        images, targets = _affine(images, targets, chosen, settings, generator)
    if settings.gamma > 0:
        chosen = _chosen(settings.gamma, n, generator)
        gamma = torch.where(chosen, _uniform(-settings.log_gamma, settings.log_gamma, (n,), generator).exp(), 1.0)
        # intensities are z-scores: the power keeps each one's sign, as TorchIO does for negative values
        images = images.sign() * images.abs().pow(gamma[:, None, None, None, None])
    if settings.bias > 0 and (chosen := _chosen(settings.bias, n, generator)).any():
        c = settings.bias_coefficient
        coefficients = _uniform(-c, c, (n, len(_POWERS)), generator) * chosen[:, None]
        images = images * _bias_field(images.shape[2:], coefficients)
    if settings.noise > 0:
        std = _uniform(0, settings.noise_std, (n,), generator) * _chosen(settings.noise, n, generator)
        noise = torch.randn(images.shape, generator=generator, device=generator.device, dtype=images.dtype)
        images = images + noise * std[:, None, None, None, None]
    if settings.channel > 0:
        chosen = _chosen(settings.channel, n, generator)[:, None]
        s, d = settings.channel_scale, settings.channel_shift
        scale = torch.where(chosen, _uniform(1 - s, 1 + s, (n, channels), generator), 1.0)
        shift = torch.where(chosen, _uniform(-d, d, (n, channels), generator), 0.0)
        images = images * scale[..., None, None, None] + shift[..., None, None, None]
    return images.to(dtype), targets


def choose_engine(requested: str, device: torch.device) -> str:
    """The engine ``requested`` (AUGMENTATION_ENGINES) resolves to on ``device``."""
    require_choice("augmentation", requested, AUGMENTATION_ENGINES, "augmentation engine")
    if requested == "torch" or (requested == "auto" and device.type == "cuda"):
        return "torch"
    try:
        import torchio  # noqa: F401  (the train extra)
    except ImportError:
        if requested == "torchio":
            raise SettingError("augmentation", "got 'torchio', but TorchIO is not installed; expected it installed "
                                               "(pip install -e '.[train]') or --augmentation torch") from None
        log.warning("TorchIO is not installed: augmenting with the torch engine (pip install -e '.[train]' for TorchIO)")
        return "torch"
    return "torchio"


def torchio_transform(settings: Augmentation = Augmentation()):
    """The recipe's geometric and intensity transforms as a TorchIO Compose (geometry first)."""
    import torchio as tio

    return tio.Compose(
        [
            tio.RandomFlip(axes=(0, 1, 2), flip_probability=settings.flip),
            tio.RandomAffine(scales=settings.scales, degrees=settings.degrees, translation=0, p=settings.affine,
                             label_interpolation="linear"),
            tio.RandomGamma(log_gamma=(-settings.log_gamma, settings.log_gamma), p=settings.gamma),
            tio.RandomBiasField(coefficients=settings.bias_coefficient, p=settings.bias),
            tio.RandomNoise(std=(0, settings.noise_std), p=settings.noise),
        ]
    )


def augment_patch(transform, image: np.ndarray, target: np.ndarray, rng: np.random.Generator,
                  settings: Augmentation = Augmentation()) -> tuple[np.ndarray, np.ndarray]:
    """One (C, X, Y, Z) patch and its target through ``torchio_transform``, then the channel scale and shift."""
    import torchio as tio

    subject = tio.Subject(image=tio.ScalarImage(tensor=torch.from_numpy(image)),
                          target=tio.LabelMap(tensor=torch.from_numpy(target.astype(np.float32))))
    out = transform(subject)
    image = out["image"].data.numpy()
    if rng.random() < settings.channel:  # scanners differ in gain and offset per sequence
        s, d, c = settings.channel_scale, settings.channel_shift, (image.shape[0], 1, 1, 1)
        image = image * rng.uniform(1 - s, 1 + s, c) + rng.uniform(-d, d, c)
    return image.astype(np.float32), out["target"].data.numpy().astype(np.float32)
