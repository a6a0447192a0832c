"""Step 3: the result's volumes, statistics, downloads and 3D view, around the viewer."""
from __future__ import annotations

import streamlit as st

from brainseg import checkpoint, render, report
from brainseg.labelmaps import labels_bytes, probabilities_bytes
from brainseg.labels import CONVENTIONS, LABEL_NAMES, REGION_NAMES, REGIONS
from brainseg.metrics import slice_area_mm2, slice_stats, volume_stats
from brainseg.slicer_segments import segmentation_bytes
from brainseg_app.common import CONVENTION_TITLES, ROLES, attempt, state
from brainseg_app.reference import compare_section, truth_section
from brainseg_app.run import clear_truth, reference_convention, set_truth
from brainseg_app.state import RESULT_FORMAT, CaseInputs, RunSettings
from brainseg_app.sidebar import PATCH_SIZES
from brainseg_app.viewer import viewer


VOLUME_COLUMNS = {
    "structure": "Structure", "kind": "Kind", "voxels": "Voxels",
    "volume_ml": st.column_config.NumberColumn("Volume (mL)", format="%.2f"),
    "brain_percent": st.column_config.NumberColumn("Share of brain (%)", format="%.2f"),
}


SLICE_COLUMNS = {"structure": "Structure", "voxels": "Voxels", "area_mm2": st.column_config.NumberColumn("Area (mm²)", format="%.1f")}
SIDE_WORDS = {"R": "right", "A": "front"}  # the patient side the left edge of a view shows (render.orientation_letters)


def results_section(inputs: CaseInputs | None, settings: RunSettings) -> None:
    result = st.session_state.get("result")
    if result is not None and getattr(result, "format", None) != RESULT_FORMAT:
        del st.session_state["result"]
        st.info("The app was updated since the last result was made; run the segmentation again to see it.")
        return
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
    elif inputs is None and st.session_state.get("inputs_incomplete"):
        st.info("The files above no longer make a complete case; this result still shows the case it was made from.")
    elif inputs is not None and inputs.truth is not None and inputs.truth.digest != result.dropped_truth:
        # dropped with the scans after the run (once: a reference uploaded below later replaces it)
        result.dropped_truth = inputs.truth.digest
        set_truth(result, inputs.truth.name, inputs.truth.data, reference_convention(), origin="dropped")
    elif inputs is not None and inputs.truth is None and result.dropped_truth is not None:
        result.dropped_truth = None  # removed from the drop zone, or set to 'ignore': no scores against it
        clear_truth(result, "dropped")
    elif settings.path is not None and settings != result.settings:
        st.info("The checkpoint or settings in the sidebar changed since this result, which was made with the settings "
                "above. Run again to apply them.")
    elif settings.path is not None and weights_changed(settings.path, result.record.get("checkpoint_sha256")):
        st.info("The checkpoint file was replaced since this result (other weights under the same name). Run again to "
                "segment with the new weights.")

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


def weights_changed(path: str, sha256: str | None) -> bool:
    """Whether the file at ``path`` holds other weights than those that made a result (hashed once per file version)."""
    try:
        return sha256 is not None and checkpoint.fingerprint(path) != sha256
    except OSError:  # gone: the sidebar says so
        return False


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
        cols = st.columns(6)
        cols[0].download_button(
            "Segmentation (.nii.gz)", lambda: labels_bytes(seg.labels, case, convention),
            file_name=f"{name}_seg.nii.gz", mime="application/gzip", key="dl_nifti", on_click="ignore",
        )
        cols[5].download_button(
            "3D Slicer (.seg.nrrd)", lambda: segmentation_bytes(seg.labels, case.affine, convention),
            file_name=f"{name}.seg.nrrd", mime="application/octet-stream", key="dl_slicer", on_click="ignore",
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
        st.caption("The segmentation keeps the scans' voxel grid, orientation and header, so it overlays on them in 3D Slicer or ITK-SNAP; "
                   "the .seg.nrrd opens in 3D Slicer as a segmentation with named segments in these colours. "
                   "The probabilities are one 4D float image on the same grid (WT, TC, ET for region models).")


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
