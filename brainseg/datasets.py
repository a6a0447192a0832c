"""Where the cases of a data folder are: BraTS case folders, or the layout of the Medical Segmentation
Decathlon and nnU-Net (``imagesTr``/``labelsTr``/``imagesTs`` beside a ``dataset.json``).

In that layout a case is one 4-channel file (``BRATS_001.nii.gz``, Decathlon) or one file per channel
(``BRATS_001_0000.nii.gz`` ... ``_0003``, nnU-Net), and its label map is ``labelsTr/BRATS_001.nii.gz``.
Channel order and label values are read from ``dataset.json``: the Decathlon's Task01 writes edema as
1 and enhancing tumour as 3, which guessing from the values would take for BraTS 2023.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from brainseg import MODALITIES
from brainseg.errors import InputError
from brainseg.io import Case, load_case, load_channel_files, modality_from_name, strip_suffix
from brainseg.labels import CONVENTIONS, ED, ET, LABEL_NAMES, NCR

log = logging.getLogger(__name__)

DESCRIPTION = "dataset.json"
_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")  # nnU-Net: CASE_0000.nii.gz
_NIFTI = (".nii.gz", ".nii")


@dataclass(frozen=True)
class CaseSource:
    """Where one case's files are, and how to read them.

    Attributes:
        name: the case id (folder name, or file name without suffix and channel number).
        scans: one case folder, one 4-channel file, or one file per channel in ``channels`` order.
        channels: the modality of each channel (of a 4-channel file) or file.
        segmentation: the case's label map, when it has one.
        label_convention: the label values its dataset describes (``labels.CONVENTIONS``); None: guess.
    """

    name: str
    scans: tuple[Path, ...]
    channels: tuple[str, ...] = MODALITIES
    segmentation: Path | None = None
    label_convention: str | None = None

    def load(self) -> Case:
        if len(self.scans) == 1:
            return load_case(self.scans, self.channels)
        return load_channel_files(self.scans, self.channels)


@dataclass(frozen=True)
class Description:
    """What a ``dataset.json`` says about its cases."""

    channels: tuple[str, ...] = MODALITIES
    label_convention: str | None = None


def is_dataset(root: Path) -> bool:
    """A Decathlon / nnU-Net dataset folder: it holds ``imagesTr``."""
    return (root / "imagesTr").is_dir()


def describe(root: Path) -> Description:
    """Channel order and label values from ``root/dataset.json``; the Decathlon's order when it is absent.

    Raises InputError naming the file when it cannot be read or names other channels than the four.
    """
    path = root / DESCRIPTION
    if not path.is_file():
        log.warning("%s: no %s; reading channels in the Decathlon's order (FLAIR, T1, T1gd, T2) and guessing "
                    "label values from each map (name them with --labels)", root, DESCRIPTION)
        return Description()
    try:
        text = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON file ({exc}); expected the dataset's description") from None
    if not isinstance(text, dict):
        raise InputError(f"{path}: holds {type(text).__name__}, expected a JSON object describing the dataset")
    return Description(_channels(text, path), _label_convention(text.get("labels"), path))


def _channels(text: dict, path: Path) -> tuple[str, ...]:
    # Decathlon: "modality"; nnU-Net v2: "channel_names"; both {"0": "FLAIR", "1": "T1w", ...}
    names = text.get("channel_names", text.get("modality"))
    if names is None:
        return MODALITIES
    try:
        ordered = [str(names[k]) for k in sorted(names, key=int)]
    except (TypeError, ValueError, AttributeError):
        raise InputError(f"{path}: channel names {names!r} are not a mapping of channel numbers to names") from None
    channels = []
    for name in ordered:
        try:
            modality = modality_from_name(name)
        except InputError:
            modality = None
        channels.append(modality)
    if sorted(c for c in channels if c) != sorted(MODALITIES) or len(channels) != len(MODALITIES):
        raise InputError(f"{path}: channels {ordered}; expected the four MRI modalities FLAIR, T1, T1ce (T1gd), T2 "
                         f"in any order")
    return tuple(channels)


_ROLE_WORDS = (  # checked in order: "non-enhancing" before "enhancing"
    (NCR, ("non-enhancing", "non enhancing", "nonenhancing", "necro", "ncr", "net")),
    (ET, ("enhancing", "et")),
    (ED, ("edema", "oedema", "ed")),
)


def _role(name: str) -> int | None:
    text = name.lower().replace("_", " ")
    words = set(re.split(r"[^a-z]+", text))
    for role, keys in _ROLE_WORDS:
        if any((k in words) if len(k) <= 3 else (k in text) for k in keys):
            return role
    return None


def _label_convention(labels, path: Path) -> str | None:
    """The convention whose values the dataset's label names give NCR, edema and ET, or None."""
    if not isinstance(labels, dict):
        return None
    pairs = []  # (value, name) for single-value labels; nnU-Net regions give lists
    regions = {}
    for key, value in labels.items():
        if isinstance(value, str):  # Decathlon: {"1": "edema"}
            pairs.append((key, value))
        elif isinstance(value, int):  # nnU-Net v2: {"edema": 1}
            pairs.append((value, key))
        elif isinstance(value, list):  # nnU-Net v2 regions: {"whole tumor": [1, 2, 3]}
            regions[key.lower()] = {int(v) for v in value}
    found: dict[int, int] = {}
    for value, name in pairs:
        role = _role(name)
        if role is not None:
            try:
                found[role] = int(value)
            except ValueError:
                return None
    whole = next((v for k, v in regions.items() if "whole" in k or k == "wt"), None)
    core = next((v for k, v in regions.items() if "core" in k or k == "tc"), None)
    enhancing = next((v for k, v in regions.items() if "enhancing" in k or k == "et"), None)
    if whole and core and enhancing and len(enhancing) == 1 and len(whole - core) == 1 and len(core - enhancing) == 1:
        found = {ED: min(whole - core), NCR: min(core - enhancing), ET: min(enhancing)}
    for convention, mapping in CONVENTIONS.items():
        if all(found.get(role) == mapping[role] for role in (NCR, ED, ET)):
            named = ", ".join(f"{LABEL_NAMES[role]} {value}" for role, value in sorted(found.items()))
            log.info("%s: label values (%s) are the %s convention", path, named, convention)
            return convention
    log.warning("%s: its labels %s match no convention brainseg knows; label values are guessed from each map",
                path, labels)
    return None


def image_cases(folder: Path, description: Description) -> list[CaseSource]:
    """The cases of an images folder (``imagesTr``, ``imagesTs``): 4-channel files or nnU-Net channel files.

    Raises InputError naming the folder when a case lacks a channel file or it holds no images.
    """
    by_case: dict[str, dict[int, Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or not path.name.lower().endswith(_NIFTI):
            continue  # "._BRATS_001.nii.gz": macOS metadata shipped in the Decathlon's archive
        stem = strip_suffix(path.name)
        match = _CHANNEL_FILE.match(stem)
        case, channel = (match["case"], int(match["channel"])) if match else (stem, -1)
        by_case.setdefault(case, {})[channel] = path
    if not by_case:
        raise InputError(f"{folder}: no .nii.gz or .nii images; expected one 4-channel file per case (CASE.nii.gz) "
                         f"or one file per channel (CASE_0000.nii.gz ... CASE_0003.nii.gz)")
    cases = []
    for case, files in by_case.items():
        if list(files) == [-1]:
            scans = (files[-1],)
        elif sorted(files) == list(range(len(description.channels))):
            scans = tuple(files[k] for k in range(len(description.channels)))
        else:
            have = ", ".join(p.name for p in files.values())
            raise InputError(f"{folder}: case {case} has files {have}; expected CASE.nii.gz with all four channels, "
                             f"or CASE_0000 ... CASE_{len(description.channels) - 1:04d} (one per channel)")
        cases.append(CaseSource(case, scans, description.channels, None, description.label_convention))
    return cases


def labelled_cases(root: Path) -> list[CaseSource]:
    """The training cases of a dataset folder: each image case of ``imagesTr`` with its ``labelsTr`` map.

    Raises InputError when ``labelsTr`` is missing or holds a map for none of the cases.
    """
    description = describe(root)
    labels_dir = root / "labelsTr"
    if not labels_dir.is_dir():
        raise InputError(f"{root}: has imagesTr but no labelsTr folder; expected the label maps in labelsTr")
    cases = []
    for source in image_cases(root / "imagesTr", description):
        segmentation = next((p for p in (labels_dir / f"{source.name}{s}" for s in _NIFTI) if p.is_file()), None)
        if segmentation is None:
            log.warning("%s: no label map %s.nii.gz in %s; case left out", root, source.name, labels_dir)
            continue
        cases.append(CaseSource(source.name, source.scans, source.channels, segmentation, source.label_convention))
    if not cases:
        raise InputError(f"{root}: no case of imagesTr has its label map in labelsTr (CASE.nii.gz)")
    return cases


def enclosing_description(folder: Path) -> Description | None:
    """The description of the dataset an ``imagesTs``/``labelsTr``-like folder belongs to, if any."""
    parent = folder.resolve().parent
    if (parent / DESCRIPTION).is_file() or folder.name.lower().startswith(("images", "labels")) and is_dataset(parent):
        return describe(parent)
    return None
