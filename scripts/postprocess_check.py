"""Which distance rule helps? Re-scores saved predictions with distant components removed.

Each prediction folder (``brainseg segment`` output) is matched with the expert labels as
``brainseg evaluate`` matches them; every label map is post-processed again with
``clean_labels(max_component_distance_mm=D)`` for each D (0 = as saved) and scored. The rule runs
after small-component removal in the pipeline too, so a folder segmented with the rule off and
re-processed here gives the label map the pipeline would give with the rule on.
A second mode, ``--expert``, applies the rule to the expert labels themselves: what it would cost a
perfect prediction.

Usage: python scripts/postprocess_check.py ../shared/data/brats PRED_DIR [PRED_DIR ...] [--distances 0 5 10 20] [--json OUT]
       python scripts/postprocess_check.py ../shared/data/brats --expert [--distances 5 10 20]
"""
import argparse
import json
from pathlib import Path

import numpy as np

from brainseg.evaluate_command import load_labels, pair_folders, reference_cases
from brainseg.labels import REGIONS
from brainseg.metrics import dice, evaluate
from brainseg.postprocess import clean_labels


def score_folder(pred_dir: Path, ref_dir: Path, distances: list[float]) -> dict:
    """{distance: {"dice": [[WT, TC, ET] per case], "hd95": [...]}} for one prediction folder."""
    out = {d: {"dice": [], "hd95": []} for d in distances}
    for _, pred_path, ref_path in pair_folders(pred_dir, ref_dir).pairs:
        pred, _, _ = load_labels(pred_path)
        ref, spacing, convention = load_labels(ref_path)
        for d in distances:
            regions = evaluate(clean_labels(pred, max_component_distance_mm=d, spacing=spacing), ref, spacing, convention)["regions"]
            out[d]["dice"].append([regions[r]["dice"] for r in REGIONS])
            out[d]["hd95"].append([regions[r]["hd95"] for r in REGIONS])
    return out


def expert_cost(ref_dir: Path, distances: list[float]) -> None:
    """Whole-tumour voxels the rule removes from each expert label map, and the Dice left."""
    for case_id, ref_path in reference_cases(ref_dir).items():
        ref, spacing, _ = load_labels(ref_path)
        cells = []
        for d in distances:
            kept = clean_labels(ref, max_component_distance_mm=d, spacing=spacing) > 0
            cells.append(f"{d:g} mm: -{int((ref > 0).sum() - kept.sum())} voxels, WT Dice {dice(kept, ref > 0):.4f}")
        print(case_id, "; ".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("reference")
    parser.add_argument("predictions", nargs="*")
    parser.add_argument("--distances", type=float, nargs="+", default=[0.0, 5.0, 10.0, 20.0])
    parser.add_argument("--expert", action="store_true", help="apply the rule to the expert labels instead")
    parser.add_argument("--json", help="write per-case scores here")
    args = parser.parse_args()
    ref_dir = Path(args.reference)
    if args.expert:
        expert_cost(ref_dir, args.distances)
        return
    results = {}
    for folder in args.predictions:
        results[folder] = score_folder(Path(folder), ref_dir, args.distances)
        for d, scores in results[folder].items():
            dsc, hd = np.array(scores["dice"]), np.array(scores["hd95"])
            print(f"{folder} {d:g} mm: Dice WT/TC/ET {' / '.join(f'{v:.3f}' for v in dsc.mean(0))} "
                  f"(mean {dsc.mean():.3f}), HD95 {' / '.join(f'{v:.1f}' for v in hd.mean(0))} mm, "
                  f"HD95 WT per case {' '.join(f'{v:.1f}' for v in hd[:, 0])}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
