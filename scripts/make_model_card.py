"""Write a checkpoint's model card from its provenance and a ``brainseg evaluate --json`` result.

Usage: python scripts/make_model_card.py CHECKPOINT EVALUATION.json CARD.md [--command TEXT] [--notes FILE] [--started-from CHECKPOINT]
Every number in the card comes from those two files.
"""
import argparse
import json
from pathlib import Path

from brainseg.checkpoint import load_checkpoint
from brainseg.labels import REGIONS


def _n4_words(corrected) -> str:
    return f"{' and '.join(m.upper() for m in corrected)} N4 bias-field corrected inside it, " if corrected else ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("evaluation")
    parser.add_argument("card")
    parser.add_argument("--command", default="", help="the training command, quoted in the card")
    parser.add_argument("--notes", default="", help="a markdown file with further sections (limits, design evidence)")
    parser.add_argument("--started-from", default="", help="the checkpoint the run was initialised from (brainseg train --init)")
    args = parser.parse_args()
    loaded = load_checkpoint(args.checkpoint)
    prov, cfg = loaded.provenance, loaded.config
    ev = json.loads(Path(args.evaluation).read_text())
    hours = prov.get("training_seconds", 0) / 3600
    lines = [
        f"# Model card: {Path(args.checkpoint).name}",
        "",
        "**Research use only. Not a medical device; not for clinical decisions.**",
        "",
        "## Model",
        f"- 3D U-Net, encoder {list(cfg.model.features[:-1])}, bottleneck {cfg.model.features[-1]}, "
        f"{cfg.model.norm} norm, Dropout3d {cfg.model.dropout}, residual blocks: {cfg.model.residual}.",
        f"- Outputs: {cfg.model.output_mode} ({'sigmoid WT/TC/ET, nested into labels' if cfg.model.output_mode == 'regions' else 'softmax labels'}).",
        f"- Inputs: {', '.join(m.upper() for m in cfg.preprocess.modalities)}; reoriented to {cfg.preprocess.orientation}, "
        f"cropped to the brain, {_n4_words(cfg.preprocess.bias_correction)}z-scored inside it, resampled to "
        f"{cfg.preprocess.spacing[0]:g} mm.",
        f"- Inference defaults: windows {'x'.join(map(str, cfg.inference.patch_size))} on the {cfg.preprocess.spacing[0]:g} mm grid, "
        f"overlap {cfg.inference.overlap}, Gaussian weighting, TTA {cfg.inference.tta}; post-processing: "
        f"whole-tumour components < {cfg.postprocess.min_component_voxels} voxels or more than "
        f"{cfg.postprocess.max_component_distance_mm:g} mm from the largest one removed, tumour-core and enhancing pieces "
        f"< {cfg.postprocess.min_core_component_voxels} voxels absorbed by the region around them (each region's largest "
        f"stays), ET rule {cfg.postprocess.min_et_voxels}.",
        "",
        "## Training",
        f"- Data: {len(prov.get('train_cases', []))} BraTS 2018 training cases from `../shared/data/brats` "
        f"(see its README for sources and citations): {', '.join(prov.get('train_cases', []))}.",
        f"- Validation split (fixed, never trained on): {', '.join(prov.get('validation_cases', []))}.",
        f"- Steps: {prov.get('step')}; training time {hours:.2f} h on {prov.get('hardware', '?')}.",
        *_earlier_stage(args.started_from),
        f"- Settings: {json.dumps({k: v for k, v in prov.get('train_config', {}).items() if k not in ('data', 'output', 'resume', 'validation')})}",
    ]
    if args.command:
        lines += [f"- Command: `{args.command}`"]
    lines += ["", "## Validation (BraTS-style, full resolution, `brainseg evaluate`)", "",
              "| case | " + " | ".join(f"Dice {r} | HD95 {r} (mm)" for r in REGIONS) + " |",
              "|---|" + "---|---|" * len(REGIONS)]
    for case, res in ev["cases"].items():
        lines.append(f"| {case} | " + " | ".join(f"{res['regions'][r]['dice']:.3f} | {res['regions'][r]['hd95']:.1f}" for r in REGIONS) + " |")
    for stat in ("mean", "median"):
        lines.append(f"| **{stat}** | " + " | ".join(f"**{ev['summary'][r]['dice'][stat]:.3f}** | **{ev['summary'][r]['hd95'][stat]:.1f}**" for r in REGIONS) + " |")
    if "lesion_wise" in ev["summary"]:
        lesions = ev["summary"]["lesion_wise"]
        counts = {r: [sum(c["lesion_wise"]["regions"][r][k] for c in ev["cases"].values()) for k in ("matched", "missed", "false_positives")]
                  for r in REGIONS}
        challenge = next(iter(ev["cases"].values()))["lesion_wise"]["challenge"]
        lines += ["", f"Lesion-wise (BraTS 2023+ ranking, {challenge} parameters, `brainseg evaluate --lesion-wise`): mean Dice "
                  + " / ".join(f"{lesions[r]['dice']['mean']:.3f}" for r in REGIONS) + ", HD95 "
                  + " / ".join(f"{lesions[r]['hd95']['mean']:.1f}" for r in REGIONS) + " mm (WT / TC / ET); lesions found / "
                  "missed / false positives: " + ", ".join(f"{r} {a} / {b} / {c}" for r, (a, b, c) in counts.items()) + "."]
    if args.notes:
        lines += ["", Path(args.notes).read_text().strip()]
    Path(args.card).write_text("\n".join(lines) + "\n")


def _earlier_stage(path: str) -> list[str]:
    """The run an ``--init`` run started from, as its own checkpoint records it."""
    if not path:
        return []
    prov = load_checkpoint(path).provenance
    return [f"- Initialised from `{Path(path).name}`, itself trained for {prov.get('step')} steps, "
            f"{prov.get('training_seconds', 0) / 3600:.2f} h on {prov.get('hardware', '?')} "
            f"(validation score {prov.get('validation', {}).get('score', float('nan')):.3f} when saved)."]


if __name__ == "__main__":
    main()
