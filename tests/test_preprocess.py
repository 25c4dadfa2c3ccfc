import numpy as np
import pytest

from sarbridge.runtime.errors import DataError
from sarbridge.runtime.imageio import ArrayRaster
from sarbridge.runtime.preprocess import (
    SarPreprocess,
    clip_range,
    preprocess,
    scene_sample,
    to_single_channel,
)


def test_amplitude_to_db_with_fixed_clip():
    amp = np.array([[1.0, 10.0], [0.1, 100.0]], np.float32)
    p = SarPreprocess(input_kind="amplitude", clip="fixed", clip_low=-20.0, clip_high=20.0)
    out = preprocess(amp, p)
    # 20 log10: 0, 20, -20, 40 dB -> clipped to [-20, 20] -> scaled to [0, 1]
    np.testing.assert_allclose(out[0], [[0.5, 1.0], [0.0, 1.0]], atol=1e-6)
    assert out.shape == (1, 2, 2) and out.dtype == np.float32


def test_intensity_uses_10log10():
    inten = np.array([[1.0, 10.0]], np.float32)
    p = SarPreprocess(input_kind="intensity", clip="fixed", clip_low=0.0, clip_high=10.0)
    np.testing.assert_allclose(preprocess(inten, p)[0], [[0.0, 1.0]], atol=1e-6)


def test_eight_bit_passthrough_and_channels():
    img = np.array([[0, 255], [51, 102]], np.uint8)
    p = SarPreprocess(channels=3, mean=0.5, std=0.25)
    out = preprocess(img, p)
    assert out.shape == (3, 2, 2)
    np.testing.assert_allclose(out[1], (img / 255.0 - 0.5) / 0.25, atol=1e-6)
    assert clip_range(img, p) == (0.0, 255.0)


def test_percentile_clip_is_scene_wide():
    rng = np.random.default_rng(0)
    scene = rng.gamma(1.0, 1.0, size=(400, 400)).astype(np.float32)
    scene[:200] *= 100  # one bright half
    p = SarPreprocess(input_kind="intensity", clip_low=1, clip_high=99)
    lo_hi = clip_range(scene, p)
    dark_tile = preprocess(scene[300:, 300:], p, lo_hi)
    own = preprocess(scene[300:, 300:], p)  # tile-only percentiles stretch a dark tile
    assert dark_tile.mean() < own.mean() - 0.2
    sample = scene_sample(ArrayRaster(scene), max_side=100)
    assert sample.shape == (100, 100)
    assert abs(clip_range(sample, p)[1] - lo_hi[1]) < 1.5


def test_single_channel_rules():
    rgb = np.repeat(np.arange(12, dtype=np.uint8).reshape(3, 4, 1), 3, axis=2)
    np.testing.assert_array_equal(to_single_channel(rgb), rgb[:, :, 0])
    rgba = np.concatenate([rgb, np.full((3, 4, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(to_single_channel(rgba), rgb[:, :, 0])
    colour = np.stack([np.zeros((3, 4)), np.full((3, 4), 200), np.zeros((3, 4))], axis=2).astype(
        np.uint8
    )
    with pytest.raises(DataError, match="bands that differ"):
        to_single_channel(colour, "colour.png")


def test_params_roundtrip_and_validation():
    p = SarPreprocess(clip_low=2, clip_high=98, channels=3)
    assert SarPreprocess.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="unknown preprocessing keys"):
        SarPreprocess.from_dict({"gamma": 1})
    with pytest.raises(ValueError, match="input_kind"):
        SarPreprocess(input_kind="phase")
