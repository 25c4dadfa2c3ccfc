"""Metrics: COCO-style detection AP, precision/recall at a threshold, pair matching.

Detection AP wraps faster-coco-eval (the COCO evaluation protocol: 101-point
interpolated AP, IoU 0.50:0.05:0.95, "small" = area < 32^2 pixels).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np

from sarbridge.runtime.boxes import box_iou


@dataclass
class Detections:
    """Predictions for one image: boxes [N, 4] xyxy pixels, scores [N], labels [N]."""

    image_id: str
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


def _coco_dicts(records, detections, classes):
    ids = {r.image_id: k + 1 for k, r in enumerate(records)}
    images = [
        {"id": ids[r.image_id], "width": int(r.width), "height": int(r.height)} for r in records
    ]
    anns = []
    for r in records:
        for box, label in zip(
            np.asarray(r.boxes, np.float64).reshape(-1, 4), r.labels, strict=True
        ):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": ids[r.image_id],
                    "category_id": int(label) + 1,
                    "bbox": [float(box[0]), float(box[1]), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": 0,
                }
            )
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(classes)]
    dets = []
    for d in detections:
        if d.image_id not in ids:
            raise KeyError(f"detections for unknown image id {d.image_id!r}")
        for box, score, label in zip(
            np.asarray(d.boxes, np.float64).reshape(-1, 4), d.scores, d.labels, strict=True
        ):
            dets.append(
                {
                    "image_id": ids[d.image_id],
                    "category_id": int(label) + 1,
                    "bbox": [
                        float(box[0]),
                        float(box[1]),
                        float(box[2] - box[0]),
                        float(box[3] - box[1]),
                    ],
                    "score": float(score),
                }
            )
    return {"images": images, "annotations": anns, "categories": cats}, dets


def coco_ap(
    records, detections, classes=("ship",), max_detections: int = 100, by_iou: bool = False
) -> dict:
    """COCO bbox AP of detections against ground-truth records.

    Args:
        records: ground truth, objects with image_id, width, height, boxes, labels
            (e.g. :class:`~sarbridge.runtime.annotations.ImageRecord`).
        detections: list of :class:`Detections` (images without an entry have none).
        classes: class names (labels index into them).
        max_detections: detections per image considered.
        by_iou: also return ``"AP_by_iou"``, ``[{"iou": t, "AP": ap}]`` for each IoU threshold
            t of 0.50:0.05:0.95 (all areas, ``max_detections``): where between finding a ship
            (IoU 0.5) and fitting its box tightly (IoU 0.95) a detector loses its AP.

    Returns:
        {"AP50_95", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR"} (and
        "AP_by_iou" when asked); a value of -1 means "no ground truth of that kind" (COCO's
        convention).
    """
    from faster_coco_eval import COCO, COCOeval_faster

    gt_dict, dets = _coco_dicts(records, detections, classes)
    keys = ("AP50_95", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")
    if not gt_dict["annotations"]:
        raise ValueError("no ground-truth boxes: AP is undefined")
    if not dets:
        out = {k: 0.0 for k in keys} | {"AR": 0.0}
        if by_iou:
            out["AP_by_iou"] = [{"iou": round(float(t), 2), "AP": 0.0} for t in _IOUS]
        return out
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_dict)
        dt = gt.loadRes(dets)
        ev = COCOeval_faster(gt, dt, "bbox")
        ev.params.maxDets = [1, 10, max_detections]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = ev.stats
    out = dict(zip(keys, (float(v) for v in s[:6]), strict=True))
    out["AR"] = float(s[8])
    if by_iou:
        # precision[T, R, K, A, M]: IoU thresholds, recall points, classes, areas (all first),
        # max-detection settings (the last: the largest of 1, 10, max_detections, as the
        # summary's AP uses); -1 marks "no ground truth of that class"
        prec = np.asarray(ev.eval["precision"])[:, :, :, 0, -1]
        out["AP_by_iou"] = [
            {"iou": round(float(t), 2), "AP": float(p[p > -1].mean()) if (p > -1).any() else -1.0}
            for t, p in zip(ev.params.iouThrs, prec, strict=True)
        ]
    return out


_IOUS = np.linspace(0.5, 0.95, 10)


def precision_recall_at(
    records, detections, score_threshold: float = 0.5, iou_threshold: float = 0.5
) -> dict[str, float]:
    """Precision, recall and F1 at one operating point (greedy matching by score, per class).

    Returns:
        {"precision", "recall", "f1", "tp", "fp", "fn"}.
    """
    by_id = {d.image_id: d for d in detections}
    tp = fp = fn = 0
    for r in records:
        d = by_id.get(r.image_id)
        gt_boxes, gt_labels = np.asarray(r.boxes).reshape(-1, 4), np.asarray(r.labels)
        if d is None:
            fn += len(gt_boxes)
            continue
        keep = np.asarray(d.scores) >= score_threshold
        boxes, scores, labels = (
            np.asarray(d.boxes).reshape(-1, 4)[keep],
            np.asarray(d.scores)[keep],
            np.asarray(d.labels)[keep],
        )
        matched = np.zeros(len(gt_boxes), bool)
        ious = (
            box_iou(boxes, gt_boxes)
            if len(boxes) and len(gt_boxes)
            else np.zeros((len(boxes), len(gt_boxes)))
        )
        for i in np.argsort(-scores, kind="stable"):
            cand = np.where((~matched) & (gt_labels == labels[i]) & (ious[i] >= iou_threshold))[0]
            if cand.size:
                matched[cand[np.argmax(ious[i, cand])]] = True
                tp += 1
            else:
                fp += 1
        fn += int((~matched).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def matching_metrics(distances, is_match, threshold: float = 0.5) -> dict[str, float]:
    """Pair matching at a decision threshold: a pair is called matched when d < threshold.

    Args:
        distances: [N] BNN distances in [0, 1].
        is_match: [N] bool, true for positive (co-registered) pairs.

    Returns:
        {"accuracy", "precision", "recall", "threshold"}.
    """
    d = np.asarray(distances, dtype=np.float64)
    y = np.asarray(is_match, dtype=bool)
    pred = d < threshold
    tp = int((pred & y).sum())
    fp = int((pred & ~y).sum())
    fn = int((~pred & y).sum())
    tn = int((~pred & ~y).sum())
    return {
        "accuracy": (tp + tn) / max(len(y), 1),
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "threshold": float(threshold),
    }


def roc_auc(distances, is_match) -> float:
    """Area under the ROC curve with -distance as the score (ties count one half)."""
    d = np.asarray(distances, dtype=np.float64)
    y = np.asarray(is_match, dtype=bool)
    pos, neg = -d[y], -d[~y]
    if not len(pos) or not len(neg):
        raise ValueError("ROC AUC needs both positive and negative pairs")
    # Mann-Whitney U via ranks (average ranks for ties)
    scores = np.concatenate([pos, neg])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def best_threshold(distances, is_match) -> float:
    """The decision threshold with the best accuracy (choose it on validation pairs, never test)."""
    d = np.sort(np.unique(np.asarray(distances, dtype=np.float64)))
    cands = (
        np.concatenate([[0.0], (d[:-1] + d[1:]) / 2, [1.0 + 1e-9]])
        if len(d) > 1
        else np.array([0.5])
    )
    accs = [matching_metrics(distances, is_match, t)["accuracy"] for t in cands]
    return float(cands[int(np.argmax(accs))])


# ---------------------------------------------------------------- parity of two detectors


def matched_pairs(a, b, iou_threshold: float = 0.5) -> list[tuple[int, int]]:
    """Greedy one-to-one matches (index in a, index in b) between two detection sets
    (same label, IoU >= threshold), a's highest scores first, each to its best-overlapping box."""
    (ba, sa, la), (bb, _, lb) = a, b
    if len(sa) == 0 or len(lb) == 0:
        return []
    iou = box_iou(np.asarray(ba, np.float64), np.asarray(bb, np.float64))
    iou[np.asarray(la)[:, None] != np.asarray(lb)[None, :]] = 0
    used = np.zeros(len(lb), bool)
    pairs = []
    for i in np.argsort(-np.asarray(sa), kind="stable"):
        cand = np.where(~used & (iou[i] >= iou_threshold))[0]
        if cand.size:
            j = int(cand[np.argmax(iou[i, cand])])
            used[j] = True
            pairs.append((int(i), j))
    return pairs


def match_detections(a, b, iou_threshold: float = 0.5) -> int:
    """Number of greedy one-to-one matches between two detection sets (see matched_pairs)."""
    return len(matched_pairs(a, b, iou_threshold))


def matched_max_abs(a, b) -> float:
    """Largest |box coordinate| or |score| difference over the matched detections of two sets.

    Detections after NMS come sorted by score, and two whose scores differ in the 7th digit
    can swap places between PyTorch and ONNX Runtime (seen with an untrained Faster R-CNN,
    whose scores tie to six digits), so comparing slot by slot
    reports the distance between two different ships; matching first compares like with like.
    Detections without a match count in :func:`set_agreement`, not here."""
    diffs = [
        max(np.abs(np.asarray(a[0][i]) - np.asarray(b[0][j])).max(), abs(a[1][i] - b[1][j]))
        for i, j in matched_pairs(a, b)
    ]
    return float(max(diffs, default=0.0))


def set_agreement(pairs) -> float:
    """2 * matched / (|A| + |B|) summed over images (1.0 when both are empty everywhere)."""
    matched = total = 0
    for a, b in pairs:
        matched += match_detections(a, b)
        total += len(a[1]) + len(b[1])
    return 1.0 if total == 0 else 2 * matched / total
