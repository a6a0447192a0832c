"""Checkpoints: weights, configuration and provenance in one file that loads without running code."""
from __future__ import annotations

import functools
import hashlib
import logging
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

from brainseg import __version__
from brainseg.config import BrainsegConfig, SettingError
from brainseg.errors import CheckpointError
from brainseg.files import atomic_write
from brainseg.model import UNet3D
from brainseg.naming import is_hidden

log = logging.getLogger(__name__)

FORMAT = "brainseg-checkpoint"
FORMAT_VERSION = 1
SUFFIXES = (".pt", ".pth", ".ckpt")
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_NAME = "brainseg_default.pt"


@dataclass
class LoadedModel:
    """A checkpoint in memory: the network (eval mode, fp32), its settings and where it came from."""

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
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def read_payload(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents, loaded with ``weights_only=True`` so no code in it can run.

    Only PyTorch's zip format (what ``save_checkpoint`` writes) is opened; a bare pickle or any other
    file is refused without being unpickled.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path.name}: the checkpoint file is empty; expected a file written by 'brainseg train'")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path.name}: not a PyTorch checkpoint archive (truncated, corrupt, or another kind of file such "
            f"as a bare pickle); expected a file written by 'brainseg train'"
        )
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols; the outcome is reported below
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path.name}: holds Python objects{what} other than weights and settings; refused, since "
            f"loading it could run code; expected a file written by 'brainseg train'"
        ) from None
    except Exception as exc:  # torch raises many types for damaged archives
        reason = re.sub(r"\[enforce fail at [^\]]*\][ .]*", "", str(exc)).strip()  # C++ source locations
        reason = reason.splitlines()[0][:160] if reason else type(exc).__name__
        raise CheckpointError(f"{path.name}: not a readable PyTorch checkpoint (truncated or corrupt: {reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path.name}: not a brainseg checkpoint (no '{FORMAT}' marker); expected a file written by "
            f"'brainseg train'"
        )
    version = payload.get("format_version", 0)
    if not isinstance(version, int):
        raise CheckpointError(f"{path.name}: invalid format version {version!r}; expected a whole number")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path.name}: written by a newer brainseg (format {version}); upgrade brainseg")
    for key, kind in (("config", "a table of settings"), ("state_dict", "a table of weight tensors")):
        if key not in payload:
            raise CheckpointError(f"{path.name}: checkpoint is missing its '{key}'")
        if not isinstance(payload[key], dict):
            raise CheckpointError(f"{path.name}: its '{key}' is a {type(payload[key]).__name__}; expected {kind}")
    not_tensors = [k for k, v in payload["state_dict"].items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path.name}: its 'state_dict' holds entries that are not tensors: {not_tensors[:3]}")
    if not isinstance(payload.get("provenance", {}), dict):
        raise CheckpointError(f"{path.name}: its 'provenance' is not a table; expected a file written by 'brainseg train'")
    return payload


def load_checkpoint(path: str | Path) -> LoadedModel:
    """Build the model its configuration describes and load its weights (fp32, eval mode)."""
    path = Path(path)
    payload = read_payload(path)
    config = _config_of(payload, path.name)
    try:
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
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:  # a diverged training run: the network would mark nothing, silently
        raise CheckpointError(f"{path.name}: {len(broken)} weight tensors hold NaN or infinite values ({', '.join(broken[:3])}); "
                              f"expected the weights of a run that trained without diverging")
    model.load_state_dict(state)
    model.eval()
    return LoadedModel(model, config, dict(payload.get("provenance", {})), path)


def read_config(path: str | Path) -> BrainsegConfig:
    """A checkpoint's settings, checked, without building its network."""
    return _config_of(read_payload(path), Path(path).name)


def _config_of(payload: dict, name: str) -> BrainsegConfig:
    try:  # from_dict checks every setting (spacing, orientation, patch size, overlap, ...)
        config = BrainsegConfig.from_dict(payload["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{name}: invalid configuration: {exc}") from None
    try:
        config.check_consistent()
    except SettingError as exc:
        raise CheckpointError(f"{name}: {exc}; it was probably written for another model") from None
    return config


def fingerprint(path: str | Path) -> str:
    """SHA-256 of a checkpoint file: names exactly which weights made a result, whatever the file is called."""
    path = Path(path)
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, modified_ns: int, size: int) -> str:  # keyed on the file's state: hashed once per version
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_checkpoint() -> Path:
    """The shipped model: ``models/brainseg_default.pt`` beside the package."""
    return DEFAULT_DIR / DEFAULT_NAME


def discover(folders: Iterable[str | Path] = (DEFAULT_DIR,)) -> list[Path]:
    """Checkpoint files in the given folders, the shipped default first."""
    found: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if folder.is_dir():
            found += sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file() and not is_hidden(p.name))
    found.sort(key=lambda p: (p.name != DEFAULT_NAME, str(p)))
    return found
