"""Writing detections: COCO-style JSON per scene, GeoJSON in map coordinates, overlay PNGs.

Every file is written to a temporary name and renamed into place, so a crash or a
bad scene never leaves a half-written or corrupted result behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sarbridge.runtime.detector import SceneResult
from sarbridge.runtime.fileio import atomic_write_text
from sarbridge.runtime.imageio import open_raster
from sarbridge.runtime.limits import get_limits
from sarbridge.runtime.preprocess import to_single_channel


def coco_document(result: SceneResult, classes: list[str], info: dict | None = None) -> dict:
    """One scene's detections as a COCO results document (images, annotations, categories)."""
    anns = []
    for k, (box, score, label) in enumerate(
        zip(result.boxes.tolist(), result.scores.tolist(), result.labels.tolist(), strict=True)
    ):
        x1, y1, x2, y2 = box
        anns.append(
            {
                "id": k + 1,
                "image_id": 1,
                "category_id": int(label) + 1,
                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                "area": round((x2 - x1) * (y2 - y1), 2),
                "score": round(float(score), 5),
                "iscrowd": 0,
            }
        )
    doc = {
        "info": info or {},
        "images": [
            {
                "id": 1,
                "file_name": Path(result.path).name if result.path else None,
                "height": result.height,
                "width": result.width,
            }
        ],
        "annotations": anns,
        "categories": [{"id": k + 1, "name": n} for k, n in enumerate(classes)],
    }
    if result.georef is not None:
        doc["images"][0]["georef"] = result.georef.to_dict()
    return doc


def geojson_document(result: SceneResult, classes: list[str], info: dict | None = None) -> dict:
    """Detections as a GeoJSON FeatureCollection of box polygons in the scene's map coordinates."""
    if result.georef is None:
        raise ValueError("GeoJSON needs a georeferenced scene")
    features = []
    for k, (box, score, label) in enumerate(
        zip(result.boxes, result.scores, result.labels, strict=True)
    ):
        x1, y1, x2, y2 = (float(v) for v in box)
        cols = np.array([x1, x2, x2, x1, x1])
        rows = np.array([y1, y1, y2, y2, y1])
        xs, ys = result.georef.pixel_to_map(cols, rows)
        features.append(
            {
                "type": "Feature",
                "id": k + 1,
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[float(x), float(y)] for x, y in zip(xs, ys, strict=True)]],
                },
                "properties": {
                    "class": classes[int(label)],
                    "score": round(float(score), 5),
                    "pixel_bbox": [round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)],
                },
            }
        )
    doc = {"type": "FeatureCollection", "features": features, "properties": info or {}}
    if result.georef.crs:
        doc["crs"] = {"type": "name", "properties": {"name": result.georef.crs}}
    return doc


def write_json(path: str | Path, doc: dict) -> Path:
    return atomic_write_text(path, json.dumps(doc) + "\n")


def render_overlay(result: SceneResult, max_side: int = 4096, min_score: float = 0.0):
    """An 8-bit RGB PIL image of the scene (downscaled to ``max_side``) with the boxes drawn."""
    from PIL import Image, ImageDraw

    with open_raster(result.path) as raster:
        step = max(1, int(np.ceil(max(raster.height, raster.width) / max_side)))
        # bands of whole rows, a multiple of step tall, within the limit of one read
        band_rows = step * max(1, min(256, get_limits().max_whole_pixels // raster.width // step))
        rows = []
        for y in range(0, raster.height, band_rows):
            h = min(band_rows, raster.height - y)
            rows.append(to_single_channel(raster.read(y, 0, h, raster.width))[::step, ::step])
        band = np.concatenate(rows)
    if band.dtype != np.uint8:
        lo, hi = np.percentile(band[band > 0] if (band > 0).any() else band, [1, 99.5])
        band = (np.clip((band - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    img = Image.fromarray(band).convert("RGB")
    draw = ImageDraw.Draw(img)
    for box, score in zip(result.boxes, result.scores, strict=True):
        if score < min_score:
            continue
        x1, y1, x2, y2 = (float(v) / step for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=(255, 40, 40), width=2 if step == 1 else 1)
    return img
