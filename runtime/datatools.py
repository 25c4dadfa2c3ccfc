"""What ``sarbridge data`` does: check a dataset, tile a scene, write synthetic data."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sarbridge.runtime.annotations import Dataset, Problem, detect_format, read_dataset
from sarbridge.runtime.errors import DataError
from sarbridge.runtime.fileio import atomic_write_json, writable_dir
from sarbridge.runtime.imageio import IMAGE_SUFFIXES, open_raster, write_image
from sarbridge.runtime.pairs import PairLoader, cut_patches, find_scene_pairs
from sarbridge.runtime.tiling import read_tile, tile_grid


@dataclass
class CheckReport:
    """Result of :func:`check_path`: what was read, counted and found wrong."""

    path: Path
    kind: str
    lines: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    counts: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def render(self) -> str:
        out = [f"{self.path}: {self.kind}"] + [f"  {line}" for line in self.lines]
        if self.problems:
            out.append(f"  {len(self.problems)} problem(s):")
            out += [f"    {p}" for p in self.problems]
        else:
            out.append("  no problems found")
        return "\n".join(out)


def _progress(items, desc, enabled, unit="image"):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit=unit, leave=False)


def _box_stats(ds: Dataset) -> list[str]:
    boxes = np.concatenate([r.boxes for r in ds.records]) if ds.records else np.zeros((0, 4))
    if not len(boxes):
        return ["boxes: none"]
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    area = w * h
    small, large = int((area < 32**2).sum()), int((area >= 96**2).sum())
    q = lambda v: "min {:.0f} / median {:.0f} / max {:.0f}".format(*np.percentile(v, [0, 50, 100]))  # noqa: E731
    return [
        f"box width px: {q(w)}",
        f"box height px: {q(h)}",
        f"box size (COCO): {small} small (<32^2), {len(area) - small - large} medium, {large} large (>=96^2)",
    ]


def _check_detection(path: Path, progress: bool, decode: bool) -> CheckReport:
    ds = read_dataset(path, progress=progress)
    report = CheckReport(path, f"{ds.format.upper()} detection dataset, classes {list(ds.classes)}")
    report.problems += ds.problems
    good = []
    for rec in _progress(ds.records, "checking images", progress):
        try:
            if decode:
                with open_raster(rec.path) as r:
                    r.read()
                    hw = (r.height, r.width)
            else:
                from sarbridge.runtime.imageio import image_size

                hw = image_size(rec.path)
        except DataError as exc:
            report.problems.append(Problem(exc.path, exc.reason))
            continue
        if hw != (rec.height, rec.width):
            report.problems.append(
                Problem(
                    rec.path,
                    f"image is {hw[1]}x{hw[0]} but its annotation says {rec.width}x{rec.height}",
                )
            )
            continue
        good.append(rec)
    ds.records = good
    n_boxes = sum(len(r.boxes) for r in good)
    report.counts = {"images": len(good), "boxes": n_boxes, "splits": {}}
    report.lines.append(f"images: {len(good)} readable, boxes: {n_boxes}")
    ids = {r.image_id: r for r in good}
    for name, split_ids in ds.splits.items():
        recs = [ids[i] for i in split_ids if i in ids]
        nb = sum(len(r.boxes) for r in recs)
        report.counts["splits"][name] = {"images": len(recs), "boxes": nb}
        report.lines.append(f"split {name}: {len(recs)} images, {nb} boxes")
        missing = [i for i in split_ids if i not in ids]
        if missing:
            report.problems.append(
                Problem(
                    path,
                    f"split '{name}' lists {len(missing)} ids with no readable image, e.g. {missing[:3]}",
                )
            )
    if ds.splits:
        listed = {i for split_ids in ds.splits.values() for i in split_ids}
        orphans = sorted(i for i in ids if i not in listed)
        if orphans:
            report.problems.append(
                Problem(
                    path,
                    f"{len(orphans)} readable images are in no split file, e.g. {orphans[:3]}",
                )
            )
    elif good:
        report.lines.append(
            "no split files: 'train' and 'test' are a seeded 80/20 split of the images "
            f"({Dataset.DEFAULT_TEST_SHARE:.0%} test)"
        )
    report.lines += _box_stats(ds)
    return report


def _check_pairs(path: Path, progress: bool) -> CheckReport:
    scenes, problems = find_scene_pairs(path)
    report = CheckReport(path, "optical/SAR pair dataset", problems=list(problems))
    loader = PairLoader(max_scenes=1)
    good = []
    for s in _progress(scenes, "checking pairs", progress, unit="pair"):
        try:
            loader.scene(s)
        except DataError as exc:
            report.problems.append(Problem(exc.path, exc.reason))
            continue
        good.append(s)
    patches = cut_patches(good, 256)
    report.counts = {"scenes": len(good), "patches_256": len(patches)}
    report.lines.append(f"scene pairs: {len(good)}, 256x256 patch pairs: {len(patches)}")
    sizes = sorted({(s.width, s.height) for s in good})
    report.lines.append("scene sizes: " + ", ".join(f"{w}x{h}" for w, h in sizes[:6]))
    return report


def _check_scene(path: Path) -> CheckReport:
    report = CheckReport(path, "scene")
    try:
        with open_raster(path) as r:
            report.lines.append(
                f"{r.width}x{r.height}, {r.channels} band(s), {np.dtype(r.dtype).name}, "
                f"georeferenced: {'yes ' + str(r.georef.crs or '') if r.georef else 'no'}"
            )
            report.counts = {"height": r.height, "width": r.width}
            for tile in tile_grid(r.height, r.width, 2048, 0.0):  # decode all, window by window
                r.read(tile.y0, tile.x0, tile.h, tile.w)
    except DataError as exc:
        report.problems.append(Problem(exc.path, exc.reason))
    return report


def _is_coco_file(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and "images" in data and "annotations" in data


def _is_pair_folder(path: Path) -> bool:
    if not path.is_dir():
        return False
    names = [d.name.lower() for d in path.iterdir() if d.is_dir()]
    if any(n.startswith("sar") for n in names) and any(n.startswith("opt") for n in names):
        # synthetic output has both: a folder with a COCO file is a detection set first
        return not any(_is_coco_file(j) for j in path.glob("*.json"))
    return any(
        any("sar" in f.stem.lower() for f in d.iterdir())
        and any("opt" in f.stem.lower() for f in d.iterdir())
        for d in path.iterdir()
        if d.is_dir()
    )


def check_path(path: str | Path, progress: bool = True, decode: bool = True) -> CheckReport:
    """Check a detection dataset, a pair dataset or a single scene; never stops at the first problem.

    Args:
        decode: fully decode every image (finds truncated files; slower).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file or folder")
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        return _check_scene(path)
    if _is_pair_folder(path):
        return _check_pairs(path, progress)
    detect_format(path)  # raises a clear error for unknown layouts
    return _check_detection(path, progress, decode)


def tile_scene_to_dir(
    scene: str | Path, out: str | Path, size: int = 512, overlap: float = 0.5, progress: bool = True
) -> Path:
    """Cut a scene into tiles on disk plus ``tiles.json`` (offsets, scene size, georeferencing).

    Tiles keep the scene's dtype: 8-bit as PNG, others as TIFF. Memory stays at
    one tile (plus the reader's segment cache) whatever the scene size.
    """
    scene, out = Path(scene), writable_dir(out)
    with open_raster(scene) as r:
        grid = tile_grid(r.height, r.width, size, overlap)
        ext = ".png" if np.dtype(r.dtype) == np.uint8 and r.channels in (1, 3) else ".tif"
        entries = []
        for t in _progress(grid, f"tiling {scene.name}", progress, unit="tile"):
            name = f"{scene.stem}_y{t.y0:06d}_x{t.x0:06d}{ext}"
            write_image(out / name, read_tile(r, t))
            entries.append({"file": name, **t.to_dict()})
        index = {
            "scene": str(scene),
            "height": r.height,
            "width": r.width,
            "dtype": np.dtype(r.dtype).name,
            "tile_size": size,
            "overlap": overlap,
            "georef": r.georef.to_dict() if r.georef else None,
            "tiles": entries,
        }
    return atomic_write_json(index, out / "tiles.json", indent=1)


def write_synthetic(
    out: str | Path, n: int, size: int = 512, seed: int = 0, bits: int = 16, progress: bool = True
) -> Path:
    """Write ``n`` synthetic scenes: sar/ (16-bit TIFF or 8-bit PNG), opt/ (PNG), annotations.json (COCO).

    The folder reads both as a detection dataset (COCO) and as a pair dataset.
    """
    from sarbridge.runtime.synth import synth_scene

    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    out = Path(out)
    images, anns = [], []
    for i in _progress(range(n), "synthesising scenes", progress, unit="scene"):
        scene = synth_scene(seed + i, size, size)
        stem = f"{seed + i:06d}"
        sar_name = f"sar/{stem}.tif" if bits == 16 else f"sar/{stem}.png"
        write_image(out / sar_name, scene.sar_uint16() if bits == 16 else scene.sar_uint8())
        write_image(out / f"opt/{stem}.png", scene.optical)
        images.append({"id": i + 1, "file_name": sar_name, "width": size, "height": size})
        for b in scene.boxes:
            x1, y1, x2, y2 = (float(v) for v in b)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "ship"}]}
    return atomic_write_json(coco, out / "annotations.json", indent=None)
