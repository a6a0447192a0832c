"""What every part of the page shares: the cached checkpoints, error display, session state and names."""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import streamlit as st

from brainseg import checkpoint
from brainseg.checkpoint import load_checkpoint
from brainseg.errors import BrainsegError
from brainseg.labels import AUTO
from brainseg.naming import SUFFIXES


log = logging.getLogger("brainseg.app")


ROOT = Path(__file__).resolve().parents[1]  # the repository: models/, assets/


# the endings the uploaders take: every image file brainseg reads ("gz" for .nii.gz), and the detached NRRD /
# MetaImage headers, so that dropping one says what to do instead of the uploader's bare refusal
IMAGE_TYPES = sorted({suffix.rsplit(".", 1)[1] for suffix in SUFFIXES})


ROLES = {"flair": "FLAIR", "t1": "T1", "t1ce": "T1ce", "t2": "T2", "truth": "ground truth", "all": "all four scans", "ignore": "ignore"}


CONVENTION_TITLES = {"brats2018": "BraTS 2018-2021 (ET = 4)", "brats2023": "BraTS 2023+ (ET = 3)",
                     "msd": "Decathlon Task01 (1 ED, 2 NCR, 3 ET)",
                     "brats2024": "BraTS 2024 post-treatment (4 = resection cavity)",
                     AUTO: "as its header or BraTS 2023+ file name says, else from its values (ET = 3 or 4)"}


@st.cache_resource(show_spinner=False, max_entries=4)
def cached_model(path: str, modified: float):
    """A checkpoint loaded once per file version and shared by all sessions."""
    return load_checkpoint(path)


def checkpoint_version(path: str) -> float | None:
    """A checkpoint file's version, its modification time; None when it cannot be read (loading it says why)."""
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return None


def get_model(path: str):
    return cached_model(path, checkpoint_version(path))


def checkpoint_folders() -> list[Path]:
    """models/ and any folders in BRAINSEG_MODELS (set by whoever deploys the app)."""
    extra = [Path(p) for p in os.environ.get("BRAINSEG_MODELS", "").split(os.pathsep) if p.strip()]
    return [checkpoint.DEFAULT_DIR] + extra  # read when called: this module outlives a page run


def checkpoint_label(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def attempt(action: str):
    """Show any failure inside as an error message that says what to do; never a traceback."""
    try:
        yield
    except Exception as exc:
        st.error(failure_message(action, exc))


def failure_message(action: str, exc: Exception) -> str:
    """What the user reads when ``action`` failed with ``exc``; an unforeseen error (a bug) is logged with its traceback."""
    if isinstance(exc, (BrainsegError, ValueError)):
        return f"{action}: {exc}"
    if isinstance(exc, MemoryError):
        return f"{action}: ran out of memory. Choose a smaller patch size, turn test-time augmentation off, or reload the page."
    log.error("%s failed", action, exc_info=exc)
    return (f"{action} failed unexpectedly ({type(exc).__name__}: {exc}). Your files and earlier results are "
            f"kept; try again, and if it happens again report this message.")


def state(key: str, default):
    if key not in st.session_state:
        st.session_state[key] = default
    return st.session_state[key]
