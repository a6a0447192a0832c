"""Reading and validating the four MRI modalities of a case; writing label maps.

Files -> arrays: every check that can refuse a user's file lives here, and each refusal says which
file, what is wrong and what was expected.
"""
from __future__ import annotations

import gzip
import io as _io
import logging
import os
import re
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import nibabel as nib
import numpy as np

from brainseg import MODALITIES
from brainseg.errors import InputError

log = logging.getLogger(__name__)

MAX_VOXELS = 512 * 512 * 512  # one modality; larger headers are refused before allocating
MAX_BYTES = 2 * 1024**3  # decompressed size of one file
AFFINE_TOLERANCE = 1e-3  # mm
SUFFIXES = (".nii.gz", ".nii", ".npy")
PRIVATE_HEADER_FIELDS = ("descrip", "aux_file", "db_name", "intent_name")

# file-name token -> modality; tokens are matched whole, so "t1" never captures "t1ce"
_ALIASES = {
    "flair": ("flair", "t2f", "t2flair", "fla"),
    "t1": ("t1", "t1n", "t1w", "t1native", "t1pre"),
    "t1ce": ("t1ce", "t1c", "t1gd", "t1post", "t1contrast", "t1wce", "ce", "t1cegd"),
    "t2": ("t2", "t2w"),
    "seg": ("seg", "segmentation", "label", "labels", "mask", "gt", "groundtruth"),
}
TOKEN_TO_MODALITY = {alias: mod for mod, aliases in _ALIASES.items() for alias in aliases}
BRATS2023_TOKENS = {"t2f", "t1n", "t1c", "t2w"}


@dataclass
class Case:
    """Four co-registered modalities on one grid.

    Attributes:
        images: modality -> float32 array (X, Y, Z), in the file's own orientation.
        affine: 4x4 voxel-to-world (RAS+, mm) matrix shared by all modalities.
        header: header of the first modality (None for .npy input), used to write outputs.
        sources: modality -> file name it came from.
        convention: label convention for outputs ("brats2018" or "brats2023"), from the file names.
    """

    images: dict[str, np.ndarray]
    affine: np.ndarray
    header: nib.Nifti1Header | None = None
    sources: dict[str, str] = field(default_factory=dict)
    convention: str = "brats2018"

    @property
    def shape(self) -> tuple[int, int, int]:
        return next(iter(self.images.values())).shape

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    def stacked(self, order: Iterable[str] = MODALITIES) -> np.ndarray:
        """(C, X, Y, Z) float32 in the given modality order."""
        return np.stack([self.images[m] for m in order])


def strip_suffix(name: str) -> str:
    base = os.path.basename(name)
    for suffix in SUFFIXES:
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


def modality_from_name(name: str) -> str | None:
    """Modality named by a file name ("flair", "t1", "t1ce", "t2", "seg"), or None.

    The last recognised token wins: "BraTS-GLI-00001-000-t1c.nii.gz" -> "t1ce".
    """
    tokens = [t for t in re.split(r"[^a-z0-9]+", strip_suffix(name).lower()) if t]
    for token in reversed(tokens):
        if token in TOKEN_TO_MODALITY:
            return TOKEN_TO_MODALITY[token]
    # names like "t1ce.nii" after a number glued on: "case01t1ce"
    for token in reversed(tokens):
        for alias in sorted(TOKEN_TO_MODALITY, key=len, reverse=True):
            if len(alias) > 2 and token.endswith(alias) and not token[: -len(alias)].isalpha():
                return TOKEN_TO_MODALITY[alias]
    return None


def convention_from_names(names: Iterable[str]) -> str:
    """BraTS 2023+ names (t2f/t1n/t1c/t2w) mean ET is written as 3, otherwise as 4."""
    for name in names:
        tokens = set(re.split(r"[^a-z0-9]+", strip_suffix(name).lower()))
        if tokens & BRATS2023_TOKENS:
            return "brats2023"
    return "brats2018"


def assign_modalities(names: Iterable[str], ignore_seg: bool = False) -> dict[str, str]:
    """Map each modality to one of ``names``.

    Raises InputError for a name that names no modality, a segmentation among the scans, a modality
    given twice, or a missing one.
    """
    found: dict[str, str] = {}
    for name in names:
        base = os.path.basename(str(name))
        modality = modality_from_name(base)
        if modality == "seg":
            if ignore_seg:
                continue
            raise InputError(
                f"{base}: looks like a segmentation, not an MRI scan; give the four scans "
                f"(FLAIR, T1, T1ce, T2) as input and the segmentation separately"
            )
        if modality is None:
            raise InputError(
                f"{base}: cannot tell which modality this is; expected a name ending in "
                f"flair/t1/t1ce/t2 (BraTS 2018-2021) or t2f/t1n/t1c/t2w (BraTS 2023+)"
            )
        if modality in found:
            raise InputError(
                f"{os.path.basename(str(found[modality]))} and {base} are both {modality.upper()}; "
                f"expected one file per modality"
            )
        found[modality] = name
    missing = [m for m in MODALITIES if m not in found]
    if missing:
        raise InputError(
            f"missing modality {', '.join(m.upper() for m in missing)}; found "
            f"{', '.join(f'{m.upper()}={os.path.basename(str(p))}' for m, p in found.items()) or 'none'}; "
            f"expected four files: FLAIR, T1, T1ce, T2"
        )
    return found


def case_files(folder: str | Path) -> dict[str, Path]:
    """The four scan files of a case folder, by modality; a segmentation file is ignored."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(SUFFIXES))
    if not files:
        raise InputError(f"{folder}: no .nii, .nii.gz or .npy files in this folder")
    return assign_modalities(files, ignore_seg=True)


def segmentation_file(folder: str | Path) -> Path | None:
    """The segmentation file of a case folder, if there is one."""
    for p in sorted(Path(folder).iterdir()):
        if p.name.lower().endswith(SUFFIXES) and modality_from_name(p.name) == "seg":
            return p
    return None


def read_volume(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header | None]:
    """Decode one file's bytes into a float32 array, its affine and header.

    A 4D file keeps its channels last: (X, Y, Z, C). A .npy file gets an identity affine.
    Raises InputError naming ``name`` for anything unreadable or not an image.
    """
    if not data:
        raise InputError(f"{name}: the file is empty; expected a NIfTI (.nii/.nii.gz) or .npy image")
    lower = name.lower()
    if lower.endswith(".npy"):
        return _read_npy(data, name), np.eye(4), None
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data, name)
    elif lower.endswith(".gz"):
        raise InputError(f"{name}: named .gz but not gzip-compressed; expected a .nii.gz file")
    return _read_nifti(data, name)


def read_file(path: str | Path) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header | None]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise InputError(f"{path.name}: {size / 1e9:.1f} GB is too large; expected at most {MAX_BYTES / 1e9:.0f} GB")
    return read_volume(path.read_bytes(), path.name)


def load_case(inputs: Iterable[str | Path], channel_order: Iterable[str] = MODALITIES) -> Case:
    """Load a case from a folder, four files in any order, or one 4-channel file.

    Args:
        inputs: one folder, four modality files, or one 4D NIfTI (MSD order FLAIR, T1, T1gd, T2)
            or stacked .npy file (C, X, Y, Z) whose channel order is ``channel_order``.
    """
    inputs = [Path(p) for p in inputs]
    if len(inputs) == 1 and inputs[0].is_dir():
        files = case_files(inputs[0])
        return load_files({str(p): p.read_bytes() for p in files.values()})
    for p in inputs:
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
        if p.is_dir():
            raise InputError(f"{p}: give either one case folder or the four scan files, not a mix")
    return load_files({str(p): _read_bytes(p) for p in inputs}, channel_order)


def load_files(files: Mapping[str, bytes], channel_order: Iterable[str] = MODALITIES) -> Case:
    """Load a case from file names and their bytes (what a browser upload gives).

    Four files are assigned to modalities by name; a single file must hold four channels.
    """
    names = list(files)
    if len(names) == 1:
        return _load_multichannel(names[0], files[names[0]], tuple(channel_order))
    by_modality = assign_modalities(names)
    images, sources = {}, {}
    affine = header = None
    first = None
    for modality in MODALITIES:
        name = by_modality[modality]
        array, aff, hdr = read_volume(files[name], os.path.basename(name))
        array = _as_3d(array, os.path.basename(name))
        if first is None:
            first, affine, header = os.path.basename(name), aff, hdr
        else:
            _check_same_grid(first, images[MODALITIES[0]].shape, affine, os.path.basename(name), array.shape, aff)
        _check_content(array, os.path.basename(name))
        images[modality] = array
        sources[modality] = os.path.basename(name)
    return Case(images, affine, header, sources, convention_from_names(names))


def save_labels(labels: np.ndarray, case: Case, path: str | Path) -> Path:
    """Write a label map (file values, uint8) on the case's grid with its affine and header geometry.

    The file appears only once complete, so a failure leaves nothing at ``path``.
    """
    path = Path(path)
    if labels.shape != case.shape:
        raise ValueError(f"label map shape {labels.shape} differs from the case's {case.shape}")
    image = labels_image(labels, case)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".nii.gz" if path.name.endswith(".gz") else ".nii")
    os.close(fd)
    try:
        nib.save(image, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def labels_image(labels: np.ndarray, case: Case) -> nib.Nifti1Image:
    """NIfTI image of a label map in the case's space, with private free-text fields cleared."""
    header = case.header.copy() if case.header is not None else nib.Nifti1Header()
    header = _clear_private(header)
    image = nib.Nifti1Image(labels.astype(np.uint8), case.affine, header=header)
    image.set_data_dtype(np.uint8)
    image.header.set_slope_inter(1, 0)
    if case.header is not None:
        image.set_qform(case.affine, int(case.header["qform_code"]) or 1)
        image.set_sform(case.affine, int(case.header["sform_code"]) or 1)
    return image


def labels_bytes(labels: np.ndarray, case: Case) -> bytes:
    """A gzip-compressed NIfTI of the label map, for downloads."""
    image = labels_image(labels, case)
    raw = image.to_bytes()
    return gzip.compress(raw, compresslevel=6)


def read_label_map(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A reference segmentation: integer values (X, Y, Z) and affine."""
    array, affine, _ = read_volume(data, name)
    array = _as_3d(array, name)
    if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
        raise InputError(f"{name}: a label map must hold whole numbers (0, 1, 2, 3 or 4)")
    return array.astype(np.int16), affine


def _clear_private(header: nib.Nifti1Header) -> nib.Nifti1Header:
    for key in PRIVATE_HEADER_FIELDS:
        if key in header:
            header[key] = b""
    return header


def _read_bytes(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise InputError(f"{path.name}: {size / 1e9:.1f} GB is too large; expected at most {MAX_BYTES / 1e9:.0f} GB")
    return path.read_bytes()


def _gunzip(data: bytes, name: str) -> bytes:
    decompressor = zlib.decompressobj(wbits=31)
    try:
        out = decompressor.decompress(data, MAX_BYTES + 1)
    except zlib.error as exc:
        raise InputError(f"{name}: corrupt gzip data ({exc}); expected a valid .nii.gz file") from None
    if len(out) > MAX_BYTES:
        raise InputError(f"{name}: decompresses to more than {MAX_BYTES / 1e9:.0f} GB; refused")
    if not decompressor.eof:
        raise InputError(f"{name}: the file is truncated (gzip stream ends early); download or export it again")
    return out


def _read_nifti(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    if len(data) < 348:
        raise InputError(f"{name}: too short to be a NIfTI image ({len(data)} bytes); expected a .nii or .nii.gz file")
    image = None
    for klass in (nib.Nifti1Image, nib.Nifti2Image):
        try:
            image = klass.from_bytes(data)
            break
        except Exception:  # nibabel raises several types for foreign bytes; we only need "not NIfTI"
            continue
    if image is None:
        raise InputError(f"{name}: not a NIfTI image (bad header); expected a .nii or .nii.gz file")
    header = image.header
    shape = tuple(int(s) for s in header.get_data_shape())
    dtype = header.get_data_dtype()
    if dtype.kind == "c":
        raise InputError(f"{name}: complex-valued data ({dtype}); expected a real-valued MRI magnitude image")
    if dtype.fields is not None or dtype.kind == "V":
        raise InputError(f"{name}: RGB/colour data; expected a grey-scale MRI image")
    n_voxels = int(np.prod(shape, dtype=np.int64)) if shape else 0
    if n_voxels == 0:
        raise InputError(f"{name}: the image has no voxels (shape {shape})")
    if n_voxels > MAX_VOXELS * 4:
        raise InputError(f"{name}: header claims shape {shape}, larger than any MRI scan this tool accepts")
    offset = int(header.get_data_offset())
    if len(data) < offset + n_voxels * dtype.itemsize:
        raise InputError(
            f"{name}: the file is truncated: header says {n_voxels * dtype.itemsize} bytes of image data "
            f"for shape {shape}, file holds {max(len(data) - offset, 0)}"
        )
    try:
        array = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as exc:  # a header nibabel accepts but cannot decode
        raise InputError(f"{name}: cannot read image data ({exc})") from None
    affine = image.affine
    if affine is None or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        raise InputError(f"{name}: the header's voxel-to-world matrix is invalid (singular or not finite)")
    return array, np.asarray(affine, dtype=np.float64), header


def _read_npy(data: bytes, name: str) -> np.ndarray:
    try:
        version = np.lib.format.read_magic(_io.BytesIO(data))
        stream = _io.BytesIO(data)
        np.lib.format.read_magic(stream)
        shape, _, dtype = (
            np.lib.format.read_array_header_1_0(stream) if version == (1, 0) else np.lib.format.read_array_header_2_0(stream)
        )
    except Exception:
        raise InputError(f"{name}: not a NumPy .npy array; expected a .npy file written by numpy.save") from None
    if np.dtype(dtype).hasobject:
        raise InputError(f"{name}: holds Python objects; expected a numeric array")
    if np.dtype(dtype).kind == "c":
        raise InputError(f"{name}: complex-valued data; expected a real-valued MRI image")
    if int(np.prod(shape, dtype=np.int64)) > MAX_VOXELS * 4:
        raise InputError(f"{name}: shape {shape} is larger than any MRI scan this tool accepts")
    try:
        array = np.load(_io.BytesIO(data), allow_pickle=False)
    except Exception as exc:
        raise InputError(f"{name}: cannot read array ({exc})") from None
    if array.dtype.kind not in "biuf":
        raise InputError(f"{name}: data type {array.dtype} is not numeric; expected a grey-scale image")
    if array.ndim == 4 and array.shape[0] in (4,) and array.shape[-1] != 4:
        array = np.moveaxis(array, 0, -1)  # stacked (C, X, Y, Z) -> channels last, as 4D NIfTI
    return array.astype(np.float32)


def _as_3d(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        extra = " (a 4-channel file must be given alone, as the only input)" if array.ndim == 4 and array.shape[3] == 4 else ""
        raise InputError(f"{name}: image is {array.ndim}D with shape {array.shape}; expected one 3D volume{extra}")
    if min(array.shape) < 2:
        raise InputError(f"{name}: image has shape {array.shape}; expected a 3D volume, not a single slice")
    return array


def _check_same_grid(first: str, first_shape, first_affine, name: str, shape, affine) -> None:
    """Refuse scans that are not voxel-aligned: segmenting them would mix different anatomy."""
    if tuple(shape) != tuple(first_shape):
        raise InputError(
            f"{name}: shape {tuple(shape)} differs from {first}'s {tuple(first_shape)}; "
            f"expected four co-registered scans on one grid"
        )
    if not np.allclose(affine, first_affine, atol=AFFINE_TOLERANCE):
        diff = float(np.abs(np.asarray(affine) - np.asarray(first_affine)).max())
        raise InputError(
            f"{name}: its voxel-to-world matrix differs from {first}'s by up to {diff:.3g} mm; "
            f"expected co-registered scans (resample them onto one grid first)"
        )


def _check_content(array: np.ndarray, name: str) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - finite.sum())
        raise InputError(f"{name}: {bad} voxels are NaN or infinite; expected finite intensities")
    lo, hi = float(array.min()), float(array.max())
    if lo == hi:
        raise InputError(f"{name}: every voxel has the value {lo:g}; expected an MRI scan with contrast")
    values = np.unique(array[:: max(1, array.shape[0] // 32)])
    if values.size <= 5 and set(values.tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}:
        raise InputError(
            f"{name}: holds only the values {sorted(int(v) for v in values)}, like a segmentation; "
            f"expected an MRI scan"
        )


def _load_multichannel(name: str, data: bytes, order: tuple[str, ...]) -> Case:
    base = os.path.basename(name)
    array, affine, header = read_volume(data, base)
    if array.ndim != 4 or array.shape[3] != 4:
        raise InputError(
            f"{base}: a single input must hold all four modalities as a 4-channel image; got shape "
            f"{array.shape}. Otherwise give four files (FLAIR, T1, T1ce, T2)"
        )
    if sorted(order) != sorted(MODALITIES):
        raise InputError(f"channel order {order} must name each of {MODALITIES} once")
    images = {}
    for index, modality in enumerate(order):
        channel = np.ascontiguousarray(array[..., index])
        _check_content(channel, f"{base} channel {index} ({modality})")
        images[modality] = channel
    if header is not None:
        header = header.copy()
        header.set_data_shape(array.shape[:3])
    return Case(images, affine, header, {m: f"{base}[{i}]" for i, m in enumerate(order)}, "brats2018")
