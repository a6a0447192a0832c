"""One typed configuration that travels inside every checkpoint."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from brainseg import MODALITIES


@dataclass
class ModelConfig:
    """Architecture of the 3D U-Net."""

    in_channels: int = 4
    out_channels: int = 3
    features: tuple[int, ...] = (16, 32, 64, 128, 256)  # last entry is the bottleneck
    norm: str = "instance"  # "batch" or "instance"
    dropout: float = 0.2
    residual: bool = False
    output_mode: str = "regions"  # "regions": sigmoid WT/TC/ET; "labels": softmax bg/NCR/ED/ET


@dataclass
class PreprocessConfig:
    """How scans are brought onto the model's grid."""

    modalities: tuple[str, ...] = MODALITIES
    orientation: str = "LPS"  # axis codes the model was trained in (nibabel convention)
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0)  # mm, model working resolution
    crop_margin: int = 2  # voxels kept around the brain box


@dataclass
class InferenceConfig:
    """Sliding-window defaults; users may override them per run."""

    patch_size: tuple[int, int, int] = (96, 96, 48)
    overlap: float = 0.5  # stride = (1 - overlap) x patch
    batch_size: int = 1
    tta: bool = False
    threshold: float = 0.5


@dataclass
class PostprocessConfig:
    """Which post-processing runs, decided on validation data."""

    min_component_voxels: int = 0  # whole-tumour components smaller than this are removed
    min_et_voxels: int = 0  # if the whole ET volume is smaller, relabel it as necrotic core


@dataclass
class BrainsegConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, so a checkpoint loads with ``weights_only=True``."""
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BrainsegConfig":
        """Build from ``to_dict`` output; unknown keys are an error, missing ones take defaults."""
        parts = {}
        for f in fields(cls):
            sub_cls = type(getattr(cls(), f.name))
            raw = dict(data.get(f.name, {}))
            known = {g.name for g in fields(sub_cls)}
            unknown = set(raw) - known
            if unknown:
                raise ValueError(f"unknown {f.name} settings: {sorted(unknown)}")
            defaults = sub_cls()
            for key, value in raw.items():
                if isinstance(getattr(defaults, key), tuple):
                    raw[key] = tuple(value)
            parts[f.name] = sub_cls(**raw)
        return cls(**parts)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
