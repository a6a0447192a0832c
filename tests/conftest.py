"""Shared fixtures: the real BraTS data beside the repo, a tiny checkpoint and synthetic cases."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BRATS = SHARED_DATA / "brats"
SAMPLE_2023 = SHARED_DATA / "sample" / "BraTS-GLI-00001-000"
LPS = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])


def needs_data(path: Path = BRATS):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not present")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A two-level U-Net checkpoint: loads and runs in milliseconds."""
    import torch

    from brainseg.checkpoint import save_checkpoint
    from brainseg.config import BrainsegConfig, InferenceConfig, ModelConfig
    from brainseg.model import UNet3D

    torch.manual_seed(0)
    config = BrainsegConfig(model=ModelConfig(features=(4, 8)), inference=InferenceConfig(patch_size=(16, 16, 16)))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, UNet3D(config.model), config, {"note": "test fixture"})
    return path


def synthetic_images(shape=(40, 44, 36), seed=0) -> dict[str, np.ndarray]:
    """Four modalities: a bright sphere ('tumour') inside an ellipsoid ('brain'), zero outside."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    brain = (grid**2).sum(0) < 0.8
    tumour = ((grid - 0.2) ** 2).sum(0) < 0.08
    out = {}
    for k, m in enumerate(("flair", "t1", "t1ce", "t2")):
        img = np.where(brain, 100 + 10 * k + rng.normal(0, 5, shape), 0) + 80 * tumour
        out[m] = (img * brain).astype(np.float32)
    return out


def write_case(folder: Path, names=("flair", "t1", "t1ce", "t2"), prefix="case01_", suffix=".nii.gz", affine=LPS, shape=(40, 44, 36)) -> dict[str, Path]:
    """Four synthetic scans as int16 files; ``suffix`` a NIfTI one, or .nrrd / .mha (converted by SimpleITK), or one
    suffix per modality."""
    folder.mkdir(parents=True, exist_ok=True)
    images = synthetic_images(shape)
    suffixes = [suffix] * 4 if isinstance(suffix, str) else suffix
    paths = {}
    for modality, name, ending in zip(("flair", "t1", "t1ce", "t2"), names, suffixes):
        path = folder / f"{prefix}{name}{ending}"
        if ending in (".nrrd", ".mha"):
            nifti = nib.Nifti1Image(images[modality].astype(np.int16), affine)
            nifti.set_qform(affine, code=1)
            path = itk_copy(nifti, path)
        else:
            nib.save(nib.Nifti1Image(images[modality].astype(np.int16), affine), path)
        paths[modality] = path
    return paths


def itk_copy(source: Path | nib.Nifti1Image, path: Path, compress: bool = True) -> Path:
    """A NIfTI file (or image) saved again as ``path`` (.nrrd, .mha, .nhdr, ...) by SimpleITK, which places it in
    the world through its own NIfTI reader: the known answer brainseg's NRRD / MetaImage reading must agree with."""
    import tempfile

    import SimpleITK as sitk

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        if isinstance(source, nib.Nifti1Image):
            nib.save(source, Path(folder) / "source.nii.gz")
            source = Path(folder) / "source.nii.gz"
        sitk.WriteImage(sitk.ReadImage(str(source)), str(path), compress)
    return path
