"""Label map files: one read and checked (a reference segmentation or a prediction), and label maps and
probabilities written on a case's grid, with the scan's geometry and without its private header text."""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np

from brainseg.decode import as_3d, read_bytes, read_volume, voxel_spacing
from brainseg.errors import InputError
from brainseg.files import atomic_write
from brainseg.io import Case, on_grid_of
from brainseg.labels import FILE_LABELS, NAME_REFERENCE_LABELS, READABLE, from_internal, guess_convention, to_internal
from brainseg.naming import is_brats2023_label_name, is_brats_ped_name, is_slicer_segmentation
from brainseg.slicer_segments import by_name, segmentation_bytes

PRIVATE_HEADER_FIELDS = ("descrip", "aux_file", "db_name", "intent_name")
# a label map brainseg writes names its label values in the header's description, so brainseg reads
# its own Decathlon-valued maps (1 edema, 3 ET) right instead of guessing BraTS 2023 from the 3
_LABELS_DESCRIP = "brainseg labels {}"


def save_labels(labels: np.ndarray, case: Case, path: str | Path, convention: str) -> Path:
    """Write internal labels 0-3 in ``convention``'s file values (uint8) on the case's grid, with its
    affine and header geometry; a path ending in .seg.nrrd gets a 3D Slicer segmentation of named, coloured
    segments on the same grid."""
    path = Path(path)
    if not is_slicer_segmentation(path):
        return _save_image(labels_image(labels, case, convention), path)
    _check_on_case_grid(labels, case)
    data = segmentation_bytes(labels, case.affine, convention)
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), ".seg.nrrd")


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
    _check_on_case_grid(labels, case)
    image = _image_on_case_grid(from_internal(labels, convention), case, np.uint8)
    image.header["descrip"] = _LABELS_DESCRIP.format(convention).encode()
    image.header.set_intent("label")
    return image


def _check_on_case_grid(labels: np.ndarray, case: Case) -> None:
    if labels.shape != case.shape:
        raise ValueError(f"label map shape {labels.shape} differs from the case's {case.shape}")


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
    declared: str | None = None  # the convention its header names (brainseg's own label maps, Slicer's segment names)
    declared_by: str = "header"  # "segments" where Slicer's segment names gave the values (slicer_segments.by_name)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return voxel_spacing(self.affine)

    @property
    def has_geometry(self) -> bool:
        """False for a .npy file: it has no voxel-to-world matrix, only a shape."""
        return not self.name.lower().endswith(".npy")

    def read_as(self, convention: str | None = None, described: str | None = None, by_name: bool = True,
                name_labels: str = NAME_REFERENCE_LABELS) -> tuple[str, str]:
        """The convention the file is read in and where it came from, the first of: the ``convention`` a
        user names ("given"), the one its header names ("header", brainseg's own maps; "segments", 3D Slicer's), the one its
        dataset describes (``described``: "dataset.json"), BraTS 2023+ for a BraTS 2023+ file name
        ("name"; 2024 post-treatment where it holds a 4), the one its values suggest ("values": BraTS
        2018-2021, or 2023+ when a map holds 3). ``by_name`` False skips the name: a prediction named
        for its case by another tool may hold any convention's values. ``name_labels``: where the user
        names the convention, for the message when the values cannot tell (InputError). A map read by its
        segments' names holds the values they gave, not the file's: a convention named for the file's is not
        applied to them."""
        if self.declared_by == "segments":
            return self.declared, "segments"
        for found, source in ((convention, "given"), (self.declared, self.declared_by), (described, "dataset.json")):
            if found is not None:
                return found, source
        if by_name and is_brats2023_label_name(self.name):
            if not (self.values == 4).any():
                return "brats2023", "name"
            if is_brats_ped_name(self.name):
                raise InputError(f"{self.name}: a BraTS-PED label map holding label 4: from 2024 on these mark four "
                                 f"tumour subregions (enhancing, non-enhancing, cyst, edema), which brainseg does not "
                                 f"read (named brats2024, its edema would be taken for resection cavity); expected "
                                 f"labels 0-3 as BraTS-PEDs 2023 gives them")
            return "brats2024", "name"
        return guess_convention(self.values, self.name, name_labels), "values"

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
        data = read_bytes(Path(source))
    array, affine, header = read_volume(data, name)
    slicer = is_slicer_segmentation(name)
    array, declared = as_3d(array, name, thin=slicer), _declared_convention(header)
    named = by_name(array, data, name) if slicer else None  # Slicer numbers segments in the order they were made
    if named is not None:
        array, declared = named
    labels = LabelMap(_label_values(array, name), affine, name, declared, "header" if named is None else "segments")
    if min(labels.values.shape) < 2 and not labels.values.any():  # a thin map is a Slicer segmentation's crop
        raise InputError(f"{name}: an empty 3D Slicer segmentation (no segment holds a voxel: Slicer saves it as a "
                         f"single voxel); expected the tumour's segments: paint them in Slicer's Segment Editor and "
                         f"save again")
    if case is not None:
        scans = next(iter(case.sources.values()), "the scans")
        values = on_grid_of(scans, case.shape, case.affine, name, labels.values, affine,
                             "the segmentation of this case, on the scans' grid", labels.has_geometry and case.has_geometry,
                             part=slicer)
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
