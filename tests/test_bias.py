"""N4 bias-field correction (brainseg.bias), the optional preprocessing step."""
import numpy as np
import pytest

from brainseg.bias import n4_correct
from brainseg.config import PreprocessConfig, SettingError


def ball(shape=(64, 64, 64)) -> tuple[np.ndarray, np.ndarray]:
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    inside = (grid ** 2).sum(0) < 0.8
    return grid, inside


def test_a_smooth_field_over_one_tissue_is_divided_out():
    """One tissue of intensity 100 under a field rising 2.7x from one side to the other: after N4 its
    spread inside the brain falls to a fraction of what the field made it."""
    grid, inside = ball()
    rng = np.random.default_rng(0)
    tissue = np.where(inside, 100 + rng.normal(0, 2, inside.shape), 0).astype(np.float32)
    biased = tissue * np.exp(0.5 * grid[0])
    corrected = n4_correct(biased, inside, (1.0, 1.0, 1.0))
    spread = lambda image: float(image[inside].std() / image[inside].mean())
    assert spread(biased) > 0.15
    assert spread(corrected) < 0.3 * spread(biased)
    assert (corrected[~inside] == 0).all() and corrected.dtype == np.float32


def test_the_option_is_checked():
    assert PreprocessConfig().bias_correction is False
    with pytest.raises(SettingError, match="^bias_correction: got 'yes'"):
        PreprocessConfig(bias_correction="yes")


def test_segmenting_with_correction_says_so_and_sees_other_input(tmp_path, tiny_checkpoint):
    from brainseg.checkpoint import load_checkpoint
    from brainseg.io import load_case
    from brainseg.pipeline import segment_case
    from brainseg.preprocess import prepare
    from brainseg.report import run_record
    from conftest import write_case

    write_case(tmp_path / "case")
    case, loaded = load_case([tmp_path / "case"]), load_checkpoint(tiny_checkpoint)
    plain = segment_case(case, loaded, device="cpu")
    corrected = segment_case(case, loaded, device="cpu", bias_correction=True)
    assert (plain.bias_corrected, corrected.bias_corrected) == (False, True)
    assert run_record(loaded, loaded.config.inference, loaded.config.postprocess, corrected)["bias_corrected"] is True
    config = loaded.config.preprocess
    assert not np.array_equal(prepare(case, config).image, prepare(case, PreprocessConfig(**{**config.__dict__, "bias_correction": True})).image)
