"""The detector comparison table: per-run rows, grouped by initialisation and training recipe."""

import json


def _run(
    tmp_path, name, init, seed, ap50, augment, optim=None, evaluation=None, model=None, data=None
):
    run = tmp_path / name
    run.mkdir()
    config = {
        "init": init,
        "seed": seed,
        "model": {"name": "edge_det", **(model or {})},
        "data": {"input_size": 320, **(data or {})},
        "optim": {"epochs": 12, **(optim or {})},
        "augment": augment,
        "eval": evaluation or {"iou_threshold": 0.5},
    }
    test = {"AP50": ap50, "AP50_95": ap50 / 2, "AP_small": 0.1, "precision": 0.9, "recall": 0.8}
    final = {"best_epoch": 12, "test": test}
    (run / "run.json").write_text(json.dumps({"config": config, "final": final}))
    return run


def test_groups_by_init_and_recipe(tmp_path, capsys):
    from sarbridge.benchmarks.research.det_tables import main

    runs = [
        _run(tmp_path, "a", "random", 0, 0.80, {"mosaic": 0.0}),
        _run(tmp_path, "b", "random", 1, 0.70, {"mosaic": 0.0}),
        _run(tmp_path, "c", "random", 0, 0.90, {"mosaic": 0.5}),
        _run(tmp_path, "d", "bnn:runs/x", 0, 0.60, {"mosaic": 0.5, "multi_scale": [0.75, 1.25]}),
        _run(tmp_path, "e", "random", 0, 0.85, {"mosaic": 0.5}, {"ema": True, "ema_decay": 0.999}),
        _run(
            tmp_path,
            "f",
            "random",
            0,
            0.95,
            {"mosaic": 0.5},
            {"ema": True, "ema_decay": 0.995, "ema_ramp_steps": 200},
        ),
        _run(tmp_path, "g", "random", 0, 0.5, {"mosaic": 0.5, "scale_min": 0.5, "scale_max": 1.5}),
        _run(tmp_path, "h", "random", 0, 0.6, {"mosaic": 1.0}, {"amp": "bf16"}),
        _run(tmp_path, "i", "random", 0, 0.4, {"mosaic": 1.0}, {"amp": "auto"}),
        _run(tmp_path, "l", "random", 0, 0.3, {"mosaic": 1.0}, None, None, {"box_bins": 16}),
        # a further schedule from run d, then one from that: d's init, the epochs joined
        _run(tmp_path, "j", f"det:{tmp_path / 'd'}", 0, 0.7, {}, {"epochs": 4}),
        _run(
            tmp_path,
            "k",
            f"det:{tmp_path / 'j'}",
            0,
            0.72,
            {},
            {"epochs": 2},
            {"iou_threshold": 0.7, "vote_iou": 0.7},
        ),
    ]
    # no validation split
    runs.append(_run(tmp_path, "n", "random", 0, 0.5, {"mosaic": 1.0}, data={"val_fraction": 0.0}))
    assert main([str(r) for r in runs] + ["--out", str(tmp_path / "out")]) == 0
    agg = json.loads((tmp_path / "out" / "tables.json").read_text())["by_init_recipe"]
    s = " | 320 px, 12 ep"
    assert agg["random | base" + s]["runs"] == 2
    assert abs(agg["random | base" + s]["AP50"]["mean"] - 0.75) < 1e-9
    assert agg["random | base" + s]["AP50"]["min"] == 0.70
    assert agg["random | mosaic 0.5" + s]["AP50"]["max"] == 0.90
    assert agg["random | scale 0.5-1.5, mosaic 0.5" + s]["runs"] == 1
    assert agg["bnn | mosaic 0.5, multi-scale 0.75-1.25" + s]["runs"] == 1
    # EMA settings are part of the recipe; runs from before the ramp setting used 2000 steps
    assert agg["random | mosaic 0.5, EMA 0.999 ramp 2000" + s]["AP50"]["mean"] == 0.85
    assert agg["random | mosaic 0.5, EMA 0.995 ramp 200" + s]["AP50"]["mean"] == 0.95
    assert agg["random | mosaic 1, bf16 steps" + s]["AP50"]["mean"] == 0.6
    assert agg["random | mosaic 1" + s]["AP50"]["mean"] == 0.4
    assert agg["random | mosaic 1, all train images, last epoch" + s]["AP50"]["mean"] == 0.5
    assert agg["random | mosaic 1, DFL boxes 16 bins" + s]["AP50"]["mean"] == 0.3
    assert agg["bnn | base | 320 px, 12+4 ep"]["AP50"]["mean"] == 0.7
    assert agg["bnn | NMS 0.7, vote 0.7 | 320 px, 12+4+2 ep"]["AP50"]["mean"] == 0.72
    assert "| c | random | mosaic 0.5 | 0 | 320 | 12 | 0.9000 |" in capsys.readouterr().out


def test_continued_run_whose_parent_is_elsewhere(tmp_path):
    from sarbridge.benchmarks.research.det_tables import main

    run = _run(tmp_path, "m", f"det:{tmp_path / 'gone'}", 0, 0.8, {}, {"epochs": 5})
    rec = json.loads((run / "run.json").read_text())
    rec["final"]["lineage"] = {"init": "det", "origin": "bnn"}
    (run / "run.json").write_text(json.dumps(rec))
    assert main([str(run), "--out", str(tmp_path / "out")]) == 0
    agg = json.loads((tmp_path / "out" / "tables.json").read_text())["by_init_recipe"]
    assert list(agg) == ["bnn (via gone) | base | 320 px, ?+5 ep"]
