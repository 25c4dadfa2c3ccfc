"""SAR radiometric preprocessing: ONE function family for training and deployment.

The chain, each step set by :class:`SarPreprocess` (plain data that goes into
the manifest):

1. multi-band input becomes one band (identical channels are collapsed, alpha
   is dropped);
2. 16-bit or float scenes: linear amplitude or intensity -> dB
   (``20 log10 A`` or ``10 log10 I``), or kept linear;
3. clipping to [lo, hi]: percentiles of the whole scene (computed once per
   scene by :func:`clip_range`, never per tile, so tiles of one scene share
   one scale) or fixed values;
4. scaling to [0, 1], then ``(x - mean) / std``;
5. channel replication to the network's channel count -> float32 [C, H, W].

8-bit inputs (quick-looks, SSDD chips, PNG/JPEG) are already log-scaled and
clipped for display. They take the documented 8-bit path: ``x / 255`` then
step 4 and 5, with no dB and no clipping.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from sarbridge.runtime.errors import DataError

INPUT_KINDS = ("amplitude", "intensity", "db")
CLIP_MODES = ("percentile", "fixed", "none")
_EPS = 1e-6


@dataclass(frozen=True)
class SarPreprocess:
    """Radiometric preprocessing parameters.

    Attributes:
        input_kind: what non-8-bit pixel values are: linear ``amplitude``,
            linear ``intensity`` (power) or already ``db``.
        to_db: convert linear values to dB before clipping.
        clip: ``percentile`` (clip_low/clip_high are percentiles of the scene),
            ``fixed`` (they are values after the dB step) or ``none`` (min/max).
        clip_low, clip_high: see ``clip``.
        mean, std: normalisation after scaling to [0, 1].
        channels: channels the network takes (the single SAR band is replicated).
        eight_bit_passthrough: 8-bit inputs take the x/255 path.
    """

    input_kind: str = "amplitude"
    to_db: bool = True
    clip: str = "percentile"
    clip_low: float = 1.0
    clip_high: float = 99.5
    mean: float = 0.0
    std: float = 1.0
    channels: int = 1
    eight_bit_passthrough: bool = True

    def __post_init__(self):
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {self.input_kind!r}")
        if self.clip not in CLIP_MODES:
            raise ValueError(f"clip must be one of {CLIP_MODES}, got {self.clip!r}")
        if self.clip != "none" and not self.clip_low < self.clip_high:
            raise ValueError(
                f"clip_low ({self.clip_low}) must be below clip_high ({self.clip_high})"
            )
        if self.clip == "percentile" and not (self.clip_low >= 0 and self.clip_high <= 100):
            raise ValueError("percentile clip bounds must lie in [0, 100]")
        if self.std <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SarPreprocess:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown preprocessing keys {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**data)


def to_single_channel(image: np.ndarray, path=None, tolerance: float = 0.03) -> np.ndarray:
    """Collapse a multi-band SAR image to one band.

    Alpha (2nd of 2 or 4th of 4 bands) is dropped. Bands that are the same
    image (mean absolute difference at most ``tolerance`` of the value range:
    JPEG-compressed grey images differ locally, not on average) are collapsed
    to their mean. Bands that differ more mean the file is not a single-band
    SAR image: DataError.
    """
    if image.ndim == 2:
        return image
    if image.ndim != 3:
        raise DataError(path, f"expected an H x W or H x W x C image, got shape {image.shape}")
    bands = image.shape[2]
    if bands in (2, 4):
        image = image[:, :, : bands - 1]
    if image.shape[2] == 1:
        return image[:, :, 0]
    first = image[:, :, :1]
    if np.array_equal(image, np.broadcast_to(first, image.shape)):
        return image[:, :, 0]
    as_float = image.astype(np.float32)
    spread = float(np.abs(as_float - as_float[:, :, :1]).mean())
    value_range = max(float(as_float.max() - as_float.min()), 1e-12)
    if spread > tolerance * value_range:
        raise DataError(
            path,
            f"{image.shape[2]} bands that differ (mean difference {spread:.3g} of a {value_range:.3g} range); "
            "a SAR scene needs one band (or identical bands). Select the polarisation band before detection",
        )
    mean = as_float.mean(axis=2)
    return mean if image.dtype.kind == "f" else np.round(mean).astype(image.dtype)


def is_eight_bit(dtype) -> bool:
    return np.dtype(dtype) == np.uint8


def _linear_to_db(values: np.ndarray, input_kind: str, out: np.ndarray | None = None) -> np.ndarray:
    """``20 log10`` (amplitude) or ``10 log10`` (intensity) of values floored at ``_EPS``, float32,
    computed in one buffer (``out``, float32 of the values' shape, or a new array)."""
    if out is None:
        out = np.empty(values.shape, np.float32)
    if out is not values:
        out[...] = values  # the float32 cast (as astype)
    np.maximum(out, _EPS, out=out)
    np.log10(out, out=out)
    return np.multiply(out, 20.0 if input_kind == "amplitude" else 10.0, out=out)


def _radiometric(
    values: np.ndarray, params: SarPreprocess, out: np.ndarray | None = None
) -> np.ndarray:
    """dB conversion (when asked) of non-8-bit values, float32. With ``out`` (float32, the values'
    shape) the result is written there; without, linear float32 values may come back as they are
    (not a copy)."""
    if params.to_db and params.input_kind != "db":
        return _linear_to_db(values, params.input_kind, out)
    if out is None:
        return values.astype(np.float32, copy=False)
    out[...] = values
    return out


def clip_range(
    sample: np.ndarray, params: SarPreprocess, path=None, max_samples: int = 2_000_000
) -> tuple[float, float]:
    """The (lo, hi) clip values for a scene, in the units after the dB step.

    Args:
        sample: the scene, or a subsample of it (see :func:`scene_sample`);
            zeros are treated as no-data and ignored for percentiles.
        params: preprocessing parameters.

    Returns:
        (lo, hi) with lo < hi. For 8-bit inputs on the passthrough path: (0, 255).
    """
    if is_eight_bit(sample.dtype) and params.eight_bit_passthrough:
        return 0.0, 255.0
    if params.clip == "fixed":
        return float(params.clip_low), float(params.clip_high)
    flat = sample.reshape(-1)
    if flat.size > max_samples:
        flat = flat[:: flat.size // max_samples + 1]
    flat = flat[flat != 0] if flat.dtype.kind != "f" or params.input_kind != "db" else flat
    flat = flat[np.isfinite(flat)] if flat.dtype.kind == "f" else flat
    if flat.size == 0:
        raise DataError(path, "the scene holds no valid pixels (all zero or no-data)")
    values = _radiometric(flat, params)
    if params.clip == "percentile":
        lo, hi = np.percentile(values, [params.clip_low, params.clip_high])
    else:
        lo, hi = values.min(), values.max()
    lo, hi = float(lo), float(hi)
    if not hi > lo:
        hi = lo + 1.0  # a constant scene: any positive span gives a flat image
    return lo, hi


def preprocess(
    image: np.ndarray,
    params: SarPreprocess,
    lo_hi: tuple[float, float] | None = None,
    path=None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Turn SAR pixels into network input.

    Args:
        image: [H, W] or [H, W, C] pixels in the stored dtype.
        params: preprocessing parameters.
        lo_hi: the scene's clip range from :func:`clip_range`; computed from
            ``image`` itself when None (fine for chips, wrong for tiles of a
            larger scene).
        out: float32 [C, H, W] to write the result into (it may be a view, e.g. the top-left
            corner of a network input); a new array when None. Every step runs in this one
            buffer, so no temporary image is made.

    Returns:
        float32 [C, H, W] with C = ``params.channels`` (``out`` when given).
    """
    band = to_single_channel(image, path)
    if lo_hi is None:
        lo_hi = clip_range(band, params, path)
    lo, hi = lo_hi
    shape = (params.channels, *band.shape)
    if out is None:
        out = np.empty(shape, np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"out is {out.dtype} {out.shape}; this image needs float32 {shape}")
    x = out[0]
    if is_eight_bit(band.dtype) and params.eight_bit_passthrough:
        np.multiply(band, np.float32(1.0 / 255.0), out=x, dtype=np.float32)
    else:
        _radiometric(band, params, out=x)
        np.clip(x, lo, hi, out=x)
        np.subtract(x, np.float32(lo), out=x)
        np.multiply(x, np.float32(1.0 / (hi - lo)), out=x)
    if params.mean != 0.0 or params.std != 1.0:
        np.subtract(x, np.float32(params.mean), out=x)
        np.multiply(x, np.float32(1.0 / params.std), out=x)
    out[1:] = x  # the single band replicated to the network's channels
    return out


def scene_sample(raster, max_side: int = 2048) -> np.ndarray:
    """A strided subsample of a whole scene for :func:`clip_range`, read window by window.

    Memory stays at about ``max_side**2`` samples whatever the scene size.
    """
    step = max(1, int(np.ceil(max(raster.height, raster.width) / max_side)))
    rows = []
    band_h = max(step, (256 // step) * step)  # read bands of rows, keep every step-th
    for y in range(0, raster.height, band_h):
        h = min(band_h, raster.height - y)
        block = to_single_channel(raster.read(y, 0, h, raster.width), raster.path)
        rows.append(block[::step, ::step].copy())  # a copy: a view would keep the whole band alive
    return np.concatenate(rows, axis=0)
