"""The peers script's SSDD conversion to Ultralytics' layout keeps every box of the split."""

from __future__ import annotations

import json

import numpy as np

from sarbridge.benchmarks.research.peers import prepare
from sarbridge.runtime.annotations import read_dataset, read_yolo


def test_ssdd_conversion_keeps_every_box_of_the_official_split(tmp_path, data):
    counts = prepare(str(data / "SSDD"), tmp_path)
    ds = read_dataset(data / "SSDD")
    for split in ("train", "test"):
        records = ds.split(split)
        assert counts[split] == {
            "images": len(records),
            "boxes": int(sum(len(r.boxes) for r in records)),
        }
    assert counts["train"]["images"] + counts["test"]["images"] == len(ds.records) == 1160
    assert json.loads((tmp_path / "ssdd_yolo" / "counts.json").read_text()) == counts
    # read back with sarbridge's own YOLO reader: the same boxes, to the labels' precision
    yolo = tmp_path / "ssdd_yolo"
    back = read_yolo(yolo / "images" / "test", yolo / "labels" / "test")
    assert not back.problems
    by_id = {r.image_id: r for r in ds.split("test")}
    for rec in back.records:
        want = by_id[rec.image_id]
        assert np.allclose(np.sort(rec.boxes, 0), np.sort(want.boxes, 0), atol=0.01)
    text = (tmp_path / "ssdd_yolo" / "data.yaml").read_text()
    assert "train: images/train" in text and "0: ship" in text
