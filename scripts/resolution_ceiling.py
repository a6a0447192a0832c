"""Best Dice a working resolution allows: the expert labels taken to the model grid and back.

A network at spacing S can do no better than the truth itself resampled to S and restored the way
the pipeline restores logits (trilinear to the input grid, threshold 0.5). Soft targets (each coarse
voxel's share of the region, what ``brainseg train`` fits) are compared with thresholded masks.

Usage: python scripts/resolution_ceiling.py ../shared/data/brats [--spacings 2 1.5] [--json OUT]
"""
import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from brainseg.config import PreprocessConfig
from brainseg.data import load_reference, region_shares
from brainseg.labels import REGIONS, regions_to_labels
from brainseg.metrics import evaluate
from brainseg.preprocess import paste, prepare, to_box
from brainseg.train import DEFAULT_VALIDATION


def restored_regions(labels: np.ndarray, case, spacing: float) -> dict[str, np.ndarray]:
    """Internal labels after the truth's round trip through a ``spacing`` mm grid, per target kind."""
    geometry = prepare(case, replace(PreprocessConfig(), spacing=(spacing,) * 3)).geometry
    soft = region_shares(labels, geometry)
    out = {}
    for targets, coarse in (("thresholded", (soft >= 0.5).float()), ("soft", soft)):
        fine = (to_box(coarse, geometry) > 0.5).numpy()
        out[targets] = paste(regions_to_labels(*fine), geometry)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--cases", nargs="*", default=list(DEFAULT_VALIDATION))
    parser.add_argument("--spacings", nargs="*", type=float, default=[2.0, 1.5])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    for case_id in args.cases:
        case, labels = load_reference(args.data / case_id)
        for spacing in args.spacings:
            for targets, restored in restored_regions(labels, case, spacing).items():
                result = evaluate(restored, labels, case.spacing)
                dice = {r: result["regions"][r]["dice"] for r in REGIONS}
                rows.append({"case": case_id, "spacing": spacing, "targets": targets, **dice})
                print(f"{case_id:24s} {spacing:4.1f} mm {rows[-1]['targets']:11s} "
                      + " ".join(f"{r} {dice[r]:.3f}" for r in REGIONS), flush=True)
    for spacing in args.spacings:
        for targets in ("thresholded", "soft"):
            sel = [r for r in rows if r["spacing"] == spacing and r["targets"] == targets]
            print(f"{'mean':24s} {spacing:4.1f} mm {targets:11s} "
                  + " ".join(f"{r} {np.mean([s[r] for s in sel]):.3f}" for r in REGIONS))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
