"""N4 bias-field correction, an optional step of ``preprocess.prepare`` (``PreprocessConfig.bias_correction``).

Scanner coil inhomogeneity makes one tissue brighter on one side of the head than on the other; a
network z-scores the whole brain at once, so a slow intensity ramp shifts what it sees. N4 (Tustison et
al., IEEE TMI 2010, through SimpleITK) estimates a smooth multiplicative field inside the brain and
divides it out. It is fitted on a grid shrunk ``SHRINK`` times, as usual for N4, then applied at full
resolution.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from brainseg.errors import InputError

SHRINK = 4  # fit on a grid 4x coarser per axis: the field is smooth, and N4 at 1 mm takes minutes
ITERATIONS = (50, 50, 50)  # per fitting level (SimpleITK's default has four levels of 50)


def n4_correct(image: np.ndarray, mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """``image`` (X, Y, Z) divided by its N4 bias field fitted inside ``mask``; float32, 0 outside the mask.

    Raises InputError when SimpleITK is not installed (it comes with brainseg's app and train extras).
    """
    try:
        import SimpleITK as sitk
    except ImportError:
        raise InputError("bias correction needs SimpleITK: pip install SimpleITK (or brainseg[app])") from None
    if not mask.any():
        return np.zeros(image.shape, np.float32)
    # SimpleITK's arrays are (Z, Y, X); the spacing is given in its (X, Y, Z) order
    fitted = sitk.GetImageFromArray(np.ascontiguousarray(image.astype(np.float32).transpose(2, 1, 0)))
    fitted.SetSpacing([float(s) for s in spacing])
    inside = sitk.GetImageFromArray(np.ascontiguousarray(mask.astype(np.uint8).transpose(2, 1, 0)))
    inside.CopyInformation(fitted)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations(list(ITERATIONS))
    corrector.Execute(sitk.Shrink(fitted, [SHRINK] * 3), sitk.Shrink(inside, [SHRINK] * 3))
    log_field = sitk.GetArrayFromImage(corrector.GetLogBiasFieldAsImage(fitted)).transpose(2, 1, 0)
    return np.where(mask, image / np.exp(log_field), 0).astype(np.float32)
