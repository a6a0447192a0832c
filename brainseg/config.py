"""One typed configuration that travels inside every checkpoint (BrainsegConfig), and the training
run's settings written beside it (TrainConfig).

Every configuration object checks its values when it is built (so a checkpoint's settings are
checked as it loads, and a command's options before any data is read); a value out of range raises
``SettingError`` naming the setting, the value and what was expected.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from pathlib import PurePath
from typing import Any, Callable, Mapping

import numpy as np

from brainseg import MODALITIES
from brainseg.errors import BrainsegError
from brainseg.labels import AUTO, LABEL_OPTIONS, chosen_convention

NORMS = ("batch", "instance")
OUTPUT_MODES = ("regions", "labels")
OUTPUT_CHANNELS = {"regions": 3, "labels": 4}  # what each output mode's head produces
# a window side beyond this is a typo, not a choice (the 1 mm BraTS head is 240 voxels): refused
# before it reaches an allocation of terabytes
MAX_PATCH_SIDE = 512
AUGMENTATION_ENGINES = ("auto", "torchio", "torch")  # brainseg.augment: auto = torch on CUDA, TorchIO elsewhere
# BraTS 2023+ lesion-wise scoring (brainseg.lesion_metrics) per challenge: (dilation iterations that merge
# nearby reference lesions, largest lesion volume in mm^3 left out of the mean)
LESION_CHALLENGES = {"GLI": (3, 50.0), "SSA": (3, 50.0), "PED": (3, 50.0), "MEN": (1, 50.0), "MET": (1, 2.0)}
_AXIS_PAIRS = ("LR", "PA", "IS")  # nibabel's axis codes: one letter of each pair, in any order


class SettingError(BrainsegError, ValueError):
    """A setting out of range. ``setting`` names it: a field, or ``section.field`` in a checkpoint.
    A BrainsegError like every user mistake, and a ValueError as Python's own out-of-range values are."""

    def __init__(self, setting: str, problem: str):
        super().__init__(f"{setting}: {problem}")
        self.setting, self.problem = setting, problem


def is_whole(value: Any, low: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low


def is_number(value: Any, low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False) -> bool:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        return False
    return (value > low if low_open else value >= low) and (value < high if high_open else value <= high)


def require_whole(setting: str, value: Any, low: int) -> None:
    if not is_whole(value, low):
        raise SettingError(setting, f"got {_shown(value)}; expected a whole number >= {low}")


def require_number(setting: str, value: Any, low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False) -> None:
    if not is_number(value, low, high, low_open, high_open):
        bounds = f"{'>' if low_open else '>='} {low:g}"
        if high != math.inf:
            bounds += f" and {'<' if high_open else '<='} {high:g}"
        raise SettingError(setting, f"got {_shown(value)}; expected a number {bounds}")


def require_triple(setting: str, value: Any, ok: Callable[[Any], bool], expected: str) -> None:
    """Three values that each pass ``ok``; ``expected`` describes one of them ("whole numbers >= 1")."""
    items = tuple(value) if isinstance(value, (list, tuple)) else ()
    if len(items) != 3 or not all(ok(v) for v in items):
        raise SettingError(setting, f"got {_shown(value)}; expected three {expected}")


def require_patch_size(setting: str, value: Any) -> None:
    require_triple(setting, value, lambda p: is_whole(p, 1) and p <= MAX_PATCH_SIDE, f"whole numbers 1-{MAX_PATCH_SIDE} (voxels)")


def require_choice(setting: str, value: Any, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise SettingError(setting, f"unknown {what} {value!r}; expected {' or '.join(map(repr, choices))}")


def require_flag(setting: str, value: Any) -> None:
    """A yes/no setting: JSON true/false, not a string such as "false" (which Python reads as true)."""
    if not isinstance(value, bool):
        raise SettingError(setting, f"got {_shown(value)}; expected true or false")


def require_text(setting: str, value: Any) -> None:
    if not isinstance(value, str):
        raise SettingError(setting, f"got {_shown(value)}; expected a path or name as text")


def _shown(value: Any) -> str:
    return repr(tuple(value)) if isinstance(value, list) else repr(value)


@dataclass
class ModelConfig:
    """Architecture of the 3D U-Net."""

    in_channels: int = 4
    out_channels: int = 3
    features: tuple[int, ...] = (24, 48, 96, 192, 320)  # last entry is the bottleneck; the shipped model's
    norm: str = "instance"  # "batch" or "instance"
    dropout: float = 0.2
    residual: bool = False
    output_mode: str = "regions"  # "regions": sigmoid WT/TC/ET; "labels": softmax bg/NCR/ED/ET

    def __post_init__(self) -> None:
        require_whole("in_channels", self.in_channels, 1)
        require_whole("out_channels", self.out_channels, 1)
        widths = tuple(self.features) if isinstance(self.features, (list, tuple)) else ()
        if len(widths) < 2 or not all(is_whole(w, 1) for w in widths):
            raise SettingError("features", f"got {_shown(self.features)}; expected at least two whole numbers >= 1 "
                                           f"(the encoder levels' widths, then the bottleneck's)")
        require_choice("norm", self.norm, NORMS, "norm")
        require_number("dropout", self.dropout, 0.0, 1.0, high_open=True)
        require_flag("residual", self.residual)
        require_choice("output_mode", self.output_mode, OUTPUT_MODES, "output mode")

    @property
    def divisor(self) -> int:
        """What each side of an unpadded input must be a multiple of: 2 per pooling."""
        return 2 ** (len(self.features) - 1)


# the model grid's voxel sides: finer makes a 64-voxel window see too little of the head and a brain box of
# billions of voxels; coarser leaves a few voxels across a tumour
MODEL_SPACING_RANGE_MM = (0.5, 8.0)


@dataclass
class PreprocessConfig:
    """How scans are brought onto the model's grid."""

    modalities: tuple[str, ...] = MODALITIES
    orientation: str = "LPS"  # axis codes the model was trained in (nibabel convention)
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0)  # mm, model working resolution
    crop_margin: int = 2  # voxels kept around the brain box
    # modalities N4-corrected inside the brain before z-scoring (brainseg.bias; needs SimpleITK); true / false
    # (checkpoints of before the choice per modality) mean all / none
    bias_correction: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        modalities = tuple(self.modalities) if isinstance(self.modalities, (list, tuple)) else ()
        if not modalities or len(set(modalities)) != len(modalities) or not set(modalities) <= set(MODALITIES):
            raise SettingError("modalities", f"invalid input modalities {_shown(self.modalities)}; expected some of {MODALITIES}, each once")
        if not _is_orientation(self.orientation):
            raise SettingError("orientation", f"got {self.orientation!r}; expected three axis codes, one of L/R, one of "
                                              f"P/A and one of I/S, such as 'LPS' or 'RAS'")
        low, high = MODEL_SPACING_RANGE_MM
        require_triple("spacing", self.spacing, lambda s: is_number(s, low, high), f"numbers from {low:g} to {high:g} (millimetres)")
        require_whole("crop_margin", self.crop_margin, 0)
        self.bias_correction = scans_chosen(self.bias_correction, modalities)
        corrected = self.bias_correction if isinstance(self.bias_correction, (list, tuple)) else None
        if corrected is not None and not all(isinstance(m, str) for m in corrected):
            corrected = None
        if corrected is None or len(set(corrected)) != len(corrected) or not set(corrected) <= set(modalities):
            given = ", ".join(self.bias_correction) if corrected is not None else _shown(self.bias_correction)
            raise SettingError("bias_correction", f"got {given}; expected some of this model's input scans "
                                                  f"({', '.join(modalities)}), each once (true: all, false: none)")
        self.bias_correction = tuple(m for m in modalities if m in corrected)  # the input order, whatever was written


def scans_chosen(value: Any, modalities: tuple[str, ...]) -> Any:
    """A per-scan choice as written (``bias_correction``): true / false, from before the choice was per
    scan, mean all ``modalities`` / none; anything else is returned as it is."""
    if isinstance(value, bool):
        return tuple(modalities) if value else ()
    return value


def _is_orientation(codes: Any) -> bool:
    if not isinstance(codes, str) or len(codes) != 3:
        return False
    pairs = [next((i for i, pair in enumerate(_AXIS_PAIRS) if c in pair), -1) for c in codes]
    return sorted(pairs) == [0, 1, 2]


@dataclass
class InferenceConfig:
    """Sliding-window defaults; users may override them per run."""

    patch_size: tuple[int, int, int] = (96, 96, 48)
    overlap: float = 0.5  # stride = (1 - overlap) x patch
    batch_size: int = 1
    tta: bool = False
    threshold: float = 0.5

    def __post_init__(self) -> None:
        require_patch_size("patch_size", self.patch_size)
        require_number("overlap", self.overlap, 0.0, 1.0, high_open=True)
        require_whole("batch_size", self.batch_size, 1)
        require_flag("tta", self.tta)
        require_number("threshold", self.threshold, 0.0, 1.0, low_open=True, high_open=True)


@dataclass
class PostprocessConfig:
    """Which post-processing runs, decided on validation data."""

    min_component_voxels: int = 0  # whole-tumour components smaller than this are removed
    min_et_voxels: int = 0  # if the whole ET volume is smaller, relabel it as necrotic core
    # whole-tumour components farther than this from the largest one are removed (0: none); on by
    # default, also for checkpoints saved before it existed: in every model compared on the validation
    # split it removed far false positives and never lowered a score (docs/model_evidence.md)
    max_component_distance_mm: float = 10.0
    # tumour-core and enhancing pieces smaller than this (each region's largest stays) are absorbed by the
    # region around them. BraTS 2023+ lesion-wise scoring counts each such speck as a false positive; on
    # 16 held-out cases of four models it raised lesion-wise TC/ET Dice by up to 0.22 and moved no volume
    # Dice by more than 0.001. It also removes true fragments: applied to the expert maps it costs the
    # three with fragmented ET 0.04-0.14 ET Dice (docs/model_evidence.md). On by default, also for checkpoints saved
    # before it existed
    min_core_component_voxels: int = 50

    def __post_init__(self) -> None:
        require_whole("min_component_voxels", self.min_component_voxels, 0)
        require_whole("min_et_voxels", self.min_et_voxels, 0)
        require_whole("min_core_component_voxels", self.min_core_component_voxels, 0)
        require_number("max_component_distance_mm", self.max_component_distance_mm, 0.0)


@dataclass
class BrainsegConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, so a checkpoint loads with ``weights_only=True``."""
        return to_plain(asdict(self))

    def check_consistent(self) -> None:
        """Refuse sections that do not fit together (each value on its own was checked as it was built).

        Raises SettingError naming the setting.
        """
        modalities = tuple(self.preprocess.modalities)
        if self.model.in_channels != len(modalities):
            raise SettingError("model.in_channels", f"{self.model.in_channels} input channels for {len(modalities)} "
                                                    f"modalities {modalities}; expected one channel per modality")
        if OUTPUT_CHANNELS[self.model.output_mode] != self.model.out_channels:
            raise SettingError("model.out_channels", f"output mode {self.model.output_mode!r} with "
                                                     f"{self.model.out_channels} output channels; expected 'regions' "
                                                     f"with 3 or 'labels' with 4")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BrainsegConfig":
        """Build from ``to_dict`` output; unknown keys are an error, missing ones take defaults.

        Raises:
            SettingError: a value out of range, named ``section.field``.
        """
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
                if isinstance(getattr(defaults, key), tuple) and isinstance(value, list):
                    raw[key] = tuple(value)
            try:
                parts[f.name] = sub_cls(**raw)
            except SettingError as exc:
                raise SettingError(f"{f.name}.{exc.setting}", exc.problem) from None
        return cls(**parts)


def to_plain(value: Any) -> Any:
    """Mappings, sequences and numpy values as plain dicts, lists and Python scalars (JSON-safe).

    Non-finite floats become None, so JSON written with ``allow_nan=False`` stays valid.
    """
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class TrainConfig:
    """How ``brainseg train`` runs; written to each run's config.json beside the model's BrainsegConfig."""

    data: str = ""  # folder of labelled cases (required to train)
    output: str = "runs/default"
    max_steps: int = 4000
    batch_size: int = 2
    patch_size: tuple[int, int, int] = (64, 64, 64)
    lr: float = 3e-3
    weight_decay: float = 3e-5
    warmup_steps: int = 100
    grad_clip: float = 12.0
    tumour_share: float = 0.5
    augment: bool = True
    augmentation: str = "auto"  # engine (AUGMENTATION_ENGINES)
    val_every: int = 250
    patience: int = 0  # validations without improvement before stopping; 0 = never stop early
    validation: tuple[str, ...] | None = None  # case ids; () trains on every case; None: see validation_split
    seed: int = 0
    threads: int = 0  # 0: torch's default
    resume: str = ""
    init: str = ""  # brainseg checkpoint whose weights (and model/preprocessing settings) start a fresh run
    amp: bool = True
    time_limit_minutes: float = 0.0  # stop (after validating) once this much time has passed; 0 = none
    labels: str = AUTO  # label convention of the data's segmentations (labels.READABLE); auto: see labelmaps.LabelMap.read_as

    def __post_init__(self) -> None:
        """Check every value before any data is read; ``SettingError`` names the field."""
        for name in ("max_steps", "batch_size", "val_every"):
            require_whole(name, getattr(self, name), 1)
        for name in ("warmup_steps", "patience", "seed", "threads"):
            require_whole(name, getattr(self, name), 0)
        require_patch_size("patch_size", self.patch_size)
        for name in ("lr", "weight_decay", "time_limit_minutes"):
            require_number(name, getattr(self, name), 0.0)
        require_number("grad_clip", self.grad_clip, 0.0, low_open=True)
        require_number("tumour_share", self.tumour_share, 0.0, 1.0)
        require_choice("labels", self.labels, LABEL_OPTIONS, "label convention")
        require_choice("augmentation", self.augmentation, AUGMENTATION_ENGINES, "augmentation engine")
        for name in ("data", "output", "resume", "init"):
            if isinstance(getattr(self, name), PurePath):  # a pathlib path is as good as its text
                setattr(self, name, str(getattr(self, name)))
            require_text(name, getattr(self, name))
        for name in ("augment", "amp"):
            require_flag(name, getattr(self, name))
        if self.validation is not None:
            cases = self.validation
            if not isinstance(cases, (list, tuple)) or not all(isinstance(c, str) for c in cases):
                raise SettingError("validation", f"got {_shown(cases)}; expected a list of case ids")
            self.validation = tuple(cases)
        self.patch_size = tuple(self.patch_size)

    def check_fits(self, model: ModelConfig) -> None:
        """Training patches go through the network unpadded: each side must be a multiple of its divisor."""
        d = model.divisor
        if any(p % d for p in self.patch_size):
            fixed = tuple(-(-p // d) * d for p in self.patch_size)
            raise SettingError("patch_size", f"got {self.patch_size}; expected multiples of {d} for this network "
                                              f"({len(model.features) - 1} poolings), such as {fixed}")
        if max(self.patch_size) <= d:  # the deepest layer would hold one voxel, which instance norm cannot normalise
            raise SettingError("patch_size", f"got {self.patch_size}; expected a side longer than {d} voxels for this "
                                              f"network ({len(model.features) - 1} poolings), such as {(2 * d,) * 3}")

    @property
    def label_convention(self) -> str | None:
        """The convention segmentations are read in; None: each file's header, dataset.json or values
        decide (labelmaps.LabelMap.read_as)."""
        return chosen_convention(self.labels)
