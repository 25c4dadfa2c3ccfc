"""Where a detection artifact's pipeline spends its time outside the network.

For one artifact (one backend thread; run it pinned to one core):

a. every SSDD test image through ``Detector.detect``: per-image medians of the wall time
   (total), of the network (``timings["model"]``) and of each host stage, and the
   share of the pipeline spent outside the network (per image, then the median);
b. each large scene once after one warm-up run, with the same stage split;
   in (a) and (b) the total includes writing the scene's COCO JSON as ``sarbridge detect`` does
   (the write stage);
c. a cProfile of the host part of one SSDD pass: the backend's outputs of pass (a) are
   replayed, so the profile holds no network time at all (top 20 by cumulative time);
d. with ``--overlap``: each large scene run sequentially and ``pipelined`` against a stand-in
   device: a backend that returns the real backend's recorded outputs after sleeping for the
   time the real one took (the CPU is free meanwhile, as when a GPU or NPU runs the network),
   so the host work the pipelined mode hides behind the network shows even on one core; and the
   SSDD test images, then two copies of each large scene (tiles pipelined), through
   ``detect_scenes`` (COCO JSON written, as ``sarbridge detect`` over a folder) against the same
   stand-in, with and without the next scene begun (and the previous one decoded and written)
   meanwhile.

With ``--save-dets`` the detections of every image and scene go to an .npz; ``--check-dets``
compares them with such a file (same count, boxes and scores within ``--atol``), the check that
a host-side change kept the output identical.

    OMP_NUM_THREADS=1 taskset -c 0 python -m sarbridge.benchmarks.research.runtime_stages \\
        artifacts/ssdd_edge_det_int8_onnxruntime --json stages.json
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path("/work/shared/data")
SSDD = DATA / "SSDD"
SCENES = (
    DATA / "large_scenes_ioEclipse" / "vv2.jpg",
    DATA / "large_scenes_ioEclipse" / "Test_image.png",
)
HOST_STAGES = ("read", "preprocess", "decode", "merge", "write")


def ssdd_test_images(root: Path) -> list[Path]:
    ids = (root / "ImageSets" / "Main" / "test.txt").read_text().split()
    return [root / "JPEGImages" / f"{i}.jpg" for i in ids]


def timed_detect(det, path, out_dir: Path | None = None) -> tuple[object, float]:
    """``det.detect(path)`` and, with ``out_dir``, the COCO JSON ``sarbridge detect`` writes
    (``timings["write"]``); the wall time of both."""
    from sarbridge.runtime.outputs import coco_document, write_json

    t0 = time.perf_counter()
    res = det.detect(path)
    if out_dir is not None:
        t1 = time.perf_counter()
        write_json(out_dir / f"{Path(path).stem}.json", coco_document(res, det.classes))
        res.timings["write"] = time.perf_counter() - t1
    return res, time.perf_counter() - t0


def row(name: str, totals, models, stages: dict) -> dict:
    """Medians of one set of runs (seconds in, milliseconds out); the outside share is the
    median of the per-run shares."""
    med = statistics.median
    pairs = list(zip(totals, models, strict=True))
    out = {
        "name": name,
        "runs": len(totals),
        "total_ms": 1e3 * med(totals),
        "model_ms": 1e3 * med(models),
        "outside_ms": 1e3 * med([t - m for t, m in pairs]),
        "outside_share": med([(t - m) / t for t, m in pairs]),
    }
    out.update({f"{s}_ms": 1e3 * med(v) for s, v in stages.items()})
    return out


def print_table(rows: list[dict]) -> None:
    cols = ["total_ms", "model_ms", "outside_ms", "outside_share"] + [
        f"{s}_ms" for s in HOST_STAGES
    ]
    names = {"outside_share": "share"}
    head = f"{'':<26}" + "".join(f"{names.get(c, c.replace('_ms', '')):>12}" for c in cols)
    print(head)
    for r in rows:
        cells = "".join(
            f"{r[c]:>11.1%} " if c == "outside_share" else f"{r[c]:>12.2f}" for c in cols
        )
        print(f"{r['name']:<26}{cells}")


class Replay:
    """A stand-in backend that returns recorded outputs in order (the host part alone)."""

    def __init__(self, backend, recorded: list):
        self.max_batch, self.description = backend.max_batch, backend.description
        self._recorded = recorded
        self._next = 0

    def run(self, batch):
        out = self._recorded[self._next]
        self._next += 1
        return out

    def close(self):
        pass


class Recorder:
    """The real backend, keeping every output and how long each run took."""

    def __init__(self, backend):
        self.backend, self.max_batch, self.recorded = backend, backend.max_batch, []
        self.description = backend.description
        self.seconds: list[float] = []

    def run(self, batch):
        t0 = time.perf_counter()
        out = self.backend.run(batch)
        self.seconds.append(time.perf_counter() - t0)
        self.recorded.append(out)
        return out


class StandInDevice(Replay):
    """Recorded outputs, each after sleeping as long as the real backend took: a network that
    runs elsewhere (the GIL and the CPU are free while it runs)."""

    def __init__(self, backend, recorded: list, seconds: list[float]):
        super().__init__(backend, recorded)
        self._seconds = seconds

    def run(self, batch):
        time.sleep(self._seconds[self._next])
        return super().run(batch)


def _alternating(run, reps: int) -> dict[bool, list[float]]:
    """Wall seconds of ``run(flag)`` for flag False and True, ``reps`` times each, the order
    alternating from one repetition to the next."""
    walls: dict[bool, list[float]] = {False: [], True: []}
    for rep in range(reps):
        for flag in (False, True) if rep % 2 == 0 else (True, False):
            t0 = time.perf_counter()
            run(flag)
            walls[flag].append(time.perf_counter() - t0)
    return walls


def _overlap_row(name: str, walls: list[float], device: float, per: int = 1) -> dict:
    """A row of the stand-in device table: the median wall time against the device's time,
    both divided by ``per`` (e.g. per image)."""
    wall = statistics.median(walls)
    return {
        "name": name,
        "wall_ms": 1e3 * wall / per,
        "device_ms": 1e3 * device / per,
        "not_hidden_ms": 1e3 * (wall - device) / per,
        "outside_share": (wall - device) / wall,
    }


def overlap_rows(det, scenes, reps: int = 3) -> list[dict]:
    """Wall time of each scene against a :class:`StandInDevice`, sequential and pipelined."""
    real, rows = det.backend, []
    for scene in scenes:
        recorder = Recorder(real)
        det.backend = recorder
        det.pipelined = False
        det.detect(scene)

        def run(pipelined, scene=scene, recorder=recorder):
            det.backend = StandInDevice(real, recorder.recorded, recorder.seconds)
            det.pipelined = pipelined
            timed_detect(det, scene)

        device = sum(recorder.seconds)
        for pipelined, w in _alternating(run, reps).items():
            name = f"{scene.name} {'pipelined' if pipelined else 'sequential'}"
            rows.append(_overlap_row(name, w, device))
    det.backend = real
    return rows


def overlap_folder_rows(
    det, images: list[Path], out_dir: Path, label: str, reps: int = 3, tiles_pipelined=False
) -> list[dict]:
    """Images through ``detect_scenes`` (as ``sarbridge detect`` over a folder) against a
    :class:`StandInDevice`: wall time per image with and without the next image begun, and the
    previous one decoded and written, while the network runs the current one (``prefetch``).
    ``tiles_pipelined``: the tile pipeline within a scene too (it has nothing to overlap in a
    one-tile chip)."""
    from sarbridge.runtime.scenes import detect_scenes

    real, pipelined = det.backend, det.pipelined
    det.pipelined = tiles_pipelined
    recorder = Recorder(real)
    det.backend = recorder
    detect_scenes(images, det, out_dir / "recorded", progress=False, prefetch=False)
    runs = iter(range(2 * reps))

    def run(prefetch):
        det.backend = StandInDevice(real, recorder.recorded, recorder.seconds)
        detect_scenes(images, det, out_dir / f"run{next(runs)}", progress=False,
                      prefetch=prefetch)  # fmt: skip

    walls = _alternating(run, reps)
    det.backend, det.pipelined = real, pipelined
    n, device = len(images), sum(recorder.seconds)
    return [
        _overlap_row(f"{label}, {'next begun meanwhile' if p else 'sequential'}", w, device, n)
        for p, w in walls.items()
    ]


def scene_copies(scenes: list[Path], copies: int, folder: Path) -> list[Path]:
    """``copies`` copies of every scene in ``folder``, interleaved (a, b, a, b): one file given
    twice is run once by ``detect_scenes``, and in a folder of scenes the first has no scene
    before it to overlap with."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(copies):
        for scene in scenes:
            dest = folder / f"{k}_{scene.name}"
            shutil.copyfile(scene, dest)
            out.append(dest)
    return out


def compare(saved: dict, current: dict, atol: float) -> list[str]:
    """Differences between two {key: (boxes, scores, labels)} sets; empty when identical."""
    bad = []
    for key in sorted(set(saved) | set(current)):
        if key not in saved or key not in current:
            bad.append(f"{key}: only in {'the saved' if key in saved else 'this'} run")
            continue
        (b0, s0, l0), (b1, s1, l1) = saved[key], current[key]
        if len(s0) != len(s1):
            bad.append(f"{key}: {len(s0)} detections saved, {len(s1)} now")
        elif len(s0) and not (
            np.array_equal(l0, l1)
            and np.allclose(b0, b1, rtol=0, atol=atol)
            and np.allclose(s0, s1, rtol=0, atol=atol)
        ):
            worst = max(float(np.abs(b0 - b1).max()), float(np.abs(s0 - s1).max()))
            bad.append(f"{key}: detections differ (max abs diff {worst:.3g})")
    return bad


def main(argv: list[str] | None = None) -> int:
    from sarbridge.runtime.detector import Detector

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifact", help="artifact folder (model + manifest.json) or zoo:<name>")
    ap.add_argument("--ssdd", type=Path, default=SSDD, help="SSDD root (ImageSets, JPEGImages)")
    ap.add_argument("--scenes", type=Path, nargs="*", default=list(SCENES))
    ap.add_argument("--limit", type=int, default=None, help="first N SSDD test images only")
    ap.add_argument("--threads", type=int, default=1, help="backend intra-op threads")
    ap.add_argument("--batch-size", type=int, default=8, help="tiles per backend call")
    ap.add_argument("--pipelined", action="store_true", help="Detector(pipelined=True)")
    ap.add_argument("--no-profile", action="store_true", help="skip the cProfile pass (c)")
    ap.add_argument(
        "--overlap",
        action="store_true",
        help="large scenes and the SSDD images against a stand-in device (d)",
    )
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--save-dets", type=Path, help="write every detection set to this .npz")
    ap.add_argument("--check-dets", type=Path, help="compare detections with this .npz")
    ap.add_argument("--check-images", type=int, default=None, help="SSDD images to compare")
    ap.add_argument("--atol", type=float, default=1e-5)
    args = ap.parse_args(argv)

    kwargs = {"threads": args.threads, "batch_size": args.batch_size}
    if args.pipelined:
        kwargs["pipelined"] = True
    det = Detector.from_artifact(args.artifact, **kwargs)
    images = ssdd_test_images(args.ssdd)[: args.limit]
    dets: dict[str, tuple] = {}
    out_dir = Path(tempfile.mkdtemp(prefix="runtime_stages_"))  # the JSON each scene writes

    # (a) SSDD test images, after a few warm-up runs
    for p in images[:3]:
        det.detect(p)
    recorder = Recorder(det.backend)
    det.backend = recorder
    totals, models, stages = [], [], {s: [] for s in HOST_STAGES}
    for p in images:
        res, total = timed_detect(det, p, out_dir)
        totals.append(total)
        models.append(res.timings["model"])
        for s in HOST_STAGES:
            stages[s].append(res.timings[s])
        dets[f"ssdd/{p.stem}"] = (res.boxes, res.scores, res.labels)
    det.backend = recorder.backend
    rows = [row(f"SSDD test ({len(images)} img)", totals, models, stages)]
    sums = {
        "total_s": sum(totals),
        "model_s": sum(models),
        **{f"{s}_s": sum(v) for s, v in stages.items()},
    }
    sums["outside_share_of_sum"] = (sums["total_s"] - sums["model_s"]) / sums["total_s"]

    # (b) large scenes: one warm-up run, then one timed run
    for scene in args.scenes:
        det.detect(scene)
        res, total = timed_detect(det, scene, out_dir)
        m = res.timings["model"]
        r = row(
            f"{scene.name} ({res.tiles} tiles)",
            [total],
            [m],
            {s: [res.timings[s]] for s in HOST_STAGES},
        )
        rows.append(r)
        dets[f"scene/{scene.name}"] = (res.boxes, res.scores, res.labels)

    print(
        f"{args.artifact}: {det.backend.description}, threads={args.threads}, "
        f"batch={det.batch_size}, pipelined={bool(getattr(det, 'pipelined', False))}"
    )
    print("medians per image (ms); outside = total - model, share = outside / total")
    print_table(rows)
    print(
        f"SSDD sums: total {sums['total_s']:.2f} s, model {sums['model_s']:.2f} s, "
        f"outside {sums['outside_share_of_sum']:.1%}"
    )

    # (c) cProfile of the host part: the recorded network outputs replayed
    profile_text = None
    if not args.no_profile:
        real = det.backend
        det.backend = Replay(real, recorder.recorded)
        prof = cProfile.Profile()
        prof.enable()
        for p in images:
            det.detect(p)
        prof.disable()
        det.backend = real
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(20)
        profile_text = buf.getvalue()
        print("\ncProfile, host part of one SSDD pass (network outputs replayed):")
        print(profile_text)

    overlap = None
    if args.overlap:
        pipelined = det.pipelined
        overlap = overlap_rows(det, args.scenes)
        det.pipelined = pipelined
        overlap += overlap_folder_rows(det, images, out_dir / "ssdd", f"SSDD {len(images)} img")
        if args.scenes:
            folder = scene_copies(args.scenes, 2, out_dir / "scene_copies")
            overlap += overlap_folder_rows(
                det, folder, out_dir / "scenes", f"{len(folder)} large scenes", tiles_pipelined=True
            )
        print("\nagainst a stand-in device (network time slept, CPU free), medians (SSDD: per image):")
        print(f"{'':<40}{'wall':>10}{'device':>10}{'not hidden':>12}{'share':>8}")
        for r in overlap:
            print(
                f"{r['name']:<40}{r['wall_ms']:>10.1f}{r['device_ms']:>10.1f}"
                f"{r['not_hidden_ms']:>12.1f}{r['outside_share']:>8.1%}"
            )

    failures = []
    if args.check_dets:
        with np.load(args.check_dets) as f:
            saved = {}
            for k in f.files:
                key, part = k.rsplit(":", 1)
                saved.setdefault(key, {})[part] = f[k]
        saved = {k: (v["boxes"], v["scores"], v["labels"]) for k, v in saved.items()}
        keep = [f"ssdd/{p.stem}" for p in images[: args.check_images]]
        keep += [k for k in dets if k.startswith("scene/")]
        failures = compare(
            {k: saved[k] for k in keep if k in saved}, {k: dets[k] for k in keep}, args.atol
        )
        print(
            f"\noutput identity against {args.check_dets} ({len(keep)} sets, atol {args.atol}): "
            + ("IDENTICAL" if not failures else f"{len(failures)} DIFFER")
        )
        for line in failures[:20]:
            print("  " + line)
    if args.save_dets:
        flat = {}
        for key, (b, s, lab) in dets.items():
            flat[f"{key}:boxes"], flat[f"{key}:scores"], flat[f"{key}:labels"] = b, s, lab
        np.savez_compressed(args.save_dets, **flat)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "artifact": str(args.artifact),
                    "backend": det.backend.description,
                    "threads": args.threads,
                    "rows": rows,
                    "ssdd_sums": sums,
                    "profile": profile_text,
                    "overlap": overlap,
                    "identity_failures": failures,
                },
                indent=1,
            )
        )
    det.close()
    shutil.rmtree(out_dir, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
