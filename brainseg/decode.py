"""A file's bytes -> a checked array, affine and header: NIfTI-1/2 (gzipped or not) and .npy here, NRRD and
MetaImage in brainseg.decode_itk.

Every limit is checked before the memory it would cost is allocated (voxel counts in the header, gzip
members inflating beyond what the header describes), and each refusal names the file, what is wrong and
what was expected.
"""
from __future__ import annotations

import io as _io
import math
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from brainseg.errors import InputError

FOUR_CHANNEL_HINT = "a 4-channel image is read as a whole case only when it is the only input"
MAX_VOXELS = 512 * 512 * 512  # one modality; larger headers are refused before allocating
MAX_BYTES = 2 * 1024**3  # decompressed size of one file
# voxel sides an MRI scan can have (7 T and 1024-matrix scans reach 0.18 mm, thick slices with gaps 13 mm):
# outside these the header's units or scaling are wrong (a file written in metres holds 0.001)
SPACING_RANGE_MM = (0.05, 30.0)
# a head fits in 300 mm; wider, the header's scaling is wrong, and the 2 mm model grid would hold billions of voxels
MAX_FIELD_OF_VIEW_MM = 600.0
_NIFTI1_HEADER_BYTES, _NIFTI2_HEADER_BYTES = 348, 540
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_SLACK = 1024**2  # bytes a .nii.gz may inflate to beyond what its header describes
# A .npy array has no voxel-to-world matrix: it is taken as 1 mm voxels in BraTS files' voxel order (LPS,
# the orientation brainseg's models train in), so an array saved from a BraTS NIfTI is neither flipped
# for the network nor shown mirrored
NPY_AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along each array axis, from a voxel-to-world matrix."""
    return tuple(float(s) for s in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))


def check_voxel_grid(spacing, shape, name: str, units: str | None = None) -> None:
    """Refuse voxel sizes and fields of view no brain MRI has (InputError naming ``name``); ``units``: the
    header's spatial unit, named when it is not millimetres."""
    low, high = SPACING_RANGE_MM
    said = f" (its header gives the unit as {units})" if units and units not in ("mm", "unknown") else ""
    check = "check the header's voxel size and units, or resample the scan"
    if not all(low <= s <= high for s in spacing):
        shown = " x ".join(f"{s:.3g}" for s in spacing)
        raise InputError(f"{name}: voxels of {shown} mm{said}; expected each side between {low:g} and {high:g} mm, as "
                         f"MRI scans have ({check})")
    extent = [n * s for n, s in zip(shape, spacing)]
    if max(extent) > MAX_FIELD_OF_VIEW_MM:
        shown = " x ".join(f"{e:.0f}" for e in extent)
        raise InputError(f"{name}: a field of view of {shown} mm{said}; expected at most {MAX_FIELD_OF_VIEW_MM:g} mm "
                         f"per side, as a head scan has ({check})")


def read_volume(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header | None]:
    """Decode one file's bytes into an array (float32, or the file's own 8- or 16-bit integers when it
    stores them unscaled: half the memory), its affine and header.

    A 4D file keeps its channels last: (X, Y, Z, C). A .npy file, which has no geometry, gets
    ``NPY_AFFINE``. NRRD and MetaImage files (.nrrd, .mha) come with a NIfTI header made from their geometry.
    Raises InputError naming ``name`` for anything unreadable or not an image.
    """
    if not data:
        raise InputError(f"{name}: the file is empty; expected a NIfTI (.nii/.nii.gz), NRRD (.nrrd), MetaImage (.mha) "
                         f"or .npy image")
    lower = name.lower()
    if lower.endswith(".npy"):
        return _read_npy(data, name), NPY_AFFINE.copy(), None
    from brainseg.decode_itk import itk_suffix, read_itk_volume  # SimpleITK is imported only for these files

    if itk_suffix(lower) is not None:
        return read_itk_volume(data, name)
    if data[:2] == _GZIP_MAGIC:
        data = _gunzip(data, name)
    elif lower.endswith(".gz"):  # an uncompressed NIfTI misnamed .nii.gz, a common export slip, reads as it is
        try:
            return _read_nifti(data, name)
        except InputError:
            raise InputError(f"{name}: named .gz but not gzip-compressed, nor an uncompressed NIfTI image; "
                             f"expected a .nii.gz or .nii file") from None
    return _read_nifti(data, name)


def read_bytes(path: Path) -> bytes:
    """A file's bytes; refuses a missing file, and one too large to be a scan before reading it."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise InputError(f"{path.name}: {size / 1e9:.1f} GB is too large; expected at most {MAX_BYTES / 1e9:.0f} GB")
        return path.read_bytes()
    except OSError as exc:  # permission denied, an I/O error on a failing disk or network share
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc}); expected a readable file") from None


def _gunzip(data: bytes, name: str) -> bytes:
    """Decompress a .nii.gz, never beyond what its NIfTI header says the file holds.

    The header is read first, so an absurd shape or a small file that inflates to gigabytes (a gzip
    bomb) is refused before the image data is decompressed.
    """
    try:
        head = zlib.decompressobj(wbits=31).decompress(data, _NIFTI2_HEADER_BYTES)
        header = _parse_header(head, name) if len(head) >= _NIFTI1_HEADER_BYTES else None
        limit = MAX_BYTES if header is None else min(_expected_bytes(header, name) + _GZIP_SLACK, MAX_BYTES)
        out, complete = _inflate_members(data, limit + 1)
    except zlib.error as exc:
        raise InputError(f"{name}: corrupt gzip data ({exc}); expected a valid .nii.gz file") from None
    if len(out) > limit:
        if limit == MAX_BYTES:
            raise InputError(f"{name}: decompresses to more than {MAX_BYTES / 1e9:.0f} GB; refused")
        raise InputError(
            f"{name}: decompresses to more data than its header describes ({limit - _GZIP_SLACK} bytes); "
            f"refused as a possible gzip bomb; expected a .nii.gz file holding one NIfTI image"
        )
    if not complete:
        raise InputError(f"{name}: the file is truncated (gzip stream ends early); download or export it again")
    return out


def _inflate_members(data: bytes, max_length: int) -> tuple[bytes, bool]:
    """Inflate every gzip member in turn (bgzip and concatenated files have several), at most
    ``max_length`` bytes; returns the bytes and whether the last member ended properly."""
    parts, total, rest = [], 0, data
    while True:
        decompressor = zlib.decompressobj(wbits=31)
        chunk = decompressor.decompress(rest, max_length - total)
        parts.append(chunk)
        total += len(chunk)
        if total >= max_length or not decompressor.eof:
            return b"".join(parts), decompressor.eof
        rest = decompressor.unused_data
        if not rest.strip(b"\0"):  # trailing zero padding after the last member is allowed
            return b"".join(parts), True


def _nifti_class(data: bytes, name: str) -> type[nib.Nifti1Image]:
    """NIfTI-1 or NIfTI-2, from the header size the file starts with."""
    if data[:2] == _GZIP_MAGIC:
        raise InputError(f"{name}: compressed twice (a gzip file inside the gzip); expected a .nii or .nii.gz "
                         f"file: decompress it once (gunzip) and give the .nii.gz it holds")
    size = _nifti_header_size(data)
    if size is None:
        raise InputError(f"{name}: not a NIfTI image (bad header); expected a .nii or .nii.gz file")
    return nib.Nifti1Image if size == _NIFTI1_HEADER_BYTES else nib.Nifti2Image


def _nifti_header_size(data: bytes) -> int | None:
    """The NIfTI-1 or NIfTI-2 header size a file starts with (in either byte order), or None."""
    for byteorder in ("little", "big"):
        size = int.from_bytes(data[:4], byteorder, signed=True) if len(data) >= 4 else None
        if size in (_NIFTI1_HEADER_BYTES, _NIFTI2_HEADER_BYTES):
            return size
    return None


def is_nifti_data(data: bytes) -> bool:
    """Whether bytes start as a NIfTI file, or a gzip file (as a .nii.gz does)."""
    return data[:2] == _GZIP_MAGIC or _nifti_header_size(data) is not None


def _parse_header(data: bytes, name: str) -> nib.Nifti1Header:
    """The NIfTI-1 or NIfTI-2 header at the start of ``data``; InputError if there is none."""
    klass = _nifti_class(data, name).header_class
    try:
        return klass.from_fileobj(_io.BytesIO(data[: klass.sizeof_hdr]))
    except Exception:  # nibabel raises several types for a damaged header; we only need "not NIfTI"
        raise InputError(f"{name}: not a NIfTI image (bad header); expected a .nii or .nii.gz file") from None


def _expected_bytes(header: nib.Nifti1Header, name: str) -> int:
    """Bytes a single-file NIfTI with this header holds; refuses data types and shapes we cannot use.

    Runs on the header alone, before any image data is read or allocated.
    """
    shape = tuple(int(s) for s in header.get_data_shape())
    try:
        dtype = header.get_data_dtype()
    except Exception:  # an unknown datatype code
        raise InputError(f"{name}: unknown data type code {int(header['datatype'])} in the header") from None
    if dtype.kind == "c":
        raise InputError(f"{name}: complex-valued data ({dtype}); expected a real-valued MRI magnitude image")
    if dtype.fields is not None or dtype.kind == "V":
        raise InputError(f"{name}: RGB/colour data; expected a grey-scale MRI image")
    if not shape or min(shape) < 1:
        raise InputError(f"{name}: the header gives shape {shape}, with no voxels; expected a 3D MRI volume")
    n_voxels = math.prod(shape)
    if math.prod(shape[:3]) > MAX_VOXELS or n_voxels > MAX_VOXELS * 4:
        raise InputError(
            f"{name}: header claims shape {shape}, larger than any MRI scan this tool accepts "
            f"(at most {MAX_VOXELS} voxels per volume)"
        )
    return int(header.get_data_offset()) + n_voxels * dtype.itemsize


def _read_nifti(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    if len(data) < _NIFTI1_HEADER_BYTES:
        raise InputError(f"{name}: too short to be a NIfTI image ({len(data)} bytes); expected a .nii or .nii.gz file")
    raw_header = _parse_header(data, name)
    expected = _expected_bytes(raw_header, name)
    offset = int(raw_header.get_data_offset())  # nibabel resets it in the image's own header
    try:
        image = _nifti_class(data, name).from_bytes(data)
    except Exception:  # nibabel raises several types for a damaged header; we only need "not NIfTI"
        raise InputError(f"{name}: not a NIfTI image (bad header); expected a .nii or .nii.gz file") from None
    header = image.header
    shape = tuple(int(s) for s in header.get_data_shape())
    if len(data) < expected:
        raise InputError(
            f"{name}: the file is truncated: header says {expected - offset} bytes of image data "
            f"for shape {shape}, file holds {max(len(data) - offset, 0)}"
        )
    stored = image.get_data_dtype()
    # small integers stored unscaled (BraTS's int16) stay as they are: exact, and half the memory of
    # float32 for every scan an app session holds; prepare() computes in float32
    keep = stored.kind in "iu" and stored.itemsize <= 2 and image.dataobj.slope == 1 and image.dataobj.inter == 0
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values are reported below
            array = np.asarray(image.dataobj) if keep else np.asarray(image.dataobj, dtype=np.float32)
    except Exception as exc:  # a header nibabel accepts but cannot decode
        raise InputError(f"{name}: cannot read image data ({exc})") from None
    affine = image.affine
    if affine is None or not np.all(np.isfinite(affine)):
        raise InputError(f"{name}: the header's voxel-to-world matrix is invalid (not finite)")
    check_voxel_grid(voxel_spacing(affine), shape[:3], name, header.get_xyzt_units()[0])
    if abs(np.linalg.det(affine[:3, :3])) < 1e-6:  # axes along one another: no 3D grid
        raise InputError(f"{name}: the header's voxel-to-world matrix is invalid (singular: two axes point the same way)")
    return array, np.asarray(affine, dtype=np.float64), header


def _read_npy(data: bytes, name: str) -> np.ndarray:
    try:
        stream = _io.BytesIO(data)
        version = np.lib.format.read_magic(stream)
        shape, _, dtype = (
            np.lib.format.read_array_header_1_0(stream) if version == (1, 0) else np.lib.format.read_array_header_2_0(stream)
        )
    except Exception:
        raise InputError(f"{name}: not a NumPy .npy array; expected a .npy file written by numpy.save") from None
    if np.dtype(dtype).hasobject:
        raise InputError(f"{name}: holds Python objects; expected a numeric array")
    if np.dtype(dtype).kind == "c":
        raise InputError(f"{name}: complex-valued data; expected a real-valued MRI image")
    if math.prod(shape) > MAX_VOXELS * 4 or max(math.prod(shape[:3]), math.prod(shape[-3:])) > MAX_VOXELS:
        raise InputError(f"{name}: shape {shape} is larger than any MRI scan this tool accepts")
    try:
        array = np.load(_io.BytesIO(data), allow_pickle=False)
    except Exception as exc:
        raise InputError(f"{name}: cannot read array ({exc})") from None
    if array.dtype.kind not in "biuf":
        raise InputError(f"{name}: data type {array.dtype} is not numeric; expected a grey-scale image")
    if array.ndim == 4 and array.shape[0] in (4,) and array.shape[-1] != 4:
        array = np.moveaxis(array, 0, -1)  # stacked (C, X, Y, Z) -> channels last, as 4D NIfTI
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values are reported by the caller
        return array.astype(np.float32)


def as_3d(array: np.ndarray, name: str, thin: bool = False) -> np.ndarray:
    """``array`` as one 3D volume; ``thin``: one voxel thick allowed (a crop of a grid, as 3D Slicer saves a
    segmentation drawn on one slice)."""
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        extra = f" ({FOUR_CHANNEL_HINT})" if array.ndim == 4 and array.shape[3] == 4 else ""
        raise InputError(f"{name}: image is {array.ndim}D with shape {array.shape}; expected one 3D volume{extra}")
    if min(array.shape) == 0:
        raise InputError(f"{name}: image has shape {array.shape}, no voxels; expected a 3D volume")
    if min(array.shape) < 2 and not thin:
        raise InputError(f"{name}: image has shape {array.shape}; expected a 3D volume, not a single slice")
    return array
