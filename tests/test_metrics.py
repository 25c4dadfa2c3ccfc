import numpy as np
import pytest

from sarbridge.runtime.annotations import ImageRecord, read_voc
from sarbridge.runtime.metrics import (
    Detections,
    best_threshold,
    coco_ap,
    matching_metrics,
    precision_recall_at,
    roc_auc,
)


def _rec(boxes, image_id="a"):
    boxes = np.asarray(boxes, np.float32)
    return ImageRecord(image_id, None, 200, 200, boxes, np.zeros(len(boxes), np.int64))


def test_ap_hand_computed():
    gt = [_rec([[10, 10, 60, 60], [100, 100, 150, 160]])]
    # by score: hit, false alarm, hit -> PR points (R=.5, P=1), (.5, .5), (1, 2/3)
    dets = [
        Detections(
            "a",
            np.array([[10, 10, 60, 60], [0, 150, 30, 190], [100, 100, 150, 160]], float),
            np.array([0.9, 0.8, 0.7]),
            np.zeros(3, int),
        )
    ]
    # COCO 101-point interpolation: 51 recall points at precision 1, 50 at 2/3
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    ap = coco_ap(gt, dets)
    assert ap["AP50"] == pytest.approx(expected, abs=1e-6)
    assert ap["AP50_95"] == pytest.approx(expected, abs=1e-6)  # exact boxes: same at every IoU
    pr = precision_recall_at(gt, dets, score_threshold=0.75)
    assert (pr["tp"], pr["fp"], pr["fn"]) == (1, 1, 1)


def test_ap50_95_counts_iou_thresholds():
    gt = [_rec([[0, 0, 100, 100]])]
    dets = [Detections("a", np.array([[0, 0, 100, 62]], float), np.array([0.9]), np.zeros(1, int))]
    ap = coco_ap(gt, dets)  # IoU 0.62: a hit at 0.50, 0.55, 0.60 only
    assert ap["AP50"] == pytest.approx(1.0)
    assert ap["AP50_95"] == pytest.approx(0.3)
    assert coco_ap(gt, [])["AP50"] == 0.0


def test_ground_truth_as_predictions_gives_ap_one(data):
    recs = read_voc(data / "SSDD").split("test")
    dets = [Detections(r.image_id, r.boxes, np.ones(len(r.boxes)), r.labels) for r in recs]
    ap = coco_ap(recs, dets)
    assert ap["AP50"] == pytest.approx(1.0) and ap["AP50_95"] == pytest.approx(1.0)
    assert ap["AP_small"] == pytest.approx(1.0)
    pr = precision_recall_at(recs, dets)
    assert pr["precision"] == 1.0 and pr["recall"] == 1.0


def test_matching_metrics_hand_case():
    d = np.array([0.1, 0.2, 0.6, 0.3, 0.7, 0.9])
    y = np.array([1, 1, 1, 0, 0, 0], bool)
    m = matching_metrics(d, y, 0.5)  # tp=2 fn=1 fp=1 tn=2
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    # pairs (pos, neg) ranked right: 0.1,0.2 beat all 3 negatives; 0.6 beats 0.7, 0.9 -> 8/9
    assert roc_auc(d, y) == pytest.approx(8 / 9)
    t = best_threshold(d, y)
    assert matching_metrics(d, y, t)["accuracy"] == pytest.approx(5 / 6)
    assert roc_auc([0.5, 0.5], [True, False]) == pytest.approx(0.5)
