"""An imported Ultralytics model against Ultralytics' own predictions on real images.

``sarbridge import ultralytics`` writes a manifest that re-creates, in the torch-free runtime,
what Ultralytics does around its network: 8-bit input / 255, a centred letterbox filled with
114, the output decode, class-aware NMS at its IoU, its confidence threshold. This check runs
``YOLO(model.onnx).predict`` (Ultralytics' own pipeline, ONNX Runtime inside) and the sarbridge
``Detector`` on the same images and compares the detections one to one (same class, IoU >= 0.5,
greedy by score): the agreement 2 x matched / (|ours| + |theirs|) and the largest box or score
difference over matched pairs. Images are chosen whose long side fits the network input, so
the runtime sees each as one tile, as Ultralytics does (a larger scene is tiled by sarbridge and
shrunk by Ultralytics, which is the point of the import, not a parity question).

It needs the ``peers`` extra (Ultralytics, and so torch); the import runs without it and
records that parity was not checked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sarbridge.runtime.errors import SarbridgeError

MIN_AGREEMENT = 0.95


MIN_DETECTIONS = 10  # fewer on Ultralytics' side: the check says nothing, it is refused


def parity_images(data: str | Path, size: int, count: int, split: str = "test") -> list[Path]:
    """``count`` images of ``split`` whose long side is at most ``size``, spread evenly over
    the split (inshore and offshore scenes alike)."""
    from sarbridge.runtime.annotations import read_dataset
    from sarbridge.runtime.paths import resolve_data_path

    records = read_dataset(resolve_data_path(str(data))).split(split)
    fits = [r.path for r in records if max(r.width, r.height) <= size]
    if len(fits) <= count:
        return fits
    return [fits[int(i)] for i in np.linspace(0, len(fits) - 1, count).round()]


def ultralytics_parity(
    artifact: str | Path,
    model: str | Path,
    images: list[Path],
    model_format: str,
    threads: int | None = None,
) -> dict:
    """Ultralytics' predictions of ``model`` vs the runtime's of ``artifact`` on ``images``;
    ``model_format``: the artifact manifest's ``model.format`` ("onnx" | "openvino")."""
    import ultralytics
    from ultralytics import YOLO

    from sarbridge.runtime.detector import Detector
    from sarbridge.runtime.metrics import matched_max_abs, set_agreement

    if not images:
        raise SarbridgeError("no images for the parity check")
    det = Detector.from_artifact(
        artifact, "openvino" if model_format == "openvino" else "onnxruntime", threads=threads
    )
    post = det.manifest["postprocessing"]
    yolo = YOLO(str(model), task="detect")
    pairs = []
    try:
        for path in images:
            (r,) = yolo.predict(
                str(path), imgsz=det.input_size, conf=float(post["score_threshold"]),
                iou=float(post["iou_threshold"]), max_det=int(post["max_detections"]),
                device="cpu", verbose=False,
            )  # fmt: skip
            theirs = (
                r.boxes.xyxy.cpu().numpy().astype(np.float32),
                r.boxes.conf.cpu().numpy().astype(np.float32),
                r.boxes.cls.cpu().numpy().astype(np.int64),
            )
            ours = det.detect(path)
            pairs.append(((ours.boxes, ours.scores, ours.labels), theirs))
    finally:
        det.close()
    return {
        "images": len(pairs),
        "detections_sarbridge": int(sum(len(a[1]) for a, _ in pairs)),
        "detections_ultralytics": int(sum(len(b[1]) for _, b in pairs)),
        "agreement": round(float(set_agreement(pairs)), 6),
        "matched_max_abs": round(
            float(max((matched_max_abs(a, b) for a, b in pairs), default=0)), 4
        ),
        "checked_with": f"ultralytics {ultralytics.__version__} predict ({model_format} model)",
    }


def parity_check(
    model: str | Path,
    data: str | Path = "SSDD",
    count: int = 16,
    min_agreement: float = MIN_AGREEMENT,
    threads: int | None = None,
):
    """A check for :func:`sarbridge.runtime.importers.import_ultralytics`: returns the parity
    record, or raises when the agreement is under ``min_agreement``."""

    def check(artifact: Path, manifest: dict) -> dict:
        size = int(manifest["preprocessing"]["input_size"])
        images = parity_images(data, size, count)
        result = ultralytics_parity(artifact, model, images, manifest["model"]["format"], threads)
        print(
            f"parity with Ultralytics on {result['images']} {data} test images: agreement "
            f"{result['agreement']:.4f} ({result['detections_sarbridge']} vs "
            f"{result['detections_ultralytics']} detections), largest matched difference "
            f"{result['matched_max_abs']:.3g}"
        )
        if result["detections_ultralytics"] < MIN_DETECTIONS:
            raise SarbridgeError(
                f"{model}: Ultralytics' own predict found {result['detections_ultralytics']} "
                f"ships on {result['images']} images (fewer than {MIN_DETECTIONS}): the parity "
                "check would say nothing; give more --parity-images (or --parity-images 0 to "
                "import unchecked)"
            )
        if result["agreement"] < min_agreement:
            raise SarbridgeError(
                f"{model}: the runtime's detections agree with Ultralytics' own at "
                f"{result['agreement']:.4f} < {min_agreement} on {result['images']} images: the "
                "manifest does not reproduce this model's pipeline; nothing was written"
            )
        return result

    return check
