"""What the app keeps between reruns of a session: a run's result and the references scored against it.

Typed, so a misspelt attribute fails where it is written rather than reading as missing later.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# bumped when a result's attributes change: a session kept across an app update holds results of the old shape
RESULT_FORMAT = 3


@dataclass(slots=True)
class DroppedFile:
    """One dropped file, decoded once: what it holds (one of scan, labels, case) or why it cannot be used."""

    name: str
    size: int
    digest: str  # of its bytes: the same file dropped again is the same input
    error: str | None = None
    guess: str | None = None  # the role its name and content suggest
    note: str | None = None  # what it turned out to be when its name suggested something else
    scan: Any = None  # io.Scan
    labels: Any = None  # labelmaps.LabelMap
    case: Any = None  # io.Case of a 4-channel image
    data: bytes | None = None  # a label map's bytes, read again in the label values the user chooses
    archive: str | None = None  # the .zip it came in, when it did
    grid_check: tuple | None = None  # (the scans' key, why it does not fit them or None), checked once per scans


@dataclass(slots=True)
class CaseInputs:
    """The case the dropped files make once four scans are set, and the reference dropped with them."""

    case: Any  # io.Case
    key: tuple  # the scans' digests
    truth: DroppedFile | None = None


@dataclass(slots=True)
class RunSettings:
    """The sidebar's choices a run is made with; ``path`` None: no readable checkpoint, so nothing can run."""

    path: str | None = None
    patch: tuple[int, int, int] | None = None  # None: the window the checkpoint was trained with
    overlap: float = 0.5
    tta: bool = False
    min_component: int = 0
    max_distance: float = 0.0
    device: str = "auto"
    bias: list[str] = field(default_factory=list)  # the scans N4 corrects


@dataclass(slots=True)
class ReferenceFile:
    """A reference segmentation as the user gave it: "dropped" with the scans or put in the reference "box"."""

    name: str
    data: bytes
    origin: str


@dataclass(slots=True)
class RefusedReference(ReferenceFile):
    """A reference file that could not be read, shown with why until it is read, removed or replaced."""

    error: str = ""


@dataclass(slots=True)
class Reference:
    """A reference read: internal labels on the case's grid, and the label values it was read in."""

    name: str
    labels: np.ndarray
    convention: str  # the convention it was read in
    chosen: str | None  # what the user chose (None: as its header names, else guessed)
    source: str  # where the convention came from: "given", "header", "name", "values", ...
    assumed_grid: bool  # a .npy file: taken to lie on the scans' grid


@dataclass(slots=True)
class Comparison:
    """A second checkpoint's segmentation of the same scans, and its table (kept until the reference changes)."""

    model: str
    segmentation: Any  # pipeline.Segmentation
    seconds: float
    rows: list | None = None
    scored_against: Reference | None = None


@dataclass(slots=True)
class RunResult:
    """One run of the pipeline on one case, with what the user attached to it since."""

    id: int  # per session, for widget keys
    case: Any  # io.Case
    key: tuple  # the scans' digests: the same scans dropped again are the same case
    segmentation: Any  # pipeline.Segmentation
    model: str
    output_mode: str
    model_path: str
    settings: RunSettings  # the sidebar's, as run
    record: dict  # report.run_record
    seconds: float
    ranges: dict  # display intensity range per modality
    cache: dict = field(default_factory=dict)  # figures derived once per result ("evaluation", ...)
    comparison: Comparison | None = None
    truth: Reference | None = None
    truth_source: ReferenceFile | None = None  # the file ``truth`` was read from
    truth_refused: RefusedReference | None = None
    truth_choice: str | None = None  # the label values last chosen for references
    truth_choice_error: str | None = None  # why the shown reference cannot be read as chosen
    dropped_truth: str | None = None  # digest of the reference dropped with the scans, once attached
    format: int = RESULT_FORMAT
