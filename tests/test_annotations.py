import json
import shutil

import numpy as np
import pytest

from sarbridge.runtime.annotations import (
    detect_format,
    read_coco,
    read_dataset,
    read_voc,
    read_voc_xml,
)
from sarbridge.runtime.errors import DataError
from tests.conftest import mini_voc


def test_ssdd_reads_whole_with_official_split(data):
    ds = read_voc(data / "SSDD")
    assert not ds.problems
    assert len(ds.records) == 1160
    assert sum(len(r.boxes) for r in ds.records) == 2540
    train, test = ds.split("train"), ds.split("test")
    assert (len(train), len(test)) == (928, 232)
    assert sum(len(r.boxes) for r in test) == 533
    assert all(r.image_id[-1] in "19" for r in test)
    rec = ds.records[0]
    assert rec.boxes.dtype == np.float32 and rec.boxes.shape[1] == 4 and (rec.labels == 0).all()
    with pytest.raises(DataError, match="no split 'val'"):
        ds.split("val")


def _mini_voc(tmp_path, data, n=4):
    return mini_voc(tmp_path / "voc", data, [f"{i:06d}" for i in range(1, n + 1)])


def test_box_outside_image_is_reported_and_reading_goes_on(tmp_path, data):
    root = _mini_voc(tmp_path, data)
    xml = root / "Annotations" / "000002.xml"
    text = xml.read_text()
    start = text.index("<xmax>") + len("<xmax>")
    xml.write_text(text[:start] + "99999" + text[text.index("</xmax>") :])
    (root / "Annotations" / "000003.xml").write_text("<annotation><size>")  # broken XML
    ds = read_voc(root)
    msgs = [str(p) for p in ds.problems]
    assert any("000002.xml" in m and "outside" in m for m in msgs)
    assert any("000003.xml" in m and "cannot parse XML" in m for m in msgs)
    assert {r.image_id for r in ds.records} == {
        "000001",
        "000002",
        "000004",
    }  # bad box dropped, image kept
    _, box_msgs = read_voc_xml(xml)
    assert box_msgs and "99999" in box_msgs[0]


def test_coco_and_yolo_readers_agree(tmp_path, data):
    ssdd = read_voc(data / "SSDD")
    recs = ssdd.records[:5]
    coco = {
        "images": [
            {"id": k, "file_name": r.path.name, "width": r.width, "height": r.height}
            for k, r in enumerate(recs)
        ],
        "annotations": [
            {
                "id": 100 * k + j,
                "image_id": k,
                "category_id": 7,
                "iscrowd": 0,
                "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
            }
            for k, r in enumerate(recs)
            for j, b in enumerate(r.boxes)
        ],
        "categories": [{"id": 7, "name": "ship"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    ds = read_coco(tmp_path / "ann.json", image_root=data / "SSDD" / "JPEGImages")
    assert ds.classes == ("ship",) and not ds.problems
    for a, b in zip(ds.records, recs, strict=True):
        np.testing.assert_allclose(a.boxes, b.boxes)
        assert a.path == b.path

    (tmp_path / "y" / "images").mkdir(parents=True)
    (tmp_path / "y" / "labels").mkdir()
    for r in recs:
        shutil.copy(r.path, tmp_path / "y" / "images")
        lines = [
            f"0 {(b[0] + b[2]) / 2 / r.width} {(b[1] + b[3]) / 2 / r.height} {(b[2] - b[0]) / r.width} {(b[3] - b[1]) / r.height}"
            for b in r.boxes
        ]
        (tmp_path / "y" / "labels" / f"{r.image_id}.txt").write_text(
            "\n".join(lines + ["garbage line"])
        )
    assert detect_format(tmp_path / "y") == "yolo"
    yd = read_dataset(tmp_path / "y")
    assert len(yd.problems) == 5 and "not 'class cx cy w h'" in str(yd.problems[0])
    for a, b in zip(yd.records, recs, strict=True):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)


def test_unknown_layout_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="cannot tell the dataset format"):
        detect_format(tmp_path)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataError, match="no 'images' list"):
        read_coco(tmp_path / "x.json")


def test_unsplit_dataset_gets_a_seeded_train_test_split(tmp_path):
    from sarbridge.runtime.annotations import read_dataset
    from sarbridge.runtime.datatools import write_synthetic

    write_synthetic(tmp_path, 10, size=128, seed=0, bits=16, progress=False)
    ds = read_dataset(tmp_path)
    assert "train" not in ds.splits and "test" not in ds.splits
    train, test = ds.split("train"), ds.split("test")
    assert len(test) == 2 and len(train) == 8
    assert {r.image_id for r in train}.isdisjoint(r.image_id for r in test)
    assert [r.image_id for r in read_dataset(tmp_path).split("test")] == [r.image_id for r in test]
