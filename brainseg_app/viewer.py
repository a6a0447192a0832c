"""The slice viewer: its controls, the overlay panels and the probability heatmap."""
from __future__ import annotations

import streamlit as st

from brainseg import MODALITIES, render
from brainseg.labels import ED, ET, LABEL_NAMES, NCR
from brainseg_app.common import attempt


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
