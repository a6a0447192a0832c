"""Post-processing on internal label maps: pure functions that return new arrays."""
from __future__ import annotations

from typing import Sequence

import cc3d
import numpy as np
from scipy import ndimage

from brainseg.labels import BACKGROUND, ED, ET, NCR


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components (cc3d: 6x faster than scipy's ndimage.label, same components)."""
    labelled, n = cc3d.connected_components(mask.astype(np.uint8), connectivity=26, return_N=True)
    return labelled, int(n)


def _sized_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """26-connected components of a non-empty mask and their sizes (index 0, the background, sized 0)."""
    labelled, n = _components(mask)
    sizes = np.bincount(labelled.ravel(), minlength=n + 1)
    sizes[0] = 0
    return labelled, sizes


def remove_small_components(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """A copy of a boolean mask without 26-connected components smaller than ``min_voxels``."""
    return _kept_components(mask, min_voxels, 0.0, (1.0, 1.0, 1.0))


def remove_distant_components(mask: np.ndarray, max_distance_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """A copy of a boolean mask keeping its largest 26-connected component and the components that come
    within ``max_distance_mm`` of it (nearest voxel to nearest voxel); 0 keeps everything."""
    return _kept_components(mask, 0, max_distance_mm, spacing)


def _kept_components(mask: np.ndarray, min_voxels: int, max_distance_mm: float,
                     spacing: Sequence[float]) -> np.ndarray:
    """A copy of ``mask`` without components smaller than ``min_voxels``, then without those farther than
    ``max_distance_mm`` from the largest one left (0 turns either rule off); labels components once."""
    if (min_voxels <= 0 and max_distance_mm <= 0) or not mask.any():
        return mask.copy()
    labelled, sizes = _sized_components(mask)
    keep = sizes >= max(min_voxels, 1)
    if max_distance_mm <= 0 or keep.sum() <= 1:
        return keep[labelled]
    kept = keep[labelled]
    # the kept components lie in their bounding box, so distances measured inside it are exact
    box = ndimage.find_objects(kept.astype(np.uint8))[0]
    inside = np.where(kept[box], labelled[box], 0)
    distance = ndimage.distance_transform_edt(inside != sizes.argmax(), sampling=spacing)
    nearest = np.asarray(ndimage.minimum(distance, inside, index=np.arange(sizes.size)))
    return (keep & (nearest <= max_distance_mm))[labelled]


def _largest_piece(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of ``mask`` (empty if the mask is)."""
    if not mask.any():
        return mask.copy()
    labelled, sizes = _sized_components(mask)
    return labelled == int(sizes.argmax())


def _small_pieces(mask: np.ndarray, min_voxels: int, keep: np.ndarray | None = None) -> np.ndarray:
    """Voxels of the 26-connected components of ``mask`` smaller than ``min_voxels``, except the largest
    one and any that overlaps ``keep``."""
    if not mask.any():
        return mask.copy()
    labelled, sizes = _sized_components(mask)
    small = sizes < min_voxels
    small[[0, int(sizes.argmax())]] = False
    if keep is not None:
        small[np.unique(labelled[keep & mask])] = False
    return small[labelled]


def clean_labels(labels: np.ndarray, min_component_voxels: int = 0, min_et_voxels: int = 0,
                 max_component_distance_mm: float = 0.0, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                 min_core_component_voxels: int = 0) -> np.ndarray:
    """Remove small or distant whole-tumour components, small tumour-core and enhancing pieces and,
    optionally, a too-small enhancing tumour.

    Args:
        labels: internal label map (0 bg, 1 NCR, 2 ED, 3 ET).
        min_component_voxels: whole-tumour components smaller than this become background.
        min_et_voxels: if all ET together is smaller than this, it becomes necrotic core (the BraTS
            rule of thumb: a false-positive ET in a case without ET costs a Dice of 0).
        max_component_distance_mm: whole-tumour components farther than this from the largest one
            become background (0: none); a model's false positives far from the lesion go, a tumour
            the model splits into nearby pieces stays whole.
        spacing: voxel size in mm, for the distance.
        min_core_component_voxels: tumour-core (NCR + ET) components smaller than this become edema
            (except the one holding the largest ET piece), then enhancing components smaller than this
            become necrotic core; each region's largest component stays, so no region is emptied by
            this rule (``min_et_voxels`` decides about a small ET as a whole). BraTS 2023+ scores each
            predicted piece touching no real lesion as a false positive (Dice 0, HD95 374 mm); true
            fragments go too, which costs cases whose enhancing tumour is many small pieces (docs/model_evidence.md).
    Returns:
        a new label map.
    """
    out = labels.copy()
    keep = _kept_components(out != BACKGROUND, min_component_voxels, max_component_distance_mm, spacing)
    out[~keep] = BACKGROUND
    if min_core_component_voxels > 0:
        enhancing = out == ET
        # the core piece holding the largest ET piece stays, or a small core could take all ET with it
        out[_small_pieces((out == NCR) | enhancing, min_core_component_voxels, keep=_largest_piece(enhancing))] = ED
        out[_small_pieces(out == ET, min_core_component_voxels)] = NCR
    if min_et_voxels > 0:
        et = out == ET
        if 0 < et.sum() < min_et_voxels:
            out[et] = NCR
    return out
