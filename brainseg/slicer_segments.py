"""3D Slicer segmentations (.seg.nrrd): which BraTS class each segment is, from the segments' names; and label
maps written as one, which Slicer opens as a segmentation with named, coloured segments.

Slicer numbers segments 1, 2, 3... in the order they were made, so the same tumour painted in another order
holds other values, and values 1-3 alone would be read as BraTS 2023's (1 necrotic core, 2 edema, 3 enhancing).
Its header names each segment ("Segment0_Name:=Edema", "Segment0_LabelValue:=1"); where every segment's name
says a BraTS class, the values are read by name instead. A BraTS map loaded into Slicer keeps its values and
gets names such as "Segment_4", which say nothing: such a file is read by its values, as before.
"""
from __future__ import annotations

import logging
import re

import numpy as np

from brainseg.decode_itk import MAX_HEADER_BYTES, itk_geometry
from brainseg.labels import CONVENTIONS, ED, ET, LABEL_COLOURS, LABEL_NAMES, NCR, from_internal

log = logging.getLogger(__name__)

CAVITY = "cavity"  # BraTS 2024's resection cavity: not tumour
# words of a segment's name that say its class, matched whole ("non-enhancing", "non-contrast-enhancing" and the
# like are joined into one word first, so that they are never taken for enhancing tumour)
_CLASS_WORDS = {
    NCR: {"necrosis", "necrotic", "ncr", "net", "netc", "nonenhancing"},
    ED: {"edema", "oedema", "ed", "snfh"},
    ET: {"enhancing", "enhancement", "et"},
    CAVITY: {"cavity", "resection", "rc"},
}
# BraTS 2023's "surrounding non-enhancing FLAIR hyperintensity" is edema (SNFH): the phrase becomes "snfh" before
# "non-enhancing" is joined, which would make it necrotic core
_SNFH = re.compile(r"non[\W_]*enhanc[a-z]*[\W_]*(?:(?:flair|t2)[\W_]*)*hyperintens[a-z]*")
# any hyphen (a name pasted from a paper may hold U+2011), and "non-enhancement", "non-enhanced"
_NON_ENHANCING = re.compile(r"non[\W_]*(?:contrast[\W_]*)?enhanc(?:ing|ement|ed)")
_FIELD = re.compile(rb"^Segment(\d+)_(Name|LabelValue):=(.*)$", re.MULTILINE)
# file values in BraTS 2023's convention, and BraTS 2024's 4 for a cavity
_FILE_VALUE = {**{label: CONVENTIONS["brats2023"][label] for label in (NCR, ED, ET)}, CAVITY: 4}


def segments(data: bytes) -> dict[int, str]:
    """A .seg.nrrd file's segments, label value -> name, from its header ("SegmentN_LabelValue", else N + 1, as
    Slicer before 4.11 numbered them); empty for a file whose header names none."""
    fields: dict[int, dict[str, str]] = {}
    for index, key, value in _FIELD.findall(data[:MAX_HEADER_BYTES].split(b"\n\n", 1)[0]):
        fields.setdefault(int(index), {})[key.decode()] = value.decode("utf-8", "replace").strip()
    table = {}
    for index, field in sorted(fields.items()):
        value = field.get("LabelValue", str(index + 1))
        if value.isdecimal():  # int() refuses some isdigit() characters ("²")
            table[int(value)] = field.get("Name", "")
    return table


def class_of_name(name: str):
    """The BraTS class a segment's name says (labels.NCR, ED, ET, or CAVITY), or None: for a name that says none,
    or two ("necrotic and enhancing")."""
    words = set(re.findall(r"[a-z]+", _NON_ENHANCING.sub("nonenhancing", _SNFH.sub("snfh", name.lower()))))
    said = [what for what, names in _CLASS_WORDS.items() if words & names]
    return said[0] if len(said) == 1 else None


def by_name(values: np.ndarray, data: bytes, name: str) -> tuple[np.ndarray, str] | None:
    """``values`` in BraTS 2023's file values (BraTS 2024's, with 4 = resection cavity, when a segment is the
    cavity) and that convention, when the header names every segment the map holds by one BraTS class;
    None (read by value) otherwise."""
    named = segments(data)
    unique = np.unique(values)
    if (unique != np.round(unique)).any():
        return None  # not label values: refused as such when read by value
    held = [int(v) for v in unique if v != 0]
    classes = {value: class_of_name(named[value]) for value in held if value in named}
    if not held or len(classes) < len(held) or None in classes.values():
        if named:
            log.info("%s: segment names %s do not each say one BraTS class; its label values are read as values",
                     name, ", ".join(repr(named[v]) for v in sorted(named)))
        return None
    out = np.zeros(values.shape, np.uint8)
    for value, what in classes.items():
        out[values == value] = _FILE_VALUE[what]
    log.info("%s: segments read by name: %s", name,
             ", ".join(f"{named[v]!r} ({v}) -> {_FILE_VALUE[w]}" for v, w in sorted(classes.items())))
    return out, "brats2024" if CAVITY in classes.values() else "brats2023"


# what Slicer needs to open a file as a segmentation (older versions read "MasterRepresentation", newer "Source...")
_SEGMENTATION_FIELDS = {"Segmentation_MasterRepresentation": "Binary labelmap",
                        "Segmentation_SourceRepresentation": "Binary labelmap",
                        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
                        "Segmentation_ReferenceImageExtentOffset": "0 0 0"}


def segmentation_bytes(labels: np.ndarray, affine: np.ndarray, convention: str) -> bytes:
    """Internal labels (X, Y, Z) on the grid ``affine`` places, as a .seg.nrrd file: ``convention``'s values, one
    segment per tumour class named as brainseg names it (so it reads back by name) in brainseg's colours, every
    class listed even when empty, so that it can be painted in Slicer."""
    import SimpleITK as sitk

    from brainseg.files import temporary_copy

    values = from_internal(labels, convention)
    file_value = dict(zip((NCR, ED, ET), from_internal(np.array([NCR, ED, ET], np.uint8), convention).tolist()))
    image = sitk.GetImageFromArray(np.ascontiguousarray(values.transpose(2, 1, 0)))
    origin, spacing, direction = itk_geometry(affine)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    for key, value in _SEGMENTATION_FIELDS.items():
        image.SetMetaData(key, value)
    for index, label in enumerate((NCR, ED, ET)):
        fields = {"ID": f"Segment_{file_value[label]}", "Name": LABEL_NAMES[label],
                  "NameAutoGenerated": "0", "Color": " ".join(f"{c / 255:.4g}" for c in LABEL_COLOURS[label]),
                  "ColorAutoGenerated": "0", "Extent": _extent(labels.shape), "Layer": "0",
                  "LabelValue": str(file_value[label]), "Tags": "Segmentation.Status:completed|"}
        for key, value in fields.items():
            image.SetMetaData(f"Segment{index}_{key}", value)
    with temporary_copy(b"", ".seg.nrrd") as path:
        sitk.WriteImage(image, str(path), True)
        return path.read_bytes()


def _extent(shape) -> str:
    """The voxel extent Slicer records for each segment of a shared layer ("minI maxI minJ maxJ minK maxK"): the
    layer's, here the whole grid. Slicer reads a layer cropped to its first segment's extent, so a segment's own
    bounding box ("0 -1 ..." when empty) would cut the other segments' voxels away, or all of them."""
    return " ".join(f"0 {size - 1}" for size in shape)
