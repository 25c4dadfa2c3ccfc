"""Synthetic SAR scenes with ground truth, and the matching optical rendering.

For tests and the demo's embedded default; never a replacement for real data.
A scene is built from one layout (land mask, coast, ships) rendered twice:

* SAR linear amplitude: sea clutter with a gamma texture (K-distributed
  intensity), land brighter and rougher, ships as bright extended targets
  with azimuth/range sidelobe crosses, all under multiplicative speckle of
  ``looks`` looks (intensity ~ Gamma(L, 1/L));
* optical RGB: dark blue sea, green/brown textured land, pale coast, light
  grey ships with dark wakes-free hulls (same geometry).

Ground truth: one box per ship (the hull extent, not the sidelobes). Every
output is a deterministic function of the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SynthScene:
    """A synthetic scene: SAR amplitude float32 [H, W], optical uint8 [H, W, 3], ship boxes [N, 4]."""

    sar: np.ndarray
    optical: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    land: np.ndarray

    def sar_uint16(self, db_range: tuple[float, float] = (-30.0, 10.0)) -> np.ndarray:
        """Amplitude as a 16-bit product (linear amplitude scaled so db_range maps into 1..65535)."""
        lo, hi = db_range
        db = 20 * np.log10(np.maximum(self.sar, 1e-6))
        amp = 10 ** (np.clip(db, lo, hi) / 20)
        return np.clip(amp / 10 ** (hi / 20) * 65535, 1, 65535).astype(np.uint16)

    def sar_uint8(self, db_range: tuple[float, float] = (-25.0, 5.0)) -> np.ndarray:
        """8-bit quick-look: dB clipped to db_range and scaled to 0..255."""
        lo, hi = db_range
        db = 20 * np.log10(np.maximum(self.sar, 1e-6))
        return np.round((np.clip(db, lo, hi) - lo) / (hi - lo) * 255).astype(np.uint8)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: int) -> np.ndarray:
    """Smooth random field in [0, 1] by bicubic upsampling of coarse noise."""
    from PIL import Image

    gh, gw = max(2, h // scale + 2), max(2, w // scale + 2)
    coarse = rng.random((gh, gw)).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse, mode="F").resize((w, h), Image.BICUBIC))
    lo, hi = field.min(), field.max()
    return (field - lo) / max(hi - lo, 1e-6)


def synth_scene(
    seed: int,
    height: int = 512,
    width: int = 512,
    n_ships: int | tuple[int, int] = (3, 12),
    looks: int = 3,
    land: bool = True,
    ship_length: tuple[float, float] = (8.0, 60.0),
) -> SynthScene:
    """Generate one scene.

    Args:
        seed: the scene is a deterministic function of it.
        height, width: size in pixels.
        n_ships: a count, or a (min, max) range drawn from.
        looks: speckle looks L (1 = single-look, strongest speckle).
        land: add land and a coastline along one edge.
        ship_length: ship length range in pixels.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)

    # land: a noisy front entering from a random edge; ships stay at sea
    land_mask = np.zeros((height, width), bool)
    if land:
        side = rng.integers(4)
        depth = rng.uniform(0.1, 0.35)
        coord = [yy / height, 1 - yy / height, xx / width, 1 - xx / width][side]
        wobble = (_smooth_noise(rng, height, width, 64) - 0.5) * 0.15
        land_mask = coord + wobble < depth

    # radar cross-section (mean intensity) per pixel
    texture = rng.gamma(shape=4.0, scale=1 / 4.0, size=(height, width)).astype(np.float32)
    swell = 1 + 0.3 * np.sin(
        2 * np.pi * (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)) / rng.uniform(20, 60)
    )
    sigma = 0.004 * texture * swell  # sea: about -24 dB
    if land:
        rough = 0.05 + 0.4 * _smooth_noise(rng, height, width, 24)
        sigma = np.where(land_mask, rough * rng.gamma(2.0, 0.5, size=(height, width)), sigma)

    count = n_ships if isinstance(n_ships, int) else int(rng.integers(n_ships[0], n_ships[1] + 1))
    boxes, hulls = [], []
    attempts = 0
    while len(boxes) < count and attempts < count * 50:
        attempts += 1
        length = rng.uniform(*ship_length)
        beam = length * rng.uniform(0.15, 0.3)
        theta = rng.uniform(0, np.pi)
        cx, cy = rng.uniform(length, width - length), rng.uniform(length, height - length)
        c, s = np.cos(theta), np.sin(theta)
        half_w = abs(c) * length / 2 + abs(s) * beam / 2
        half_h = abs(s) * length / 2 + abs(c) * beam / 2
        box = np.array([cx - half_w, cy - half_h, cx + half_w, cy + half_h])
        x0, y0, x1, y1 = (int(v) for v in (box[0] - 2, box[1] - 2, box[2] + 3, box[3] + 3))
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height or land_mask[y0:y1, x0:x1].any():
            continue
        if boxes and (np.abs(np.asarray(boxes)[:, :2] - box[:2]).max(axis=1) < length).any():
            continue
        u = (xx[y0:y1, x0:x1] - cx) * c + (yy[y0:y1, x0:x1] - cy) * s
        v = -(xx[y0:y1, x0:x1] - cx) * s + (yy[y0:y1, x0:x1] - cy) * c
        hull = (u / (length / 2)) ** 2 + (v / (beam / 2)) ** 2 <= 1
        if not hull.any():
            continue
        brightness = rng.uniform(20, 200)  # 13..23 dB above unity
        scatter = rng.gamma(1.5, 1 / 1.5, size=hull.shape)
        sigma[y0:y1, x0:x1] = np.where(hull, brightness * scatter, sigma[y0:y1, x0:x1])
        # sidelobes: a decaying cross through the strongest scatterer, along range and azimuth
        py, px = int(round(cy)), int(round(cx))
        lobe_len = int(length * rng.uniform(0.6, 1.5))
        for axis in (0, 1):
            for k in range(-lobe_len, lobe_len + 1):
                yk, xk = (py + k, px) if axis == 0 else (py, px + k)
                if 0 <= yk < height and 0 <= xk < width:
                    sigma[yk, xk] += brightness * 0.05 / (1 + abs(k) / 3) ** 2
        ys, xs = np.nonzero(hull)
        boxes.append([x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1])
        hulls.append((y0, x0, hull))

    speckle = rng.gamma(shape=looks, scale=1 / looks, size=(height, width)).astype(np.float32)
    amplitude = np.sqrt(sigma * speckle).astype(np.float32)

    # optical rendering of the same layout
    sea_rgb = np.array([18, 42, 74], np.float32)
    opt = np.empty((height, width, 3), np.float32)
    opt[:] = sea_rgb + (_smooth_noise(rng, height, width, 32)[..., None] - 0.5) * 12
    if land:
        veg = _smooth_noise(rng, height, width, 16)[..., None]
        land_rgb = veg * np.array([70, 100, 45]) + (1 - veg) * np.array([130, 110, 80])
        land_rgb = land_rgb + rng.normal(0, 6, size=(height, width, 1))
        opt = np.where(land_mask[..., None], land_rgb, opt)
        # a pale beach one band wide along the coast
        shifted = np.zeros_like(land_mask)
        shifted[1:, :] |= land_mask[:-1, :]
        shifted[:-1, :] |= land_mask[1:, :]
        shifted[:, 1:] |= land_mask[:, :-1]
        shifted[:, :-1] |= land_mask[:, 1:]
        opt = np.where(
            (shifted & ~land_mask)[..., None], np.array([200, 190, 160], np.float32), opt
        )
    for y0, x0, hull in hulls:
        region = opt[y0 : y0 + hull.shape[0], x0 : x0 + hull.shape[1]]
        region[hull] = rng.uniform(170, 235)
    optical = np.clip(opt, 0, 255).astype(np.uint8)

    return SynthScene(
        sar=amplitude,
        optical=optical,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        labels=np.zeros(len(boxes), np.int64),
        land=land_mask,
    )
