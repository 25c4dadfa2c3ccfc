"""Large annotated scenes: training on the runtime's tiles, evaluation on whole scenes through the
deployed tiling and merge (checked against the exported model run by the runtime Detector)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from sarbridge.runtime.datatools import write_synthetic  # noqa: E402
from sarbridge.runtime.tiling import tile_grid  # noqa: E402


@pytest.mark.slow
def test_tiled_training_and_whole_scene_evaluation(tmp_path):
    from sarbridge.export.onnx_export import export_run, set_agreement
    from sarbridge.runtime.detector import Detector
    from sarbridge.train.checkpoint import load_model
    from sarbridge.train.config import from_dict
    from sarbridge.train.data.detection import TiledSet, make_sets
    from sarbridge.train.evaluation import predict_scenes
    from sarbridge.train.recipes.detect import DetConfig, train_detector

    root = write_synthetic(tmp_path / "scenes", n=5, size=448, seed=11, progress=False).parent
    cfg = from_dict(
        DetConfig,
        {
            "name": "tiled",
            "threads": 2,
            "data": {
                "root": str(root),
                "input_size": 224,
                "tile_size": 224,
                "tile_overlap": 0.5,
                "val_fraction": 0.25,
            },
            "augment": {"mosaic": 0.5},
            "optim": {"epochs": 1, "batch_size": 4, "warmup_steps": 2},
        },
    )
    train, val, test, _, summary = make_sets(cfg.data)
    assert isinstance(train, TiledSet) and len(test.records) == 1
    expected = sum(len(tile_grid(r.height, r.width, 224, 0.5)) for r in train.scenes.records)
    assert len(train.records) == expected == summary["tiles"]["train_tiles"]
    assert summary["tiles"]["train_tiles_with_ships"] > 0
    ships_seen = 0
    for k, rec in enumerate(train.records):
        img = train.image(k)
        assert img.shape == (1, rec.height, rec.width) == (1, 224, 224)
        assert (rec.boxes >= 0).all() and (rec.boxes[:, 2] <= rec.width).all()
        scene, tile = train.windows[k]
        whole = train.scenes.image(scene)
        np.testing.assert_array_equal(
            img, whole[:, tile.y0 : tile.y0 + 224, tile.x0 : tile.x0 + 224]
        )
        ships_seen += len(rec.boxes)
    assert ships_seen >= sum(len(r.boxes) for r in train.scenes.records)  # overlap: ships repeat

    report = train_detector(cfg, tmp_path / "runs", progress=False)
    run = tmp_path / "runs" / "tiled"
    assert json.loads((run / "run.json").read_text())["data"]["tiles"]["size"] == 224
    assert 0.0 <= report["test"]["AP50"] <= 1.0

    # the training evaluation of a whole scene is the deployed path: same tiles, same merge
    manifest = export_run(run, tmp_path / "artifact", parity_images=2)
    assert manifest["tiling"]["size"] == 224
    assert "whole_scene_max" not in manifest["tiling"]  # trained on tiles: scenes are tiled
    loaded = load_model(run)
    model, cfg_loaded = loaded.model, loaded.config
    rec = test.records[0]
    ours = predict_scenes(model, test, cfg_loaded, "cpu")[0]
    det = Detector.from_artifact(tmp_path / "artifact", score_threshold=cfg.eval.score_threshold)
    deployed = det.detect(rec.path)
    assert deployed.tiles == len(tile_grid(rec.height, rec.width, 224, 0.5)) > 1
    top = lambda b, s, n=50: (b[np.argsort(-s)[:n]], np.sort(s)[::-1][:n])  # noqa: E731
    a = (*top(ours.boxes, ours.scores), np.zeros(min(50, len(ours.scores)), np.int64))
    b = (*top(deployed.boxes, deployed.scores), np.zeros(min(50, len(deployed)), np.int64))
    assert set_agreement([(a, b)]) >= 0.95
