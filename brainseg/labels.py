"""Label conventions and BraTS regions.

Inside brainseg a label map always uses 0 background, 1 NCR, 2 ED, 3 ET. Files use BraTS 2018-2021
(ET = 4), BraTS 2023+ (ET = 3) or the Medical Segmentation Decathlon's Task01 order (1 ED, 2 NCR, 3 ET);
BraTS 2024 post-treatment maps (4 = resection cavity) can be read too. Conversion is explicit and
unexpected values are refused.
"""
from __future__ import annotations

import numpy as np

from brainseg.errors import InputError

BACKGROUND, NCR, ED, ET = 0, 1, 2, 3
LABEL_NAMES = {NCR: "necrotic core", ED: "edema", ET: "enhancing tumour"}
# RGB of each internal label, wherever labels are shown or written with colours: background black, necrotic
# core orange, edema green, enhancing tumour red
LABEL_COLOURS = np.array([[0, 0, 0], [255, 165, 0], [0, 200, 0], [255, 0, 0]], dtype=np.uint8)
REGIONS = ("WT", "TC", "ET")
REGION_NAMES = {"WT": "whole tumour", "TC": "tumour core", "ET": "enhancing tumour"}
REGION_LABELS = {"WT": (NCR, ED, ET), "TC": (NCR, ET), "ET": (ET,)}
# what each probability channel holds, by channel count: sigmoid regions or softmax labels
PROBABILITY_CHANNELS = {3: REGIONS, 4: ("background", "NCR", "ED", "ET")}

# file value of each internal label, per convention brainseg reads and writes
CONVENTIONS = {
    "brats2018": {BACKGROUND: 0, NCR: 1, ED: 2, ET: 4},
    "brats2023": {BACKGROUND: 0, NCR: 1, ED: 2, ET: 3},
    "msd": {BACKGROUND: 0, NCR: 2, ED: 1, ET: 3},  # MSD Task01: 1 edema, 2 non-enhancing, 3 enhancing
}
# conventions brainseg only reads: name -> (the convention its tumour labels follow, file values that
# are not tumour and read as background). BraTS 2024 post-treatment adds 4 = resection cavity, which
# none of WT, TC and ET includes.
READ_ONLY = {"brats2024": ("brats2023", (4,))}
READABLE = (*CONVENTIONS, *READ_ONLY)
# what a user may name where brainseg reads label maps: a convention, or "auto" to guess from the values
AUTO = "auto"
LABEL_OPTIONS = (AUTO, *READABLE)
# every value a label map file may hold, in any convention
FILE_LABELS = tuple(sorted({value for mapping in CONVENTIONS.values() for value in mapping.values()}))


def to_internal(labels: np.ndarray, convention: str, source: str = "label map") -> np.ndarray:
    """Map a label map read from a file to internal labels 0-3.

    ``convention`` is one of ``READABLE``. Raises InputError naming ``source`` when the map holds a
    value the convention does not define.
    """
    read = _read_table(convention)
    values = np.unique(labels)
    bad = [v for v in values.tolist() if v not in read]
    if bad:
        raise InputError(
            f"{source}: unexpected label values {bad[:5]}; {convention} label maps hold only {sorted(read)}"
        )
    lut = np.zeros(max(read) + 1, dtype=np.uint8)
    for file_value, internal in read.items():
        lut[file_value] = internal
    return lut[labels.astype(np.int64)]


def readable_as(labels: np.ndarray, convention: str) -> bool:
    """Whether every value of a label map has a meaning in ``convention``."""
    return bool(np.isin(labels, list(_read_table(convention))).all())


def _read_table(convention: str) -> dict[int, int]:
    """File value -> internal label, for the values ``convention`` defines."""
    read = {file_value: internal for internal, file_value in _mapping(written_as(convention)).items()}
    read.update({file_value: BACKGROUND for file_value in READ_ONLY.get(convention, ("", ()))[1]})
    return read


def chosen_convention(option: str) -> str | None:
    """The convention a ``LABEL_OPTIONS`` choice names; None for "auto" (guess from each map's values)."""
    return None if option == AUTO else option


def written_as(convention: str) -> str:
    """The writable convention whose values a readable one uses for tumour labels."""
    if convention not in READABLE:
        raise ValueError(f"unknown label convention {convention!r}; expected one of {list(READABLE)}")
    return READ_ONLY.get(convention, (convention, ()))[0]


def require_internal(labels: np.ndarray, what: str = "labels") -> None:
    """Refuse a map that is not internal labels 0-3 (ValueError): file values such as BraTS 2018's ET = 4,
    or floats, would otherwise index past the label tables or score ET as absent."""
    labels = np.asarray(labels)
    if labels.dtype == bool:
        raise ValueError(f"{what}: a boolean mask; expected integer internal labels 0-3 (a mask as one label: "
                         f"mask.astype(np.uint8) * label)")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{what}: {labels.dtype} values; expected integer internal labels 0-3 "
                         f"(labels.to_internal converts a label map's file values)")
    if labels.size and (labels.min() < 0 or labels.max() > 3):
        found = sorted(int(v) for v in np.unique(labels[(labels < 0) | (labels > 3)])[:5])
        raise ValueError(f"{what}: holds the values {found}; expected internal labels 0-3 (0 background, 1 NCR, "
                         f"2 ED, 3 ET; labels.to_internal converts a label map's file values)")


def from_internal(labels: np.ndarray, convention: str) -> np.ndarray:
    """Map internal labels 0-3 to the file values of ``convention`` (uint8); ValueError for other values."""
    require_internal(labels)
    mapping = _mapping(convention)
    lut = np.array([mapping[i] for i in range(4)], dtype=np.uint8)
    return lut[labels]


# where a user names the convention of a reference (expert) label map
NAME_REFERENCE_LABELS = "evaluate --reference-labels, train --labels, or 'Reference label values' in the app"


def guess_convention(labels: np.ndarray, source: str = "label map", name_labels: str = NAME_REFERENCE_LABELS) -> str:
    """BraTS 2018-2021 if the map holds a 4, 2023+ if it holds a 3, 2018 when it holds neither.

    Raises InputError naming ``source`` when the map holds both, and ``name_labels``: where the user names
    the convention instead.
    """
    values = set(np.unique(labels).tolist())
    if 4 in values and 3 in values:
        raise InputError(
            f"{source}: holds both labels 3 and 4; expected one of them for enhancing tumour "
            f"(4 in BraTS 2018-2021 label maps, 3 in BraTS 2023+); for a BraTS 2024 post-treatment map, where 4 "
            f"is resection cavity, name its labels brats2024 ({name_labels})"
        )
    return "brats2023" if 3 in values else "brats2018"


def region_mask(labels: np.ndarray, region: str) -> np.ndarray:
    """Boolean mask of one region ("WT", "TC", "ET") of an internal label map (values 0-3)."""
    if region not in REGION_LABELS:
        raise ValueError(f"unknown region {region!r}; expected one of {REGIONS}")
    return np.isin(labels, REGION_LABELS[region])


def region_masks(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean WT/TC/ET masks of an internal label map."""
    return {r: region_mask(labels, r) for r in REGIONS}


def region_counts(label_counts) -> dict[str, int]:
    """WT/TC/ET voxel counts from counts of internal labels 0-3."""
    return {r: int(sum(label_counts[k] for k in REGION_LABELS[r])) for r in REGIONS}


def regions_to_labels(wt: np.ndarray, tc: np.ndarray, et: np.ndarray) -> np.ndarray:
    """Region masks to internal labels, nested: a voxel is core only inside WT and ET only inside TC.

    (nnU-Net's region models instead let each later region overwrite the earlier ones, so a TC voxel
    outside WT still becomes core; nesting keeps the three reported volumes consistent.)
    """
    out = np.zeros(wt.shape, dtype=np.uint8)
    out[wt] = ED
    out[wt & tc] = NCR
    out[wt & tc & et] = ET
    return out


def _mapping(convention: str) -> dict[int, int]:
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown label convention {convention!r}; expected one of {list(CONVENTIONS)}")
    return CONVENTIONS[convention]
