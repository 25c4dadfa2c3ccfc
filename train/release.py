"""Releasing a model into the zoo: a slim checkpoint, its ONNX artifact, a row in zoo.json.

``sarbridge zoo release NAME --from runs/<run> --command "..."`` writes ``zoo/NAME/``
(``checkpoint.pt`` loadable with ``weights_only=True``, ``model.onnx``, ``manifest.json``
exported from that very checkpoint, so the manifest's lineage names its sha256) and the
model's entry in ``zoo/zoo.json``: task, parameters, GFLOPs at its input size, test metrics,
the figures of a bench run through the deployed path (``--bench results.json``), the command
that made it, and each file's sha256 and size. ``zoo/README.md`` and the README's zoo table
are written from zoo.json.

A model is replaced only by a better one (by its task's primary metric), or by a new export of
its own checkpoint (the same weights, e.g. after the exporter changed: the released checkpoint
file is kept, and the bench figures of the earlier graph are dropped until ``sarbridge zoo
measure`` records new ones); every file stays
within the size budget (10 MiB a file, 40 MiB the folder). Nothing in ``zoo/`` changes unless
the whole release succeeds.
"""

from __future__ import annotations

import datetime
import json
import shutil
import tempfile
from pathlib import Path

from sarbridge.runtime.errors import SarbridgeError
from sarbridge.runtime.fileio import atomic_write_json, atomic_write_text, sha256_file
from sarbridge.runtime.zoo import INDEX, ZooError, load_index, zoo_dir

MAX_FILE_BYTES = 10 * 2**20
MAX_ZOO_BYTES = 40 * 2**20
PRIMARY = {"detect": "test_AP50_95", "bnn": "test_auc"}
TABLE_MARK = "<!-- zoo-table -->"


def _bench_figures(path: str | Path, model: str) -> dict:
    """AP through the deployed path and batch-1 latency of ``model`` from a bench results.json."""
    results = json.loads(Path(path).read_text())
    rows = [r for r in results["records"] if r["model"] == model and r["backend"] == "onnxruntime"]
    if not rows:
        raise SarbridgeError(f"{path}: no onnxruntime record of model {model!r}")
    r = rows[0]
    env = results.get("environment", {})
    acc = r.get("accuracy") or {}
    return {
        "deployed": {k: acc[k] for k in ("AP50", "AP50_95", "AP_small", "images") if k in acc},
        "latency_ms_batch1_p50": (r["latency"].get("batch1") or {}).get("p50_ms"),
        "latency_machine": env.get("cpu") or env.get("machine"),
        "latency_threads": env.get("threads") or results.get("settings", {}).get("threads"),
        "bench": str(path),
    }


def release(
    source: str | Path,
    name: str,
    command: str,
    *,
    bench: str | Path | None = None,
    root: str | Path | None = None,
    description: str = "",
) -> dict:
    """Release ``source`` (a run folder or checkpoint) as zoo model ``name``; returns its entry."""
    import torch

    from sarbridge.export.onnx_export import complexity, export_run
    from sarbridge.train.checkpoint import load_model, release_checkpoint

    root = Path(root) if root is not None else zoo_dir()
    index = load_index(root) if (root / INDEX).is_file() else {"models": []}
    loaded = load_model(source)
    metrics = _metrics(loaded)
    primary = PRIMARY[loaded.task]
    old = next((m for m in index["models"] if m["name"] == name), None)
    better = old is None or metrics.get(primary, -1) > old.get("metrics", {}).get(primary, -1)
    root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        ckpt = release_checkpoint(source, stage / "checkpoint.pt")
        # the same weights again (e.g. re-exported by a newer exporter) may replace the model too
        same = old is not None and _same_weights(ckpt, root / old["files"]["checkpoint"]["path"])
        if same:  # keep the released file (and the sha256 that lineages name) and what it says
            shutil.copyfile(root / old["files"]["checkpoint"]["path"], ckpt)
            loaded = load_model(ckpt)
            metrics = _metrics(loaded)
        if not (better or same):
            raise ZooError(
                f"zoo model {name!r} has {primary} {old['metrics'].get(primary)}; {source} has "
                f"{metrics.get(primary)}: a zoo model is replaced only by a better one (or by "
                "a new export of its own checkpoint)"
            )
        art = stage / "artifact"
        manifest = export_run(ckpt, art, name=name, source_label=f"zoo:{name}")
        for f in ("model.onnx", "manifest.json"):
            shutil.move(art / f, stage / f)
        art.rmdir()
        files = {}
        for role, f in (
            ("checkpoint", "checkpoint.pt"),
            ("model", "model.onnx"),
            ("manifest", "manifest.json"),
        ):
            size = (stage / f).stat().st_size
            if size > MAX_FILE_BYTES:
                raise ZooError(f"{name}/{f} is {size / 2**20:.1f} MiB: over the 10 MiB a file")
            files[role] = {"path": f"{name}/{f}", "sha256": sha256_file(stage / f), "bytes": size}
        others = sum(
            f["bytes"] for m in index["models"] if m["name"] != name for f in m["files"].values()
        )
        total = others + sum(f["bytes"] for f in files.values())
        if total > MAX_ZOO_BYTES:
            raise ZooError(f"the zoo would hold {total / 2**20:.1f} MiB: over its 40 MiB")
        size_in = int(manifest["preprocessing"]["input_size"])
        channels = int(manifest["inputs"][0]["shape"][1])
        deployed_net = loaded.model.sar if loaded.task == "bnn" else loaded.model
        x = torch.zeros(1, channels, size_in, size_in)
        macs = complexity(deployed_net, x)["gmacs_per_image"]
        entry = {
            "name": name,
            "task": loaded.task,
            "description": description,
            "architecture": _architecture(loaded),
            "parameters": sum(p.numel() for p in loaded.model.parameters()),
            "gflops": round(2 * macs, 3),  # one multiply-accumulate = two operations
            "input_size": size_in,
            "metrics": metrics,
            "command": command,
            "source_run": loaded.name,
            "files": files,
            "released": datetime.date.today().isoformat(),
        }
        if bench is not None:  # else none: an earlier bench measured another graph
            entry.update(_bench_figures(bench, manifest["name"]))
        stage.chmod(0o755)
        index["models"] = [e for e in index["models"] if e["name"] != name] + [entry]
        index["models"].sort(key=lambda e: e["name"])
        _swap_in(stage, root / name, index, root)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    write_tables(root)
    return entry


def _metrics(loaded) -> dict:
    """The metrics a loaded model's last lineage step recorded (none without a lineage)."""
    return dict(loaded.lineage[-1].get("metrics") or {}) if loaded.lineage else {}


def _same_weights(a: Path, b: Path) -> bool:
    """Whether two checkpoints hold the same weights: the same tensor names, shapes and values
    (their structure records may differ in flags added since, e.g. ``emit_features``)."""
    import torch

    from sarbridge.train.checkpoint import load_checkpoint

    if not b.is_file():
        return False
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    ma, mb = ca["model"], cb["model"]
    return ma.keys() == mb.keys() and all(
        ma[k].shape == mb[k].shape and torch.equal(ma[k], mb[k]) for k in ma
    )


def _swap_in(stage: Path, final: Path, index: dict, root: Path) -> None:
    """Put the staged folder in place and write the index; on any failure the previous folder
    and index come back, so zoo/ always matches zoo.json."""
    backup = final.with_name(f".{final.name}.previous")
    if backup.exists():
        shutil.rmtree(backup)
    if final.exists():
        final.rename(backup)
    try:
        stage.rename(final)
        atomic_write_json(index, root / INDEX)
    except BaseException:
        if final.exists() and not stage.exists():
            final.rename(stage)  # the caller removes the stage
        if backup.exists():
            backup.rename(final)
        raise
    if backup.exists():
        shutil.rmtree(backup)


def add_bench(name: str, bench: str | Path, root: str | Path | None = None) -> dict:
    """Record a bench run of zoo model ``name``'s artifact (``sarbridge bench --models
    zoo:<name>``) in its zoo.json entry: AP through the deployed path, batch-1 latency, CPU."""
    root = Path(root) if root is not None else zoo_dir()
    index = load_index(root)
    entry = next((e for e in index["models"] if e["name"] == name), None)
    if entry is None:
        raise ZooError(f"no model {name!r} in the zoo")
    entry.update(_bench_figures(bench, name))
    atomic_write_json(index, root / INDEX)
    write_tables(root)
    return entry


def _architecture(loaded) -> str:
    cfg = loaded.config
    if loaded.task == "detect":
        return f"{cfg.model.name} ({cfg.model.backbone} backbone, box bins {cfg.model.box_bins})"
    return f"BNN {cfg.model.backbone} backbones, {cfg.model.embed_dim}-d embedding"


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def zoo_table(index: dict) -> str:
    """The zoo as a Markdown table (zoo/README.md and the README)."""
    lines = [
        "| name | task | params | GFLOPs @ input | SSDD test AP50 / AP50:95 / AP small | CPU latency, batch 1 | files |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in index["models"]:
        dep = e.get("deployed") or {}
        if e["task"] == "detect":
            acc = " / ".join(_fmt(dep.get(k)) for k in ("AP50", "AP50_95", "AP_small"))
        else:
            acc = f"(BNN) test AUC {_fmt(e['metrics'].get('test_auc'))}"
        lat = e.get("latency_ms_batch1_p50")
        lat = "-" if lat is None else f"{lat:.1f} ms ({e.get('latency_threads') or '?'} threads)"
        mib = sum(f["bytes"] for f in e["files"].values()) / 2**20
        lines.append(
            f"| `{e['name']}` | {e['task']}: {e['architecture']} | {e['parameters'] / 1e6:.2f} M "
            f"| {_fmt(e.get('gflops'), 2)} @ {e['input_size']} | {acc} | {lat} "
            f"| checkpoint, ONNX, manifest ({mib:.1f} MiB) |"
        )
    return "\n".join(lines)


def write_tables(root: str | Path | None = None, readme: str | Path | None = None) -> None:
    """zoo/README.md (table and each model's command) and, for the repository's own zoo, the
    README's zoo table block (``readme`` names another README)."""
    root = Path(root) if root is not None else zoo_dir()
    repository_zoo = Path(__file__).resolve().parents[1] / "zoo"
    index = load_index(root)
    table = zoo_table(index)
    body = [
        "# Model zoo",
        "",
        "Release models that every user and every later step starts from. Use them as "
        "`zoo:<name>` wherever a run or an artifact is accepted (`--init`, `--from`, `--model`, "
        "`--models`); every file is checked against its sha256 in `zoo.json` first. Accuracy is "
        "measured through the deployed path (`sarbridge bench`, ONNX Runtime on the CPU named "
        "below); a model is replaced only by a better one, or by a new export of its own "
        "checkpoint (the same weights; its bench figures are measured again with `sarbridge zoo "
        "measure`); git history keeps every version.",
        "",
        table,
        "",
    ]
    for e in index["models"]:
        body += [f"## `{e['name']}`", "", e.get("description") or "", ""]
        if e.get("latency_machine"):
            body += [f"Latency measured on: {e['latency_machine']}.", ""]
        body += ["Made by:", "", "```bash", e["command"], "```", ""]
    atomic_write_text(root / "README.md", "\n".join(body))
    if readme is None and root.resolve() == repository_zoo:
        readme = repository_zoo.parent / "README.md"
    if readme is not None and Path(readme).is_file():
        readme = Path(readme)
        text = readme.read_text()
        parts = text.split(TABLE_MARK)
        if len(parts) == 3:
            atomic_write_text(readme, f"{parts[0]}{TABLE_MARK}\n{table}\n{TABLE_MARK}{parts[2]}")
