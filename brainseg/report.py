"""Tables and files that describe a segmentation: volume and slice statistics, metrics, model cards.

Rows are lists of plain dicts (one per structure) so a UI can show them and CSV/JSON can carry them.
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from brainseg import __version__
from brainseg.config import to_plain
from brainseg.labels import CONVENTIONS, LABEL_NAMES, REGION_NAMES, REGIONS, region_counts, region_masks
from brainseg.metrics import dice, voxel_volume_ml
from brainseg.naming import case_stem

REGION_TITLES = {region: f"{name} ({region})" for region, name in REGION_NAMES.items()}
VOLUME_COLUMNS = ("structure", "kind", "voxels", "volume_ml", "brain_percent")


def case_name(sources: Mapping[str, str]) -> str:
    """A case's name from its scans' file names: "Brats18_x_1_flair.nii.gz" -> "Brats18_x_1"."""
    names = list(sources.values())
    if not names:
        return "case"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", case_stem(names[0])).strip("._-") or "case"


def volume_rows(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``volume_stats`` as rows: the three regions, then each label by its file value."""
    rows = []
    for region in REGIONS:
        item = stats["regions"][region]
        rows.append(_volume_row(REGION_TITLES[region], "region", item))
    for value, item in stats["labels"].items():
        rows.append(_volume_row(f"{item['name']} (label {value})", "label", item))
    return rows


def _volume_row(name: str, kind: str, item: Mapping[str, Any]) -> dict[str, Any]:
    share = item.get("brain_percent")
    return {
        "structure": name,
        "kind": kind,
        "voxels": int(item["voxels"]),
        "volume_ml": round(float(item["ml"]), 3),
        "brain_percent": None if share is None else round(float(share), 3),
    }


def slice_rows(counts: Sequence[int], pixel_mm2: float, convention: str) -> list[dict[str, Any]]:
    """One slice's tumour per region and label.

    Args:
        counts: voxels of internal labels 0-3 on the slice (a row of ``metrics.slice_stats``).
        pixel_mm2: area of one voxel face in that slice.
    """
    counts = [int(c) for c in counts]
    regions = region_counts(counts)
    rows = [{"structure": REGION_TITLES[r], "voxels": v, "area_mm2": round(v * pixel_mm2, 2)} for r, v in regions.items()]
    for internal, name in LABEL_NAMES.items():
        value = CONVENTIONS[convention][internal]
        rows.append({"structure": f"{name} (label {value})", "voxels": counts[internal], "area_mm2": round(counts[internal] * pixel_mm2, 2)})
    return rows


def rows_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows as CSV text with a header line (empty cells for missing values)."""
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


def metric_rows(evaluation: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Dice and HD95 per region from ``metrics.evaluate``, and the lesion-wise scores when the evaluation
    holds them (``lesion_metrics.lesion_wise_scores`` under "lesion_wise")."""
    rows = []
    for r in REGIONS:
        row = {
            "region": REGION_TITLES[r],
            "dice": round(float(evaluation["regions"][r]["dice"]), 4),
            "hd95_mm": round(float(evaluation["regions"][r]["hd95"]), 2),
            "predicted_voxels": int(evaluation["regions"][r]["pred_voxels"]),
            "reference_voxels": int(evaluation["regions"][r]["ref_voxels"]),
        }
        if "lesion_wise" in evaluation:
            lesions = evaluation["lesion_wise"]["regions"][r]
            row.update(lesion_dice=round(float(lesions["dice"]), 4), lesion_hd95_mm=round(float(lesions["hd95"]), 2),
                       lesions=f"{lesions['matched']} / {lesions['missed']} / {lesions['false_positives']}")
        rows.append(row)
    return rows


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Dice between two internal label maps, per region (1.0 where both are empty)."""
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: {a.shape} and {b.shape}")
    masks_a, masks_b = region_masks(a), region_masks(b)
    return {r: dice(masks_a[r], masks_b[r]) for r in REGIONS}


def comparison_rows(
    first: tuple[str, np.ndarray], second: tuple[str, np.ndarray], spacing, truth: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """Two segmentations of one case side by side, per region: volumes, their Dice, each one's Dice to ``truth``.

    Args:
        first, second: (model name, internal label map).
        spacing: voxel size in mm.
    """
    (name_a, a), (name_b, b) = first, second
    if name_a == name_b:
        name_b = f"{name_b} (second run)"
    ml = voxel_volume_ml(spacing)
    between = agreement(a, b)
    scores = {name_a: agreement(a, truth), name_b: agreement(b, truth)} if truth is not None else {}
    masks_a, masks_b = region_masks(a), region_masks(b)
    rows = []
    for region in REGIONS:
        row = {
            "region": region,
            f"{name_a} (mL)": round(int(masks_a[region].sum()) * ml, 3),
            f"{name_b} (mL)": round(int(masks_b[region].sum()) * ml, 3),
            "Dice between them": round(between[region], 4),
        }
        for name, per_region in scores.items():
            row[f"{name} vs truth (Dice)"] = round(per_region[region], 4)
        rows.append(row)
    return rows


def run_record(loaded, inference, postprocess, segmentation) -> dict:
    """What made a segmentation: the checkpoint (path and SHA-256), brainseg's version, the inference and
    post-processing settings, the device and precision used, timings, and what post-processing removed."""
    from brainseg.checkpoint import fingerprint  # here: the checkpoint module needs torch, the tables do not

    saved = loaded.path is not None and Path(loaded.path).is_file()
    return {
        "model": loaded.name,
        "checkpoint": str(loaded.path) if saved else None,
        "checkpoint_sha256": fingerprint(loaded.path) if saved else None,
        "brainseg_version": __version__,
        "settings": settings_record(inference, postprocess),
        "device": segmentation.device,
        "precision": segmentation.precision,
        "windows": segmentation.windows,
        "window_shape": list(segmentation.window_shape),
        "bias_corrected": list(segmentation.bias_corrected),
        "bias_correction": list(segmentation.bias_correction),
        "seconds": {k: round(v, 3) for k, v in segmentation.seconds.items()},
        "postprocess_removed_ml": round(segmentation.removed_ml, 3),
        "warnings": list(segmentation.warnings),
    }


def settings_record(inference, postprocess) -> dict:
    """The inference and post-processing settings as plain JSON values."""
    return {"inference": to_plain(asdict(inference)), "postprocess": to_plain(asdict(postprocess))}


def summary(
    case, segmentation, record: Mapping[str, Any], evaluation: Mapping | None = None,
    convention: str | None = None, volumes: Mapping | None = None, reference: str | None = None,
) -> dict:
    """Everything a saved result should record: inputs, how it was made (``run_record``), volumes, scores.

    ``convention`` and ``volumes`` are the label values the downloads use and the statistics in them;
    by default the case's own convention and the segmentation's statistics. ``reference`` names the
    file ``evaluation`` scored against.
    """
    out = {
        "inputs": dict(case.sources),
        "shape": list(case.shape),
        "spacing_mm": [round(s, 4) for s in case.spacing],
        "label_convention": convention or case.convention,
        **record,
        "volumes": segmentation.stats if volumes is None else volumes,
        "notice": "research use only; not for clinical decisions",
    }
    if evaluation is not None:
        out["evaluation"] = {r: {"dice": evaluation["regions"][r]["dice"], "hd95_mm": evaluation["regions"][r]["hd95"]} for r in REGIONS}
        if "lesion_wise" in evaluation:
            out["lesion_wise"] = evaluation["lesion_wise"]
        out["reference"] = reference
    return out


def to_json(payload: Any) -> str:
    """JSON text of a payload holding numpy scalars/arrays; NaN and infinity become null."""
    return json.dumps(to_plain(payload), indent=2, allow_nan=False)


def model_card(path: Path | None, config, provenance: Mapping[str, Any]) -> str:
    """Markdown describing a checkpoint: ``<checkpoint>.md`` beside it if there is one, else its provenance."""
    if path is not None:
        card = Path(path).with_suffix(".md")
        if card.is_file():
            return card.read_text(encoding="utf-8")
    lines = [f"**{Path(path).name if path else 'model'}**"]
    train = provenance.get("train_cases") or []
    validation = provenance.get("validation_cases") or []
    if train or validation:
        lines.append(f"- Training data: {len(train)} cases, validated on {len(validation)} ({provenance.get('data', 'data source not recorded')})")
    scores = (provenance.get("validation") or {}).get("dice") or {}
    if scores:
        lines.append("- Validation Dice: " + ", ".join(f"{r} {float(scores[r]):.3f}" for r in REGIONS if r in scores))
    hd = (provenance.get("validation") or {}).get("hd95") or {}
    if hd:
        lines.append("- Validation HD95: " + ", ".join(f"{r} {float(hd[r]):.1f} mm" for r in REGIONS if r in hd))
    if "step" in provenance or "training_seconds" in provenance:
        minutes = float(provenance.get("training_seconds", 0)) / 60
        lines.append(f"- Trained for {provenance.get('step', '?')} steps ({minutes:.1f} min on {provenance.get('hardware', 'unrecorded hardware')})")
    model, pre, inference = config.model, config.preprocess, config.inference
    lines.append(
        f"- U-Net features {list(model.features)}, {model.norm} norm, output {model.output_mode}; "
        f"input {', '.join(m.upper() for m in pre.modalities)} at {pre.spacing[0]:g} mm"
        + (f", N4 bias-field correction of {', '.join(m.upper() for m in pre.bias_correction)}" if pre.bias_correction else "")
    )
    lines.append(f"- Default patch {'x'.join(str(p) for p in inference.patch_size)}, overlap {inference.overlap:g}, TTA {'on' if inference.tta else 'off'}")
    if scores and max(float(v) for v in scores.values()) < 0.5:
        lines.append("- **Low validation Dice: this checkpoint is not a usable tumour segmenter.**")
    return "\n".join(lines)
