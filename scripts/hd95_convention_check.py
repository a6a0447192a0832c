"""How far brainseg's HD95 is from the BraTS 2023+ code's, which weights surface elements by their area.

brainseg measures HD95 between surface voxels (``metrics.hd95``); the challenge's lesion-wise code calls
DeepMind's ``surface_distance`` package (``compute_surface_distances`` + ``compute_robust_hausdorff``),
whose surface points are weighted by the area they stand for. This scores saved predictions both ways,
volume-wise and lesion-wise (GLI rules), and prints each case's HD95 per region and the mean difference.

With ``--monai`` it also prints MONAI's ``compute_hausdorff_distance(percentile=95)`` (face-neighbour
surfaces, what many published BraTS results report) volume-wise.

Needs ``pip install surface-distance`` (and ``monai`` for --monai; neither is a brainseg dependency: used
here as references only).

Usage: python scripts/hd95_convention_check.py PRED_DIR REF_DIR [--challenge GLI] [--monai]
    PRED_DIR holds CASE_seg.nii.gz from ``brainseg segment``; REF_DIR the case folders with their seg files.
"""
import argparse
from pathlib import Path

import numpy as np

import brainseg.lesion_metrics as lesion_metrics
from brainseg.config import LESION_CHALLENGES
from brainseg.labels import REGIONS, region_masks
from brainseg.metrics import hd95
from brainseg.naming import segmentation_file
from brainseg.scoring import load_labels


def surfel_hd95(pred: np.ndarray, ref: np.ndarray, spacing) -> float:
    import surface_distance

    distances = surface_distance.compute_surface_distances(ref.astype(bool), pred.astype(bool), tuple(map(float, spacing)))
    value = surface_distance.compute_robust_hausdorff(distances, 95)
    return float(value) if np.isfinite(value) else lesion_metrics.MISSED_HD95  # the challenge's penalty for inf


def monai_hd95(pred: np.ndarray, ref: np.ndarray, spacing) -> float:
    import torch
    from monai.metrics import compute_hausdorff_distance

    as_batch = [torch.from_numpy(m.astype(np.float32))[None, None] for m in (pred, ref)]
    return float(compute_hausdorff_distance(*as_batch, percentile=95, spacing=tuple(map(float, spacing))).item())


def lesion_hd95(pred: np.ndarray, ref: np.ndarray, spacing, distance, challenge: str) -> float:
    dilation, min_volume = LESION_CHALLENGES[challenge]  # the lesion rules stay brainseg's; only the distance changes
    return lesion_metrics.lesion_wise(pred, ref, spacing, dilation, min_volume, distance).hd95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pred_dir", type=Path)
    parser.add_argument("ref_dir", type=Path)
    parser.add_argument("--challenge", default="GLI", choices=list(LESION_CHALLENGES))
    parser.add_argument("--monai", action="store_true", help="also MONAI's volume-wise HD95 (face-neighbour surfaces)")
    args = parser.parse_args()
    monai_rows = {region: [] for region in REGIONS}
    rows = []
    for pred_path in sorted(args.pred_dir.glob("*_seg.nii.gz")):
        case = pred_path.name[: -len("_seg.nii.gz")]
        pred, _, _ = load_labels(pred_path)
        ref, spacing, _ = load_labels(segmentation_file(args.ref_dir / case))
        p, r = region_masks(pred), region_masks(ref)
        for region in REGIONS:
            row = (case, region, hd95(p[region], r[region], spacing), surfel_hd95(p[region], r[region], spacing),
                   lesion_hd95(p[region], r[region], spacing, hd95, args.challenge),
                   lesion_hd95(p[region], r[region], spacing, surfel_hd95, args.challenge))
            rows.append(row)
            extra = ""
            if args.monai:
                monai_rows[region].append((row[2], monai_hd95(p[region], r[region], spacing)))
                extra = f"   MONAI {monai_rows[region][-1][1]:7.2f} mm"
            print(f"{case:<24} {region}  volume HD95 {row[2]:7.2f} vs {row[3]:7.2f} mm   lesion-wise {row[4]:7.2f} vs {row[5]:7.2f} mm{extra}")
    print("mean (brainseg vs surface elements):")
    for region in REGIONS:
        values = np.array([row[2:] for row in rows if row[1] == region])
        means = values.mean(axis=0)
        print(f"  {region}: volume {means[0]:.2f} vs {means[1]:.2f} mm, lesion-wise {means[2]:.2f} vs {means[3]:.2f} mm "
              f"(largest case difference {np.abs(values[:, 0] - values[:, 1]).max():.2f} / {np.abs(values[:, 2] - values[:, 3]).max():.2f} mm)")
    if args.monai:
        print("mean (brainseg vs MONAI), volume-wise:")
        for region, pairs in monai_rows.items():
            ours, theirs = np.array(pairs).T
            print(f"  {region}: {ours.mean():.2f} vs {theirs.mean():.2f} mm (MONAI minus brainseg per case: "
                  f"{(theirs - ours).min():+.2f} to {(theirs - ours).max():+.2f} mm)")


if __name__ == "__main__":
    main()
