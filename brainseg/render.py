"""Pictures of a case and its segmentation: pure numpy/PIL (and plotly for 3D), no UI.

Slices are shown as radiology viewers show them, whatever the file's axis order: axial and coronal
with the patient's right on the screen's left, anterior (axial) or superior (coronal, sagittal) up,
and sagittal with anterior on the left. Panels are uint8 RGB arrays (rows, cols, 3).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Mapping, Sequence

import nibabel.orientations as nio
import numpy as np
from PIL import Image, ImageDraw

from brainseg.labels import ED, ET, LABEL_COLOURS, LABEL_NAMES, NCR, PROBABILITY_CHANNELS, REGION_LABELS, REGIONS, region_mask, require_internal
from brainseg.metrics import slice_area_mm2, slice_stats

VIEWS = ("axial", "coronal", "sagittal")

# world axes (0 R, 1 A, 2 S) normal to each view, shown down the rows and along the columns; every
# display axis runs towards the negative world direction (A->P, S->I, R->L; sagittal A->P)
_VIEW_AXES = {"axial": (2, 1, 0), "coronal": (1, 2, 0), "sagittal": (0, 2, 1)}

REGION_COLOURS = {"WT": (0, 200, 0), "TC": (255, 165, 0), "ET": (255, 0, 0)}
COLOUR_NAMES = {(255, 165, 0): "orange", (0, 200, 0): "green", (255, 0, 0): "red"}  # the colours above, for legends in words
ERROR_COLOURS = {"true positive": (255, 255, 0), "false positive": (255, 0, 255), "false negative": (0, 255, 255)}
PROBABILITY_FLOOR = 0.01  # below this the scan shows through the heatmap unchanged

# anchors of a dark-to-bright heat scale (perceptually ordered, readable on grey)
_HEAT_ANCHORS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64)
HEAT_LUT = np.stack(
    [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_HEAT_ANCHORS)), _HEAT_ANCHORS[:, c]) for c in range(3)],
    axis=1,
).round().astype(np.uint8)


@dataclass(frozen=True)
class ViewGeometry:
    """How one view cuts a volume.

    Attributes:
        axis: array axis the slice index runs along.
        rows, cols: array axes shown top-to-bottom and left-to-right.
        flip_rows, flip_cols: whether those axes are reversed for display.
        pixel_mm: (row, col) voxel size in mm.
    """

    axis: int
    rows: int
    cols: int
    flip_rows: bool
    flip_cols: bool
    pixel_mm: tuple[float, float]


@dataclass(frozen=True)
class Display:
    """What the user chose to look at."""

    view: str = "axial"
    index: int = 0
    window: float = 100.0  # percent of the scan's robust intensity range
    level: float = 50.0  # percent of that range, at the window's centre
    opacity: float = 0.5
    visible: tuple[int, ...] = (NCR, ED, ET)
    base: str = "flair"  # modality under the overlay


def view_geometry(affine: np.ndarray, view: str) -> ViewGeometry:
    """Axes and flips that show ``view`` of a volume with this voxel-to-world matrix."""
    if view not in _VIEW_AXES:
        raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")
    ornt = nio.io_orientation(np.asarray(affine))
    world_to_array = {int(w): (axis, float(f)) for axis, (w, f) in enumerate(ornt)}
    normal, row_world, col_world = _VIEW_AXES[view]
    rows, row_dir = world_to_array[row_world]
    cols, col_dir = world_to_array[col_world]
    spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    # an axis whose index grows towards +world must be reversed to run towards -world on screen
    return ViewGeometry(world_to_array[normal][0], rows, cols, row_dir > 0, col_dir > 0, (float(spacing[rows]), float(spacing[cols])))


# the patient direction each world axis grows towards, and the opposite one
_WORLD_LETTERS = {0: ("R", "L"), 1: ("A", "P"), 2: ("S", "I")}


def slice_position(affine: np.ndarray, shape: Sequence[int], view: str, index: int) -> str:
    """Where slice ``index`` of ``view`` lies along the view's normal in the scanner's coordinates (mm,
    RAS+ as NIfTI and 3D Slicer use them), at the volume's centre: "S 12.0 mm". The same slice of a file
    stored in another axis order has another index but the same position."""
    geometry = view_geometry(affine, view)
    voxel = (np.asarray(shape, dtype=float) - 1) / 2
    voxel[geometry.axis] = index
    normal = _VIEW_AXES[view][0]
    value = float((np.asarray(affine) @ np.append(voxel, 1.0))[normal])
    positive, negative = _WORLD_LETTERS[normal]
    return f"{positive if value >= 0 else negative} {abs(value):.1f} mm"


def orientation_letters(view: str) -> dict[str, str]:
    """The patient directions at a view's screen edges: every display axis runs towards the negative
    world direction, so the left edge is the column axis's positive end (radiological: R on the left)."""
    if view not in _VIEW_AXES:
        raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")
    _, row_world, col_world = _VIEW_AXES[view]
    (top, bottom), (left, right) = _WORLD_LETTERS[row_world], _WORLD_LETTERS[col_world]
    return {"top": top, "bottom": bottom, "left": left, "right": right}


def mark_orientation(rgb: np.ndarray, letters: Mapping[str, str]) -> np.ndarray:
    """A copy of a panel with the patient directions written at its edges, as 3D Slicer and ITK-SNAP do."""
    canvas = Image.fromarray(np.ascontiguousarray(rgb))
    draw = ImageDraw.Draw(canvas)
    h, w = rgb.shape[:2]
    places = {"top": (w // 2 - 3, 2), "bottom": (w // 2 - 3, h - 13), "left": (3, h // 2 - 6), "right": (w - 10, h // 2 - 6)}
    for edge, (x, y) in places.items():
        draw.text((x, y), letters[edge], fill=(255, 255, 0), stroke_width=1, stroke_fill=(0, 0, 0))
    return np.asarray(canvas)


def slice_count(shape: Sequence[int], geometry: ViewGeometry) -> int:
    return int(shape[geometry.axis])


def extract(volume: np.ndarray, geometry: ViewGeometry, index: int) -> np.ndarray:
    """The display-oriented 2D slice ``index`` of a 3D volume (a view, not a copy)."""
    if not 0 <= index < volume.shape[geometry.axis]:
        raise IndexError(f"slice {index} is outside 0..{volume.shape[geometry.axis] - 1}")
    cut = [slice(None)] * 3
    cut[geometry.axis] = index
    plane = volume[tuple(cut)]
    if geometry.rows > geometry.cols:
        plane = plane.T
    if geometry.flip_rows:
        plane = plane[::-1]
    if geometry.flip_cols:
        plane = plane[:, ::-1]
    return plane


def intensity_range(volume: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """Robust (low, high) percentiles of the nonzero voxels: 100% window at 50% level shows these."""
    sample = volume.ravel()[::7]  # a stride sample: percentiles barely move, 7x faster
    sample = sample[sample != 0]
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(sample, [low, high]))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def window_bounds(intensities: tuple[float, float], window: float, level: float) -> tuple[float, float]:
    """(black, white) intensities for a window and level given in percent of ``intensities``."""
    lo, hi = intensities
    span = hi - lo
    centre = lo + span * level / 100.0
    half = max(span * window / 100.0, 1e-6 * span) / 2.0
    return centre - half, centre + half


def to_uint8(plane: np.ndarray, black: float, white: float) -> np.ndarray:
    """Linear grey scale: ``black`` and below -> 0, ``white`` and above -> 255, rounded half up."""
    scale = 255.0 / max(white - black, 1e-12)
    out = (np.asarray(plane, dtype=np.float32) - np.float32(black)) * np.float32(scale) + np.float32(0.5)
    return np.clip(out, 0, 255).astype(np.uint8)


def grey_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


def _blend(rgb: np.ndarray, mask: np.ndarray, colours: np.ndarray, opacity: float) -> np.ndarray:
    """Mix ``colours`` (one per masked pixel) into the masked pixels of ``rgb`` in place."""
    if mask.any():
        base = rgb[mask].astype(np.float32)
        rgb[mask] = (base + (colours.astype(np.float32) - base) * np.float32(opacity) + 0.5).astype(np.uint8)
    return rgb


def _visible_lut(visible: Sequence[int]) -> np.ndarray:
    lut = np.zeros(len(LABEL_COLOURS), dtype=bool)
    for label in visible:
        if label in (NCR, ED, ET):
            lut[label] = True
    return lut


def label_rgb(labels: np.ndarray, visible: Sequence[int] = (NCR, ED, ET)) -> np.ndarray:
    """Internal labels (0-3) as colours; hidden labels are drawn as background."""
    require_internal(labels)
    shown = np.where(_visible_lut(visible)[labels], labels, 0)
    return LABEL_COLOURS[shown]


def overlay(grey: np.ndarray, labels: np.ndarray, opacity: float = 0.5, visible: Sequence[int] = (NCR, ED, ET)) -> np.ndarray:
    """Label colours mixed into a uint8 grey slice at ``opacity`` (0 shows the scan, 1 only colour)."""
    require_internal(labels)
    rgb = grey_rgb(grey)
    mask = _visible_lut(visible)[labels]
    return _blend(rgb, mask, LABEL_COLOURS[labels[mask]], opacity)


def error_overlay(grey: np.ndarray, pred: np.ndarray, ref: np.ndarray, region: str = "WT", opacity: float = 0.6) -> np.ndarray:
    """Agreement of a prediction with a reference for one region, mixed into a grey slice.

    True positives yellow, false positives (predicted, not in the reference) magenta, false
    negatives (missed) cyan.
    """
    p, r = region_mask(pred, region), region_mask(ref, region)
    rgb = grey_rgb(grey)
    for name, mask in (("true positive", p & r), ("false positive", p & ~r), ("false negative", ~p & r)):
        colour = np.broadcast_to(np.array(ERROR_COLOURS[name], dtype=np.uint8), (int(mask.sum()), 3))
        _blend(rgb, mask, colour, opacity)
    return rgb


def probability_overlay(grey: np.ndarray, probability: np.ndarray, opacity: float = 0.7) -> np.ndarray:
    """A class probability (0-1) as a heat colour over a grey slice; the scan shows where it is ~0."""
    p = np.clip(np.asarray(probability, dtype=np.float32), 0.0, 1.0)
    mask = p >= PROBABILITY_FLOOR
    colours = HEAT_LUT[(p[mask] * 255.0 + 0.5).astype(np.uint8)]
    return _blend(grey_rgb(grey), mask, colours, opacity)


def colour_bar(width: int = 256, height: int = 12) -> np.ndarray:
    """The heat scale from probability 0 (left) to 1 (right)."""
    columns = HEAT_LUT[np.linspace(0, 255, width).round().astype(int)]
    return np.ascontiguousarray(np.broadcast_to(columns[None], (height, width, 3)))


def to_display(rgb: np.ndarray, pixel_mm: tuple[float, float]) -> np.ndarray:
    """Stretch a panel so one pixel is square in mm (anisotropic scans would look squashed)."""
    row_mm, col_mm = pixel_mm
    if abs(row_mm - col_mm) < 1e-3 * max(row_mm, col_mm):
        return rgb
    unit = min(row_mm, col_mm)
    size = (max(int(round(rgb.shape[1] * col_mm / unit)), 1), max(int(round(rgb.shape[0] * row_mm / unit)), 1))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.NEAREST))


def render_panels(
    images: Mapping[str, np.ndarray],
    labels: np.ndarray,
    ranges: Mapping[str, tuple[float, float]],
    affine: np.ndarray,
    display: Display,
    markers: bool = False,
) -> dict[str, np.ndarray]:
    """The viewer's panels for one slice: each modality, the segmentation and the overlay.

    Args:
        images: modality -> 3D scan; labels: internal label map on the same grid.
        ranges: modality -> ``intensity_range`` of that scan (computed once per case).
        markers: write the patient directions (R/L, A/P, S/I) at each panel's edges.
    Returns:
        {"FLAIR": rgb, "T1": ..., "T1ce": ..., "T2": ..., "Segmentation": rgb, "Overlay": rgb}
    """
    geometry = view_geometry(affine, display.view)
    panels: dict[str, np.ndarray] = {}
    greys: dict[str, np.ndarray] = {}
    for modality, volume in images.items():
        black, white = window_bounds(ranges[modality], display.window, display.level)
        greys[modality] = to_uint8(extract(volume, geometry, display.index), black, white)
        panels[modality_title(modality)] = grey_rgb(greys[modality])
    label_plane = extract(labels, geometry, display.index)
    panels["Segmentation"] = label_rgb(label_plane, display.visible)
    base = greys.get(display.base, next(iter(greys.values())))
    panels["Overlay"] = overlay(base, label_plane, display.opacity, display.visible)
    panels = {name: to_display(rgb, geometry.pixel_mm) for name, rgb in panels.items()}
    if markers:
        letters = orientation_letters(display.view)
        panels = {name: mark_orientation(rgb, letters) for name, rgb in panels.items()}
    return panels


def grey_plane(volume: np.ndarray, intensities: tuple[float, float], affine: np.ndarray, display: Display) -> np.ndarray:
    """One windowed grey slice (uint8) of a scan, for overlays drawn by the caller."""
    geometry = view_geometry(affine, display.view)
    black, white = window_bounds(intensities, display.window, display.level)
    return to_uint8(extract(volume, geometry, display.index), black, white)


def brain_mask(images: Mapping[str, np.ndarray]) -> np.ndarray:
    """Voxels where any scan is nonzero (BraTS scans are skull-stripped, zero outside the brain)."""
    mask = None
    for volume in images.values():
        mask = volume != 0 if mask is None else mask | (volume != 0)
    return mask


def probability_classes(channels: int) -> dict[str, int]:
    """Display name -> channel of a probability map: sigmoid WT/TC/ET, or softmax NCR/ED/ET by name."""
    names = PROBABILITY_CHANNELS.get(channels)
    if names is None:
        raise ValueError(f"expected {' or '.join(map(str, PROBABILITY_CHANNELS))} probability channels, got {channels}")
    if "background" in names:  # softmax: channel k holds internal label k; background is not shown
        return {name: k for k, name in LABEL_NAMES.items()}
    return {name: k for k, name in enumerate(names)}


def modality_title(modality: str) -> str:
    return {"flair": "FLAIR", "t1": "T1", "t1ce": "T1ce", "t2": "T2"}.get(modality, modality)


def area_along_axis(labels: np.ndarray, axis: int, spacing: Sequence[float]) -> dict[str, np.ndarray]:
    """Tumour area (mm^2) of each region (WT, TC, ET) on every slice along ``axis``."""
    counts = slice_stats(labels, axis)
    mm2 = slice_area_mm2(spacing, axis)
    return {region: counts[:, list(REGION_LABELS[region])].sum(axis=1) * mm2 for region in REGIONS}


def area_figure(areas: Mapping[str, np.ndarray], view: str, index: int = 0):
    """A plotly line plot of ``area_along_axis`` with a dotted marker at slice ``index``."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for region, values in areas.items():
        figure.add_trace(go.Scatter(y=np.asarray(values), mode="lines", name=region, line={"color": f"rgb{REGION_COLOURS[region]}"}))
    figure.add_vline(x=index, line_dash="dot", line_color="grey")
    figure.update_layout(
        height=260, margin={"l": 10, "r": 10, "t": 30, "b": 10}, title=f"Tumour area per {view} slice",
        xaxis_title="slice", yaxis_title="area (mm²)",
    )
    return figure


def busiest_slice(labels: np.ndarray, axis: int) -> int:
    """The slice with the most tumour along ``axis`` (the middle one if there is none)."""
    other = tuple(a for a in range(3) if a != axis)
    per_slice = np.count_nonzero(labels, axis=other)
    return int(per_slice.argmax()) if per_slice.any() else labels.shape[axis] // 2


def montage(panels: Mapping[str, np.ndarray], columns: int = 3, gap: int = 4, title_height: int = 14,
            footer: Sequence[str] = ()) -> np.ndarray:
    """Panels side by side in a grid with their names above them, on black (for the PNG export);
    ``footer``: lines of text below (a legend, a notice)."""
    if not panels:
        raise ValueError("no panels to put in a montage")
    columns = max(1, min(columns, len(panels)))
    rows = -(-len(panels) // columns)
    cell_h = max(p.shape[0] for p in panels.values()) + title_height
    cell_w = max(p.shape[1] for p in panels.values())
    grid_h = rows * cell_h + (rows - 1) * gap
    canvas = Image.new("RGB", (columns * cell_w + (columns - 1) * gap, grid_h + title_height * len(footer)))
    draw = ImageDraw.Draw(canvas)
    for i, (name, rgb) in enumerate(panels.items()):
        x, y = (i % columns) * (cell_w + gap), (i // columns) * (cell_h + gap)
        draw.text((x + 2, y + 1), name, fill=(255, 255, 255))
        canvas.paste(Image.fromarray(np.ascontiguousarray(rgb)), (x, y + title_height))
    for k, line in enumerate(footer):
        draw.text((2, grid_h + k * title_height + 1), line, fill=(255, 255, 255))
    return np.asarray(canvas)


def png_bytes(rgb: np.ndarray, compress_level: int = 1) -> bytes:
    """Lossless PNG; level 1 encodes 3x faster than PIL's default for a file only ~5% larger."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def _pool(mask: np.ndarray, step: int) -> np.ndarray:
    """Max-pool a boolean mask by ``step`` so thin structures survive the downsampling."""
    if step <= 1:
        return mask
    pad = [(0, (-n) % step) for n in mask.shape]
    padded = np.pad(mask, pad)
    x, y, z = (n // step for n in padded.shape)
    return padded.reshape(x, step, y, step, z, step).any(axis=(1, 3, 5))


def surface(mask: np.ndarray, affine: np.ndarray, step: int = 2) -> tuple[np.ndarray, np.ndarray] | None:
    """Marching-cubes surface of a mask in world mm: (vertices (V, 3), faces (F, 3)), None if empty."""
    from skimage.measure import marching_cubes

    pooled = _pool(mask, step)
    if not pooled.any():
        return None
    # a zero border closes surfaces that touch the volume's edge
    vertices, faces, _, _ = marching_cubes(np.pad(pooled, 1).astype(np.float32), level=0.5)
    voxel = (vertices - 1.0) * step + (step - 1) / 2.0
    world = voxel @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]
    return world, faces


def mesh_figure(labels: np.ndarray, brain: np.ndarray, affine: np.ndarray, step: int = 2, brain_step: int = 4):
    """An interactive plotly 3D view: WT, TC and ET surfaces inside a translucent brain outline.

    Args:
        labels: internal label map; brain: boolean brain mask on the same grid.
        step, brain_step: downsampling of the tumour and brain masks before marching cubes.
    """
    import plotly.graph_objects as go

    traces = []
    outline = surface(brain, affine, brain_step)
    if outline is not None:
        traces.append(_mesh(go, outline, "brain", (170, 170, 170), 0.08))
    for region, opacity in (("WT", 0.25), ("TC", 0.5), ("ET", 0.9)):
        mesh = surface(region_mask(labels, region), affine, step)
        if mesh is not None:
            traces.append(_mesh(go, mesh, region, REGION_COLOURS[region], opacity))
    figure = go.Figure(traces)
    figure.update_layout(
        scene={
            "aspectmode": "data",
            "xaxis_title": "left → right (mm)",
            "yaxis_title": "posterior → anterior (mm)",
            "zaxis_title": "inferior → superior (mm)",
        },
        margin={"l": 0, "r": 0, "t": 0, "b": 0},
        legend={"itemsizing": "constant"},
        height=520,
    )
    return figure


def _mesh(go, mesh, name: str, colour: tuple[int, int, int], opacity: float):
    vertices, faces = mesh
    return go.Mesh3d(
        x=vertices[:, 0].round(1), y=vertices[:, 1].round(1), z=vertices[:, 2].round(1),
        i=faces[:, 0], j=faces[:, 1], k=faces[:, 2],
        color=f"rgb{tuple(colour)}", opacity=opacity, name=name, showlegend=True, hoverinfo="name",
    )
