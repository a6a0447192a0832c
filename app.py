"""brainseg web app: upload four MRI scans, segment the brain tumour, inspect and download the result.

Run with ``streamlit run app.py``. This file lays out widgets and calls brainseg; the numbers and
pictures come from the library. Results live in ``st.session_state`` so moving a slider never
re-runs the network.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from pathlib import Path
from types import SimpleNamespace

import streamlit as st
import torch

from brainseg import MODALITIES, pipeline, render, report
from brainseg.checkpoint import DEFAULT_DIR, discover, load_checkpoint
from brainseg.classify import classify_file, read_reference
from brainseg.scoring import score_labels
from brainseg.config import LESION_CHALLENGES, MAX_PATCH_VOXELS, BrainsegConfig
from brainseg.errors import BrainsegError
from brainseg.io import assemble_case, labels_bytes, probabilities_bytes, read_label_map
from brainseg.labels import AUTO, CONVENTIONS, ED, ET, LABEL_NAMES, LABEL_OPTIONS, NCR, REGION_NAMES, REGIONS, chosen_convention
from brainseg.lesion_metrics import MISSED_HD95
from brainseg.metrics import slice_area_mm2, slice_stats, volume_stats
from brainseg.naming import case_stems, convention_from_names, names_another_case

log = logging.getLogger("brainseg.app")

ROOT = Path(__file__).resolve().parent
SAMPLE_DIR = ROOT / "assets" / "sample"
STRIDE_RANGE = (0.1, 1.0)  # share of the patch between window starts: overlap 0.9 to 0
# None: the window the checkpoint was trained and validated with (see its model card); the largest
# window the settings allow is cut to the brain, so it takes the whole brain at once
PATCH_SIZES = {"as trained": None, "whole brain": (MAX_PATCH_VOXELS,) * 3}
ROLES = {"flair": "FLAIR", "t1": "T1", "t1ce": "T1ce", "t2": "T2", "truth": "ground truth", "all": "all four scans", "ignore": "ignore"}
SIDE_WORDS = {"R": "right", "A": "front"}  # the patient side the left edge of a view shows (render.orientation_letters)
# what a file turned out to be when its name suggested something else
NOTES = {"scan": "named like a segmentation, but holds an MRI scan: choose its modality under 'Used as'",
         "labels": "holds only label values: a segmentation; choose 'ground truth' under 'Used as' to score against it",
         "case": "a 4-channel image: read as FLAIR, T1, T1ce, T2, the Medical Segmentation Decathlon's order"}
CONVENTION_TITLES = {"brats2018": "BraTS 2018-2021 (ET = 4)", "brats2023": "BraTS 2023+ (ET = 3)",
                     "msd": "Decathlon Task01 (1 ED, 2 NCR, 3 ET)",
                     "brats2024": "BraTS 2024 post-treatment (4 = resection cavity)",
                     AUTO: "as its header or BraTS 2023+ file name says, else from its values (ET = 3 or 4)"}
READ_FROM = {"given": "as chosen", "header": "as its header names", "name": "as its BraTS 2023+ file name implies",
             "values": "guessed from its values"}
NOTICE = (
    "**Research use only.** brainseg is not a medical device; its segmentations must not be used for "
    "diagnosis or treatment decisions."
)


def _next_run_id() -> int:
    """Per session and across reruns (Streamlit re-executes this module, so no module counter)."""
    st.session_state["run_counter"] = st.session_state.get("run_counter", 0) + 1
    return st.session_state["run_counter"]


VOLUME_COLUMNS = {
    "structure": "Structure", "kind": "Kind", "voxels": "Voxels",
    "volume_ml": st.column_config.NumberColumn("Volume (mL)", format="%.2f"),
    "brain_percent": st.column_config.NumberColumn("Share of brain (%)", format="%.2f"),
}
SLICE_COLUMNS = {"structure": "Structure", "voxels": "Voxels", "area_mm2": st.column_config.NumberColumn("Area (mm²)", format="%.1f")}
LESION_CHALLENGE = "GLI"  # adult glioma: what BraTS cases are
LESION_DILATION, LESION_MIN_MM3 = LESION_CHALLENGES[LESION_CHALLENGE]
METRIC_COLUMNS = {
    "region": "Region", "dice": st.column_config.NumberColumn("Dice", format="%.3f"),
    "hd95_mm": st.column_config.NumberColumn("HD95 (mm)", format="%.1f"),
    "predicted_voxels": "Predicted voxels", "reference_voxels": "Reference voxels",
    "lesion_dice": st.column_config.NumberColumn("Lesion-wise Dice", format="%.3f",
                                                 help="BraTS 2023+ ranking: each reference lesion scored on its own; "
                                                      "a missed lesion or a false-positive piece scores 0"),
    "lesion_hd95_mm": st.column_config.NumberColumn("Lesion-wise HD95 (mm)", format="%.1f",
                                                    help=f"a missed lesion or a false-positive piece scores {MISSED_HD95:g} mm"),
    "lesions": st.column_config.TextColumn(
        "Lesions hit/miss/FP",
        help=f"expert lesions found, expert lesions missed, predicted pieces touching no lesion (false positives); BraTS 2023 "
             f"{LESION_CHALLENGE} rules: lesions whose {LESION_DILATION}-voxel dilations meet (up to {2 * LESION_DILATION} voxels "
             f"apart) are one, lesions of at most {LESION_MIN_MM3:g} mm³ are not scored"),
}


# ---------------------------------------------------------------- helpers (no UI inside cached code)


@st.cache_resource(show_spinner=False, max_entries=4)
def cached_model(path: str, modified: float):
    """A checkpoint loaded once per file version and shared by all sessions."""
    return load_checkpoint(path)


def get_model(path: str):
    return cached_model(path, Path(path).stat().st_mtime)


def checkpoint_folders() -> list[Path]:
    """models/ and any folders in BRAINSEG_MODELS (set by whoever deploys the app)."""
    extra = [Path(p) for p in os.environ.get("BRAINSEG_MODELS", "").split(os.pathsep) if p.strip()]
    return [DEFAULT_DIR] + extra


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
    except BrainsegError as exc:
        st.error(f"{action}: {exc}")
    except MemoryError:
        st.error(f"{action}: ran out of memory. Choose a smaller patch size, turn test-time augmentation off, or reload the page.")
    except ValueError as exc:
        st.error(f"{action}: {exc}")
    except Exception as exc:  # anything else is a bug; the user still gets a message, the log the traceback
        log.exception("%s failed", action)
        st.error(
            f"{action} failed unexpectedly ({type(exc).__name__}: {exc}). Your files and earlier results are "
            f"kept; try again, and if it happens again report this message."
        )


def parse_file(name: str, data: bytes) -> SimpleNamespace:
    """One dropped file, decoded once (``classify.classify_file``): a scan, a label map, a case or an error."""
    found = classify_file(name, data)
    entry = SimpleNamespace(name=name, size=len(data), scan=None, labels=None, data=None, case=None, error=found.error,
                            guess=found.modality, note=NOTES[found.kind] if found.misnamed else None,
                            digest=hashlib.blake2b(data, digest_size=16).hexdigest())
    if found.kind is not None:
        setattr(entry, found.kind, found.value)
        entry.data = data if found.kind == "labels" else None
    return entry


def state(key: str, default):
    if key not in st.session_state:
        st.session_state[key] = default
    return st.session_state[key]


# ---------------------------------------------------------------- sidebar: model and settings


def sidebar() -> tuple[SimpleNamespace, object]:
    """Model choice and run settings; also the sidebar slot where the model card goes."""
    with st.sidebar:
        st.header("Model")
        paths = discover(checkpoint_folders())
        if not paths:
            st.error("No checkpoint found in models/. Put a brainseg .pt file there (or set BRAINSEG_MODELS to a folder holding one) and reload.")
            return SimpleNamespace(path=None), None
        labels = {checkpoint_label(p): str(p) for p in paths}
        choice = st.selectbox("Checkpoint", list(labels), key="checkpoint")
        loaded = None
        with attempt("Reading the checkpoint"):  # loaded once per file version, shared by all sessions
            loaded = get_model(labels[choice])
        card = st.container()  # the model card, filled at the end of the page

        st.header("Settings")
        defaults = checkpoint_defaults(labels[choice], loaded)
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
    settings = SimpleNamespace(path=labels[choice] if loaded is not None else None, patch=PATCH_SIZES[patch], overlap=round(1.0 - stride, 4), tta=tta, min_component=int(min_component), max_distance=float(max_distance), device=device, bias=[m for m in scans if m in bias])
    return settings, card


def checkpoint_defaults(path: str, loaded) -> dict:
    """The chosen checkpoint's own inference and post-processing settings, put into the sidebar widgets
    whenever the choice changes, so the app segments as `brainseg segment` does with that checkpoint."""
    config = loaded.config if loaded is not None else BrainsegConfig()  # unreadable: Run is off, widgets need values
    low, high = STRIDE_RANGE
    defaults = {
        "stride": min(max(round(1.0 - config.inference.overlap, 2), low), high),
        "tta": config.inference.tta,
        "bias_correct": list(config.preprocess.bias_correction),
        "min_component": int(config.postprocess.min_component_voxels),
        "max_distance": float(config.postprocess.max_component_distance_mm),
    }
    if st.session_state.get("defaults_for") != path:
        st.session_state["defaults_for"] = path
        st.session_state.update(defaults)
    return {**defaults, "patch": tuple(config.inference.patch_size)}  # shown, not a widget's value


# ---------------------------------------------------------------- inputs


def use_uploads() -> None:
    st.session_state["source"] = "upload"


def inputs_section() -> SimpleNamespace | None:
    """Drop zone, sample button and the modality table; returns the case once four scans are set."""
    st.subheader("1 · Scans")
    uploads = st.file_uploader(
        "Drop the four scans here: FLAIR, T1, T1ce, T2 (.nii, .nii.gz or .npy; any BraTS naming), skull-stripped "
        "and co-registered as BraTS provides them. A segmentation file added here is used as ground truth.",
        type=["nii", "gz", "npy"],
        accept_multiple_files=True,
        key="uploads",
        on_change=use_uploads,
    )
    left, right = st.columns([1, 3])
    if left.button("Try the sample case", key="sample"):
        st.session_state["source"] = "sample"
    right.caption("Sample: BraTS-GLI-00001-000 (BraTS 2023 adult glioma) from BrainLesion/tutorials, Apache-2.0; see assets/README.md.")

    parsed = state("parsed", {})
    if state("source", "upload") == "sample":
        with attempt("Reading the sample case"):
            files = sorted(SAMPLE_DIR.glob("*.nii*"))
            if len(files) < 4:
                raise FileNotFoundError(f"the sample case is missing from {SAMPLE_DIR}; reinstall the app or upload your own scans")
            for path in files:
                key = f"sample/{path.name}"
                if key not in parsed:
                    parsed[key] = parse_file(path.name, path.read_bytes())
        ids = [k for k in parsed if k.startswith("sample/")]
        if uploads:
            st.button("Use my uploaded files instead", key="back_to_uploads", on_click=use_uploads)
    else:
        current = {f.file_id: f for f in uploads or []}
        for file_id, upload in current.items():
            if file_id not in parsed:
                parsed[file_id] = parse_file(upload.name, upload.getvalue())
        for stale in [k for k in parsed if k not in current]:
            del parsed[stale]  # removed from the drop zone, or the sample: free its memory
        ids = list(current)
    if not ids:
        st.info("Drop four scans above, or try the sample case.")
        return None
    return modality_table(parsed, ids)


def modality_table(parsed: dict, ids: list[str]) -> SimpleNamespace | None:
    header = st.columns([4, 3, 2])
    header[0].markdown("**File**")
    header[1].markdown("**Image**")
    header[2].markdown("**Used as**")
    roles: dict[str, str] = {}
    for file_id in ids:
        entry = parsed[file_id]
        row = st.columns([4, 3, 2])
        row[0].write(entry.name)
        if entry.error:
            row[1].write("—")
            row[2].write("not usable")
            st.error(f"{entry.error}")
            continue
        if entry.scan is not None:
            spacing = "x".join(f"{s:g}" for s in entry.scan.spacing)
            row[1].write(f"{'x'.join(map(str, entry.scan.array.shape))} voxels, {spacing} mm")
            options = ["flair", "t1", "t1ce", "t2", "ignore"]
            default = entry.guess if entry.guess in options else "ignore"
        elif entry.case is not None:
            row[1].write(f"4 channels of {'x'.join(map(str, entry.case.shape))} voxels")
            options, default = ["all", "ignore"], "all"
        else:
            row[1].write(f"label map {'x'.join(map(str, entry.labels[0].shape))}")
            options, default = ["truth", "ignore"], "truth" if entry.guess == "seg" else "ignore"
        roles[file_id] = row[2].selectbox(
            f"Role of {entry.name}", options, index=options.index(default), format_func=ROLES.get,
            key=f"role/{file_id}", label_visibility="collapsed",
        )
        if entry.note:
            st.info(f"{entry.name}: {entry.note}.")
        elif entry.scan is not None and entry.guess is None:
            st.warning(f"{entry.name}: cannot tell the modality from the name; choose it under 'Used as'.")

    by_role: dict[str, list[str]] = {}
    for file_id, role in roles.items():
        by_role.setdefault(role, []).append(file_id)
    for role, chosen in by_role.items():
        if role in MODALITIES and len(chosen) > 1:
            st.error(f"{', '.join(parsed[i].name for i in chosen)} are all set to {ROLES[role]}; give each modality one file under 'Used as'.")
            return None
    if "all" in by_role:  # one 4-channel image holds the case
        if len(by_role["all"]) > 1 or any(m in by_role for m in MODALITIES):
            st.error("Give either one 4-channel image or four scans; set the others to 'ignore' under 'Used as'.")
            return None
        case, key = parsed[by_role["all"][0]].case, (parsed[by_role["all"][0]].digest,)
    else:
        missing = [ROLES[m] for m in MODALITIES if m not in by_role]
        if missing:
            st.info(f"Still needed: {', '.join(missing)}.")
            return None
        case = None
        with attempt("Combining the scans"):
            scans = {m: parsed[by_role[m][0]].scan for m in MODALITIES}
            case = assemble_case(scans, convention_from_names(parsed[i].name for i in roles))
        if case is None:
            return None
        key = tuple(parsed[by_role[m][0]].digest for m in MODALITIES)  # the same scans dropped again are the same case
    truth_id = by_role.get("truth", [None])[0]
    if truth_id is not None and not truth_fits(parsed[truth_id], case, key):
        truth_id = None
    st.success(f"Ready: {report.case_name(case.sources)}, {'x'.join(map(str, case.shape))} voxels of {'x'.join(f'{s:g}' for s in case.spacing)} mm.")
    stems = case_stems(case.sources.values())
    if len(stems) > 1:
        st.warning(f"The file names name {len(stems)} cases ({', '.join(stems)}): check that the four scans are one "
                   f"patient's, from one session, before trusting the result.")
    if not case.has_geometry:
        st.warning(".npy arrays carry no orientation or voxel size: they are taken as 1 mm voxels in BraTS files' axis "
                   "order (LPS). The slice views, the volumes in mL and the downloaded NIfTI rest on that assumption; "
                   "use NIfTI files where you can.")
    elif case.assumed_on_grid:
        st.warning(f"{', '.join(case.assumed_on_grid)}: .npy arrays carry no orientation, so they are taken to lie on the "
                   f"NIfTI scans' grid as stored; if one was saved flipped or transposed, the network sees mismatched "
                   f"anatomy. Use NIfTI files where you can.")
    return SimpleNamespace(case=case, key=key, truth=parsed[truth_id] if truth_id else None)


def truth_fits(entry: SimpleNamespace, case, key: tuple) -> bool:
    """Whether a dropped segmentation lies on the scans' grid, checked once per set of scans, before the
    run (its label values are read when it is scored, as the user chooses them)."""
    if getattr(entry, "grid_check", None) is None or entry.grid_check[0] != key:
        problem = None
        try:
            read_label_map(entry.data, entry.name, case)
        except BrainsegError as exc:
            problem = str(exc)
        entry.grid_check = (key, problem)
    problem = entry.grid_check[1]
    if problem:
        st.error(f"Ground truth: {problem.rstrip('.')}. The scans can still be segmented; drop a segmentation of this case to score them.")
    return problem is None


# ---------------------------------------------------------------- run


def run_section(inputs: SimpleNamespace | None, settings: SimpleNamespace) -> None:
    st.subheader("2 · Segment")
    clicked = st.button("Run segmentation", type="primary", key="run", disabled=inputs is None or settings.path is None)
    if not clicked:
        return
    with attempt("Segmentation"):
        loaded = get_model(settings.path)
        segmentation, seconds, record = segment(inputs.case, loaded, settings)
        result = SimpleNamespace(
            id=_next_run_id(), case=inputs.case, key=inputs.key, segmentation=segmentation, model=loaded.name,
            output_mode=loaded.config.model.output_mode,
            model_path=settings.path, settings=settings, record=record, seconds=seconds, cache={}, truth=None, truth_source=None, dropped_truth=None, comparison=None,
            ranges={m: render.intensity_range(v) for m, v in inputs.case.images.items()},
        )
        earlier = st.session_state.get("result")
        st.session_state["result"] = result
        if earlier is None or earlier.key != result.key:
            # another case's downloads start from its own label values (a BraTS 2023 case after a 2018 one);
            # set, not dropped: a dropped key leaves the browser's box showing the old choice
            st.session_state["convention"] = inputs.case.convention
        if inputs.truth is not None:
            result.dropped_truth = inputs.truth.digest
            set_truth(result, inputs.truth.name, inputs.truth.data, reference_convention())


def segment(case, loaded, settings: SimpleNamespace):
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


def set_truth(result, name: str, data: bytes, convention: str | None = None) -> None:
    """Attach a reference segmentation, read in ``convention`` (None: as its header names, else guessed
    from its values), to a result (errors are
    shown, the result and any earlier reference are kept). The file is kept either way, so another
    choice of label values can read it again."""
    result.truth_source = SimpleNamespace(name=name, data=data, tried=convention)
    with attempt("Reading the ground truth"):  # its errors name the file
        label_map = read_reference(data, name, result.case)
        read_as, source = label_map.read_as(convention)
        labels, _ = label_map.internal(read_as)
        result.truth = SimpleNamespace(name=name, labels=labels, convention=read_as, chosen=convention, source=source)
        result.cache.pop("evaluation", None)


def reference_convention() -> str | None:
    """The label values the user says references hold; None: as their header names, else guessed."""
    return chosen_convention(st.session_state.get("truth_convention", AUTO))


# ---------------------------------------------------------------- results


def results_section(inputs: SimpleNamespace | None, settings: SimpleNamespace) -> None:
    result = st.session_state.get("result")
    if result is None:
        return
    seg, case = result.segmentation, result.case
    st.subheader("3 · Result")
    windows = f"{seg.windows} window{'s' if seg.windows != 1 else ''}"
    st.success(f"{report.case_name(case.sources)} segmented by {result.model} in {result.seconds:.1f} s ({windows}, {seg.precision} on {seg.device}).")
    corrected = ", ".join(ROLES.get(m, m) for m in result.record.get("bias_corrected", []))
    st.caption(f"Settings used: {f'N4 bias-field correction of {corrected}, ' if corrected else ''}"
               f"{settings_text(result.record['settings'], result.output_mode)}.")
    for warning in seg.warnings:
        st.warning(warning)
    if seg.removed_ml > 0:
        st.caption(f"Post-processing removed {seg.removed_ml:.2f} mL of predicted tumour in pieces it judged spurious; "
                   f"set the minimum component and the farthest piece to 0 in the sidebar to keep every piece.")
    if inputs is not None and inputs.key != result.key:
        st.info("The scans above changed since this result; it still shows the case it was made from. Run again to segment the new scans.")
    elif inputs is not None and inputs.truth is not None and inputs.truth.digest != result.dropped_truth:
        # dropped with the scans after the run (once: a reference uploaded below later replaces it)
        result.dropped_truth = inputs.truth.digest
        set_truth(result, inputs.truth.name, inputs.truth.data, reference_convention())
    elif settings.path is not None and settings != result.settings:
        st.info("The checkpoint or settings in the sidebar changed since this result, which was made with the settings "
                "above. Run again to apply them.")

    with attempt("Showing the volumes"):
        state("convention", case.convention)
        convention = st.selectbox("Label values in downloads", list(CONVENTIONS), format_func=CONVENTION_TITLES.get, key="convention")
        stats = stats_for(result, convention)
        cols = st.columns(3)
        for col, region in zip(cols, REGIONS):
            item = stats["regions"][region]
            share = f"{item['brain_percent']:.2f}% of brain" if item.get("brain_percent") is not None else None
            col.metric(f"{region} volume", f"{item['ml']:.2f} mL", share, delta_color="off", delta_arrow="off")

    slice_sections(result, convention, stats)
    three_d(result)


def settings_text(used: dict, output_mode: str = "regions") -> str:
    """One line for the inference and post-processing settings a result was made with (a threshold only
    for region outputs: softmax labels take the argmax)."""
    inference, post = used["inference"], used["postprocess"]
    patch = tuple(inference["patch_size"])
    window = "whole brain in one window" if patch == PATCH_SIZES["whole brain"] else f"window {'x'.join(map(str, patch))}"
    parts = [window, f"overlap {inference['overlap']:g}",
             f"TTA {'on' if inference['tta'] else 'off'}",
             f"threshold {inference['threshold']:g}" if output_mode == "regions" else "argmax of the labels",
             f"tumour pieces under {post['min_component_voxels']} voxels removed" if post["min_component_voxels"] else "no minimum piece size",
             f"pieces over {post['max_component_distance_mm']:g} mm from the largest removed" if post["max_component_distance_mm"] else "distant pieces kept"]
    if post.get("min_core_component_voxels"):
        parts.append(f"core and enhancing pieces under {post['min_core_component_voxels']} voxels absorbed")
    return ", ".join(parts)


@st.fragment
def slice_sections(result, convention: str, stats: dict) -> None:
    """Everything that follows the slice; a fragment, so a slider move reruns only this part."""
    display = viewer(result)
    if display is not None:
        statistics(result, display, convention, stats)
        truth_section(result, display)  # before the downloads: the summary holds the scores on screen
        downloads(result, display, convention, stats)
        compare_section(result, display)


def stats_for(result, convention: str) -> dict:
    key = ("stats", convention)
    if key not in result.cache:
        seg = result.segmentation
        result.cache[key] = volume_stats(seg.labels, result.case.spacing, convention, seg.brain_voxels)
    return result.cache[key]


def controls(result) -> tuple[render.Display, str]:
    case = result.case
    top = st.columns([2, 2, 3])
    view = top[0].radio("View", render.VIEWS, horizontal=True, key="view", format_func=str.capitalize)
    layout = top[1].radio("Layout", ["Grid", "Single"], horizontal=True, key="layout", help="Single shows one large panel: easier on a phone.")
    geometry = render.view_geometry(case.affine, view)
    n = render.slice_count(case.shape, geometry)
    start_key = ("busiest", view)
    if start_key not in result.cache:
        result.cache[start_key] = render.busiest_slice(result.segmentation.labels, geometry.axis)
    index = top[2].slider(f"Slice ({view}, 0-{n - 1})", 0, n - 1, result.cache[start_key], key=f"slice/{view}/{result.id}")
    top[2].caption(f"Position {render.slice_position(case.affine, case.shape, view, index)} (scanner coordinates, as 3D Slicer shows them)")
    row = st.columns(3)
    opacity = row[0].slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="opacity")
    window = row[1].slider("Window (%)", 1, 200, 100, key="window", help="Width of the grey-scale range, in % of the scan's 0.5-99.5 percentile range.")
    level = row[2].slider("Level (%)", -50, 150, 50, key="level", help="Centre of the grey-scale range, in % of that range.")
    row = st.columns([1, 1, 1, 2], vertical_alignment="bottom")
    visible = tuple(
        label for col, label in zip(row, (NCR, ED, ET))
        if col.checkbox(LABEL_NAMES[label].capitalize(), True, key=f"show/{label}")
    )
    base = row[3].selectbox("Scan under the overlay", list(MODALITIES), format_func=render.modality_title, key="base")
    display = render.Display(view=view, index=index, window=float(window), level=float(level), opacity=opacity, visible=visible, base=base)
    return display, layout


def legend_html(colours: dict[str, tuple[int, int, int]]) -> str:
    chips = "".join(
        f"<span style='display:inline-block;width:0.9em;height:0.9em;background:rgb{tuple(int(v) for v in c)};"
        f"border:1px solid #888;margin:0 0.3em 0 1em;vertical-align:middle'></span>{name}"
        for name, c in colours.items()
    )
    return f"<div style='font-size:0.9em'>{chips}</div>"


def viewer(result) -> render.Display | None:
    st.markdown("#### Viewer")
    display = None
    with attempt("Drawing the slices"):
        display, layout = controls(result)
        panels = render.render_panels(result.case.images, result.segmentation.labels, result.ranges, result.case.affine, display, markers=True)
        result.cache["panels"] = panels
        st.markdown(
            legend_html({"background": render.LABEL_COLOURS[0], **{LABEL_NAMES[k]: render.LABEL_COLOURS[k] for k in (NCR, ED, ET)}}),
            unsafe_allow_html=True,
        )
        st.caption("Radiological orientation: the patient's right is on the screen's left; the letters at the edges "
                   "(R/L, A/P, S/I) name the patient directions.")
        if layout == "Grid":
            names = list(panels)
            for start in range(0, len(names), 3):
                for col, name in zip(st.columns(3), names[start : start + 3]):
                    col.image(render.png_bytes(panels[name]), caption=name, width="stretch")
        else:
            name = st.selectbox("Panel", list(panels), index=len(panels) - 1, key="single_panel")
            st.image(render.png_bytes(panels[name]), caption=name, width="stretch")
        probability_panel(result, display)
    return display


def base_slice(result, display: render.Display) -> tuple:
    """The view's geometry and the windowed grey slice of the scan under the overlays."""
    geometry = render.view_geometry(result.case.affine, display.view)
    return geometry, render.grey_plane(result.case.images[display.base], result.ranges[display.base], result.case.affine, display)


def shown(rgb, geometry: render.ViewGeometry, display: render.Display):
    """A slice picture as the viewer shows its panels: square pixels, patient directions at the edges."""
    return render.mark_orientation(render.to_display(rgb, geometry.pixel_mm), render.orientation_letters(display.view))


def probability_panel(result, display: render.Display) -> None:
    probabilities = result.segmentation.probabilities
    classes = render.probability_classes(probabilities.shape[0])
    with st.expander("Confidence (probability heatmap)", expanded=False):
        name = st.radio("Class", list(classes), horizontal=True, key="prob_class")
        geometry, grey = base_slice(result, display)
        plane = render.extract(probabilities[classes[name]], geometry, display.index)
        heat = shown(render.probability_overlay(grey, plane, 0.7), geometry, display)
        st.image(render.png_bytes(heat), caption=f"P({name}) on slice {display.index}", width="stretch")
        st.image(render.png_bytes(render.colour_bar()), caption="probability 0 → 1 (scan shows where it is below 0.01)", width="stretch")


def statistics(result, display: render.Display, convention: str, stats: dict) -> None:
    st.markdown("#### Statistics")
    with attempt("Computing the statistics"):
        case, labels = result.case, result.segmentation.labels
        left, right = st.columns(2)
        left.markdown("Whole volume (from the header's voxel size; share of the brain's nonzero voxels)")
        left.dataframe(report.volume_rows(stats), hide_index=True, key="volume_table", column_config=VOLUME_COLUMNS)
        geometry = render.view_geometry(case.affine, display.view)
        counts_key = ("slice_counts", geometry.axis)
        if counts_key not in result.cache:
            result.cache[counts_key] = slice_stats(labels, geometry.axis)
        counts = result.cache[counts_key]
        right.markdown(f"This {display.view} slice ({display.index})")
        right.dataframe(report.slice_rows(counts[display.index], slice_area_mm2(case.spacing, geometry.axis), convention), hide_index=True, key="slice_table", column_config=SLICE_COLUMNS)
        area_key = ("area", display.view)
        if area_key not in result.cache:
            areas = render.area_along_axis(labels, geometry.axis, case.spacing)
            result.cache[area_key] = render.area_figure(areas, display.view)
        figure = result.cache[area_key]
        figure.update_shapes(x0=display.index, x1=display.index)  # only the slice marker moves
        st.plotly_chart(figure, key="area_plot")


def downloads(result, display: render.Display, convention: str, stats: dict) -> None:
    st.markdown("#### Downloads")
    with attempt("Preparing the downloads"):
        case, seg = result.case, result.segmentation
        name = report.case_name(case.sources)
        evaluation = result.cache.get("evaluation") if result.truth is not None else None
        summary = report.summary(case, seg, result.record, evaluation, convention, stats,
                                 reference=result.truth.name if evaluation is not None else None)
        cols = st.columns(5)
        cols[0].download_button(
            "Segmentation (.nii.gz)", lambda: labels_bytes(seg.labels, case, convention),
            file_name=f"{name}_seg.nii.gz", mime="application/gzip", key="dl_nifti", on_click="ignore",
        )
        cols[1].download_button("Volumes (.csv)", report.rows_csv(report.volume_rows(stats)), file_name=f"{name}_volumes.csv", mime="text/csv", key="dl_csv", on_click="ignore")
        cols[2].download_button("Summary (.json)", report.to_json(summary), file_name=f"{name}_summary.json", mime="application/json", key="dl_json", on_click="ignore")
        panels = result.cache["panels"]
        left = SIDE_WORDS[render.orientation_letters(display.view)["left"]]
        position = render.slice_position(case.affine, case.shape, display.view, display.index)
        footer = [f"{name}, {display.view} slice {display.index} ({position}); the patient's {left} on the left",
                  ", ".join(f"{render.COLOUR_NAMES[tuple(render.LABEL_COLOURS[k].tolist())]}: {LABEL_NAMES[k]}" for k in display.visible) or "no labels shown",
                  "brainseg: research use only, not for clinical decisions"]
        cols[3].download_button(
            "This view (.png)", lambda: render.png_bytes(render.montage(panels, 3, footer=footer), 6),
            file_name=f"{name}_{display.view}_{display.index}.png", mime="image/png", key="dl_png", on_click="ignore",
        )
        cols[4].download_button(
            "Probabilities (.nii.gz)", lambda: probabilities_bytes(seg.probabilities, case),
            file_name=f"{name}_probabilities.nii.gz", mime="application/gzip", key="dl_probabilities", on_click="ignore",
        )
        st.caption("The segmentation keeps the scans' voxel grid, orientation and header, so it overlays on them in 3D Slicer or ITK-SNAP. "
                   "The probabilities are one 4D float image on the same grid (WT, TC, ET for region models).")


def truth_section(result, display: render.Display) -> None:
    st.markdown("#### Ground truth (optional)")
    upload = st.file_uploader("Reference segmentation of this case (.nii, .nii.gz or .npy)", type=["nii", "gz", "npy"], key="truth_upload")
    st.selectbox("Reference label values", LABEL_OPTIONS, format_func=CONVENTION_TITLES.get, key="truth_convention")
    convention = reference_convention()
    source = result.truth_source
    given = st.session_state.get("truth_file")  # (scans' key, file id, result id) of the upload last attached
    if upload is not None and given is not None and given[1] == upload.file_id and given[2] != result.id and given[0] != result.key:
        # still in the box from another case: scoring this one against it would be wrong, silently
        st.info(f"{upload.name} in the box above was the reference of an earlier case, not of these scans: it is not "
                f"used. Remove it and drop this case's reference to compare.")
    elif upload is not None and given != (result.key, upload.file_id, result.id):
        st.session_state["truth_file"] = (result.key, upload.file_id, result.id)
        set_truth(result, upload.name, upload.getvalue(), convention)
    elif source is not None and convention != (result.truth.chosen if result.truth is not None else source.tried):
        set_truth(result, source.name, source.data, convention)
    if result.truth is None:
        return
    with attempt("Comparing with the ground truth"):
        if "evaluation" not in result.cache:
            result.cache["evaluation"] = score_labels(result.segmentation.labels, result.truth.labels, result.case.spacing,
                                                      result.truth.convention, LESION_CHALLENGE)
        truth = result.truth
        caption = f"Reference: {truth.name} ({CONVENTION_TITLES[truth.convention]} labels, {READ_FROM[truth.source]})"
        if truth.source == "values" and truth.convention == "brats2023":
            # the same values 1-3 mean another thing in the Decathlon's maps: say so where it matters
            caption += (f"; a Decathlon Task01 map uses 1-3 too, for edema, non-enhancing core and ET: choose "
                        f"{CONVENTION_TITLES['msd']} above")
        st.caption(caption)
        other = names_another_case(truth.name, result.case.sources.values())
        if other is not None:
            st.warning(f"{truth.name} names case {other}, the scans name {', '.join(case_stems(result.case.sources.values()))}: "
                       f"check it is this patient's segmentation before reading the scores.")
        st.dataframe(report.metric_rows(result.cache["evaluation"]), hide_index=True, key="metric_table", column_config=METRIC_COLUMNS)
        region = st.radio("Errors of region", REGIONS, horizontal=True, key="error_region")
        geometry, grey = base_slice(result, display)
        pred = render.extract(result.segmentation.labels, geometry, display.index)
        ref = render.extract(result.truth.labels, geometry, display.index)
        errors = shown(render.error_overlay(grey, pred, ref, region, max(display.opacity, 0.3)), geometry, display)
        st.markdown(legend_html(render.ERROR_COLOURS), unsafe_allow_html=True)
        st.image(render.png_bytes(errors), caption=f"{region} errors on {display.view} slice {display.index}", width=480)


def compare_section(result, display: render.Display) -> None:
    st.markdown("#### Compare checkpoints")
    paths = discover(checkpoint_folders())
    labels = {checkpoint_label(p): str(p) for p in paths}
    others = [k for k, v in labels.items() if v != result.model_path]
    if not others:
        st.caption("Only one checkpoint is available; put another brainseg .pt file in models/ (or a BRAINSEG_MODELS "
                   "folder) to compare two on these scans.")
        return
    choice = st.selectbox("Second checkpoint", others, key="compare_checkpoint")
    if st.button("Run comparison", key="run_compare"):
        with attempt("Comparison"):
            loaded = get_model(labels[choice])
            segmentation, seconds, _ = segment(result.case, loaded, result.settings)
            result.comparison = SimpleNamespace(model=loaded.name, segmentation=segmentation, seconds=seconds,
                                                rows=None, scored_against=None)
    other = result.comparison
    if other is None:
        st.caption("Runs a second checkpoint on the same scans with the settings of the first run.")
        return
    with attempt("Showing the comparison"):
        geometry, grey = base_slice(result, display)
        for col, (name, seg) in zip(st.columns(2), ((result.model, result.segmentation), (other.model, other.segmentation))):
            picture = render.overlay(grey, render.extract(seg.labels, geometry, display.index), display.opacity, display.visible)
            col.image(render.png_bytes(shown(picture, geometry, display)), caption=name, width="stretch")
        if other.rows is None or other.scored_against is not result.truth:  # holding the reference keeps `is` sound
            truth = result.truth.labels if result.truth is not None else None
            other.rows = report.comparison_rows(
                (result.model, result.segmentation.labels), (other.model, other.segmentation.labels), result.case.spacing, truth
            )
            other.scored_against = result.truth
        st.dataframe(other.rows, hide_index=True, key="compare_table")


def model_card(container, settings: SimpleNamespace) -> None:
    """The selected checkpoint's card (nothing when it could not be read: the sidebar says why)."""
    if container is None or settings.path is None:
        return
    with container, attempt("Reading the model card"):
        loaded = get_model(settings.path)
        st.caption(f"Loaded: {checkpoint_label(Path(settings.path))}")
        with st.expander("Model card", expanded=False):
            st.markdown(report.model_card(loaded.path, loaded.config, loaded.provenance))


def three_d(result) -> None:
    st.markdown("#### 3D view")
    if not st.toggle("Show the tumour in 3D", key="show_3d"):
        return
    with attempt("Building the 3D view"):
        if "mesh" not in result.cache:
            with st.spinner("Building surfaces…"):
                brain = render.brain_mask(result.case.images)
                result.cache["mesh"] = render.mesh_figure(result.segmentation.labels, brain, result.case.affine)
        st.plotly_chart(result.cache["mesh"], key="mesh_plot")
        st.caption(", ".join(f"{render.COLOUR_NAMES[render.REGION_COLOURS[r]]}: {REGION_NAMES[r]}" for r in REGIONS).capitalize()
                   + ", grey: brain. Drag to rotate.")


# ---------------------------------------------------------------- page


def main() -> None:
    st.set_page_config(page_title="brainseg: brain tumour segmentation", page_icon="🧠", layout="wide")
    st.title("brainseg · brain tumour segmentation")
    st.caption("A 3D U-Net segments glioma sub-regions (necrotic core, edema, enhancing tumour) in four-modality MRI.")
    st.warning(NOTICE)
    settings, card = sidebar()
    inputs = None
    with attempt("Reading the scans"):
        inputs = inputs_section()
    run_section(inputs, settings)
    results_section(inputs, settings)
    model_card(card, settings)


main()
