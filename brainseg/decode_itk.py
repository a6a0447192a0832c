"""NRRD (.nrrd, 3D Slicer's default) and MetaImage (.mha, ITK-SNAP's) files -> a checked array, affine and
NIfTI header, through SimpleITK.

SimpleITK reads from paths only, so the bytes pass through a temporary file. Before any voxel is read the
header is checked twice: as text (the voxels must be in the file itself: a header naming another file would
make the reader open that file on this machine), then as SimpleITK reads it (dimension, pixel type, size,
voxel grid); compressed voxels are then inflated once and thrown away, to refuse a stream cut short, damaged
or inflating beyond the header's size, which SimpleITK would not notice. The array and affine come out as a
NIfTI file of the same image gives them: (X, Y, Z) voxels and a RAS voxel-to-world matrix.
"""
from __future__ import annotations

import logging
import math
import re
import zlib
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np

from brainseg.decode import MAX_VOXELS, check_voxel_grid, is_nifti_data, voxel_spacing
from brainseg.errors import InputError
from brainseg.files import temporary_copy

log = logging.getLogger(__name__)

_FORMAT = {".nrrd": "NRRD", ".nhdr": "NRRD", ".mha": "MetaImage", ".mhd": "MetaImage"}
_IMAGE_IO = {".nrrd": "NrrdImageIO", ".mha": "MetaImageIO"}  # chosen by suffix: a renamed file is not guessed at
_SINGLE_FILE = {".nhdr": ".nrrd", ".mhd": ".mha"}  # a detached header -> the single-file form of its format
MAX_HEADER_BYTES = 1024**2  # text headers are a few kB; a longer one is refused unread (see _checked_header)
# 3D Slicer saves overlapping segments as layers of one .seg.nrrd: one value per layer per voxel
SEGMENTATION_HINT = ("; a 3D Slicer segmentation with overlapping segments: in Slicer's Segmentations module, export "
                     "the segments to a labelmap (one value per voxel) and save that as .nrrd or .nii.gz")
_INFLATE_CHUNK = 1024**2
_INFLATE_SLACK = 1024**2  # bytes a compressed stream may inflate to beyond the voxels its header describes
_UNIT_TOLERANCE = 1e-3  # how far from 1 an axis direction's length may be (6 printed decimals are 1e-6 off)
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])  # ITK's world is LPS, NIfTI's RAS: the same points with x and y negated
# what precedes the reason in an ITK message line: "ITK ERROR: NrrdImageIO(0x55...): ", "[nrrd] _nrrdEncodingRaw_read: "
_ITK_PREFIX = re.compile(r"^(ITK ERROR: \w+\(0x[0-9a-fA-F]+\): |\[\w+\] \w+: )")
# the pixel types read (SimpleITK's names; the number is the bits of one voxel)
_PIXEL_TYPES = ("sitkUInt8", "sitkInt8", "sitkUInt16", "sitkInt16", "sitkUInt32", "sitkInt32", "sitkUInt64",
                "sitkInt64", "sitkFloat32", "sitkFloat64")


def itk_suffix(name: str) -> str | None:
    """The NRRD / MetaImage suffix a file name ends in (any case), or None."""
    lower = name.lower()
    return next((s for s in _FORMAT if lower.endswith(s)), None)


def read_itk_volume(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    """Decode a single-file NRRD or MetaImage image into an (X, Y, Z) array (float32, or the file's own 8- or
    16-bit integers, as NIfTI files are read), its RAS affine and a NIfTI header that records both.

    Raises InputError naming ``name`` for a detached header, a file that is not one of these formats or is
    damaged, and an image that is not one grey-scale 3D volume an MRI scan could be.
    """
    suffix = itk_suffix(name)
    if suffix is None:
        raise ValueError(f"{name}: not named .nrrd, .nhdr, .mha or .mhd")
    if suffix in _SINGLE_FILE:
        raise InputError(_detached_message(data, name, suffix))
    header = _checked_header(data, name, suffix)
    sitk = _simpleitk()
    with temporary_copy(data, suffix) as path:
        reader = sitk.ImageFileReader()
        reader.SetImageIO(_IMAGE_IO[suffix])
        reader.SetFileName(str(path))
        _itk_call(reader.ReadImageInformation, path, name, suffix)
        hint = SEGMENTATION_HINT if _is_slicer_segmentation(data, header) else ""
        _check_compressed_voxels(data, header, _checked_voxel_bytes(sitk, reader, name, hint), name, suffix)
        image = _itk_call(reader.Execute, path, name, suffix)
    if "vector" in image.GetPixelIDTypeAsString():  # of one component (_checked_pixel_bytes): a list axis of one, as
        # in a 4D NRRD of one layer (3D Slicer before 4.11 saved a one-segment segmentation so)
        image = sitk.VectorIndexSelectionCast(image, 0)
    affine = itk_affine(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    array = _voxels(sitk, image)
    # a NRRD without "space" gives voxel sizes only: SimpleITK places it as LPS, which nothing in the file says
    oriented = suffix != ".nrrd" or "space" in header.fields
    return array, affine, nifti_header(array, affine, oriented)


def itk_affine(origin, spacing, direction) -> np.ndarray:
    """The RAS voxel-to-world matrix of an ITK image's LPS geometry (for array axes in ITK's index order
    x, y, z): columns direction * spacing, the origin as translation, world x and y negated."""
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ np.reshape(np.asarray(direction, dtype=float), (3, 3)) @ np.diag(spacing)
    affine[:3, 3] = _LPS_TO_RAS @ np.asarray(origin, dtype=float)
    return affine


def itk_geometry(affine: np.ndarray) -> tuple[list[float], list[float], list[float]]:
    """``itk_affine``'s inverse: the LPS origin, voxel spacing and row-major direction matrix of an ITK image on
    the grid a RAS voxel-to-world ``affine`` describes."""
    matrix = np.asarray(affine, dtype=float)
    spacing = np.array(voxel_spacing(matrix))
    direction = _LPS_TO_RAS @ matrix[:3, :3] / spacing  # negating x and y is its own inverse
    return (_LPS_TO_RAS @ matrix[:3, 3]).tolist(), spacing.tolist(), direction.flatten().tolist()


def nifti_header(array: np.ndarray, affine: np.ndarray, oriented: bool = True) -> nib.Nifti1Header:
    """A NIfTI header for an image read from another format: ``affine`` as both its matrices, coded scanner
    coordinates (where NRRD and MetaImage place the image), so that brainseg treats the image as a NIfTI that
    records its orientation, and label maps written with this header overlay the input in any viewer; codes 0
    where the file records no orientation (``oriented`` False), as a NIfTI says so."""
    header = nib.Nifti1Header()
    header.set_data_shape(array.shape)
    header.set_data_dtype(array.dtype)
    header.set_xyzt_units("mm")
    header.set_qform(affine, code=1 if oriented else 0)  # codes 0: "no orientation recorded" (io.orientation_recorded)
    header.set_sform(affine, code=1 if oriented else 0)
    return header


def _simpleitk():
    try:
        import SimpleITK as sitk
    except ImportError:
        raise InputError("reading NRRD and MetaImage files needs SimpleITK, one of brainseg's dependencies: pip install "
                         "SimpleITK (or give the scans as NIfTI: .nii.gz)") from None
    return sitk


def _is_slicer_segmentation(data: bytes, header: _Header) -> bool:
    """Whether a NRRD header is 3D Slicer's segmentation's (.seg.nrrd: "Segment0_ID:=..." key-value pairs)."""
    return header.end is not None and b"Segment0_ID:=" in data[:header.end]


def _detached_message(data: bytes, name: str, suffix: str) -> str:
    """Why a detached header (.nhdr, .mhd) is refused, naming the file its voxels are in when it says."""
    fields = _parse_header(data, suffix).fields or {}
    where = fields.get("datafile") or fields.get("elementdatafile")
    held = f" ({where})" if where else ""
    return (f"{name}: a detached {_FORMAT[suffix]} header: its voxels are in another file{held}, which a single file "
            f"given or uploaded cannot bring along; save the scan as a single {_SINGLE_FILE[suffix]} file (or .nii.gz)")


class _Header(NamedTuple):
    fields: dict[str, str] | None  # keys lower case, spaces taken out; None: the file does not start as a header
    end: int | None  # where the voxels start; None: the header does not end within MAX_HEADER_BYTES


def _checked_header(data: bytes, name: str, suffix: str) -> _Header:
    """The text header, after refusing a file that is not ``suffix``'s format, one whose header does not end
    within MAX_HEADER_BYTES, and one whose voxels lie in another file (NRRD's "data file", MetaImage's
    ElementDataFile other than LOCAL)."""
    fmt = _FORMAT[suffix]
    if is_nifti_data(data):
        raise InputError(f"{name}: holds a NIfTI (or gzip-compressed) file, not {fmt}; name it .nii.gz / .nii as it is, "
                         f"or save the scan as {suffix} again")
    header = _parse_header(data, suffix)
    if header.fields is None:
        raise InputError(f"{name}: not a {fmt} file (no {fmt} header at its start); expected a single-file {suffix} "
                         f"image as 3D Slicer or ITK-SNAP saves it")
    if header.end is None:
        raise InputError(f"{name}: its {fmt} header does not end within its first {MAX_HEADER_BYTES // 1024**2} MB "
                         f"(damaged, or not a {fmt} file); expected a single-file {suffix} image")
    external = header.fields.get("datafile") if suffix == ".nrrd" else header.fields["elementdatafile"]
    if suffix == ".mha" and external.upper() == "LOCAL":
        external = None
    if suffix == ".mha" and data[:MAX_HEADER_BYTES].lower().count(b"elementdatafile") > 1:
        external = "a second ElementDataFile line"  # which one a reader takes is not ours to guess
    if external is not None:
        raise InputError(f"{name}: a {fmt} header whose voxels are in another file ({external}); a single file given "
                         f"or uploaded cannot bring that along: save the scan as a single {suffix} file, its voxels "
                         f"inside (or as .nii.gz)")
    if suffix == ".mha":
        _check_meta_dimensions(data[:header.end], name)
    return header


def _check_meta_dimensions(text: bytes, name: str) -> None:
    """Refuse a MetaImage header any of whose NDims lines is not a whole number 1-4: MetaIO (inside SimpleITK) loops
    without end on a negative one, and crashes the whole process on a huge one followed by a TransformMatrix."""
    for value in re.findall(rb"^[ \t]*ndims[ \t]*=(.*)$", text, re.IGNORECASE | re.MULTILINE):
        shown = value.strip().decode("latin-1")
        if shown not in ("1", "2", "3", "4"):
            raise InputError(f"{name}: its MetaImage header gives NDims = {shown[:20]}; expected 3 (one 3D volume), as "
                             f"ITK-SNAP and 3D Slicer save a scan: save it as .mha again")


def _parse_header(data: bytes, suffix: str) -> _Header:
    """A NRRD header ("key: value" lines after the NRRD000N magic, up to the first blank line) or a MetaImage
    one ("Key = Value" lines up to ElementDataFile), read within MAX_HEADER_BYTES."""
    nrrd = suffix in (".nrrd", ".nhdr")
    lines = data[:MAX_HEADER_BYTES].split(b"\n")
    if nrrd and not lines[0].startswith(b"NRRD000"):
        return _Header(None, None)
    fields: dict[str, str] = {}
    position = len(lines[0]) + 1 if nrrd else 0
    for raw in lines[1:] if nrrd else lines:
        position += len(raw) + 1
        line = raw.rstrip(b"\r").decode("latin-1")
        if nrrd and not line:
            return _Header(fields, position)
        if (nrrd and line.startswith("#")) or (not nrrd and not line.strip()):
            continue
        key, separator, value = line.partition(":" if nrrd else "=")
        if not separator and not nrrd:  # binary data before any ElementDataFile line: no MetaImage header
            return _Header(None, None)
        if not separator or (nrrd and value.startswith("=")):  # NRRD's "key:=value" pairs are free text, not fields
            continue
        key = key.strip().lower().replace(" ", "")
        fields.setdefault(key, value.strip())
        if key == "elementdatafile":  # the last MetaImage header line: the voxels follow
            return _Header(fields, position)
    return _Header(fields, len(data) if suffix == ".nhdr" else None)  # a detached NRRD header may end with the file


def _check_compressed_voxels(data: bytes, header: _Header, voxel_bytes: int, name: str, suffix: str) -> None:
    """Refuse compressed voxels whose stream is cut short, fails its checksum (SimpleITK stops inflating once it has
    the voxels it needs and checks no checksum, so a damaged file could otherwise give wrong voxels unsaid), or
    inflates to more than the ``voxel_bytes`` the header describes (a zip bomb; inflated in bounded pieces, kept
    nowhere)."""
    fields = header.fields
    compressed = fields.get("encoding", "").lower() in ("gzip", "gz") if suffix == ".nrrd" else \
        fields.get("compresseddata", "").lower() == "true"
    if not compressed or "byteskip" in fields or "lineskip" in fields or "headersize" in fields:
        return  # skips move the stream's start: left to SimpleITK
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: a gzip (NRRD) or zlib (MetaImage) stream, told by its header
    stream, inflated, limit = memoryview(data)[header.end:], 0, voxel_bytes + _INFLATE_SLACK
    try:
        for start in range(0, len(stream), _INFLATE_CHUNK):
            piece = stream[start:start + _INFLATE_CHUNK]
            while piece and inflated <= limit and not inflater.eof:
                inflated += len(inflater.decompress(piece, _INFLATE_CHUNK))
                piece = inflater.unconsumed_tail
    except zlib.error as exc:
        raise InputError(f"{name}: its compressed voxels are damaged ({exc}); expected an intact {suffix} file: save "
                         f"it again") from None
    if inflated > limit:
        raise InputError(f"{name}: its compressed voxels inflate to more than the {voxel_bytes} bytes its header "
                         f"describes; refused as a possible zip bomb; expected a {suffix} file holding one image")
    if not inflater.eof:
        raise InputError(f"{name}: the file is truncated (its compressed voxels end early); expected an intact "
                         f"{suffix} file: save or download it again")


def _itk_call(call, path: Path, name: str, suffix: str):
    """``call()``, its RuntimeError (SimpleITK's one error type, whose text names the temporary ``path``) turned
    into an InputError naming ``name``."""
    try:
        return call()
    except RuntimeError as exc:
        log.debug("%s: SimpleITK: %s", name, exc)
        raise InputError(f"{name}: cannot be read as a {_FORMAT[suffix]} image ({_itk_reason(str(exc), path, name)}); "
                         f"expected an intact single-file {suffix} image: a damaged or truncated file must be saved "
                         f"again") from None


def _itk_reason(text: str, path: Path, name: str) -> str:
    """The most specific line of an ITK error message (its last), naming ``name`` instead of ``path``, without
    the C++ source location, the reporting object's address and the errno text MetaIO appends."""
    lines = [line.strip() for line in text.replace(str(path), name).splitlines()]
    useful = [line for line in lines if line and not line.startswith(("Exception thrown", "Reason:")) and not line.endswith(":")]
    return _ITK_PREFIX.sub("", useful[-1]).rstrip(".") if useful else "unreadable"


def _checked_voxel_bytes(sitk, reader, name: str, hint: str = "") -> int:
    """The bytes an image's voxels take, after refusing, from the header alone, an image that is not one grey-scale
    3D volume of a size and voxel grid an MRI scan has; ``hint`` ends the refusals of other shapes."""
    pixel_bytes = _checked_pixel_bytes(sitk, reader, name, hint)
    size = tuple(int(s) for s in reader.GetSize())
    if min(size) < 1 or math.prod(size) > MAX_VOXELS:
        raise InputError(f"{name}: the header gives size {size}; expected a 3D MRI volume of 1 to {MAX_VOXELS} voxels")
    check_voxel_grid(tuple(float(s) for s in reader.GetSpacing()), size, name)
    direction = np.reshape(np.asarray(reader.GetDirection(), dtype=float), (3, 3))
    # MetaImage's TransformMatrix is taken as it is: a column longer than 1 would scale the voxel sides checked above
    # unseen, and SimpleITK's reader loops without end on a huge one; a NIfTI header holds the origin in 32-bit floats
    unit = (np.abs(direction) <= 1 + _UNIT_TOLERANCE).all() and \
        np.allclose(np.sqrt((direction**2).sum(axis=0)), 1, atol=_UNIT_TOLERANCE)
    held = (np.abs(reader.GetOrigin()) < np.finfo(np.float32).max).all()
    if not (unit and held) or abs(np.linalg.det(direction)) < 1e-6:
        raise InputError(f"{name}: the header's axis directions or origin are invalid (not finite unit vectors, two axes "
                         f"pointing the same way, or an origin no NIfTI header can hold); expected a 3D voxel grid")
    return math.prod(size) * pixel_bytes


def _checked_pixel_bytes(sitk, reader, name: str, hint: str = "") -> int:
    """The bytes of one voxel, after refusing complex, vector and colour voxels, types brainseg does not read, and
    images of other than three dimensions."""
    components, dimension, pixel = reader.GetNumberOfComponents(), reader.GetDimension(), reader.GetPixelID()
    if "complex" in sitk.GetPixelIDValueAsString(pixel):
        raise InputError(f"{name}: complex-valued data; expected a real-valued MRI magnitude image")
    if components != 1:
        raise InputError(f"{name}: {components} values per voxel (a vector or colour image); expected a grey-scale "
                         f"scan or label map, one value per voxel{hint}")
    if dimension != 3:
        size = tuple(int(s) for s in reader.GetSize())
        raise InputError(f"{name}: a {dimension}D image of size {size}; expected one 3D volume"
                         + (" (a single slice cannot be segmented)" if dimension == 2 else "") + hint)
    pixel_bytes = next((int(re.sub(r"\D", "", t)) // 8 for t in _PIXEL_TYPES
                        if pixel in (getattr(sitk, t), getattr(sitk, "sitkVector" + t[4:]))), None)
    if pixel_bytes is None:
        raise InputError(f"{name}: voxels of type {sitk.GetPixelIDValueAsString(pixel)}; expected integers or real "
                         f"numbers (a grey-scale MRI scan or a label map)")
    return pixel_bytes


def _voxels(sitk, image) -> np.ndarray:
    """The image's voxels as an (X, Y, Z) array: small integers as stored (exact, and half the memory of float32,
    as NIfTI files are read), anything else float32."""
    view = sitk.GetArrayViewFromImage(image).transpose(2, 1, 0)  # SimpleITK's arrays are (Z, Y, X)
    keep = view.dtype.kind in "iu" and view.dtype.itemsize <= 2
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values are reported by the caller
        return np.array(view, dtype=None if keep else np.float32, order="K")  # a copy: the view dies with the image
