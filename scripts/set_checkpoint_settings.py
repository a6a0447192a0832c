"""Change a checkpoint's settings (preprocessing, inference, post-processing) without touching its weights.

A setting chosen after training, by measurement on the validation split, belongs in the checkpoint so that
``brainseg segment``, the app and the benchmarks all use it by default. The weights are copied as stored
(same tensors, same dtype), the new settings are checked as any checkpoint's are when it loads, and the
change is recorded in the provenance with the reason given.

``--validation EVAL.json`` (``brainseg evaluate --json`` of the new settings on the checkpoint's validation
split) replaces the provenance's validation scores; the ones they replace are kept, with the settings
they were measured under, in ``validation_earlier``.

Usage: python scripts/set_checkpoint_settings.py CK preprocess.bias_correction='["t1", "t1ce"]' --why "measured: see the card"
       python scripts/set_checkpoint_settings.py CK SETTINGS --why "..." --validation eval.json --scored-with "brainseg segment ..."
"""
import argparse
import json
import time

import torch

from brainseg.checkpoint import load_checkpoint, read_payload
from brainseg.config import BrainsegConfig, SettingError
from brainseg.errors import BrainsegError
from brainseg.files import atomic_write

# what can change under trained weights: not the network, nor the grid, orientation or scans it was trained on
CHANGEABLE = ("preprocess.bias_correction", "inference.", "postprocess.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("settings", nargs="+", metavar="SECTION.FIELD=JSON")
    parser.add_argument("--why", required=True, help="the reason, recorded in the provenance")
    parser.add_argument("--validation", metavar="EVAL_JSON", help="brainseg evaluate --json of the new settings")
    parser.add_argument("--scored-with", help="how --validation was produced (the commands)")
    args = parser.parse_args()
    if bool(args.validation) != bool(args.scored_with):
        parser.error("--validation and --scored-with go together")
    try:
        payload = read_payload(args.checkpoint)
    except BrainsegError as exc:
        parser.error(str(exc))
    config = payload["config"]
    changes = {}
    for item in args.settings:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if not name or not key.startswith(CHANGEABLE):
            parser.error(f"{key}: expected preprocess.bias_correction, inference.FIELD or postprocess.FIELD")
        try:
            changes[key] = {"from": config.get(section, {}).get(name), "to": json.loads(value)}
        except ValueError as exc:
            parser.error(f"{key}: {value!r} is not JSON ({exc})")
        config.setdefault(section, {})[name] = changes[key]["to"]
    try:
        checked = BrainsegConfig.from_dict(config)
        checked.check_consistent()
    except SettingError as exc:
        parser.error(str(exc))
    payload["config"] = checked.to_dict()  # written as plain types
    provenance = payload["provenance"]
    provenance.setdefault("settings_changed", []).append({"when": time.strftime("%Y-%m-%d"), "changes": changes, "why": args.why})
    if args.validation:
        earlier = {**provenance.get("validation", {}), "settings": {k: c["from"] for k, c in changes.items()}}
        provenance.setdefault("validation_earlier", []).append(earlier)
        provenance["validation"] = validation_scores(args.validation, provenance.get("validation_cases"), args.scored_with)

    def write(tmp: str) -> None:
        torch.save(payload, tmp)
        load_checkpoint(tmp)  # the new file loads before it replaces the old one

    atomic_write(args.checkpoint, write)
    print(json.dumps(changes))


def validation_scores(path: str, cases, scored_with: str) -> dict:
    """Mean Dice and HD95 per region from ``brainseg evaluate --json``; refuses one that scored other cases."""
    report = json.loads(open(path, encoding="utf-8").read())
    scored = sorted(report.get("cases", {}))
    if cases and sorted(cases) != scored:
        raise SystemExit(f"{path}: scores {scored}; expected the checkpoint's validation cases {sorted(cases)}")
    summary = report["summary"]
    dice = {r: summary[r]["dice"]["mean"] for r in ("WT", "TC", "ET")}
    return {"dice": dice, "hd95": {r: summary[r]["hd95"]["mean"] for r in ("WT", "TC", "ET")},
            "score": sum(dice.values()) / 3, "scored_with": scored_with}


if __name__ == "__main__":
    main()
