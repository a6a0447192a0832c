"""``brainseg evaluate``: BraTS metrics for one prediction or two folders of cases."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from brainseg.errors import InputError
from brainseg.labels import REGIONS, guess_convention, to_internal
from brainseg.metrics import evaluate, summarise

METRICS = ("dice", "hd95", "iou", "precision", "recall", "specificity", "accuracy")


def load_labels(path: Path) -> tuple[np.ndarray, tuple[float, ...], str]:
    """A label map file as internal labels, its spacing and its convention."""
    from brainseg.io import read_file, read_label_map

    array, affine = read_label_map(path.read_bytes(), path.name) if path.is_file() else read_file(path)[:2]
    convention = guess_convention(array)
    spacing = tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    return to_internal(array, convention, path.name), spacing, convention


def evaluate_files(pred_path: Path, ref_path: Path) -> dict:
    pred, spacing, _ = load_labels(pred_path)
    ref, ref_spacing, convention = load_labels(ref_path)
    if pred.shape != ref.shape:
        raise InputError(f"{pred_path.name}: shape {pred.shape} differs from {ref_path.name}'s {ref.shape}; expected the same grid")
    if not np.allclose(spacing, ref_spacing, atol=1e-3):
        raise InputError(f"{pred_path.name}: voxel size {spacing} differs from {ref_path.name}'s {ref_spacing}")
    return evaluate(pred, ref, ref_spacing, convention)


def _pair_folders(pred_dir: Path, ref_dir: Path) -> list[tuple[str, Path, Path]]:
    """Match each reference case (a folder with a seg file, or a seg file) with a prediction file."""
    from brainseg.io import segmentation_file

    refs: dict[str, Path] = {}
    for p in sorted(ref_dir.iterdir()):
        if p.is_dir():
            seg = segmentation_file(p)
            if seg is not None:
                refs[p.name] = seg
        elif p.name.endswith((".nii", ".nii.gz")):
            refs[p.name.split(".nii")[0].removesuffix("_seg").removesuffix("-seg")] = p
    pairs = []
    for case_id, ref in refs.items():
        candidates = [pred_dir / f"{case_id}_seg.nii.gz", pred_dir / f"{case_id}.nii.gz", pred_dir / f"{case_id}_seg.nii", pred_dir / f"{case_id}.nii"]
        match = next((c for c in candidates if c.is_file()), None)
        if match is not None:
            pairs.append((case_id, match, ref))
    if not pairs:
        raise InputError(f"{pred_dir}: no predictions named like the cases in {ref_dir} (expected CASE_seg.nii.gz)")
    return pairs


def run_evaluate(args) -> int:
    pred, ref = Path(args.prediction), Path(args.reference)
    for p in (pred, ref):
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
    if pred.is_dir() != ref.is_dir():
        raise InputError("give two files or two folders")
    if pred.is_file():
        result = evaluate_files(pred, ref)
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            _print_table({"case": result})
        return 0
    results = {case_id: evaluate_files(p, r) for case_id, p, r in _pair_folders(pred, ref)}
    summary = {r: {m: summarise([res["regions"][r][m] for res in results.values()]) for m in METRICS} for r in REGIONS}
    if args.csv:
        _write_csv(Path(args.csv), results)
    if args.json:
        print(json.dumps({"cases": results, "summary": summary}, indent=2))
    else:
        _print_table(results)
        print(f"{'mean':<28}" + "".join(f"{summary[r]['dice']['mean']:>8.4f}{summary[r]['hd95']['mean']:>9.2f}" for r in REGIONS))
        print(f"{'median':<28}" + "".join(f"{summary[r]['dice']['median']:>8.4f}{summary[r]['hd95']['median']:>9.2f}" for r in REGIONS))
    return 0


def _print_table(results: dict) -> None:
    print(f"{'case':<28}" + "".join(f"{'Dice ' + r:>8}{'HD95 ' + r:>9}" for r in REGIONS))
    for case_id, res in results.items():
        print(f"{case_id:<28}" + "".join(f"{res['regions'][r]['dice']:>8.4f}{res['regions'][r]['hd95']:>9.2f}" for r in REGIONS))


def _write_csv(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case"] + [f"{m}_{r}" for r in REGIONS for m in METRICS])
        for case_id, res in results.items():
            writer.writerow([case_id] + [res["regions"][r][m] for r in REGIONS for m in METRICS])
