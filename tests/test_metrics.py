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


def test_ap_by_iou_agrees_with_coco_summary():
    gt = [_rec([[0, 0, 100, 100], [120, 120, 180, 170]])]
    # IoU 0.62 with the first ship, 0.84 (=60*42/(60*50)) with the second
    boxes = np.array([[0, 0, 100, 62], [120, 120, 180, 162]], float)
    ap = coco_ap(gt, [Detections("a", boxes, np.array([0.9, 0.8]), np.zeros(2, int))], by_iou=True)
    by = {p["iou"]: p["AP"] for p in ap["AP_by_iou"]}
    assert sorted(by) == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    assert by[0.5] == pytest.approx(ap["AP50"]) and by[0.75] == pytest.approx(ap["AP75"])
    assert np.mean(list(by.values())) == pytest.approx(ap["AP50_95"])
    assert by[0.6] == pytest.approx(1.0) and by[0.9] == pytest.approx(0.0)
    # IoU 0.65-0.80: the false alarm first (score 0.9), then one of two ships -> 51 recall
    # points of 101 at precision 0.5 (COCO's interpolation), none above
    for t in (0.65, 0.7, 0.75, 0.8):
        assert by[t] == pytest.approx(0.5 * 51 / 101), t
    assert "AP_by_iou" not in coco_ap(gt, [])
    empty = coco_ap(gt, [], by_iou=True)["AP_by_iou"]
    assert [(p["iou"], p["AP"]) for p in empty] == [(t, 0.0) for t in sorted(by)]
