"""Calibration and guard inputs: real images through the runtime's own pipeline.

The network inputs used to calibrate an INT8 model are made by the code the board runs:
:class:`InputCapture` is the runtime's :class:`ScenePipeline` (read, one clip range per
scene, tiles, preprocessing, letterbox) with the network call replaced by keeping the
inputs. A large scene therefore gives tiles cut by the runtime's tiler; an SSDD chip gives
one letterboxed input.

Calibration reads the run's TRAIN records only (:func:`sarbridge.train.data.detection.split_records`
keeps validation and test apart); the list of what was read, and its sha256, go into the
manifest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarbridge.runtime.detector import ScenePipeline, scene_settings
from sarbridge.runtime.errors import DataError

from .errors import CompressError


class InputCapture(ScenePipeline):
    """The deployed scene pipeline of a manifest, keeping the network inputs instead of
    running a network."""

    def __init__(self, manifest: dict):
        super().__init__(**scene_settings(manifest))
        self.inputs: list[np.ndarray] = []

    def run_inputs(self, inputs: np.ndarray, timings: dict | None = None) -> list:
        self.inputs.extend(inputs)
        empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
        return [empty] * len(inputs)


@dataclass
class CalibrationSet:
    """Network inputs [N, C, S, S] and where each came from (``path#tile``)."""

    inputs: np.ndarray
    items: list[str]
    split: str
    skipped: list[str]

    def list_bytes(self) -> bytes:
        """The list as written to calibration.txt: one ``path#tile`` per line."""
        return ("\n".join(self.items) + "\n").encode()

    @property
    def list_sha256(self) -> str:
        """sha256 of calibration.txt (``sha256sum calibration.txt`` gives the same)."""
        return hashlib.sha256(self.list_bytes()).hexdigest()

    def write_list(self, path: Path) -> None:
        path.write_bytes(self.list_bytes())


def _relative(path: Path, root: Path | None) -> str:
    try:
        return str(Path(path).relative_to(root)) if root else str(path)
    except ValueError:
        return str(path)


def collect_inputs(
    manifest: dict,
    records,
    count: int,
    seed: int,
    split: str,
    root: Path | None = None,
    per_scene: int | None = None,
    progress: bool = True,
) -> CalibrationSet:
    """``count`` network inputs from ``records`` (taken in a seeded order), made by the
    manifest's deployed pipeline. A scene cut into several tiles gives at most ``per_scene``
    of them (seeded choice; default count // 8, at least 1). Unreadable images are reported
    and skipped.

    Raises:
        CompressError: no records, or none of them could be read.
    """
    from tqdm import tqdm

    if count < 1:
        raise CompressError(f"the calibration count must be at least 1, not {count}")
    if not records:
        raise CompressError(f"no {split} images to calibrate on")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(records))
    per_scene = per_scene or max(1, count // 8)
    capture = InputCapture(manifest)
    inputs, items, skipped = [], [], []
    bar = tqdm(total=count, desc=f"{split} inputs", unit="input", disable=not progress, leave=False)
    for k in order:
        rec = records[int(k)]
        capture.inputs = []
        try:
            capture.detect(rec.path)
        except DataError as exc:
            skipped.append(str(exc))
            print(f"  skipped, unreadable: {exc}")
            continue
        got = capture.inputs
        picks = range(len(got))
        if len(got) > per_scene:
            picks = sorted(rng.choice(len(got), per_scene, replace=False))
        for t in picks:
            if len(inputs) == count:
                break
            inputs.append(got[t])
            items.append(f"{_relative(rec.path, root)}#{t}")
            bar.update(1)
        if len(inputs) == count:
            break
    bar.close()
    if not inputs:
        raise CompressError(
            f"none of the {len(records)} {split} images could be read"
            + (f", e.g. {skipped[0]}" if skipped else "")
        )
    return CalibrationSet(np.stack(inputs).astype(np.float32), items, split, skipped)
