"""Which file is which: modalities, cases and label conventions from file and folder names.

BraTS 2018-2021 (Brats18_x_1_flair.nii.gz), BraTS 2023+ (BraTS-GLI-00001-000-t2f.nii.gz), BIDS
(sub-01_ce-gadolinium_T1w.nii.gz) and plain names (flair.nii) are read; a name that names no modality, or
several, is refused with a message that says what names are expected.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Iterable

from brainseg import MODALITIES
from brainseg.errors import InputError

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".nrrd", ".mha")  # single-file NRRD (3D Slicer's default) and MetaImage (ITK-SNAP), read through SimpleITK
# headers whose voxels lie in another file: listed with the images so that reading them says what to do instead
DETACHED_SUFFIXES = (".nhdr", ".mhd")
GEOMETRY_SUFFIXES = (*NIFTI_SUFFIXES, *ITK_SUFFIXES)  # formats that carry a voxel-to-world matrix
SUFFIXES = (*GEOMETRY_SUFFIXES, ".npy", *DETACHED_SUFFIXES)
FORMATS = ".nii, .nii.gz, .nrrd, .mha or .npy"  # the readable formats, as messages name them

# file-name token -> modality; tokens are matched whole, so "t1" never captures "t1ce"
_ALIASES = {
    "flair": ("flair", "t2f", "t2flair", "fla"),
    "t1": ("t1", "t1n", "t1w", "t1native", "t1pre"),
    "t1ce": ("t1ce", "t1c", "t1gd", "t1post", "t1contrast", "t1wce", "ce", "t1cegd"),
    "t2": ("t2", "t2w"),
    # "segm": BraTS 2020's training case 355 ships its expert map as W39_1998.09.19_Segm.nii. Most specific
    # first: of two label-map names in one case folder the earlier word wins ("mask" also names brain masks)
    "seg": ("seg", "segm", "segmentation", "gt", "groundtruth", "truth", "label", "labels", "mask"),
}
TOKEN_TO_MODALITY = {alias: mod for mod, aliases in _ALIASES.items() for alias in aliases}
# BraTS 2023+ names end in "-t2f", "-t1n", "-t1c" or "-t2w" (BraTS-GLI-00001-000-t2f.nii.gz). The token
# alone is not enough: BIDS names such as sub-01_T2w.nii.gz hold "t2w" and say nothing about labels.
_BRATS2023_NAME = re.compile(r"-(t2f|t1n|t1c|t2w)$")
_BIDS_CE = re.compile(r"(^|_)ce-[a-z0-9]+", re.IGNORECASE)  # BIDS contrast-enhancement entity: sub-01_ce-gadolinium_T1w
# a BraTS 2023+ label map (BraTS-GLI-00001-000-seg.nii.gz, or a submission's BraTS-GLI-00001-000.nii.gz):
# ET is 3, and a 4 can only be BraTS 2024's resection cavity
_BRATS2023_LABEL_NAME = re.compile(r"^brats-[a-z]+(-[a-z]+)*-\d+-\d+(-seg)?$")


def strip_suffix(name: str) -> str:
    """A file's base name without its image suffix (.nii.gz, .nrrd, ...; any case) and the channel index that
    names one channel of a 4-channel image ("BRATS_001.nii.gz[0]")."""
    base = re.sub(r"\[\d+\]$", "", os.path.basename(name))
    for suffix in SUFFIXES:
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


def is_slicer_segmentation(name: str | Path) -> bool:
    """A 3D Slicer segmentation file (.seg.nrrd), which holds only its segments' extent of the scans' grid."""
    return str(name).lower().endswith(".seg.nrrd")


def is_hidden(name: str) -> bool:
    """Hidden files and folders, and the metadata folder macOS puts in the zips it makes: "._BRATS_001.nii.gz"
    (shipped in the Decathlon's archives), ".ipynb_checkpoints", ".git", "__MACOSX"."""
    base = os.path.basename(name)
    return base.startswith(".") or base == "__MACOSX"


def modality_from_name(name: str) -> str | None:
    """Modality named by a file name ("flair", "t1", "t1ce", "t2", "seg"), or None.

    The last recognised token wins: "BraTS-GLI-00001-000-t1c.nii.gz" -> "t1ce", "flair_seg" -> "seg".
    Raises InputError for a name mentioning two scan modalities ("t1_to_flair.nii.gz").
    """
    tokens = _tokens(name)
    named = {TOKEN_TO_MODALITY[t] for t in tokens if t in TOKEN_TO_MODALITY} - {"seg"}
    bids_ce = named == {"t1", "t1ce"} and "ce" in tokens  # BIDS: a contrast-enhanced T1 is sub-01_ce-gadolinium_T1w
    if bids_ce:
        named = {"t1ce"}
    if len(named) > 1:
        raise InputError(
            f"{os.path.basename(name)}: the name mentions several modalities "
            f"({', '.join(sorted(m.upper() for m in named))}); expected a name that names exactly one"
        )
    for token in reversed(tokens):
        if token in TOKEN_TO_MODALITY:
            return "t1ce" if bids_ce and TOKEN_TO_MODALITY[token] == "t1" else TOKEN_TO_MODALITY[token]
    # names like "t1ce.nii" after a number glued on: "case01t1ce"
    for token in reversed(tokens):
        for alias in sorted(TOKEN_TO_MODALITY, key=len, reverse=True):
            if _glued(token, alias):
                return TOKEN_TO_MODALITY[alias]
    return None


def _tokens(name: str) -> list[str]:
    """A file name's words: its base name without the suffix, lower case, split at anything not a letter or digit."""
    return [t for t in re.split(r"[^a-z0-9]+", strip_suffix(name).lower()) if t]


def _glued(token: str, alias: str) -> bool:
    """Whether ``token`` is ``alias`` glued to a case number ("case01t1ce"); aliases of three letters or more."""
    return len(alias) > 2 and token.endswith(alias) and not token[: -len(alias)].isalpha()


def convention_from_names(names: Iterable[str]) -> str:
    """Label convention for outputs: BraTS 2023+ names (...-t2f.nii.gz) mean ET is written as 3, others 4."""
    names = [os.path.basename(str(n)) for n in names]
    for name in names:
        if _BRATS2023_NAME.search(strip_suffix(name).lower()):
            log.info("label convention brats2023 (ET = 3): %s is a BraTS 2023+ name", name)
            return "brats2023"
    log.info("label convention brats2018 (ET = 4): no BraTS 2023+ name among %s", ", ".join(names))
    return "brats2018"


def is_brats2023_label_name(name: str) -> bool:
    """Whether a label map's file name is a BraTS 2023+ one (BraTS-GLI-00001-000-seg.nii.gz, or a
    submission's BraTS-GLI-00001-000.nii.gz)."""
    return bool(_BRATS2023_LABEL_NAME.match(strip_suffix(os.path.basename(str(name))).lower()))


_BRATS_CHALLENGE = re.compile(r"^brats-(gli|ssa|ped|men|met)-\d")


def challenge_of_name(name: str | Path) -> str | None:
    """The BraTS 2023+ challenge a file name belongs to ("BraTS-MET-00001-000-seg.nii.gz" -> "MET"), or None."""
    found = _BRATS_CHALLENGE.match(strip_suffix(os.path.basename(str(name))).lower())
    return found.group(1).upper() if found else None


def is_brats_ped_name(name: str) -> bool:
    """Whether a file name is a BraTS pediatric one (BraTS-PED-00001-000-seg.nii.gz): from 2024 on its label
    maps mark four tumour subregions, so a 4 there is not the adult post-treatment maps' resection cavity."""
    return strip_suffix(os.path.basename(str(name))).lower().startswith("brats-ped-")


def case_stem(name: str) -> str:
    """A file name without its suffix, its modality and label-map words ("seg", "gt", "mask", ...) and BIDS's
    "ce-" entity, separators and letter case kept: "Brats18_x_1_flair.nii.gz" -> "Brats18_x_1",
    "case01_flair_reg.nii" -> "case01_reg"; the name itself when nothing else is left ("flair.nii.gz")."""
    name = strip_suffix(os.path.basename(str(name)))
    parts = re.split(r"([-_. ]+)", _BIDS_CE.sub("", name))  # words at even places, their separators between
    stem = ""
    for i in range(0, len(parts), 2):
        if parts[i] and parts[i].lower() not in TOKEN_TO_MODALITY:
            stem += (parts[i - 1] if stem else "") + parts[i]
    return stem or name


def case_stems(names: Iterable[str]) -> list[str]:
    """The different case names in files' names once every modality word is taken out ("Brats18_x_1_flair"
    -> "brats18_x_1"; "flair", "t1", ... -> nothing, so not counted): more than one means scans of
    different cases may have been combined."""
    stems = set()
    for name in names:
        words = _tokens(_BIDS_CE.sub("", os.path.basename(str(name))))
        stems.add("_".join(t for t in words if t not in TOKEN_TO_MODALITY))
    return sorted(stems - {""})


def names_another_case(reference: str, scans: Iterable[str]) -> str | None:
    """The case a reference's file name names when it is not the scans' case, else None.

    Only a name with a number in it is taken for a case id, and one name holding all the other's words
    is the same case: "ground_truth", "Brats18_x_1_GlistrBoost_ManuallyCorrected" (for Brats18_x_1's
    scans) and nnU-Net's "BRATS_001" (for BRATS_001_0000 ...) name no other case; "case9_seg" for
    case7's scans does.
    """
    named = case_stems([reference])
    words = set(named[0].split("_")) if named else set()
    if not any(any(c.isdigit() for c in w) for w in words):
        return None
    stems = case_stems(scans)
    for stem in stems:
        other = set(stem.split("_"))
        if words <= other or other <= words:
            return None
    return named[0] if stems else None


def assign_modalities(names: Iterable[str], ignore_seg: bool = False, where: str = "") -> dict[str, str]:
    """Map each modality to one of ``names``.

    Raises InputError for a name that names no modality, a segmentation among the scans, a modality
    given twice, or a missing one (naming ``where`` the files were looked for, when given).
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
            f"{where + ': ' if where else ''}missing modality {', '.join(m.upper() for m in missing)}; found "
            f"{', '.join(f'{m.upper()}={os.path.basename(str(p))}' for m, p in found.items()) or 'none'}; "
            f"expected four files: FLAIR, T1, T1ce, T2"
        )
    return found


def case_files(folder: str | Path) -> dict[str, Path]:
    """The four scan files of a case folder, by modality; a segmentation file is ignored."""
    folder = Path(folder)
    files = image_files(folder)
    if not files:
        raise InputError(f"{folder}: no {FORMATS} files in this folder{_what_is_there(folder)}")
    return pick_scans(files, str(folder))


def pick_scans(files: list, where: str) -> dict:
    """The four scans among the files of one case (paths or names; a case folder's, a zip's), by modality;
    a segmentation is ignored. InputError naming ``where`` when they are not there."""
    # other files of a case (masks, derived maps) are not the user's choice of scans: skip them
    named = [p for p in files if _folder_modality(Path(p)) is not None]
    return assign_modalities(named or files, ignore_seg=True, where=where)


MAX_INNER_FOLDERS = 4  # CASE/CASE/... levels read through; deeper is not an archive's doing


def scan_folder(folder: str | Path) -> Path:
    """The folder that holds the scans of a folder known to be one case: ``folder`` itself or, when it holds
    no file named as a scan and a single folder that does (a zip extracted into CASE/CASE/; a label map
    written beside that folder does not count), that one, down to ``MAX_INNER_FOLDERS`` levels. (A folder
    of cases that holds one case looks the same: callers decide.)"""
    folder = inner = Path(folder)
    for depth in range(MAX_INNER_FOLDERS + 1):
        if not inner.is_dir():
            break
        if _names_scans(inner):
            if depth:
                log.info("%s holds no scans but the folder %s: reading that", folder, inner.relative_to(folder))
            return inner
        found = [p for p in inner.iterdir() if p.is_dir() and not is_hidden(p.name)]
        if len(found) != 1:
            break
        inner = found[0]
    return folder


def _names_scans(folder: Path) -> bool:
    """Whether a folder holds a file named as one of the four scans."""
    return any(names_a_scan(p.name) for p in image_files(folder))


def _what_is_there(folder: Path) -> str:
    """What a folder without image files does hold, for the message that says so ("" when empty)."""
    entries = sorted(p for p in folder.iterdir() if not is_hidden(p.name)) if folder.is_dir() else []
    if not entries:
        return ""
    shown = ", ".join(p.name + ("/" if p.is_dir() else "") for p in entries[:5]) + (", ..." if len(entries) > 5 else "")
    compressed_twice = any(p.name.lower().endswith((".nii.gz.gz", ".nii.gz.zip", ".nii.zip")) for p in entries)
    return (f" (it holds {shown}" + ("; decompress the .gz / .zip layer over the .nii or .nii.gz files" if
                                     compressed_twice else "") + ")")


def image_files(folder: str | Path) -> list[Path]:
    """The image files (``SUFFIXES``) directly in a folder (any case of suffix; hidden ones left out), sorted."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and p.name.lower().endswith(SUFFIXES) and not is_hidden(p.name))


def names_a_scan(name: str | Path) -> bool:
    """Whether a file's name names one of the four scans unambiguously (not a segmentation, not nothing,
    not several)."""
    try:
        return modality_from_name(os.path.basename(str(name))) not in (None, "seg")
    except InputError:
        return False


def case_folders(root: str | Path, skip: Path | None = None) -> dict[str, Path]:
    """The cases of a folder of cases, sorted by name: case id -> the folder that holds its files. The cases
    are its subfolders, less hidden ones and ``skip``, each read through a single inner folder that holds
    its files (``scan_folder``: a zip extracted into CASE/CASE/, BIDS's sub-01/anat/), named by the outer one.

    A subfolder holding no image files but two or more case folders (four scans each; one for HGG/ and
    LGG/, as BraTS 2018-2019's training data comes) is a group of cases, and its subfolders are the cases; a case
    whose scans are not there yet (P2/derived/ still empty) stays one case, which fails on its own.
    Raises InputError for two cases of one name in different groups (their outputs would overwrite each other).
    """
    skip = skip.resolve() if skip is not None else None
    found: dict[str, Path] = {}
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir() and not is_hidden(p.name)):
        if folder.resolve() == skip:
            continue
        inner = [p for p in folder.iterdir() if p.is_dir() and not is_hidden(p.name)]
        needed = 1 if folder.name.lower() in ("hgg", "lgg") else 2  # BraTS's own group names need no second case
        group = len(inner) >= needed and not image_files(folder) and sum(map(_holds_scans, inner)) >= needed
        if group:
            log.info("%s holds folders, not scans: reading its subfolders as cases", folder)
        for case in sorted(inner) if group else [folder]:
            if case.resolve() == skip:
                continue
            if case.name in found:
                raise InputError(f"{found[case.name]} and {case}: two cases named {case.name}; expected one folder per case name")
            found[case.name] = scan_folder(case)
    return {name: found[name] for name in sorted(found)}


def _holds_scans(folder: Path) -> bool:
    try:
        case_files(scan_folder(folder))
    except InputError:
        return False
    return True


def case_problem(folder: Path) -> str | None:
    """Why a folder is not a labelled case (a scan or the segmentation missing, or two files that could each
    be the segmentation), or None when it is one."""
    try:
        case_files(folder)
        if segmentation_file(folder) is None:
            return "no segmentation; expected one named like CASE_seg.nii.gz beside the scans"
    except InputError as exc:  # a scan missing, or two files that could each be the segmentation
        return str(exc).removeprefix(f"{folder}: ")
    return None


def segmentation_file(folder: str | Path) -> Path | None:
    """The segmentation file of a case folder, if there is one.

    A brain mask ("brain_mask", "brainmask") is not one. Of several label-map names the most specific
    word wins ("_seg" over "_label" over "_mask"); InputError naming the files when two tie.
    """
    ranked = sorted((_segmentation_rank(p), p) for p in image_files(folder)
                    if _folder_modality(p) == "seg" and not _is_brain_mask(p.name))
    best = [p for rank, p in ranked if rank == ranked[0][0]]
    if len(best) > 1:
        raise InputError(f"{folder}: {', '.join(p.name for p in best)} could each be the segmentation; expected one "
                         f"label map per case folder (move the others out)")
    return best[0] if best else None


def _segmentation_rank(path: Path) -> int:
    """How specifically a file's name says "segmentation": the place of its best word in the aliases, a word
    glued to a number counted too ("case01seg"), as modality_from_name reads it."""
    aliases = _ALIASES["seg"]
    tokens = _tokens(path.name)
    return min((i for i, alias in enumerate(aliases) for t in tokens if t == alias or _glued(t, alias)),
               default=len(aliases))


def _is_brain_mask(name: str) -> bool:
    """Whether a file's name calls it a brain mask ("brain_mask", "brainmask"; not "brain_tumor_mask")."""
    tokens = _tokens(name)
    return "brainmask" in tokens or any(a == "brain" and b == "mask" for a, b in zip(tokens, tokens[1:]))


def _folder_modality(path: Path) -> str | None:
    """A folder file's modality, or None (logged) when its name names none or several."""
    try:
        modality = modality_from_name(path.name)
    except InputError as exc:
        log.info("skipping %s", exc)
        return None
    if modality is None:
        log.info("skipping %s: its name names no modality", path.name)
    return modality
