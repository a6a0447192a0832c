"""Which post-processing rule helps? Re-scores saved predictions with a rule applied again.

Each prediction folder (``brainseg segment`` output) is matched with the expert labels as
``brainseg evaluate`` matches them; every label map is post-processed again with
``clean_labels(max_component_distance_mm=D)`` for each D (0 = as saved) and scored, or, with
``--core-pieces``, with ``clean_labels(min_core_component_voxels=K)`` for each K. The rules run after
small-component removal in the pipeline too, so a folder segmented with a rule off and re-processed
here gives the label map the pipeline would give with it on. ``--lesion-wise`` adds the BraTS 2023+
lesion-wise scores (GLI parameters).
A second mode, ``--expert``, applies the distance rule (or with ``--core-pieces`` the core-piece rule)
to the expert labels themselves: what it would cost a perfect prediction.

Usage: python scripts/postprocess_check.py ../shared/data/brats PRED_DIR [PRED_DIR ...] [--distances 0 5 10 20] [--json OUT]
       python scripts/postprocess_check.py ../shared/data/brats PRED_DIR [...] --core-pieces 0 20 50 100 --lesion-wise
       python scripts/postprocess_check.py ../shared/data/brats --expert [--distances 5 10 20 | --core-pieces 50]
"""
import argparse
import json
from pathlib import Path

import numpy as np

from brainseg.evaluate_command import pair_folders, reference_cases
from brainseg.scoring import load_labels
from brainseg.labels import REGIONS
from brainseg.lesion_metrics import lesion_wise_scores
from brainseg.metrics import dice, evaluate
from brainseg.postprocess import clean_labels


def score_folder(pred_dir: Path, ref_dir: Path, setting: str, values: list[float], lesion_wise: bool) -> dict:
    """{value: {"dice": [[WT, TC, ET] per case], "hd95": [...], and "lesion_dice", "lesion_hd95" when
    ``lesion_wise``}} for one prediction folder, ``setting`` (a clean_labels argument) at each value."""
    out = {v: {"dice": [], "hd95": [], "lesion_dice": [], "lesion_hd95": []} for v in values}
    for _, pred_path, ref_path in pair_folders(pred_dir, ref_dir).pairs:
        pred, _, _ = load_labels(pred_path)
        ref, spacing, convention = load_labels(ref_path)
        for v in values:
            cleaned = clean_labels(pred, spacing=spacing, **{setting: v})
            regions = evaluate(cleaned, ref, spacing, convention)["regions"]
            out[v]["dice"].append([regions[r]["dice"] for r in REGIONS])
            out[v]["hd95"].append([regions[r]["hd95"] for r in REGIONS])
            if lesion_wise:
                lesions = lesion_wise_scores(cleaned, ref, spacing)["regions"]
                out[v]["lesion_dice"].append([lesions[r]["dice"] for r in REGIONS])
                out[v]["lesion_hd95"].append([lesions[r]["hd95"] for r in REGIONS])
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


def expert_core_cost(ref_dir: Path, pieces: list[int]) -> None:
    """What the tumour-core piece rule costs each expert map scored against itself (a perfect prediction)."""
    for case_id, ref_path in reference_cases(ref_dir).items():
        ref, spacing, convention = load_labels(ref_path)
        cells = []
        for k in pieces:
            cleaned = clean_labels(ref, min_core_component_voxels=k, spacing=spacing)
            regions = evaluate(cleaned, ref, spacing, convention)["regions"]
            lesions = lesion_wise_scores(cleaned, ref, spacing)["regions"]
            cells.append(f"K={k}: Dice TC/ET {regions['TC']['dice']:.3f}/{regions['ET']['dice']:.3f}, HD95 ET "
                         f"{regions['ET']['hd95']:.1f} mm, lesion-wise ET {lesions['ET']['dice']:.3f}")
        print(case_id, "; ".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("reference")
    parser.add_argument("predictions", nargs="*")
    parser.add_argument("--distances", type=float, nargs="+", default=[0.0, 5.0, 10.0, 20.0])
    parser.add_argument("--core-pieces", type=int, nargs="+", help="sweep min_core_component_voxels instead")
    parser.add_argument("--lesion-wise", action="store_true", help="add BraTS 2023+ lesion-wise scores")
    parser.add_argument("--expert", action="store_true", help="apply the rule to the expert labels instead")
    parser.add_argument("--json", help="write per-case scores here")
    args = parser.parse_args()
    ref_dir = Path(args.reference)
    if args.expert:
        if args.core_pieces:
            expert_core_cost(ref_dir, args.core_pieces)
        else:
            expert_cost(ref_dir, args.distances)
        return
    setting, values, unit = (("min_core_component_voxels", args.core_pieces, " voxels") if args.core_pieces
                             else ("max_component_distance_mm", args.distances, " mm"))
    results = {}
    for folder in args.predictions:
        results[folder] = score_folder(Path(folder), ref_dir, setting, values, args.lesion_wise)
        for value, scores in results[folder].items():
            dsc, hd = np.array(scores["dice"]), np.array(scores["hd95"])
            line = (f"{folder} {value:g}{unit}: Dice WT/TC/ET {' / '.join(f'{v:.3f}' for v in dsc.mean(0))} "
                    f"(mean {dsc.mean():.3f}), HD95 {' / '.join(f'{v:.1f}' for v in hd.mean(0))} mm, "
                    f"HD95 WT per case {' '.join(f'{v:.1f}' for v in hd[:, 0])}")
            if args.lesion_wise:
                lesion_dsc, lesion_hd = np.array(scores["lesion_dice"]), np.array(scores["lesion_hd95"])
                line += (f"; lesion-wise Dice {' / '.join(f'{v:.3f}' for v in lesion_dsc.mean(0))}, "
                         f"HD95 {' / '.join(f'{v:.1f}' for v in lesion_hd.mean(0))} mm")
            print(line, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
