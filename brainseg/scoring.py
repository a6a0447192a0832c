"""Scoring label map files against expert references, as ``brainseg evaluate`` does.

Files are put on one grid first (a prediction stored in another orientation of the reference's voxels
is reoriented losslessly; one on another grid is refused), and each file's label values are read in
its convention (named in a brainseg header, by a dataset.json, by a BraTS 2023+ name, or guessed).
``metrics.evaluate`` scores arrays that are already internal labels on one grid.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from brainseg.errors import InputError
from brainseg.io import labels_onto_grid, on_grid_of
from brainseg.labelmaps import LabelMap, read_label_map
from brainseg.labels import readable_as
from brainseg.lesion_metrics import lesion_wise_scores
from brainseg.metrics import evaluate
from brainseg.naming import challenge_of_name, is_slicer_segmentation

log = logging.getLogger(__name__)


def load_labels(path: str | Path) -> tuple[np.ndarray, tuple[float, ...], str]:
    """A label map file as internal labels, its spacing and its convention."""
    labels = read_label_map(path)
    internal, convention = labels.internal()
    return internal, labels.spacing, convention


def evaluate_files(pred_path: str | Path, ref_path: str | Path, pred_convention: str | None = None,
                   ref_convention: str | None = None, ref_dataset_convention: str | None = None,
                   lesion_challenge: str | None = None) -> dict:
    """Metrics of one prediction against its reference.

    Each file's label convention is the one given (``labels.READABLE``) or, when None, the one its
    header names (brainseg's own label maps), the reference's dataset.json names
    (``ref_dataset_convention``), the one a BraTS 2023+ file name implies (references only), for a
    prediction holding only 1-3 the one its reference's convention was named, else guessed from its values.
    ``lesion_challenge`` (a key of ``config.LESION_CHALLENGES``, or ``AUTO_CHALLENGE``: the one the
    reference's BraTS 2023+ file name names, else GLI) adds the BraTS 2023+ lesion-wise scores with that
    challenge's parameters under "lesion_wise".
    Raises InputError naming both files when the prediction is not on the reference's grid.
    """
    pred, ref = read_label_map(pred_path), read_label_map(ref_path)
    if pred.has_geometry != ref.has_geometry:  # one .npy: its voxels are taken in the other's order, unchecked
        npy = pred if not pred.has_geometry else ref
        log.warning("%s: no voxel-to-world matrix (.npy), taken to be stored as %s is; a flipped or transposed array "
                    "would be scored against the wrong voxels", npy.name, (ref if npy is pred else pred).name)
    geometry = pred.has_geometry and ref.has_geometry
    if geometry and is_slicer_segmentation(ref.name):  # cropped to its segments: placed on the prediction's grid
        placed = labels_onto_grid(ref.values, ref.affine, pred.values.shape, pred.affine)
        if placed is not None:
            log.info("%s: covers part of %s's grid; scored on that grid, background around it", ref.name, pred.name)
            ref = ref._replace(values=placed, affine=pred.affine)
    # the same voxels stored in another orientation (a tool that wrote RAS for an LPS reference) are moved
    values = on_grid_of(ref.name, ref.values.shape, ref.affine, pred.name, pred.values, pred.affine,
                        "a prediction on the reference's grid", geometry, part=is_slicer_segmentation(pred.name))
    pred = pred._replace(values=values, affine=ref.affine) if values is not pred.values else pred
    # decided once per map (a guess scans the whole volume), then read in it
    convention, ref_source = ref.read_as(ref_convention, ref_dataset_convention)
    pred_read_as, pred_source = _prediction_convention(pred, pred_convention, convention, ref_source)
    pred_labels, _ = pred.internal(pred_read_as)
    ref_labels, _ = ref.internal(convention)
    return {**score_labels(pred_labels, ref_labels, ref.spacing, convention, _challenge(lesion_challenge, ref_path)),
            "label_conventions": _conventions_read(pred_read_as, pred_source, convention, ref_source)}


def _prediction_convention(pred: LabelMap, given: str | None, ref_convention: str, ref_source: str) -> tuple[str, str]:
    """The convention a prediction is read in and where it came from (``LabelMap.read_as``, without its file
    name: another tool's prediction named for its case may hold any convention's values). Where its values
    cannot tell (1-3 only: BraTS 2023 or the Decathlon's order; 3 and 4: BraTS 2024), the reference's
    convention, when the user or a file named that one and the prediction's values all mean something in it."""
    try:
        read_as, source = pred.read_as(given, by_name=False, name_labels="evaluate --prediction-labels")
    except InputError:  # both 3 and 4
        if ref_convention == "brats2024" and ref_source != "values" and readable_as(pred.values, ref_convention):
            return ref_convention, "reference"
        raise
    ambiguous = source == "values" and not (pred.values == 4).any()
    if ambiguous and ref_source != "values" and read_as != ref_convention and readable_as(pred.values, ref_convention):
        # a prediction for a dataset whose labels are named is read in them (nnU-Net's for Task01 hold its values)
        return ref_convention, "reference"
    return read_as, source


def score_missing(ref_path: str | Path, ref_convention: str | None = None, ref_dataset_convention: str | None = None,
                  lesion_challenge: str | None = None) -> dict:
    """The metrics of an empty prediction against a reference: how the BraTS platform scores a case whose
    prediction is missing (Dice 0 and HD95 ``metrics.HD95_ONE_EMPTY`` wherever the reference has the region)."""
    ref = read_label_map(ref_path)
    convention, ref_source = ref.read_as(ref_convention, ref_dataset_convention)
    ref_labels, _ = ref.internal(convention)
    return {**score_labels(np.zeros_like(ref_labels), ref_labels, ref.spacing, convention,
                          _challenge(lesion_challenge, ref_path)),
            "label_conventions": _conventions_read(convention, "missing", convention, ref_source), "missing": True}


AUTO_CHALLENGE = "auto"


def _challenge(lesion_challenge: str | None, ref_path: str | Path) -> str | None:
    """The lesion-wise challenge to score a case with: ``AUTO_CHALLENGE`` becomes the one its reference's
    BraTS 2023+ file name names (BraTS-MET-...: metastases are scored with their own parameters), else GLI."""
    if lesion_challenge != AUTO_CHALLENGE:
        return lesion_challenge
    return challenge_of_name(ref_path) or "GLI"


def _conventions_read(pred_convention: str, pred_source: str, ref_convention: str, ref_source: str) -> dict:
    """Which convention each map was read in and from what (header, name, dataset.json, values...), so a
    guessed one can be checked afterwards."""
    how = {"prediction": pred_source, "reference": ref_source}
    return {"prediction": pred_convention, "reference": ref_convention, "read_from": how,
            "guessed": [who for who, source in how.items() if source == "values"]}


def score_labels(pred: np.ndarray, ref: np.ndarray, spacing, ref_convention: str, lesion_challenge: str | None = None) -> dict:
    """``metrics.evaluate`` of internal label maps on one grid (per-label keys in the reference's
    ``ref_convention``), with the lesion-wise scores under "lesion_wise" when ``lesion_challenge`` names one."""
    result = evaluate(pred, ref, spacing, ref_convention)
    if lesion_challenge:
        result["lesion_wise"] = lesion_wise_scores(pred, ref, spacing, lesion_challenge)
    return result
