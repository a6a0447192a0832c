"""How does a checkpoint hold up when scans are acquired differently from its training data?

Each validation case is altered the way other sites' and other years' scans differ from the BraTS 2018
training data, segmented with the checkpoint's default settings (as ``brainseg segment`` does) and
scored against the expert labels taken through the same alteration:

- ``as distributed``: the files as they are (the reference row);
- ``RAS storage``: the same voxels stored with the first two axes reversed (RAS instead of LPS), as many
  converters write them; the result should not change;
- ``3 mm slices`` / ``5 mm slices``: a thick-slice axial acquisition, simulated by averaging 3 or 5
  consecutive axial slices (partial volume); the expert label of the middle slice is the reference;
- ``bias field``: an uncorrected coil inhomogeneity, a smooth multiplicative field per modality (the
  exponential of a random cubic polynomial, coefficients within +-0.5 as in TorchIO's RandomBiasField);
- ``noise``: Rician noise of 5% of each modality's mean brain intensity, inside the brain.

The random alterations use a fixed seed per case, so a run repeats; ``--draws N`` draws each of them N
times per case (draw 1 is the single draw of a run without the option), so one lucky or unlucky field
does not decide a row. Output: one line per case, condition and draw, then the mean per condition (Dice,
HD95 in mm, and the whole-tumour volume error in mL) and, with several draws, the lowest and highest
per-draw mean Dice.

``--bias-correct`` chooses the scans N4 bias-field correction runs on, as ``brainseg segment
--bias-correct`` does (default: the checkpoint's own choice); ``--conditions`` picks some of the alterations.

Usage: python scripts/acquisition_check.py ../shared/data/brats CASE [CASE ...] [--checkpoint CK] [--json OUT]
       python scripts/acquisition_check.py ../shared/data/brats CASE ... --conditions "bias field" noise --draws 3
       python scripts/acquisition_check.py ../shared/data/brats CASE ... --bias-correct none --conditions "as distributed" "bias field"
"""
import argparse
import json
import logging
from pathlib import Path

import numpy as np

from brainseg.checkpoint import default_checkpoint, load_checkpoint
from brainseg.cli import modality_list
from brainseg.io import Case, load_case
from brainseg.labelmaps import read_label_map
from brainseg.labels import REGIONS
from brainseg.metrics import evaluate, voxel_volume_ml
from brainseg.naming import case_files, segmentation_file
from brainseg.pipeline import segment_case


def ras_storage(images: dict, ref: np.ndarray, affine: np.ndarray, rng) -> tuple[dict, np.ndarray, np.ndarray]:
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = np.array(ref.shape[:2]) - 1
    return ({m: a[::-1, ::-1].copy() for m, a in images.items()}, ref[::-1, ::-1].copy(), affine @ flip)


def thick_slices(k: int):
    def alter(images: dict, ref: np.ndarray, affine: np.ndarray, rng):
        n = ref.shape[2] // k
        thick = {m: a[:, :, :n * k].astype(np.float32).reshape(*a.shape[:2], n, k).mean(-1) for m, a in images.items()}
        new_affine = affine.copy()
        new_affine[:3, 3] += affine[:3, 2] * (k - 1) / 2  # voxel j's centre: the middle of slices jk..jk+k-1
        new_affine[:3, 2] *= k
        return thick, ref[:, :, k // 2:n * k:k].copy(), new_affine
    return alter


def bias_field(images: dict, ref: np.ndarray, affine: np.ndarray, rng):
    grid = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in ref.shape], indexing="ij")
    powers = [(i, j, k) for i in range(4) for j in range(4 - i) for k in range(4 - i - j)]
    out = {}
    for m, image in images.items():
        log_field = sum(rng.uniform(-0.5, 0.5) * grid[0] ** i * grid[1] ** j * grid[2] ** k for i, j, k in powers)
        out[m] = image.astype(np.float32) * np.exp(log_field)
    return out, ref, affine


def rician_noise(images: dict, ref: np.ndarray, affine: np.ndarray, rng):
    out = {}
    for m, image in images.items():
        image = image.astype(np.float32)
        brain = image != 0
        sigma = 0.05 * float(image[brain].mean())
        noisy = np.hypot(image + rng.normal(0, sigma, image.shape), rng.normal(0, sigma, image.shape))
        out[m] = np.where(brain, noisy, 0).astype(np.float32)
    return out, ref, affine


RANDOM = ("bias field", "noise")
CONDITIONS = {
    "as distributed": lambda images, ref, affine, rng: (images, ref, affine),
    "RAS storage": ras_storage,
    "3 mm slices": thick_slices(3),
    "5 mm slices": thick_slices(5),
    "bias field": bias_field,
    "noise": rician_noise,
}


def runs(conditions: list[str], draws: int) -> list[tuple[str, str, int]]:
    """(row name, condition, draw) for each segmentation: the random conditions ``draws`` times."""
    out = []
    for name in conditions:
        for draw in range(draws if name in RANDOM else 1):
            out.append((name if draw == 0 else f"{name} #{draw + 1}", name, draw))
    return out


def check_case(folder: Path, loaded, seed: int, conditions: list[str], bias_correct, draws: int = 1) -> dict:
    case = load_case(folder)
    ref = read_label_map(segmentation_file(folder)).internal()[0]
    rows = {}
    for row, name, draw in runs(conditions, draws):
        rng = np.random.default_rng(seed + 1000 * draw)  # draw 0: the seed of a single-draw run
        images, altered_ref, affine = CONDITIONS[name](case.images, ref, case.affine, rng)
        altered = Case(images, affine, None, dict(case.sources), case.convention)
        result = segment_case(altered, loaded, bias_correction=bias_correct)
        scores = evaluate(result.labels, altered_ref, altered.spacing)["regions"]
        ml = voxel_volume_ml(altered.spacing)
        rows[row] = {"dice": [scores[r]["dice"] for r in REGIONS], "hd95": [scores[r]["hd95"] for r in REGIONS],
                     "wt_ml_error": (int((result.labels > 0).sum()) - int((altered_ref > 0).sum())) * ml}
        print(f"{folder.name:22s} {row:15s} Dice " + " / ".join(f"{d:.3f}" for d in rows[row]["dice"])
              + "  HD95 " + " / ".join(f"{h:.1f}" for h in rows[row]["hd95"])
              + f"  WT volume {rows[row]['wt_ml_error']:+.1f} mL", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="folder of BraTS case folders")
    parser.add_argument("cases", nargs="+", help="case folder names (the validation split)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped model")
    parser.add_argument("--json", type=Path, default=None, help="write every case's scores here")
    parser.add_argument("--bias-correct", type=modality_list, metavar="MODALITIES",
                        help="all, none, or scans separated by commas, as brainseg segment --bias-correct")
    parser.add_argument("--conditions", nargs="+", choices=list(CONDITIONS), default=list(CONDITIONS))
    parser.add_argument("--draws", type=int, default=1, help=f"draws per case of the random conditions ({', '.join(RANDOM)})")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the skull-strip heuristics' warnings are not the point here
    loaded = load_checkpoint(args.checkpoint or default_checkpoint())
    per_case = {}
    for seed, name in enumerate(args.cases):
        case_files(args.data / name)  # a missing modality fails here, before any inference
        per_case[name] = check_case(args.data / name, loaded, seed, args.conditions, args.bias_correct, args.draws)
    print("\nmean over", len(per_case), "cases (and draws): Dice WT / TC / ET | HD95 WT / TC / ET (mm) | WT volume error "
          "(mL, mean |error|) | per-draw mean Dice, lowest and highest")
    planned = runs(args.conditions, args.draws)
    for condition in args.conditions:
        names = [row for row, name, _ in planned if name == condition]
        rows = [per_case[c][row] for c in per_case for row in names]
        dice = np.mean([r["dice"] for r in rows], axis=0)
        hd = np.mean([r["hd95"] for r in rows], axis=0)
        err = np.mean([abs(r["wt_ml_error"]) for r in rows])
        spread = ""
        if len(names) > 1:
            per_draw = np.array([np.mean([per_case[c][row]["dice"] for c in per_case], axis=0) for row in names])
            spread = " | " + " / ".join(f"{lo:.3f}-{hi:.3f}" for lo, hi in zip(per_draw.min(0), per_draw.max(0)))
        print(f"{condition:15s} " + " / ".join(f"{d:.3f}" for d in dice) + " | " + " / ".join(f"{h:.1f}" for h in hd)
              + f" | {err:.1f}" + spread)
    if args.json:
        args.json.write_text(json.dumps(per_case, indent=1))


if __name__ == "__main__":
    main()
