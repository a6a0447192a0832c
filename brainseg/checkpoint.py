"""Checkpoints: weights, configuration and provenance in one file that loads without running code."""
from __future__ import annotations

import logging
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

from brainseg import __version__
from brainseg.config import BrainsegConfig
from brainseg.errors import CheckpointError
from brainseg.model import UNet3D

log = logging.getLogger(__name__)

FORMAT = "brainseg-checkpoint"
FORMAT_VERSION = 1
SUFFIXES = (".pt", ".pth", ".ckpt")
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_NAME = "brainseg_default.pt"


@dataclass
class LoadedModel:
    model: UNet3D
    config: BrainsegConfig
    provenance: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.path.stem if self.path else "unsaved"


def save_checkpoint(path: str | Path, model: UNet3D, config: BrainsegConfig, provenance: dict | None = None, half: bool = True) -> Path:
    """Write a checkpoint atomically; floating weights in fp16 when ``half`` (halves the size)."""
    state = {
        k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
        for k, v in model.state_dict().items()
    }
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "brainseg_version": __version__,
        "config": config.to_dict(),
        "state_dict": state,
        "provenance": provenance or {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_payload(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents, loaded with ``weights_only=True`` so no code in it can run."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path.name}: holds Python objects other than weights and settings; refused, since loading "
            f"it could run code ({str(exc).splitlines()[0][:160]})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path.name}: not a readable PyTorch checkpoint (truncated or corrupt: {str(exc).splitlines()[0][:160]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path.name}: not a brainseg checkpoint (no '{FORMAT}' marker); expected a file written by "
            f"'brainseg train'"
        )
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path.name}: written by a newer brainseg (format {payload['format_version']}); upgrade brainseg")
    for key in ("config", "state_dict"):
        if key not in payload:
            raise CheckpointError(f"{path.name}: checkpoint is missing its '{key}'")
    return payload


def load_checkpoint(path: str | Path) -> LoadedModel:
    """Build the model its configuration describes and load its weights (fp32, eval mode)."""
    path = Path(path)
    payload = read_payload(path)
    try:
        config = BrainsegConfig.from_dict(payload["config"])
        model = UNet3D(config.model)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path.name}: invalid configuration: {exc}") from None
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in payload["state_dict"].items()}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path.name}: weights do not fit the U-Net its configuration describes "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]}); "
            f"it was probably written for another model"
        )
    model.load_state_dict(state)
    model.eval()
    return LoadedModel(model, config, dict(payload.get("provenance", {})), path)


def default_checkpoint() -> Path:
    return DEFAULT_DIR / DEFAULT_NAME


def discover(folders: Iterable[str | Path] = (DEFAULT_DIR,)) -> list[Path]:
    """Checkpoint files in the given folders, the shipped default first."""
    found: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if folder.is_dir():
            found += sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file())
    found.sort(key=lambda p: (p.name != DEFAULT_NAME, str(p)))
    return found
