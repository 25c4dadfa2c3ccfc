"""The bench report: report.md, report.html and PNG plots from results.json (matplotlib)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from sarbridge.benchmarks.bench import millijoules
from sarbridge.runtime.fileio import atomic_path, atomic_write_text


def _model_name(r: dict) -> str:
    """The model's name, with its views per image when it runs test-time flips."""
    views = r["latency"].get("views_per_image", 1)
    return r["model"] + (f" ({views} views)" if views > 1 else "")


def _label(r: dict) -> str:
    return f"{_model_name(r)} [{r['backend']}]"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated by another (lower x is better, higher y is better)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and y2 >= y) and (x2 < x or y2 > y)
            for j, (x2, y2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    return path


def _scatter(records, xs, ys, xlabel, ylabel, title, path: Path, front: bool = False) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    # labels of neighbours by x alternate above, level and below, so close points stay legible
    shift = {i: (k % 3 - 1) * 9 for k, i in enumerate(sorted(range(len(xs)), key=lambda i: xs[i]))}
    for k, (r, x, y) in enumerate(zip(records, xs, ys, strict=True)):
        ax.scatter([x], [y], s=60, zorder=3)
        ax.annotate(
            _label(r), (x, y), textcoords="offset points", xytext=(6, 2 + shift[k]), fontsize=7
        )
    ax.margins(x=0.25, y=0.15)
    if front and len(xs) > 1:
        idx = pareto_front(list(zip(xs, ys, strict=True)))
        ax.plot(
            [xs[i] for i in idx],
            [ys[i] for i in idx],
            "--o",
            color="grey",
            markersize=14,
            markerfacecolor="none",
            zorder=2,
            label="Pareto front (circled)",
        )
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    out = _save(fig, path)
    plt.close(fig)
    return out


def plots(results: dict, out: Path) -> dict[str, Path]:
    """The PNG plots that the measurements allow; returns {name: path}."""
    recs = [r for r in results["records"] if r["accuracy"]]
    made: dict[str, Path] = {}
    if not recs:
        return made
    ap = [r["accuracy"]["AP50_95"] for r in recs]
    lat = [
        r["latency"]["batch1"]["p50_ms"]
        if r["latency"]["batch1"]
        else 1000 / r["latency"]["best_images_per_s"]
        for r in recs
    ]
    made["ap_vs_latency"] = _scatter(
        recs,
        lat,
        ap,
        "network latency, batch 1, p50 (ms)",
        "AP50:95 (COCO)",
        "Accuracy against latency",
        out / "ap_vs_latency.png",
        front=True,
    )
    made["ap_vs_size"] = _scatter(
        recs,
        [r["size"]["file_mib"] for r in recs],
        ap,
        "model file size (MiB)",
        "AP50:95 (COCO)",
        "Accuracy against model size",
        out / "ap_vs_size.png",
        front=True,
    )
    small = [
        (r, x)
        for r, x in zip(recs, lat, strict=True)
        if r["accuracy"].get("AP_small") is not None and r["accuracy"]["AP_small"] >= 0
    ]
    if small:
        made["ap_small_vs_latency"] = _scatter(
            [r for r, _ in small],
            [x for _, x in small],
            [r["accuracy"]["AP_small"] for r, _ in small],
            "network latency, batch 1, p50 (ms)",
            "AP small (COCO, area < 32^2)",
            "Small ships against latency",
            out / "ap_small_vs_latency.png",
            front=True,
        )
    energy = [r for r in recs if r["power"]["energy_per_image_j"] is not None]
    if energy:
        made["ap_vs_energy"] = _scatter(
            energy,
            [1000 * r["power"]["energy_per_image_j"] for r in energy],
            [r["accuracy"]["AP50_95"] for r in energy],
            "energy per image (mJ)",
            "AP50:95 (COCO)",
            "Accuracy against energy",
            out / "ap_vs_energy.png",
            front=True,
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for r in recs:
        curve = [p for p in r["accuracy"]["pr_curve"] if p["tp"] + p["fp"] > 0]
        ax.plot(
            [p["recall"] for p in curve],
            [p["precision"] for p in curve],
            marker=".",
            label=_label(r),
        )
    ax.set_xlabel("recall (IoU 0.5)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall over score thresholds 0.05-0.95")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    made["pr_curves"] = _save(fig, out / "pr_curves.png")
    plt.close(fig)
    by_iou = [r for r in recs if r["accuracy"].get("AP_by_iou")]
    if by_iou:
        made["ap_vs_iou"] = ap_vs_iou(by_iou, out / "ap_vs_iou.png")
    return made


def ap_vs_iou(records: list[dict], path: Path, title: str = "") -> Path:
    """AP at each IoU threshold, a line per record: where between finding ships (IoU 0.5) and
    fitting their boxes tightly (0.95) each model loses its AP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for r in records:
        points = [p for p in r["accuracy"]["AP_by_iou"] if p["AP"] >= 0]
        ax.plot([p["iou"] for p in points], [p["AP"] for p in points], marker=".",
                label=_label(r))  # fmt: skip
    ax.set_xlabel("IoU threshold")
    ax.set_ylabel("AP (COCO, all sizes)")
    ax.set_ylim(0, 1.02)
    ax.set_title(title or "AP at each IoU threshold (AP50:95 is their mean)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    out = _save(fig, path)
    plt.close(fig)
    return out


def _by_iou_rows(results: dict) -> list[list[str]]:
    """AP at IoU thresholds 0.50-0.90 and by box size, for the records that have them."""
    rows = []
    for r in results["records"]:
        a = r["accuracy"] or {}
        if not a.get("AP_by_iou"):
            continue
        at = {p["iou"]: p["AP"] for p in a["AP_by_iou"]}
        rows.append(
            [_label(r)]
            + [_fmt(at.get(t)) for t in (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9)]
            + [_fmt(a.get(k) if (a.get(k) or 0) >= 0 else None)
               for k in ("AP_small", "AP_medium", "AP_large")]  # fmt: skip
        )
    return rows


def _fmt(v, spec=".3f", none="-"):
    return none if v is None else format(v, spec)


def tables(results: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    rows_main, rows_lat, rows_scene = [], [], []
    for r in results["records"]:
        a = r["accuracy"] or {}
        lat = r["latency"]
        b1 = lat["batch1"] or {}
        rows_main.append(
            [
                _model_name(r),
                r["backend"],
                r["precision"],
                _fmt(a.get("AP50")),
                _fmt(a.get("AP50_95")),
                _fmt(
                    a.get("AP_small") if (a.get("AP_small") or 0) >= 0 else None
                ),  # -1: no small ships
                f"{_fmt(a.get('precision'), '.2f')} / {_fmt(a.get('recall'), '.2f')}",
                _fmt(b1.get("p50_ms"), ".1f"),
                f"{lat['best_images_per_s']:.1f} (b{lat['best_batch']})",
                _fmt(r["memory"]["peak_rss_mib"], ".0f"),
                _fmt(r["size"]["file_mib"], ".2f"),
                _fmt(
                    None if r["size"]["parameters"] is None else r["size"]["parameters"] / 1e6,
                    ".2f",
                ),
                _fmt(r["size"]["gmacs_per_image"], ".2f"),
                _fmt(r["power"]["mean_w"], ".1f", "not measured"),
                _fmt(millijoules(r["power"]["energy_per_image_j"]), ".1f", "not measured"),
            ]
        )
        pl = r["pipeline_latency"] or {}
        rows_lat.append(
            [
                _label(r),
                _fmt(b1.get("p50_ms"), ".1f"),
                _fmt(b1.get("p90_ms"), ".1f"),
                _fmt(b1.get("p99_ms"), ".1f"),
                ", ".join(f"b{t['batch']}: {t['images_per_s']:.1f}" for t in lat["throughput"]),
                _fmt(pl.get("p50_ms"), ".1f"),
                _fmt(pl.get("p90_ms"), ".1f"),
                _fmt(
                    None
                    if pl.get("outside_model_share_p50") is None
                    else pl["outside_model_share_p50"] * 100,
                    ".1f",
                ),
            ]
        )
        if r["scenes"]:
            s = r["scenes"]
            rows_scene.append(
                [
                    _label(r),
                    str(len(s["per_scene"])),
                    str(sum(p["tiles"] for p in s["per_scene"])),
                    f"{s['scenes_per_minute']:.2f}",
                    f"{s['tiles_per_s']:.1f}",
                    _fmt(max(p["outside_model_share"] for p in s["per_scene"]) * 100, ".1f"),
                    _fmt(s["energy_per_scene_j"], ".1f", "not measured"),
                ]
            )
    out = [
        (
            "Accuracy and footprint",
            [
                "model",
                "backend",
                "precision",
                "AP50",
                "AP50:95",
                "AP small",
                "P / R at op.",
                "b1 p50 ms",
                "best img/s",
                "peak RSS MiB",
                "file MiB",
                "params M",
                "GMACs",
                "mean W",
                "mJ/image",
            ],
            rows_main,
        ),
        (
            "Latency",
            [
                "model [backend]",
                "b1 p50 ms",
                "b1 p90 ms",
                "b1 p99 ms",
                "throughput img/s by batch",
                "pipeline p50 ms",
                "pipeline p90 ms",
                "% outside model (p50)",
            ],
            rows_lat,
        ),
    ]
    rows_iou = _by_iou_rows(results)
    if rows_iou:
        out.append(
            (
                "AP at IoU thresholds 0.50-0.90 and by box size (COCO areas: small < 32² px², "
                "large > 96² px²)",
                ["model [backend]", "AP@.50", "AP@.60", "AP@.70", "AP@.75", "AP@.80", "AP@.85",
                 "AP@.90", "AP small", "AP medium", "AP large"],  # fmt: skip
                rows_iou,
            )
        )
    if rows_scene:
        out.append(
            (
                "Large scenes",
                [
                    "model [backend]",
                    "scenes",
                    "tiles",
                    "scenes/min",
                    "tiles/s",
                    "max % outside model",
                    "J/scene",
                ],
                rows_scene,
            )
        )
    return out


def _md_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _environment_lines(env: dict) -> list[str]:
    gpu = env.get("gpu") or {}
    return [
        f"- date: {env['date']}; git {(env.get('git_sha') or '-')[:12]}",
        f"- machine: {env['cpu']} ({env['cpu_count']} logical CPUs), {env['os']}, Python {env['python']}"
        + (f"; board: {env['board']}" if env.get("board") else ""),
        f"- GPU: {gpu.get('name', 'none')}" + (f", driver {gpu['driver']}" if gpu else ""),
        f"- threads: {env.get('threads') or 'backend default'}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
    ]


def write_report(results: dict, out: Path) -> dict[str, Path]:
    out = Path(out)
    made = plots(results, out)
    env = results["environment"]
    s = results["settings"]
    probes = sorted({r["power"]["probe"] for r in results["records"]})
    md = ["# sarbridge bench report", ""]
    md += _environment_lines(env)
    ds = results.get("dataset")
    md += [
        f"- data: {s['data'] or 'none (accuracy not measured)'}, split {s['split']}"
        + (f", first {s['max_images']} images" if s.get("max_images") else "")
        + (
            f": {ds['images']} images, {ds['boxes']} boxes, {len(ds['problems'])} problem(s), "
            f"annotation digest {ds['digest'][:12]}"
            if ds
            else ""
        ),
        "- power: " + ("; ".join(probes) if probes else "-"),
        "- latency: the network alone on random input (host/device copies included), every "
        "view a model runs per image (plain and each test-time flip: `N views`); "
        "pipeline: one image from file to merged boxes, through `sarbridge detect`'s path",
        "",
    ]
    for title, header, rows in tables(results):
        md += [f"## {title}", "", _md_table(header, rows), ""]
    for title, lines in _problem_lists(results):
        md += [f"## {title}", ""] + [f"- {line}" for line in lines] + [""]
    if made:
        md += ["## Plots", ""] + [f"![{name}]({p.name})" for name, p in made.items()] + [""]
    text = "\n".join(md)
    atomic_write_text(out / "report.md", text)
    atomic_write_text(out / "report.html", _html(results, made))
    return made


def _problem_lists(results: dict) -> list[tuple[str, list[str]]]:
    """(title, lines): the models that failed, and the images and scenes that could not be
    read (left out of every model's figures alike)."""
    out = []
    if results["failures"]:
        out.append(
            (
                "Failed",
                [f"{f['model']} [{f['backend']}]: {f['error']}" for f in results["failures"]],
            )
        )
    if results.get("skipped"):
        out.append(("Left out: backends that do not run the model's format", results["skipped"]))
    left = {
        line
        for r in results["records"]
        for line in ((r.get("accuracy") or {}).get("left_out_unreadable", []))
        + r.get("scenes_unreadable", [])
    }
    if left:
        out.append(("Left out: images and scenes that could not be read", sorted(left)))
    problems = (results.get("dataset") or {}).get("problems")
    if problems:
        out.append(
            (
                "Dataset problems: annotation files, images and boxes left out of the evaluation",
                list(problems),
            )
        )
    return out


def _html(results: dict, made: dict[str, Path]) -> str:
    env = results["environment"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>sarbridge bench</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;"
        "font-size:13px;text-align:right}th{background:#eee}td:first-child{text-align:left}"
        "img{max-width:48%;margin:1%}</style></head><body>",
        "<h1>sarbridge bench report</h1><ul>",
    ]
    parts += [f"<li>{html.escape(line[2:])}</li>" for line in _environment_lines(env)]
    parts.append("</ul>")
    for title, header, rows in tables(results):
        parts.append(f"<h2>{html.escape(title)}</h2><table><tr>")
        parts += [f"<th>{html.escape(h)}</th>" for h in header]
        parts.append("</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>")
    for title, lines in _problem_lists(results):
        parts.append(f"<h2>{html.escape(title)}</h2><ul>")
        parts += [f"<li>{html.escape(line)}</li>" for line in lines]
        parts.append("</ul>")
    if made:
        parts.append("<h2>Plots</h2>")
        for name, p in made.items():
            data = base64.b64encode(p.read_bytes()).decode()
            parts.append(f"<img alt='{name}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
