"""The deployed path: `sarbridge detect` and Detector on real scenes, without torch."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import run_without_torch

pytest.importorskip("onnxruntime")

DETECT = "import sys\nfrom sarbridge.cli import main\nraise SystemExit(main(sys.argv[1:]))\n"


def _detect(*args):
    return run_without_torch(DETECT, "detect", *map(str, args))


def test_detect_large_real_scene_without_torch(edge_artifact, data, tmp_path):
    scene = data / "large_scenes_ioEclipse" / "vv2.jpg"
    r = _detect(
        scene,
        "--model",
        edge_artifact,
        "--out",
        tmp_path,
        "--score-threshold",
        "0.001",
        "--threads",
        "2",
        "--overlay",
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr + r.stdout
    doc = json.loads((tmp_path / "vv2.json").read_text())
    img = doc["images"][0]
    assert (img["height"], img["width"]) == (1752, 2500)
    anns = doc["annotations"]
    assert anns, "a low threshold must leave detections"
    for a in anns:
        x, y, w, h = a["bbox"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0
        assert x + w <= img["width"] + 1e-3 and y + h <= img["height"] + 1e-3
        assert 0.001 < a["score"] <= 1
    # boxes come from many tiles: they spread over the scene, not the first tile only
    xs = [a["bbox"][0] for a in anns]
    assert max(xs) > 128
    assert doc["info"]["model_sha256"] and doc["categories"] == [{"id": 1, "name": "ship"}]
    from PIL import Image

    with Image.open(tmp_path / "vv2.overlay.png") as im:
        assert im.size == (2500, 1752)
    assert not (tmp_path / "vv2.geojson").exists()  # a JPEG quick-look has no georeferencing


@pytest.mark.parametrize("pipelined", [False, True], ids=["sequential", "pipelined"])
def test_bad_scene_in_a_folder_is_reported_and_the_rest_written(
    edge_artifact, data, tmp_path, pipelined
):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    good = data / "SSDD" / "JPEGImages" / "000001.jpg"
    shutil.copy(good, scenes / "a_good.jpg")
    (scenes / "b_truncated.jpg").write_bytes(good.read_bytes()[:2000])
    shutil.copy(good, scenes / "c_good.jpg")
    out = tmp_path / "out"
    out.mkdir()
    (out / "c_good.json").write_text("{}")  # an earlier result is replaced atomically
    extra = ["--pipelined"] if pipelined else []  # pipelined: the next scene opens meanwhile
    r = _detect(scenes, "--model", edge_artifact, "--out", out, "--no-progress", *extra)
    assert r.returncode == 1
    assert "b_truncated.jpg" in r.stdout and "FAILED" in r.stdout
    assert "2 of 3 scenes written" in r.stdout
    assert {p.name for p in out.iterdir()} == {"a_good.json", "c_good.json"}
    for name in ("a_good.json", "c_good.json"):
        assert json.loads((out / name).read_text())["images"][0]["file_name"] == name.replace(
            ".json", ".jpg"
        )


def test_beginning_the_next_scene_meanwhile_writes_the_same_files(edge_artifact, data, tmp_path):
    import importlib.util

    from sarbridge.runtime.detector import Detector
    from sarbridge.runtime.scenes import detect_scenes

    jpegs = sorted((data / "SSDD" / "JPEGImages").glob("*.jpg"))[:4]
    scenes = [jpegs[0], tmp_path / "missing.jpg", *jpegs[1:], tmp_path / "last_missing.png"]
    if importlib.util.find_spec("rasterio"):  # a GeoTIFF: opened on the worker, read here
        from test_imageio import _geotiff

        speckle = np.random.default_rng(0).gamma(1.0, 300.0, (300, 260)).astype(np.uint16)
        scenes.insert(2, _geotiff(tmp_path / "geo.tif", speckle))
    detector = Detector.from_artifact(edge_artifact, threads=1, score_threshold=0.01)
    files = {}
    for prefetch in (False, True):
        out = tmp_path / f"out_{prefetch}"
        outcomes = detect_scenes(scenes, detector, out, progress=False, prefetch=prefetch)
        assert [o.ok for o in outcomes] == [p.exists() for p in scenes], [o.message for o in outcomes]
        assert "no such file" in outcomes[1].message and "no such file" in outcomes[-1].message
        assert all(o.result.timings["read"] > 0 for o in outcomes if o.ok)
        files[prefetch] = {
            p.name: json.loads(p.read_text()) for p in sorted(out.iterdir())
        }  # COCO JSON, and GeoJSON for the GeoTIFF
    assert files[True] == files[False] and len(files[True]) >= 4


def test_a_scene_whose_files_cannot_be_written_is_reported_and_the_others_go_on(
    edge_artifact, data, tmp_path
):
    """With scenes pipelined, a worker decodes and writes each scene while the network runs the
    next: a write that fails is still that scene's outcome, in order, and nothing is lost."""
    from sarbridge.runtime.detector import Detector
    from sarbridge.runtime.scenes import detect_scenes

    jpegs = sorted((data / "SSDD" / "JPEGImages").glob("*.jpg"))[:3]
    detector = Detector.from_artifact(edge_artifact, threads=1, score_threshold=0.01)
    for prefetch in (False, True):
        out = tmp_path / f"out_{prefetch}"
        blocker = out / f"{jpegs[1].stem}.json"  # a folder where the scene's JSON would go
        blocker.mkdir(parents=True)
        (blocker / "kept.txt").write_text("mine")
        seen = []
        outcomes = detect_scenes(
            jpegs, detector, out, progress=False, prefetch=prefetch, on_outcome=seen.append
        )
        assert [o.path for o in outcomes] == jpegs and seen == outcomes
        assert [o.ok for o in outcomes] == [True, False, True], [o.message for o in outcomes]
        assert str(blocker) in outcomes[1].message
        assert (blocker / "kept.txt").read_text() == "mine"
        assert sorted(p.name for p in out.iterdir()) == sorted(f"{p.stem}.json" for p in jpegs)


def test_scenes_of_many_batches_with_flips_are_the_same_pipelined_or_not(edge_artifact, tmp_path):
    """A scene's last batch is decoded after the network has run (on the writer worker when
    scenes are pipelined): the detections of a many-batch scene with test-time flips are those
    of a plain ``detect`` in every mode."""
    import shutil

    from PIL import Image

    from sarbridge.runtime.detector import Detector
    from sarbridge.runtime.scenes import detect_scenes

    rng = np.random.default_rng(1)
    img = rng.gamma(1.0, 40.0, (360, 400)).clip(0, 255).astype(np.uint8)
    img[100:108, 150:190], img[250:262, 300:310] = 255, 250  # bright ship-like targets
    scenes = [tmp_path / "a.png", tmp_path / "b.png"]
    Image.fromarray(img).save(scenes[0])
    shutil.copyfile(scenes[0], scenes[1])
    kw = {"threads": 1, "score_threshold": 0.01, "batch_size": 4, "tta_flips": "h"}
    plain = Detector.from_artifact(edge_artifact, pipelined=False, **kw)
    piped = Detector.from_artifact(edge_artifact, pipelined=True, **kw)
    ref = plain.detect(scenes[0])
    assert ref.tiles > 2 * 4 and len(ref) > 0  # several batches, something detected
    for k, (det, prefetch) in enumerate([(plain, False), (plain, True), (piped, True)]):
        outcomes = detect_scenes(scenes, det, tmp_path / f"out{k}", progress=False,
                                 prefetch=prefetch)  # fmt: skip
        for o in outcomes:
            assert o.ok and len(o.result) == len(ref), (k, o.message)
            np.testing.assert_allclose(o.result.boxes, ref.boxes, rtol=0, atol=1e-4)
            np.testing.assert_allclose(o.result.scores, ref.scores, rtol=0, atol=1e-6)


def test_manifest_hash_mismatch_is_refused(edge_artifact, tmp_path, data):
    art = tmp_path / "art"
    shutil.copytree(edge_artifact, art)
    with open(art / "model.onnx", "ab") as f:
        f.write(b"\0")
    r = _detect(data / "SSDD" / "JPEGImages" / "000001.jpg", "--model", art, "--out", tmp_path)
    assert r.returncode == 2
    assert "does not match the manifest" in r.stderr and "manifest.json" in r.stderr


def test_unknown_backend_lists_the_choices(edge_artifact, tmp_path, data):
    r = _detect(
        data / "SSDD" / "JPEGImages" / "000001.jpg",
        "--model",
        edge_artifact,
        "--out",
        tmp_path,
        "--backend",
        "tflite",
    )
    assert r.returncode == 2 and "unknown backend 'tflite'" in r.stderr
    assert "onnxruntime" in r.stderr


def test_georeferenced_16bit_scene_gives_geojson(edge_artifact, tmp_path):
    import tifffile

    rng = np.random.default_rng(0)
    amp = (rng.rayleigh(40, (300, 400))).astype(np.uint16)
    amp[100:110, 200:240] = 4000  # a bright ship-like target
    tags = [
        (33550, "d", 3, (10.0, 10.0, 0.0), True),
        (33922, "d", 6, (0.0, 0.0, 0.0, 500000.0, 4100000.0, 0.0), True),
        (34735, "H", 8, (1, 1, 0, 1, 3072, 0, 1, 32611), True),
    ]
    scene = tmp_path / "geo.tif"
    tifffile.imwrite(scene, amp, extratags=tags)
    out = tmp_path / "out"
    r = _detect(scene, "--model", edge_artifact, "--out", out, "--score-threshold", "0.001")
    assert r.returncode == 0, r.stderr
    coco = json.loads((out / "geo.json").read_text())
    geo = json.loads((out / "geo.geojson").read_text())
    assert geo["type"] == "FeatureCollection" and geo["crs"]["properties"]["name"] == "EPSG:32611"
    assert len(geo["features"]) == len(coco["annotations"]) > 0
    for f, a in zip(geo["features"], coco["annotations"], strict=True):
        x, y, w, h = a["bbox"]
        ring = np.array(f["geometry"]["coordinates"][0])
        np.testing.assert_allclose(ring[0], [500000 + 10 * x, 4100000 - 10 * y], atol=0.2)
        np.testing.assert_allclose(
            ring[2], [500000 + 10 * (x + w), 4100000 - 10 * (y + h)], atol=0.2
        )


def test_detector_api(edge_artifact, data):
    from sarbridge.runtime.decode import letterbox
    from sarbridge.runtime.detector import Detector
    from sarbridge.runtime.imageio import read_image
    from sarbridge.runtime.manifest import load_manifest
    from sarbridge.runtime.preprocess import preprocess

    path = data / "SSDD" / "JPEGImages" / "000001.jpg"
    chip = read_image(path)
    # a scene no longer than tiling.whole_scene_max (an export's default for a run trained on
    # whole chips) is one tile, letterboxed whole (416 px scaled to 128) as training saw it
    manifest = load_manifest(edge_artifact)
    manifest["tiling"]["whole_scene_max"] = 640
    whole = Detector(manifest, edge_artifact, score_threshold=0.001, threads=2)
    assert whole.tile_size == 128 and whole.whole_scene_max >= max(chip.shape) > 128
    res_whole = whole.detect(chip)
    x, lb = letterbox(preprocess(chip, whole.params), whole.input_size)
    boxes, scores, _ = whole.run_inputs(x[None])[0]
    order = np.argsort(-scores, kind="stable")[: whole.max_detections]
    assert res_whole.tiles == 1 and len(res_whole) > 0
    np.testing.assert_allclose(res_whole.boxes, lb.to_image(boxes)[order], rtol=1e-6)
    np.testing.assert_allclose(res_whole.scores, scores[order])

    # the fixture is exported with --whole-scene-max off: a scene longer than a tile is tiled
    det = Detector.from_artifact(edge_artifact, score_threshold=0.001, threads=2)
    res = det.detect(chip)  # 416 x 323 with 128 px tiles: several tiles, merged
    assert res.tiles == len(det.plan(*chip.shape[:2])) > 1 and res.map_boxes is None
    assert len(res) > 0 and res.boxes.shape == (len(res), 4)
    assert (res.boxes[:, [0, 2]] <= chip.shape[1]).all()
    assert (res.boxes[:, [1, 3]] <= chip.shape[0]).all()
    assert set(res.timings) >= {"read", "preprocess", "model", "decode", "merge"}
    np.testing.assert_allclose(det.detect(path).boxes, res.boxes)  # a file and its pixels agree

    # a chip no larger than the tile is one tile, letterboxed exactly as the training evaluation
    manifest = load_manifest(edge_artifact)
    manifest["tiling"]["size"] = 512
    one = Detector(manifest, edge_artifact, score_threshold=0.001, threads=2)
    res1 = one.detect(chip)
    x, lb = letterbox(preprocess(chip, one.params), one.input_size)
    boxes, scores, _ = one.run_inputs(x[None])[0]
    order = np.argsort(-scores, kind="stable")[: one.max_detections]
    assert res1.tiles == 1
    np.testing.assert_allclose(res1.boxes, lb.to_image(boxes)[order], rtol=1e-6)
    np.testing.assert_allclose(res1.scores, scores[order])
