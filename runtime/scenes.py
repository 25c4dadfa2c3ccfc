"""`sarbridge detect`: many scenes through one detector, bad files reported and skipped.

Outputs never overwrite each other: every scene gets a name of its own in the run (a second
``a.png`` next to ``a.jpg`` is written as ``a_2``, or further when ``a_2`` is itself a scene's
name, and the outcome says so); the output folder is checked writable before the first scene;
a scene's JSON, GeoJSON and overlay are published together (renamed into place after all of
them were written, the JSON last), so a JSON never exists without its overlay.

When the detector is pipelined (a device backend, or ``--pipelined``), a worker thread begins
the next scene while the network runs the current one: it opens it (for PNG, JPEG and BMP the
whole decode), finds its clip range and prepares its first batch of network inputs
(:meth:`~sarbridge.runtime.detector.ScenePipeline.begin`). For a stream of chips that is all
the host work before the network. A second worker decodes the last batch of network outputs,
merges the tiles and writes the files of the scene before, also while the network runs
(:meth:`~sarbridge.runtime.detector.InferredScene.result`); its outcome is reported once the
next scene's network has run. Two decoded scenes are then in memory at once (three with an
overlay, which reads its scene again), so a board short of memory may need it off
(``--no-pipelined``). A scene's reported seconds include its
beginning and its writing, wherever they ran.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sarbridge.runtime.detector import BegunScene, Detector, InferredScene, SceneResult
from sarbridge.runtime.errors import DataError, SarbridgeError
from sarbridge.runtime.fileio import atomic_group, writable_dir
from sarbridge.runtime.imageio import IMAGE_SUFFIXES, image_size
from sarbridge.runtime.outputs import coco_document, geojson_document, render_overlay


@dataclass
class SceneOutcome:
    path: Path
    ok: bool
    message: str
    outputs: list[Path]
    result: SceneResult | None = None
    seconds: float = 0.0
    name: str = ""  # the stem of its output files


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


def output_names(paths: list[Path]) -> list[str]:
    """A distinct output stem per scene, deterministic for the order given.

    A scene keeps its file stem unless an earlier scene has it; then it gets ``<stem>_<n>``
    with the smallest n >= 2 that is neither taken nor another scene's own stem. Names are
    compared case-blind (a case-insensitive file system would merge them otherwise).
    """
    stems = {p.stem.casefold() for p in paths}
    taken: set[str] = set()
    names = []
    for p in paths:
        name = p.stem
        if name.casefold() in taken:
            n = 2
            while f"{p.stem}_{n}".casefold() in taken | stems:
                n += 1
            name = f"{p.stem}_{n}"
        taken.add(name.casefold())
        names.append(name)
    return names


def _unique(paths: list[Path]) -> list[Path]:
    """``paths`` without repeats of one file (given twice, or as a file and in its folder)."""
    seen, out = set(), []
    for p in paths:
        key = p.resolve() if p.exists() else p
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _lower_priority() -> None:
    """Run this (worker) thread at a lower priority where the OS allows it (Linux: a thread's
    nice value), so that beginning the next scene and writing the one before take the CPU the
    current scene leaves idle (while a device runs its network) rather than slowing the current
    scene on a board with few cores."""
    import os
    import threading

    with contextlib.suppress(AttributeError, OSError):  # no per-thread priority here
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def _begin_scene(detector: Detector, path: Path, fresh: bool) -> tuple[BegunScene, float]:
    """``path`` begun by ``detector`` (opened, planned, the first batch prepared; in a new
    array when ``fresh``: it is begun on a worker thread) and the seconds it took. The header
    is checked against the limits and the tile plan before any pixel is decoded (a PNG or JPEG
    is decoded whole when it is opened)."""
    t0 = time.perf_counter()
    h, w = image_size(path)
    detector.plan(h, w, path)
    return detector.begin(path, fresh_inputs=fresh), time.perf_counter() - t0


# what a bad scene may raise: reported in its outcome, and the other scenes go on
SCENE_ERRORS = (SarbridgeError, OSError, ValueError, MemoryError)


def detect_scenes(
    inputs: list[str | Path],
    detector: Detector,
    out_dir: str | Path,
    overlay: bool = False,
    geojson: bool = True,
    progress: bool = True,
    on_outcome: Callable[[SceneOutcome], None] | None = None,
    prefetch: bool | None = None,
) -> list[SceneOutcome]:
    """Run ``detector`` over every scene; write ``<name>.json`` (+ ``.geojson``, ``.overlay.png``).

    A scene that cannot be read or processed is reported in its outcome and the
    others go on; results of finished scenes are already on disk (atomic writes).

    Args:
        on_outcome: called with each scene's outcome, in order, as soon as it is known (the
            CLI prints it): with ``prefetch``, once the network has run the next scene; without
            it a failed scene is printed above the progress bar.
        prefetch: while the network runs a scene, begin the next one and decode and write the
            one before on two worker threads (see the module docstring); None: when
            ``detector.pipelined``.

    Raises:
        SarbridgeError: no image files in ``inputs``, or ``out_dir`` cannot be written (checked
            before the first scene).
    """
    from tqdm import tqdm

    paths = _unique(expand_inputs(inputs))
    if not paths:
        raise SarbridgeError(f"no image files found in {[str(i) for i in inputs]}")
    out_dir = writable_dir(out_dir)
    info = {
        "model": detector.manifest.get("name", detector.artifact.name),
        "model_sha256": detector.manifest["model"]["sha256"],
        "backend": detector.backend.description,
        "score_threshold": detector.score_threshold,
        "tiling": detector.manifest["tiling"],
    }
    outcomes = []
    prefetch = detector.pipelined if prefetch is None else prefetch
    pool = writer = None
    if prefetch:
        pool = ThreadPoolExecutor(1, "sarbridge-read", initializer=_lower_priority)
        writer = ThreadPoolExecutor(1, "sarbridge-write", initializer=_lower_priority)
    pending: Future | None = pool.submit(_begin_scene, detector, paths[0], True) if pool else None
    scenes = tqdm(paths, desc="scenes", unit="scene", disable=not progress or len(paths) < 2)
    report = scenes if on_outcome is None else None
    opening: Future | None = None
    writing: Future | None = None  # the previous scene's outputs, written meanwhile

    def record(outcome: SceneOutcome) -> None:
        if not outcome.ok and report is not None:
            report.write(f"FAILED {outcome.path}: {outcome.message}")
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    try:
        for k, (path, name) in enumerate(zip(scenes, output_names(paths), strict=True)):
            opening = pending
            if pool is not None:  # the next scene begins while this one runs
                nxt = paths[k + 1] if k + 1 < len(paths) else None
                pending = pool.submit(_begin_scene, detector, nxt, True) if nxt else None
            scene = _SceneRun(path, name, detector, out_dir, info, overlay, geojson)
            done = scene.detect(opening, progress)
            opening = None
            if writing is not None:  # in order: the previous scene's outcome first
                record(writing.result())
                writing = None
            if done is not None:  # failed
                record(done)
            elif writer is not None:
                writing = writer.submit(scene.write)
            else:
                record(scene.write())
        if writing is not None:
            record(writing.result())
            writing = None
    finally:
        if pool is not None:
            try:
                # interrupted: a write under way finishes and its scene is reported
                if writing is not None:
                    with contextlib.suppress(Exception):
                        record(writing.result())
                # close what the worker opened (closing twice does nothing; a scene that
                # failed to begin holds nothing)
                for begun in (opening, pending):
                    if begun is not None and not begun.cancel():
                        with contextlib.suppress(Exception):
                            begun.result()[0].close()
                pool.shutdown()
            finally:
                writer.shutdown()  # never left writing while the caller cleans up
    return outcomes


class _SceneRun:
    """One scene: begun (or taken from the worker that began it), the network run on it, its
    detections decoded and its outputs published. :meth:`detect` (up to the network) and
    :meth:`write` (the rest) run apart so that, when scenes are pipelined, a worker decodes and
    writes this scene while the network runs the next one. A failure becomes the outcome."""

    def __init__(self, path: Path, name: str, detector: Detector, out_dir: Path, info: dict,
                 overlay: bool, geojson: bool):  # fmt: skip
        self.path, self.name, self.detector = path, name, detector
        self.out_dir, self.info, self.overlay, self.geojson = out_dir, info, overlay, geojson
        self.inferred: InferredScene | None = None
        self.t0 = time.perf_counter()

    def failed(self, exc: BaseException) -> SceneOutcome:
        if isinstance(exc, DataError) and exc.path == self.path:
            message = exc.reason  # the line names the scene already
        elif isinstance(exc, MemoryError):
            message = f"{type(exc).__name__}: {exc}"
        else:
            message = str(exc)
        return SceneOutcome(self.path, False, message, [], None, self.seconds(), self.name)

    def seconds(self) -> float:
        return time.perf_counter() - self.t0

    def detect(self, opening: Future | None, progress: bool) -> SceneOutcome | None:
        """Detect; None when it worked, the failed outcome otherwise."""
        from tqdm import tqdm

        try:
            begun, begin_s = (
                opening.result()
                if opening is not None
                else _begin_scene(self.detector, self.path, False)
            )
            if opening is not None:  # begun on the worker, meanwhile: its time counts here
                self.t0 -= begin_s
            with tqdm(
                total=len(begun.tiles), desc=self.path.name, unit="tile", leave=False,
                disable=not progress,
            ) as bar:
                self.inferred = self.detector.infer(begun, progress=bar)  # closes the scene
        except SCENE_ERRORS as exc:
            return self.failed(exc)
        return None

    def write(self) -> SceneOutcome:
        """Decode the detected scene's last batch, merge its tiles and publish its outputs: its
        outcome."""
        try:
            result = self.inferred.result()
            t1 = time.perf_counter()
            written = _publish(result, self.detector, self.out_dir, self.name,
                               self.info | {"source": str(self.path)},
                               overlay=self.overlay, geojson=self.geojson)  # fmt: skip
            result.timings["write"] = time.perf_counter() - t1
        except SCENE_ERRORS as exc:
            return self.failed(exc)
        renamed = f" (written as {self.name}: another scene of this run is called {self.path.stem})"
        renamed = renamed if self.name != self.path.stem else ""
        seconds = self.seconds()
        return SceneOutcome(
            self.path,
            True,
            f"{len(result)} ships, {result.tiles} tiles, {seconds:.1f} s{renamed}",
            written,
            result,
            seconds,
            self.name,
        )


def _publish(
    result: SceneResult, detector: Detector, out_dir: Path, name: str, info: dict,
    *, overlay: bool, geojson: bool,
) -> list[Path]:  # fmt: skip
    """Write a scene's files together: overlay and GeoJSON first, the JSON last, all or none."""
    docs: list[tuple[Path, object]] = []
    if overlay:
        docs.append((out_dir / f"{name}.overlay.png", render_overlay(result)))
    if geojson and result.georef is not None:
        docs.append((out_dir / f"{name}.geojson", geojson_document(result, detector.classes, info)))
    docs.append((out_dir / f"{name}.json", coco_document(result, detector.classes, info)))
    with atomic_group([path for path, _ in docs]) as tmps:
        for tmp, (_, doc) in zip(tmps, docs, strict=True):
            if isinstance(doc, dict):
                tmp.write_text(json.dumps(doc) + "\n", encoding="utf-8")
            else:
                doc.save(tmp, format="PNG")
    return [path for path, _ in reversed(docs)]
