"""``sarbridge compress --method prune|distill``: the compression steps that change or retrain
the network itself. Each one is a run of its own (``runs/<name>``: checkpoints every epoch,
``--resume``, EMA, NaN guard, run.json with its flat lineage), so it can be exported,
quantized (``--method int8 --from runs/<name>``) or chained in a recipe.

* ``prune``: the source's channels pruned to ``--ratio`` of its MACs (:mod:`.prune`), written
  as ``pruned.pt`` in the run before any training (a killed run resumes from it, not from a
  second pruning), then ``--epochs`` of fine-tuning through the detector trainer, distilled
  from ``--teacher`` when one is given (the unpruned parent, typically).
* ``distill``: ``--epochs`` of training of the source (any detector run: a pruned one, a
  narrower one) with ``--teacher``'s outputs and neck features as extra targets
  (train/losses/distill.py).
* ``finetune``: the same training without a teacher: the baseline a distilled student is
  compared with (same source, schedule and seed).

Every step prints and records, against its parent: test AP50, AP50:95, AP small (PyTorch,
through the runtime's decode), parameters, MACs, the FP32 ONNX file size and its ONNX Runtime
batch-1 latency (``run.json["compare"]``).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from .errors import CompressError
from .settings import STEP_SCHEDULE, TRAINING_METHODS, step_overrides


def check_run_out(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to reuse a run folder unless resuming; ``overwrite`` starts it again."""
    if run_dir.exists() and not resume and not overwrite:
        raise CompressError(
            f"{run_dir} exists (an earlier run); pass --resume to continue it or --overwrite to "
            "start again (nothing was written)"
        )
    if run_dir.exists() and overwrite and not resume:
        shutil.rmtree(run_dir)


def footprint(model, input_size: int, onnx_dir: Path | None, threads: int | None) -> dict:
    """Parameters and MACs of ``model``; with ``onnx_dir`` (an FP32 export of it) also the
    model file's size and its ONNX Runtime batch-1 latency (median of 30 runs after 5)."""
    import torch

    from sarbridge.train.models.layers import input_channels

    from .prune import count_macs

    x = torch.zeros(1, input_channels(model), input_size, input_size)
    macs, params = count_macs(model, x)
    out = {"parameters": params, "macs": macs}
    if onnx_dir is not None:
        import onnxruntime as ort

        from sarbridge.runtime.manifest import load_manifest

        manifest = load_manifest(onnx_dir)
        path = onnx_dir / manifest["model"]["file"]
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x.numpy()}
        times = []
        for k in range(35):
            t0 = time.perf_counter()
            sess.run(None, feed)
            if k >= 5:
                times.append(time.perf_counter() - t0)
        out["onnx_bytes"] = path.stat().st_size
        out["ort_latency_ms_p50"] = round(float(np.median(times)) * 1000, 2)
        out["ort_threads"] = threads
    return out


def _test_metrics(lineage: list[dict]) -> dict:
    metrics = lineage[-1].get("metrics", {}) if lineage else {}
    return {k[5:]: v for k, v in metrics.items() if k.startswith("test_")}


def _finetune_config(
    cfg, run_name: str, epochs: int, lr: float, seed: int, teacher, amp: str | None = None,
    teacher_flips: tuple[str, ...] = (), overrides: list[str] | tuple[str, ...] = (),
):  # fmt: skip
    """The fine-tuning config: the parent's data, model and loss, a short schedule, the teacher
    (seen under ``teacher_flips`` too), then ``overrides`` (``key=value``, e.g. the schedule or
    the augmentation; settings.step_overrides). ``amp``: a resumed run's own (it resumes with
    the config it started with); by default the parent's, except bfloat16 steps on a CPU that
    would emulate them.

    Raises:
        CompressError: an override that does not fit the config schema."""
    import torch

    from sarbridge.train.config import ConfigError, with_overrides
    from sarbridge.train.engine import cpu_has_native_bf16

    o = cfg.optim
    if amp is None:
        amp = o.amp
        if amp == "bf16" and not torch.cuda.is_available() and cpu_has_native_bf16() is False:
            # the parent's bfloat16 steps suited the CPU it trained on; emulated here, they run
            # many times slower than float32 (one step of the zoo detector's distillation: 35 s
            # against 5 s on an AVX2-only CPU)
            print("    the parent trained with optim.amp=bf16, which this CPU would emulate: "
                  "fine-tuning in float32")  # fmt: skip
            amp = "fp32"
    step = dataclasses.replace(
        cfg,
        name=run_name,
        seed=seed,
        init="random",  # the weights come with the model handed in
        optim=dataclasses.replace(o, epochs=int(epochs), lr=float(lr), amp=amp,
                                  warmup_steps=min(o.warmup_steps, 100), **STEP_SCHEDULE),  # fmt: skip
        augment=dataclasses.replace(
            cfg.augment, close_mosaic=min(cfg.augment.close_mosaic or 0, int(epochs))
        ),
        distill=dataclasses.replace(
            cfg.distill, teacher=None if teacher is None else str(teacher),
            teacher_flips=tuple(teacher_flips),
        ),  # fmt: skip
    )
    if not overrides:
        return step
    try:
        return with_overrides(step, list(overrides), leaves_only=True)
    except ConfigError as exc:
        raise CompressError(f"--set {' '.join(overrides)}: {exc}") from None


# the config sections that say how a step trains: a resumed step must ask for the same ones
_TRAINING_SECTIONS = ("optim", "augment", "eval", "distill")


def _check_resumed_config(run_dir: Path, cfg) -> None:
    """Refuse to resume the run in ``run_dir`` with a training config (schedule, augmentation,
    evaluation, distillation: e.g. other --epochs, --lr or --set) other than the one it started
    with; a run without a recorded config is not checked."""
    import json

    from sarbridge.train.config import to_dict

    try:
        recorded = json.loads((run_dir / "run.json").read_text()).get("config") or {}
    except (OSError, ValueError):
        return
    asked = to_dict(cfg)

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    differ = []
    for section in _TRAINING_SECTIONS:
        if not isinstance(recorded.get(section), dict):
            continue
        now = dict(flat(asked.get(section) or {}, f"{section}."))
        for key, before in flat(recorded[section], f"{section}."):
            if key in now and now[key] != before:
                differ.append(f"{key}={json.dumps(before)} (asked: {json.dumps(now[key])})")
    if differ:
        raise CompressError(
            f"{run_dir} started with {', '.join(differ)}: resume it with the options it started "
            "with (--epochs, --lr, --teacher, --set), or start again with --overwrite"
        )


def _resumed_amp(run_dir: Path) -> str | None:
    """The ``optim.amp`` a fine-tuning run in ``run_dir`` started with (None: not started)."""
    import json

    try:
        record = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return ((record.get("config") or {}).get("optim") or {}).get("amp")


def _same_pruning(step: dict, settings, parent: dict, path: Path) -> None:
    """A resumed prune run must be the one asked for: same settings, same parent weights."""
    asked = dataclasses.asdict(settings)
    # a run pruned before class_evidence existed ranked by importance alone
    recorded = {"class_evidence": 0, **(step.get("settings") or {})}
    if step.get("kind") != "prune" or recorded != asked:
        hint = ""
        if {**recorded, "class_evidence": asked.get("class_evidence")} == asked:
            hint = f" (--class-evidence {recorded['class_evidence']} resumes it)"
        raise CompressError(
            f"{path} was pruned with {recorded}, not {asked}{hint}: use another --out, "
            "or --overwrite without --resume to prune again"
        )
    if (step.get("parent") or {}).get("sha256") != parent["sha256"]:
        raise CompressError(
            f"{path} was pruned from other weights than {parent['name']} (sha256 differs): use "
            "another --out, or --overwrite without --resume"
        )


def _prune_step_checkpoint(loaded, pruned, cfg, lineage, result) -> dict:
    from sarbridge.train.checkpoint import capture_structure
    from sarbridge.train.config import to_dict

    return {
        "task": loaded.task,
        "config": to_dict(cfg),
        "model": {k: v.contiguous() for k, v in pruned.state_dict().items()},
        "structure": capture_structure(pruned),
        "lineage": lineage,
        "epoch": -1,
        "prune": result.as_dict(),
        **({"classes": loaded.classes} if loaded.task == "detect" else {}),
    }


def compress_train_step(
    method: str,
    source,
    run_dir: Path,
    *,
    settings=None,
    teacher=None,
    teacher_flips=None,
    epochs: int,
    lr: float,
    seed: int = 0,
    threads: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    overrides=None,
) -> dict:
    """Run a ``prune`` or ``distill`` step from ``source`` into ``run_dir``; returns its
    comparison with the parent (also in ``run_dir/run.json["compare"]``). ``overrides``
    (``key=value`` strings or a recipe's mapping, settings.step_overrides) change the fine-tuning config, e.g.
    ``augment.mosaic=1.0`` or a weight-averaging schedule.

    Raises:
        CompressError: a bad request (ratio, teacher, epochs, an override the config refuses,
            a resumed run asked to train otherwise than it started), a source that is not a
            detector (a BNN may be pruned, with ``epochs`` 0), an existing run without
            ``resume``/``overwrite``. Nothing is written in these cases.
    """
    import torch

    from sarbridge.runtime.decode import parse_flips
    from sarbridge.runtime.fileio import atomic_write_json
    from sarbridge.train.checkpoint import (
        atomic_torch_save,
        lineage_step,
        load_model,
        parent_ref,
        run_record,
    )
    from sarbridge.train.config import config_hash
    from sarbridge.train.models.layers import input_channels

    from .prune import PruneSettings, changed_layers, class_score_ceilings, prune

    if method not in TRAINING_METHODS:
        raise CompressError(f"not a training step: {method!r}")
    if epochs < 0 or (method != "prune" and epochs < 1):
        raise CompressError(f"--epochs must be at least {0 if method == 'prune' else 1}, not {epochs}")
    if method == "distill" and teacher is None:
        raise CompressError("--method distill needs --teacher (a run folder, checkpoint or zoo:<name>)")
    if method == "finetune" and teacher is not None:
        raise CompressError("--method finetune trains without a teacher; use --method distill")
    if method == "prune" and not isinstance(settings, PruneSettings):
        raise CompressError("--method prune needs --ratio")
    try:
        teacher_flips = parse_flips(teacher_flips)
    except ValueError as exc:
        raise CompressError(f"--teacher-flips: {exc}") from None
    if teacher_flips and teacher is None:
        raise CompressError("--teacher-flips needs --teacher (the flips are the teacher's views)")
    overrides = step_overrides(overrides)
    if overrides and not epochs:
        raise CompressError("--set changes the fine-tuning config: it needs --epochs of at least 1")
    run_dir = Path(run_dir)
    resuming = resume and run_dir.exists()
    if run_dir.exists() and not resume and not overwrite:
        check_run_out(run_dir, resume, overwrite)  # refuses before the slower checks below
    if threads:
        torch.set_num_threads(threads)
    loaded = load_model(source)
    if loaded.task != "detect" and (method != "prune" or epochs):
        raise CompressError(
            f"{source} holds a {loaded.task} model: it can be pruned (--epochs 0) but this "
            "command fine-tunes and distils detectors only"
        )
    if teacher is not None and not epochs:
        raise CompressError("--teacher needs --epochs of at least 1 (it teaches the fine-tuning)")
    if epochs:  # the step's config and the trainer's own checks, before anything is written
        # the parent's precision: no note about it here, this config is a check only
        amp = (_resumed_amp(run_dir) if resuming else None) or loaded.config.optim.amp
        cfg = _finetune_config(loaded.config, run_dir.name, epochs, lr, seed, teacher, amp=amp,
                               teacher_flips=teacher_flips, overrides=overrides)  # fmt: skip
        if resuming:
            _check_resumed_config(run_dir, cfg)
    if teacher is not None:
        from sarbridge.runtime.errors import SarbridgeError
        from sarbridge.train.recipes.detect import load_teacher

        try:
            load_teacher(cfg, loaded.model, list(loaded.classes))
        except SarbridgeError as exc:
            raise CompressError(str(exc)) from None
    check_run_out(run_dir, resume, overwrite)  # every request checked: an old run may go now
    cfg = loaded.config
    size = cfg.data.input_size  # a detector's input, a BNN's patch side
    parent_metrics = _test_metrics(loaded.lineage)
    work = Path(tempfile.mkdtemp(prefix=f"sarbridge-{method}-"))
    try:
        print(f"[1] parent {loaded.name}: footprint (FP32 ONNX export, ONNX Runtime batch 1)")
        parent_fp = _export_footprint(source, loaded.model, size, work / "parent", threads)
        model, lineage = loaded.model, list(loaded.lineage)
        prune_info = None
        if method == "prune":
            pruned_path = run_dir / "pruned.pt"
            if resuming and pruned_path.is_file():
                print(f"[2] pruned model of the interrupted run: {pruned_path}")
                again = load_model(pruned_path)
                _same_pruning(again.lineage[-1], settings, parent_ref(loaded.name, loaded.path),
                              pruned_path)  # fmt: skip
                model, lineage = again.model, list(again.lineage)
                prune_info = again.checkpoint.get("prune")
            else:
                x = torch.zeros(1, input_channels(model), size, size)
                print(
                    f"[2] channel pruning to {settings.ratio:.0%} of the {settings.ratio_of} "
                    f"({settings.importance} importance, "
                    f"{'global' if settings.global_pruning else 'per layer'}, "
                    f"round to {settings.round_to}, {settings.class_evidence} channels of each "
                    "sign kept per class output)"
                )
                grads = _taylor_gradients(cfg, seed) if settings.importance == "taylor" else None
                model, result = prune(loaded.model, x, settings, grads, progress)
                prune_info = result.as_dict()
                changed = changed_layers(loaded.model, model)
                print(
                    f"    MACs {result.macs_before / 1e9:.3f} G -> {result.macs_after / 1e9:.3f} G "
                    f"({result.macs_kept:.1%}), parameters {result.params_before / 1e6:.2f} M -> "
                    f"{result.params_after / 1e6:.2f} M, {len(changed)} layers narrowed"
                )
                for level, top in class_score_ceilings(model).items():
                    print(
                        f"    warning: class head level {level} kept no channel with a positive "
                        f"class weight: its scores cannot pass the sigmoid of its bias ({top:.3f} "
                        "now) unless fine-tuning grows one back (none did in the runs of "
                        "benchmarks/results/prune_pareto/p30_lr); --class-evidence keeps "
                        "channels of both signs, or choose the student's operating score from "
                        "its validation precision and recall"
                    )
                step = lineage_step(
                    "prune", run_dir.name, parent_ref(loaded.name, loaded.path),
                    config_hash(cfg), tool="torch-pruning",
                    settings=dataclasses.asdict(settings), result=prune_info,
                )  # fmt: skip
                lineage = [*lineage, step]
                run_dir.mkdir(parents=True, exist_ok=True)
                ckpt_cfg = dataclasses.replace(cfg, name=run_dir.name)
                atomic_torch_save(
                    _prune_step_checkpoint(loaded, model, ckpt_cfg, lineage, result), pruned_path
                )
        if epochs:
            ft_cfg = _finetune_config(cfg, run_dir.name, epochs, lr, seed, teacher,
                                      amp=_resumed_amp(run_dir) if resuming else None,
                                      teacher_flips=teacher_flips, overrides=overrides)  # fmt: skip
            how = f"distilled from {teacher}" if teacher else "no teacher"
            if teacher_flips:
                how += f", seen plain and under flips {','.join(teacher_flips)}"
            print(f"[3] fine-tuning {epochs} epoch(s) at lr {lr:g} ({how}) -> {run_dir}")
            from sarbridge.train.recipes.detect import train_detector

            made_here = method == "prune"  # else the model is the source's file as it is
            report = train_detector(
                ft_cfg, run_dir.parent, resume=resuming, progress=progress, model=model,
                lineage=lineage,
                parent=None if made_here else parent_ref(loaded.name, loaded.path),
            )  # fmt: skip
            child = load_model(run_dir)
            model, child_metrics = child.model, dict(report.get("test") or {})
            for level, top in class_score_ceilings(model).items():
                # fine-tuning can remove positive class weights too (prune_pareto/p30_evidence)
                print(
                    f"    note: after fine-tuning, class head level {level} has no positive class "
                    f"weight: it scores at most {top:.3f}; the other levels detect"
                )
        else:
            child_metrics = _evaluate_and_record(loaded, model, run_dir, lineage)
        print("[4] footprint of the result")
        child_fp = _export_footprint(run_dir, model, size, work / "child", threads)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    compare = {
        "method": method,
        "parent": {"name": loaded.name, "test": parent_metrics, **parent_fp},
        "child": {"name": run_dir.name, "test": _numbers(child_metrics), **child_fp},
        "prune": prune_info,
        "teacher": None if teacher is None else str(teacher),
        "teacher_flips": list(teacher_flips),
        "epochs": int(epochs),
        "lr": float(lr),
        "seed": int(seed),
    }
    record = run_record(run_dir)
    record["compare"] = compare
    atomic_write_json(record, run_dir / "run.json")
    print_comparison(compare)
    return compare


def _numbers(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, (int, float))}


def _export_footprint(source, model, size, out: Path, threads) -> dict:
    """Footprint with an FP32 ONNX export of ``source`` (detectors); parameters and MACs of the
    SAR branch only for a BNN (the part pruning changes)."""
    from sarbridge.export.onnx_export import export_run

    from .prune import pruning_scope

    if not hasattr(model, "strides"):  # a BNN: two inputs, one of which is pruned
        return footprint(pruning_scope(model)[0], size, None, threads)

    try:
        export_run(source, out, parity_images=4)
    except Exception as exc:  # an export failure is reported, the step's result stays
        print(f"    (no ONNX footprint: {exc})")
        return footprint(model, size, None, threads)
    return footprint(model, size, out, threads)


def _taylor_gradients(cfg, seed: int, batches: int = 4):
    """For Taylor importance: the detection loss of the first ``batches`` training batches
    (the trainer's own sampling and augmentation), accumulated into the model's gradients."""
    import dataclasses as dc
    import itertools

    import torch

    from sarbridge.train.data.augment import epoch_batches
    from sarbridge.train.data.detection import make_sets
    from sarbridge.train.engine import DistInfo
    from sarbridge.train.losses import detector_loss

    def run(model):
        train = make_sets(cfg.data)[0]
        seeded = dc.replace(cfg, seed=seed)
        model.train()
        for m in model.modules():  # the statistics of the model to prune stay as they were
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        for x, targets in itertools.islice(
            epoch_batches(seeded, train, 0, DistInfo(), torch.device("cpu")), batches
        ):
            loss, _ = detector_loss(model, x, targets, x.shape[-1])
            loss.backward()
        model.eval()

    return run


def _evaluate_and_record(loaded, model, run_dir: Path, lineage: list[dict]) -> dict:
    """A prune step without fine-tuning: score the pruned model on the test split and write
    it as the run's best.pt / checkpoint.pt with a run.json (detectors); a BNN is kept as is."""
    import torch

    from sarbridge.runtime.fileio import atomic_write_json
    from sarbridge.train.checkpoint import atomic_torch_save, load_checkpoint, metrics_of_test

    ckpt = load_checkpoint(run_dir / "pruned.pt")
    metrics = {}
    if loaded.task == "detect":
        from sarbridge.train.data.detection import make_sets
        from sarbridge.train.evaluation import evaluate

        cfg = loaded.config
        _, _, test, classes, _ = make_sets(cfg.data)
        metrics = evaluate(model, test, cfg, torch.device("cpu"), classes)
        print(f"    pruned, not fine-tuned: test AP50 {metrics['AP50']:.4f}, AP50:95 "
              f"{metrics['AP50_95']:.4f}, AP small {metrics['AP_small']:.4f}")  # fmt: skip
        ckpt["lineage"][-1]["metrics"] = metrics_of_test(metrics)
    atomic_torch_save(ckpt, run_dir / "checkpoint.pt")
    atomic_torch_save(ckpt, run_dir / "best.pt")
    atomic_write_json(
        {
            "task": loaded.task,
            "config": ckpt["config"],
            "lineage": ckpt["lineage"],
            "status": "finished",
            "history": [],
            "final": {"test": metrics},
        },
        run_dir / "run.json",
    )
    return metrics


def print_comparison(c: dict) -> None:
    """Parent against child, one line per figure."""
    p, k = c["parent"], c["child"]
    rows = [
        ("test AP50", "AP50", "{:.4f}"),
        ("test AP50:95", "AP50_95", "{:.4f}"),
        ("test AP small", "AP_small", "{:.4f}"),
    ]
    print(f"{'':22}{p['name'][:24]:>26}{k['name'][:24]:>26}")
    for label, key, fmt in rows:
        a, b = p["test"].get(key), k["test"].get(key)
        if a is not None and b is not None:
            print(f"{label:22}{fmt.format(a):>26}{fmt.format(b):>26}   {b - a:+.4f}")
    for label, key, scale, fmt in (
        ("parameters (M)", "parameters", 1e-6, "{:.3f}"),
        ("MACs (G)", "macs", 1e-9, "{:.3f}"),
        ("ONNX size (MB)", "onnx_bytes", 1e-6, "{:.2f}"),
        ("ORT latency p50 (ms)", "ort_latency_ms_p50", 1, "{:.2f}"),
    ):
        a, b = p.get(key), k.get(key)
        if a is not None and b is not None:
            print(f"{label:22}{fmt.format(a * scale):>26}{fmt.format(b * scale):>26}   "
                  f"x{b / a:.3f}")  # fmt: skip


__all__ = ["TRAINING_METHODS", "compress_train_step", "footprint"]
