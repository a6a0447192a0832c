"""Is what N4 does to a case a correction, or would any change of its intensities do as much?

For each case, the chosen scans are segmented three ways with the checkpoint's other settings: untouched,
N4-corrected (``brainseg.bias``, fitted over the file's whole field of view) and with their own N4 field
mirrored left-right and multiplied in (a change of the same size and smoothness that corrects nothing).
Prints each case's Dice WT / TC / ET per way and the means.

Usage: python scripts/n4_check.py ../shared/data/brats CASE [CASE ...] [--scans t1,t1ce] [--checkpoint CK]
"""
import argparse
import logging
from pathlib import Path

import numpy as np

from brainseg.bias import n4_correct
from brainseg.checkpoint import default_checkpoint, load_checkpoint
from brainseg.cli import modality_list
from brainseg.io import Case, load_case
from brainseg.labelmaps import read_label_map
from brainseg.labels import REGIONS
from brainseg.metrics import evaluate
from brainseg.naming import case_files, segmentation_file
from brainseg.pipeline import segment_case

WAYS = ("untouched", "N4-corrected", "mirrored field")


def variants(case: Case, scans: tuple[str, ...]) -> dict[str, dict]:
    brain = np.zeros(case.shape, bool)
    for image in case.images.values():
        brain |= np.asarray(image) != 0
    out = {way: dict(case.images) for way in WAYS}
    for m in scans:
        image = np.asarray(case.images[m], np.float32)
        corrected = n4_correct(image, brain, case.spacing)
        field = np.where(brain, np.log(np.maximum(image, 1e-3) / np.maximum(corrected, 1e-3)), 0)
        out["N4-corrected"][m] = corrected
        out["mirrored field"][m] = np.where(brain, image * np.exp(field[::-1]), 0).astype(np.float32)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="folder of BraTS case folders")
    parser.add_argument("cases", nargs="+")
    parser.add_argument("--scans", type=modality_list, default=("t1", "t1ce"), help="default t1,t1ce")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped model")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    loaded = load_checkpoint(args.checkpoint or default_checkpoint())
    scans = loaded.config.preprocess.modalities if args.scans is True else args.scans
    scores = {way: [] for way in WAYS}
    for name in args.cases:
        case_files(args.data / name)  # a missing modality fails here, before any inference
        case = load_case(args.data / name)
        ref = read_label_map(segmentation_file(args.data / name)).internal()[0]
        for way, images in variants(case, scans).items():
            altered = Case(images, case.affine, case.header, dict(case.sources), case.convention)
            labels = segment_case(altered, loaded, bias_correction=False).labels  # N4 here is this script's
            regions = evaluate(labels, ref, case.spacing)["regions"]
            scores[way].append([regions[r]["dice"] for r in REGIONS])
            print(f"{name:22s} {way:15s} Dice " + " / ".join(f"{d:.3f}" for d in scores[way][-1]), flush=True)
    print(f"\nmean over {len(args.cases)} cases, Dice WT / TC / ET; N4 on {', '.join(scans)}")
    for way in WAYS:
        print(f"{way:15s} " + " / ".join(f"{d:.3f}" for d in np.mean(scores[way], axis=0)))


if __name__ == "__main__":
    main()
