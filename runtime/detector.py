"""The deployed detector: an exported artifact run on whole scenes, torch-free.

    det = Detector.from_artifact("artifacts/det_edge")
    result = det.detect("scene.tif")          # boxes, scores, labels in scene pixels
    result.map_boxes                           # map coordinates when the scene is georeferenced

A scene goes: windowed reads -> the manifest's preprocessing (one clip range per
scene) -> tiles of ``tiling.size`` with ``tiling.overlap``, each fitted into the
network input (letterbox) -> backend in batches -> decode (the numpy code the
training evaluation uses) -> cross-tile merge. A scene no larger than a tile, or
no longer than ``tiling.whole_scene_max`` (the largest image a detector trained
on whole images saw), is one tile, letterboxed whole exactly as in training
evaluation. Memory is bounded by the
tile batch (plus the scene sample for the clip range), not by the scene.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sarbridge.runtime.backends import open_backend
from sarbridge.runtime.decode import (
    DEFAULT_DECODE,
    Letterbox,
    decode_views,
    flip_inputs,
    get_decoder,
    letterbox,
    letterbox_shape,
    pad_letterbox,
    parse_flips,
)
from sarbridge.runtime.errors import DataError, ManifestError, SarbridgeError
from sarbridge.runtime.imageio import ArrayRaster, GeoRef, Raster, open_raster
from sarbridge.runtime.limits import get_limits
from sarbridge.runtime.manifest import (
    MANIFEST_NAME,
    check_model_io,
    letterbox_of,
    load_manifest,
    preprocess_of,
)
from sarbridge.runtime.preprocess import (
    clip_range,
    is_eight_bit,
    preprocess,
    scene_sample,
    to_single_channel,
)
from sarbridge.runtime.tiling import Tile, merge_tile_detections, tile_count, tile_grid

STAGES = ("read", "preprocess", "model", "decode", "merge")


@dataclass
class SceneResult:
    """Detections of one scene in scene pixels (xyxy), plus where the time went."""

    path: str | None
    height: int
    width: int
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    tiles: int
    georef: GeoRef | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage

    @property
    def map_boxes(self) -> np.ndarray | None:
        """Boxes as map-coordinate corners [N, 4] (x of col x1, y of row y1, x of x2, y of y2)."""
        if self.georef is None:
            return None
        x1, y1 = self.georef.pixel_to_map(self.boxes[:, 0], self.boxes[:, 1])
        x2, y2 = self.georef.pixel_to_map(self.boxes[:, 2], self.boxes[:, 3])
        return np.stack([x1, y1, x2, y2], axis=1)

    def __len__(self) -> int:
        return len(self.scores)


@dataclass
class BegunScene:
    """A scene :meth:`ScenePipeline.begin` opened, planned and prepared the first batch of."""

    raster: Raster
    owned: bool  # opened by begin(): closed by infer() (or finish())
    tiles: list
    whole: np.ndarray | None  # the scene's pixels when it is one tile
    lo_hi: tuple[float, float]
    batches: list
    first: tuple  # batch 0's network inputs and how each tile was fitted into them
    timings: dict[str, float]

    def close(self) -> None:
        """Close the scene if begin() opened it (a second call does nothing)."""
        if self.owned:
            self.owned = False
            self.raster.close()


@dataclass
class InferredScene:
    """A scene the network has run on (:meth:`ScenePipeline.infer`), before its last batch is
    decoded and its tiles merged: :meth:`result` does that, possibly on another thread (a writer
    worker decodes this scene while the network runs the next one). Holds one batch of raw
    network outputs, not the scene's pixels (it is closed already)."""

    pipeline: ScenePipeline
    path: str | None
    height: int
    width: int
    tiles: list
    georef: GeoRef | None
    per_tile: list  # detections of the tiles decoded already, in tile pixels
    last: tuple | None  # the last batch's raw network outputs and how each tile was fitted
    timings: dict[str, float]
    _result: SceneResult | None = None

    def result(self) -> SceneResult:
        """Decode the last batch and merge the tiles: the scene's detections (made once)."""
        if self._result is None:
            self._result = self.pipeline.conclude(self)
        return self._result


class ScenePipeline:
    """Whole scenes through tiles: reads, one clip range per scene, tiles letterboxed into the
    network input, :meth:`run_network` in batches and :meth:`decode_outputs`, detections back to
    scene pixels, cross-tile merge. The deployed :class:`Detector` and the training evaluation
    on large scenes are both this pipeline; they differ only in how the network runs
    (:meth:`run_inputs`: network and decode together, or the two apart).

    ``pipelined``: read and prepare the next batch of tiles on a worker thread while
    :meth:`run_network` runs the current one (two batches of inputs in memory instead of one).
    Worth it where the network runs on a device (GPU, NPU) or on other cores than the host work
    and releases the GIL; the detections are the same either way. The stage timings then
    overlap: read and preprocess run during model.

    Tiles are preprocessed and letterboxed straight into the batch array :meth:`run_network`
    gets. A subclass whose :meth:`run_network` does not keep that array past its return sets
    ``reuse_inputs``: the batch arrays are then kept (per thread) and filled again for every
    batch and scene, instead of fresh memory (and its page faults) each time.
    """

    reuse_inputs = False

    def __init__(
        self,
        params,
        input_size: int,
        tile_size: int,
        overlap: float,
        iou_threshold: float,
        max_detections: int,
        batch_size: int = 8,
        vote_iou: float | None = None,
        flips=(),
        pipelined: bool = False,
        letterbox_align: str = "corner",
        letterbox_fill: float = 0.0,
        whole_scene_max: int | None = None,
    ):
        self.params, self.input_size = params, int(input_size)
        self.letterbox_align, self.letterbox_fill = letterbox_align, float(letterbox_fill)
        self.tile_size, self.overlap = int(tile_size), float(overlap)
        # scenes up to this long side are one tile, letterboxed whole (None: the tile size)
        self.whole_scene_max = max(self.tile_size, int(whole_scene_max or 0))
        self.iou_threshold, self.max_detections = float(iou_threshold), int(max_detections)
        self.vote_iou = None if vote_iou is None else float(vote_iou)  # box voting after NMS
        self.flips = parse_flips(flips)  # test-time flips, merged with the plain view before NMS
        self.batch_size = max(1, int(batch_size))
        self.pipelined = bool(pipelined)
        self._local = threading.local()  # this thread's reused batch arrays (reuse_inputs)

    def run_inputs(self, inputs: np.ndarray, timings: dict | None = None) -> list:
        """Network inputs [B, C, S, S] -> per input (boxes, scores, labels) in input pixels."""
        raise NotImplementedError

    def run_network(self, inputs: np.ndarray, timings: dict | None = None):
        """The network alone on a batch: raw outputs that :meth:`decode_outputs` turns into
        :meth:`run_inputs`' detections, possibly later and on another thread (they must not
        share memory the next run overwrites). By default the network and decode together."""
        return self.run_inputs(inputs, timings)

    def decode_outputs(self, raw, timings: dict | None = None) -> list:
        """:meth:`run_network`'s raw outputs -> per input (boxes, scores, labels)."""
        return raw

    # ------------------------------------------------------------ scenes

    def detect(self, scene, progress=None) -> SceneResult:
        """Detect ships in a scene: a file path, an open :class:`Raster` or an [H, W] array.

        Args:
            progress: a tqdm-like object to ``update(n)`` per tile (optional).
        """
        return self.finish(self.begin(scene), progress)

    def begin(self, scene, fresh_inputs: bool = False) -> BegunScene:
        """Everything of :meth:`detect` before the network first runs: the scene opened (a path,
        an open :class:`Raster` or an [H, W] array), planned, its clip range found and its
        first batch of network inputs prepared. :meth:`finish` does the rest, possibly on
        another thread: a worker can begin the next scene while the network runs this one.

        Args:
            fresh_inputs: prepare the first batch in a new array, not in this thread's reused
                one: for a scene begun on one thread and finished on another, and for two
                scenes begun on one thread before the first is finished (they would share it).
        """
        timings = dict.fromkeys(STAGES, 0.0)
        t0 = time.perf_counter()
        if isinstance(scene, Raster):
            raster, owned = scene, False
        elif isinstance(scene, np.ndarray):
            raster, owned = ArrayRaster(scene), True
        else:
            raster, owned = open_raster(scene), True
        timings["read"] += time.perf_counter() - t0
        try:
            return self._begin_raster(raster, owned, timings, fresh_inputs)
        except BaseException:
            if owned:
                raster.close()
            raise

    def finish(self, begun: BegunScene, progress=None) -> SceneResult:
        """The network, decode and merge of a scene :meth:`begin` prepared; closes what it
        opened."""
        return self.infer(begun, progress).result()

    def infer(self, begun: BegunScene, progress=None) -> InferredScene:
        """The network on every batch of a scene :meth:`begin` prepared, each batch decoded but
        the last; closes what it opened. :meth:`InferredScene.result` does the rest."""
        try:
            return self._infer(begun, progress)
        finally:
            begun.close()

    def plan(self, height: int, width: int, path=None) -> list[Tile]:
        """The tiles a height x width scene is cut into: the whole scene when its long side is
        at most ``whole_scene_max``, else tiles of ``tile_size`` at ``overlap``.

        Raises:
            DataError: (naming ``path``) more tiles than the limit ``max_tiles`` allows.
        """
        if max(height, width) <= self.whole_scene_max:
            return [Tile(0, 0, height, width)]
        count = tile_count(height, width, self.tile_size, self.overlap)
        lim = get_limits()
        if count > lim.max_tiles:
            raise DataError(
                path,
                f"{width} x {height} pixels in {self.tile_size} px tiles at overlap "
                f"{self.overlap:g} is {count:,} tiles, over the limit of {lim.max_tiles:,} per "
                f"scene (raise it with {lim.describe('max_tiles')})",
            )
        return tile_grid(height, width, self.tile_size, self.overlap)

    def _begin_raster(self, raster: Raster, owned: bool, timings: dict, fresh: bool) -> BegunScene:
        H, W = raster.height, raster.width
        if isinstance(raster, ArrayRaster) and raster.channels > 1:
            # decoded in memory anyway (PNG/JPEG): collapse grey RGB(A) to one band once, not per tile
            t0 = time.perf_counter()
            raster = ArrayRaster(
                to_single_channel(raster.read(), raster.path), raster.path, raster.georef
            )
            timings["preprocess"] += time.perf_counter() - t0
        tiles = self.plan(H, W, raster.path)
        t0 = time.perf_counter()
        whole = None
        if len(tiles) == 1:
            whole = raster.read()  # one tile: the clip range comes from the scene itself
            t1 = time.perf_counter()
            timings["read"] += t1 - t0
            lo_hi = clip_range(to_single_channel(whole, raster.path), self.params, raster.path)
        elif (
            raster.channels == 1
            and is_eight_bit(raster.dtype)
            and self.params.eight_bit_passthrough
        ):
            t1 = t0
            lo_hi = (0.0, 255.0)  # what clip_range gives any 8-bit sample: no scene pass needed
        else:
            sample = scene_sample(raster)
            t1 = time.perf_counter()
            timings["read"] += t1 - t0
            lo_hi = clip_range(sample, self.params, raster.path)
            del sample
        timings["preprocess"] += time.perf_counter() - t1

        batches = [tiles[i : i + self.batch_size] for i in range(0, len(tiles), self.batch_size)]
        buffers = None if fresh else self._input_buffers(1, len(batches[0]))
        out = None if buffers is None else buffers[0][: len(batches[0])]
        first = self._prepare_batch(raster, whole, batches[0], lo_hi, timings, out)
        return BegunScene(raster, owned, tiles, whole, lo_hi, batches, first, timings)

    def _infer(self, begun: BegunScene, progress) -> InferredScene:
        raster, tiles, whole, lo_hi = begun.raster, begun.tiles, begun.whole, begun.lo_hi
        batches, timings = begun.batches, begun.timings
        pipelined = self.pipelined and len(batches) > 1
        # batch 0 was prepared by begin(): the others alternate between this thread's arrays
        buffers = self._input_buffers(2 if pipelined else 1, len(batches[0]))

        def prepare(i, stage_times):
            if i == 0:
                return begun.first
            out = None if buffers is None else buffers[i % len(buffers)][: len(batches[i])]
            return self._prepare_batch(raster, whole, batches[i], lo_hi, stage_times, out)

        per_tile: list = []
        last = None  # the previous batch's raw outputs: decoded once the next batch has run

        def run(inputs, boxes_back):
            nonlocal last
            raw = self.run_network(inputs, timings)
            if progress is not None:
                progress.update(len(boxes_back))
            if last is not None:
                self._decode_batch(*last, per_tile, timings)
            last = (raw, boxes_back)

        if pipelined:
            # the worker prepares batch i + 1 (into the other buffer) while the network runs batch i
            worker_times = dict.fromkeys(STAGES, 0.0)
            with ThreadPoolExecutor(1, thread_name_prefix="sarbridge-tiles") as pool:
                pending = pool.submit(prepare, 0, worker_times)
                for i in range(len(batches)):
                    inputs, boxes_back = pending.result()
                    if i + 1 < len(batches):
                        pending = pool.submit(prepare, i + 1, worker_times)
                    run(inputs, boxes_back)
            for stage in ("read", "preprocess"):
                timings[stage] += worker_times[stage]
        else:
            for i in range(len(batches)):
                run(*prepare(i, timings))
        return InferredScene(
            self,
            str(raster.path) if raster.path is not None else None,
            raster.height,
            raster.width,
            tiles,
            raster.georef,
            per_tile,
            last,
            timings,
        )

    def _decode_batch(self, raw, boxes_back, per_tile: list, timings: dict) -> None:
        """One batch's raw network outputs decoded, the detections back to tile pixels onto
        ``per_tile``."""
        dets = self.decode_outputs(raw, timings)
        t0 = time.perf_counter()
        per_tile.extend(
            (lb.to_image(b), s, lab) for (b, s, lab), lb in zip(dets, boxes_back, strict=True)
        )
        timings["decode"] += time.perf_counter() - t0

    def conclude(self, scene: InferredScene) -> SceneResult:
        """Decode the last batch of a scene :meth:`infer` ran and merge its tiles (use
        :meth:`InferredScene.result`, which does this once)."""
        raw, boxes_back = scene.last
        self._decode_batch(raw, boxes_back, scene.per_tile, scene.timings)
        scene.last = None  # decoded: the raw outputs are not needed again
        return self._merge(scene)

    def _merge(self, scene: InferredScene) -> SceneResult:
        """The tiles' detections merged into the scene's."""
        t0, per_tile, timings = time.perf_counter(), scene.per_tile, scene.timings
        if len(scene.tiles) == 1:
            boxes, scores, labels = per_tile[0]
            order = np.argsort(-scores, kind="stable")[: self.max_detections]
            boxes, scores, labels = boxes[order], scores[order], labels[order]
        else:
            boxes, scores, labels = merge_tile_detections(
                scene.tiles,
                per_tile,
                (scene.height, scene.width),
                self.iou_threshold,
                max_detections=self.max_detections,
                pre_merge_top_k=10 * self.max_detections,
            )
        timings["merge"] += time.perf_counter() - t0
        return SceneResult(
            scene.path,
            scene.height,
            scene.width,
            boxes.astype(np.float32),
            scores.astype(np.float32),
            labels.astype(np.int64),
            len(scene.tiles),
            scene.georef,
            timings,
        )

    def _input_buffers(self, count: int, batch: int) -> list[np.ndarray] | None:
        """``count`` batch arrays [B >= batch, C, S, S] kept by this thread (None unless
        ``reuse_inputs``): made once, filled again for every batch."""
        if not self.reuse_inputs:
            return None
        shape = (
            max(batch, self.batch_size),
            self.params.channels,
            self.input_size,
            self.input_size,
        )
        kept = getattr(self._local, "inputs", [])
        kept = [b for b in kept if b.shape == shape]
        while len(kept) < count:
            kept.append(np.empty(shape, np.float32))
        self._local.inputs = kept
        return kept[:count]

    def _prepare_batch(
        self, raster: Raster, whole, tiles: list[Tile], lo_hi, timings: dict, out=None
    ) -> tuple[np.ndarray, list[Letterbox]]:
        """Network inputs [B, C, S, S] of ``tiles`` (read, preprocessed and letterboxed straight
        into ``out``, or into a new batch array), and how each tile was fitted into its input."""
        size = self.input_size
        inputs = (
            np.empty((len(tiles), self.params.channels, size, size), np.float32)
            if out is None
            else out
        )
        boxes_back = []
        for k, tile in enumerate(tiles):
            t0 = time.perf_counter()
            pixels = whole if whole is not None else raster.read(tile.y0, tile.x0, tile.h, tile.w)
            t1 = time.perf_counter()
            boxes_back.append(self._fit(pixels, lo_hi, raster.path, inputs[k]))
            timings["read"] += t1 - t0
            timings["preprocess"] += time.perf_counter() - t1
        return inputs, boxes_back

    def _fit(self, pixels: np.ndarray, lo_hi, path, out: np.ndarray) -> Letterbox:
        """Preprocess ``pixels`` and letterbox them into the network input ``out`` [C, S, S]:
        a tile that needs no resizing is preprocessed in place, into the input's corner."""
        h, w = pixels.shape[:2]
        align, fill = self.letterbox_align, self.letterbox_fill
        box = letterbox_shape(h, w, self.input_size, align, fill)
        if (box.resized_height, box.resized_width) == (h, w):
            t, left = box.top, box.left
            preprocess(pixels, self.params, lo_hi, path, out=out[:, t : t + h, left : left + w])
            pad_letterbox(out, box)
        else:
            image = preprocess(pixels, self.params, lo_hi, path)
            letterbox(image, self.input_size, out=out, align=align, fill=fill)
        return box


def scene_settings(manifest: dict) -> dict:
    """:class:`ScenePipeline` arguments from a manifest: preprocessing, input and tile size,
    overlap, the longest scene letterboxed whole, NMS IoU, detection cap, box voting."""
    params, input_size = preprocess_of(manifest)
    align, fill = letterbox_of(manifest)
    post = manifest["postprocessing"]
    return {
        "params": params,
        "input_size": input_size,
        "letterbox_align": align,
        "letterbox_fill": fill,
        "tile_size": int(manifest["tiling"]["size"]),
        "overlap": float(manifest["tiling"]["overlap"]),
        "whole_scene_max": manifest["tiling"].get("whole_scene_max"),
        "iou_threshold": float(post["iou_threshold"]),
        "max_detections": int(post["max_detections"]),
        "vote_iou": post.get("vote_iou"),
    }


def runs_on_device(backend) -> bool:
    """True when ``backend`` runs the network on a device (GPU, NPU) rather than the host CPU:
    its first onnxruntime provider is not the CPU one, its OpenVINO (or TensorRT) device is not
    ``CPU``, or its torch device is not the CPU."""
    providers = getattr(backend, "providers", None)
    if providers:
        return providers[0] != "CPUExecutionProvider"
    device = getattr(backend, "device", None)
    if hasattr(device, "type"):  # a torch.device (the bench's PyTorch backend)
        return device.type != "cpu"
    return isinstance(device, str) and not device.upper().startswith("CPU")


class Detector(ScenePipeline):
    """An exported detection artifact loaded on a backend.

    Args:
        manifest: a validated manifest (see :func:`load_manifest`).
        artifact: the folder holding the manifest and model file.
        backend: backend name (``onnxruntime``).
        batch_size: tiles per backend call.
        score_threshold: overrides the manifest's operating threshold (e.g. 0.001 for AP).
        tta_flips: overrides the manifest's test-time flips (``postprocessing.tta_flips``):
            ``()``/``"off"`` for none, else names among ``"h"``, ``"v"``, ``"hv"``; each flip
            is one more network run per tile, merged with the plain view before NMS.
        pipelined: prepare the next batch of tiles while the backend runs the current one (see
            :class:`ScenePipeline`); None (default): when the backend runs on a device (an
            onnxruntime GPU/TensorRT provider, an OpenVINO GPU/NPU), not on the host's CPU.
        backend_options: passed to the backend (``providers``, ``threads``).
    """

    reuse_inputs = True  # run_inputs hands the batch to the backend and keeps nothing

    def __init__(
        self,
        manifest: dict,
        artifact: str | Path,
        backend: str = "onnxruntime",
        batch_size: int = 8,
        score_threshold: float | None = None,
        tta_flips=None,
        pipelined: bool | None = None,
        **backend_options,
    ):
        if manifest["task"] != "detect":
            raise SarbridgeError(
                f"{artifact}: this artifact's task is {manifest['task']!r}, not 'detect'"
            )
        self.manifest = manifest
        self.artifact = Path(artifact)
        post = manifest["postprocessing"]
        self.decoder = post.get("decode", DEFAULT_DECODE)
        try:
            decoder = get_decoder(self.decoder)
        except ValueError as exc:
            raise SarbridgeError(
                f"{self.artifact / MANIFEST_NAME}: postprocessing.decode: {exc}"
            ) from None
        missing = [key for key in decoder.requires if key not in post]
        if missing:
            raise SarbridgeError(
                f"{self.artifact / MANIFEST_NAME}: postprocessing.{missing[0]} is missing "
                f"(needed by the {self.decoder} decode)"
            )
        super().__init__(**scene_settings(manifest), batch_size=batch_size)
        try:
            self.flips = parse_flips(post.get("tta_flips") if tta_flips is None else tta_flips)
        except ValueError as exc:
            where = "postprocessing.tta_flips" if tta_flips is None else "tta_flips"
            raise SarbridgeError(f"{self.artifact / MANIFEST_NAME}: {where}: {exc}") from None
        if not decoder.runtime_nms:
            for what, on in (("vote_iou", self.vote_iou is not None), ("tta_flips", self.flips)):
                if on:
                    raise SarbridgeError(
                        f"{self.artifact / MANIFEST_NAME}: postprocessing.{what} needs the "
                        f"runtime's NMS; the {self.decoder!r} decode takes the graph's own"
                    )
        self.score_threshold = (
            float(post["score_threshold"]) if score_threshold is None else float(score_threshold)
        )
        self.classes = list(manifest["classes"])
        # None: the graph's own NMS made the detections (read from its outputs in _decode)
        self._candidates = (
            decoder.build(post, self.input_size, self.score_threshold)
            if decoder.runtime_nms
            else None
        )
        self.backend = open_backend(
            backend, self.artifact / manifest["model"]["file"], manifest, **backend_options
        )
        try:  # the manifest must describe this model file, before any scene is read
            check_model_io(manifest, self.backend.model_io(), self.artifact / MANIFEST_NAME)
        except ManifestError:
            self.backend.close()
            raise
        cap = self.backend.max_batch
        self.batch_size = max(1, min(self.batch_size, cap) if cap else self.batch_size)
        self.pipelined = runs_on_device(self.backend) if pipelined is None else bool(pipelined)

    @classmethod
    def from_artifact(cls, path: str | Path, backend: str = "onnxruntime", **kwargs) -> Detector:
        """Load ``path`` (an artifact folder, its manifest.json, or ``zoo:<name>``); the model
        hash is checked."""
        from sarbridge.runtime.zoo import resolve_artifact

        path = resolve_artifact(path)
        folder = path if path.is_dir() else path.parent
        return cls(load_manifest(path), folder, backend, **kwargs)

    # ------------------------------------------------------------ network

    def _decode(self, views: list[list[np.ndarray]], k: int):
        """Input ``k``'s detections from the backend outputs of every view (plain, then flips)."""
        if self._candidates is not None:
            return decode_views(
                [outputs[0][k] for outputs in views],
                self._candidates,
                self.flips,
                self.input_size,
                self.iou_threshold,
                self.max_detections,
                self.vote_iou,
            )
        boxes, scores, labels = views[0][0], views[0][1], views[0][2]  # batch-1 graph outputs
        keep = scores > self.score_threshold
        return (
            boxes[keep].astype(np.float32),
            scores[keep].astype(np.float32),
            labels[keep].astype(np.int64),
        )

    def run_network(self, inputs: np.ndarray, timings: dict | None = None) -> list:
        """The backend on ``inputs`` in chunks of the batch size, every view (plain, then
        flips): per chunk, its size and each view's outputs (arrays the backend no longer uses)."""
        raw, model_s = [], 0.0
        for start in range(0, len(inputs), self.batch_size):
            chunk = inputs[start : start + self.batch_size]
            views = []
            for flip in (None, *self.flips):
                x = chunk if flip is None else flip_inputs(chunk, flip)
                t0 = time.perf_counter()
                views.append(self.backend.run(x))
                model_s += time.perf_counter() - t0
            raw.append((len(chunk), views))
        if timings is not None:
            timings["model"] += model_s
        return raw

    def decode_outputs(self, raw: list, timings: dict | None = None) -> list:
        t0 = time.perf_counter()
        out = [self._decode(views, k) for n, views in raw for k in range(n)]
        if timings is not None:
            timings["decode"] += time.perf_counter() - t0
        return out

    def run_inputs(self, inputs: np.ndarray, timings: dict | None = None) -> list:
        return self.decode_outputs(self.run_network(inputs, timings), timings)

    def close(self) -> None:
        self.backend.close()
