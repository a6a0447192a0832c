"""Checkpoints never run code from the file, and every unusable one gets a clear error (issue 6).

The malicious payloads are live: a control test shows that unpickling them the unsafe way does write
the marker file, so the refusals below prove something.
"""
from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from brainseg import MODALITIES
from brainseg.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from brainseg.cli import main
from brainseg.config import BrainsegConfig, ModelConfig
from brainseg.errors import CheckpointError
from brainseg.model import UNet3D

TINY = ModelConfig(features=(4, 8))


class WritesFile:
    """Unpickling this calls ``open(path, "w")``: the file appears if the loader runs code."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class RunsShell:
    """Unpickling this runs a shell command that creates ``path``."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch '{self.path}'",))


def tiny_payload(features=(4, 8)) -> dict:
    config = BrainsegConfig(model=ModelConfig(features=features))
    return {
        "format": FORMAT,
        "format_version": 1,
        "config": config.to_dict(),
        "state_dict": {k: v.half() if v.is_floating_point() else v for k, v in UNet3D(config.model).state_dict().items()},
        "provenance": {},
    }


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "side-effect" / "was-here"


@pytest.fixture(scope="module")
def case_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("case")
    rng = np.random.default_rng(0)
    for m in MODALITIES:
        array = np.zeros((12, 14, 10), np.float32)
        array[2:-2, 2:-2, 2:-2] = rng.uniform(50, 500, (8, 10, 6))
        nib.save(nib.Nifti1Image(array, np.diag([-1.0, -1.0, 1.0, 1.0])), folder / f"case_{m}.nii.gz")
    return folder


def _malicious(kind: str, marker: Path, path: Path) -> Path:
    marker.parent.mkdir(parents=True, exist_ok=True)
    if kind == "torch-save-open":
        torch.save({"format": FORMAT, "config": {}, "state_dict": {}, "provenance": {"note": WritesFile(marker)}}, path)
    elif kind == "torch-save-shell":
        torch.save(RunsShell(marker), path)
    elif kind == "torch-save-inside-real-checkpoint":
        payload = tiny_payload()
        payload["provenance"] = {"trainer": RunsShell(marker)}
        torch.save(payload, path)
    elif kind == "plain-pickle-open":
        with open(path, "wb") as f:
            pickle.dump({"format": FORMAT, "x": WritesFile(marker)}, f)
    elif kind == "plain-pickle-shell":
        with open(path, "wb") as f:
            pickle.dump(RunsShell(marker), f, protocol=2)
    return path


MALICIOUS = ["torch-save-open", "torch-save-shell", "torch-save-inside-real-checkpoint", "plain-pickle-open", "plain-pickle-shell"]


@pytest.mark.parametrize("kind", MALICIOUS)
def test_payload_is_live(kind, marker, tmp_path):
    """Control: loading the file the unsafe way does create the marker."""
    path = _malicious(kind, marker, tmp_path / "evil.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind.startswith("torch"):
            torch.load(path, weights_only=False)
        else:
            with open(path, "rb") as f:
                pickle.load(f)
    assert marker.exists()


@pytest.mark.parametrize("kind", MALICIOUS)
def test_malicious_checkpoint_is_refused_without_running_code(kind, marker, tmp_path):
    path = _malicious(kind, marker, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path)
    message = str(refused.value)
    assert message.startswith("evil.pt: ")
    if kind.startswith("torch"):
        assert "could run code" in message
    else:
        assert "not a PyTorch checkpoint archive" in message
    assert not marker.exists()


def test_refusal_names_the_forbidden_callable(marker, tmp_path):
    path = _malicious("torch-save-shell", marker, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"\((posix|os|nt)\.system\)"):
        load_checkpoint(path)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _plain_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")
    return path


def _save(payload, path: Path) -> Path:
    torch.save(payload, path)
    return path


def _truncated(path: Path, keep: float) -> Path:
    good = save_checkpoint(path.with_name("good.pt"), UNet3D(TINY), BrainsegConfig(model=TINY))
    data = good.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _wrong_weights(path: Path) -> Path:
    payload = tiny_payload()
    payload["state_dict"] = tiny_payload(features=(8, 16))["state_dict"]
    return _save(payload, path)


def _residual_weights(path: Path) -> Path:
    payload = tiny_payload()
    config = BrainsegConfig(model=ModelConfig(features=(4, 8), residual=True))
    payload["state_dict"] = UNet3D(config.model).state_dict()
    return _save(payload, path)


def _with(path: Path, **changes) -> Path:
    payload = tiny_payload()
    payload.update(changes)
    return _save(payload, path)


def _without(path: Path, key: str) -> Path:
    payload = tiny_payload()
    del payload[key]
    return _save(payload, path)


def _config_change(path: Path, section: str, **changes) -> Path:
    payload = tiny_payload()
    payload["config"][section].update(changes)
    return _save(payload, path)


BROKEN = [
    ("empty", lambda p: _write(p, b""), "the checkpoint file is empty"),
    ("truncated-half", lambda p: _truncated(p, 0.5), "not a PyTorch checkpoint archive (truncated"),
    ("truncated-tail", lambda p: _truncated(p, 0.98), "not a PyTorch checkpoint archive (truncated"),
    ("random-bytes", lambda p: _write(p, np.random.default_rng(1).bytes(5000)), "not a PyTorch checkpoint archive"),
    ("text-file", lambda p: _write(p, b"not a checkpoint\n" * 40), "not a PyTorch checkpoint archive"),
    ("zip-not-torch", _plain_zip, "not a readable PyTorch checkpoint (truncated or corrupt: "),
    ("bare-state-dict", lambda p: _save(UNet3D(TINY).state_dict(), p), "not a brainseg checkpoint (no 'brainseg-checkpoint' marker)"),
    ("dict-without-marker", lambda p: _save({k: v for k, v in tiny_payload().items() if k != "format"}, p),
     "not a brainseg checkpoint (no 'brainseg-checkpoint' marker)"),
    ("other-format-marker", lambda p: _with(p, format="lightning"), "no 'brainseg-checkpoint' marker"),
    ("a-list", lambda p: _save([1, 2, 3], p), "not a brainseg checkpoint"),
    ("newer-format", lambda p: _with(p, format_version=99), "written by a newer brainseg (format 99)"),
    ("format-version-text", lambda p: _with(p, format_version="2"), "invalid format version '2'"),
    ("missing-config", lambda p: _without(p, "config"), "missing its 'config'"),
    ("missing-weights", lambda p: _without(p, "state_dict"), "missing its 'state_dict'"),
    ("config-not-a-table", lambda p: _with(p, config=[1, 2]), "its 'config' is a list; expected a table of settings"),
    ("weights-not-a-table", lambda p: _with(p, state_dict=[1]), "its 'state_dict' is a list"),
    ("weights-not-tensors", lambda p: _with(p, state_dict={"encoders.0.body.0.weight": 3}), "entries that are not tensors"),
    ("provenance-not-a-table", lambda p: _with(p, provenance="me"), "its 'provenance' is not a table"),
    ("unknown-setting", lambda p: _config_change(p, "model", colour="red"), "invalid configuration: unknown model settings: ['colour']"),
    ("bad-norm", lambda p: _config_change(p, "model", norm="group"), "invalid configuration: model.norm: unknown norm 'group'"),
    ("another-models-weights", _wrong_weights, "weights do not fit the U-Net its configuration describes"),
    ("residual-weights-plain-config", _residual_weights, "unexpected ['bottleneck.skip.weight', 'decoders.0.skip.weight']"),
    ("channels-vs-modalities", lambda p: _config_change(p, "preprocess", modalities=["flair", "t1", "t2"]),
     "model.in_channels: 4 input channels for 3 modalities ('flair', 't1', 't2'); expected one channel per modality"),
    ("unknown-modality", lambda p: _config_change(p, "preprocess", modalities=["flair", "t1", "t1ce", "dwi"]),
     "invalid input modalities"),
    ("output-mode-vs-channels", lambda p: _config_change(p, "model", output_mode="labels"),
     "output mode 'labels' with 3 output channels"),
]


@pytest.mark.parametrize("build, expected", [pytest.param(b, e, id=i) for i, b, e in BROKEN])
def test_broken_checkpoint_gets_a_clear_error(build, expected, tmp_path):
    path = build(tmp_path / "model.pt")
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path)
    message = str(refused.value)
    assert message.startswith("model.pt: "), message
    assert expected in message, message
    assert "\n" not in message and "enforce fail" not in message  # no C++ internals


def test_a_good_checkpoint_loads(tmp_path):
    """Control for the table above: the untouched payload loads, in fp32 and eval mode."""
    loaded = load_checkpoint(_save(tiny_payload(), tmp_path / "model.pt"))
    assert loaded.config.model.features == (4, 8)
    assert not loaded.model.training
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())


def _cli(case: Path, checkpoint: Path, out: Path) -> tuple[int, list[str]]:
    """``brainseg segment`` in-process; also returns warnings and log lines that stderr would show."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    handler = Collect(logging.WARNING)
    logging.getLogger().addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            status = main(["segment", str(case), "-o", str(out), "--checkpoint", str(checkpoint), "--no-progress"])
    finally:
        logging.getLogger().removeHandler(handler)
    lines += [str(w.message) for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
    return status, lines


@pytest.mark.parametrize(
    "kind", MALICIOUS + ["truncated-half", "dict-without-marker", "another-models-weights", "channels-vs-modalities"]
)
def test_cli_refuses_bad_checkpoint_in_one_line(kind, tmp_path, marker, case_folder, capfd):
    if kind in MALICIOUS:
        checkpoint = _malicious(kind, marker, tmp_path / "model.pt")
    else:
        checkpoint = dict((i, b) for i, b, _ in BROKEN)[kind](tmp_path / "model.pt")
    out = tmp_path / "out" / "seg.nii.gz"
    status, extra = _cli(case_folder, checkpoint, out)
    captured = capfd.readouterr()
    assert status == 2
    assert extra == [], f"warnings or log lines would add to stderr: {extra}"
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model.pt: "), lines
    assert captured.out == ""
    assert not out.exists() and not out.parent.exists()
    assert not marker.exists()


def test_cli_subprocess_refuses_malicious_checkpoint(tmp_path, marker, case_folder):
    checkpoint = _malicious("torch-save-inside-real-checkpoint", marker, tmp_path / "model.pt")
    out = tmp_path / "out" / "seg.nii.gz"
    result = subprocess.run(
        [sys.executable, "-m", "brainseg.cli", "segment", str(case_folder), "-o", str(out), "--checkpoint", str(checkpoint)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model.pt: "), lines
    assert "could run code" in lines[0]
    assert result.stdout == ""
    assert not out.exists()
    assert not marker.exists()
