"""Pictures from the pure functions that draw them: colours, orientation, window/level, overlays, 3D."""
from __future__ import annotations

import io

import nibabel as nib
import nibabel.orientations as nio
import numpy as np
import pytest
from PIL import Image

from brainseg import render
from brainseg.labels import ED, ET, NCR

LPS = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
ORANGE, GREEN, RED = (255, 165, 0), (0, 200, 0), (255, 0, 0)


def test_label_colours_are_black_orange_green_red():
    labels = np.array([[0, NCR], [ED, ET]], dtype=np.uint8)
    rgb = render.label_rgb(labels)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [0, 0, 0]
    assert rgb[0, 1].tolist() == list(ORANGE)
    assert rgb[1, 0].tolist() == list(GREEN)
    assert rgb[1, 1].tolist() == list(RED)


def test_hidden_labels_are_drawn_as_background():
    labels = np.array([[0, NCR], [ED, ET]], dtype=np.uint8)
    rgb = render.label_rgb(labels, visible=(ET,))
    assert rgb[0, 1].tolist() == [0, 0, 0] and rgb[1, 0].tolist() == [0, 0, 0]
    assert rgb[1, 1].tolist() == list(RED)


def test_overlay_mixes_colour_into_grey_at_the_opacity():
    grey = np.full((2, 2), 100, dtype=np.uint8)
    labels = np.array([[0, ET], [ED, NCR]], dtype=np.uint8)
    half = render.overlay(grey, labels, opacity=0.5)
    assert half[0, 0].tolist() == [100, 100, 100]  # background untouched
    assert half[0, 1].tolist() == [178, 50, 50]  # 100 + (255 - 100) / 2 = 177.5 -> 178; 100 - 100 / 2 = 50
    assert half[1, 0].tolist() == [50, 150, 50]
    assert render.overlay(grey, labels, opacity=1.0)[1, 1].tolist() == list(ORANGE)
    assert (render.overlay(grey, labels, opacity=0.0) == 100).all()
    no_edema = render.overlay(grey, labels, opacity=1.0, visible=(NCR, ET))
    assert no_edema[1, 0].tolist() == [100, 100, 100]


def test_window_level_maps_intensities_to_grey_levels():
    assert render.window_bounds((0.0, 100.0), 100, 50) == (0.0, 100.0)
    assert render.window_bounds((0.0, 100.0), 50, 50) == (25.0, 75.0)
    assert render.window_bounds((0.0, 100.0), 20, 20) == (10.0, 30.0)
    plane = np.array([[-10.0, 0.0, 50.0, 100.0, 250.0]])
    assert render.to_uint8(plane, 0.0, 100.0).tolist() == [[0, 0, 128, 255, 255]]  # 127.5 rounds up
    assert render.to_uint8(np.array([[25.0, 75.0]]), *render.window_bounds((0.0, 100.0), 50, 50)).tolist() == [[0, 255]]


def test_intensity_range_ignores_the_zero_background():
    volume = np.zeros((50, 50, 50), dtype=np.float32)
    volume[10:40, 10:40, 10:40] = np.linspace(1000, 2000, 30 * 30 * 30).reshape(30, 30, 30)
    lo, hi = render.intensity_range(volume)
    assert 1000 <= lo < 1010 and 1990 < hi <= 2000
    assert render.intensity_range(np.zeros((4, 4, 4))) == (0.0, 1.0)


def _asymmetric_ras(shape=(6, 7, 8)) -> np.ndarray:
    """Every voxel different, so any wrong flip or transpose changes the picture."""
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


def test_axial_view_of_an_ras_volume_puts_right_on_the_left_and_anterior_up():
    volume = _asymmetric_ras()
    affine = np.eye(4)  # index grows towards Right, Anterior, Superior
    plane = render.extract(volume, render.view_geometry(affine, "axial"), 3)
    assert plane.shape == (7, 6)  # rows = A-P (y), cols = R-L (x)
    assert plane[0, 0] == volume[5, 6, 3]  # top left: most right, most anterior
    assert plane[-1, -1] == volume[0, 0, 3]  # bottom right: most left, most posterior


def test_coronal_and_sagittal_views_of_an_ras_volume():
    volume = _asymmetric_ras()
    coronal = render.extract(volume, render.view_geometry(np.eye(4), "coronal"), 2)
    assert coronal.shape == (8, 6) and coronal[0, 0] == volume[5, 2, 7]  # superior up, right on the left
    sagittal = render.extract(volume, render.view_geometry(np.eye(4), "sagittal"), 1)
    assert sagittal.shape == (8, 7) and sagittal[0, 0] == volume[1, 6, 7]  # superior up, anterior on the left


def test_brats_lps_volume_is_shown_without_flips():
    volume = _asymmetric_ras()
    geometry = render.view_geometry(LPS, "axial")
    assert (geometry.axis, geometry.rows, geometry.cols, geometry.flip_rows, geometry.flip_cols) == (2, 1, 0, False, False)
    plane = render.extract(volume, geometry, 4)
    assert plane[0, 0] == volume[0, 0, 4]  # index 0 is the most right and most anterior voxel in LPS


@pytest.mark.parametrize("codes", [("L", "P", "S"), ("S", "R", "A"), ("P", "I", "L"), ("A", "S", "R")])
@pytest.mark.parametrize("view", render.VIEWS)
def test_every_orientation_shows_the_same_picture(codes, view):
    """The same anatomy stored with any axis order and direction must look identical."""
    volume = _asymmetric_ras()
    reference = nib.Nifti1Image(volume, np.diag([1.5, 1.0, 2.0, 1.0]))
    transform = nio.ornt_transform(nio.io_orientation(reference.affine), nio.axcodes2ornt(codes))
    stored = reference.as_reoriented(transform)
    assert nib.aff2axcodes(stored.affine) == codes
    expected_geometry = render.view_geometry(reference.affine, view)
    geometry = render.view_geometry(stored.affine, view)
    n = render.slice_count(volume.shape, expected_geometry)
    assert render.slice_count(stored.shape, geometry) == n
    assert geometry.pixel_mm == expected_geometry.pixel_mm
    expected = [render.extract(volume, expected_geometry, i) for i in range(n)]
    got = [render.extract(np.asarray(stored.dataobj), geometry, i) for i in range(n)]
    # slice indices may run the other way; the set of pictures, each exactly, must be the same
    assert sorted(e.tobytes() for e in expected) == sorted(g.tobytes() for g in got)


def test_anisotropic_voxels_are_stretched_to_square_millimetres():
    rgb = np.zeros((10, 20, 3), dtype=np.uint8)
    assert render.to_display(rgb, (3.0, 1.0)).shape == (30, 20, 3)
    assert render.to_display(rgb, (1.0, 1.0)) is rgb


def test_error_overlay_colours_true_false_positives_and_negatives():
    grey = np.full((1, 4), 80, dtype=np.uint8)
    pred = np.array([[ED, ED, 0, 0]], dtype=np.uint8)
    ref = np.array([[ET, 0, NCR, 0]], dtype=np.uint8)
    rgb = render.error_overlay(grey, pred, ref, "WT", opacity=1.0)
    assert rgb[0].tolist() == [[255, 255, 0], [255, 0, 255], [0, 255, 255], [80, 80, 80]]
    # for the tumour core, edema is not tumour: the first voxel is a miss, the second nothing
    core = render.error_overlay(grey, pred, ref, "TC", opacity=1.0)
    assert core[0].tolist() == [[0, 255, 255], [80, 80, 80], [0, 255, 255], [80, 80, 80]]


def test_probability_overlay_uses_the_heat_scale():
    grey = np.full((1, 3), 60, dtype=np.uint8)
    probability = np.array([[0.0, 0.5, 1.0]], dtype=np.float16)
    rgb = render.probability_overlay(grey, probability, opacity=1.0)
    assert rgb[0, 0].tolist() == [60, 60, 60]  # below the floor the scan shows
    assert rgb[0, 1].tolist() == render.HEAT_LUT[128].tolist()
    assert rgb[0, 2].tolist() == render.HEAT_LUT[255].tolist() == [252, 255, 164]
    assert render.HEAT_LUT[0].tolist() == [0, 0, 4]
    assert render.colour_bar(256, 2)[1, 255].tolist() == [252, 255, 164]


def test_probability_classes():
    assert render.probability_classes(3) == {"WT": 0, "TC": 1, "ET": 2}
    assert render.probability_classes(4) == {"necrotic core": NCR, "edema": ED, "enhancing tumour": ET}
    with pytest.raises(ValueError):
        render.probability_classes(2)


def test_render_panels_draws_the_grid_of_six():
    shape = (12, 10, 8)
    images = {m: _asymmetric_ras(shape) + 1 for m in ("flair", "t1", "t1ce", "t2")}
    labels = np.zeros(shape, dtype=np.uint8)
    labels[2, 3, 4] = ET
    ranges = {m: render.intensity_range(v) for m, v in images.items()}
    display = render.Display(view="axial", index=4, opacity=1.0)
    panels = render.render_panels(images, labels, ranges, np.eye(4), display)
    assert list(panels) == ["FLAIR", "T1", "T1ce", "T2", "Segmentation", "Overlay"]
    assert all(p.shape == (10, 12, 3) for p in panels.values())
    # voxel (x=2, y=3) in RAS: row = 9 - 3, col = 11 - 2
    assert panels["Segmentation"][6, 9].tolist() == list(RED)
    assert panels["Overlay"][6, 9].tolist() == list(RED)
    assert np.count_nonzero(panels["Segmentation"].any(axis=2)) == 1


def test_area_along_axis_in_square_millimetres():
    labels = np.zeros((4, 5, 6), dtype=np.uint8)
    labels[1, 0:2, 0:3] = ED  # 6 voxels on x-slice 1
    labels[2, 0, 0] = ET
    labels[2, 1, 0] = NCR
    areas = render.area_along_axis(labels, 0, (3.0, 2.0, 0.5))  # a voxel face across x is 1 mm^2
    assert areas["WT"].tolist() == [0, 6, 2, 0]
    assert areas["TC"].tolist() == [0, 0, 2, 0]
    assert areas["ET"].tolist() == [0, 0, 1, 0]
    assert render.area_along_axis(labels, 2, (3.0, 2.0, 0.5))["WT"][0] == 4 * 6.0  # 4 voxels x 6 mm^2
    assert render.busiest_slice(labels, 0) == 1
    assert render.busiest_slice(np.zeros((4, 5, 6), np.uint8), 2) == 3


def test_montage_and_png_round_trip():
    a = np.full((10, 20, 3), 200, dtype=np.uint8)
    b = np.zeros((10, 20, 3), dtype=np.uint8)
    picture = render.montage({"A": a, "B": b, "C": a}, columns=2, gap=4, title_height=14)
    assert picture.shape == (2 * 24 + 4, 2 * 20 + 4, 3)
    assert picture[14:24, 0:20].min() == 200  # panel A below its title
    decoded = np.asarray(Image.open(io.BytesIO(render.png_bytes(picture))))
    assert np.array_equal(decoded, picture)


def test_surface_of_a_cube_lies_on_its_faces_in_world_coordinates():
    mask = np.zeros((30, 30, 30), dtype=bool)
    mask[10:20, 5:15, 0:8] = True  # touches the volume's edge at z = 0
    vertices, faces = render.surface(mask, np.eye(4), step=1)
    assert faces.shape[1] == 3 and len(faces) > 0
    assert np.allclose(vertices.min(axis=0), [9.5, 4.5, -0.5]) and np.allclose(vertices.max(axis=0), [19.5, 14.5, 7.5])
    flipped, _ = render.surface(mask, LPS, step=1)
    assert np.allclose(flipped.min(axis=0), [-19.5, 239 - 14.5, -0.5])
    assert render.surface(np.zeros((5, 5, 5), bool), np.eye(4)) is None


def test_downsampled_surface_keeps_a_one_voxel_structure():
    mask = np.zeros((20, 20, 20), dtype=bool)
    mask[7, 7, 7] = True
    vertices, _ = render.surface(mask, np.eye(4), step=4)
    # voxel 7 falls in the 4-voxel block 4..7, whose outer faces lie at 3.5 and 7.5 (voxel centres are
    # integers): the pooled surface must wrap exactly that block, not a shifted one
    assert np.allclose(vertices.min(axis=0), 3.5) and np.allclose(vertices.max(axis=0), 7.5)
    assert np.allclose(vertices.mean(axis=0), 5.5)


def test_mesh_figure_has_brain_and_regions():
    labels = np.zeros((24, 24, 24), dtype=np.uint8)
    labels[8:16, 8:16, 8:16] = ED
    labels[10:14, 10:14, 10:14] = ET
    brain = np.zeros_like(labels, dtype=bool)
    brain[2:22, 2:22, 2:22] = True
    figure = render.mesh_figure(labels, brain, LPS, step=2, brain_step=4)
    assert [t.name for t in figure.data] == ["brain", "WT", "TC", "ET"]
    assert figure.data[3].color == "rgb(255, 0, 0)"
    no_tumour = render.mesh_figure(np.zeros_like(labels), brain, LPS)
    assert [t.name for t in no_tumour.data] == ["brain"]


def test_extract_refuses_a_slice_outside_the_volume():
    with pytest.raises(IndexError):
        render.extract(np.zeros((3, 4, 5)), render.view_geometry(np.eye(4), "axial"), 5)
    with pytest.raises(ValueError):
        render.view_geometry(np.eye(4), "oblique")


def test_area_figure_marks_the_current_slice():
    areas = {"WT": np.array([0.0, 4.0, 2.0]), "TC": np.array([0.0, 1.0, 0.0]), "ET": np.zeros(3)}
    figure = render.area_figure(areas, "coronal", index=2)
    assert [t.name for t in figure.data] == ["WT", "TC", "ET"]
    assert list(figure.data[0].y) == [0.0, 4.0, 2.0]
    assert figure.layout.shapes[0].x0 == 2 and figure.layout.title.text == "Tumour area per coronal slice"


def test_the_letters_at_the_edges_match_where_the_views_put_the_anatomy():
    """The letters agree with the extraction tested above: axial and coronal put the right on the left,
    axial anterior up, coronal and sagittal superior up, sagittal anterior on the left."""
    assert render.orientation_letters("axial") == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert render.orientation_letters("coronal") == {"top": "S", "bottom": "I", "left": "R", "right": "L"}
    assert render.orientation_letters("sagittal") == {"top": "S", "bottom": "I", "left": "A", "right": "P"}
    with pytest.raises(ValueError, match="unknown view 'oblique'"):
        render.orientation_letters("oblique")


def test_markers_touch_only_the_edges_of_each_panel():
    volume = np.full((60, 60, 20), 100.0, np.float32)
    images = {m: volume for m in ("flair", "t1", "t1ce", "t2")}
    labels = np.zeros(volume.shape, np.uint8)
    ranges = {m: (0.0, 200.0) for m in images}
    display = render.Display(index=10)
    plain = render.render_panels(images, labels, ranges, LPS, display)
    marked = render.render_panels(images, labels, ranges, LPS, display, markers=True)
    for name, panel in marked.items():
        changed = np.any(panel != plain[name], axis=-1)
        assert changed.any() and not changed[15:-15, 15:-15].any(), name
        assert changed[:, :15].any() and changed[:, -15:].any() and changed[:15].any() and changed[-15:].any(), name


def test_a_montage_footer_adds_its_lines_below_the_panels():
    panels = {"a": np.zeros((20, 30, 3), np.uint8), "b": np.zeros((20, 30, 3), np.uint8)}
    plain = render.montage(panels, 2)
    with_footer = render.montage(panels, 2, footer=["legend", "research use only"])
    assert with_footer.shape == (plain.shape[0] + 2 * 14, plain.shape[1], 3)
    np.testing.assert_array_equal(with_footer[: plain.shape[0]], plain)
    assert with_footer[plain.shape[0]:].any()  # the text is drawn


def test_a_slice_position_is_the_same_whatever_order_the_file_stores_its_voxels():
    """BraTS's LPS grid (diag(-1, -1, 1), origin (0, 239, 0)) and the same voxels stored RAS: the same
    axial/coronal/sagittal slice has other indices but one scanner position."""
    shape = (240, 240, 155)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps[:3, 3] = (0, 239, 0)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = (239, 239)
    ras = lps @ flip  # voxel (i, j, k) of the RAS copy is voxel (239 - i, 239 - j, k) of the original
    assert render.slice_position(lps, shape, "axial", 100) == render.slice_position(ras, shape, "axial", 100) == "S 100.0 mm"
    # coronal: world y = 239 - j in the original, so j = 149 is y = 90, anterior; the RAS copy's j = 90
    assert render.slice_position(lps, shape, "coronal", 149) == render.slice_position(ras, shape, "coronal", 90) == "A 90.0 mm"
    # sagittal: world x = -i; i = 30 is 30 mm to the patient's left
    assert render.slice_position(lps, shape, "sagittal", 30) == render.slice_position(ras, shape, "sagittal", 209) == "L 30.0 mm"
