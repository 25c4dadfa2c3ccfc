"""Fault injection: hostile and broken inputs made on the fly, and what the on-board path does.

Every case states its outcome: refused with the file (or manifest field) named, the batch
going on, nothing overwritten, memory bounded (bombs run in a subprocess under an
address-space limit), exit codes as documented (1: bad items found, 2: could not run).
Add the hostile cases of every new input format or manifest field here.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import mini_voc

from sarbridge.runtime.annotations import read_coco, read_dataset, read_voc
from sarbridge.runtime.errors import DataError, ManifestError
from sarbridge.runtime.imageio import image_size, open_raster, write_image
from sarbridge.runtime.limits import limits
from sarbridge.runtime.manifest import load_manifest
from sarbridge.runtime.zoo import resolve_artifact

pytestmark = pytest.mark.faults

ADDRESS_SPACE = 3 * 2**30  # a bomb decoded whole would need tens of GiB


def _cli(*args: str, cwd=None, limit_memory: bool = True, timeout: int = 300):
    """``sarbridge ARGS`` in a fresh process (under an address-space limit)."""

    def bound():
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    return subprocess.run(
        [sys.executable, "-m", "sarbridge", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        preexec_fn=bound if limit_memory else None,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _png_bomb(path: Path, width: int = 200_000, height: int = 200_000) -> Path:
    """A valid-looking 8-bit grey PNG whose header claims ``width x height`` (a few bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 4)  # four rows of zeros
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def _tiff_bomb(path: Path, width: int = 200_000, height: int = 200_000) -> Path:
    """A little-endian baseline TIFF whose header claims ``width x height`` 8-bit pixels in one
    strip, with 64 bytes of data (written by hand: tifffile would write every pixel)."""
    tags = [  # (tag, type, count, value): type 3 SHORT, 4 LONG
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
        (262, 3, 1, 1), (273, 4, 1, 0), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, 64),
    ]  # fmt: skip
    ifd_offset = 8
    data_offset = ifd_offset + 2 + 12 * len(tags) + 4
    entries = b"".join(
        struct.pack("<HHI", tag, kind, count)
        + (struct.pack("<I", data_offset if tag == 273 else value) if kind == 4
           else struct.pack("<HH", value, 0))
        for tag, kind, count, value in tags
    )  # fmt: skip
    path.write_bytes(
        b"II*\x00" + struct.pack("<I", ifd_offset) + struct.pack("<H", len(tags)) + entries
        + struct.pack("<I", 0) + b"\x00" * 64
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def zoo_model() -> Path:
    return resolve_artifact("zoo:ssdd_edge_det")


def _artifact_copy(zoo_model: Path, dest: Path, change=None) -> Path:
    """A copy of the zoo artifact with its manifest changed by ``change(manifest)``."""
    shutil.copytree(zoo_model, dest)
    if change is not None:
        manifest = json.loads((dest / "manifest.json").read_text())
        change(manifest)
        (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def _ssdd_image(data: Path, stem: str = "000001") -> Path:
    return data / "SSDD" / "JPEGImages" / f"{stem}.jpg"


# ---------------------------------------------------------------- decompression bombs


def test_png_bomb_is_refused_from_its_header_whatever_its_position(tmp_path, data, zoo_model):
    """A 200,000 x 200,000 PNG header: refused by size before decoding, first in the folder or
    after a JPEG (PIL's own guard used to depend on what was opened before); the JPEGs go on."""
    for order, names in (("first", ("a_bomb.png", "b.jpg")), ("after", ("a.jpg", "b_bomb.png"))):
        scenes = tmp_path / order
        scenes.mkdir()
        for name in names:
            if "bomb" in name:
                _png_bomb(scenes / name)
            else:
                shutil.copy(_ssdd_image(data), scenes / name)
        out = tmp_path / f"out_{order}"
        res = _cli("detect", str(scenes), "--model", str(zoo_model), "--out", str(out),
                   "--threads", "1", "--no-progress")  # fmt: skip
        text = res.stdout + res.stderr
        assert res.returncode == 1, text
        bomb = next(n for n in names if "bomb" in n)
        assert f"{bomb}: its header claims 200000 x 200000" in text and "limit" in text
        assert "Traceback" not in text
        good = next(n for n in names if "bomb" not in n)
        assert (out / f"{Path(good).stem}.json").is_file()
        assert text.count(f"{bomb}:") == 1  # reported once, not twice


def test_png_bomb_in_data_check_is_a_problem_not_a_crash(tmp_path):
    bomb = _png_bomb(tmp_path / "bomb.png")
    res = _cli("data", "check", str(bomb), "--no-progress")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "bomb.png" in res.stdout and "limit" in res.stdout


def test_header_size_checks_apply_to_every_format(tmp_path):
    import tifffile

    bomb = _png_bomb(tmp_path / "bomb.png", 20_000, 20_000)  # 4e8 pixels: over the PNG cap
    with pytest.raises(DataError, match="bomb.png.*limit of 67,108,864"):
        image_size(bomb)
    with pytest.raises(DataError, match="limit"):
        open_raster(bomb)
    # a TIFF header claiming 200,000 x 200,000: refused before any pixel is read
    big = _tiff_bomb(tmp_path / "big.tif")
    assert big.stat().st_size < 1000
    with pytest.raises(DataError, match="big.tif.*200000 x 200000.*SARBRIDGE_MAX_PIXELS"):
        image_size(big)
    # real tiles, a small file: the limit, not the file size, decides
    tiled = tmp_path / "tiled.tif"
    tifffile.imwrite(tiled, np.zeros((2048, 2048), np.uint8), tile=(256, 256), compression="zlib")
    assert tiled.stat().st_size < 200_000
    with limits(max_pixels=1_000_000), pytest.raises(DataError, match="tiled.tif.*limit of 1,000,000"):
        open_raster(tiled)
    # the limit can be raised, and is then what decides
    small = tmp_path / "small.png"
    write_image(small, np.zeros((300, 400), np.uint8))
    assert image_size(small) == (300, 400)
    with limits(max_whole_pixels=100_000), pytest.raises(DataError, match="limit of 100,000"):
        image_size(small)


def test_a_compressed_tiff_in_one_huge_strip_is_refused(tmp_path):
    import tifffile

    path = tmp_path / "one_strip.tif"
    tifffile.imwrite(path, np.zeros((2048, 2048), np.uint16), compression="zlib", rowsperstrip=2048)
    with limits(max_segment_mib=4), pytest.raises(DataError, match="one strip.*8 MiB.*4 MiB"):
        open_raster(path)
    with open_raster(path) as r:  # under the default limit it reads
        assert r.read(0, 0, 16, 16).shape == (16, 16)


def test_tile_count_limit_refuses_a_scene_before_any_tile(tmp_path, data, zoo_model):
    scene = tmp_path / "wide.png"
    write_image(scene, np.zeros((600, 3000), np.uint8))
    out = tmp_path / "out"
    res = _cli("detect", str(scene), "--model", str(zoo_model), "--out", str(out),
               "--max-tiles", "5", "--no-progress")  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr
    assert "wide.png" in res.stdout and "over the limit of 5 per scene" in res.stdout


# ---------------------------------------------------------------- outputs


def test_output_names_never_collide(tmp_path, data, zoo_model):
    """a.jpg, a.png and a_2.jpg: three scenes, three results (a, a_3 and a_2), reported."""
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    shutil.copy(_ssdd_image(data, "000001"), scenes / "a.jpg")
    shutil.copy(_ssdd_image(data, "000002"), scenes / "a_2.jpg")
    from PIL import Image

    Image.open(_ssdd_image(data, "000003")).save(scenes / "a.png")
    out = tmp_path / "out"
    res = _cli("detect", str(scenes), "--model", str(zoo_model), "--out", str(out),
               "--threads", "1", "--no-progress")  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    sources = {
        p.stem: Path(json.loads(p.read_text())["info"]["source"]).name for p in out.glob("*.json")
    }
    assert sources == {"a": "a.jpg", "a_2": "a_2.jpg", "a_3": "a.png"}
    assert "written as a_3" in res.stdout and "1 under another name" in res.stdout


def test_out_that_cannot_be_written_is_refused_before_inference(tmp_path, data, zoo_model):
    scene = _ssdd_image(data)
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep me\n")
    res = _cli("detect", str(scene), "--model", str(zoo_model), "--out", str(a_file))
    assert res.returncode == 2 and "is a file, not a folder" in res.stderr
    assert a_file.read_text() == "keep me\n"
    res = _cli("detect", str(scene), "--model", str(zoo_model), "--out", str(a_file / "o"))
    assert res.returncode == 2 and "cannot be written" in res.stderr, res.stderr


@pytest.mark.parametrize("mode", ["--no-pipelined", "--pipelined"])
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_interrupted_detect_leaves_no_partial_file(tmp_path, data, zoo_model, sig, code, mode):
    """Stopped mid-run: no temporary file left, and every JSON has its overlay (published
    together); pipelined, also while a worker writes the scene before."""
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for k in range(1, 41):
        shutil.copy(_ssdd_image(data, f"{k:06d}"), scenes)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sarbridge", "detect", str(scenes), "--model", str(zoo_model),
         "--out", str(out), "--overlay", "--threads", "1", "--no-progress", mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*.json"))) < 3:
        time.sleep(0.05)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode in (code, 0), stdout + stderr  # 0: it finished first
    assert not [p.name for p in out.iterdir() if p.name.endswith(".partial")]
    for js in out.glob("*.json"):
        assert (out / f"{js.stem}.overlay.png").is_file(), js


# ---------------------------------------------------------------- manifests against models


def _set(path: str, value):
    def change(m):
        *head, last = path.split(".")
        node = m
        for key in head:
            node = node[int(key)] if key.isdigit() else node[key]
        node[last] = value

    return change


@pytest.mark.parametrize(
    "change, field",
    [
        (_set("model.file", "/etc/passwd"), "model.file"),
        (_set("model.file", "../../etc/passwd"), "model.file"),
        (_set("preprocessing.input_size", 100_000), "preprocessing.input_size"),
        (_set("postprocessing.strides", [8, 0, 32]), "postprocessing.strides"),
        (_set("postprocessing.strides", [8, 16, 24]), "must divide"),
        (_set("tiling.size", 1_000_000_000), "tiling.size"),
        (_set("tiling.overlap", 0.999), "tiling.overlap"),
        (_set("postprocessing.max_detections", 10**9), "postprocessing.max_detections"),
        (_set("inputs.0.shape", ["batch", 3, 512, 512]), "preprocessing.channels"),
        (_set("inputs.0.shape", ["batch", 1, 256, 256]), "input_size"),
        (_set("inputs.0.dtype", "uint8"), "inputs[0].dtype"),
        (_set("preprocessing.letterbox_align", "diagonal"), "preprocessing.letterbox_align"),
        (_set("preprocessing.letterbox_fill", "grey"), "preprocessing.letterbox_fill"),
    ],
)
def test_manifest_out_of_range_is_refused_with_exit_2(tmp_path, zoo_model, data, change, field):
    art = _artifact_copy(zoo_model, tmp_path / "art", change)
    out = tmp_path / "out"
    res = _cli("detect", str(_ssdd_image(data)), "--model", str(art), "--out", str(out))
    assert res.returncode == 2, res.stdout + res.stderr
    assert field in res.stderr and "manifest.json" in res.stderr and "Traceback" not in res.stderr
    assert not list(out.glob("*.json"))


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda m: (m["inputs"][0].update(name="x")), "inputs[0].name"),
        (
            lambda m: (
                m["preprocessing"].update(channels=3),
                m["inputs"][0].update(shape=["batch", 3, 512, 512]),
            ),
            "preprocessing.channels",
        ),
        (lambda m: m["outputs"][0].update(name="boxes"), "'outputs'"),
    ],
)
def test_manifest_that_does_not_describe_its_model_is_refused(tmp_path, zoo_model, change, field):
    """Each change passes the schema; the model file itself says otherwise."""
    from sarbridge.runtime.detector import Detector

    art = _artifact_copy(zoo_model, tmp_path / "art", change)
    load_manifest(art)  # a valid manifest on its own
    with pytest.raises(ManifestError, match=field.replace("[", r"\[").replace("]", r"\]")):
        Detector.from_artifact(art, threads=1)


def test_another_valid_model_behind_the_manifest_is_refused(tmp_path, zoo_model):
    """A 256 px model swapped in with its sha256 updated: the size check finds it."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from sarbridge.runtime.detector import Detector
    from sarbridge.runtime.fileio import sha256_file

    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["raw"])],
        "other",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 1, 256, 256])],
        [helper.make_tensor_value_info("raw", TensorProto.FLOAT, ["batch", 1, 256, 256])],
    )
    art = _artifact_copy(zoo_model, tmp_path / "art")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), art / "model.onnx")
    _set("model.sha256", sha256_file(art / "model.onnx"))(m := json.loads((art / "manifest.json").read_text()))
    (art / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match="input_size' is 512 but the model's input 'images' has 256"):
        Detector.from_artifact(art, threads=1)


def test_model_file_linked_out_of_the_artifact_is_refused(tmp_path, zoo_model):
    art = _artifact_copy(zoo_model, tmp_path / "art")
    elsewhere = tmp_path / "elsewhere.onnx"
    shutil.move(art / "model.onnx", elsewhere)
    (art / "model.onnx").symlink_to(elsewhere)
    with pytest.raises(ManifestError, match="outside the artifact folder"):
        load_manifest(art)


# ---------------------------------------------------------------- annotation readers


def _ann(**changes) -> dict:
    return {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]} | changes


COCO_CASES = {  # case: (changes to a valid document, what the problem says)
    "bbox of strings": ({"annotations": [_ann(bbox=["1", "2", "3", "4"])]}, "no valid bbox"),
    "bbox null": ({"annotations": [_ann(bbox=None)]}, "no valid bbox"),
    "bbox number too large": ({"annotations": [_ann(bbox=[10**400, 1, 1, 1])]}, "too large"),
    "height a string": (
        {"images": [{"id": 1, "file_name": "a.png", "height": "512", "width": 512}]},
        "'height' must be a positive int",
    ),
    "no file_name": ({"images": [{"id": 1, "height": 512, "width": 512}]}, "no 'file_name'"),
    "file_name outside": (
        {"images": [{"id": 1, "file_name": "../../x.png", "height": 5, "width": 5}]},
        "leaves the image folder",
    ),
    "category without id": (
        {"categories": [{"name": "ship"}, {"id": 1, "name": "boat"}]},
        "categories[0] needs an int 'id'",
    ),
    "duplicate image id": (
        {
            "images": [
                {"id": 1, "file_name": "a.png", "height": 512, "width": 512},
                {"id": 1, "file_name": "b.png", "height": 512, "width": 512},
            ]
        },
        "duplicate image id 1",
    ),
    "unknown image": ({"annotations": [_ann(image_id=7)]}, "not a valid image"),
    "list as image id": ({"annotations": [_ann(image_id=[1])]}, "not a valid image"),
    "list as category": ({"annotations": [_ann(category_id=[1])]}, "unknown category"),
    "annotation not an object": ({"annotations": ["ship"]}, "must be an object"),
}


def _coco(**changes) -> dict:
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "height": 512, "width": 512}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]}],
        "categories": [{"id": 1, "name": "ship"}],
    }
    return doc | changes


def test_a_valid_coco_document_has_no_problem(tmp_path):
    write_image(tmp_path / "a.png", np.zeros((512, 512), np.uint8))
    (tmp_path / "ann.json").write_text(json.dumps(_coco()))
    res = _cli("data", "check", str(tmp_path / "ann.json"), "--no-progress", limit_memory=False)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("case", sorted(COCO_CASES))
def test_coco_entries_of_wrong_types_are_problems(tmp_path, case):
    changes, says = COCO_CASES[case]
    write_image(tmp_path / "a.png", np.zeros((512, 512), np.uint8))  # the valid image reads
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(_coco(**changes)))
    ds = read_coco(path)
    assert any(says in p.message for p in ds.problems), (case, ds.problems)
    assert all(p.path.name in ("ann.json", "a.png", "x.png") for p in ds.problems)
    res = _cli("data", "check", str(path), "--no-progress", limit_memory=False)
    assert res.returncode == 1 and says in res.stdout and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "doc, what",
    [
        ("a string", "top level is a str"),
        ({"images": [], "annotations": {}, "categories": []}, "'annotations' must be a list"),
        ({"images": [], "annotations": []}, "no 'categories' list"),
        ({"images": [], "annotations": [], "categories": [{"name": "x"}]}, "no valid category"),
    ],
)
def test_coco_file_that_is_not_coco_cannot_run_exit_2(tmp_path, doc, what):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=what):
        read_coco(path)
    res = _cli("data", "check", str(path), "--no-progress", limit_memory=False)
    assert res.returncode == 2 and "ann.json" in res.stderr and "Traceback" not in res.stderr


def test_voc_filename_outside_the_dataset_is_refused(tmp_path, data):
    root = mini_voc(tmp_path / "voc", data, ["000001", "000002"], {"test": ["000001", "000002"]})
    outside = tmp_path / "other"
    outside.mkdir()
    shutil.copy(_ssdd_image(data, "000003"), outside / "x.jpg")
    xml = root / "Annotations" / "000001.xml"
    text = xml.read_text()
    start, end = text.index("<filename>"), text.index("</filename>")
    xml.write_text(text[:start] + "<filename>../../other/x.jpg" + text[end:])
    ds = read_voc(root)
    assert [r.image_id for r in ds.records] == ["000002"]
    assert any("not a plain file name" in p.message for p in ds.problems)


def test_images_in_no_split_are_reported(tmp_path, data):
    root = mini_voc(tmp_path / "voc", data, ["000001", "000002", "000003"], {"train": ["000001"]})
    res = _cli("data", "check", str(root), "--no-progress", "--no-decode", limit_memory=False)
    assert res.returncode == 1 and "2 readable images are in no split file" in res.stdout
    plain = mini_voc(tmp_path / "plain", data, ["000001", "000002"])
    res = _cli("data", "check", str(plain), "--no-progress", "--no-decode", limit_memory=False)
    assert res.returncode == 0 and "seeded 80/20 split" in res.stdout


def test_yolo_labels_that_are_not_text_or_not_numbers_are_problems(tmp_path):
    for k in range(3):
        write_image(tmp_path / "images" / f"{k}.png", np.zeros((64, 64), np.uint8))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "0.txt").write_bytes(b"\xff\xfe\x00binary")
    (tmp_path / "labels" / "1.txt").write_text("0 nan 0.5 0.1 0.1\n0 0.5 0.5 inf 0.1\nx y\n")
    (tmp_path / "labels" / "2.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    ds = read_dataset(tmp_path)
    assert [r.image_id for r in ds.records] == ["1", "2"]
    assert len(ds.records[0].boxes) == 0 and len(ds.records[1].boxes) == 1
    messages = " | ".join(str(p) for p in ds.problems)
    assert "0.txt: cannot read labels" in messages and "1.txt" in messages


def test_a_pair_folder_with_a_bomb_is_a_problem(tmp_path):
    from sarbridge.runtime.pairs import find_scene_pairs

    for name in ("a", "b"):
        write_image(tmp_path / "sar" / f"{name}.png", np.zeros((64, 64), np.uint8))
        write_image(tmp_path / "opt" / f"{name}.png", np.zeros((64, 64, 3), np.uint8))
    _png_bomb(tmp_path / "sar" / "b.png")
    pairs, problems = find_scene_pairs(tmp_path)
    assert [p.scene_id for p in pairs] == [f"{tmp_path.name}/a"]
    assert len(problems) == 1 and "b.png" in str(problems[0]) and "limit" in str(problems[0])


def test_a_whole_read_is_bounded_like_a_png(tmp_path):
    path = tmp_path / "s.tif"
    write_image(path, np.zeros((100, 100), np.uint16))
    with open_raster(path) as r, limits(max_whole_pixels=1000):
        assert r.read(0, 0, 10, 100).shape == (10, 100)
        with pytest.raises(DataError, match="s.tif: a window of 100 x 50 pixels.*1,000"):
            r.read(0, 0, 50, 100)


def test_a_folder_of_coco_files_goes_on_past_a_bad_one(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(_coco()))
    (tmp_path / "b.json").write_text("[1, 2")
    ds = read_dataset(tmp_path)
    assert len(ds.records) == 1 and any("b.json" in str(p) for p in ds.problems)


# ---------------------------------------------------------------- bench


def test_bench_on_damaged_annotations_lists_what_it_left_out(tmp_path, data, zoo_model):
    stems = [f"{k:06d}" for k in range(1, 6)]
    root = mini_voc(tmp_path / "voc", data, stems, {"test": stems})
    (root / "Annotations" / "000002.xml").write_text("<annotation><size>")  # unparsable
    xml = root / "Annotations" / "000003.xml"
    xml.write_text(xml.read_text().replace("<xmax>", "<xmax>9", 1))  # a box beyond the image
    out = tmp_path / "report"
    res = _cli("bench", "--models", str(zoo_model), "--data", str(root), "--split", "test",
               "--threads", "1", "--batch-sizes", "1", "--iterations", "2", "--power", "none",
               "--out", str(out), limit_memory=False)  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr
    results = json.loads((out / "results.json").read_text())
    ds = results["dataset"]
    assert ds["images"] == 4 and len(ds["problems"]) == 2 and len(ds["digest"]) == 64
    report = (out / "report.md").read_text()
    assert "000002.xml" in report and "000003.xml" in report and "Dataset problems" in report

    # the same report against one of another dataset: refused unless forced
    other = json.loads(json.dumps(results))
    other["dataset"]["digest"] = "0" * 64
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "results.json").write_text(json.dumps(other))
    res = _cli("bench", "--compare", str(out), str(tmp_path / "other"), limit_memory=False)
    assert res.returncode == 2 and "different datasets" in res.stderr
    res = _cli("bench", "--compare", str(out), str(tmp_path / "other"), "--force",
               limit_memory=False)  # fmt: skip
    assert res.returncode == 0 and "WARNING" in res.stdout
    res = _cli("bench", "--compare", str(out), str(out), limit_memory=False)
    assert res.returncode == 0 and "WARNING" not in res.stdout
    # a report from before the digest: its data settings are compared, with a warning
    old = json.loads(json.dumps(results))
    del old["dataset"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text(json.dumps(old))
    res = _cli("bench", "--compare", str(tmp_path / "old"), str(out), limit_memory=False)
    assert res.returncode == 0 and "no dataset digest" in res.stdout


def test_bench_out_that_is_a_file_is_refused(tmp_path, zoo_model):
    a_file = tmp_path / "report"
    a_file.write_text("x")
    res = _cli("bench", "--models", str(zoo_model), "--out", str(a_file), limit_memory=False)
    assert res.returncode == 2 and "is a file" in res.stderr and a_file.read_text() == "x"


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "args, message",
    [
        (["--score-threshold", "2"], "not in [0, 1]"),
        (["--score-threshold", "nan"], "not in [0, 1]"),
        (["--score-threshold", "-1"], "not in [0, 1]"),
        (["--batch", "0"], "must be at least 1"),
        (["--batch", "-5"], "must be at least 1"),
        (["--threads", "x"], "not an integer"),
        (["--max-pixels", "0"], "must be at least 1"),
    ],
)
def test_detect_arguments_are_checked(tmp_path, zoo_model, args, message):
    res = _cli("detect", "x.png", "--model", str(zoo_model), "--out", str(tmp_path), *args,
               limit_memory=False)  # fmt: skip
    assert res.returncode == 2 and message in res.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-images", "0"], "must be at least 1"),
        (["--batch-sizes", "1,0"], "must be at least 1"),
        (["--iterations", "0"], "must be at least 1"),
    ],
)
def test_bench_arguments_are_checked(tmp_path, args, message):
    res = _cli("bench", "--models", "m", "--out", str(tmp_path), *args, limit_memory=False)
    assert res.returncode == 2 and message in res.stderr


def test_exit_codes_are_documented():
    for cmd in (["--help"], ["detect", "--help"], ["bench", "--help"], ["data", "check", "--help"]):
        res = _cli(*cmd, limit_memory=False)
        assert res.returncode == 0 and "could not run" in res.stdout, cmd
