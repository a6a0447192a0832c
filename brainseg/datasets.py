"""Where the cases of a data folder are: BraTS case folders, or the layout of the Medical Segmentation
Decathlon and nnU-Net (``imagesTr``/``labelsTr``/``imagesTs`` beside a ``dataset.json``).

In that layout a case is one 4-channel file (``BRATS_001.nii.gz``, Decathlon) or one 3D file per channel
(``BRATS_001_0000.nii.gz`` ... ``_0003``, nnU-Net), and its label map is ``labelsTr/BRATS_001.nii.gz``.
Channel order and label values are read from ``dataset.json``: the Decathlon's Task01 writes edema as
1 and enhancing tumour as 3, which guessing from the values would take for BraTS 2023.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib

from brainseg import MODALITIES
from brainseg.errors import InputError
from brainseg.io import Case, load_case, load_channel_files
from brainseg.labels import CONVENTIONS, ED, ET, LABEL_NAMES, NCR, READ_ONLY
from brainseg.naming import NIFTI_SUFFIXES, case_files, is_hidden, strip_suffix

log = logging.getLogger(__name__)

DESCRIPTION = "dataset.json"
_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")  # nnU-Net: CASE_0000.nii.gz
# BraTS 2024 post-treatment: the convention its tumour labels follow, and the resection cavity's value
POST_TREATMENT = "brats2024"
CAVITY_FOLLOWS, (CAVITY,) = READ_ONLY[POST_TREATMENT]


@dataclass(frozen=True)
class CaseSource:
    """Where one case's files are, and how to read them.

    Attributes:
        name: the case id (folder name, or file name without suffix and channel number).
        scans: one case folder, one 4-channel file, or one file per channel in ``channels`` order.
        channels: the modality of each channel (of a 4-channel file) or file.
        segmentation: the case's label map, when it has one.
        label_convention: the label values its dataset describes (``labels.READABLE``); None: not described.
        problem: why the case cannot be read (a missing channel file); raised when it is loaded, so one
            bad case costs only itself in a cohort.
    """

    name: str
    scans: tuple[Path, ...]
    channels: tuple[str, ...] = MODALITIES
    segmentation: Path | None = None
    label_convention: str | None = None
    problem: str | None = None

    def load(self) -> Case:
        if self.problem is not None:
            raise InputError(self.problem)
        if len(self.scans) == 1:
            return load_case(self.scans, self.channels)
        return load_channel_files(self.scans, self.channels)


@dataclass(frozen=True)
class Description:
    """What a ``dataset.json`` says about its cases; ``found`` is False when there is none."""

    channels: tuple[str, ...] = MODALITIES
    label_convention: str | None = None
    found: bool = False


def is_dataset(root: Path) -> bool:
    """A Decathlon / nnU-Net dataset folder: it holds ``imagesTr``."""
    return (root / "imagesTr").is_dir()


def dataset_of(folder: Path) -> Path | None:
    """The dataset folder that ``folder`` (an images or labels folder) lies in, or None."""
    parent = folder.absolute().parent  # not resolved: a linked imagesTs keeps the dataset it was linked into
    return parent if is_dataset(parent) else None


def is_images_folder(folder: Path) -> bool:
    """A folder of image files that are cases (not a case folder, nor a folder of case folders): one in a
    dataset folder, or one named like ``imagesTs``. Its subfolders (an output folder inside) do not count."""
    if dataset_of(folder) is None and not folder.name.lower().startswith("images"):
        return False
    if not any(p.is_file() and not is_hidden(p.name) and p.name.lower().endswith(NIFTI_SUFFIXES) for p in folder.iterdir()):
        return False
    try:
        case_files(folder)  # four scans named by modality: a case folder that happens to be called "images"
    except InputError:
        return True
    return False


def describe(root: Path, channels: bool = True) -> Description:
    """What ``root/dataset.json`` says: channel order (when ``channels``) and label values; the
    Decathlon's channel order and no label values when there is no such file.

    Raises InputError naming the file when it cannot be read or its channels or labels are malformed.
    """
    path = root / DESCRIPTION
    if not path.is_file():
        return Description()
    try:
        text = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON file ({exc}); expected the dataset's description") from None
    if not isinstance(text, dict):
        raise InputError(f"{path}: holds {type(text).__name__}; expected a JSON object describing the dataset")
    order = _channels(text, path) if channels else MODALITIES
    return Description(order, _label_convention(text.get("labels"), path), found=True)


def description_of(folder: Path, channels: bool = True) -> Description:
    """What the dataset.json of the dataset ``folder`` (an images or labels folder) lies in says;
    nothing (``Description()``) outside a dataset."""
    root = dataset_of(folder)
    return describe(root, channels) if root is not None else Description()


def label_convention_of(folder: Path) -> str | None:
    """The label values the dataset.json of the dataset ``folder`` lies in names, or None."""
    return description_of(folder, channels=False).label_convention


_CHANNEL_WORDS = "FLAIR (T2-FLAIR, T2f), T1 (T1w, T1n), T1ce (T1gd, T1c, T1-CE, T1post) and T2 (T2w)"


def _channel_modality(name: str) -> str | None:
    text = re.sub(r"[^a-z0-9]", "", name.lower())
    if "flair" in text or text == "t2f":
        return "flair"
    if text.startswith("t1"):
        rest = text[2:].removeprefix("w")
        if rest in ("", "n", "native", "pre"):
            return "t1"
        if rest in ("ce", "c", "gd", "post", "contrast", "cegd", "gdce"):
            return "t1ce"
    if text in ("t2", "t2w"):
        return "t2"
    return None


def _channels(text: dict, path: Path) -> tuple[str, ...]:
    # Decathlon and nnU-Net v1: "modality"; nnU-Net v2: "channel_names"; both {"0": "FLAIR", "1": "T1w", ...}
    names = text.get("channel_names", text.get("modality"))
    if names is None:
        return MODALITIES
    expected = [str(k) for k in range(len(MODALITIES))]
    if not isinstance(names, dict) or sorted(names) != expected:
        raise InputError(f"{path}: channels {names!r}; expected four numbered names, "
                         f"{{\"0\": ..., \"1\": ..., \"2\": ..., \"3\": ...}}")
    channels = []
    for key in expected:
        modality = _channel_modality(str(names[key]))
        if modality is None or modality in channels:
            problem = "names no MRI modality brainseg reads" if modality is None else f"is {modality.upper()} a second time"
            raise InputError(f"{path}: channel {key} {names[key]!r} {problem}; expected one each of {_CHANNEL_WORDS}")
        channels.append(modality)
    return tuple(channels)


_ROLE_WORDS = (  # checked in order: "non-enhancing" before "enhancing"; BraTS 2024 names NETC, SNFH, ET, RC
    (NCR, ("non-enhancing", "non enhancing", "nonenhancing", "necro", "ncr", "net", "netc")),
    (ET, ("enhancing", "et")),
    (ED, ("edema", "oedema", "ed", "snfh")),
    (CAVITY, ("resection", "cavity", "rc")),
)


def _role(name: str) -> int | None:
    text = name.lower().replace("_", " ")
    words = set(re.split(r"[^a-z]+", text))
    for role, keys in _ROLE_WORDS:
        if any((k in words) if len(k) <= 3 else (k in text) for k in keys):
            return role
    return None


def _whole(value, path: Path, key) -> int:
    """A label value from dataset.json: a whole number (JSON true is no label value)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
        raise InputError(f"{path}: label {key!r} has value {value!r}; expected a whole number or a list of them")
    return int(value)


def _label_convention(labels, path: Path) -> str | None:
    """The convention whose values the dataset's label names give NCR, edema and ET, or None (logged)."""
    if not isinstance(labels, dict):
        return None
    found: dict[int, int] = {}
    regions: dict[str, set[int]] = {}
    for key, value in labels.items():
        if isinstance(value, list):  # nnU-Net v2 regions: {"whole tumor": [1, 2, 3]}
            regions[str(key).lower()] = {_whole(v, path, key) for v in value}
            continue
        # Decathlon {"1": "edema"} or nnU-Net v2 {"edema": 1}
        name, number = (value, key) if isinstance(value, str) else (key, value)
        role = _role(str(name))
        if role is None:
            continue
        if role in found:
            log.warning("%s: two labels name %s; label values are guessed from each map", path, LABEL_NAMES.get(role, "cavity"))
            return None
        found[role] = _whole(number, path, key)
    whole = next((v for k, v in regions.items() if "whole" in k or k == "wt"), None)
    core = next((v for k, v in regions.items() if "core" in k or k == "tc"), None)
    enhancing = next((v for k, v in regions.items() if "enhancing" in k or k == "et"), None)
    if whole and core and enhancing and len(enhancing) == 1 and len(whole - core) == 1 and len(core - enhancing) == 1:
        found = {ED: min(whole - core), NCR: min(core - enhancing), ET: min(enhancing)}
    cavity = found.pop(CAVITY, None)
    for convention, mapping in CONVENTIONS.items():
        if all(found.get(role) == mapping[role] for role in (NCR, ED, ET)):
            if cavity is not None:
                if (convention, cavity) != (CAVITY_FOLLOWS, CAVITY):
                    break
                convention = POST_TREATMENT
            named = ", ".join(f"{LABEL_NAMES[role]} {value}" for role, value in sorted(found.items()))
            log.info("%s: label values (%s) are the %s convention", path, named, convention)
            return convention
    log.warning("%s: its labels %s match no convention brainseg knows; label values are guessed from each map",
                path, labels)
    return None


def image_cases(folder: Path, description: Description) -> list[CaseSource]:
    """The cases of an images folder (``imagesTr``, ``imagesTs``): 4-channel files or nnU-Net channel files."""
    return group_cases([p for p in sorted(folder.iterdir()) if p.is_file()], description, folder)


def _is_4d(path: Path) -> bool:
    try:
        return len(nib.load(path).shape) == 4  # reads the header only
    except Exception:  # unreadable: loading it later says what is wrong with it
        return False


def group_cases(files: list[Path], description: Description, where: Path) -> list[CaseSource]:
    """Image files grouped into cases: a 4-channel CASE.nii.gz, or 3D CASE_0000 ... CASE_0003.

    A case that lacks a channel file, or whose channel order no dataset.json gives, carries its problem
    and raises it when loaded. Raises InputError naming ``where`` when there are no images at all.
    """
    n = len(description.channels)
    by_case: dict[str, dict[int, Path]] = {}
    for path in files:
        if is_hidden(path.name) or not path.name.lower().endswith(NIFTI_SUFFIXES):
            continue
        stem = strip_suffix(path.name)
        match = _CHANNEL_FILE.match(stem)
        if match and _is_4d(path):  # BraTS_0001.nii.gz may be a whole case
            match = None
        case, channel = (match["case"], int(match["channel"])) if match else (stem, -1)
        by_case.setdefault(case, {})[channel] = path
    if not by_case:
        raise InputError(f"{where}: no .nii.gz or .nii images; expected one 4-channel file per case (CASE.nii.gz) "
                         f"or one file per channel (CASE_0000.nii.gz ... CASE_0003.nii.gz)")
    cases = []
    for case, channels in sorted(by_case.items()):
        problem = None
        if list(channels) == [-1]:
            scans = (channels[-1],)
        else:
            scans = tuple(channels[k] for k in sorted(channels))
            if sorted(channels) != list(range(n)):
                have = ", ".join(p.name for p in scans)
                problem = (f"{where}: case {case} has files {have}; expected CASE.nii.gz with all four channels, "
                           f"or CASE_0000 ... CASE_{n - 1:04d} (one per channel)")
            elif not description.found:
                problem = (f"{where}: case {case} is one file per channel, and no dataset.json beside {where.name} "
                           f"says which channel is which modality; expected a dataset.json with \"channel_names\" "
                           f"(or give the four files named by modality)")
        cases.append(CaseSource(case, scans, description.channels, None, description.label_convention, problem))
    return cases


def labelled_cases(root: Path) -> list[CaseSource]:
    """The training cases of a dataset folder: each image case of ``imagesTr`` with its ``labelsTr`` map.

    Raises InputError when ``labelsTr`` is missing or holds a map for none of the cases.
    """
    description = describe(root)
    if not description.found:
        log.warning("%s: no %s; 4-channel files are read in the Decathlon's order (FLAIR, T1, T1gd, T2) and label "
                    "values guessed from each map (name them with --labels)", root, DESCRIPTION)
    labels_dir = root / "labelsTr"
    if not labels_dir.is_dir():
        raise InputError(f"{root}: has imagesTr but no labelsTr folder; expected the label maps in labelsTr")
    cases = []
    for source in image_cases(root / "imagesTr", description):
        segmentation = next((p for p in (labels_dir / f"{source.name}{s}" for s in NIFTI_SUFFIXES) if p.is_file()), None)
        if segmentation is None:
            log.warning("%s: no label map %s.nii.gz in %s; case left out", root, source.name, labels_dir)
            continue
        cases.append(replace(source, segmentation=segmentation))
    if not cases:
        raise InputError(f"{root}: no case of imagesTr has its label map in labelsTr (CASE.nii.gz)")
    return cases
