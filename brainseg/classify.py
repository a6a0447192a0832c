"""What one file a user dropped holds: an MRI scan, a label map or a whole 4-channel case.

The app lets users drop files in any order and with any names; each file is decoded once, in the
reading its name asks for first, and a misnamed file is read as what it holds (a FLAIR named like a
segmentation, a label map named like a T1) rather than refused.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from brainseg.decode import FOUR_CHANNEL_HINT
from brainseg.errors import BrainsegError, InputError
from brainseg.io import Case, Scan, load_files, read_scan
from brainseg.labelmaps import LabelMap, read_label_map
from brainseg.naming import modality_from_name

MIN_SCAN_VALUES = 32  # distinct intensities an MRI scan has at least (a mask or label map has a handful)


def _has_scan_values(array: np.ndarray) -> bool:
    return np.unique(array[::4, ::4, ::4]).size > MIN_SCAN_VALUES


@dataclass
class DroppedFile:
    """One file, decoded.

    Attributes:
        kind: "scan", "labels" (a segmentation), "case" (a 4-channel image: FLAIR, T1, T1ce, T2, the
            Decathlon's order), or None when it is none of them (``error`` says why).
        value: the decoded Scan, LabelMap or Case.
        modality: what the name says it is ("flair", ..., "seg"); None when it says nothing, or names a
            segmentation but holds a scan.
        misnamed: read as something other than the name asked for first.
        error: why the file could not be read (the reading its name asked for first, or the case reading
            for a 4-channel image).
    """

    kind: str | None = None
    value: Scan | LabelMap | Case | None = None
    modality: str | None = None
    misnamed: bool = False
    error: str | None = None


def classify_file(name: str, data: bytes) -> DroppedFile:
    """Decode ``data`` (a file named ``name``) as what it holds; never raises for bad content."""
    try:
        modality = modality_from_name(name)
    except BrainsegError as exc:  # a name that mentions several modalities
        return DroppedFile(error=str(exc))
    seg = modality == "seg"
    readings = [("labels", read_label_map), ("scan", read_scan)] if seg else \
        [("scan", read_scan), ("labels", read_label_map), ("case", lambda d, n: load_files({n: d}))]
    errors = {}
    for kind, read in readings:
        try:
            value = read(data, name)
        except BrainsegError as exc:
            errors[kind] = str(exc)
            continue
        if seg and kind == "scan" and not _has_scan_values(value.array):
            continue  # a mask with foreign values (0/255) is no scan: its label error stands
        if modality not in (None, "seg") and kind == "labels" and not value.values.any():
            break  # a blank file named as a scan is a blank scan (a failed export), not an empty segmentation
        return DroppedFile(kind, value, None if kind == "scan" and seg else modality, kind != readings[0][0])
    # a 4-channel image that could not be a case: the case reading says why, not the 3D scan reading
    four_channel = FOUR_CHANNEL_HINT in errors.get("scan", "") and "case" in errors
    return DroppedFile(modality=modality, error=errors["case"] if four_channel else next(iter(errors.values())))


def read_reference(data: bytes, name: str, case: Case) -> LabelMap:
    """``labelmaps.read_label_map`` on ``case``'s grid, whose refusal of a file that is an MRI scan says so
    (rather than listing its intensities as unexpected label values)."""
    try:
        return read_label_map(data, name, case)
    except BrainsegError:
        found = classify_file(name, data)
        if found.kind == "case" or (found.kind == "scan" and _has_scan_values(found.value.array)):
            raise InputError(f"{name}: an MRI scan, not a segmentation (a label map holds a few label values, 0-4); "
                             f"drop it with the scans, and this case's segmentation here") from None
        raise
