"""Training data: labelled cases (BraTS case folders or a Decathlon / nnU-Net dataset) -> model-grid
arrays, and tumour-aware patch sampling."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from brainseg import MODALITIES
from brainseg.bias import FIT_LEVELS, fit_levels
from brainseg.config import PreprocessConfig
from brainseg.datasets import CaseSource, is_dataset, labelled_cases
from brainseg.errors import InputError
from brainseg.files import atomic_write
from brainseg.io import Case
from brainseg.labelmaps import read_label_map
from brainseg.labels import REGIONS, region_masks
from brainseg.naming import case_files, case_folders, case_problem, segmentation_file
from brainseg.preprocess import Geometry, downsample, prepare, reorient

log = logging.getLogger(__name__)


@dataclass
class TrainingCase:
    case_id: str
    image: np.ndarray  # (C, X, Y, Z) float32 on the model grid
    target: np.ndarray  # (3, X, Y, Z) float16 share of each model voxel inside WT/TC/ET
    brain: np.ndarray  # (X, Y, Z) bool brain mask on the model grid
    # candidate patch centres as flat indices, found once per case rather than on every draw
    region_voxels: list[np.ndarray] = field(init=False, repr=False)
    brain_voxels: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        inside = self.target >= 0.5
        self.region_voxels = [np.flatnonzero(inside[k]).astype(np.int32) for k in range(inside.shape[0])]
        mask = self.brain if self.brain.any() else np.ones(self.brain.shape, bool)
        self.brain_voxels = np.flatnonzero(mask).astype(np.int32)


def find_cases(root: str | Path) -> list[CaseSource]:
    """The labelled cases under ``root``, sorted by name: case folders that hold four scans and a
    segmentation, or the imagesTr/labelsTr cases of a Decathlon / nnU-Net dataset folder."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such data folder")
    if is_dataset(root):
        return sorted(labelled_cases(root), key=lambda c: c.name)
    cases = []
    for name, folder in case_folders(root).items():
        problem = case_problem(folder)
        if problem is None:
            cases.append(CaseSource(name, (folder,), segmentation=segmentation_file(folder)))
        else:  # said, not silent: a case short of a file would otherwise just be missing from the run
            log.warning("%s: left out (%s)", folder, problem)
    if not cases:
        raise InputError(f"{root}: no case folders with four scans and a segmentation, and no imagesTr folder "
                         f"(Decathlon / nnU-Net layout)")
    return cases


def load_reference(source: CaseSource | str | Path, convention: str | None = None) -> tuple[Case, np.ndarray]:
    """A labelled case at full resolution: the scans and internal labels (X, Y, Z) uint8.

    ``source`` is a case of ``find_cases`` or a case folder. The segmentation is checked as the app and
    ``brainseg evaluate`` check one (labelmaps.read_label_map) and read in ``convention`` (``labels.READABLE``;
    None: the one its header names, else its dataset describes, else guessed from its values).
    """
    if isinstance(source, (str, Path)):
        source = Path(source)
        source = CaseSource(source.name, (source,), segmentation=segmentation_file(source))
    if source.segmentation is None:
        raise InputError(f"{source.scans[0]}: no segmentation file; expected one named like CASE_seg.nii.gz beside the scans")
    case = source.load()
    labels, _ = read_label_map(source.segmentation, case=case).internal(convention, source.label_convention)
    return case, labels


def region_shares(labels: np.ndarray, geometry: Geometry) -> torch.Tensor:
    """(3, *model_shape) float32: the share of each model-grid voxel inside WT, TC and ET (trilinear at 2x,
    block averages beyond: ``preprocess.downsample``)."""
    masks = region_masks(reorient(labels, geometry.transform)[geometry.box])
    stacked = torch.from_numpy(np.stack([masks[r] for r in REGIONS]).astype(np.float32))
    return downsample(stacked, geometry).clamp_(0, 1)


def to_training_case(case: Case, labels: np.ndarray, config: PreprocessConfig, case_id: str) -> TrainingCase:
    prepared = prepare(case, config)
    # soft targets (the share of each coarse voxel inside the region) rather than thresholded masks:
    # a network fitted to them puts its 0.5 level where the fine boundary lies, so upsampled logits
    # recover detail; on the validation cases, resampling the truth this way and back keeps ET Dice
    # 0.83-0.94 where thresholded 2 mm masks keep 0.80-0.92 (scripts/resolution_ceiling.py)
    target = region_shares(labels, prepared.geometry).numpy().astype(np.float16)
    image = prepared.image.numpy()
    return TrainingCase(case_id, image, target, np.any(image != 0, axis=0))


def load_training_cases(sources: list[CaseSource], config: PreprocessConfig, cache_dir: Path | None = None,
                        convention: str | None = None) -> list[TrainingCase]:
    """Preprocess labelled cases onto the model grid, caching the arrays in ``cache_dir``; segmentations
    are read in ``convention`` (None: as ``load_reference`` reads them)."""
    # "reads-2": .npy read as LPS and BraTS 2023+-named maps with 2024's cavity; arrays cached before differ
    settings = [config.spacing, config.orientation, config.modalities, config.crop_margin, "soft", "reads-2"]
    # arrays cached without N4 keep their keys; "n4-2": corrected per modality, on a 240 mm lattice; scans
    # fitted in other than FIT_LEVELS levels (FLAIR and T2, since 2026-11-25) name their levels
    stiff = {m: fit_levels(m) for m in config.bias_correction if fit_levels(m) != FIT_LEVELS}
    settings += [["n4-2", list(config.bias_correction)] + ([stiff] if stiff else [])] if config.bias_correction else []
    out = []
    for source in sources:
        read_as = convention or source.label_convention
        described = [read_as] if read_as else []
        if source.channels != MODALITIES:  # a corrected dataset.json must not reuse arrays read in the old order
            described.append(list(source.channels))
        key = hashlib.sha1(json.dumps(settings + described).encode())
        for path in _source_files(source):  # an edited scan or a corrected segmentation is read again
            key.update(path.read_bytes())
        cached = cache_dir / f"{source.name}-{key.hexdigest()[:10]}.npz" if cache_dir else None
        if cached is not None and cached.is_file():
            try:
                with np.load(cached) as data:
                    out.append(TrainingCase(source.name, data["image"], data["target"], data["brain"]))
                continue
            except Exception as exc:  # damaged outside brainseg (writes are whole): made again
                log.warning("%s: unreadable cached arrays (%s: %s); preparing %s again", cached, type(exc).__name__, exc, source.name)
        case, labels = load_reference(source, convention)  # a map's header still outranks its dataset.json
        item = to_training_case(case, labels, config, source.name)
        if cached is not None:  # whole or not at all: a run stopped mid-write must not leave a half file to read
            atomic_write(cached, lambda tmp: _save_arrays(tmp, item))
        out.append(item)
        log.info("loaded %s: model grid %s", source.name, item.image.shape[1:])
    return out


def _save_arrays(path: str, item: TrainingCase) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would add ".npz" to a name
        np.savez(f, image=item.image, target=item.target, brain=item.brain)


def _source_files(source: CaseSource) -> list[Path]:
    """The files a case is read from (of a case folder: its four scans, not a reader's notes beside
    them) and its segmentation, in a fixed order."""
    scans = [f for p in source.scans for f in (case_files(p).values() if p.is_dir() else [p])]
    return sorted({*scans, *([source.segmentation] if source.segmentation else [])})


def sample_patch(item: TrainingCase, patch: tuple[int, int, int], rng: np.random.Generator, tumour_share: float) -> tuple[np.ndarray, np.ndarray]:
    """One (image, target) patch; with probability ``tumour_share`` centred on a random region voxel.

    The centre is drawn first and the window clipped to the volume, so patches reach every edge;
    axes shorter than the patch are zero-padded.
    """
    image, target = item.image, item.target
    shape = grid = image.shape[1:]
    if any(s < p for s, p in zip(shape, patch)):
        pad = [(0, 0)] + [(0, max(p - s, 0)) for s, p in zip(shape, patch)]
        image, target = np.pad(image, pad), np.pad(target, pad)
        shape = image.shape[1:]
    voxels = item.brain_voxels
    if rng.random() < tumour_share:
        present = [v for v in item.region_voxels if len(v)]
        if present:
            voxels = present[rng.integers(len(present))]
    # padding only extends the far ends, so indices into the unpadded grid stay valid
    centre = np.unravel_index(voxels[rng.integers(len(voxels))], grid)
    start = [int(np.clip(c - p // 2, 0, s - p)) for c, p, s in zip(centre, patch, shape)]
    sl = tuple(slice(s, s + p) for s, p in zip(start, patch))
    return image[(slice(None),) + sl], target[(slice(None),) + sl]
