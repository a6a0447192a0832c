"""Step 2: running the pipeline with a progress bar, and attaching a reference segmentation to a result."""
from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from brainseg import pipeline, render, report
from brainseg.classify import read_reference
from brainseg.labels import AUTO, chosen_convention
from brainseg_app.common import ROLES, attempt, checkpoint_label, failure_message, get_model
from brainseg_app.state import CaseInputs, Reference, ReferenceFile, RefusedReference, RunResult, RunSettings


def _next_run_id() -> int:
    """Per session and across reruns (kept in the session's state: a module counter would be shared by all users)."""
    st.session_state["run_counter"] = st.session_state.get("run_counter", 0) + 1
    return st.session_state["run_counter"]


def run_section(inputs: CaseInputs | None, settings: RunSettings) -> None:
    st.subheader("2 · Segment")
    clicked = st.button("Run segmentation", type="primary", key="run", disabled=inputs is None or settings.path is None)
    if not clicked:
        return
    with attempt("Segmentation"):
        loaded = get_model(settings.path)
        segmentation, seconds, record = segment(inputs.case, loaded, settings)
        result = RunResult(
            id=_next_run_id(), case=inputs.case, key=inputs.key, segmentation=segmentation, model=loaded.name,
            output_mode=loaded.config.model.output_mode, model_path=settings.path, settings=settings, record=record,
            seconds=seconds, ranges={m: render.intensity_range(v) for m, v in inputs.case.images.items()},
        )
        earlier = st.session_state.get("result")
        st.session_state["result"] = result
        if earlier is None or earlier.key != result.key:
            # another case's downloads start from its own label values (a BraTS 2023 case after a 2018 one);
            # set, not dropped: a dropped key leaves the browser's box showing the old choice
            st.session_state["convention"] = inputs.case.convention
        if inputs.truth is not None:
            result.dropped_truth = inputs.truth.digest
            set_truth(result, inputs.truth.name, inputs.truth.data, reference_convention(), origin="dropped")


def segment(case, loaded, settings: RunSettings):
    """Run the pipeline with a progress bar; returns (segmentation, wall seconds, ``report.run_record``)."""
    inference = pipeline.inference_settings(loaded, settings.patch, settings.overlap, settings.tta)
    post = pipeline.postprocess_settings(loaded, settings.min_component, settings.max_distance)
    n4 = f" (N4 bias-field correction of {', '.join(ROLES[m] for m in settings.bias)}, 3-5 s per scan)" if settings.bias else ""
    bar = st.progress(0.0, text=f"{loaded.name}: preparing the scans{n4}…")
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"{loaded.name}: window {done} of {total} · {time.perf_counter() - started:.1f} s")

    segmentation = pipeline.segment_case(case, loaded, inference, post, device=settings.device, progress=progress,
                                         bias_correction=settings.bias)
    seconds = time.perf_counter() - started
    bar.progress(1.0, text=f"{loaded.name}: done in {seconds:.1f} s")
    record = report.run_record(loaded, inference, post, segmentation)
    record["checkpoint"] = checkpoint_label(Path(loaded.path))  # not the server's folders: the summary goes to any user
    return segmentation, seconds, record


def set_truth(result: RunResult, name: str, data: bytes, convention: str | None = None, origin: str = "box") -> bool:
    """Attach a reference segmentation, read in ``convention`` (None: as its header names, else guessed
    from its values), to a result; ``origin``: "dropped" with the scans or given in the reference "box".

    A file that cannot be read becomes ``result.truth_refused`` (shown until it is read, removed or replaced)
    and any reference read before stays. Returns whether the file was read.
    """
    result.truth_choice, result.truth_choice_error = convention, None
    source = ReferenceFile(name, data, origin)
    truth, error = _read_truth(result.case, source, convention)
    if truth is None:
        result.truth_refused = RefusedReference(name, data, origin, error)
        return False
    _show_truth(result, truth, source)
    result.truth_refused = None
    return True


def apply_label_choice(result: RunResult, convention: str | None) -> None:
    """A new choice of reference label values: tried first on a refused file (the usual reason to change it),
    else on the reference shown, which stays as read before when it cannot be read so. A refused file
    stays refused (with the new choice's reason) while the reference shown is re-read."""
    refused, source = result.truth_refused, result.truth_source
    if refused is not None and set_truth(result, refused.name, refused.data, convention, refused.origin):
        return
    if source is None:
        return
    result.truth_choice, result.truth_choice_error = convention, None
    truth, error = _read_truth(result.case, source, convention)
    if truth is None:
        result.truth_choice_error = f"{error.rstrip('.')}. The scores shown read it as before."
    else:
        _show_truth(result, truth, source)


def _read_truth(case, source: ReferenceFile, convention: str | None) -> tuple[Reference | None, str | None]:
    """(the reference read as ``convention``, None), or (None, why it cannot be) for a file the user gave."""
    try:
        label_map = read_reference(source.data, source.name, case)  # its errors name the file
        read_as, how = label_map.read_as(convention)
        labels, _ = label_map.internal(read_as)
    except Exception as exc:
        return None, failure_message("Reading the ground truth", exc)
    return Reference(source.name, labels, read_as, convention, how, assumed_grid=not label_map.has_geometry), None


def _show_truth(result: RunResult, truth: Reference, source: ReferenceFile) -> None:
    """Make ``truth`` the reference the result is scored against; its scores are computed afresh."""
    result.truth, result.truth_source = truth, source
    result.cache.pop("evaluation", None)


def clear_truth(result: RunResult, origin: str) -> None:
    """Forget what came from ``origin`` ("box" or "dropped"), read or refused, and its scores: the user took the file away."""
    if result.truth_source is not None and result.truth_source.origin == origin:
        result.truth = result.truth_source = None
        result.cache.pop("evaluation", None)
    if result.truth_refused is not None and result.truth_refused.origin == origin:
        result.truth_refused = None


def reference_convention() -> str | None:
    """The label values the user says references hold; None: as their header names, else guessed."""
    return chosen_convention(st.session_state.get("truth_convention", AUTO))
