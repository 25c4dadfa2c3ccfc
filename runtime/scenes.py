"""`sarbridge detect`: many scenes through one detector, bad files reported and skipped."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from sarbridge.runtime.detector import Detector, SceneResult
from sarbridge.runtime.errors import SarbridgeError
from sarbridge.runtime.imageio import IMAGE_SUFFIXES, image_size
from sarbridge.runtime.outputs import coco_document, geojson_document, write_json, write_overlay


@dataclass
class SceneOutcome:
    path: Path
    ok: bool
    message: str
    outputs: list[Path]
    result: SceneResult | None = None
    seconds: float = 0.0


def expand_inputs(items: list[str | Path]) -> list[Path]:
    """Files as given; folders become their image files (sorted, not recursive)."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(
                sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            )
        else:
            out.append(p)  # a missing file is reported when it is read
    return out


def _names(paths: list[Path]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        n = seen.get(p.stem, 0)
        seen[p.stem] = n + 1
        names.append(p.stem if n == 0 else f"{p.stem}_{n + 1}")
    return names


def detect_scenes(
    inputs: list[str | Path],
    detector: Detector,
    out_dir: str | Path,
    overlay: bool = False,
    geojson: bool = True,
    progress: bool = True,
) -> list[SceneOutcome]:
    """Run ``detector`` over every scene; write ``<name>.json`` (+ ``.geojson``, ``.overlay.png``).

    A scene that cannot be read or processed is reported in its outcome and the
    others go on; results of finished scenes are already on disk (atomic writes).
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    paths = expand_inputs(inputs)
    if not paths:
        raise SarbridgeError(f"no image files found in {[str(i) for i in inputs]}")
    info = {
        "model": detector.manifest.get("name", detector.artifact.name),
        "model_sha256": detector.manifest["model"]["sha256"],
        "backend": detector.backend.description,
        "score_threshold": detector.score_threshold,
        "tiling": detector.manifest["tiling"],
    }
    outcomes = []
    scenes = tqdm(paths, desc="scenes", unit="scene", disable=not progress or len(paths) < 2)
    for path, name in zip(scenes, _names(paths), strict=True):
        t0 = time.perf_counter()
        try:
            h, w = image_size(path)
            tiles = len(detector.plan(h, w))
            with tqdm(
                total=tiles, desc=path.name, unit="tile", leave=False, disable=not progress
            ) as bar:
                result = detector.detect(path, progress=bar)
            t1 = time.perf_counter()
            written = [
                write_json(
                    out_dir / f"{name}.json",
                    coco_document(result, detector.classes, info | {"source": str(path)}),
                )
            ]
            if geojson and result.georef is not None:
                written.append(
                    write_json(
                        out_dir / f"{name}.geojson",
                        geojson_document(result, detector.classes, info | {"source": str(path)}),
                    )
                )
            if overlay:
                written.append(write_overlay(out_dir / f"{name}.overlay.png", result))
            result.timings["write"] = time.perf_counter() - t1
            seconds = time.perf_counter() - t0
            outcomes.append(
                SceneOutcome(
                    path,
                    True,
                    f"{len(result)} ships, {result.tiles} tiles, {seconds:.1f} s",
                    written,
                    result,
                    seconds,
                )
            )
        except (SarbridgeError, OSError, ValueError) as exc:
            outcomes.append(SceneOutcome(path, False, str(exc), [], None, time.perf_counter() - t0))
            scenes.write(f"FAILED {path}: {exc}")
    return outcomes
