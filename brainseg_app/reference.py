"""Scoring against a reference segmentation, and a second checkpoint on the same scans."""
from __future__ import annotations

import streamlit as st

from brainseg import checkpoint, render, report
from brainseg.config import LESION_CHALLENGES
from brainseg.labels import LABEL_OPTIONS, REGIONS
from brainseg.lesion_metrics import MISSED_HD95
from brainseg.naming import FORMATS, case_stems, names_another_case
from brainseg.scoring import score_labels
from brainseg_app.common import CONVENTION_TITLES, IMAGE_TYPES, attempt, checkpoint_folders, checkpoint_label, get_model
from brainseg_app.run import apply_label_choice, clear_truth, reference_convention, segment, set_truth
from brainseg_app.state import Comparison
from brainseg_app.viewer import base_slice, legend_html, shown


READ_FROM = {"given": "as chosen", "header": "as its header names", "name": "as its BraTS 2023+ file name implies",
             "values": "guessed from its values"}


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


def truth_section(result, display: render.Display) -> None:
    st.markdown("#### Ground truth (optional)")
    upload = st.file_uploader(f"Reference segmentation of this case ({FORMATS})", type=IMAGE_TYPES, key="truth_upload")
    st.selectbox("Reference label values", LABEL_OPTIONS, format_func=CONVENTION_TITLES.get, key="truth_convention")
    convention = reference_convention()
    given = st.session_state.get("truth_file")  # (scans' key, file id, result id) of the upload last attached
    if upload is not None and given is not None and given[1] == upload.file_id and given[2] != result.id and given[0] != result.key:
        # still in the box from another case: scoring this one against it would be wrong, silently
        st.info(f"{upload.name} in the box above was the reference of an earlier case, not of these scans: it is not "
                f"used. Remove it and drop this case's reference to compare.")
    elif upload is not None and given != (result.key, upload.file_id, result.id):
        st.session_state["truth_file"] = (result.key, upload.file_id, result.id)
        set_truth(result, upload.name, upload.getvalue(), convention)
    elif upload is None and st.session_state.get("truth_file") is not None:  # removed from the box: no scores against it
        st.session_state["truth_file"] = None
        clear_truth(result, "box")
    if convention != result.truth_choice and (result.truth is not None or result.truth_refused is not None):
        apply_label_choice(result, convention)  # read again only when the choice changes
    refused = result.truth_refused
    if result.truth_choice_error is not None:  # said while the choice stands, not once
        st.error(result.truth_choice_error)
    if refused is not None:  # said on every rerun while the file is there, not once
        st.error(refused.error)
        if result.truth is not None:
            earlier = "the earlier " if refused.name == result.truth.name else ""
            st.warning(f"The scores below compare with {earlier}{result.truth.name}, read before; {refused.name}, given "
                       f"since, could not be read.")
    if result.truth is None:
        return
    with attempt("Comparing with the ground truth"):
        if "evaluation" not in result.cache:
            result.cache["evaluation"] = score_labels(result.segmentation.labels, result.truth.labels, result.case.spacing,
                                                      result.truth.convention, LESION_CHALLENGE)
        truth = result.truth
        if truth.source == "segments":  # the file's own values were renumbered: naming a convention would mislead
            caption = (f"Reference: {truth.name} (each 3D Slicer segment read as the class its name says, whatever its "
                       f"value in the file; the reference label values chosen above do not apply to it)")
        else:
            caption = f"Reference: {truth.name} ({CONVENTION_TITLES[truth.convention]} labels, {READ_FROM[truth.source]})"
        if truth.source == "values" and truth.convention == "brats2023":
            # the same values 1-3 mean another thing in the Decathlon's maps: say so where it matters
            caption += (f"; a Decathlon Task01 map uses 1-3 too, for edema, non-enhancing core and ET: choose "
                        f"{CONVENTION_TITLES['msd']} above")
        st.caption(caption)
        if truth.assumed_grid and result.case.has_geometry:
            st.warning(f"{truth.name}: a .npy array carries no orientation, so it is taken to lie on the scans' grid as "
                       f"stored; if it was saved flipped or transposed, these scores compare the wrong voxels.")
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
    paths = checkpoint.discover(checkpoint_folders())
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
            result.comparison = Comparison(loaded.name, segmentation, seconds)
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
