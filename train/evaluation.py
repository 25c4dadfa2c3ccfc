"""Detector inference and evaluation in PyTorch through the runtime's numpy decode: the same
candidates, NMS, box voting and test-time flips the deployed model runs, scored with the
runtime's COCO AP."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from sarbridge.runtime.decode import letterbox
from sarbridge.runtime.errors import SarbridgeError
from sarbridge.runtime.imageio import read_image
from sarbridge.runtime.metrics import Detections, coco_ap, precision_recall_at
from sarbridge.train.data.detection import DetectionSet
from sarbridge.train.models.registry import model_kind

if TYPE_CHECKING:
    from sarbridge.train.recipes.detect import DetConfig


@torch.no_grad()
def predict(
    model, data: DetectionSet, cfg: DetConfig, device, batch_size: int = 8
) -> list[Detections]:
    """Detections in image pixels for every record (letterbox -> model -> runtime decode -> image)."""
    from sarbridge.train.evaluation import detector_predict

    model.eval()
    size, e = cfg.data.input_size, cfg.eval
    out = []
    for start in range(0, len(data.records), batch_size):
        idx = range(start, min(start + batch_size, len(data.records)))
        boxed = [letterbox(data.image(k), size) for k in idx]
        x = torch.from_numpy(np.stack([b[0] for b in boxed])).to(device)
        preds = detector_predict(
            model,
            x,
            size,
            e.score_threshold,
            e.iou_threshold,
            e.max_detections,
            e.vote_iou,
            e.tta_flips,
        )
        for k, (boxes, scores, labels), (_, lb) in zip(idx, preds, boxed, strict=True):
            out.append(Detections(data.records[k].image_id, lb.to_image(boxes), scores, labels))
    return out


def predict_scenes(model, data: DetectionSet, cfg: DetConfig, device) -> list[Detections]:
    """Detections of whole scenes through the deployed path: the runtime's
    :class:`~sarbridge.runtime.detector.ScenePipeline` (one clip range per scene, tiles of
    ``data.tile_size`` with ``data.tile_overlap`` letterboxed into the input, cross-tile merge),
    with the network run here in PyTorch."""
    from sarbridge.runtime.detector import ScenePipeline
    from sarbridge.train.evaluation import detector_predict

    e = cfg.eval

    class _TorchScenes(ScenePipeline):
        @torch.no_grad()
        def run_inputs(self, inputs, timings=None):
            x = torch.from_numpy(np.ascontiguousarray(inputs, np.float32)).to(device)
            return detector_predict(
                model,
                x,
                self.input_size,
                e.score_threshold,
                self.iou_threshold,
                self.max_detections,
                self.vote_iou,
                self.flips,
            )

    model.eval()
    pipeline = _TorchScenes(
        data.params,
        cfg.data.input_size,
        cfg.data.tile_size,
        cfg.data.tile_overlap,
        e.iou_threshold,
        e.max_detections,
        vote_iou=e.vote_iou,
        flips=e.tta_flips,
    )
    out = []
    for rec in data.records:
        r = pipeline.detect(read_image(rec.path))
        out.append(Detections(rec.image_id, r.boxes, r.scores, r.labels))
    return out


def evaluate(model, data: DetectionSet, cfg: DetConfig, device, classes) -> dict[str, float]:
    if cfg.data.tile_size:
        dets = predict_scenes(model, data, cfg, device)
    else:
        dets = predict(model, data, cfg, device)
    ap = coco_ap(data.records, dets, classes, cfg.eval.max_detections)
    pr = precision_recall_at(data.records, dets, cfg.eval.operating_threshold)
    return {**ap, "precision": pr["precision"], "recall": pr["recall"], "f1": pr["f1"]}


def detector_predict(
    model: nn.Module,
    images,
    input_size: int,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
    vote_iou: float | None = None,
    flips: tuple[str, ...] = (),
):
    """Per image (boxes [K, 4], scores [K], labels [K]) in network-input pixels, as numpy.
    ``vote_iou``: box voting after NMS; ``flips``: test-time flips merged before NMS
    (:func:`~sarbridge.runtime.decode.decode_views`). Both need the runtime's NMS, so dense heads
    only (torchvision's detector runs its own)."""
    if model_kind(model) == "torchvision":
        if vote_iou is not None or flips:
            raise SarbridgeError(
                "box voting (vote_iou) and test-time flips need the runtime's NMS; the two-stage "
                "detector runs torchvision's: leave eval.vote_iou and eval.tta_flips unset"
            )
        heads = model.detector.roi_heads
        heads.score_thresh, heads.nms_thresh, heads.detections_per_img = (
            score_threshold,
            iou_threshold,
            max_detections,
        )
        return [
            (
                o["boxes"].float().cpu().numpy(),
                o["scores"].float().cpu().numpy(),
                o["labels"].cpu().numpy() - 1,
            )
            for o in model(images)
        ]
    from sarbridge.runtime.decode import FLIP_AXES

    views = [images] + [images.flip(FLIP_AXES[f]) for f in flips]
    raw = [model(v).float().cpu().numpy() for v in views]  # each [B, N, 4 + C] or [B, N, 5 + C]
    return decode_raw(
        model, raw, input_size, score_threshold, iou_threshold, max_detections, vote_iou, flips
    )


def decode_raw(
    model: nn.Module,
    raw,
    input_size: int,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
    vote_iou: float | None = None,
    flips: tuple[str, ...] = (),
    post: dict | None = None,
):
    """A dense model's raw numpy output [B, N, K] -> per image (boxes, scores, labels), through the
    runtime's decode for the model's head (anchor-free ``dense_candidates`` or YOLOv3
    ``yolo_candidates``, then NMS). ``raw`` may also be a list of the 1 + len(flips) views'
    outputs (plain first, then one per test-time flip), each [B, N, K]. ``post``: the
    manifest's postprocessing fields of an exported graph's output (e.g. ``dense_dfl`` bin
    logits); None: the model's own forward output."""
    from sarbridge.runtime.decode import decode_views, get_decoder

    views = list(raw) if isinstance(raw, (list, tuple)) else [raw]
    if post is not None:
        decode = post.get("decode", "dense_ltrb")
    else:
        decode = getattr(model, "decode", "dense_ltrb")
        post = {"strides": [int(s) for s in model.strides]}  # what the manifest will carry
        if decode == "yolo_anchors":
            post["anchors"] = model.anchors.cpu().numpy()
    candidates = get_decoder(decode).build(post, input_size, score_threshold)
    return [
        decode_views(
            per_image, candidates, flips, input_size, iou_threshold, max_detections, vote_iou
        )
        for per_image in zip(*views, strict=True)
    ]
