"""`sarbridge bench`: a run on a tiny model and 4 SSDD images, the results schema, compare, NVML."""

from __future__ import annotations

import json
import sys
import types

import pytest
from conftest import mini_voc, run_without_torch

from sarbridge.runtime.errors import SarbridgeError

pytest.importorskip("onnxruntime")
pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_IMAGES, BATCH_SIZES, ITERATIONS = 4, (1, 2), 6


def direct_accuracy(artifact, records, classes, batch_size, threads=None):
    """COCO AP and precision/recall of ``records`` computed here, straight from Detector's
    detections at the bench's settings, to hold the bench's numbers against."""
    from sarbridge.runtime.detector import Detector
    from sarbridge.runtime.metrics import Detections, coco_ap, precision_recall_at

    det = Detector.from_artifact(
        artifact, batch_size=batch_size, score_threshold=0.001, threads=threads
    )
    dets = []
    for rec in records:
        res = det.detect(rec.path)
        dets.append(Detections(rec.image_id, res.boxes, res.scores, res.labels))
    operating = float(det.manifest["postprocessing"]["score_threshold"])
    return coco_ap(records, dets, classes, det.max_detections), precision_recall_at(
        records, dets, operating
    )


def assert_latency_consistent(stats: dict, n: int) -> None:
    """Percentiles of ``n`` timed runs: ordered, and the mean inside their range."""
    assert stats["n"] == n
    assert 0 < stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"]


@pytest.fixture(scope="module")
def report(edge_artifact, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    code = "import sys\nfrom sarbridge.cli import main\nraise SystemExit(main(sys.argv[1:]))\n"
    r = run_without_torch(
        code,
        "bench", "--models", str(edge_artifact), "--max-images", str(MAX_IMAGES),
        "--threads", "1", "--batch-sizes", ",".join(map(str, BATCH_SIZES)),
        "--iterations", str(ITERATIONS), "--power", "auto",
        "--scenes", str(data / "large_scenes_ioEclipse" / "vv2.jpg"), "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def test_bench_writes_every_file_with_sane_values(report, edge_artifact, data):
    import importlib.metadata
    import platform

    from sarbridge.benchmarks.bench import load_results
    from sarbridge.runtime.annotations import read_dataset
    from sarbridge.runtime.detector import Detector
    from sarbridge.runtime.fileio import git_sha
    from sarbridge.runtime.manifest import load_manifest

    results = load_results(report)
    assert results["failures"] == []
    (rec,) = results["records"]
    manifest = load_manifest(edge_artifact)

    # accuracy: the bench's AP is COCO AP of the deployed path's detections, computed here too
    ds = read_dataset(data / "SSDD")
    records = ds.split("test")[:MAX_IMAGES]
    ap, pr = direct_accuracy(edge_artifact, records, ds.classes, max(BATCH_SIZES), threads=1)
    acc = rec["accuracy"]
    assert acc["images"] == MAX_IMAGES
    assert acc["ships"] == sum(len(r.boxes) for r in records)
    for key in ("AP50", "AP50_95", "AP75", "AP_small", "AP_medium", "AP_large"):
        assert acc[key] == pytest.approx(ap[key], abs=1e-6), key
    by_iou = [p["AP"] for p in acc["AP_by_iou"]]
    assert [p["iou"] for p in acc["AP_by_iou"]] == [round(0.5 + 0.05 * k, 2) for k in range(10)]
    assert by_iou[0] == pytest.approx(ap["AP50"]) and by_iou[5] == pytest.approx(ap["AP75"])
    for key in ("precision", "recall", "f1"):
        assert acc[key] == pytest.approx(pr[key], abs=1e-9), key
    curve = acc["pr_curve"]
    assert [c["threshold"] for c in curve] == [round(0.05 * k, 2) for k in range(1, 20)]
    recalls = [c["recall"] for c in curve]
    assert recalls == sorted(recalls, reverse=True)  # a higher threshold never finds more

    # latency: counts of timed runs, and throughput that is the batch over the mean time
    lat = rec["latency"]
    assert [t["batch"] for t in lat["throughput"]] == list(BATCH_SIZES)
    for row in lat["throughput"]:
        n = max(5, ITERATIONS // row["batch"])
        assert_latency_consistent(row, n)
        assert row["images_per_s"] == pytest.approx(row["batch"] * 1000 / row["mean_ms"])
    assert lat["batch1"] == {k: lat["throughput"][0][k] for k in lat["batch1"]}
    best = max(lat["throughput"], key=lambda r: r["images_per_s"])
    assert (lat["best_batch"], lat["best_images_per_s"]) == (best["batch"], best["images_per_s"])
    assert_latency_consistent(rec["pipeline_latency"], MAX_IMAGES)

    # size and memory: the file on disk and the manifest's counts (one view: no flips)
    model_file = edge_artifact / manifest["model"]["file"]
    assert rec["size"]["file_mib"] == pytest.approx(model_file.stat().st_size / 2**20)
    assert rec["size"]["parameters"] == manifest["metrics"]["parameters"]
    assert rec["size"]["gmacs_per_image"] == pytest.approx(manifest["metrics"]["gmacs_per_image"])
    assert 30 < rec["memory"]["peak_rss_mib"] < 16 * 1024  # MiB, not KiB or bytes

    # the large scene: every tile of its plan, and rates that follow from the wall time
    (scene,) = rec["scenes"]["per_scene"]
    det = Detector.from_artifact(edge_artifact)
    assert (scene["height"], scene["width"]) == (1752, 2500)
    assert scene["tiles"] == len(det.plan(1752, 2500))
    assert scene["tiles_per_s"] == pytest.approx(scene["tiles"] / scene["seconds"])
    assert rec["scenes"]["scenes_per_minute"] == pytest.approx(60 / scene["seconds"])

    env = results["environment"]
    assert env["versions"]["onnxruntime"] == importlib.metadata.version("onnxruntime")
    assert env["python"] == platform.python_version() and env["git_sha"] == git_sha()
    for png in ("ap_vs_latency.png", "ap_vs_size.png", "pr_curves.png", "ap_vs_iou.png"):
        assert (report / png).read_bytes()[:8] == PNG_MAGIC
    md = (report / "report.md").read_text()
    assert "AP50:95" in md and "Large scenes" in md and "AP at IoU thresholds" in md
    # the row of AP at IoU 0.50, 0.60, 0.70, 0.75 of this model
    cells = " | ".join(f"{by_iou[k]:.3f}" for k in (0, 2, 4, 5))
    assert f"| {rec['model']} [{rec['backend']}] | {cells} |" in md
    assert f"{acc['AP50']:.3f}" in md and rec["model"] in md
    html = (report / "report.html").read_text()
    assert rec["model"] in html and html.count("data:image/png;base64,") >= 3


def test_power_not_measured_is_said_not_invented(report):
    from sarbridge.benchmarks.bench import load_results

    rec = load_results(report)["records"][0]
    if rec["power"]["probe"].startswith("not measured"):
        assert rec["power"]["energy_per_image_j"] is None and rec["power"]["mean_w"] is None
        assert "not measured" in (report / "report.md").read_text()
        assert not (report / "ap_vs_energy.png").exists()
    else:  # a machine with a probe: the best batch's energy over its timed images
        lat = rec["latency"]
        best = next(r for r in lat["throughput"] if r["batch"] == lat["best_batch"])
        images = best["batch"] * best["n"]
        assert rec["power"]["energy_per_image_j"] == pytest.approx(
            best["power"]["energy_j"] / images, rel=1e-3, abs=1e-4 / images
        )


def test_results_schema_round_trip_and_refusals(report, tmp_path):
    from sarbridge.benchmarks.bench import load_results, save_results

    results = load_results(report)
    save_results(results, tmp_path / "results.json")
    assert load_results(tmp_path) == results
    broken = dict(results, records=[{"model": "x"}])
    with pytest.raises(SarbridgeError, match="misses"):
        save_results(broken, tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"schema": "something else"}))
    with pytest.raises(SarbridgeError, match="not a sarbridge bench results"):
        load_results(tmp_path / "other.json")


def test_compare_puts_regressions_first(report, tmp_path):
    from sarbridge.benchmarks.bench import compare, load_results, save_results

    results = load_results(report)
    slower = json.loads(json.dumps(results))
    rec = slower["records"][0]
    rec["latency"]["batch1"]["p50_ms"] *= 2
    rec["accuracy"]["AP50"] = min(1.0, rec["accuracy"]["AP50"] + 0.1)
    (tmp_path / "after").mkdir()
    save_results(slower, tmp_path / "after" / "results.json")
    lines = compare(report, tmp_path / "after")
    assert lines[0].startswith("WORSE") and "p50" in lines[0]
    assert any(line.startswith("better") and "] AP50: " in line for line in lines)


def test_pareto_front():
    from sarbridge.benchmarks.report import pareto_front

    pts = [(10, 0.5), (20, 0.6), (15, 0.4), (30, 0.6), (5, 0.3)]
    assert pareto_front(pts) == [4, 0, 1]


class _FakeNvml(types.ModuleType):
    """pynvml's calls as NVML answers them: power in mW, total energy in mJ (recorded values)."""

    class NVMLError(Exception):
        pass

    def __init__(self, energy_mj, power_mw=(61234, 65010, 70000)):
        super().__init__("pynvml")
        self.energy = list(energy_mj)
        self.power = list(power_mw)

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA H200"

    def nvmlDeviceGetPowerUsage(self, h):
        return self.power[0] if len(self.power) == 1 else self.power.pop(0)

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        if not self.energy:
            raise self.NVMLError("Not Supported")
        return self.energy.pop(0)


def test_nvml_probe_uses_the_energy_counter(monkeypatch):
    from sarbridge.runtime.power import NvmlProbe

    fake = _FakeNvml(energy_mj=[1000, 123_456_000, 123_458_500])  # probe check, start, stop
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    probe = NvmlProbe(interval_s=10)
    assert probe.device_name == "NVIDIA H200"
    _, reading = probe.measure(lambda: None)
    assert reading.method == "counter" and reading.energy_j == pytest.approx(2.5)


def test_nvml_probe_samples_power_without_a_counter(monkeypatch):
    from sarbridge.runtime.power import NvmlProbe

    fake = _FakeNvml(energy_mj=[], power_mw=[50000])  # a GPU without the energy counter
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    probe = NvmlProbe(interval_s=0.005)
    import time

    _, reading = probe.measure(time.sleep, 0.05)
    assert reading.method == "sampled" and reading.mean_w == pytest.approx(50.0)
    assert reading.energy_j == pytest.approx(50.0 * reading.seconds)


def test_network_latency_runs_every_view_of_a_flips_model(edge_artifact, tmp_path, monkeypatch):
    """A model with test-time flips runs the network once per view per image: bench times all."""
    import shutil

    from sarbridge.benchmarks.bench import BenchSettings, bench_one
    from sarbridge.benchmarks.report import tables
    from sarbridge.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from sarbridge.runtime.manifest import MANIFEST_NAME, load_manifest

    art = tmp_path / "flips"
    shutil.copytree(edge_artifact, art)
    manifest = load_manifest(art)
    manifest["postprocessing"]["tta_flips"] = ["h", "v", "hv"]
    (art / MANIFEST_NAME).write_text(json.dumps(manifest))

    shapes = []
    real_run = OnnxRuntimeBackend.run

    def counted(self, batch):
        shapes.append(batch.shape)
        return real_run(self, batch)

    monkeypatch.setattr(OnnxRuntimeBackend, "run", counted)
    settings = BenchSettings(data=None, batch_sizes=(1, 2), iterations=6, warmup=1, power="none")
    rec = bench_one(str(art), "onnxruntime", settings)
    assert rec["latency"]["views_per_image"] == 4
    gmacs = load_manifest(edge_artifact)["metrics"]["gmacs_per_image"]
    assert rec["size"]["gmacs_per_image"] == pytest.approx(4 * gmacs)
    # batch 1: (1 warm-up + 6 timed) x 4 views; batch 2: (1 + max(5, 6 // 2)) x 4 views
    assert len(shapes) == 28 + 24
    assert {s[0] for s in shapes} == {1, 2}
    main = tables({"records": [rec]})[0][2]
    assert main[0][0].endswith("(4 views)")


def test_unreadable_images_and_scenes_are_left_out_and_listed(edge_artifact, data, tmp_path):
    from sarbridge.benchmarks.bench import BenchSettings, bench_one, environment
    from sarbridge.benchmarks.report import write_report
    from sarbridge.runtime.annotations import read_dataset

    stems = ["000001", "000002", "000003", "000004"]
    root = mini_voc(tmp_path / "voc", data, stems, {"test": stems})
    (root / "JPEGImages" / "000001.jpg").write_bytes(b"not a jpeg")  # the first: warm-up too
    bad_scene = tmp_path / "scene.tif"
    bad_scene.write_bytes(b"II*\x00 truncated")

    settings = BenchSettings(
        data=str(root),
        split="test",
        scenes=(str(bad_scene),),
        batch_sizes=(1,),
        iterations=2,
        warmup=1,
        power="none",
    )
    rec = bench_one(str(edge_artifact), "onnxruntime", settings)
    acc = rec["accuracy"]
    ds = read_dataset(root)
    readable = [r for r in ds.split("test") if r.path.name != "000001.jpg"]
    ap, _ = direct_accuracy(edge_artifact, readable, ds.classes, max(settings.batch_sizes))
    assert acc["images"] == 3 and acc["AP50"] == pytest.approx(ap["AP50"], abs=1e-6)
    (line,) = acc["left_out_unreadable"]
    assert "000001.jpg" in line
    assert rec["scenes"] is None and "scene.tif" in rec["scenes_unreadable"][0]
    assert "no image in it" in rec["scenes_unreadable"][0]

    results = {
        "environment": environment(None),
        "settings": {"data": str(root), "split": "test"},
        "records": [rec],
        "failures": [],
    }
    (tmp_path / "out").mkdir()
    write_report(results, tmp_path / "out")
    for name in ("report.md", "report.html"):
        text = (tmp_path / "out" / name).read_text()
        assert "Left out" in text and "000001.jpg" in text and "scene.tif" in text


def test_bench_pairs_leave_out_a_format_the_backend_does_not_run(tmp_path, edge_artifact):
    import shutil

    from sarbridge.benchmarks.bench import bench_pairs
    from sarbridge.runtime.manifest import load_manifest, save_manifest

    ir = tmp_path / "ir"
    shutil.copytree(edge_artifact, ir)
    m = load_manifest(ir)
    (ir / "model.bin").write_bytes(b"w")
    m["model"].update(
        format="openvino", weights={"file": "model.bin", "sha256": "e" * 64}
    )  # the bench only reads the format here
    save_manifest(m, ir)
    pairs, skipped = bench_pairs([str(edge_artifact), str(ir)], ["onnxruntime", "openvino"])
    assert pairs == [
        (str(edge_artifact), "onnxruntime"), (str(edge_artifact), "openvino"), (str(ir), "openvino")
    ]  # fmt: skip
    assert skipped == [
        f"{ir} on onnxruntime: its model format is openvino, which onnxruntime does not run"
    ]


def test_latency_blocks_times_each_pair_in_rounds(edge_artifact, data, tmp_path):
    from sarbridge.benchmarks.research.latency_blocks import main, parse_pair

    assert parse_pair("zoo:ssdd_edge_det@openvino") == ("zoo:ssdd_edge_det", "openvino")
    with pytest.raises(ValueError, match="ARTIFACT@BACKEND"):
        parse_pair("artifacts/model")
    out = tmp_path / "latency.json"
    pair = f"{edge_artifact}@onnxruntime"
    args = [pair, pair, "--rounds", "2", "--warmup", "1", "--iterations", "3"]
    assert main([*args, "--threads", "1", "--data", str(data), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["backend"] for r in rows] == ["onnxruntime", "onnxruntime"]
    for r in rows:
        assert len(r["round_medians_ms"]) == 2
        assert 0 < r["min_round_ms"] <= r["median_ms"] <= r["max_round_ms"]


def test_the_pytorch_row_outputs_what_a_dense_dfl_graph_outputs():
    """The bench's PyTorch row of a DFL model: the bin logits, channels first, as its graph."""
    np = pytest.importorskip("numpy")
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from sarbridge.benchmarks.torch_backend import TorchBackend
    from sarbridge.runtime.backends import open_backend
    from sarbridge.runtime.manifest import load_manifest
    from sarbridge.runtime.zoo import resolve_artifact

    folder = resolve_artifact("zoo:ssdd_edge_det")
    manifest = load_manifest(folder)
    assert manifest["postprocessing"]["decode"] == "dense_dfl"
    model = folder / manifest["model"]["file"]
    x = np.random.default_rng(0).random((1, 1, 512, 512), dtype=np.float32)
    graph = open_backend("onnxruntime", model, manifest, threads=1).run(x)[0]
    eager = TorchBackend(model, manifest, threads=1).run(x)[0]
    assert eager.shape == graph.shape == (1, 4 * 16 + 1, 5376)
    np.testing.assert_allclose(eager, graph, atol=1e-3)
