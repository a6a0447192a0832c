"""N4 bias-field correction, an optional step of ``preprocess.prepare`` (``PreprocessConfig.bias_correction``).

Scanner coil inhomogeneity makes one tissue brighter on one side of the head than on the other; a
network z-scores the whole brain at once, so a slow intensity ramp shifts what it sees. N4 (Tustison et
al., IEEE TMI 2010, through SimpleITK) estimates a smooth multiplicative field inside the brain and
divides it out. It is fitted on a coarse grid (voxels of about ``FIT_SPACING_MM`` mm), as usual for N4,
and applied at the scan's own resolution.

N4's B-spline lattice spans the image it is given, so the same brain fitted inside a tight box and
inside a whole 240 mm field of view gets a different field: on BraTS cases the tight box's field is
about twice as flexible, follows the edema's FLAIR brightness and takes it out (all four scans corrected
so, one validation case's whole-tumour Dice fell from 0.91 to 0.68). The fit therefore runs on the brain
padded to at least ``FIT_EXTENT_MM`` per axis, so the field is equally stiff in millimetres for every
case and every scan.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from brainseg.errors import InputError

FIT_SPACING_MM = 4.0  # the field is smooth; N4 on a 1 mm grid takes minutes
FIT_EXTENT_MM = 240.0  # a head's field of view (BraTS: 240 x 240 x 155 mm)
ITERATIONS = 50  # per fitting level
FIT_LEVELS = 3  # each level halves the B-spline knot spacing (SimpleITK's default: four levels of 50)
# FLAIR and T2 show the edema as a large bright region, which a three-level field partly takes for
# inhomogeneity and divides out (Brats18_TCIA02_606_1: whole-tumour Dice 0.912 -> 0.866); a two-level
# field, twice as stiff, leaves the lesion alone and still removes a coil's smooth field (docs/model_evidence.md)
MODALITY_FIT_LEVELS = {"flair": 2, "t2": 2}


def fit_levels(modality: str) -> int:
    """N4's fitting levels for a scan of this modality."""
    return MODALITY_FIT_LEVELS.get(modality, FIT_LEVELS)


def n4_correct(image: np.ndarray, mask: np.ndarray, spacing: Sequence[float], levels: int = FIT_LEVELS) -> np.ndarray:
    """``image`` (X, Y, Z) divided by its N4 bias field fitted inside ``mask`` in ``levels`` fitting levels
    (fewer: a stiffer field); float32, 0 outside the mask.

    Raises InputError when SimpleITK is not installed.
    """
    try:
        import SimpleITK as sitk
    except ImportError:
        raise InputError("N4 bias-field correction needs SimpleITK, one of brainseg's dependencies: pip install SimpleITK "
                         "(or segment without it: brainseg segment --bias-correct none)") from None
    if not mask.any():
        return np.zeros(image.shape, np.float32)
    # SimpleITK's arrays are (Z, Y, X); sizes and spacings are given in its (X, Y, Z) order
    scan = sitk.GetImageFromArray(np.ascontiguousarray(image.astype(np.float32).transpose(2, 1, 0)))
    scan.SetSpacing([float(s) for s in spacing])
    inside = sitk.GetImageFromArray(np.ascontiguousarray(mask.astype(np.uint8).transpose(2, 1, 0)))
    inside.CopyInformation(scan)
    shrink = [max(1, round(FIT_SPACING_MM / float(s))) for s in spacing]
    fitted, fitted_mask = sitk.Shrink(scan, shrink), sitk.Shrink(inside, shrink)
    missing = [max(0, int(np.ceil(FIT_EXTENT_MM / s - n))) for s, n in zip(fitted.GetSpacing(), fitted.GetSize())]
    below, above = [m // 2 for m in missing], [m - m // 2 for m in missing]
    fitted, fitted_mask = sitk.ConstantPad(fitted, below, above, 0), sitk.ConstantPad(fitted_mask, below, above, 0)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([ITERATIONS] * levels)
    corrector.Execute(fitted, fitted_mask)
    # the field is evaluated on the grid it was fitted on (evaluating N4's lattice on another grid stretches
    # it over that grid's extent), then interpolated onto the scan's own voxels in world coordinates
    log_field = sitk.Resample(corrector.GetLogBiasFieldAsImage(fitted), scan, sitk.Transform(), sitk.sitkLinear, 0.0,
                              sitk.sitkFloat32, True)  # True: border voxels beyond the last fitted centre take its value
    log_field = sitk.GetArrayFromImage(log_field).transpose(2, 1, 0)
    return np.where(mask, image / np.exp(log_field), 0).astype(np.float32)
