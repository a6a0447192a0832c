"""Does averaging several checkpoints beat one? Scores their mean logits on the validation split.

Each case is segmented by ``segment_case`` with a predictor that averages the networks' logits
window by window (the first checkpoint supplies preprocessing, inference and post-processing
settings), then scored against the expert labels exactly as ``brainseg evaluate`` does.

Usage: python scripts/ensemble_check.py ../shared/data/brats CKPT [CKPT ...] [--json OUT] [--threads N]
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch

from brainseg.checkpoint import load_checkpoint
from brainseg.data import load_reference
from brainseg.inference import ModelPredictor, resolve_device
from brainseg.labels import REGIONS
from brainseg.metrics import evaluate
from brainseg.pipeline import segment_case
from brainseg.train import DEFAULT_VALIDATION


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--json", help="write per-case and mean scores here")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    members = [load_checkpoint(c) for c in args.checkpoints]
    predictors = [ModelPredictor(m.model, resolve_device("cpu"), "fp32") for m in members]

    def mean_logits(batch: torch.Tensor) -> torch.Tensor:
        return sum(p(batch) for p in predictors) / len(predictors)

    scores = {}
    for case_id in DEFAULT_VALIDATION:
        case, truth = load_reference(Path(args.data) / case_id)
        labels = segment_case(case, members[0], predictor=mean_logits).labels
        result = evaluate(labels, truth, case.spacing, case.convention)["regions"]
        scores[case_id] = {f"{m}_{r}": result[r][m] for r in REGIONS for m in ("dice", "hd95")}
        print(case_id, " ".join(f"{k} {v:.3f}" for k, v in scores[case_id].items()), flush=True)
    mean = {k: float(np.mean([s[k] for s in scores.values()])) for k in next(iter(scores.values()))}
    print("mean", " ".join(f"{k} {v:.4f}" for k, v in mean.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoints": args.checkpoints, "cases": scores, "mean": mean}, indent=1))


if __name__ == "__main__":
    main()
