"""The Streamlit app through streamlit.testing.v1.AppTest, with the network replaced by a fast fake.

The synthetic case has 2 mm voxels (the model's own spacing, so nothing is resampled) and three nested
cubes that the fake predictor turns into exact label maps:
  FLAIR bright 8x8x8 -> WT (512 voxels, 4.096 mL); T2 bright 6x6x6 -> TC (216, 1.728 mL);
  T1ce bright 4x4x4 -> ET (64, 0.512 mL).
"""
from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from brainseg import checkpoint, pipeline
from brainseg.checkpoint import save_checkpoint
from brainseg.config import BrainsegConfig, InferenceConfig, ModelConfig, PostprocessConfig
from brainseg.decode import read_volume
from brainseg.labels import ED, ET, NCR, from_internal
from brainseg.model import UNet3D

APP = str(Path(__file__).resolve().parents[1] / "app.py")
SHAPE = (40, 40, 32)
AFFINE = np.array([[-2.0, 0, 0, 0], [0, -2.0, 0, 78.0], [0, 0, 2.0, 0], [0, 0, 0, 1]])
WT_BOX = (slice(12, 20), slice(14, 22), slice(10, 18))
TC_BOX = (slice(13, 19), slice(15, 21), slice(11, 17))
ET_BOX = (slice(14, 18), slice(16, 20), slice(12, 16))
CHANNEL = {"flair": 0, "t1": 1, "t1ce": 2, "t2": 3}
TIMEOUT = 60


def images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij"))
    brain = (grid**2).sum(0) < 0.9
    out = {}
    for modality, box in (("flair", WT_BOX), ("t1", None), ("t1ce", ET_BOX), ("t2", TC_BOX)):
        image = np.where(brain, 100 + rng.normal(0, 5, SHAPE), 0)
        if box is not None:
            image[box] = 400
        out[modality] = image.astype(np.float32)
    return out


def expected_labels() -> np.ndarray:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[WT_BOX] = ED
    labels[TC_BOX] = NCR
    labels[ET_BOX] = ET
    return labels


def nifti(array: np.ndarray, gz: bool = True) -> bytes:
    raw = nib.Nifti1Image(array, AFFINE).to_bytes()
    return gzip.compress(raw, mtime=0) if gz else raw  # no time stamp: the same arrays give the same bytes


def scan_files(prefix: str = "case7_") -> list[tuple[str, bytes, str]]:
    data = images()
    return [(f"{prefix}{m}.nii.gz", nifti(data[m]), "application/gzip") for m in ("flair", "t1", "t1ce", "t2")]


def fake_predictor(channels_for: tuple[str, str, str]):
    """Logits +-8 from thresholded z-scored channels: WT, TC, ET from the named modalities."""

    def predict(batch: torch.Tensor) -> torch.Tensor:
        masks = [batch[:, CHANNEL[m]] > 2.0 for m in channels_for]
        return torch.stack(masks, dim=1).float() * 16 - 8

    return predict


@pytest.fixture
def models_dir(monkeypatch, tmp_path, tiny_checkpoint) -> Path:
    """Two tiny checkpoints in place of models/: the tests never depend on the shipped weights."""
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("brainseg_default.pt", "second.pt"):
        shutil.copy(tiny_checkpoint, folder / name)
    monkeypatch.setattr(checkpoint, "DEFAULT_DIR", folder)
    monkeypatch.delenv("BRAINSEG_MODELS", raising=False)
    return folder


@pytest.fixture
def app(monkeypatch, models_dir):
    """The app with the network replaced by fakes; "second" finds a smaller whole tumour."""
    calls = []
    real = pipeline.segment_case

    def segment_case(case, loaded, *args, **kwargs):
        calls.append(loaded.name)
        regions = ("t2", "t2", "t1ce") if loaded.name == "second" else ("flair", "t2", "t1ce")
        return real(case, loaded, *args, predictor=fake_predictor(regions), **kwargs)

    monkeypatch.setattr(pipeline, "segment_case", segment_case)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.calls = calls
    at.run()
    assert not at.exception
    return at


def errors(at) -> list[str]:
    return [e.value for e in at.error]


def upload(at, files) -> None:
    at.file_uploader(key="uploads").set_value(files)
    at.run()
    assert not at.exception, at.exception


def run_case(at) -> None:
    upload(at, scan_files())
    at.button(key="run").click().run()
    assert not at.exception, at.exception
    assert not errors(at), errors(at)


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def table(at, column: str):
    """The shown table with this column (tables without selection carry no key in AppTest)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def slice_slider(at):
    return next(s for s in at.slider if s.key and s.key.startswith("slice/"))


def test_start_page_shows_the_notice_and_asks_for_scans(app):
    assert any("Research use only" in w.value for w in app.warning)
    assert any("Drop four scans" in i.value for i in app.info)
    assert app.button(key="run").disabled
    options = app.selectbox(key="checkpoint").options
    assert [Path(o).name for o in options] == ["brainseg_default.pt", "second.pt"]


def test_upload_shows_the_modality_table_and_the_run_gives_known_volumes(app):
    upload(app, scan_files())
    assert [app.selectbox(key=k).value for k in (s.key for s in app.selectbox) if k.startswith("role/")] == ["flair", "t1", "t1ce", "t2"]
    assert any("Ready: case7" in s.value and "40x40x32 voxels of 2x2x2 mm" in s.value for s in app.success)
    app.button(key="run").click().run()
    assert not app.exception and not errors(app)
    assert app.calls == ["brainseg_default"]
    assert metrics(app) == {"WT volume": "4.10 mL", "TC volume": "1.73 mL", "ET volume": "0.51 mL"}
    result = app.session_state["result"]
    assert np.array_equal(result.segmentation.labels, expected_labels())
    assert "done in" in app.get("progress")[0].proto.text
    volume = table(app, "kind")
    assert volume["voxels"].tolist() == [512, 216, 64, 152, 296, 64]
    assert volume["volume_ml"].tolist() == [4.096, 1.728, 0.512, 1.216, 2.368, 0.512]
    brain = result.segmentation.brain_voxels
    assert volume["brain_percent"][0] == pytest.approx(100 * 512 / brain, abs=1e-3)
    captions = [c for image in app.image for c in image.captions]
    assert captions[:6] == ["FLAIR", "T1", "T1ce", "T2", "Segmentation", "Overlay"]
    assert not any("changed since this result" in i.value for i in app.info)
    assert any(c.value.startswith("Loaded: ") and c.value.endswith("brainseg_default.pt") for c in app.sidebar.caption)


def test_sliders_and_views_redraw_without_running_the_network_again(app):
    run_case(app)
    # the viewer opens on the axial slice with the most tumour; axial runs along array axis 2 here
    assert slice_slider(app).value in range(10, 18)
    urls = [image.value for image in app.image[:6]]
    slice_slider(app).set_value(14).run()
    rows = table(app, "area_mm2")
    assert rows["voxels"].tolist()[:3] == [64, 36, 16]  # WT 8x8, TC 6x6, ET 4x4 on an axial slice through all
    assert rows["area_mm2"].tolist()[0] == 256.0  # 64 voxels x 4 mm^2
    slice_slider(app).set_value(2).run()
    assert table(app, "area_mm2")["voxels"].sum() == 0
    assert [image.value for image in app.image[:6]] != urls
    app.radio(key="view").set_value("coronal").run()
    assert slice_slider(app).label == "Slice (coronal, 0-39)"
    app.radio(key="view").set_value("sagittal").run()
    app.radio(key="layout").set_value("Single").run()
    assert [c for image in app.image for c in image.captions][0] == "Overlay"
    for key, value in (("opacity", 0.9), ("window", 60), ("level", 40)):
        app.slider(key=key).set_value(value).run()
    app.checkbox(key=f"show/{ED}").uncheck().run()
    app.selectbox(key="base").set_value("t2").run()
    app.radio(key="prob_class").set_value("ET").run()
    assert not app.exception and not errors(app)
    assert app.calls == ["brainseg_default"]  # one inference for all of the above


def test_downloads_offer_nifti_csv_json_png_and_probabilities(app):
    run_case(app)
    buttons = {b.key: b for b in app.download_button}
    assert set(buttons) == {"dl_nifti", "dl_csv", "dl_json", "dl_png", "dl_probabilities", "dl_slicer"}
    assert buttons["dl_nifti"].label == "Segmentation (.nii.gz)"
    assert all(b.proto.url or b.proto.deferred_file_id for b in buttons.values())
    app.selectbox(key="convention").set_value("brats2023").run()
    labels = table(app, "kind")["structure"].tolist()
    assert labels[-1] == "enhancing tumour (label 3)"
    app.download_button(key="dl_csv").click().run()
    assert not app.exception


def test_ground_truth_upload_scores_and_error_overlay(app):
    run_case(app)
    truth = from_internal(expected_labels(), "brats2018")
    app.file_uploader(key="truth_upload").set_value(("case7_seg.nii.gz", nifti(truth), "application/gzip")).run()
    assert not app.exception and not errors(app)
    scores = table(app, "hd95_mm")
    assert scores["dice"].tolist() == [1.0, 1.0, 1.0] and scores["hd95_mm"].tolist() == [0.0, 0.0, 0.0]
    assert any("WT errors" in c for image in app.image for c in image.captions)
    # a reference whose whole tumour is only the core: WT Dice 2 x 216 / (512 + 216)
    core_only = expected_labels()
    core_only[core_only == ED] = 0
    app.file_uploader(key="truth_upload").set_value(("core_seg.nii.gz", nifti(from_internal(core_only, "brats2023")), "application/gzip")).run()
    scores = table(app, "hd95_mm")
    assert scores["dice"].tolist() == [round(432 / 728, 4), 1.0, 1.0]


def test_reference_label_values_can_be_named(app):
    """A Decathlon-ordered reference (1 edema, 2 core) reads right once named; a wrong choice is an error
    that keeps the reference and scores already shown."""
    run_case(app)
    msd = from_internal(expected_labels(), "msd")
    app.file_uploader(key="truth_upload").set_value(("case7_msd.nii.gz", nifti(msd), "application/gzip")).run()
    guessed = table(app, "hd95_mm")["dice"].tolist()  # read as BraTS 2023+: edema and core swapped
    assert guessed[0] == 1.0 and guessed[1] < 0.8
    caption = next(c.value for c in app.caption if c.value.startswith("Reference: "))
    assert "BraTS 2023+ (ET = 3) labels, guessed from its values); a Decathlon Task01 map uses 1-3 too" in caption
    app.selectbox(key="truth_convention").set_value("msd").run()
    assert not app.exception and not errors(app)
    assert table(app, "hd95_mm")["dice"].tolist() == [1.0, 1.0, 1.0]
    caption = next(c.value for c in app.caption if c.value.startswith("Reference: "))
    assert caption == "Reference: case7_msd.nii.gz (Decathlon Task01 (1 ED, 2 NCR, 3 ET) labels, as chosen)"
    app.selectbox(key="truth_convention").set_value("brats2018").run()  # MSD's 3 is no BraTS 2018 label
    assert any("case7_msd.nii.gz: unexpected label values [3]" in e for e in errors(app))
    assert table(app, "hd95_mm")["dice"].tolist() == [1.0, 1.0, 1.0] and not app.exception


def test_a_map_brainseg_wrote_reads_in_the_values_its_header_names(app):
    """The app's own Decathlon-valued download, dropped back as the reference, needs no choosing."""
    from brainseg.labelmaps import labels_bytes

    run_case(app)
    case = app.session_state["result"].case
    written = labels_bytes(expected_labels(), case, "msd")
    app.file_uploader(key="truth_upload").set_value(("case7_seg.nii.gz", written, "application/gzip")).run()
    assert table(app, "hd95_mm")["dice"].tolist() == [1.0, 1.0, 1.0]
    caption = next(c.value for c in app.caption if c.value.startswith("Reference: "))
    assert caption == "Reference: case7_seg.nii.gz (Decathlon Task01 (1 ED, 2 NCR, 3 ET) labels, as its header names)"


def test_segmentation_dropped_with_the_scans_becomes_the_ground_truth(app):
    truth = ("case7_seg.nii.gz", nifti(from_internal(expected_labels(), "brats2018")), "application/gzip")
    upload(app, scan_files() + [truth])
    assert app.selectbox(key=next(s.key for s in app.selectbox if s.key.startswith("role/") and s.options == ["ground truth", "ignore"])).value == "truth"
    app.button(key="run").click().run()
    assert table(app, "hd95_mm")["dice"].tolist() == [1.0, 1.0, 1.0]


def _zipped(files: list[tuple[str, bytes, str]], folder: str = "") -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data, _ in files:
            archive.writestr(folder + name, data)
        archive.writestr("__MACOSX/" + folder + "._" + files[0][0], b"\0\5\26\7")  # a Mac's metadata twin
    return buffer.getvalue()


def test_a_zip_of_the_case_is_read_as_its_files_and_a_bad_zip_costs_only_itself(app):
    truth = ("case7_seg.nii.gz", nifti(from_internal(expected_labels(), "brats2018")), "application/gzip")
    upload(app, [("case7.zip", _zipped(scan_files() + [truth], "case7/"), "application/zip")])
    roles = [app.selectbox(key=k).value for k in (s.key for s in app.selectbox) if k.startswith("role/")]
    assert roles == ["flair", "truth", "t1", "t1ce", "t2"] and not errors(app)
    app.button(key="run").click().run()
    assert metrics(app)["WT volume"] == "4.10 mL"
    assert table(app, "hd95_mm")["dice"].tolist() == [1.0, 1.0, 1.0]
    # a damaged zip beside it: said, and the case from the first one stays
    upload(app, [("case7.zip", _zipped(scan_files() + [truth], "case7/"), "application/zip"),
                 ("other.zip", b"PK\3\4 not really", "application/zip")])
    assert errors(app) == ["other.zip: not a readable zip file (damaged or truncated); expected a .zip of one case's "
                           ".nii, .nii.gz, .nrrd, .mha or .npy files, or the files themselves"]
    assert any("Ready: case7" in s.value for s in app.success)
    assert len(app.session_state["parsed"]) == 6  # five members and the bad zip
    upload(app, scan_files())  # the zips taken out of the drop zone: their members go with them
    assert sorted(entry.name for entry in app.session_state["parsed"].values()) == [f[0] for f in scan_files()]
    # the zip beside its own files: each file used once, and said so
    upload(app, scan_files() + [("case7.zip", _zipped(scan_files()), "application/zip")])
    assert len([s for s in app.selectbox if s.key.startswith("role/")]) == 4 and not errors(app)
    assert any("Dropped more than once, used once: case7_flair.nii.gz (in case7.zip) is case7_flair.nii.gz" in i.value
               for i in app.info)
    assert any("Ready: case7" in s.value for s in app.success)


def test_a_damaged_file_in_a_zip_costs_only_itself(app):
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data, _ in scan_files():
            archive.writestr(name, data)
    damaged = bytearray(buffer.getvalue())
    t2 = damaged.index(b"case7_t2.nii.gz") + len("case7_t2.nii.gz") + 100  # inside the T2 member's bytes
    damaged[t2] ^= 0xFF
    upload(app, [("case7.zip", bytes(damaged), "application/zip")])
    assert len(errors(app)) == 1 and errors(app)[0].startswith("case7_t2.nii.gz: damaged inside case7.zip (BadZipFile: Bad CRC-32")
    assert any("Still needed: T2" in i.value for i in app.info)
    assert len([s for s in app.selectbox if s.key.startswith("role/")]) == 3
    upload(app, [("case7.zip", bytes(damaged), "application/zip"), scan_files()[3]])  # the T2 dropped on its own
    assert any("Ready: case7" in s.value for s in app.success)


def test_bias_correction_is_chosen_in_the_sidebar_and_said_in_the_result(app):
    upload(app, scan_files())
    app.multiselect(key="bias_correct").set_value(["t1ce", "t1"]).run()
    app.button(key="run").click().run()
    assert not app.exception and not errors(app)
    assert any(c.value.startswith("Settings used: N4 bias-field correction of T1, T1ce, ") for c in app.caption)
    app.multiselect(key="bias_correct").set_value([]).run()
    app.button(key="run").click().run()
    assert not any("N4" in c.value for c in app.caption if c.value.startswith("Settings used"))


def test_a_reference_of_another_case_or_a_scan_as_reference_is_said_so(app):
    run_case(app)
    truth = nifti(from_internal(expected_labels(), "brats2018"))
    app.file_uploader(key="truth_upload").set_value(("case9_seg.nii.gz", truth, "application/gzip")).run()
    assert any("case9_seg.nii.gz names case case9, the scans name case7" in w.value for w in app.warning)
    app.file_uploader(key="truth_upload").set_value(("case7_seg.nii.gz", truth, "application/gzip")).run()
    assert not any("names case" in w.value for w in app.warning) and not errors(app)
    # a T1 dropped as the reference: what it is, not its intensities listed as unexpected label values
    app.file_uploader(key="truth_upload").set_value(("case7_t1.nii.gz", nifti(images()["t1"]), "application/gzip")).run()
    assert any("case7_t1.nii.gz: an MRI scan, not a segmentation" in e for e in errors(app))
    assert not any("unexpected label values" in e for e in errors(app))
    assert table(app, "hd95_mm")["dice"].tolist() == [1.0, 1.0, 1.0]  # the earlier reference's scores stay


def test_a_dropped_reference_the_guess_cannot_read_is_read_once_its_values_are_named(app):
    """A BraTS 2024 post-treatment map holds 3 (ET) and 4 (resection cavity): refused as guessed, kept,
    and scored once the user names its label values (the cavity is not tumour)."""
    post = from_internal(expected_labels(), "brats2023")
    post[0:3, 0:3, 0:3] = 4  # a cavity in a corner, away from the tumour
    upload(app, scan_files() + [("case7_seg.nii.gz", nifti(post), "application/gzip")])
    app.button(key="run").click().run()
    assert any("holds both labels 3 and 4" in e and "brats2024" in e for e in errors(app))
    assert metrics(app)["WT volume"] == "4.10 mL"  # the segmentation is shown all the same
    app.selectbox(key="truth_convention").set_value("brats2024").run()
    assert not app.exception and not errors(app)
    assert table(app, "hd95_mm")["dice"].tolist() == [1.0, 1.0, 1.0]
    assert any("BraTS 2024 post-treatment" in c.value for c in app.caption)


def test_compare_two_checkpoints(app):
    run_case(app)
    app.selectbox(key="compare_checkpoint").set_value(next(o for o in app.selectbox(key="compare_checkpoint").options if o.endswith("second.pt")))
    app.button(key="run_compare").click().run()
    assert not app.exception and not errors(app)
    assert app.calls == ["brainseg_default", "second"]
    rows = table(app, "Dice between them")
    assert rows["Dice between them"].tolist() == [round(432 / 728, 4), 1.0, 1.0]
    assert rows["brainseg_default (mL)"].tolist() == [4.096, 1.728, 0.512]
    assert rows["second (mL)"].tolist() == [1.728, 1.728, 0.512]
    truth = from_internal(expected_labels(), "brats2018")
    app.file_uploader(key="truth_upload").set_value(("case7_seg.nii.gz", nifti(truth), "application/gzip")).run()
    rows = table(app, "Dice between them")
    assert rows["brainseg_default vs truth (Dice)"].tolist() == [1.0, 1.0, 1.0]
    assert rows["second vs truth (Dice)"].tolist() == [round(432 / 728, 4), 1.0, 1.0]
    assert sum(c in ("brainseg_default", "second") for image in app.image for c in image.captions) == 2


def test_three_d_view(app):
    run_case(app)
    app.toggle(key="show_3d").set_value(True).run()
    assert not app.exception and not errors(app)
    charts = app.get("plotly_chart")
    assert len(charts) == 2  # the area plot and the 3D view
    assert '"name":"brain"' in charts[1].proto.spec.replace(" ", "") and '"type":"mesh3d"' in charts[1].proto.spec.replace(" ", "")


def test_a_bad_file_shows_an_error_and_the_good_files_stay(app):
    good = scan_files()
    broken = ("case7_t2.nii.gz", good[3][1][:-4000], "application/gzip")  # truncated download
    upload(app, good[:3] + [broken])
    assert len(errors(app)) == 1 and "case7_t2.nii.gz" in errors(app)[0] and "truncated" in errors(app)[0]
    assert any("Still needed: T2" in i.value for i in app.info)
    assert len([s for s in app.selectbox if s.key.startswith("role/")]) == 3
    ambiguous = ("t1_to_flair.nii.gz", good[0][1], "application/gzip")
    upload(app, good[:3] + [broken, ambiguous, ("case7_T2w_fixed.nii.gz", good[3][1], "application/gzip")])
    assert len(errors(app)) == 2 and "t1_to_flair.nii.gz: the name mentions several modalities" in errors(app)[1]
    assert any("Ready: case7" in s.value for s in app.success)
    app.button(key="run").click().run()
    assert metrics(app)["WT volume"] == "4.10 mL"


def itk_bytes(array: np.ndarray, name: str, folder: Path) -> bytes:
    """``array`` on the test grid as a .nrrd / .mha file (by ``name``'s suffix), as SimpleITK saves it."""
    from conftest import itk_copy

    return itk_copy(nib.Nifti1Image(array, AFFINE), folder / name).read_bytes()


def test_nrrd_and_mha_scans_and_reference_are_read_as_nifti_ones_and_a_detached_header_is_said(app, tmp_path):
    """3D Slicer's .nrrd and ITK-SNAP's .mha beside NIfTI scans make the same case, labels and scores."""
    data = images()
    # the browser's file picker offers these endings; detached headers too, so that dropping one says what to do
    assert list(app.file_uploader(key="uploads").proto.type) == [".gz", ".mha", ".mhd", ".nhdr", ".nii", ".npy", ".nrrd", ".zip"]
    files = [("case7_flair.nrrd", itk_bytes(data["flair"], "case7_flair.nrrd", tmp_path), "application/octet-stream"),
             ("case7_t1.mha", itk_bytes(data["t1"], "case7_t1.mha", tmp_path), "application/octet-stream"),
             *scan_files()[2:]]
    upload(app, files)
    assert not errors(app) and any("Ready: case7" in s.value and "40x40x32 voxels of 2x2x2 mm" in s.value for s in app.success)
    app.button(key="run").click().run()
    assert not app.exception and not errors(app)
    result = app.session_state["result"]
    assert np.array_equal(result.segmentation.labels, expected_labels())
    np.testing.assert_allclose(result.case.affine, AFFINE, atol=1e-6)
    truth = from_internal(expected_labels(), "brats2018")
    app.file_uploader(key="truth_upload").set_value(("case7_seg.nrrd", itk_bytes(truth, "case7_seg.nrrd", tmp_path),
                                                     "application/octet-stream")).run()
    assert not app.exception and not errors(app)
    assert list(app.file_uploader(key="truth_upload").proto.type) == [".gz", ".mha", ".mhd", ".nhdr", ".nii", ".npy", ".nrrd"]
    assert table(app, "hd95_mm")["dice"].tolist() == [1.0, 1.0, 1.0]
    detached = ("case7_t2.nhdr", b"NRRD0004\ntype: short\ndimension: 3\nsizes: 40 40 32\nencoding: raw\n"
                                 b"data file: case7_t2.raw\n", "application/octet-stream")
    upload(app, files[:3] + [detached])
    assert errors(app) == ["case7_t2.nhdr: a detached NRRD header: its voxels are in another file (case7_t2.raw), which "
                           "a single file given or uploaded cannot bring along; save the scan as a single .nrrd file "
                           "(or .nii.gz)"]


def test_unknown_names_are_assigned_by_hand_and_duplicates_refused(app):
    files = scan_files()
    renamed = files[:3] + [("scan_d.nii.gz", files[3][1], "application/gzip")]
    upload(app, renamed)
    assert any("cannot tell the modality" in w.value for w in app.warning)
    assert any("Still needed: T2" in i.value for i in app.info)
    unknown = next(s for s in app.selectbox if s.key.startswith("role/") and s.value == "ignore")
    unknown.set_value("t1").run()
    assert any("are all set to T1" in e for e in errors(app))
    next(s for s in app.selectbox if s.key == unknown.key).set_value("t2").run()
    assert not errors(app) and any("Ready" in s.value for s in app.success)


def test_scans_on_different_grids_are_refused_and_the_earlier_result_kept(app):
    run_case(app)
    files = scan_files("other_")
    wrong = nifti(images()["t2"][:, :, :30])
    upload(app, files[:3] + [("other_t2.nii.gz", wrong, "application/gzip")])
    assert any("other_t2.nii.gz: shape (40, 40, 30) differs" in e for e in errors(app))
    assert metrics(app)["WT volume"] == "4.10 mL"  # the result of the first case is still shown
    assert app.button(key="run").disabled


def test_a_segmentation_given_as_a_scan_is_not_taken_for_one(app):
    files = scan_files()
    labels = ("case7_t1.nii.gz", nifti(from_internal(expected_labels(), "brats2018").astype(np.float32)), "application/gzip")
    upload(app, [files[0], labels, files[2], files[3]])
    assert any(i.value.startswith("case7_t1.nii.gz: holds only label values") for i in app.info)
    assert any("Still needed: T1" in i.value for i in app.info) and not errors(app)


def test_bad_ground_truth_is_refused_and_the_result_kept(app):
    run_case(app)
    app.file_uploader(key="truth_upload").set_value(("small_seg.nii.gz", nifti(np.zeros((10, 10, 10), np.uint8)), "application/gzip")).run()
    assert any("small_seg.nii.gz: shape (10, 10, 10) differs" in e for e in errors(app))
    bad = from_internal(expected_labels(), "brats2018")
    bad[0, 0, 0] = 7
    app.file_uploader(key="truth_upload").set_value(("odd_seg.nii.gz", nifti(bad), "application/gzip")).run()
    assert any("unexpected label values [7]" in e for e in errors(app))
    assert metrics(app)["WT volume"] == "4.10 mL" and not app.exception


def test_a_crash_during_inference_is_an_error_message_not_a_traceback(app, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure")

    upload(app, scan_files())
    monkeypatch.setattr(pipeline, "segment_case", broken)
    app.button(key="run").click().run()
    assert not app.exception
    assert any("Segmentation failed unexpectedly (RuntimeError: simulated failure)" in e for e in errors(app))
    assert any("Ready: case7" in s.value for s in app.success)  # the uploads are kept


def test_a_corrupt_checkpoint_cannot_be_loaded(monkeypatch, tmp_path, models_dir):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "broken.pt").write_bytes(b"not a checkpoint at all")
    monkeypatch.setenv("BRAINSEG_MODELS", str(extra))  # folders beyond models/ come from the environment
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    options = at.selectbox(key="checkpoint").options
    by_name = {Path(o).name: o for o in options}
    assert Path(options[0]).name == "brainseg_default.pt" and set(by_name) == {"brainseg_default.pt", "second.pt", "broken.pt"}
    at.selectbox(key="checkpoint").set_value(by_name["broken.pt"]).run()
    assert not at.exception
    said = errors(at)
    assert len(said) == 1 and said[0].startswith("Reading the checkpoint: broken.pt: not a") and "checkpoint" in said[0], said
    assert at.button(key="run").disabled  # nothing to run with
    assert not any(c.value.startswith("Loaded: ") for c in at.sidebar.caption)  # no other checkpoint's card either
    at.selectbox(key="checkpoint").set_value(by_name["second.pt"]).run()
    assert not errors(at)
    assert any(c.value.startswith("Loaded: ") and c.value.endswith("second.pt") for c in at.sidebar.caption)
    assert "U-Net features [4, 8]" in at.sidebar.expander[0].markdown[0].value  # the model card


def test_sample_case_button(app):
    app.button(key="sample").click().run()
    assert not app.exception and not errors(app)
    assert any("Ready: BraTS-GLI-00001-000, 240x240x155 voxels of 1x1x1 mm" in s.value for s in app.success)
    assert [s.value for s in app.selectbox if s.key.startswith("role/sample/")] == ["t1ce", "t1", "flair", "t2"]


def test_settings_default_to_the_chosen_checkpoints_own(app, models_dir):
    from brainseg.config import BrainsegConfig, InferenceConfig, ModelConfig, PostprocessConfig, PreprocessConfig
    from brainseg.model import UNet3D

    config = BrainsegConfig(
        model=ModelConfig(features=(4, 8)),
        preprocess=PreprocessConfig(bias_correction=("t1", "t1ce")),
        inference=InferenceConfig(patch_size=(16, 16, 16), overlap=0.6, tta=True),
        postprocess=PostprocessConfig(min_component_voxels=250, max_component_distance_mm=0.0),
    )
    checkpoint.save_checkpoint(models_dir / "tuned.pt", UNet3D(config.model), config)
    app.run()

    def shown():
        return (app.slider(key="stride").value, app.checkbox(key="tta").value, app.number_input(key="min_component").value,
                app.number_input(key="max_distance").value, app.multiselect(key="bias_correct").value)

    # the tiny fixtures were saved with the config defaults: overlap 0.5, no TTA, nothing small removed, 10 mm, no N4
    assert shown() == (0.5, False, 0, 10.0, [])
    choice = next(o for o in app.selectbox(key="checkpoint").options if o.endswith("tuned.pt"))
    app.selectbox(key="checkpoint").set_value(choice).run()
    assert not app.exception and not errors(app)
    assert shown() == (0.4, True, 250, 0.0, ["t1", "t1ce"])
    # a choice the user makes afterwards stands until another checkpoint is chosen
    app.number_input(key="min_component").set_value(30).run()
    assert app.number_input(key="min_component").value == 30


def test_download_contents_match_the_result_in_the_chosen_convention(app, monkeypatch):
    import json

    offered = _record_downloads(monkeypatch)
    run_case(app)
    app.selectbox(key="convention").set_value("brats2023").run()
    assert not app.exception and not errors(app)
    payload = {key: data() if callable(data) else data for key, data in offered.items()}

    seg = nib.Nifti1Image.from_bytes(gzip.decompress(payload["dl_nifti"]))
    np.testing.assert_array_equal(np.asarray(seg.dataobj), from_internal(expected_labels(), "brats2023"))
    np.testing.assert_allclose(seg.affine, AFFINE)
    summary = json.loads(payload["dl_json"])
    assert summary["label_convention"] == "brats2023"
    assert summary["volumes"]["labels"]["3"]["voxels"] == 64 and "4" not in summary["volumes"]["labels"]
    assert "enhancing tumour (label 3)" in payload["dl_csv"]
    probabilities = nib.Nifti1Image.from_bytes(gzip.decompress(payload["dl_probabilities"]))
    wt = np.asarray(probabilities.dataobj)[..., 0] > 0.5
    assert probabilities.shape == (*SHAPE, 3) and wt.sum() == 512 and wt[WT_BOX].all()
    assert payload["dl_png"][:8] == b"\x89PNG\r\n\x1a\n"
    # 3D Slicer's segmentation: the same voxels in the chosen values, named segments that read back by name
    slicer = read_volume(payload["dl_slicer"], "case7.seg.nrrd")
    np.testing.assert_array_equal(slicer[0], from_internal(expected_labels(), "brats2023"))
    np.testing.assert_allclose(slicer[1], AFFINE, atol=1e-6)
    assert b"Segment2_Name:=enhancing tumour" in payload["dl_slicer"] and b"Segment2_LabelValue:=3" in payload["dl_slicer"]


def _record_downloads(monkeypatch) -> dict:
    """The data each download button was last given (the bytes a click would deliver)."""
    from streamlit.delta_generator import DeltaGenerator

    offered = {}
    real = DeltaGenerator.download_button

    def record(self, label, data, *args, **kwargs):
        offered[kwargs["key"]] = data
        return real(self, label, data, *args, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "download_button", record)
    return offered


def test_summary_download_holds_the_scores_on_screen_and_names_their_reference(app, monkeypatch):
    import json

    offered = _record_downloads(monkeypatch)
    truth = ("case7_seg.nii.gz", nifti(from_internal(expected_labels(), "brats2018")), "application/gzip")
    upload(app, scan_files() + [truth])
    app.button(key="run").click().run()
    summary = json.loads(offered["dl_json"])  # the render right after Run
    assert {r: v["dice"] for r, v in summary["evaluation"].items()} == {"WT": 1.0, "TC": 1.0, "ET": 1.0}
    assert summary["reference"] == "case7_seg.nii.gz"
    no_et = expected_labels()
    no_et[no_et == ET] = NCR
    app.file_uploader(key="truth_upload").set_value(("other_seg.nii.gz", nifti(from_internal(no_et, "brats2018")), "application/gzip")).run()
    summary = json.loads(offered["dl_json"])
    assert table(app, "hd95_mm")["dice"].tolist()[2] == summary["evaluation"]["ET"]["dice"] == 0.0
    # lesion-wise: the predicted ET touches no reference ET, so it is one false positive, scored 0 and 374 mm
    assert table(app, "hd95_mm")["lesions"].tolist()[2] == "0 / 0 / 1"
    assert summary["lesion_wise"]["regions"]["ET"]["dice"] == 0.0 and summary["lesion_wise"]["regions"]["ET"]["hd95"] == 374.0
    assert summary["reference"] == "other_seg.nii.gz"
    assert summary["settings"]["inference"]["patch_size"] == [16, 16, 16] and summary["checkpoint"].endswith("brainseg_default.pt")
    assert len(summary["checkpoint_sha256"]) == 64


def test_scans_named_for_two_cases_are_flagged(app):
    files = scan_files()
    files[3] = ("case9_t2.nii.gz", files[3][1], files[3][2])
    upload(app, files)
    assert any("name 2 cases (case7, case9)" in w.value for w in app.warning)
    upload(app, scan_files())
    assert not any("cases (" in w.value for w in app.warning)


def test_the_result_says_its_settings_and_when_the_sidebar_no_longer_matches(app):
    run_case(app)
    used = next(c.value for c in app.caption if c.value.startswith("Settings used: "))
    assert used.startswith("Settings used: window 16x16x16, overlap 0.5, TTA off, threshold 0.5")
    assert not any("changed since this result" in i.value for i in app.info)
    app.number_input(key="min_component").set_value(50).run()
    assert any("settings in the sidebar changed since this result" in i.value for i in app.info)
    app.selectbox(key="patch").set_value("whole brain").run()
    app.button(key="run").click().run()
    assert app.session_state["result"].segmentation.windows == 1  # the window is cut to the brain: one covers it
    assert not any("changed since this result" in i.value for i in app.info)


def test_one_checkpoint_is_not_compared_with_itself(monkeypatch, models_dir):
    (models_dir / "second.pt").unlink()
    real = pipeline.segment_case
    monkeypatch.setattr(pipeline, "segment_case", lambda case, loaded, *a, **k: real(case, loaded, *a, predictor=fake_predictor(("flair", "t2", "t1ce")), **k))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    run_case(at)
    assert not [b for b in at.button if b.key == "run_compare"]
    assert any("Only one checkpoint is available" in c.value for c in at.caption)


def test_a_segmentation_dropped_after_the_run_is_scored_and_a_misfit_one_is_named_before(app):
    scans = scan_files()  # one set of bytes: gzip stamps the time, and the same scans are known by their bytes
    upload(app, scans)
    app.button(key="run").click().run()
    assert not [d for d in app.dataframe if "hd95_mm" in d.value.columns]
    truth = ("case7_seg.nii.gz", nifti(from_internal(expected_labels(), "brats2018")), "application/gzip")
    upload(app, scans + [truth])
    assert not any("changed since this result" in i.value for i in app.info)
    assert table(app, "hd95_mm")["dice"].tolist() == [1.0, 1.0, 1.0]
    wrong = ("case7_seg.nii.gz", nifti(np.zeros((40, 40, 30), np.uint8)), "application/gzip")
    upload(app, scans + [wrong])
    said = errors(app)
    assert len(said) == 1 and said[0].startswith("Ground truth: case7_seg.nii.gz: shape (40, 40, 30) differs"), said
    assert any("Ready: case7" in s.value for s in app.success) and not app.button(key="run").disabled


def test_a_file_read_as_its_content_says_when_its_name_says_otherwise(app):
    truth = ("case7_reference.nii.gz", nifti(from_internal(expected_labels(), "brats2018")), "application/gzip")
    flair_as_seg = ("case7_seg.nii.gz", scan_files()[0][1], "application/gzip")
    upload(app, scan_files()[1:] + [truth, flair_as_seg])
    roles = {s.key: s for s in app.selectbox if s.key.startswith("role/")}
    reference = next(r for r in roles.values() if r.options == ["ground truth", "ignore"])  # the label map: truth or nothing
    assert reference.value == "ignore"  # its name does not say segmentation: the user says what it is
    notes = [i.value for i in app.info]
    assert any(n.startswith("case7_reference.nii.gz: holds only label values") for n in notes)
    assert any(n.startswith("case7_seg.nii.gz: named like a segmentation, but holds an MRI scan") for n in notes)
    reference.set_value("truth").run()
    role = next(s for s in app.selectbox if s.key.startswith("role/") and s.value == "ignore" and "FLAIR" in s.options)
    role.set_value("flair").run()
    assert any("Ready: case7" in s.value for s in app.success) and not errors(app)
    app.button(key="run").click().run()
    assert table(app, "hd95_mm")["dice"].tolist() == [1.0, 1.0, 1.0]


def test_a_four_channel_image_is_one_case(app):
    data = images()
    stacked = np.stack([data[m] for m in ("flair", "t1", "t1ce", "t2")], axis=-1)
    upload(app, [("case7.nii.gz", nifti(stacked), "application/gzip")])
    assert any(i.value.startswith("case7.nii.gz: a 4-channel image") for i in app.info)
    assert any("Ready: " in s.value for s in app.success) and not errors(app)
    app.button(key="run").click().run()
    assert not errors(app) and metrics(app) == {"WT volume": "4.10 mL", "TC volume": "1.73 mL", "ET volume": "0.51 mL"}
    upload(app, [("case7.nii.gz", nifti(stacked), "application/gzip")] + scan_files())
    assert any("either one 4-channel image or four scans" in e for e in errors(app))


def test_a_misnamed_or_broken_file_keeps_the_error_of_what_it_holds(app):
    mask = expected_labels().astype(np.uint8) * 0
    mask[WT_BOX] = 255  # a 0/255 mask named as a segmentation: no scan, and no BraTS label values
    data = images()
    empty_channel = np.stack([data["flair"], data["t1"], np.zeros_like(data["t1ce"]), data["t2"]], axis=-1)
    upload(app, [("case7_seg.nii.gz", nifti(mask), "application/gzip"), ("case8.nii.gz", nifti(empty_channel), "application/gzip")])
    said = errors(app)
    assert any(e.startswith("case7_seg.nii.gz: unexpected label values [255]") for e in said), said
    assert any(e.startswith("case8.nii.gz channel 2 (t1ce): every voxel has the value 0") for e in said), said


def _case_2023_files() -> list[tuple[str, bytes, str]]:
    """Another patient with BraTS 2023 names: the same tumour, other bytes (FLAIR one brighter)."""
    data = images()
    data["flair"] = np.where(data["flair"] > 0, data["flair"] + 1, 0).astype(np.float32)
    suffixes = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w"}
    return [(f"BraTS-GLI-00009-000-{suffixes[m]}.nii.gz", nifti(data[m]), "application/gzip") for m in suffixes]


def test_a_second_case_in_the_same_tab_gets_its_own_label_values_and_no_earlier_reference(app, monkeypatch):
    import json

    offered = _record_downloads(monkeypatch)
    run_case(app)
    app.file_uploader(key="truth_upload").set_value(("case7_seg.nii.gz", nifti(from_internal(expected_labels(), "brats2018")), "application/gzip")).run()
    assert table(app, "hd95_mm")["dice"].tolist() == [1.0, 1.0, 1.0]
    app.selectbox(key="convention").set_value("brats2023").run()
    app.button(key="run").click().run()  # the same scans again: their reference and the chosen values still apply
    assert table(app, "hd95_mm")["dice"].tolist() == [1.0, 1.0, 1.0]
    assert app.selectbox(key="convention").value == "brats2023"
    upload(app, _case_2023_files())
    app.button(key="run").click().run()
    assert not app.exception and not errors(app)
    assert app.selectbox(key="convention").value == "brats2023"  # the new case's own values
    assert table(app, "kind")["structure"].tolist()[-1] == "enhancing tumour (label 3)"
    assert not any("hd95_mm" in d.value.columns for d in app.dataframe)  # not scored against case 7's reference
    assert any("case7_seg.nii.gz in the box above was the reference of an earlier case" in i.value for i in app.info)
    summary = json.loads(offered["dl_json"])
    assert summary["label_convention"] == "brats2023" and "evaluation" not in summary


def _scores_shown(at) -> bool:
    return any("hd95_mm" in d.value.columns for d in at.dataframe)


def test_a_reference_taken_away_is_no_longer_scored(app):
    """Removed from the reference box, or a reference dropped with the scans set to 'ignore': its scores go."""
    truth = ("case7_seg.nii.gz", nifti(from_internal(expected_labels(), "brats2018")), "application/gzip")
    run_case(app)
    app.file_uploader(key="truth_upload").set_value(truth).run()
    assert _scores_shown(app)
    app.file_uploader(key="truth_upload").set_value(None).run()
    assert not _scores_shown(app) and app.session_state["result"].truth is None and not app.exception
    upload(app, scan_files() + [truth])
    app.button(key="run").click().run()
    assert _scores_shown(app)
    role = next(s.key for s in app.selectbox if s.key.startswith("role/") and s.options == ["ground truth", "ignore"])
    app.selectbox(key=role).set_value("ignore").run()
    assert not _scores_shown(app) and not app.exception
    assert metrics(app)["WT volume"] == "4.10 mL"  # the result itself stays


def test_two_references_are_refused_naming_both(app):
    truth = nifti(from_internal(expected_labels(), "brats2018"))
    upload(app, scan_files() + [("case7_seg.nii.gz", truth, "application/gzip"), ("case7_seg_v2.nii.gz", truth, "application/gzip")])
    assert errors(app) == ["case7_seg.nii.gz, case7_seg_v2.nii.gz are all set to ground truth; give one file that role "
                           "under 'Used as' (set the others to 'ignore')."]
    assert app.button(key="run").disabled


def test_after_a_refused_reference_the_label_choice_applies_to_the_one_shown(app):
    run_case(app)
    msd = from_internal(expected_labels(), "msd")
    app.file_uploader(key="truth_upload").set_value(("case7_msd.nii.gz", nifti(msd), "application/gzip")).run()
    assert table(app, "hd95_mm")["dice"].tolist()[1] < 0.8  # guessed as BraTS 2023+
    bad = np.where(expected_labels() > 0, 7, 0).astype(np.uint8)
    app.file_uploader(key="truth_upload").set_value(("bad_seg.nii.gz", nifti(bad), "application/gzip")).run()
    assert any(e.startswith("Reading the ground truth: bad_seg.nii.gz") for e in errors(app))
    app.selectbox(key="truth_convention").set_value("msd").run()
    assert table(app, "hd95_mm")["dice"].tolist() == [1.0, 1.0, 1.0]
    # bad_seg.nii.gz is still in the box: still refused, and the scores say whose they are
    assert [e for e in errors(app) if e.startswith("Reading the ground truth: bad_seg.nii.gz")]
    assert ("The scores below compare with case7_msd.nii.gz, read before; bad_seg.nii.gz, given since, could not be "
            "read.") in [w.value for w in app.warning]


def test_a_refused_reference_stays_said_until_it_is_removed(app):
    """A broken re-export under the same name: the refusal and whose scores are shown survive any rerun; removing
    the file from the box takes the earlier scores too."""
    run_case(app)
    good = nifti(from_internal(expected_labels(), "brats2018"))
    app.file_uploader(key="truth_upload").set_value(("case7_seg.nii.gz", good, "application/gzip")).run()
    assert table(app, "hd95_mm")["dice"].tolist() == [1.0, 1.0, 1.0] and not errors(app)
    app.file_uploader(key="truth_upload").set_value(("case7_seg.nii.gz", good[: len(good) // 2], "application/gzip")).run()
    slice_slider(app).set_value(slice_slider(app).value + 1).run()  # any rerun
    assert [e for e in errors(app) if e.startswith("Reading the ground truth: case7_seg.nii.gz")]
    assert ("The scores below compare with the earlier case7_seg.nii.gz, read before; case7_seg.nii.gz, given since, "
            "could not be read.") in [w.value for w in app.warning]
    app.file_uploader(key="truth_upload").set_value(None).run()
    assert not errors(app) and not [t for t in app.dataframe if "hd95_mm" in t.value]


def test_a_refused_reference_dropped_with_the_scans_stays_said(app):
    both = from_internal(expected_labels(), "brats2023")
    both[0:3, 0:3, 0:3] = 4  # 3 and 4 together: no guess reads it
    upload(app, scan_files() + [("case7_seg.nii.gz", nifti(both), "application/gzip")])
    app.button(key="run").click().run()
    slice_slider(app).set_value(slice_slider(app).value + 1).run()
    assert any("case7_seg.nii.gz" in e and "holds both labels 3 and 4" in e for e in errors(app))
    upload(app, scan_files())  # taken out of the drop zone: nothing left to say
    assert not errors(app) and metrics(app)["WT volume"] == "4.10 mL"


def test_a_result_whose_scans_no_longer_make_a_case_says_so(app):
    run_case(app)
    upload(app, scan_files()[:3])
    assert "The files above no longer make a complete case; this result still shows the case it was made from." in [i.value for i in app.info]
    assert metrics(app)["WT volume"] == "4.10 mL"


def test_a_four_channel_image_beside_single_scans_is_named(app):
    data = images()
    stacked = np.stack([data[m] for m in ("flair", "t1", "t1ce", "t2")], axis=-1)
    upload(app, scan_files()[:1] + [("case7_all.nii.gz", nifti(stacked), "application/gzip")])
    assert errors(app) == ["case7_all.nii.gz, case7_flair.nii.gz: give either one 4-channel image or four scans; set the "
                           "others to 'ignore' under 'Used as'."]


def test_a_checkpoint_file_replaced_after_the_run_is_said_to_hold_other_weights(app, models_dir):
    """Same name, other weights (a training run saving over it): the result says it came from the old ones."""
    from brainseg.config import BrainsegConfig, InferenceConfig, ModelConfig
    from brainseg.model import UNet3D

    run_case(app)
    torch.manual_seed(1)
    config = BrainsegConfig(model=ModelConfig(features=(4, 8)), inference=InferenceConfig(patch_size=(16, 16, 16)))
    checkpoint.save_checkpoint(models_dir / "brainseg_default.pt", UNet3D(config.model), config)
    app.run()
    assert any("The checkpoint file was replaced since this result" in i.value for i in app.info)
    assert metrics(app)["WT volume"] == "4.10 mL"


def test_one_scan_given_as_two_modalities_is_refused_naming_both(app):
    files = scan_files()
    upload(app, files[:3] + [("case7_t2.nii.gz", files[0][1], "application/gzip")])  # FLAIR's bytes again, as T2
    assert errors(app) == ["Combining the scans: case7_flair.nii.gz (FLAIR) and case7_t2.nii.gz (T2) hold the same image; "
                           "expected four different scans: FLAIR, T1, T1ce, T2"]
    assert app.button(key="run").disabled


def test_a_blank_scan_is_called_blank_not_a_segmentation(app):
    blank = ("case7_t2.nii.gz", nifti(np.zeros(images()["t2"].shape, np.float32)), "application/gzip")
    upload(app, scan_files()[:3] + [blank])
    assert errors(app) == ["case7_t2.nii.gz: every voxel has the value 0; expected an MRI scan with contrast"]
    assert not any("holds only label values" in i.value for i in app.info)


def test_files_of_one_name_set_to_one_role_are_told_apart_by_row(app):
    files = scan_files()
    other_t2 = nifti(images()["t2"] + 1)
    upload(app, files + [(files[3][0], other_t2, "application/gzip")])
    assert errors(app) == ["case7_t2.nii.gz (row 4), case7_t2.nii.gz (row 5) are all set to T2; give each modality one "
                           "file under 'Used as' (set the others to 'ignore')."]


def test_a_four_channel_image_is_named_by_its_file_and_raises_no_mixed_case_warning(app):
    data = images()
    stacked = np.stack([data[m] for m in ("flair", "t1", "t1ce", "t2")], axis=-1)
    upload(app, [("BRATS_001.nii.gz", nifti(stacked), "application/gzip")])
    assert any(s.value.startswith("Ready: BRATS_001, ") for s in app.success)
    assert not any("file names name" in w.value for w in app.warning)


def test_scans_whose_header_records_no_orientation_are_warned_about(app):
    def unoriented(array):
        image = nib.Nifti1Image(array, AFFINE)
        image.set_qform(None, code=0)
        image.set_sform(None, code=0)
        return gzip.compress(image.to_bytes(), mtime=0)

    upload(app, [(f"case7_{m}.nii.gz", unoriented(v), "application/gzip") for m, v in images().items()])
    assert any(w.value.startswith("case7: the header records no orientation (qform and sform codes both 0;")
               for w in app.warning)
    upload(app, scan_files())  # the same scans with their orientation: nothing to warn about
    assert not any("records no orientation" in w.value for w in app.warning)


def test_a_new_label_choice_reaches_a_dropped_reference_while_another_cases_file_is_in_the_box(app):
    run_case(app)
    app.file_uploader(key="truth_upload").set_value(("case7_seg.nii.gz", nifti(from_internal(expected_labels(), "brats2018")), "application/gzip")).run()
    post = from_internal(expected_labels(), "brats2023")
    post[0:3, 0:3, 0:3] = 4  # BraTS 2024 resection cavity: no guess reads 3 and 4 together
    upload(app, _case_2023_files() + [("seg_of_00009.nii.gz", nifti(post), "application/gzip")])  # a name without its labels
    app.button(key="run").click().run()
    assert any("holds both labels 3 and 4" in e for e in errors(app))
    app.selectbox(key="truth_convention").set_value("brats2024").run()
    assert table(app, "hd95_mm")["dice"].tolist() == [1.0, 1.0, 1.0] and not errors(app)


def test_a_label_choice_the_shown_reference_cannot_take_stays_said_while_chosen(app):
    run_case(app)
    app.file_uploader(key="truth_upload").set_value(("case7_seg.nii.gz", nifti(from_internal(expected_labels(), "brats2018")), "application/gzip")).run()
    app.selectbox(key="truth_convention").set_value("msd").run()  # a 4 is no Decathlon label
    slice_slider(app).set_value(slice_slider(app).value + 1).run()
    said = [e for e in errors(app) if e.startswith("Reading the ground truth: case7_seg.nii.gz")]
    assert len(said) == 1 and said[0].endswith(". The scores shown read it as before.")
    assert table(app, "hd95_mm")["dice"].tolist() == [1.0, 1.0, 1.0]
    assert any(c.value.startswith("Reference: case7_seg.nii.gz (BraTS 2018-2021") for c in app.caption)
    app.selectbox(key="truth_convention").set_value("auto").run()
    assert not errors(app)


def test_an_empty_reference_named_for_no_modality_is_offered_as_ground_truth(app):
    empty = ("case7_ground_truth.nii.gz", nifti(np.zeros(expected_labels().shape, np.uint8)), "application/gzip")
    upload(app, scan_files() + [empty])
    assert not errors(app) and any(s.value.startswith("Ready: case7") for s in app.success)
    assert app.selectbox(key=next(s.key for s in app.selectbox if s.label == "Role of case7_ground_truth.nii.gz")).value == "truth"


def test_a_result_from_before_an_app_update_is_dropped_with_a_note(app):
    from dataclasses import fields
    from types import SimpleNamespace

    run_case(app)
    result = app.session_state["result"]
    # the shape results had before RESULT_FORMAT: the same attributes, no format
    app.session_state["result"] = SimpleNamespace(**{f.name: getattr(result, f.name) for f in fields(result) if f.name != "format"})
    app.run()
    assert not app.exception
    assert "The app was updated since the last result was made; run the segmentation again to see it." in [i.value for i in app.info]


def test_a_label_choice_the_refused_file_cannot_take_keeps_it_refused_and_rereads_the_shown_reference(app):
    upload(app, scan_files() + [("case7_seg.nii.gz", nifti(from_internal(expected_labels(), "brats2018")), "application/gzip")])
    app.button(key="run").click().run()
    both = from_internal(expected_labels(), "brats2018")
    both[0:3, 0:3, 0:3] = 3  # 3 and 4 together: refused by the guess, and by BraTS 2018-2021's values too
    app.file_uploader(key="truth_upload").set_value(("other_seg.nii.gz", nifti(both), "application/gzip")).run()
    assert any("other_seg.nii.gz" in e and "holds both labels 3 and 4" in e for e in errors(app))
    app.selectbox(key="truth_convention").set_value("brats2018").run()
    said = [e for e in errors(app) if "other_seg.nii.gz" in e]
    assert len(said) == 1 and "unexpected label values [3]" in said[0]  # refused again, for the new choice's reason
    assert table(app, "hd95_mm")["dice"].tolist() == [1.0, 1.0, 1.0]  # the dropped reference, re-read as chosen
    assert any(c.value.startswith("Reference: case7_seg.nii.gz (BraTS 2018-2021") for c in app.caption)


def test_a_checkpoint_unreadable_at_first_brings_its_own_settings_once_read(monkeypatch, tmp_path):
    """A checkpoint still being copied when the page opened: the sidebar fell back to generic settings and kept
    them after the file became readable, so the app segmented otherwise than `brainseg segment`."""
    folder = tmp_path / "models"
    folder.mkdir()
    path = folder / "brainseg_default.pt"
    path.write_bytes(b"half-copied checkpoint")
    monkeypatch.setattr(checkpoint, "DEFAULT_DIR", folder)
    monkeypatch.delenv("BRAINSEG_MODELS", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert at.button(key="run").disabled
    config = BrainsegConfig(model=ModelConfig(features=(4, 8)), inference=InferenceConfig(patch_size=(16, 16, 16), overlap=0.25),
                            postprocess=PostprocessConfig(min_component_voxels=123, max_component_distance_mm=0.0))
    save_checkpoint(path, UNet3D(config.model), config, {})
    later = path.stat().st_mtime + 5  # a copy finishing later; some file systems keep whole seconds
    os.utime(path, (later, later))
    at.run()
    assert not at.exception
    shown = (at.number_input(key="min_component").value, at.number_input(key="max_distance").value, at.slider(key="stride").value)
    assert shown == (123, 0.0, 0.75)


def test_a_file_set_to_ignore_does_not_choose_the_label_values(app):
    """A BraTS 2023 name among the dropped files, set to ignore: the scans used are BraTS 2018 names, so ET stays 4."""
    upload(app, scan_files() + [("BraTS-GLI-00002-000-t2f.nii.gz", nifti(images()["flair"] * 1.1), "application/gzip")])
    role = next(s for s in app.selectbox if s.key and s.key.startswith("role/") and "BraTS-GLI" in s.label)
    role.set_value("ignore").run()
    app.button(key="run").click().run()
    assert not errors(app)
    assert app.selectbox(key="convention").value == "brats2018"


def test_a_slicer_segmentation_cropped_to_its_segments_is_the_ground_truth(app, tmp_path):
    """3D Slicer saves a segmentation cropped to its segments' extent (.seg.nrrd): uploaded as the reference, or
    dropped with the scans, it lies on the scans' grid with background around it."""
    import SimpleITK as sitk

    truth = from_internal(expected_labels(), "brats2018")
    full = itk_bytes(truth, "full.nrrd", tmp_path)
    image = sitk.ReadImage(str(tmp_path / "full.nrrd"))
    crop = sitk.RegionOfInterest(image, [8, 8, 8], [12, 14, 10])  # the whole tumour box, as x, y, z
    crop.SetMetaData("Segment0_ID", "Segment_1")
    sitk.WriteImage(crop, str(tmp_path / "Segmentation.seg.nrrd"), True)
    cropped = (tmp_path / "Segmentation.seg.nrrd").read_bytes()
    assert len(cropped) < len(full) and sitk.ReadImage(str(tmp_path / "Segmentation.seg.nrrd")).GetSize() == (8, 8, 8)
    run_case(app)
    dropped = ("Segmentation.seg.nrrd", cropped, "application/octet-stream")
    app.file_uploader(key="truth_upload").set_value(dropped).run()
    assert not app.exception and not errors(app)
    assert table(app, "hd95_mm")["dice"].tolist() == [1.0, 1.0, 1.0]
    upload(app, scan_files() + [dropped])
    assert not errors(app) and metrics(app)["WT volume"] == "4.10 mL"


def test_a_slicer_segmentation_read_by_its_segment_names_says_so_instead_of_a_convention(app, tmp_path):
    """Painted edema first, then enhancing tumour, then necrosis (values 1, 2, 3): scored by the names, and the
    caption does not name a convention the file's values do not follow."""
    import SimpleITK as sitk

    internal = expected_labels()
    painted = np.zeros_like(internal)
    painted[internal == ED], painted[internal == ET], painted[internal == NCR] = 1, 2, 3
    itk_bytes(painted, "painted.nrrd", tmp_path)
    image = sitk.ReadImage(str(tmp_path / "painted.nrrd"))
    for i, name in enumerate(("Edema", "Enhancing tumor", "Necrosis")):
        image.SetMetaData(f"Segment{i}_Name", name)
        image.SetMetaData(f"Segment{i}_LabelValue", str(i + 1))
    sitk.WriteImage(image, str(tmp_path / "Segmentation.seg.nrrd"), True)
    run_case(app)
    upload = ("Segmentation.seg.nrrd", (tmp_path / "Segmentation.seg.nrrd").read_bytes(), "application/octet-stream")
    app.file_uploader(key="truth_upload").set_value(upload).run()
    assert not app.exception and not errors(app)
    assert table(app, "hd95_mm")["dice"].tolist() == [1.0, 1.0, 1.0]
    captions = [c.value for c in app.caption if c.value.startswith("Reference: Segmentation.seg.nrrd")]
    assert captions and "each 3D Slicer segment read as the class its name says" in captions[0]
    assert "BraTS" not in captions[0]
