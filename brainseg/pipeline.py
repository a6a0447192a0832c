"""Files -> arrays -> logits -> labels: the whole segmentation of one case, callable without a UI."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import torch

from brainseg.checkpoint import LoadedModel
from brainseg.config import InferenceConfig, ModelConfig, PostprocessConfig, SettingError
from brainseg.errors import InputError
from brainseg.inference import ModelPredictor, Progress, plan_windows, resolve_device, sliding_window
from brainseg.io import Case
from brainseg.labels import regions_to_labels
from brainseg.metrics import volume_stats, voxel_volume_ml
from brainseg.model import probabilities
from brainseg.naming import case_stem
from brainseg.postprocess import clean_labels
from brainseg.preprocess import Prepared, paste, prepare, to_box

log = logging.getLogger(__name__)


@dataclass
class Segmentation:
    """A case's result on the input grid.

    Attributes:
        labels: internal labels (X, Y, Z) uint8: 0 bg, 1 NCR, 2 ED, 3 ET.
        probabilities: (K, X, Y, Z) float16: WT/TC/ET sigmoid, or bg/NCR/ED/ET softmax.
        stats: ``volume_stats`` of the labels (keys in the case's label convention).
        seconds: time per stage.
        windows: sliding windows the network ran on.
        precision: what the network ran in ("fp32", "bf16", "fp16"; "custom" for a given predictor).
        brain_voxels: voxels inside the scanned anatomy (non-zero in some modality).
        device: where the network ran ("cpu", "cuda:0").
        removed_ml: predicted tumour the post-processing removed (small or distant pieces).
        warnings: what makes the result doubtful (scans that look not skull-stripped), for the user.
        window_shape: the sliding window that ran (the asked patch size with sides longer than the brain box cut
            to it, rounded up to the network's divisor).
        bias_corrected: the modalities N4 bias-field correction ran on before z-scoring (none: empty).
        bias_correction: the modalities it was asked to run on (the setting): a scan found already normalised is
            asked for but skipped, so a later run with the same setting knows it would do the same.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    stats: dict
    seconds: dict[str, float] = field(default_factory=dict)
    windows: int = 0
    precision: str = "fp32"
    brain_voxels: int = 0
    device: str = "cpu"
    removed_ml: float = 0.0
    warnings: list[str] = field(default_factory=list)
    window_shape: tuple[int, ...] = ()  # the window the network ran on, on the model grid
    bias_corrected: tuple[str, ...] = ()
    bias_correction: tuple[str, ...] = ()

    def __repr__(self) -> str:  # a notebook shows this: volumes, not array previews
        regions = ", ".join(f"{r} {v['ml']:.2f} mL" for r, v in self.stats.get("regions", {}).items())
        return (f"Segmentation(labels {self.labels.shape} {self.labels.dtype}, {regions}, {self.windows} windows, "
                f"{self.precision} on {self.device}, {sum(self.seconds.values()):.1f} s"
                + (f", {len(self.warnings)} warning(s)" if self.warnings else "") + ")")


def logits_to_labels(logits: torch.Tensor, output_mode: str, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(K, ...) logits -> (internal labels uint8, probabilities float16)."""
    probs = probabilities(logits[None], output_mode)[0]
    if output_mode == "regions":
        masks = (probs > threshold).numpy()
        labels = regions_to_labels(masks[0], masks[1], masks[2])
    else:
        labels = probs.argmax(0).numpy().astype(np.uint8)
    return labels, probs.numpy().astype(np.float16)


def segment_case(
    case: Case,
    loaded: LoadedModel,
    inference: InferenceConfig | None = None,
    postprocess: PostprocessConfig | None = None,
    device: str = "auto",
    precision: str = "auto",
    progress: Progress | None = None,
    predictor: Callable | None = None,
    bias_correction: Sequence[str] | bool | None = None,
    prepared: Prepared | None = None,
) -> Segmentation:
    """Segment one loaded case: preprocess, sliding-window inference, labels, post-processing, statistics.

    Args:
        case: four scans on one grid (``io.load_case`` from files, or ``io.Case`` from arrays).
        loaded: a checkpoint (``checkpoint.load_checkpoint``).
        inference, postprocess: settings; the checkpoint's own defaults when None.
        device: "auto" (CUDA when there is a GPU), "cpu" or "cuda".
        precision: "auto" (fp16 on CUDA, bf16 on CPUs with bf16 kernels, else fp32), "fp32" or "bf16".
        progress: called with (windows done, windows in all) as the network runs.
        predictor: replaces the network (tests, benchmarks); must map (N, C, *patch) to logits.
        bias_correction: the modalities to N4-correct before z-scoring (``brainseg.bias``; True: all, False:
            none); None: the checkpoint's own setting.
        prepared: ``preprocess.prepare(case, ...)`` made earlier with these settings (training validates the same
            cases many times, and N4 is the slow part of preparing them); None: prepared here.
    Returns:
        a ``Segmentation`` on the case's grid (labels, probabilities, volumes, timings, warnings).
    Raises:
        InputError for a case without the four scans, SettingError for a window the network cannot run.
    """
    config = loaded.config
    inference = inference or config.inference
    postprocess = postprocess or config.postprocess
    missing = [m.upper() for m in config.preprocess.modalities if m not in case.images]
    if missing:
        raise InputError(f"the case has no {', '.join(missing)}; expected four scans: FLAIR, T1, T1ce, T2")
    for modality in config.preprocess.modalities:  # files are checked as they are read; arrays given directly here
        image = case.images[modality]
        if image.min() == image.max():
            raise InputError(f"{case.sources.get(modality, modality)}: every voxel has the value {float(image.min()):g}; "
                             f"expected an MRI scan with contrast")
    check_window(inference.patch_size, config.model)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    preprocess = config.preprocess if bias_correction is None else replace(config.preprocess, bias_correction=bias_correction)
    prepared = prepared or prepare(case, preprocess)
    seconds["preprocess"] = time.perf_counter() - t
    for warning in prepared.warnings:
        log.warning("%s: %s", case_stem(next(iter(case.sources.values()), "case")), warning)
    if predictor is None:
        predictor = ModelPredictor(loaded.model, resolve_device(device), precision, inference.tta)
    used_device = str(getattr(predictor, "device", "custom"))
    used_precision = getattr(predictor, "precision", "custom")
    # the windows that run: a side longer than the brain box is cut to it ("whole brain" asks for 512)
    plan = plan_windows(prepared.image.shape[1:], inference.patch_size, inference.overlap, config.model.divisor)
    t = time.perf_counter()
    logits = sliding_window(predictor, prepared.image, plan.patch, inference.overlap, inference.batch_size, progress,
                            divisor=config.model.divisor)
    seconds["windows"] = time.perf_counter() - t
    full_labels, full_probs, removed = labels_on_input_grid(logits, prepared, config.model.output_mode, inference.threshold,
                                                            postprocess, seconds)
    t = time.perf_counter()
    stats = volume_stats(full_labels, case.spacing, case.convention, prepared.brain_voxels)
    seconds["paste"] += time.perf_counter() - t
    removed_ml = removed * voxel_volume_ml(case.spacing)
    return Segmentation(full_labels, full_probs, stats, seconds, len(plan.starts), used_precision,
                        prepared.brain_voxels, used_device, removed_ml, prepared.warnings, tuple(plan.patch),
                        prepared.bias_corrected, tuple(preprocess.bias_correction))


def labels_on_input_grid(logits: torch.Tensor, prepared: Prepared, output_mode: str, threshold: float,
                         postprocess: PostprocessConfig, seconds: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Model-grid logits (K, *model_shape) -> (labels, probabilities) on the input grid, post-processed,
    and the tumour voxels post-processing removed; ``seconds`` gets the stitch, postprocess and paste times."""
    seconds = {} if seconds is None else seconds
    t = time.perf_counter()
    box_logits = to_box(logits.cpu(), prepared.geometry)
    labels, probs = logits_to_labels(box_logits, output_mode, threshold)
    del box_logits
    # no tumour outside the scanned anatomy: resampling can smear predictions past the brain edge
    outside = ~prepared.brain
    labels[outside] = 0
    probs[:, outside] = 0
    if output_mode == "labels":
        probs[0][outside] = 1  # softmax channel 0 is background
    seconds["stitch"] = time.perf_counter() - t
    t = time.perf_counter()
    tumour = int(np.count_nonzero(labels))
    labels = clean_labels(labels, postprocess.min_component_voxels, postprocess.min_et_voxels,
                          postprocess.max_component_distance_mm, prepared.geometry.spacing,
                          postprocess.min_core_component_voxels)
    removed = tumour - int(np.count_nonzero(labels))
    seconds["postprocess"] = time.perf_counter() - t
    t = time.perf_counter()
    full_labels = paste(labels, prepared.geometry)
    # outside the brain box: no region, or certain (softmax) background
    full_probs = paste(probs, prepared.geometry, fill=[1] + [0] * (len(probs) - 1) if output_mode == "labels" else 0)
    seconds["paste"] = time.perf_counter() - t
    return full_labels, full_probs, removed


def inference_settings(loaded: LoadedModel, patch_size=None, overlap=None, tta=None, batch_size=None, threshold=None) -> InferenceConfig:
    """The checkpoint's inference defaults with any user overrides applied.

    Raises:
        SettingError: an override out of range (checked by ``InferenceConfig`` itself).
        ValueError: a threshold for a checkpoint with softmax outputs.
    """
    overrides = {"patch_size": None if patch_size is None else tuple(patch_size), "overlap": overlap,
                 "tta": tta, "batch_size": batch_size, "threshold": threshold}
    changes = {key: value for key, value in overrides.items() if value is not None}
    if "threshold" in changes and loaded.config.model.output_mode != "regions":
        raise ValueError("threshold applies to region (sigmoid) outputs; this checkpoint's softmax labels take the argmax")
    inference = replace(loaded.config.inference, **changes)
    check_window(inference.patch_size, loaded.config.model)
    trained = loaded.config.inference.patch_size
    if inference.patch_size != trained:  # instance norm sees other statistics in another window
        log.warning("windows of %s voxels, where the network was trained and validated with %s: expect other, usually "
                    "lower, scores (see its model card)", "x".join(map(str, inference.patch_size)), "x".join(map(str, trained)))
    return inference


def check_window(patch_size, model: ModelConfig) -> None:
    """Refuse windows the network cannot run (SettingError): they are padded to multiples of its
    divisor, and with no side longer than it the deepest layer holds one voxel, which instance
    normalisation cannot normalise."""
    if max(patch_size) <= model.divisor:
        poolings = len(model.features) - 1
        raise SettingError("patch_size", f"got {tuple(patch_size)}; expected a window with a side longer than {model.divisor} "
                                         f"voxels for this checkpoint's network ({poolings} pooling{'s' if poolings != 1 else ''})")


def postprocess_settings(loaded: LoadedModel, min_component_voxels=None, max_component_distance_mm=None,
                         min_core_component_voxels=None) -> PostprocessConfig:
    """The checkpoint's post-processing with any user overrides applied (SettingError if out of range)."""
    overrides = {"min_component_voxels": min_component_voxels, "max_component_distance_mm": max_component_distance_mm,
                 "min_core_component_voxels": min_core_component_voxels}
    return replace(loaded.config.postprocess, **{key: value for key, value in overrides.items() if value is not None})
