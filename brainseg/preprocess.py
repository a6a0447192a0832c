"""Arrays -> model input and back: reorientation, brain crop, z-scoring and resampling.

``prepare`` records every geometric step so that ``restore`` can put a prediction made on the
model's grid back onto the input's exact grid.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import nibabel.orientations as nio
import numpy as np
import torch
import torch.nn.functional as F

from brainseg.bias import fit_levels, n4_correct
from brainseg.config import PreprocessConfig
from brainseg.errors import InputError
from brainseg.io import Case
from brainseg.metrics import bounding_box, voxel_volume_ml

log = logging.getLogger(__name__)


@dataclass
class Geometry:
    """How the model-grid volume relates to the input grid."""

    transform: np.ndarray  # nibabel orientation transform, input axes -> model orientation
    oriented_shape: tuple[int, int, int]  # input volume after reorientation
    box: tuple[slice, slice, slice]  # brain box inside the reoriented volume
    model_shape: tuple[int, int, int]  # the box resampled to the model's spacing
    spacing: tuple[float, float, float]  # mm per voxel of the reoriented input (and its box)
    model_spacing: tuple[float, float, float]  # mm per voxel of the model grid

    @property
    def box_shape(self) -> tuple[int, int, int]:
        return tuple(s.stop - s.start for s in self.box)


@dataclass
class Prepared:
    image: torch.Tensor  # (C, X, Y, Z) float32 on the model grid
    geometry: Geometry
    brain_voxels: int  # brain (nonzero) voxels in the input grid
    brain: np.ndarray  # (X, Y, Z) bool brain mask inside the box, reoriented input grid
    warnings: list[str] = field(default_factory=list)  # what makes the result doubtful, for the user
    bias_corrected: tuple[str, ...] = ()  # the modalities N4 ran on


def orientation_transform(affine: np.ndarray, target: str) -> np.ndarray:
    """Orientation transform from the axes of ``affine`` to axis codes ``target`` (e.g. "LPS")."""
    return nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(tuple(target)))


def reorient(array: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Apply an orientation transform to the first three axes (a view, no copy)."""
    return nio.apply_orientation(array, transform)


def unreorient(array: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Undo ``reorient``."""
    return nio.apply_orientation(array, _inverse(transform))


def _inverse(transform: np.ndarray) -> np.ndarray:
    inverse = np.zeros_like(transform)
    for src_axis, (dst_axis, flip) in enumerate(transform):
        inverse[int(dst_axis)] = (src_axis, flip)
    return inverse


def brain_box(mask: np.ndarray, margin: int) -> tuple[slice, slice, slice]:
    """Bounding box of ``mask`` grown by ``margin`` voxels and clipped to the volume."""
    if not mask.any():
        raise InputError("every scan is zero everywhere: no brain to segment")
    return bounding_box(mask, margin)


def zscore(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Z-score inside ``mask`` (nnU-Net's nonzero normalisation); zero outside it."""
    values = image[mask].astype(np.float64)  # float32 sums of squares overflow past 1e19 and lose scans near 1e-20
    std = float(values.std())
    out = np.zeros(image.shape, dtype=np.float32)
    out[mask] = (values - float(values.mean())) / (std if std > 0 else 1.0)
    return out


def model_grid_shape(shape, spacing, target_spacing) -> tuple[int, int, int]:
    return tuple(max(int(round(n * s / t)), 1) for n, s, t in zip(shape, spacing, target_spacing))


def resample(volume: torch.Tensor, shape: tuple[int, int, int], mode: str = "trilinear") -> torch.Tensor:
    """Resample a (C, X, Y, Z) tensor to ``shape`` (identity when already there)."""
    if tuple(volume.shape[1:]) == tuple(shape):
        return volume
    kwargs = {"align_corners": False} if mode == "trilinear" else {}
    return F.interpolate(volume[None], size=shape, mode=mode, **kwargs)[0]


# Trilinear interpolation reads the two input voxels nearest each output voxel: shrinking an axis by r > 2
# skips r - 2 of every r (a scan finer than 1 mm going to 2 mm aliases; a target share of 1 in 4 reads 0).
# Such axes are averaged over each output voxel's block instead; 1 mm to 2 mm (r = 2) stays trilinear,
# which there is the two-voxel average, so the shipped model's inputs are unchanged. The margin keeps
# 1 mm voxels written with float noise (0.99999994 mm) and near-1 mm ones (0.98 mm) on that path.
BLOCK_AVERAGE_ABOVE = 2.05


def downsample(volume: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """A (C, *box_shape) tensor on the model grid: block averages along axes shrunk more than 2x,
    trilinear along the others."""
    for axis, (fine, coarse) in enumerate(zip(geometry.spacing, geometry.model_spacing)):
        if coarse / fine > BLOCK_AVERAGE_ABOVE:
            size = list(volume.shape[1:])
            size[axis] = geometry.model_shape[axis]
            volume = F.adaptive_avg_pool3d(volume[None], size)[0]
    return resample(volume, geometry.model_shape)


# MRI magnitudes are never negative: a scan with negative values in more of the brain than interpolation
# ringing leaves was normalised already, and N4's multiplicative field (fitted to its logarithm) does not apply
MAX_NEGATIVE_SHARE = 0.01


def prepare(case: Case, config: PreprocessConfig) -> Prepared:
    """Reorient, crop to the brain, z-score each modality and resample to the model's spacing."""
    transform = orientation_transform(case.affine, config.orientation)
    oriented = [reorient(np.asarray(case.images[m], dtype=np.float32), transform) for m in config.modalities]
    mask = np.zeros(oriented[0].shape, dtype=bool)
    for image in oriented:
        mask |= image != 0
    spacing = _oriented_spacing(case, transform)
    warnings = [w for w in (unstripped_warning(mask, voxel_volume_ml(spacing)),) if w]
    box = brain_box(mask, config.crop_margin)
    mask_box = mask[box]
    boxed = [image[box] for image in oriented]
    chosen = [(m, image) for m, image in zip(config.modalities, boxed) if m in config.bias_correction]
    normalised = [m for m, image in chosen if (image[mask_box] < 0).mean() > MAX_NEGATIVE_SHARE]
    if normalised:
        warnings.append(f"{', '.join(m.upper() for m in normalised)}: negative intensities inside the brain, so "
                        f"already normalised; N4 bias-field correction skipped for {'it' if len(normalised) == 1 else 'them'}")
    corrected = tuple(m for m, _ in chosen if m not in normalised)
    boxed = [n4_correct(image, mask_box, spacing, fit_levels(m)) if m in corrected else image
             for m, image in zip(config.modalities, boxed)]
    channels = np.stack([zscore(image, mask_box) for image in boxed])
    model_shape = model_grid_shape(mask_box.shape, spacing, config.spacing)
    geometry = Geometry(transform, oriented[0].shape, box, model_shape, spacing, tuple(config.spacing))
    tensor = downsample(torch.from_numpy(channels), geometry)
    log.debug("brain box %s -> model grid %s", mask_box.shape, model_shape)
    return Prepared(tensor.contiguous(), geometry, int(mask.sum()), mask_box, warnings, corrected)


# share of the volume's faces that may be non-zero in a skull-stripped scan (BraTS: at most 0.014 on
# the shared cases); a head scanned with its skull has noise, not zeros, around it
MAX_BORDER_SHARE = 0.5
# non-zero volume of a skull-stripped adult brain: 1,174-1,747 mL on the 24 shared BraTS cases. A head
# whose background was zeroed but still has its skull and scalp is about twice that
MAX_BRAIN_ML = 2500.0


def unstripped_warning(mask: np.ndarray, voxel_ml: float) -> str | None:
    """A warning when the scans look not skull-stripped: non-zero at their borders, or too large a brain."""
    faces = [mask.take(i, axis) for axis in range(3) for i in (0, -1)]
    share = sum(int(f.sum()) for f in faces) / sum(f.size for f in faces)
    brain_ml = float(mask.sum()) * voxel_ml
    if share > MAX_BORDER_SHARE:
        finding = f"{share:.0%} of the voxels on the volume's border are non-zero"
    elif brain_ml > MAX_BRAIN_ML:
        finding = (f"the scans are non-zero over {brain_ml:,.0f} mL, more than a skull-stripped adult brain "
                   f"(at most {MAX_BRAIN_ML:,.0f} mL; 1,174-1,747 mL in BraTS)")
    else:
        return None
    return (f"{finding}: the scans look not skull-stripped. "
            f"brainseg's models are trained on skull-stripped, co-registered BraTS scans, where everything "
            f"outside the brain is 0; skull-strip the scans first (e.g. HD-BET or SynthStrip), or the tumour "
            f"volumes and the brain share will be wrong")


def _oriented_spacing(case: Case, transform: np.ndarray) -> tuple[float, float, float]:
    spacing = [0.0, 0.0, 0.0]
    for src_axis, (dst_axis, _) in enumerate(transform):
        spacing[int(dst_axis)] = case.spacing[src_axis]
    return tuple(spacing)


def to_box(volume: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Resample a (C, ...) model-grid tensor onto the brain box of the reoriented input grid."""
    return resample(volume, geometry.box_shape)


def paste(box_volume: np.ndarray, geometry: Geometry, fill=0) -> np.ndarray:
    """Place a (..., X, Y, Z) brain-box array into the full grid and undo the reorientation.

    ``fill`` is the value outside the box: a scalar, or one value per leading channel.
    """
    lead = box_volume.shape[:-3]
    full = np.empty(lead + tuple(geometry.oriented_shape), dtype=box_volume.dtype)
    full[...] = np.reshape(fill, np.shape(fill) + (1, 1, 1))
    full[(Ellipsis,) + tuple(geometry.box)] = box_volume
    if lead:
        moved = np.moveaxis(full, range(len(lead)), range(-len(lead), 0))
        return np.ascontiguousarray(np.moveaxis(unreorient(moved, geometry.transform), range(-len(lead), 0), range(len(lead))))
    return np.ascontiguousarray(unreorient(full, geometry.transform))
