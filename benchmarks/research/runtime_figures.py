"""Figures of the deployed runtime: overhead outside the model, ONNX Runtime vs PyTorch, memory.

1. Runtime overhead on real scenes: for each scene, ``sarbridge detect``'s stages timed
   (read, preprocess, model, decode, merge, write); the share of wall time outside the model.
   Target: under 10 %.
2. ONNX Runtime vs PyTorch eager latency of the same detector, batch 1 and batch 8, the same
   number of threads, side by side in this process (torch only here, never in the runtime).
3. Peak RSS of ``sarbridge detect`` on a 20,000 x 20,000 uint16 GeoTIFF in a fresh process
   (target: under 512 MiB, the tile batch's bound, not the scene's), with tiles/s.

    python -m sarbridge.benchmarks.research.runtime_figures --model artifacts/det_edge_random_512 \\
        --run runs/det_edge_random_512_e26_gpu --threads 2 --out benchmarks/results/runtime
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GIB = 1024**3


def overhead(model: Path, scenes: list[Path], threads: int, repeats: int) -> list[dict]:
    from sarbridge.runtime.detector import Detector
    from sarbridge.runtime.outputs import coco_document, write_json

    det = Detector.from_artifact(model, threads=threads)
    det.detect(scenes[0])  # warm-up
    rows = []
    for scene in scenes:
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            res = det.detect(scene)
            t1 = time.perf_counter()
            write_json(
                Path(tempfile.gettempdir()) / f"sarbridge_bench_{scene.stem}.json",
                coco_document(res, det.classes),
            )
            total = time.perf_counter() - t0
            runs.append((total, res.timings | {"write": time.perf_counter() - t1}, res))
        total, timings, res = sorted(runs, key=lambda r: r[0])[len(runs) // 2]  # the median run
        rows.append(
            {
                "scene": scene.name,
                "height": res.height,
                "width": res.width,
                "tiles": res.tiles,
                "detections": len(res),
                "wall_s": total,
                "stages_s": timings,
                "outside_model_share": 1 - timings["model"] / total,
                "tiles_per_s": res.tiles / total,
            }
        )
    return rows


def latency(model: Path, run: Path, threads: int, iters: int) -> list[dict]:
    import torch

    from sarbridge.runtime.backends import open_backend
    from sarbridge.runtime.manifest import load_manifest
    from sarbridge.train.checkpoint import load_model

    torch.set_num_threads(threads)
    manifest = load_manifest(model)
    ort = open_backend("onnxruntime", model / manifest["model"]["file"], manifest, threads=threads)
    loaded = load_model(run)
    net = loaded.model
    size = manifest["preprocessing"]["input_size"]
    rows = []
    for batch in (1, 8):
        x = np.random.default_rng(0).random((batch, 1, size, size), dtype=np.float32)
        xt = torch.from_numpy(x)
        fns = {
            "onnxruntime": lambda x=x: ort.run(x),
            "pytorch_eager": lambda xt=xt: net(xt),
        }
        n = max(3, iters // batch)
        with torch.no_grad():
            for name, fn in fns.items():
                for _ in range(3):
                    fn()
                times = []
                for _ in range(n):
                    t = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t)
                ms = np.array(times) * 1000
                rows.append(
                    {
                        "runtime": name,
                        "batch": batch,
                        "threads": threads,
                        "iterations": n,
                        "p50_ms": float(np.median(ms)),
                        "p90_ms": float(np.percentile(ms, 90)),
                        "images_per_s": batch * 1000 / float(np.median(ms)),
                    }
                )
    return rows


def big_scene_memory(model: Path, size: int, threads: int, workdir: Path) -> dict:
    from sarbridge.benchmarks.tile_memory import write_scene

    workdir.mkdir(parents=True, exist_ok=True)
    scene = workdir / f"scene_{size}_u16_geo.tif"
    if not scene.is_file():
        print(f"writing {scene} ...", flush=True)
        write_scene(scene, size, "tiled-zlib", geotags=True)
    out = workdir / "detect_out"
    code = (
        "import resource, sys, time\n"
        "from sarbridge.cli import main\n"
        "t = time.perf_counter()\n"
        f"rc = main(['detect', {str(scene)!r}, '--model', {str(model)!r}, '--out', {str(out)!r},"
        f" '--threads', '{threads}', '--no-progress'])\n"
        "print('WALL', time.perf_counter() - t)\n"
        "print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        "print('TORCH', 'torch' in sys.modules)\n"
        "raise SystemExit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"detect on {scene} failed:\n{proc.stdout}\n{proc.stderr}")
    vals = dict(
        line.split(" ", 1)
        for line in proc.stdout.splitlines()
        if line.split(" ")[0] in ("WALL", "RSS", "TORCH")
    )
    doc = json.loads((out / f"{scene.stem}.json").read_text())
    geo = (out / f"{scene.stem}.geojson").is_file()
    from sarbridge.runtime.detector import ScenePipeline, scene_settings
    from sarbridge.runtime.manifest import load_manifest

    # the runtime's own plan: tiles, or one whole-scene letterbox up to tiling.whole_scene_max
    tiles = len(ScenePipeline(**scene_settings(load_manifest(model))).plan(size, size))
    wall = float(vals["WALL"])
    return {
        "scene": f"{size} x {size} uint16 GeoTIFF (zlib tiles), synthetic speckle",
        "tiles": tiles,
        "wall_s": wall,
        "tiles_per_s": tiles / wall,
        "peak_rss_mib": int(vals["RSS"]) / 1024,
        "torch_imported": vals["TORCH"].strip() == "True",
        "detections": len(doc["annotations"]),
        "geojson_written": geo,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="artifact directory")
    ap.add_argument("--run", type=Path, help="the run it was exported from (PyTorch rows)")
    ap.add_argument(
        "--scenes", type=Path, nargs="*", help="real scenes (default: large_scenes_ioEclipse)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--big-size", type=int, default=20000, help="0 skips the large GeoTIFF")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/sarbridge-bench"))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    from sarbridge.runtime.paths import data_root

    scenes = args.scenes or sorted((data_root() / "large_scenes_ioEclipse").glob("*.[jp][pn]g"))
    report = {
        "command": " ".join(sys.argv),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "model": str(args.model),
        "threads": args.threads,
        "overhead": overhead(args.model, scenes, args.threads, args.repeats),
    }
    for r in report["overhead"]:
        st = r["stages_s"]
        print(
            f"{r['scene']}: {r['height']}x{r['width']}, {r['tiles']} tiles, {r['wall_s']:.2f} s "
            f"({r['tiles_per_s']:.1f} tiles/s), outside the model {100 * r['outside_model_share']:.1f} % "
            f"[" + ", ".join(f"{k} {v:.3f}" for k, v in st.items()) + "]"
        )
    if args.run:
        report["latency"] = latency(args.model, args.run, args.threads, args.iters)
        for r in report["latency"]:
            print(
                f"{r['runtime']:>13} batch {r['batch']}: p50 {r['p50_ms']:.1f} ms, p90 {r['p90_ms']:.1f} ms, "
                f"{r['images_per_s']:.1f} images/s ({r['threads']} threads)"
            )
    if args.big_size:
        big = big_scene_memory(args.model, args.big_size, args.threads, args.workdir)
        report["big_scene"] = big
        print(
            f"{big['scene']}: {big['tiles']} tiles in {big['wall_s']:.0f} s ({big['tiles_per_s']:.1f} tiles/s), "
            f"peak RSS {big['peak_rss_mib']:.0f} MiB ({'PASS' if big['peak_rss_mib'] < 512 else 'FAIL'}: "
            f"target < 512 MiB), torch imported: {big['torch_imported']}, GeoJSON: {big['geojson_written']}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "runtime_figures.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
