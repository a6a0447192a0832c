"""Reading and validating the four MRI modalities of a case.

Files -> a Case: which file is which (from its name: brainseg.naming), each scan's content, and the
four on one grid; each refusal says which file, what is wrong and what was expected. Decoding a file's
bytes: brainseg.decode; label map files: brainseg.labelmaps.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import nibabel as nib
import numpy as np

from brainseg import MODALITIES
from brainseg.archive import image_members, is_zip_name
from brainseg.decode import as_3d, check_voxel_grid, read_bytes, read_volume, voxel_spacing
from brainseg.errors import InputError
from brainseg.labels import CONVENTIONS
from brainseg.naming import assign_modalities, case_files, case_stems, convention_from_names, pick_scans

log = logging.getLogger(__name__)

AFFINE_TOLERANCE = 1e-3  # mm


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
        return load_files({str(p): read_bytes(p) for p in files.values()})
    if len(inputs) == 1 and is_zip_name(inputs[0].name) and inputs[0].is_file():
        return _load_zip(inputs[0], channel_order)
    for i, p in enumerate(inputs):
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
        if p.is_dir():
            raise InputError(f"{p}: give either one case folder or the four scan files, not a mix")
        _refuse_repeat(p, inputs[:i])
    return load_files({str(p): read_bytes(p) for p in inputs}, channel_order)


def _load_zip(path: Path, channel_order: Iterable[str]) -> Case:
    """The case in a .zip of its files: its four scans (a segmentation beside them ignored), or its one
    4-channel image."""
    members = {m.name: m for m in image_members(read_bytes(path), str(path))}
    chosen = list(members) if len(members) == 1 else list(pick_scans(list(members), str(path)).values())
    for name in chosen:
        if members[name].error:
            raise InputError(members[name].error)
    return load_files({f"{path}/{name}": members[name].data for name in chosen}, channel_order)


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
    scans = {m: read_scan(read_bytes(p), str(p)) for m, p in zip(channels, paths)}
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
    array = as_3d(array, base)
    _check_content(array, base)
    return Scan(base, array, affine, header)


NO_ORIENTATION = ("the header records no orientation (qform and sform codes both 0; in a NRRD, no space field), "
                  "only voxel sizes; read with the reader's default axes, which other viewers may not share, so "
                  "left/right and anterior/posterior labels are not known; the label map keeps the header, so it "
                  "overlays the scan in any viewer")


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


def onto_grid(values: np.ndarray, affine: np.ndarray, shape, target_affine: np.ndarray) -> np.ndarray | None:
    """``values`` moved onto the grid (``shape``, ``target_affine``) by axis permutations and flips alone,
    when that grid holds exactly the same voxels in another orientation (lossless); otherwise None."""
    moved, moved_affine = _oriented_as(values, affine, target_affine)
    if moved.shape != tuple(shape) or not np.allclose(moved_affine, target_affine, atol=AFFINE_TOLERANCE):
        return None
    return np.ascontiguousarray(moved)


def labels_onto_grid(values: np.ndarray, affine: np.ndarray, shape, target_affine: np.ndarray) -> np.ndarray | None:
    """A label map stored on part of a grid (``shape``, ``target_affine``), as 3D Slicer's .seg.nrrd keeps only
    its segments' extent, on the whole grid with background around it: when it is smaller than the grid and its
    voxels are the grid's voxels (in any axis order or direction) inside it, shifted by whole voxels; otherwise
    None, also for a map the grid's size (shifted, it would be another image's map) and for one without labels
    (more likely another image's map than an empty crop). Lossless: only background is added."""
    moved, moved_affine = _oriented_as(values, affine, target_affine)
    smaller = all(n <= m for n, m in zip(moved.shape, shape)) and moved.shape != tuple(shape)
    if not (smaller and moved.any()) or not np.allclose(moved_affine[:3, :3], target_affine[:3, :3], atol=AFFINE_TOLERANCE):
        return None
    start = np.round(np.linalg.solve(target_affine[:3, :3], moved_affine[:3, 3] - target_affine[:3, 3])).astype(int)
    if not np.allclose(target_affine[:3, :3] @ start + target_affine[:3, 3], moved_affine[:3, 3], atol=AFFINE_TOLERANCE):
        return None  # a shift by part of a voxel: the label map would have to be resampled
    if (start < 0).any() or (start + np.array(moved.shape) > np.array(shape)).any():
        return None  # reaching beyond the grid: not a part of it
    placed = np.zeros(tuple(shape), moved.dtype)
    placed[tuple(slice(a, a + n) for a, n in zip(start, moved.shape))] = moved
    return placed


def _oriented_as(values: np.ndarray, affine: np.ndarray, target_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values`` with their axes permuted and flipped into ``target_affine``'s orientation, and their affine so."""
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine),
                                                nib.orientations.io_orientation(target_affine))
    moved_affine = np.asarray(affine) @ nib.orientations.inv_ornt_aff(transform, values.shape)
    return nib.orientations.apply_orientation(values, transform), moved_affine


def on_grid_of(first: str, first_shape, first_affine, name: str, values: np.ndarray, affine: np.ndarray,
                expected: str, geometry: bool, part: bool = False) -> np.ndarray:
    """``values`` on the first image's grid: as they are, or reoriented when they hold the same voxels
    stored in another axis order or direction (lossless), or, for a label map that may cover part of the grid
    (``part``: 3D Slicer's segmentation), placed on it (``labels_onto_grid``); InputError (``check_same_grid``)
    otherwise."""
    if geometry and (values.shape != tuple(first_shape) or not np.allclose(affine, first_affine, atol=AFFINE_TOLERANCE)):
        moved = onto_grid(values, affine, first_shape, first_affine)
        if moved is not None:
            log.info("%s: reoriented onto %s's grid (same voxels, other axis order or directions)", name, first)
            return moved
        placed = labels_onto_grid(values, affine, first_shape, first_affine) if part else None
        if placed is not None:
            log.info("%s: covers part of %s's grid (as a 3D Slicer segmentation cropped to its extent); "
                     "background around it", name, first)
            return placed
    if part and geometry:  # Slicer crops every segmentation it saves: "its shape differs" alone does not help
        expected += ("; a 3D Slicer segmentation covering part of it is placed on it when its voxels are the grid's "
                     "shifted by whole voxels, inside it: in Slicer's Segmentations module, export it to a labelmap "
                     "with the case's scans as the reference volume, and save that")
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
