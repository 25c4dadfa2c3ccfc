"""Detection datasets: records with their images decoded once through the runtime's
preprocessing (the deployed pixels), tiles of large scenes cut by the runtime's tiler, the
split into train / validation / test with unreadable images reported and left out."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sarbridge.runtime.annotations import ImageRecord, read_dataset
from sarbridge.runtime.errors import SarbridgeError
from sarbridge.runtime.imageio import read_image
from sarbridge.runtime.paths import resolve_data_path
from sarbridge.runtime.preprocess import SarPreprocess, preprocess

if TYPE_CHECKING:
    from sarbridge.train.recipes.detect import DetData


def load_image(rec: ImageRecord, params: SarPreprocess) -> np.ndarray:
    """A record's image decoded and preprocessed as deployed (float32 [1, H, W])."""
    return preprocess(read_image(rec.path), params, path=rec.path)


class DetectionSet:
    """Records with decoded, preprocessed images cached (float32 [1, H, W], in [0, 1] for 8-bit)."""

    def __init__(
        self, records: list[ImageRecord], params: SarPreprocess, cache: dict | None = None
    ):
        self.records = records
        self.params = params
        self._cache: dict[str, np.ndarray] = cache if cache is not None else {}

    def image(self, k: int) -> np.ndarray:
        rec = self.records[k]
        if rec.image_id not in self._cache:
            self._cache[rec.image_id] = load_image(rec, self.params)
        return self._cache[rec.image_id]


def visible(boxes: np.ndarray, clipped: np.ndarray) -> np.ndarray:
    """Ships that stay labelled after a crop: at least 40 % of the box and more than a pixel left."""

    def area(b):
        return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)

    return (area(clipped) >= 0.4 * np.maximum(area(boxes), 1e-6)) & (area(clipped) > 1)


class TiledSet(DetectionSet):
    """Training tiles of large scenes: each scene is cut by the runtime's :func:`tile_grid`
    (``size``, ``overlap``); a tile is a record of its own (boxes clipped to the tile, a ship
    kept when at least 40 % of it is inside) whose image is a window of the scene's cached
    preprocessed pixels (one clip range per scene, as deployed). Tiles without ships stay:
    open sea is what most of a scene is."""

    def __init__(
        self,
        scenes: list[ImageRecord],
        params: SarPreprocess,
        size: int,
        overlap: float,
        cache: dict | None = None,
    ):
        from sarbridge.runtime.tiling import tile_grid

        super().__init__([], params)
        self.scenes = DetectionSet(scenes, params, cache)
        self.windows: list[tuple[int, object]] = []
        for k, rec in enumerate(scenes):
            for tile in tile_grid(rec.height, rec.width, size, overlap):
                boxes = rec.boxes - np.array([tile.x0, tile.y0, tile.x0, tile.y0], np.float32)
                clipped = np.clip(boxes, 0, [tile.w, tile.h, tile.w, tile.h]).astype(np.float32)
                keep = visible(boxes, clipped)
                self.records.append(
                    ImageRecord(
                        f"{rec.image_id}@{tile.y0},{tile.x0}",
                        rec.path,
                        tile.h,
                        tile.w,
                        clipped[keep],
                        rec.labels[keep],
                    )
                )
                self.windows.append((k, tile))

    def image(self, k: int) -> np.ndarray:
        scene, tile = self.windows[k]
        pixels = self.scenes.image(scene)
        return pixels[:, tile.y0 : tile.y0 + tile.h, tile.x0 : tile.x0 + tile.w]


def leave_out_unreadable(
    records: list[ImageRecord], params: SarPreprocess, split: str, cache: dict | None = None
) -> tuple[list[ImageRecord], list[str]]:
    """Decode and preprocess every record's image once; the records whose image cannot be read
    (corrupt, truncated, NaN, wrong bit depth) are left out and named in the returned lines,
    so a bad file is reported before training rather than ending a run hours in. ``cache``
    (image id -> preprocessed pixels) keeps the decoded images for the split that caches them."""
    kept, bad = [], []
    for rec in records:
        try:
            img = load_image(rec, params)
        except SarbridgeError as exc:
            bad.append(f"{split}: {exc}")
            continue
        if cache is not None:
            cache[rec.image_id] = img
        kept.append(rec)
    return kept, bad


def split_records(data: DetData, quiet: bool = False):
    """The dataset of ``data`` (the recipe's ``data`` block) and its train / validation / test
    records as a run sees them: validation is the seeded ``val_fraction`` of the train split.
    Compression calibrates on the train records and guards on the validation ones, so both
    come from here and never overlap."""
    ds = read_dataset(resolve_data_path(data.root))
    if ds.problems and not quiet:
        print(
            f"{len(ds.problems)} problem(s) in {ds.root}; bad items are left out, e.g. {ds.problems[0]}"
        )
    train = ds.split(data.train_split)
    test = ds.split(data.test_split)
    if not 0 <= data.val_fraction < 1:
        raise SarbridgeError(
            f"data.val_fraction must be in [0, 1), not {data.val_fraction} "
            "(0: no validation split, the last epoch is kept)"
        )
    rng = np.random.default_rng(data.split_seed)
    order = rng.permutation(len(train))
    n_val = int(round(len(train) * data.val_fraction))
    val = [train[i] for i in sorted(order[:n_val])]
    train = [train[i] for i in sorted(order[n_val:])]
    if data.max_train_images:
        train = train[: data.max_train_images]
    return ds, train, val, test


def make_sets(data: DetData):
    """Train / validation / test sets of ``data`` (the recipe's ``data`` block): the classes and
    a summary for run.json come with them."""
    ds, train, val, test = split_records(data)
    params = SarPreprocess.from_dict(data.preprocess)
    tiled = bool(data.tile_size)
    # whole validation and test scenes of a tiled dataset are read again at each evaluation
    caches = {"train": {}, "val": None if tiled else {}, "test": None if tiled else {}}
    (train, bad), (val, bad_val), (test, bad_test) = (
        leave_out_unreadable(recs, params, split, caches[split])
        for split, recs in (("train", train), ("val", val), ("test", test))
    )
    left_out = bad + bad_val + bad_test
    for line in left_out:
        print(f"left out, unreadable: {line}")
    if not train:
        raise SarbridgeError(f"no readable training images in {ds.root}")
    train_set = (
        TiledSet(train, params, data.tile_size, data.tile_overlap, caches["train"])
        if tiled
        else DetectionSet(train, params, caches["train"])
    )
    val_set = DetectionSet(val, params, caches["val"])
    test_set = DetectionSet(test, params, caches["test"])
    summary = {
        "root": str(ds.root),
        "format": ds.format,
        "classes": list(ds.classes),
        "images": {"train": len(train), "val": len(val), "test": len(test)},
        "boxes": {
            "train": int(sum(len(r.boxes) for r in train)),
            "test": int(sum(len(r.boxes) for r in test)),
        },
    }
    if data.tile_size:
        summary["tiles"] = {
            "size": data.tile_size,
            "overlap": data.tile_overlap,
            "train_tiles": len(train_set.records),
            "train_tiles_with_ships": sum(1 for r in train_set.records if len(r.boxes)),
        }
    if left_out:
        summary["left_out_unreadable"] = left_out
    return train_set, val_set, test_set, ds.classes, summary


def training_set_anchors(train: DetectionSet, input_size: int, k: int = 9) -> np.ndarray:
    """k-means anchors of the training boxes as the network sees them (letterboxed)."""
    from sarbridge.train.models.yolov3 import kmeans_anchors

    wh = [
        (r.boxes[:, 2:] - r.boxes[:, :2]) * (input_size / max(r.height, r.width))
        for r in train.records
        if len(r.boxes)
    ]
    return kmeans_anchors(np.concatenate(wh), k=k)
