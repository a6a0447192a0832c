"""A training run's settings from a config file and command-line options (options win).

The file is JSON in the shape every run writes as ``config.json``: ``{"train": {TrainConfig fields},
"model": {BrainsegConfig sections}}``, either part optional; so ``brainseg train --config
runs/r1/config.json --output runs/r2`` repeats a run, and settings without an option (weight decay,
warm-up, tumour share, network widths, dropout) can be chosen.
"""
from __future__ import annotations

import json
import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

from brainseg.checkpoint import read_config
from brainseg.config import OUTPUT_CHANNELS, BrainsegConfig, ModelConfig, SettingError, TrainConfig
from brainseg.errors import InputError

log = logging.getLogger(__name__)

# fields a command line decides for itself: a file written by one run must not resume it or write into it
COMMAND_LINE_ONLY = ("output", "resume")
# config sections a checkpoint's weights were trained for: --init keeps the checkpoint's
WEIGHT_BOUND = ("model", "preprocess")
# ... except these settings, which a fine-tune may change: its weights adapt to scans corrected otherwise
# as to any new data, while inputs, grid and network (what the weights' shapes and meaning need) stay
RETRAINABLE = {"preprocess": ("bias_correction",)}


def read_config_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``train`` and ``model`` sections of a config file.

    Raises InputError naming the file when it is unreadable, not a JSON object, or holds sections or
    train settings brainseg does not know.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON file ({exc}); expected a training config such as a run's "
                         f"config.json") from None
    if not isinstance(data, dict) or set(data) - {"train", "model"}:
        extra = sorted(set(data) - {"train", "model"}) if isinstance(data, dict) else type(data).__name__
        raise InputError(f"{path}: holds {extra}; expected a JSON object with \"train\" and/or \"model\" sections")
    train, model = data.get("train", {}), data.get("model", {})
    if not isinstance(train, dict) or not isinstance(model, dict):
        raise InputError(f"{path}: \"train\" and \"model\" must each be a JSON object of settings")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(train) - known)
    if unknown:
        raise InputError(f"{path}: unknown train settings {unknown}; expected some of {sorted(known)}")
    ignored = [k for k in COMMAND_LINE_ONLY if train.get(k)]
    if ignored:  # a run's own config.json names both: expected, so said only with --verbose
        log.info("%s: its %s ignored: the command line chooses the run folder and what to resume (--output, "
                    "--resume)", path, " and ".join(f'"{k}"' for k in ignored))
    sections = {f.name for f in fields(BrainsegConfig)}
    if not all(isinstance(v, dict) for v in model.values()) or set(model) - sections:
        raise InputError(f"{path}: \"model\" holds {sorted(model)}; expected some of the sections {sorted(sections)}, "
                         f"each a JSON object of settings")
    return {k: v for k, v in train.items() if k not in COMMAND_LINE_ONLY}, model


def build_configs(path: str | Path | None, train_options: dict[str, Any],
                  model_options: dict[str, Any]) -> tuple[TrainConfig, BrainsegConfig]:
    """The run's TrainConfig and BrainsegConfig: defaults, then the file at ``path`` (for ``--resume``
    without one: the resumed run's own config.json), then the options given on the command line
    (``model_options`` keyed ``section.field``).

    Raises SettingError naming the option for a value given on the command line, and InputError naming
    the file for one that came from it (settings that do not fit together included).
    """
    if path is None and train_options.get("resume"):
        path = resumed_config(train_options["resume"])
    train, model = read_config_file(path) if path else ({}, {})
    for key, value in model_options.items():
        section, name = key.split(".")
        model.setdefault(section, {})[name] = value
    values = {**train, **train_options}
    if "data" not in values:
        raise InputError("--data: required (or \"data\" in the --config file's \"train\" section)")

    def refused(exc: SettingError, given_as_option: bool) -> Exception:
        if given_as_option or not path:
            return SettingError(exc.setting.split(".")[-1], exc.problem)  # reported as the option
        return InputError(f"{path}: setting {exc.setting}: {exc.problem}")

    try:
        tc = TrainConfig(**values)
    except SettingError as exc:
        raise refused(exc, exc.setting in train_options) from None
    try:
        config = BrainsegConfig.from_dict(_with_head(model))  # what was given is checked, with --init too
        if tc.init and not tc.resume:
            config = BrainsegConfig.from_dict(_start_from(tc.init, model))
        config.check_consistent()
    except SettingError as exc:
        raise refused(exc, exc.setting in model_options) from None
    except ValueError as exc:  # an unknown section or key
        raise InputError(f"{path}: {exc}") from None
    try:
        tc.check_fits(config.model)
    except SettingError as exc:
        raise refused(exc, exc.setting in train_options) from None
    return tc, config


def _with_head(sections: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The sections with the network's output channels following its output mode, whoever named it."""
    mode = sections.get("model", {}).get("output_mode", ModelConfig.output_mode)
    if not (isinstance(mode, str) and mode in OUTPUT_CHANNELS):
        return sections  # from_dict names the bad value
    return {**sections, "model": {**sections.get("model", {}), "out_channels": OUTPUT_CHANNELS[mode]}}


def _start_from(init: str, given: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The settings of a run started with ``--init``: the checkpoint's, with the inference and
    post-processing settings given on top; its network and preprocessing stay, since its weights need them,
    but for the RETRAINABLE ones given."""
    sections = read_config(init).to_dict()
    for section, settings in given.items():
        if section in WEIGHT_BOUND:
            changeable = RETRAINABLE.get(section, ())
            if any(sections.get(section, {}).get(k) != v for k, v in settings.items() if k not in changeable):
                log.warning("--init %s: using its %s settings, not the ones given", init, section)
            settings = {k: v for k, v in settings.items() if k in changeable}
        sections.setdefault(section, {}).update(settings)
    return sections


def resume_state(resume: str) -> Path:
    """The state.pt that ``--resume`` names: the file itself, or the one in the run folder given.

    Raises InputError when there is none (before anything else is asked of the command line: a mistyped
    path must not be reported as a missing --data).
    """
    path = Path(resume)
    path = path / "state.pt" if path.is_dir() else path
    if not path.is_file():
        raise InputError(f"{path}: no such file; expected the state.pt of an earlier run's folder")
    return path


def resumed_config(resume: str) -> Path | None:
    """The config.json beside the state a run resumes from (its settings without options), if there is one."""
    found = resume_state(resume).parent / "config.json"
    if found.is_file():
        log.info("resuming with the settings of %s (options given override them)", found)
        return found
    return None
