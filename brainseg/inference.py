"""Sliding-window inference over a volume with Gaussian-weighted overlap stitching.

``sliding_window`` takes any predictor (a callable on (N, C, *patch) tensors), so the windowing is
tested without a network; ``ModelPredictor`` wraps a U-Net with the fastest safe precision.
"""
from __future__ import annotations

import functools
import itertools
import logging
import copy
import math
import threading
import weakref
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

Predictor = Callable[[torch.Tensor], torch.Tensor]
Progress = Callable[[int, int], None]


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start offsets along one axis: evenly spread, the first at 0 and the last at ``size - patch``.

    Args:
        size: length of the (padded) axis, at least ``patch``.
        overlap: share of the patch two neighbouring windows share, 0 <= overlap < 1.
    """
    if size <= patch:
        return [0]
    stride = max(patch * (1.0 - overlap), 1.0)
    n = math.ceil((size - patch) / stride) + 1
    step = (size - patch) / (n - 1)
    return [int(round(i * step)) for i in range(n)]


@functools.lru_cache(maxsize=8)
def gaussian_importance(patch: tuple[int, ...], sigma_scale: float = 1 / 8) -> torch.Tensor:
    """Gaussian weight map (sigma = patch x ``sigma_scale``), max 1, no zeros (nnU-Net's choice)."""
    axes = []
    for n in patch:
        coords = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
        sigma = max(n * sigma_scale, 1e-3)
        axes.append(torch.exp(-0.5 * (coords / sigma) ** 2))
    weights = functools.reduce(lambda a, b: a[..., None] * b, axes)
    weights = weights / weights.max()
    smallest = weights[weights > 0].min()
    return torch.clamp(weights, min=smallest).float()


@dataclass
class WindowPlan:
    padded_shape: tuple[int, int, int]
    pad: list[int]  # F.pad order (last axis first)
    starts: list[tuple[int, int, int]]
    patch: tuple[int, int, int]  # the window as placed: cut to the volume, but never to one the network cannot run


def plan_windows(shape: Sequence[int], patch: Sequence[int], overlap: float, divisor: int = 1) -> WindowPlan:
    """Place windows over a volume.

    A window side longer than the volume is cut to the volume, rounded up to ``divisor`` (the
    network's): a window of 512 voxels takes a whole brain at once without computing on padding. A volume
    no longer than ``divisor`` on every side keeps two divisors on the window's longest side (the deepest
    layer would otherwise hold one voxel). The volume is zero-padded, evenly at both ends, up to the window
    where it is shorter.
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if len(patch) != 3 or any(int(p) < 1 for p in patch):
        raise ValueError(f"patch size must be three positive integers, got {tuple(patch)}")
    cut = [min(int(p), -(-int(s) // divisor) * divisor) for s, p in zip(shape, patch)]
    if divisor > 1 and max(cut) <= divisor:  # a volume this small: keep the network's deepest layer above one voxel
        longest = int(np.argmax(patch))
        cut[longest] = min(int(patch[longest]), 2 * divisor)
    patch = tuple(cut)
    padded = tuple(max(int(s), p) for s, p in zip(shape, patch))
    pad: list[int] = []
    for s, p in reversed(list(zip(padded, shape))):
        before = (s - p) // 2
        pad += [before, s - p - before]
    per_axis = [window_starts(s, p, overlap) for s, p in zip(padded, patch)]
    return WindowPlan(padded, pad, list(itertools.product(*per_axis)), patch)


@torch.no_grad()
def sliding_window(
    predictor: Predictor,
    image: torch.Tensor,
    patch: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 1,
    progress: Progress | None = None,
    divisor: int | None = None,
) -> torch.Tensor:
    """Predict a whole volume window by window.

    Args:
        predictor: maps (N, C, *patch) to (N, K, *patch).
        image: (C, X, Y, Z).
        patch: window size; a side longer than the volume is cut to it (``plan_windows``).
        overlap: 0 <= overlap < 1; stride = (1 - overlap) x patch.
        progress: called with (windows done, windows in all) after each batch.
        divisor: the network's (``plan_windows``); default: the predictor's ``divisor``, else 1.
    Returns:
        (K, X, Y, Z) float32: the importance-weighted average of the window outputs.
    """
    plan = plan_windows(image.shape[1:], patch, overlap, divisor or getattr(predictor, "divisor", 1))
    patch = plan.patch
    padded = F.pad(image, plan.pad) if any(plan.pad) else image
    weights = gaussian_importance(patch).to(image.device)
    output = None
    weight_sum = torch.zeros(plan.padded_shape, dtype=torch.float32, device=image.device)
    total = len(plan.starts)
    for first in range(0, total, batch_size):
        starts = plan.starts[first : first + batch_size]
        slices = [tuple(slice(s, s + p) for s, p in zip(start, patch)) for start in starts]
        batch = torch.stack([padded[(slice(None),) + sl] for sl in slices])
        result = predictor(batch).float().to(image.device)  # a GPU predictor's windows join the CPU sums
        if output is None:
            output = torch.zeros((result.shape[1],) + plan.padded_shape, dtype=torch.float32, device=image.device)
        for sl, window in zip(slices, result):
            output[(slice(None),) + sl] += window * weights
            weight_sum[sl] += weights
        if progress is not None:
            progress(min(first + batch_size, total), total)
    output /= weight_sum
    crop = tuple(slice(plan.pad[2 * (2 - a)], plan.pad[2 * (2 - a)] + image.shape[1 + a]) for a in range(3))
    return output[(slice(None),) + crop]


def cpu_supports_bf16() -> bool:
    """True where oneDNN has native bf16 kernels (AVX-512 BF16 or AMX); elsewhere bf16 is slow."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda (--device) was asked for but no CUDA GPU is available; use auto or cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; expected auto, cpu or cuda")
    return torch.device(device)


_READY_LOCK = threading.Lock()
_READY_COPIES: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def _ready(model: torch.nn.Module, device: torch.device, channels_last: bool, share: bool) -> torch.nn.Module:
    """The model on ``device`` in eval mode and the wanted memory layout.

    With ``share`` (app sessions and CLI runs use one cached model) the model itself is never
    changed: each (device, layout) gets its own copy, made under a lock, so one session's settings
    cannot move weights under another's forward pass. The copy is made again when the model's
    weights changed since (in-place edits, also through ``.data``, ``load_state_dict``, new tensors), so a notebook that
    fine-tunes or swaps weights segments with the weights it holds. Without ``share`` (validation
    during training) the model is converted in place.
    """
    if not share:
        model = model.to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last_3d)
        return model.eval()
    key = (device.type, device.index, channels_last)
    # storage, version counter and sum of each tensor: edits through ``.data`` bump no version, so the
    # sums (a few ms for the shipped network) catch them
    with torch.no_grad():
        weights = tuple((t.data_ptr(), t._version, float(t.detach().double().sum()))
                        for t in model.state_dict(keep_vars=True).values())
    with _READY_LOCK:
        copies = _READY_COPIES.setdefault(model, {})
        if key not in copies or copies[key][0] != weights:
            ready = copy.deepcopy(model).to(device)
            if channels_last:
                ready = ready.to(memory_format=torch.channels_last_3d)
            copies[key] = (weights, ready.eval())
        return copies[key][1]


PRECISION_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def choose_dtype(device: torch.device, precision: str = "auto"):
    """The autocast dtype a precision choice resolves to on ``device`` (None: fp32)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise ValueError(f"unknown precision {precision!r}; expected auto, fp32 or bf16")
    if device.type == "cuda":
        return torch.float16
    if cpu_supports_bf16():
        return torch.bfloat16
    log.info("this CPU has no bf16 kernels: running in fp32")
    return None


class ModelPredictor:
    """A network as a predictor: reduced precision where the hardware runs it fast, fp32 otherwise.

    Args:
        model: returns logits (N, K, ...).
        precision: "auto" (bf16 on CPUs with bf16 kernels, fp16 on CUDA, else fp32), "fp32", "bf16".
        tta: also predict on the 7 mirrored copies and average the logits.
        share: the model is shared (cached, used by several threads); see ``_ready``.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str = "auto", tta: bool = False, share: bool = True):
        self.device = device
        self.dtype = choose_dtype(device, precision)
        self.channels_last = device.type == "cpu" and self.dtype is not None
        self.model = _ready(model, device, self.channels_last, share)
        self.divisor = getattr(model, "divisor", 1)
        self.tta = tta

    @property
    def precision(self) -> str:
        return PRECISION_NAMES[self.dtype]

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device)
        if not self.tta:
            return self._forward(batch)
        total = None
        flips = [dims for r in range(4) for dims in itertools.combinations((2, 3, 4), r)]
        for dims in flips:
            x = torch.flip(batch, dims) if dims else batch
            y = self._forward(x)
            y = torch.flip(y, dims) if dims else y
            total = y if total is None else total + y
        return total / len(flips)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        return forward_padded(self._network, batch, self.divisor).contiguous()

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        if self.dtype is not None:
            with torch.autocast(self.device.type, dtype=self.dtype):
                y = self.model(x)
        else:
            y = self.model(x)
        return y.float()


def forward_padded(forward: Predictor, batch: torch.Tensor, divisor: int) -> torch.Tensor:
    """Run ``forward`` on a batch zero-padded at the far ends up to multiples of ``divisor``, cropped back.

    Args:
        forward: maps (N, C, *shape) to (N, K, *shape) for shapes that are multiples of ``divisor``.
        batch: (N, C, X, Y, Z) of any spatial size.
    Returns:
        (N, K, X, Y, Z): the output over the unpadded region (a view).
    """
    shape = batch.shape[2:]
    pad = []
    for s in reversed(shape):
        pad += [0, -(-s // divisor) * divisor - s]
    y = forward(F.pad(batch, pad) if any(pad) else batch)
    return y[(slice(None), slice(None)) + tuple(slice(0, s) for s in shape)]
