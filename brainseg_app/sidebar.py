"""The sidebar: checkpoint choice, run settings set to the checkpoint's own defaults, and its model card."""
from __future__ import annotations

from pathlib import Path

import streamlit as st
import torch

from brainseg import MODALITIES, checkpoint, report
from brainseg.config import MAX_PATCH_SIDE, BrainsegConfig
from brainseg_app.common import (ROLES, attempt, cached_model, checkpoint_folders, checkpoint_label, checkpoint_version,
                                 get_model)
from brainseg_app.state import RunSettings


STRIDE_RANGE = (0.1, 1.0)  # share of the patch between window starts: overlap 0.9 to 0


# None: the window the checkpoint was trained and validated with (see its model card); the largest
# window the settings allow is cut to the brain, so it takes the whole brain at once
PATCH_SIZES = {"as trained": None, "whole brain": (MAX_PATCH_SIDE,) * 3}


def sidebar() -> tuple[RunSettings, object]:
    """Model choice and run settings; also the sidebar slot where the model card goes."""
    with st.sidebar:
        st.header("Model")
        paths = checkpoint.discover(checkpoint_folders())
        if not paths:
            st.error("No checkpoint found in models/. Put a brainseg .pt file there (or set BRAINSEG_MODELS to a folder holding one) and reload.")
            return RunSettings(), None
        labels = {checkpoint_label(p): str(p) for p in paths}
        choice = st.selectbox("Checkpoint", list(labels), key="checkpoint")
        loaded = None
        version = checkpoint_version(labels[choice])  # read once: the settings below are keyed on the version loaded
        with attempt("Reading the checkpoint"):  # loaded once per file version, shared by all sessions
            loaded = cached_model(labels[choice], version)
        card = st.container()  # the model card, filled at the end of the page

        st.header("Settings")
        defaults = checkpoint_defaults(labels[choice], loaded, version)
        trained = "x".join(map(str, defaults["patch"]))
        patch = st.selectbox(
            "Patch size (voxels)", list(PATCH_SIZES), key="patch",
            format_func=lambda k: f"{trained}, as trained (default)" if PATCH_SIZES[k] is None else "whole brain in one window",
            help=f"Window the network sees at once, on the model's grid. {trained} is the window this checkpoint was trained and "
                 f"validated with. One window over the whole brain is about twice as fast on a CPU, but the network then sees "
                 f"other statistics than in training: with the shipped model it lowered the mean Dice of every region by "
                 f"0.02 on the validation cases.")
        stride = st.slider("Stride ratio", *STRIDE_RANGE, step=0.05, key="stride", help=f"Step between windows as a share of the patch; this checkpoint's default is {defaults['stride']:.2f}.")
        st.caption("Smaller stride = more overlap between windows: slower, smoother borders.")
        tta = st.checkbox("Test-time augmentation (8 mirrored copies, ~8x slower)", key="tta")
        corrected = ", ".join(ROLES[m] for m in defaults["bias_correct"]) or "none"
        scans = list(loaded.config.preprocess.modalities) if loaded is not None else list(MODALITIES)
        bias = st.multiselect("Bias-field correction (N4) of", scans, key="bias_correct", format_func=ROLES.get,
                              help=f"Divides out scanner coil inhomogeneity inside the brain before the network sees these "
                                   f"scans (3-5 s per scan on a 2-core CPU); this checkpoint's default: {corrected}. The "
                                   f"model card gives what it did on the validation cases.")
        min_component = st.number_input(
            "Minimum tumour component (voxels)", 0, 100_000, step=10, key="min_component",
            help=f"Whole-tumour pieces smaller than this many voxels of the scans' grid are removed (at 1 mm voxels, "
                 f"1000 voxels are 1 mL); this checkpoint's default is {defaults['min_component']}.")
        max_distance = st.number_input("Farthest tumour piece kept (mm)", 0.0, 500.0, step=5.0, key="max_distance", help=f"Whole-tumour pieces farther than this from the largest one are removed (0 keeps all; a distant second lesion needs 0 or a larger value); this checkpoint's default is {defaults['max_distance']:g}.")
        devices = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        device = st.selectbox("Device", devices, key="device")
    # an unreadable checkpoint: Run stays off (the error above says why)
    settings = RunSettings(path=labels[choice] if loaded is not None else None, patch=PATCH_SIZES[patch],
                           overlap=round(1.0 - stride, 4), tta=tta, min_component=int(min_component),
                           max_distance=float(max_distance), device=device, bias=[m for m in scans if m in bias])
    return settings, card


def checkpoint_defaults(path: str, loaded, version: float | None = None) -> dict:
    """The chosen checkpoint's own inference and post-processing settings, put into the sidebar widgets
    whenever the choice or the file's ``version`` (its modification time) changes, so the app segments as
    `brainseg segment` does with that checkpoint."""
    config = loaded.config if loaded is not None else BrainsegConfig()  # unreadable: Run is off, widgets need values
    low, high = STRIDE_RANGE
    defaults = {
        "stride": min(max(round(1.0 - config.inference.overlap, 2), low), high),
        "tta": config.inference.tta,
        "bias_correct": list(config.preprocess.bias_correction),
        "min_component": int(config.postprocess.min_component_voxels),
        "max_distance": float(config.postprocess.max_component_distance_mm),
    }
    # the file's state too: a checkpoint unreadable at first (still being copied) or replaced in place
    # brings its own settings once read
    chosen = (path, version if loaded is not None else None)
    if st.session_state.get("defaults_for") != chosen:
        st.session_state["defaults_for"] = chosen
        st.session_state.update(defaults)
    return {**defaults, "patch": tuple(config.inference.patch_size)}  # shown, not a widget's value


def model_card(container, settings: RunSettings) -> None:
    """The selected checkpoint's card (nothing when it could not be read: the sidebar says why)."""
    if container is None or settings.path is None:
        return
    with container, attempt("Reading the model card"):
        loaded = get_model(settings.path)
        st.caption(f"Loaded: {checkpoint_label(Path(settings.path))}")
        with st.expander("Model card", expanded=False):
            st.markdown(report.model_card(loaded.path, loaded.config, loaded.provenance))
