"""`sarbridge bench`: a run on a tiny model and 4 SSDD images, the results schema, compare, NVML."""

from __future__ import annotations

import json
import sys
import types

import pytest

from sarbridge.runtime.errors import SarbridgeError
from tests.conftest import mini_voc, run_without_torch

pytest.importorskip("onnxruntime")
pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(edge_artifact, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    code = "import sys\nfrom sarbridge.cli import main\nraise SystemExit(main(sys.argv[1:]))\n"
    r = run_without_torch(
        code,
        "bench", "--models", str(edge_artifact), "--max-images", "4", "--threads", "1",
        "--batch-sizes", "1,2", "--iterations", "6", "--power", "auto",
        "--scenes", str(data / "large_scenes_ioEclipse" / "vv2.jpg"), "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def test_bench_writes_every_file_with_sane_values(report):
    from sarbridge.benchmarks.bench import load_results

    results = load_results(report)
    assert results["failures"] == []
    (rec,) = results["records"]
    acc = rec["accuracy"]
    assert acc["images"] == 4 and 0 <= acc["AP50"] <= 1 and 0 <= acc["AP50_95"] <= 1
    assert len(acc["pr_curve"]) == 19
    lat = rec["latency"]
    assert lat["batch1"]["p50_ms"] > 0 and lat["best_images_per_s"] > 0
    assert [t["batch"] for t in lat["throughput"]] == [1, 2]
    assert rec["pipeline_latency"]["p50_ms"] > 0
    assert rec["memory"]["peak_rss_mib"] > 0 and rec["size"]["file_mib"] > 0
    assert rec["size"]["parameters"] > 1e6 and rec["size"]["gmacs_per_image"] > 0
    scenes = rec["scenes"]
    assert scenes["per_scene"][0]["tiles"] > 1 and scenes["tiles_per_s"] > 0
    env = results["environment"]
    assert env["cpu"] and env["versions"]["onnxruntime"] and env["python"]
    for name in ("report.md", "report.html", "results.json"):
        assert (report / name).stat().st_size > 0
    for png in ("ap_vs_latency.png", "ap_vs_size.png", "pr_curves.png"):
        assert (report / png).read_bytes()[:8] == PNG_MAGIC
    md = (report / "report.md").read_text()
    assert "AP50:95" in md and "Large scenes" in md


def test_power_not_measured_is_said_not_invented(report):
    from sarbridge.benchmarks.bench import load_results

    rec = load_results(report)["records"][0]
    if rec["power"]["probe"].startswith("not measured"):
        assert rec["power"]["energy_per_image_j"] is None and rec["power"]["mean_w"] is None
        assert "not measured" in (report / "report.md").read_text()
        assert not (report / "ap_vs_energy.png").exists()
    else:  # a machine with a probe measured something positive
        assert rec["power"]["energy_per_image_j"] > 0


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
    from sarbridge.runtime.backends import OnnxRuntimeBackend
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
    assert acc["images"] == 3 and 0 <= acc["AP50"] <= 1
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
