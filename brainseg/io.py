"""Reading and validating the four MRI modalities of a case; writing label maps.

Files -> arrays: every check that can refuse a user's file for its content lives here (which file is
which, from its name: brainseg.naming), and each refusal says which file, what is wrong and what was
expected.
"""
from __future__ import annotations

import gzip
import io as _io
import logging
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple

import nibabel as nib
import numpy as np

from brainseg import MODALITIES
from brainseg.errors import InputError
from brainseg.files import atomic_write
from brainseg.labels import CONVENTIONS, FILE_LABELS, READABLE, from_internal, guess_convention, to_internal
from brainseg.naming import assign_modalities, case_files, case_stems, convention_from_names, is_brats2023_label_name

log = logging.getLogger(__name__)

MAX_VOXELS = 512 * 512 * 512  # one modality; larger headers are refused before allocating
MAX_BYTES = 2 * 1024**3  # decompressed size of one file
AFFINE_TOLERANCE = 1e-3  # mm
# voxel sides an MRI scan can have (7 T and 1024-matrix scans reach 0.18 mm, thick slices with gaps 13 mm):
# outside these the header's units or scaling are wrong (a file written in metres holds 0.001)
SPACING_RANGE_MM = (0.05, 30.0)
# a head fits in 300 mm; wider, the header's scaling is wrong, and the 2 mm model grid would hold billions of voxels
MAX_FIELD_OF_VIEW_MM = 600.0
PRIVATE_HEADER_FIELDS = ("descrip", "aux_file", "db_name", "intent_name")
_NIFTI1_HEADER_BYTES, _NIFTI2_HEADER_BYTES = 348, 540
_GZIP_SLACK = 1024**2  # bytes a .nii.gz may inflate to beyond what its header describes
# a label map brainseg writes names its label values in the header's description, so brainseg reads
# its own Decathlon-valued maps (1 edema, 3 ET) right instead of guessing BraTS 2023 from the 3
_LABELS_DESCRIP = "brainseg labels {}"

FOUR_CHANNEL_HINT = "a 4-channel image is read as a whole case only when it is the only input"


# A .npy array has no voxel-to-world matrix: it is taken as 1 mm voxels in BraTS files' voxel order (LPS,
# the orientation brainseg's models train in), so an array saved from a BraTS NIfTI is neither flipped
# for the network nor shown mirrored
NPY_AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Case:
    """Four co-registered modalities on one grid.

    Built from arrays in memory (a notebook's), it checks what the file readers check about their
    shape: modality names, 3D arrays of one shape, finite intensities, a usable affine and a known
    label convention; InputError names what is wrong. Segmenting needs all four modalities.

    Attributes:
        images: modality -> array (X, Y, Z), in the file's own orientation: float32, or the file's
            own 8- or 16-bit integers when it stores them unscaled.
        affine: 4x4 voxel-to-world (RAS+, mm) matrix shared by all modalities.
        header: header of the first modality (None for .npy input), used to write outputs.
        sources: modality -> file name it came from.
        convention: label convention for outputs (one of ``labels.CONVENTIONS``); from the file names
            unless the caller chooses.
    """

    images: dict[str, np.ndarray]
    affine: np.ndarray
    header: nib.Nifti1Header | None = None
    sources: dict[str, str] = field(default_factory=dict)
    convention: str = "brats2018"
    has_geometry: bool = True  # False for .npy scans: orientation and voxel size assumed (NPY_AFFINE), not known
    assumed_on_grid: tuple[str, ...] = ()  # .npy files beside NIfTI scans: taken to lie on their grid as stored

    def __post_init__(self) -> None:
        # fewer than four is a grid to write a label map on (save_labels); segmenting needs all four
        if not isinstance(self.images, Mapping) or not self.images or not set(self.images) <= set(MODALITIES):
            given = sorted(self.images) if isinstance(self.images, Mapping) else type(self.images).__name__
            raise InputError(f"images: got {given}; expected arrays named {', '.join(MODALITIES)}")
        shapes = {m: np.shape(a) for m, a in self.images.items()}
        for modality, shape in shapes.items():
            if len(shape) != 3:
                raise InputError(f"{modality}: an array of shape {shape}; expected a 3D volume (X, Y, Z)")
        if len(set(shapes.values())) > 1:
            raise InputError(f"the modalities' shapes differ ({', '.join(f'{m} {s}' for m, s in shapes.items())}); "
                             f"expected four co-registered scans on one grid")
        for modality, image in self.images.items():
            if np.asarray(image).dtype.kind not in "biuf":
                raise InputError(f"{modality}: an array of type {np.asarray(image).dtype}; expected real-valued intensities")
            if not np.isfinite(image).all():
                raise InputError(f"{modality}: {int((~np.isfinite(image)).sum())} voxels are NaN or infinite; "
                                 f"expected finite intensities")
        affine = np.asarray(self.affine, dtype=float)
        usable = affine.shape == (4, 4) and np.isfinite(affine).all()
        if usable:  # voxel sizes first: a zero or metre-scaled side says more than "singular"
            check_voxel_grid(voxel_spacing(affine), next(iter(shapes.values())), next(iter(self.sources.values()), "affine"))
        if not usable or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
            raise InputError(f"affine: got {np.round(affine, 3).tolist()}; expected a 4x4 "
                             f"voxel-to-world matrix (mm) with a non-singular 3x3 part")
        if self.convention not in CONVENTIONS:
            raise InputError(f"convention: got {self.convention!r}; expected one of {', '.join(CONVENTIONS)}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return next(iter(self.images.values())).shape

    @property
    def spacing(self) -> tuple[float, float, float]:
        return voxel_spacing(self.affine)

    def stacked(self, order: Iterable[str] = MODALITIES) -> np.ndarray:
        """(C, X, Y, Z) float32 in the given modality order."""
        return np.stack([self.images[m] for m in order]).astype(np.float32, copy=False)


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
    ``NPY_AFFINE``.
    Raises InputError naming ``name`` for anything unreadable or not an image.
    """
    if not data:
        raise InputError(f"{name}: the file is empty; expected a NIfTI (.nii/.nii.gz) or .npy image")
    lower = name.lower()
    if lower.endswith(".npy"):
        return _read_npy(data, name), NPY_AFFINE.copy(), None
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data, name)
    elif lower.endswith(".gz"):  # an uncompressed NIfTI misnamed .nii.gz, a common export slip, reads as it is
        try:
            return _read_nifti(data, name)
        except InputError:
            raise InputError(f"{name}: named .gz but not gzip-compressed, nor an uncompressed NIfTI image; "
                             f"expected a .nii.gz or .nii file") from None
    return _read_nifti(data, name)


def load_case(inputs: str | Path | Iterable[str | Path], channel_order: Iterable[str] = MODALITIES) -> Case:
    """Load a case from a folder, four files in any order, or one 4-channel file.

    Args:
        inputs: one folder, four modality files, or one 4D NIfTI (MSD order FLAIR, T1, T1gd, T2)
            or stacked .npy file (C, X, Y, Z) whose channel order is ``channel_order``.
    """
    if isinstance(inputs, (str, os.PathLike)):  # one folder or file given on its own
        inputs = [inputs]
    inputs = [Path(p) for p in inputs]
    if len(inputs) == 1 and inputs[0].is_dir():
        files = case_files(inputs[0])
        return load_files({str(p): _read_bytes(p) for p in files.values()})
    for i, p in enumerate(inputs):
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
        if p.is_dir():
            raise InputError(f"{p}: give either one case folder or the four scan files, not a mix")
        _refuse_repeat(p, inputs[:i])
    return load_files({str(p): _read_bytes(p) for p in inputs}, channel_order)


def _refuse_repeat(path: Path, earlier: list[Path]) -> None:
    """InputError when ``path`` is one of the ``earlier`` files (under the same or another name); missing
    files are left to the reader."""
    if path.exists() and any(q.exists() and path.samefile(q) for q in earlier):
        raise InputError(f"{path}: given twice; expected four different files: FLAIR, T1, T1ce, T2")


def load_files(files: Mapping[str, bytes], channel_order: Iterable[str] = MODALITIES) -> Case:
    """Load a case from file names and their bytes (what a browser upload gives).

    Four files are assigned to modalities by name; a single file must hold four channels.
    """
    names = list(files)
    if len(names) == 1:
        return _load_multichannel(names[0], files[names[0]], tuple(channel_order))
    by_modality = assign_modalities(names)
    scans = {m: read_scan(files[by_modality[m]], by_modality[m]) for m in MODALITIES}
    return assemble_case(scans, convention_from_names(names))


def load_channel_files(paths: Iterable[str | Path], channels: Iterable[str]) -> Case:
    """A case from one file per channel whose modalities are given, not read from the names
    (nnU-Net's CASE_0000.nii.gz ... CASE_0003.nii.gz)."""
    paths, channels = [Path(p) for p in paths], tuple(channels)
    if len(paths) != len(channels) or sorted(channels) != sorted(MODALITIES):
        raise InputError(f"{len(paths)} files for channels {channels}; expected one file for each of {MODALITIES}")
    for i, p in enumerate(paths):
        _refuse_repeat(p, paths[:i])
    scans = {m: read_scan(_read_bytes(p), str(p)) for m, p in zip(channels, paths)}
    return assemble_case(scans)


@dataclass
class Scan:
    """One checked 3D scan, before it is given a modality."""

    name: str
    array: np.ndarray  # (X, Y, Z): float32, or the file's unscaled 8- or 16-bit integers
    affine: np.ndarray
    header: nib.Nifti1Header | None

    @property
    def spacing(self) -> tuple[float, float, float]:
        return voxel_spacing(self.affine)


def read_scan(data: bytes, name: str) -> Scan:
    """Decode one file as a 3D MRI scan; InputError naming the file if it is not one."""
    base = os.path.basename(name)
    array, affine, header = read_volume(data, base)
    array = _as_3d(array, base)
    _check_content(array, base)
    return Scan(base, array, affine, header)


NO_ORIENTATION = ("the header records no orientation (qform and sform codes both 0), only voxel sizes; read with "
                  "nibabel's default axes, which other viewers may not share, so left/right and anterior/posterior "
                  "labels are not known; the label map keeps the header, so it overlays the scan in any viewer")


def orientation_recorded(header) -> bool:
    """False for a NIfTI header whose qform and sform codes are both 0 (some exporters write them); True
    otherwise, and for a .npy file's None, whose missing geometry is said on its own."""
    return header is None or int(header["qform_code"]) > 0 or int(header["sform_code"]) > 0


def assemble_case(scans: Mapping[str, Scan], convention: str | None = None) -> Case:
    """A case from one scan per modality (a user may have assigned them by hand).

    Raises InputError for a missing modality, scans not on one grid, or one image given as two modalities.
    """
    missing = [m for m in MODALITIES if m not in scans]
    if missing:
        raise InputError(
            f"missing modality {', '.join(m.upper() for m in missing)}; expected four scans: FLAIR, T1, T1ce, T2"
        )
    # the grid comes from the first scan that has one: a .npy beside NIfTI files takes theirs, not NPY_AFFINE
    first_modality = next((m for m in MODALITIES if scans[m].header is not None), MODALITIES[0])
    first = scans[first_modality]
    if first.header is None:
        log.warning("no scan carries a voxel-to-world matrix (.npy): taken as 1 mm voxels in BraTS order (LPS), so "
                    "volumes in mL and the written label map's position are assumed, not known")
    assumed = [scans[m].name for m in MODALITIES if first.header is not None and scans[m].header is None]
    if assumed:
        log.warning("%s: no voxel-to-world matrix (.npy), taken to lie on %s's grid as stored; a flipped or transposed "
                    "array would be segmented against the wrong anatomy", ", ".join(assumed), first.name)
    arrays = {}
    for modality in MODALITIES:
        scan = scans[modality]
        geometry = first.header is not None and scan.header is not None
        arrays[modality] = on_grid_of(first.name, first.array.shape, first.affine, scan.name, scan.array, scan.affine,
                                       "four co-registered scans on one grid", geometry)
    sample = (slice(None, None, 7),) * 3  # different scans differ here already: the full comparison is rare
    for i, a in enumerate(MODALITIES):  # a copy under another modality's name: the network would see one contrast twice
        for b in MODALITIES[i + 1:]:
            if np.array_equal(arrays[a][sample], arrays[b][sample]) and np.array_equal(arrays[a], arrays[b]):
                raise InputError(f"{scans[a].name} ({a.upper()}) and {scans[b].name} ({b.upper()}) hold the same image; "
                                 f"expected four different scans: FLAIR, T1, T1ce, T2")
    unoriented = [scans[m].name for m in MODALITIES if not orientation_recorded(scans[m].header)]
    if unoriented:
        log.warning("%s: %s", ", ".join(unoriented), NO_ORIENTATION)
    stems = case_stems(scans[m].name for m in MODALITIES)
    if len(stems) > 1:
        log.warning("the scans' file names name %d cases (%s): check they are one patient's scans", len(stems), ", ".join(stems))
    if convention is None:
        convention = convention_from_names(scans[m].name for m in MODALITIES)
    return Case(
        arrays,
        first.affine,
        first.header,
        {m: scans[m].name for m in MODALITIES},
        convention,
        first.header is not None,
        tuple(assumed),
    )


def save_labels(labels: np.ndarray, case: Case, path: str | Path, convention: str) -> Path:
    """Write internal labels 0-3 in ``convention``'s file values (uint8) on the case's grid, with its
    affine and header geometry."""
    return _save_image(labels_image(labels, case, convention), Path(path))


def save_probabilities(probabilities: np.ndarray, case: Case, path: str | Path) -> Path:
    """Write (K, X, Y, Z) probabilities as one 4D float32 NIfTI (X, Y, Z, K) on the case's grid."""
    return _save_image(probabilities_image(probabilities, case), Path(path))


def probabilities_bytes(probabilities: np.ndarray, case: Case) -> bytes:
    """A gzip-compressed 4D NIfTI of the probabilities, for downloads."""
    return _gzip_image(probabilities_image(probabilities, case))


def probabilities_image(probabilities: np.ndarray, case: Case) -> nib.Nifti1Image:
    """(K, X, Y, Z) sigmoid (K = 3) or softmax (K = 4) probabilities as a 4D float32 image.

    The channel names go into the header's description (for example "probabilities WT,TC,ET"), so a
    reader knows which volume is which; viewers show the K volumes as components or time points.
    """
    from brainseg.labels import PROBABILITY_CHANNELS

    channels = PROBABILITY_CHANNELS.get(probabilities.shape[0])
    if channels is None or probabilities.shape[1:] != case.shape:
        raise ValueError(f"probabilities shape {probabilities.shape}: expected 3 or 4 channels on the case's {case.shape} grid")
    image = _image_on_case_grid(np.moveaxis(probabilities.astype(np.float32), 0, -1), case, np.float32)
    image.header["descrip"] = ("probabilities " + ",".join(channels)).encode()
    image.header["intent_code"] = 1001  # NIFTI_INTENT_ESTIMATE: each voxel holds an estimate
    return image


def _save_image(image: nib.Nifti1Image, path: Path) -> Path:
    """The file appears only once complete, so a failure leaves nothing at ``path``."""
    return atomic_write(path, lambda tmp: nib.save(image, tmp), ".nii.gz" if path.name.endswith(".gz") else ".nii")


def labels_image(labels: np.ndarray, case: Case, convention: str) -> nib.Nifti1Image:
    """NIfTI image of internal labels written in ``convention``'s values, in the case's space, with
    private free-text fields cleared and the convention named in the description."""
    if labels.shape != case.shape:
        raise ValueError(f"label map shape {labels.shape} differs from the case's {case.shape}")
    image = _image_on_case_grid(from_internal(labels, convention), case, np.uint8)
    image.header["descrip"] = _LABELS_DESCRIP.format(convention).encode()
    image.header.set_intent("label")
    return image


def _image_on_case_grid(array: np.ndarray, case: Case, dtype) -> nib.Nifti1Image:
    """An image in the case's space, with private free-text fields cleared.

    The input header's qform, sform, codes and pixdim are kept as they are (the image's affine is the
    header's own), so the result overlays the scan in any viewer, whichever matrix it reads.
    """
    header = case.header.copy() if case.header is not None else nib.Nifti1Header()
    header = _clear_private(header)
    klass = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image  # keeps float64 matrices
    image = klass(array.astype(dtype), case.affine, header=header)
    if case.header is None:  # both matrices, as scanners' files carry: some readers look only at the qform
        image.set_qform(case.affine, code=2)
        image.set_sform(case.affine, code=2)
    image.set_data_dtype(dtype)
    image.header.set_slope_inter(1, 0)
    # the scan's display window and statistical intent would mislead a viewer about these values
    image.header["cal_min"] = image.header["cal_max"] = 0
    image.header.set_intent("none")
    return image


def labels_bytes(labels: np.ndarray, case: Case, convention: str) -> bytes:
    """A gzip-compressed NIfTI of internal labels written in ``convention``, for downloads."""
    return _gzip_image(labels_image(labels, case, convention))


def _gzip_image(image: nib.Nifti1Image) -> bytes:
    return gzip.compress(image.to_bytes(), compresslevel=6)


class LabelMap(NamedTuple):
    """A checked label map as its file holds it (a reference segmentation or a prediction)."""

    values: np.ndarray  # uint8 (X, Y, Z), file values: each one of labels.FILE_LABELS
    affine: np.ndarray
    name: str  # how messages name the file
    declared: str | None = None  # the convention the file's header names (brainseg's own label maps)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return voxel_spacing(self.affine)

    @property
    def has_geometry(self) -> bool:
        """False for a .npy file: it has no voxel-to-world matrix, only a shape."""
        return not self.name.lower().endswith(".npy")

    def read_as(self, convention: str | None = None, described: str | None = None, by_name: bool = True) -> tuple[str, str]:
        """The convention the file is read in and where it came from, the first of: the ``convention`` a
        user names ("given"), the one its header names ("header", brainseg's own maps), the one its
        dataset describes (``described``: "dataset.json"), BraTS 2023+ for a BraTS 2023+ file name
        ("name"; 2024 post-treatment where it holds a 4), the one its values suggest ("values": BraTS
        2018-2021, or 2023+ when a map holds 3). ``by_name`` False skips the name: a prediction named
        for its case by another tool may hold any convention's values."""
        named = None
        if by_name and is_brats2023_label_name(self.name):
            named = "brats2024" if (self.values == 4).any() else "brats2023"
        for found, source in ((convention, "given"), (self.declared, "header"), (described, "dataset.json"), (named, "name")):
            if found is not None:
                return found, source
        return guess_convention(self.values, self.name), "values"

    def internal(self, convention: str | None = None, described: str | None = None) -> tuple[np.ndarray, str]:
        """Internal labels 0-3 (uint8) and the convention they were read in (see ``read_as``)."""
        convention = self.read_as(convention, described)[0]
        return to_internal(self.values, convention, self.name), convention


def read_label_map(source: bytes | str | Path, name: str | None = None, case: Case | None = None) -> LabelMap:
    """Read and check a label map: the one reader for the app, ``brainseg evaluate`` and training.

    Args:
        source: the file's bytes (``name`` then required) or its path.
        name: how messages name the file; default: the path as given.
        case: when given, the label map must lie on this case's grid (a .npy file: its shape).
    Raises InputError naming the file for an unreadable or non-3D image, a value that is not a BraTS
    label (whole numbers 0-4), or another grid than the case's.
    """
    if isinstance(source, (bytes, bytearray)):
        if name is None:
            raise ValueError("read_label_map: a name is needed for messages about bytes")
        data = bytes(source)
    else:
        name = str(source) if name is None else name
        data = _read_bytes(Path(source))
    array, affine, header = read_volume(data, name)
    labels = LabelMap(_label_values(_as_3d(array, name), name), affine, name, _declared_convention(header))
    if case is not None:
        scans = next(iter(case.sources.values()), "the scans")
        values = on_grid_of(scans, case.shape, case.affine, name, labels.values, affine,
                             "the segmentation of this case, on the scans' grid", labels.has_geometry and case.has_geometry)
        labels = labels._replace(values=values, affine=case.affine) if values is not labels.values else labels
    return labels


def _declared_convention(header: nib.Nifti1Header | None) -> str | None:
    """The label convention a brainseg-written header names, or None."""
    if header is None or "descrip" not in header:
        return None
    text = header["descrip"].item().decode("latin-1").strip()
    for convention in READABLE:
        if text == _LABELS_DESCRIP.format(convention):
            return convention
    return None


def _label_values(array: np.ndarray, name: str) -> np.ndarray:
    """A label map's values as uint8, checked on the values read, before the cast (so 65540 cannot wrap to 4)."""
    whole = np.isfinite(array)
    whole[whole] = array[whole] == np.round(array[whole])
    if not whole.all():
        example = float(array[~whole].flat[0])
        raise InputError(
            f"{name}: {int(whole.size - whole.sum())} voxels are not whole numbers (e.g. {example:g}); "
            f"a label map must hold whole numbers {', '.join(map(str, FILE_LABELS))}"
        )
    foreign = ~np.isin(array, FILE_LABELS)
    if foreign.any():
        bad = [int(v) for v in np.unique(array[foreign])[:5]]
        raise InputError(f"{name}: unexpected label values {bad}; BraTS label maps hold only {list(FILE_LABELS)}")
    return array.astype(np.uint8)


def _clear_private(header: nib.Nifti1Header) -> nib.Nifti1Header:
    """Blank the free-text fields and drop header extensions (DICOM tags, AFNI history) in place."""
    for key in PRIVATE_HEADER_FIELDS:
        if key in header:
            header[key] = b""
    if hasattr(header, "extensions"):
        header.extensions.clear()
    return header


def _read_bytes(path: Path) -> bytes:
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
    """NIfTI-1 or NIfTI-2, from the header size the file starts with (in either byte order)."""
    if len(data) >= 4:
        for byteorder in ("little", "big"):
            size = int.from_bytes(data[:4], byteorder, signed=True)
            if size == _NIFTI1_HEADER_BYTES:
                return nib.Nifti1Image
            if size == _NIFTI2_HEADER_BYTES:
                return nib.Nifti2Image
    raise InputError(f"{name}: not a NIfTI image (bad header); expected a .nii or .nii.gz file")


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


def _as_3d(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        extra = f" ({FOUR_CHANNEL_HINT})" if array.ndim == 4 and array.shape[3] == 4 else ""
        raise InputError(f"{name}: image is {array.ndim}D with shape {array.shape}; expected one 3D volume{extra}")
    if min(array.shape) == 0:
        raise InputError(f"{name}: image has shape {array.shape}, no voxels; expected a 3D volume")
    if min(array.shape) < 2:
        raise InputError(f"{name}: image has shape {array.shape}; expected a 3D volume, not a single slice")
    return array


def onto_grid(values: np.ndarray, affine: np.ndarray, shape, target_affine: np.ndarray) -> np.ndarray | None:
    """``values`` moved onto the grid (``shape``, ``target_affine``) by axis permutations and flips alone,
    when that grid holds exactly the same voxels in another orientation (lossless); otherwise None."""
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine),
                                                nib.orientations.io_orientation(target_affine))
    moved_affine = np.asarray(affine) @ nib.orientations.inv_ornt_aff(transform, values.shape)
    moved = nib.orientations.apply_orientation(values, transform)
    if moved.shape != tuple(shape) or not np.allclose(moved_affine, target_affine, atol=AFFINE_TOLERANCE):
        return None
    return np.ascontiguousarray(moved)


def on_grid_of(first: str, first_shape, first_affine, name: str, values: np.ndarray, affine: np.ndarray,
                expected: str, geometry: bool) -> np.ndarray:
    """``values`` on the first image's grid: as they are, or reoriented when they hold the same voxels
    stored in another axis order or direction (lossless); InputError (``check_same_grid``) otherwise."""
    if geometry and (values.shape != tuple(first_shape) or not np.allclose(affine, first_affine, atol=AFFINE_TOLERANCE)):
        moved = onto_grid(values, affine, first_shape, first_affine)
        if moved is not None:
            log.info("%s: reoriented onto %s's grid (same voxels, other axis order or directions)", name, first)
            return moved
    check_same_grid(first, first_shape, first_affine, name, values.shape, affine, expected, geometry)
    return values


def check_same_grid(
    first: str, first_shape, first_affine, name: str, shape, affine,
    expected: str = "four co-registered scans on one grid", geometry: bool = True,
) -> None:
    """Refuse images that are not voxel-aligned: stacking or comparing them would mix different anatomy.

    ``expected`` says what ``name`` should have been; ``geometry`` False compares shapes only (for a
    .npy file, which has no voxel-to-world matrix).
    """
    if tuple(shape) != tuple(first_shape):
        raise InputError(f"{name}: shape {tuple(shape)} differs from {first}'s {tuple(first_shape)}; expected {expected}")
    if geometry and not np.allclose(affine, first_affine, atol=AFFINE_TOLERANCE):
        diff = float(np.abs(np.asarray(affine) - np.asarray(first_affine)).max())
        raise InputError(
            f"{name}: its voxel-to-world matrix differs from {first}'s by up to {diff:.3g} mm; "
            f"expected {expected} (resample it first)"
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
    if header is not None:
        header = header.copy()
        header.set_data_shape(array.shape[:3])
    scans = {}
    for index, modality in enumerate(order):
        channel = np.ascontiguousarray(array[..., index])
        _check_content(channel, f"{base} channel {index} ({modality})")
        scans[modality] = Scan(f"{base}[{index}]", channel, affine, header)
    # the four-file path's checks too: two channels holding one image, no orientation recorded
    return assemble_case(scans, "brats2018")
