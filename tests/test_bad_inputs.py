"""The catalogue of bad inputs (issue 6): each is refused with a precise message and no output.

Every entry builds a case in a temporary folder, breaks one thing, and names the file the message must
mention and the words that say what is wrong. The library must raise ``InputError``; ``brainseg
segment`` must exit 2 with exactly one ``error: ...`` line on stderr and write nothing. The model
is the tiny checkpoint of conftest.py.
"""
from __future__ import annotations

import gzip
import io
import logging
import shutil
import struct
import subprocess
import sys
import tracemalloc
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest

from brainseg import MODALITIES
from brainseg.cli import main
from brainseg.decode import MAX_BYTES
from brainseg.errors import InputError
from brainseg.io import load_case, load_files

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_CASE = DATA / "brats" / "Brats18_2013_11_1"
needs_data = pytest.mark.skipif(not REAL_CASE.is_dir(), reason="needs ../shared/data (real BraTS cases)")

SHAPE = (16, 18, 14)
AFFINE = np.array([[-1.2, 0.0, 0.0, 90.0], [0.0, -1.2, 0.0, 110.0], [0.0, 0.0, 1.5, -60.0], [0.0, 0.0, 0.0, 1.0]])
QUIET_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


# ---------------------------------------------------------------- building blocks


def scan(seed: int, shape=SHAPE) -> np.ndarray:
    """A synthetic MRI volume: positive noisy intensities inside a box, zero background."""
    rng = np.random.default_rng(seed)
    array = np.zeros(shape, dtype=np.float32)
    inner = tuple(slice(2, max(s - 2, 3)) for s in shape[:3])
    array[inner] = rng.normal(400.0, 90.0, array[inner].shape).clip(1.0, None)
    return array


def save(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def good_case(folder: Path, suffix: str = ".nii.gz") -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return {m: save(folder / f"case_{m}{suffix}", scan(i)) for i, m in enumerate(MODALITIES)}


def nifti_bytes(array: np.ndarray, change: Callable[[nib.Nifti1Header], None]) -> bytes:
    """Bytes of a .nii holding ``array`` whose header ``change`` then edits (to lie about the data)."""
    raw = nib.Nifti1Image(array, AFFINE).to_bytes()
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw[:348]))
    change(header)
    return header.binaryblock + raw[348:]


def png_bytes(width: int = 48, height: int = 48) -> bytes:
    """A small valid RGB PNG (noise), built by hand so the test needs no imaging library."""
    rng = np.random.default_rng(7)
    rows = b"".join(b"\x00" + rng.integers(0, 256, width * 3, dtype=np.uint8).tobytes() for _ in range(height))

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def gzip_bomb(inflated: int = 64 * 1024**2) -> bytes:
    """A .nii.gz whose header describes a 4x4x4 image but whose stream inflates to ``inflated`` bytes."""
    head = nib.Nifti1Image(scan(1, (4, 4, 4)), AFFINE).to_bytes()
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [compressor.compress(head)]
    block = bytes(1024**2)
    for _ in range(inflated // len(block)):
        parts.append(compressor.compress(block))
    parts.append(compressor.flush())
    return b"".join(parts)


def replace(folder: Path, modality: str, data: bytes | None = None, name: str | None = None) -> list[Path]:
    """A good case whose ``modality`` file is replaced by ``data`` and/or renamed to ``name``."""
    paths = good_case(folder)
    if name is not None:
        paths[modality] = paths[modality].rename(folder / name)
    if data is not None:
        paths[modality].write_bytes(data)
    return list(paths.values())


def replace_array(folder: Path, modality: str, array: np.ndarray, affine: np.ndarray = AFFINE) -> list[Path]:
    paths = good_case(folder)
    save(paths[modality], array, affine)
    return list(paths.values())


def sparse_file(path: Path, size: int) -> Path:
    """A file of ``size`` bytes that takes no disk space."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


# ---------------------------------------------------------------- the catalogue


@dataclass
class Bad:
    """One bad input: ``build(folder)`` returns the CLI inputs; the message must name ``culprit``."""

    id: str
    build: Callable[[Path], list[Path]]
    culprit: str
    words: tuple[str, ...]
    real: bool = False


def _truncated_gz(d):
    paths = good_case(d)
    data = paths["flair"].read_bytes()
    paths["flair"].write_bytes(data[: len(data) // 2])
    return list(paths.values())


def _truncated_nii(d):
    paths = good_case(d, ".nii")
    data = paths["t1"].read_bytes()
    paths["t1"].write_bytes(data[:-1000])
    return list(paths.values())


def _two_files_one_name(d):
    paths = good_case(d)
    extra = save(d / "other_flair.nii", scan(9))
    return list(paths.values()) + [extra]


def _missing(d):
    paths = good_case(d)
    paths.pop("t2").unlink()
    return list(paths.values())


def _affine_shift(d):
    shifted = AFFINE.copy()
    shifted[:3, 3] += (0.0, 2.5, 0.0)
    return replace_array(d, "t2", scan(3), shifted)


def _with_values(modality, seed, value, count=5):
    def build(d):
        array = scan(seed)
        array.flat[np.random.default_rng(seed).choice(array.size, count, replace=False)] = value
        return replace_array(d, modality, array)

    return build


def _scaled_to_inf(d):
    array = (scan(0) / 10).astype(np.int16)

    def change(h):
        h["scl_slope"] = 1e38

    return replace(d, "flair", gzip.compress(nifti_bytes(array, change)))


def _claims(shape, gz):
    def change(h):
        h.set_data_shape(shape)

    def build(d):
        data = nifti_bytes(scan(1, (4, 4, 4)), change)
        return replace(d, "t1", gzip.compress(data) if gz else data, "case_t1.nii.gz" if gz else "case_t1.nii")

    return build


def _negative_dim(d):
    def change(h):
        h["dim"][2] = -18

    return replace(d, "t1ce", nifti_bytes(scan(2), change), "case_t1ce.nii")


def _singular_affine(d):
    def change(h):
        h.set_qform(None, 0)
        h.set_sform(np.array([[1.0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 0], [0, 0, 0, 1.0]]), 1)  # two axes along x

    return replace(d, "t2", nifti_bytes(scan(3), change), "case_t2.nii")


def _voxel_size(sizes, units="mm", shape=SHAPE):
    def make(d):
        def change(h):
            h.set_qform(None, 0)
            h.set_sform(np.diag([*sizes, 1.0]), 1)
            h.set_xyzt_units(units)

        return replace(d, "t2", nifti_bytes(scan(3, shape), change), "case_t2.nii")

    return make


def _rgb(d):
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = 200
    paths = good_case(d)
    save(paths["t1ce"], rgb)
    return list(paths.values())


def _segmentation_values(d):
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[4:10, 4:10, 4:9] = 2
    labels[5:8, 5:8, 5:8] = 1
    labels[6:7, 6:7, 6:7] = 4
    return replace_array(d, "flair", labels)


def _oversize(d):
    paths = good_case(d)
    paths["t2"].unlink()
    sparse_file(paths["t2"], MAX_BYTES + 1)
    return list(paths.values())


def _oversize_in_folder(d):
    _oversize(d)
    return [d]


def _npy_objects(d):
    paths = good_case(d)
    paths["flair"].unlink()
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    target = d / "case_flair.npy"
    target.write_bytes(buffer.getvalue())
    return [target] + [paths[m] for m in MODALITIES[1:]]


def _three_channels_alone(d):
    d.mkdir(parents=True)
    return [save(d / "case.nii.gz", np.stack([scan(i) for i in range(3)], axis=-1))]


def _empty_folder(d):
    d.mkdir(parents=True)
    return [d]


def _real(build_from):
    """Copy the real case's four scans into ``d`` (symlinks), then let ``build_from`` break one."""

    def build(d):
        d.mkdir(parents=True)
        paths = {}
        for m in MODALITIES:
            source = REAL_CASE / f"{REAL_CASE.name}_{m}.nii.gz"
            paths[m] = d / source.name
            paths[m].symlink_to(source)
        build_from(d, paths)
        return list(paths.values())

    return build


def _real_truncated(d, paths):
    data = paths["t1ce"].read_bytes()
    paths["t1ce"].unlink()
    paths["t1ce"].write_bytes(data[: len(data) * 3 // 5])


def _real_seg_as_flair(d, paths):
    paths["flair"].unlink()
    shutil.copyfile(REAL_CASE / f"{REAL_CASE.name}_seg.nii.gz", paths["flair"])


def _real_misregistered(d, paths):
    image = nib.load(paths["t2"])
    affine = image.affine.copy()
    affine[:3, 3] += (3.0, 0.0, 0.0)
    moved = nib.Nifti1Image(np.asarray(image.dataobj), affine, image.header)
    paths["t2"].unlink()
    nib.save(moved, paths["t2"])


def _real_cropped(d, paths):
    image = nib.load(paths["t1"])
    cropped = nib.Nifti1Image(np.asarray(image.dataobj)[:, :, :-1], image.affine, image.header)
    paths["t1"].unlink()
    nib.save(cropped, paths["t1"])


CATALOGUE = [
    Bad("truncated-nii-gz", _truncated_gz, "case_flair.nii.gz", ("truncated",)),
    Bad("truncated-nii", _truncated_nii, "case_t1.nii", ("truncated", "header says 16128 bytes", "file holds 15128")),
    Bad("random-bytes-as-nii", lambda d: replace(d, "t1", np.random.default_rng(3).bytes(4096), "case_t1.nii"),
        "case_t1.nii", ("not a NIfTI image",)),
    Bad("png-as-nii", lambda d: replace(d, "t1ce", png_bytes(), "case_t1ce.nii"), "case_t1ce.nii", ("not a NIfTI image",)),
    Bad("png-as-nii-gz", lambda d: replace(d, "t1ce", png_bytes()), "case_t1ce.nii.gz", ("not gzip-compressed",)),
    Bad("gzip-twice", lambda d: replace(d, "t2", gzip.compress(gzip.compress(nib.Nifti1Image(scan(3), AFFINE).to_bytes()))), "case_t2.nii.gz",
        ("compressed twice", "decompress it once")),
    Bad("tiny-junk-as-nii", lambda d: replace(d, "t2", b"hello", "case_t2.nii"), "case_t2.nii", ("too short",)),
    Bad("empty-file", lambda d: replace(d, "t2", b""), "case_t2.nii.gz", ("empty",)),
    Bad("2d-image", lambda d: replace_array(d, "flair", scan(0)[:, :, 7]), "case_flair.nii.gz", ("2D", "expected one 3D volume")),
    Bad("single-slice", lambda d: replace_array(d, "flair", scan(0)[:, :, 7:8].copy()), "case_flair.nii.gz", ("single slice",)),
    Bad("4d-time-series", lambda d: replace_array(d, "t1", np.stack([scan(1)] * 3, axis=-1)), "case_t1.nii.gz",
        ("4D", "expected one 3D volume")),
    Bad("4-channel-among-four", lambda d: replace_array(d, "t1", np.stack([scan(1)] * 4, axis=-1)), "case_t1.nii.gz",
        ("read as a whole case only when it is the only input",)),
    Bad("3-channel-alone", _three_channels_alone, "case.nii.gz", ("must hold all four modalities",)),
    Bad("5d-image", lambda d: replace_array(d, "t2", np.stack([scan(3)] * 3, axis=-1)[:, :, :, None, :]), "case_t2.nii.gz",
        ("5D",)),
    Bad("shape-differs", lambda d: replace_array(d, "t1ce", scan(2)[:, :, :13].copy()), "case_t1ce.nii.gz",
        ("shape (16, 18, 13) differs", "case_flair.nii.gz", "co-registered")),
    Bad("affine-shifted", _affine_shift, "case_t2.nii.gz", ("voxel-to-world matrix differs", "2.5", "co-registered")),
    Bad("ras-vs-lps", lambda d: replace_array(d, "t1", scan(1), np.diag([1.2, 1.2, 1.5, 1.0])), "case_t1.nii.gz",
        ("voxel-to-world matrix differs",)),
    Bad("missing-modality", _missing, "case_flair.nii.gz", ("missing modality T2",)),
    Bad("duplicated-modality", _two_files_one_name, "other_flair.nii", ("both FLAIR", "one file per modality")),
    Bad("unrecognised-name", lambda d: replace(d, "t1", name="scan_3.nii.gz"), "scan_3.nii.gz", ("cannot tell which modality",)),
    Bad("ambiguous-name", lambda d: replace(d, "t1", name="t1_to_flair.nii.gz"), "t1_to_flair.nii.gz",
        ("several modalities", "FLAIR, T1")),
    Bad("nan-voxels", _with_values("flair", 0, np.nan), "case_flair.nii.gz", ("5 voxels are NaN or infinite",)),
    Bad("inf-voxels", _with_values("t2", 3, np.inf, 2), "case_t2.nii.gz", ("2 voxels are NaN or infinite",)),
    Bad("inf-by-scaling", _scaled_to_inf, "case_flair.nii.gz", ("NaN or infinite",)),
    Bad("constant", lambda d: replace_array(d, "t1", np.full(SHAPE, 7.0, np.float32)), "case_t1.nii.gz",
        ("every voxel has the value 7",)),
    Bad("all-zero", lambda d: replace_array(d, "t1ce", np.zeros(SHAPE, np.float32)), "case_t1ce.nii.gz",
        ("every voxel has the value 0",)),
    Bad("absurd-size-nii", _claims((10000, 10000, 10000), gz=False), "case_t1.nii", ("header claims shape (10000, 10000, 10000)",)),
    Bad("absurd-size-nii-gz", _claims((10000, 10000, 10000), gz=True), "case_t1.nii.gz",
        ("header claims shape (10000, 10000, 10000)",)),
    Bad("over-limit-size-nii-gz", _claims((600, 600, 600), gz=True), "case_t1.nii.gz", ("header claims shape (600, 600, 600)",)),
    Bad("negative-dimension", _negative_dim, "case_t1ce.nii", ("shape (16, -18, 14), with no voxels",)),
    Bad("singular-affine", _singular_affine, "case_t2.nii", ("voxel-to-world matrix is invalid",)),
    Bad("zero-voxel-size", _voxel_size((1.0, 1.0, 0.0)), "case_t2.nii", ("voxels of 1 x 1 x 0 mm", "between 0.05 and 30 mm")),
    Bad("header-in-metres", _voxel_size((0.001, 0.001, 0.001), "meter"), "case_t2.nii",
        ("voxels of 0.001 x 0.001 x 0.001 mm (its header gives the unit as meter)",)),
    Bad("field-of-view-too-large", _voxel_size((25.0, 25.0, 25.0), shape=(30, 30, 30)), "case_t2.nii",
        ("a field of view of 750 x 750 x 750 mm; expected at most 600 mm per side",)),
    Bad("complex-dtype", lambda d: replace_array(d, "t2", scan(3).astype(np.complex64)), "case_t2.nii.gz", ("complex-valued",)),
    Bad("rgb-dtype", _rgb, "case_t1ce.nii.gz", ("RGB",)),
    Bad("segmentation-by-name", lambda d: replace(d, "flair", name="case_seg.nii.gz"), "case_seg.nii.gz",
        ("looks like a segmentation",)),
    Bad("segmentation-by-content", _segmentation_values, "case_flair.nii.gz", ("like a segmentation", "[0, 1, 2, 4]")),
    Bad("over-size-file", _oversize, "case_t2.nii.gz", ("too large",)),
    Bad("over-size-file-in-folder", _oversize_in_folder, "case_t2.nii.gz", ("too large",)),
    Bad("gzip-bomb", lambda d: replace(d, "t1", gzip_bomb()), "case_t1.nii.gz", ("more data than its header describes",)),
    Bad("npy-with-objects", _npy_objects, "case_flair.npy", ("Python objects",)),
    Bad("no-such-file", lambda d: [d / "nowhere_flair.nii.gz"], "nowhere_flair.nii.gz", ("no such file",)),
    Bad("empty-folder", _empty_folder, "empty-folder", ("no .nii, .nii.gz, .nrrd, .mha or .npy files",)),
    Bad("real-truncated", _real(_real_truncated), f"{REAL_CASE.name}_t1ce.nii.gz", ("truncated",), real=True),
    Bad("real-seg-as-flair", _real(_real_seg_as_flair), f"{REAL_CASE.name}_flair.nii.gz", ("like a segmentation",), real=True),
    Bad("real-misregistered", _real(_real_misregistered), f"{REAL_CASE.name}_t2.nii.gz", ("differs", "by up to 3 mm"), real=True),
    Bad("real-cropped", _real(_real_cropped), f"{REAL_CASE.name}_t1.nii.gz", ("shape (240, 240, 154) differs",), real=True),
]


def _params():
    return [pytest.param(bad, id=bad.id, marks=[needs_data, pytest.mark.data] if bad.real else []) for bad in CATALOGUE]


def run_segment(args: list[str]) -> tuple[int, list[str]]:
    """``brainseg segment`` in-process: its exit status and the warnings and log lines it emitted.

    pytest records warnings and log records instead of printing them, so they are collected here:
    each would be one more stderr line in a real run.
    """
    logged = _Collect()
    logging.getLogger().addHandler(logged)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            status = main(["segment", *args])
    finally:
        logging.getLogger().removeHandler(logged)
    shown = [f"{w.category.__name__}: {w.message}" for w in caught if not issubclass(w.category, QUIET_WARNINGS)]
    return status, shown + logged.lines


class _Collect(logging.Handler):
    """Log records the command's stderr handler would print (WARNING and above)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


def assert_one_error_line(err: str, bad: Bad) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    line = lines[0]
    assert line.startswith("error: ")
    assert "Traceback" not in err
    assert bad.culprit in line, f"the message does not name {bad.culprit}: {line}"
    for word in bad.words:
        assert word in line, f"{word!r} missing from: {line}"
    return line


# ---------------------------------------------------------------- tests


def test_the_good_case_is_accepted(tmp_path, tiny_checkpoint, capfd):
    """Control: the case every entry starts from loads and segments, so each refusal is the defect's."""
    paths = good_case(tmp_path / "case")
    case = load_case(list(paths.values()))
    assert case.shape == SHAPE and np.allclose(case.affine, AFFINE)
    out = tmp_path / "out" / "seg.nii.gz"
    status, shown = run_segment([str(tmp_path / "case"), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--no-progress"])
    captured = capfd.readouterr()
    assert status == 0, captured.err
    assert captured.err == "" and shown == []
    assert nib.load(out).shape == SHAPE


@pytest.mark.parametrize("bad", _params())
def test_library_refuses(bad, tmp_path):
    inputs = bad.build(tmp_path / bad.id)
    with pytest.raises(InputError) as refused:
        load_case(inputs)
    message = str(refused.value)
    assert bad.culprit in message
    for word in bad.words:
        assert word in message, f"{word!r} missing from: {message}"
    assert "\n" not in message


@pytest.mark.parametrize("bad", _params())
def test_cli_refuses_with_one_line(bad, tmp_path, tiny_checkpoint, capfd):
    inputs = bad.build(tmp_path / bad.id)
    out_dir = tmp_path / "out"
    out = out_dir / "seg.nii.gz"
    stats = out_dir / "stats.json"
    args = [*map(str, inputs), "-o", str(out), "--stats", str(stats), "--checkpoint", str(tiny_checkpoint), "--no-progress"]
    status, shown = run_segment(args)
    captured = capfd.readouterr()
    assert status == 2
    assert shown == [], f"warnings or log lines would add to stderr: {shown}"
    assert_one_error_line(captured.err, bad)
    assert captured.out == ""
    assert not out.exists() and not stats.exists()
    assert not out_dir.exists() or not any(out_dir.iterdir()), "partial output left behind"


@pytest.mark.parametrize("bad_id", ["png-as-nii", "inf-by-scaling"])  # the two that once printed extra lines
def test_cli_subprocess_refuses_with_one_line(bad_id, tmp_path, tiny_checkpoint):
    """The real command in its own process: exit status 2, one line, nothing written."""
    bad = next(b for b in CATALOGUE if b.id == bad_id)
    inputs = bad.build(tmp_path / bad.id)
    out = tmp_path / "out" / "seg.nii.gz"
    result = subprocess.run(
        [sys.executable, "-m", "brainseg.cli", "segment", *map(str, inputs), "-o", str(out), "--checkpoint", str(tiny_checkpoint)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert_one_error_line(result.stderr, bad)
    assert result.stdout == ""
    assert not out.exists() and not out.parent.exists()


def test_absurd_header_is_refused_before_allocating(tmp_path):
    """A 350-byte file claiming 10000^3 voxels (4 TB), and one claiming 600^3 (864 MB as float32)."""
    good = {m: gzip.compress(save(tmp_path / f"x_{m}.nii", scan(i)).read_bytes()) for i, m in enumerate(MODALITIES)}
    for shape in ((10000, 10000, 10000), (600, 600, 600)):
        claim = nifti_bytes(scan(1, (4, 4, 4)), lambda h: h.set_data_shape(shape))
        files = {f"case_{m}.nii.gz": gzip.compress(claim) if m == "t1" else good[m] for m in MODALITIES}
        tracemalloc.start()
        try:
            with pytest.raises(InputError, match="header claims shape"):
                load_files(files)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 8 * 1024**2, f"{peak / 1e6:.0f} MB allocated before refusing"


def test_gzip_bomb_is_refused_before_inflating(tmp_path):
    bomb = gzip_bomb(64 * 1024**2)
    assert len(bomb) < 1024**2
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="more data than its header describes"):
            load_files({f"case_{m}.nii.gz": bomb for m in MODALITIES})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024**2, f"{peak / 1e6:.0f} MB allocated before refusing"


def test_four_channel_msd_file_is_accepted_alone(tmp_path, tiny_checkpoint, capfd):
    """The one 4D input that is not an error: an MSD-style (X, Y, Z, 4) file given alone."""
    channels = [scan(i) for i in range(4)]
    path = save(tmp_path / "BRATS_001.nii.gz", np.stack(channels, axis=-1))
    case = load_case([path])
    for modality, channel in zip(MODALITIES, channels):
        assert np.array_equal(case.images[modality], channel)
    out = tmp_path / "seg.nii.gz"
    status, _ = run_segment([str(path), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--no-progress"])
    assert status == 0, capfd.readouterr().err
    written = nib.load(out)
    assert written.shape == SHAPE
    assert np.array_equal(written.affine, nib.load(path).affine)


def test_a_four_channel_file_gets_the_checks_four_files_get(tmp_path, caplog):
    """One image in two channels is refused, and a header with no orientation warned about, as for four files."""
    twice = save(tmp_path / "BRATS_002.nii.gz", np.stack([scan(0), scan(0), scan(2), scan(3)], axis=-1))
    with pytest.raises(InputError, match=r"BRATS_002.nii.gz\[0\] \(FLAIR\) and BRATS_002.nii.gz\[1\] \(T1\) hold the same image"):
        load_case([twice])
    image = nib.Nifti1Image(np.stack([scan(i) for i in range(4)], axis=-1), AFFINE)
    image.set_qform(None, code=0)
    image.set_sform(None, code=0)
    nib.save(image, tmp_path / "BRATS_003.nii.gz")
    with caplog.at_level(logging.WARNING, logger="brainseg.io"):
        load_case([tmp_path / "BRATS_003.nii.gz"])
    assert "BRATS_003.nii.gz[0]" in caplog.text and "qform and sform codes both 0" in caplog.text


def test_a_folder_ignores_its_segmentation_file(tmp_path):
    """A seg file in a case folder is skipped, while the same file among four inputs is refused."""
    paths = good_case(tmp_path)
    save(tmp_path / "case_seg.nii.gz", np.zeros(SHAPE, np.uint8))
    assert load_case([tmp_path]).sources["flair"] == "case_flair.nii.gz"
    with pytest.raises(InputError, match="case_seg.nii.gz: looks like a segmentation"):
        load_case([*paths.values(), tmp_path / "case_seg.nii.gz"])


@pytest.mark.parametrize(
    "name, modality",
    [
        ("Brats18_2013_11_1_t1ce.nii.gz", "t1ce"),
        ("BraTS-GLI-00001-000-t1c.nii.gz", "t1ce"),
        ("BraTS-GLI-00001-000-t2f.nii.gz", "flair"),
        ("case_flair_seg.nii.gz", "seg"),
        ("t1.nii", "t1"),
    ],
)
def test_names_with_one_modality_are_not_ambiguous(name, modality):
    from brainseg.naming import modality_from_name

    assert modality_from_name(name) == modality


@pytest.mark.parametrize("as_folder", [False, True])
def test_output_over_an_input_scan_is_refused(tmp_path, tiny_checkpoint, capfd, as_folder):
    """``-o`` naming one of the scans would destroy it: refused, the scan left as it was."""
    paths = good_case(tmp_path / "case")
    before = paths["t1"].read_bytes()
    inputs = [str(tmp_path / "case")] if as_folder else [str(p) for p in paths.values()]
    status, shown = run_segment([*inputs, "-o", str(paths["t1"]), "--checkpoint", str(tiny_checkpoint), "--no-progress"])
    err = capfd.readouterr().err
    assert status == 2 and shown == []
    assert err.splitlines() == [f"error: {paths['t1']}: this is one of the input scans; choose another output path"]
    assert paths["t1"].read_bytes() == before


@pytest.mark.parametrize("option", ["--stats", "--save-probabilities"])
def test_stats_or_probabilities_over_an_input_scan_are_refused(tmp_path, tiny_checkpoint, capfd, option):
    """The other outputs are checked as ``-o`` is: a typo must not overwrite a scan with exit status 0."""
    paths = good_case(tmp_path / "case")
    if option == "--stats":
        out, extra, victim = tmp_path / "seg.nii.gz", ["--stats", str(paths["flair"])], paths["flair"]
    else:  # seg.nii.gz -> seg_probabilities.nii.gz: a scan named like that is the victim
        victim = paths["t2"].rename(tmp_path / "case" / "x_t2_probabilities.nii.gz")
        out, extra = tmp_path / "case" / "x_t2.nii.gz", ["--save-probabilities"]
    before = victim.read_bytes()
    status, _ = run_segment([*map(str, [paths["flair"], paths["t1"], paths["t1ce"], victim]), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--no-progress", *extra])
    assert status == 2
    assert capfd.readouterr().err.splitlines() == [f"error: {victim}: this is one of the input scans; choose another output path"]
    assert victim.read_bytes() == before and not out.exists()


# ---------------------------------------------------------------- label maps: one reader, three callers


def label_map(dtype=np.uint8) -> np.ndarray:
    """A BraTS 2018 label map on SHAPE: edema around a necrotic core around enhancing tumour."""
    labels = np.zeros(SHAPE, dtype=dtype)
    labels[4:10, 4:10, 4:9] = 2
    labels[5:8, 5:8, 5:8] = 4
    labels[6, 6, 6] = 1
    return labels


def _read_as_app(folder: Path, seg: Path):
    from brainseg.labelmaps import read_label_map

    return read_label_map(seg.read_bytes(), seg.name, load_case([folder])).internal()[0]


def _read_for_training(folder: Path, seg: Path):
    from brainseg.data import load_reference

    return load_reference(folder)[1]


def _read_for_evaluate(folder: Path, seg: Path):
    from brainseg.scoring import load_labels

    return load_labels(seg)[0]


READERS = {"app": _read_as_app, "training": _read_for_training, "evaluate": _read_for_evaluate}


def _with(value, dtype):
    labels = label_map(dtype)
    labels[0, 0, 0] = value
    return labels


BAD_LABEL_MAPS = {
    # int16 storage would wrap 65540 to 4 (ET); values are checked before any cast
    "wraps-to-et": (_with(65540, np.int32), ("unexpected label values [65540]", "0, 1, 2, 3, 4")),
    "negative": (_with(-1, np.int16), ("unexpected label values [-1]",)),
    "foreign-value": (_with(7, np.uint8), ("unexpected label values [7]",)),
    # training used to round these to 2 where the app and evaluate refused them
    "not-whole": (_with(1.5, np.float32), ("1 voxels are not whole numbers (e.g. 1.5)", "whole numbers 0, 1, 2, 3, 4")),
    "nan": (_with(np.nan, np.float32), ("1 voxels are not whole numbers (e.g. nan)",)),
    "both-3-and-4": (_with(3, np.uint8), ("holds both labels 3 and 4", "enhancing tumour")),
    "4d": (np.stack([label_map()] * 2, axis=-1), ("4D", "expected one 3D volume")),
}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("bad", BAD_LABEL_MAPS)
def test_every_label_map_reader_refuses_alike(bad, reader, tmp_path):
    good_case(tmp_path)
    array, words = BAD_LABEL_MAPS[bad]
    seg = save(tmp_path / "case_seg.nii.gz", array)
    with pytest.raises(InputError) as refused:
        READERS[reader](tmp_path, seg)
    message = str(refused.value)
    assert "case_seg.nii.gz: " in message
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"


@pytest.mark.parametrize("reader", READERS)
def test_every_label_map_reader_accepts_a_good_one_alike(reader, tmp_path):
    good_case(tmp_path)
    seg = save(tmp_path / "case_seg.nii.gz", label_map(np.float32))  # float storage of whole numbers is fine
    labels = READERS[reader](tmp_path, seg)
    assert labels.dtype == np.uint8
    assert np.array_equal(labels, np.select([label_map() == 4, label_map() == 2, label_map() == 1], [3, 2, 1], 0))


@pytest.mark.parametrize("reader", ["app", "training"])
def test_segmentation_off_the_scans_grid_is_refused(reader, tmp_path):
    """Training checked only the shape: a shifted or flipped segmentation trained on the wrong anatomy."""
    good_case(tmp_path)
    flipped = AFFINE.copy()
    flipped[0, 0] = -flipped[0, 0]
    seg = save(tmp_path / "case_seg.nii.gz", label_map(), flipped)
    with pytest.raises(InputError) as refused:
        READERS[reader](tmp_path, seg)
    message = str(refused.value)
    assert "case_seg.nii.gz: its voxel-to-world matrix differs from case_flair.nii.gz's by up to 2.4 mm" in message
    assert "expected the segmentation of this case, on the scans' grid" in message


def test_training_refuses_a_case_folder_without_segmentation(tmp_path):
    from brainseg.data import load_reference

    good_case(tmp_path)
    with pytest.raises(InputError, match="no segmentation file"):
        load_reference(tmp_path)


def test_a_huge_patch_size_is_one_error_line_not_an_allocation(tmp_path, tiny_checkpoint, capfd):
    """2**40 voxels per window once reached F.pad and died in the allocator with a traceback."""
    paths = good_case(tmp_path / "case")
    before = {m: path.read_bytes() for m, path in paths.items()}
    status, shown = run_segment([str(tmp_path / "case"), "-o", str(tmp_path / "seg.nii.gz"), "--checkpoint", str(tiny_checkpoint),
                                 "--no-progress", "--patch-size", "8", "8", str(2**40)])
    assert status == 2 and shown == []
    assert capfd.readouterr().err.splitlines() == [f"error: --patch-size: got (8, 8, {2**40}); expected three whole numbers 1-512 (voxels)"]
    assert not (tmp_path / "seg.nii.gz").exists()
    assert {m: path.read_bytes() for m, path in paths.items()} == before  # the input scans are left as they were


@pytest.mark.parametrize("option, value, message", [
    ("--max-component-distance", "-5", "--max-component-distance: got -5.0; expected a number >= 0"),
    ("--min-component", "-1", "--min-component: got -1; expected a whole number >= 0"),
])
def test_a_post_processing_override_out_of_range_names_its_option(tmp_path, tiny_checkpoint, capfd, option, value, message):
    good_case(tmp_path / "case")
    status, shown = run_segment([str(tmp_path / "case"), "-o", str(tmp_path / "seg.nii.gz"), "--checkpoint", str(tiny_checkpoint),
                                 "--no-progress", option, value])
    assert status == 2 and shown == []
    assert capfd.readouterr().err.splitlines() == [f"error: {message}"]
    assert not (tmp_path / "seg.nii.gz").exists()


def test_a_brain_mask_beside_the_expert_map_is_not_taken_for_it(tmp_path):
    """brain_mask.nii.gz sorts before brats2021_00000_seg.nii.gz; a 0/1 mask reads as a valid label map."""
    from brainseg.data import find_cases
    from brainseg.evaluate_command import reference_cases
    from brainseg.naming import segmentation_file

    case = tmp_path / "data" / "brats2021_00000"
    good_case(case)
    save(case / "brain_mask.nii.gz", np.ones(SHAPE, np.uint8))
    assert segmentation_file(case) is None  # a brain mask alone is no segmentation
    save(case / "brats2021_00000_seg.nii.gz", label_map())
    save(case / "brats2021_00000_label.nii.gz", label_map())
    assert segmentation_file(case).name == "brats2021_00000_seg.nii.gz"  # "_seg" says it more than "_label"
    assert reference_cases(tmp_path / "data") == {"brats2021_00000": case / "brats2021_00000_seg.nii.gz"}
    assert [source.segmentation.name for source in find_cases(tmp_path / "data")] == ["brats2021_00000_seg.nii.gz"]


def test_two_files_that_could_each_be_the_segmentation_are_named(tmp_path):
    good_case(tmp_path)
    save(tmp_path / "case_seg.nii.gz", label_map())
    save(tmp_path / "case_seg_old.nii.gz", label_map())
    from brainseg.naming import segmentation_file

    with pytest.raises(InputError, match="case_seg.nii.gz, case_seg_old.nii.gz could each be the segmentation"):
        segmentation_file(tmp_path)


def test_a_tumour_mask_and_a_glued_seg_word_are_label_map_names(tmp_path):
    from brainseg.naming import segmentation_file

    good_case(tmp_path / "a")
    save(tmp_path / "a" / "case01_brain_tumor_mask.nii.gz", label_map())  # "brain" and "mask", not a brain mask
    assert segmentation_file(tmp_path / "a").name == "case01_brain_tumor_mask.nii.gz"
    good_case(tmp_path / "b")
    save(tmp_path / "b" / "case01seg.nii.gz", label_map())
    save(tmp_path / "b" / "case01_tumor_mask.nii.gz", label_map())
    assert segmentation_file(tmp_path / "b").name == "case01seg.nii.gz"  # "seg" glued to the id still says it most


def test_a_case_with_two_candidate_segmentations_costs_only_itself(tmp_path, capsys, caplog):
    """Training leaves it out, saying why; evaluate scores the other cases and exits 2."""
    from brainseg.data import find_cases

    data, pred = tmp_path / "data", tmp_path / "pred"
    pred.mkdir()
    for case in ("caseA", "caseB"):
        good_case(data / case)
        save(data / case / f"{case}_seg.nii.gz", label_map())
        save(pred / f"{case}_seg.nii.gz", label_map())
    save(data / "caseB" / "caseB_seg_v2.nii.gz", label_map())
    with caplog.at_level(logging.WARNING, logger="brainseg.data"):
        assert [source.name for source in find_cases(data)] == ["caseA"]
    assert "caseB: left out (caseB_seg.nii.gz, caseB_seg_v2.nii.gz could each be the segmentation" in caplog.text
    assert main(["evaluate", str(pred), str(data)]) == 2
    captured = capsys.readouterr()
    assert "error: caseB: " in captured.err and "could each be the segmentation" in captured.err
    assert "scored 1 of 2 reference cases; errors (above) in caseB" in captured.out
