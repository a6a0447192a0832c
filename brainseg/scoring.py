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

from brainseg.io import on_grid_of
from brainseg.labelmaps import read_label_map
from brainseg.labels import readable_as
from brainseg.lesion_metrics import lesion_wise_scores
from brainseg.metrics import evaluate

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
    ``lesion_challenge`` (a key of ``config.LESION_CHALLENGES``) adds the BraTS 2023+
    lesion-wise scores with that challenge's parameters under "lesion_wise".
    Raises InputError naming both files when the prediction is not on the reference's grid.
    """
    pred, ref = read_label_map(pred_path), read_label_map(ref_path)
    if pred.has_geometry != ref.has_geometry:  # one .npy: its voxels are taken in the other's order, unchecked
        npy = pred if not pred.has_geometry else ref
        log.warning("%s: no voxel-to-world matrix (.npy), taken to be stored as %s is; a flipped or transposed array "
                    "would be scored against the wrong voxels", npy.name, (ref if npy is pred else pred).name)
    # the same voxels stored in another orientation (a tool that wrote RAS for an LPS reference) are moved
    values = on_grid_of(ref.name, ref.values.shape, ref.affine, pred.name, pred.values, pred.affine,
                        "a prediction on the reference's grid", pred.has_geometry and ref.has_geometry)
    pred = pred._replace(values=values, affine=ref.affine) if values is not pred.values else pred
    # decided once per map (a guess scans the whole volume), then read in it
    pred_read_as, pred_source = pred.read_as(pred_convention, by_name=False)
    convention, ref_source = ref.read_as(ref_convention, ref_dataset_convention)
    ambiguous = pred_source == "values" and not (pred.values == 4).any()  # 1-3 only: BraTS 2023 or the Decathlon's order
    if ambiguous and ref_source != "values" and pred_read_as != convention and readable_as(pred.values, convention):
        # a prediction for a dataset whose labels are named is read in them (nnU-Net's for Task01 hold its values)
        pred_read_as, pred_source = convention, "reference"
    pred_labels, _ = pred.internal(pred_read_as)
    ref_labels, _ = ref.internal(convention)
    return {**score_labels(pred_labels, ref_labels, ref.spacing, convention, lesion_challenge),
            "label_conventions": _conventions_read(pred_read_as, pred_source, convention, ref_source)}


def score_missing(ref_path: str | Path, ref_convention: str | None = None, ref_dataset_convention: str | None = None,
                  lesion_challenge: str | None = None) -> dict:
    """The metrics of an empty prediction against a reference: how the BraTS platform scores a case whose
    prediction is missing (Dice 0 and HD95 ``metrics.HD95_ONE_EMPTY`` wherever the reference has the region)."""
    ref = read_label_map(ref_path)
    convention, ref_source = ref.read_as(ref_convention, ref_dataset_convention)
    ref_labels, _ = ref.internal(convention)
    return {**score_labels(np.zeros_like(ref_labels), ref_labels, ref.spacing, convention, lesion_challenge),
            "label_conventions": _conventions_read(convention, "missing", convention, ref_source), "missing": True}


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
