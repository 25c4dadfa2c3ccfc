"""The on-board half works where torch cannot be imported; the CLI reports bad items and goes on."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from conftest import REPO, mini_voc, run_without_torch, torch_tripwire

RUNTIME_MODULES = [
    "annotations",
    "backends",
    "backends.onnxruntime",
    "backends.openvino",
    "backends.tensorrt",
    "boxes",
    "datatools",
    "decode",
    "detector",
    "errors",
    "fileio",
    "imageio",
    "importers",
    "limits",
    "manifest",
    "metrics",
    "outputs",
    "pairs",
    "paths",
    "power",
    "preprocess",
    "scenes",
    "synth",
    "tiling",
    "trt",
    "trt.api",
    "trt.build",
    "trt.cuda",
    "trt.engines",
    "zoo",
]


def test_every_runtime_module_is_listed():
    root = REPO / "runtime"
    on_disk = set()
    for p in root.rglob("*.py"):
        parts = p.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            on_disk.add(".".join(parts))
    assert on_disk == set(RUNTIME_MODULES)


# the deployment bench at benchmarks/ (torch_backend.py, the optional PyTorch row, and the
# research tools in benchmarks/research/ need torch)
BENCH_MODULES = ["bench", "report", "tensorrt_check", "tile_memory"]


@pytest.mark.parametrize(
    "package,modules", [("runtime", RUNTIME_MODULES), ("benchmarks", BENCH_MODULES)]
)
def test_on_board_modules_import_without_torch(package, modules):
    code = (
        "import importlib\n"
        + "".join(f"importlib.import_module('sarbridge.{package}.{m}')\n" for m in modules)
        + "assert sys.modules.get('torch') is None\nprint('ok')"
    )
    res = run_without_torch(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_every_deployment_bench_module_is_listed():
    on_disk = {p.stem for p in (REPO / "benchmarks").glob("*.py")} - {"__init__", "torch_backend"}
    assert on_disk == set(BENCH_MODULES)


def _cli(*args):
    return run_without_torch("from sarbridge.cli import main\nsys.exit(main(sys.argv[1:]))", *args)


def test_help_and_data_check_without_torch(data):
    res = _cli("--help")
    assert res.returncode == 0 and "data" in res.stdout
    res = _cli("data", "--help")
    assert res.returncode == 0 and "check" in res.stdout
    res = _cli("data", "check", "--no-progress", str(data / "SSDD"))
    assert res.returncode == 0, res.stderr
    assert "images: 1160 readable, boxes: 2540" in res.stdout
    assert (
        "split train: 928 images" in res.stdout
        and "split test: 232 images, 533 boxes" in res.stdout
    )


def test_data_check_reports_every_bad_item_and_goes_on(tmp_path, data):
    root = mini_voc(tmp_path / "voc", data, [f"{i:06d}" for i in range(1, 6)])
    jpg = root / "JPEGImages" / "000002.jpg"
    jpg.write_bytes(jpg.read_bytes()[:3000])  # truncated
    xml = root / "Annotations" / "000004.xml"
    xml.write_text(xml.read_text().replace("<xmin>", "<xmin>-50", 1))  # box outside the image
    (root / "Annotations" / "000005.xml").unlink()  # image without annotation
    res = _cli("data", "check", "--no-progress", str(root))
    assert res.returncode == 1
    out = res.stdout
    assert "000002.jpg: cannot decode image" in out
    assert "000004.xml: box 0" in out and "outside" in out
    assert "000005.jpg: no annotation file" in out
    assert "images: 3 readable" in out  # 1, 3, 4 still read


def test_data_tile_and_synth_without_torch(tmp_path):
    scene = np.random.default_rng(0).integers(1, 60000, size=(700, 1100), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "scene.tif", scene, tile=(256, 256), compression="zlib")
    res = _cli(
        "data",
        "tile",
        str(tmp_path / "scene.tif"),
        "--size",
        "512",
        "--overlap",
        "0.5",
        "--out",
        str(tmp_path / "tiles"),
        "--no-progress",
    )
    assert res.returncode == 0, res.stderr
    index = json.loads((tmp_path / "tiles" / "tiles.json").read_text())
    assert index["height"] == 700 and len(index["tiles"]) == 2 * 4  # x: 0, 256, 512, 588
    t = index["tiles"][-1]
    tile = tifffile.imread(tmp_path / "tiles" / t["file"])
    np.testing.assert_array_equal(tile, scene[t["y0"] : t["y0"] + 512, t["x0"] : t["x0"] + 512])

    res = _cli(
        "data",
        "synth",
        "--out",
        str(tmp_path / "syn"),
        "--n",
        "3",
        "--size",
        "256",
        "--no-progress",
    )
    assert res.returncode == 0, res.stderr
    res = _cli("data", "check", "--no-progress", str(tmp_path / "syn"))
    assert res.returncode == 0 and "images: 3 readable" in res.stdout


def test_nan_scene_and_missing_path_are_clear_errors(tmp_path):
    tifffile.imwrite(tmp_path / "nan.tif", np.full((64, 64), np.nan, np.float32))
    res = _cli("data", "check", str(tmp_path / "nan.tif"))
    assert res.returncode == 1 and "nan.tif" in res.stdout and "NaN" in res.stdout
    res = _cli("data", "check", str(tmp_path / "nowhere"))
    assert res.returncode == 2 and "nowhere: no such file or folder" in res.stderr


def test_stage_folder_cannot_be_imported_bare():
    res = subprocess.run(
        [sys.executable, "-c", "import runtime"], cwd=REPO, capture_output=True, text=True
    )
    assert res.returncode != 0 and "import it as 'sarbridge.runtime'" in res.stderr


def test_train_help_does_not_import_torch():
    res = _cli("train", "bnn", "--help")
    assert res.returncode == 0 and "--resume" in res.stdout


def test_compress_help_shows_the_prune_defaults_without_torch():
    """The compress options' defaults come from compress/settings.py, which needs no torch."""
    res = _cli("compress", "--help")
    text = " ".join(res.stdout.split())
    assert res.returncode == 0, res.stderr
    for default in ("what --ratio counts (default macs)", "Taylor (default l2)",
                    "multiple of this (default 16;", "all others (default 4;"):  # fmt: skip
        assert default in text, default


def test_bench_onnxruntime_end_to_end_never_imports_torch(edge_artifact, data, tmp_path):
    """`sarbridge bench --backends onnxruntime` on an exported artifact with torch blocked in the
    CLI and in the per-model process it spawns: results.json holds the accuracy of every image,
    and nothing even tried to import torch."""
    stems = ["000003", "000005", "000010"]
    root = mini_voc(tmp_path / "voc", data, stems, {"test": stems})
    env, log = torch_tripwire(tmp_path)
    out = tmp_path / "report"
    res = run_without_torch(
        "from sarbridge.cli import main\nsys.exit(main(sys.argv[1:]))",
        "bench", "--models", str(edge_artifact), "--backends", "onnxruntime",
        "--data", str(root), "--split", "test", "--threads", "1", "--batch-sizes", "1",
        "--iterations", "2", "--power", "none", "--out", str(out),
        env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert not log.exists(), log.read_text()
    results = json.loads((out / "results.json").read_text())
    assert results["failures"] == []
    (rec,) = results["records"]
    assert rec["backend"] == "onnxruntime" and rec["backend_description"].startswith("onnxruntime")
    acc = rec["accuracy"]
    assert set(acc) >= {"AP50", "AP50_95", "AP_small", "precision", "recall", "f1", "pr_curve"}
    assert acc["images"] == 3 and acc["left_out_unreadable"] == []
    assert all(isinstance(acc[k], float) for k in ("AP50", "AP50_95", "precision", "recall"))
    assert rec["pipeline_latency"]["n"] == 3  # one timed pass per image


def test_torch_tripwire_catches_an_import_in_a_spawned_process(tmp_path):
    """The tripwire the bench test relies on: a spawned child's `import torch` fails and is logged."""
    env, log = torch_tripwire(tmp_path)
    code = (
        "import multiprocessing as mp\n"
        "def child():\n"
        "    try:\n"
        "        import torch  # noqa: F401\n"
        "    except ImportError:\n"
        "        sys.exit(3)\n"
        "if __name__ == '__main__':\n"
        "    p = mp.get_context('spawn').Process(target=child)\n"
        "    p.start(); p.join(); print(p.exitcode)\n"
    )
    script = tmp_path / "spawn_torch.py"
    script.write_text("import sys\n" + code)
    res = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env={**os.environ, **env}
    )
    assert res.stdout.strip() == "3", res.stderr
    assert "import torch in pid" in log.read_text()
