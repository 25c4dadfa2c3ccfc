"""Optical/SAR pair reader: co-registered scene pairs cut into aligned patches.

Layouts found under a root:

* pair folders: ``<root>/sar*/NAME`` and ``<root>/opt*/NAME`` with matching
  names (Sentinel-1/2 fragments, QXS-SAROPT's ``sar_256_oc_0.2`` /
  ``opt_256_oc_0.2``, the synthetic generator's output);
* one folder per scene: ``<root>/<scene>/`` holding one file with "sar" in
  its name and one with "opt" in its name (SIH1733 ``Pair-N``).

Each file pair is a *scene*. Patches are cut from scenes on a grid, and
train/test splits are made over scenes, never over patches, so no patch of a
test scene can leak into training.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarbridge.runtime.annotations import Problem
from sarbridge.runtime.errors import DataError
from sarbridge.runtime.imageio import IMAGE_SUFFIXES, image_size, read_image
from sarbridge.runtime.preprocess import to_single_channel


@dataclass(frozen=True)
class ScenePair:
    """A co-registered SAR/optical scene pair of the same ground."""

    scene_id: str
    sar_path: Path
    opt_path: Path
    height: int
    width: int


@dataclass(frozen=True)
class PatchPair:
    """An aligned patch window of a scene pair: rows [y0, y0+size), cols [x0, x0+size)."""

    scene: ScenePair
    y0: int
    x0: int
    size: int


def _listing(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise DataError(folder, f"cannot list the folder ({exc.strerror or exc})") from None


def _images(folder: Path) -> dict[str, Path]:
    return {
        p.stem: p for p in _listing(folder) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    }


def _checked_pair(scene_id: str, sar: Path, opt: Path, problems: list[Problem]) -> ScenePair | None:
    try:
        hs, ws = image_size(sar)
        ho, wo = image_size(opt)
    except DataError as exc:
        problems.append(Problem(exc.path, exc.reason))
        return None
    if (hs, ws) != (ho, wo):
        problems.append(
            Problem(sar, f"SAR is {ws}x{hs} but its optical pair {opt.name} is {wo}x{ho}")
        )
        return None
    return ScenePair(scene_id, sar, opt, hs, ws)


def find_scene_pairs(root: str | Path) -> tuple[list[ScenePair], list[Problem]]:
    """Scene pairs under ``root`` (see the module doc for layouts), with the problems found.

    Scene ids are ``<root name>/<name>`` so ids from several roots never clash.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "no such folder")
    subdirs = [d for d in _listing(root) if d.is_dir()]
    sar_dirs = [d for d in subdirs if d.name.lower().startswith("sar")]
    opt_dirs = [d for d in subdirs if d.name.lower().startswith("opt")]
    pairs, problems = [], []
    if sar_dirs and opt_dirs:
        if len(sar_dirs) != 1 or len(opt_dirs) != 1:
            raise DataError(
                root, f"ambiguous pair folders: {[d.name for d in sar_dirs + opt_dirs]}"
            )
        sar_files, opt_files = _images(sar_dirs[0]), _images(opt_dirs[0])
        for name in sorted(set(sar_files) | set(opt_files)):
            if name not in opt_files:
                problems.append(Problem(sar_files[name], f"no optical pair in {opt_dirs[0].name}/"))
            elif name not in sar_files:
                problems.append(Problem(opt_files[name], f"no SAR pair in {sar_dirs[0].name}/"))
            else:
                pair = _checked_pair(
                    f"{root.name}/{name}", sar_files[name], opt_files[name], problems
                )
                if pair:
                    pairs.append(pair)
    else:
        for d in subdirs:
            try:
                files = _images(d)
            except DataError as exc:  # one unreadable folder: reported, the others go on
                problems.append(Problem(exc.path, exc.reason))
                continue
            sar = [p for s, p in files.items() if "sar" in s.lower()]
            opt = [p for s, p in files.items() if "opt" in s.lower()]
            if not sar and not opt:
                continue
            if len(sar) != 1 or len(opt) != 1:
                problems.append(
                    Problem(
                        d,
                        f"expected one SAR and one optical image, found {len(sar)} and {len(opt)}",
                    )
                )
                continue
            pair = _checked_pair(f"{root.name}/{d.name}", sar[0], opt[0], problems)
            if pair:
                pairs.append(pair)
    if not pairs and not problems:
        raise DataError(
            root,
            "no optical/SAR pairs found (expected sar*/ + opt*/ folders, or one folder per pair)",
        )
    return pairs, problems


def cut_patches(
    scenes: list[ScenePair], size: int = 256, stride: int | None = None
) -> list[PatchPair]:
    """Aligned patch windows on a grid over each scene (partial edge patches are dropped)."""
    stride = stride or size
    patches = []
    for s in scenes:
        for y in range(0, s.height - size + 1, stride):
            for x in range(0, s.width - size + 1, stride):
                patches.append(PatchPair(s, y, x, size))
    return patches


def split_by_scene(
    scenes: list[ScenePair], test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[ScenePair], list[ScenePair]]:
    """Split scenes (not patches) into train and test.

    The assignment is a seeded hash of the scene id, so it is stable when
    scenes are added or reordered, and at least one scene lands on each side
    when there are two or more.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    keyed = sorted(
        scenes, key=lambda s: hashlib.sha256(f"{seed}:{s.scene_id}".encode()).hexdigest()
    )
    n_test = int(round(len(keyed) * test_fraction))
    if len(keyed) >= 2:
        n_test = min(max(n_test, 1), len(keyed) - 1)
    test_ids = {s.scene_id for s in keyed[:n_test]}
    return [s for s in scenes if s.scene_id not in test_ids], [
        s for s in scenes if s.scene_id in test_ids
    ]


class PairLoader:
    """Reads patch pairs, keeping decoded scenes in a small LRU cache.

    ``load(patch)`` returns (sar [size, size] in its stored dtype, optical
    [size, size, 3] uint8).
    """

    def __init__(self, max_scenes: int = 64):
        self.max_scenes = max_scenes
        self._cache: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def scene(self, scene: ScenePair) -> tuple[np.ndarray, np.ndarray]:
        if scene.scene_id in self._cache:
            self._cache.move_to_end(scene.scene_id)
            return self._cache[scene.scene_id]
        sar = to_single_channel(read_image(scene.sar_path), scene.sar_path)
        opt = read_image(scene.opt_path)
        if opt.ndim == 2:
            opt = np.repeat(opt[:, :, None], 3, axis=2)
        elif opt.shape[2] == 4:
            opt = opt[:, :, :3]
        if opt.dtype != np.uint8:
            raise DataError(
                scene.opt_path, f"optical images must be 8-bit RGB, got {opt.dtype.name}"
            )
        self._cache[scene.scene_id] = (sar, opt)
        while len(self._cache) > self.max_scenes:
            self._cache.popitem(last=False)
        return sar, opt

    def load(self, patch: PatchPair) -> tuple[np.ndarray, np.ndarray]:
        sar, opt = self.scene(patch.scene)
        ys, xs = slice(patch.y0, patch.y0 + patch.size), slice(patch.x0, patch.x0 + patch.size)
        return sar[ys, xs], opt[ys, xs]
