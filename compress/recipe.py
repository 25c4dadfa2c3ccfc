"""``sarbridge compress --recipe configs/compress_<name>.yaml``: compression steps that chain.

A recipe names a source and a list of steps; each step is one ``sarbridge compress`` method
with its options, reads what the step before it produced and writes a run or an artifact of
its own, its lineage appended::

    name: edge_prune50_kd_int8
    source: zoo:ssdd_edge_det
    steps:
      - {method: prune, ratio: 0.5, epochs: 0}
      - {method: distill, teacher: source, epochs: 30}   # source: the recipe's source
      - {method: int8, target: onnxruntime}

Training steps (prune, distill) write ``<runs_dir>/<name>/<k>_<method>``; artifact steps (int8,
qat, fp16) write ``artifacts/<name>/<k>_<method>[_<target>]``; ``<runs_dir>/<name>/recipe.json``
records every step's output and its comparison with its parent. The whole recipe is checked
before anything runs (methods, options, the order of steps: :data:`CHAIN_RULES`). A killed
recipe started again with ``--resume`` skips the finished steps and resumes the interrupted one.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CompressError
from .settings import RESUMABLE_METHODS, STEP_OPTIONS, TRAINING_METHODS

ARTIFACT = ("int8", "qat", "fp16")
# (step before, step) -> why it is refused; "source" is the recipe's source
CHAIN_RULES = {
    **{(q, "prune"): "pruning after quantization: an INT8/FP16 artifact is an ONNX graph; "
       "prune the float model first" for q in ARTIFACT},  # fmt: skip
    **{(q, t): "training after quantization: an INT8/FP16 artifact is not trainable; "
       "train before quantizing (or use qat)" for q in ARTIFACT
       for t in ("distill", "finetune")},  # fmt: skip
    ("qat", "int8"): "PTQ after QAT: a QAT artifact is already INT8",
    ("int8", "int8"): "PTQ after PTQ: the artifact is already INT8",
    ("fp16", "int8"): "INT8 after FP16: quantize the float32 model (FP16 is a GPU precision)",
    **{(q, "qat"): "QAT after quantization: QAT starts from the float model" for q in ARTIFACT},
    **{(q, "fp16"): "FP16 after quantization: a quantized artifact is not float" for q in ARTIFACT},
}


# recipe keys whose compress() argument is named otherwise
RECIPE_KWARGS = {"global": "global_pruning", "set": "overrides"}


@dataclass
class Step:
    index: int
    method: str
    options: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        target = self.options.get("target", "onnxruntime") if self.method in ("int8", "qat") else None
        return f"{self.index}_{self.method}" + (f"_{target}" if target else "")


@dataclass
class Recipe:
    name: str
    source: str
    steps: list[Step]
    path: Path


def chain_problem(before: str, step: str) -> str | None:
    """Why ``step`` may not follow ``before`` (None when it may)."""
    return CHAIN_RULES.get((before, step))


def load_recipe(path: str | Path, source: str | None = None) -> Recipe:
    """Read and check a recipe (nothing runs).

    Raises:
        CompressError: the file is missing or not YAML; no name, source or steps; a step whose
            method does not exist or that has options its method does not take; a step that may
            not follow the one before it (the rule is named).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise CompressError(f"{path}: no such recipe file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CompressError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise CompressError(f"{path}: a recipe is a mapping with name, source and steps")
    unknown = set(data) - {"name", "source", "steps"}
    if unknown:
        raise CompressError(f"{path}: unknown keys {sorted(unknown)} (name, source, steps)")
    name = data.get("name") or path.stem.removeprefix("compress_")
    if not isinstance(name, str) or "/" in name or name.startswith("."):
        raise CompressError(f"{path}: name must be a plain folder name, not {name!r}")
    src = source or data.get("source")
    if not isinstance(src, str) or not src:
        raise CompressError(f"{path}: no source (a run folder, checkpoint or zoo:<name>)")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise CompressError(f"{path}: steps must be a non-empty list")
    steps, before = [], "source"
    for k, raw in enumerate(raw_steps, 1):
        if not isinstance(raw, dict) or "method" not in raw:
            raise CompressError(f"{path}: step {k} must be a mapping with a method")
        method = raw["method"]
        if method not in STEP_OPTIONS:
            raise CompressError(
                f"{path}: step {k}: method {method!r} does not exist; one of "
                f"{', '.join(STEP_OPTIONS)}"
            )
        options = {key: v for key, v in raw.items() if key != "method"}
        extra = set(options) - STEP_OPTIONS[method]
        if extra:
            raise CompressError(
                f"{path}: step {k} ({method}): unknown options {sorted(extra)}; it takes "
                f"{sorted(STEP_OPTIONS[method]) or 'none'}"
            )
        problem = chain_problem(before, method)
        if problem:
            raise CompressError(f"{path}: step {k} ({method} after {before}) is refused: {problem}")
        if method == "prune" and "ratio" not in options:
            raise CompressError(f"{path}: step {k} (prune) needs a ratio")
        _check_values(path, k, method, options)
        if method == "distill" and "teacher" not in options:
            raise CompressError(f"{path}: step {k} (distill) needs a teacher")
        steps.append(Step(k, method, options))
        before = method
    return Recipe(name, src, steps, path)


def _check_values(path: Path, k: int, method: str, options: dict) -> None:
    """Option values a step would refuse, found before the first step runs."""
    from sarbridge.runtime.decode import parse_flips

    from .settings import prune_settings
    from .targets import scheme_of

    try:
        if method == "prune":
            prune_settings(
                options["ratio"], ratio_of=options.get("ratio_of"),
                importance=options.get("importance"), global_pruning=options.get("global"),
                round_to=options.get("round_to"), class_evidence=options.get("class_evidence"),
            )  # fmt: skip
        if method in ("int8", "qat"):
            scheme_of(options.get("target", "onnxruntime"))
        try:
            flips = parse_flips(options.get("teacher_flips"))
        except ValueError as exc:
            raise CompressError(f"teacher_flips: {exc}") from None
        if flips and "teacher" not in options:
            raise CompressError("teacher_flips needs a teacher")
        epochs = options.get("epochs")
        if epochs is not None and (not isinstance(epochs, int) or epochs < (method != "prune")):
            raise CompressError(f"epochs must be a whole number of at least {int(method != 'prune')}")
        if "set" in options:
            _check_set(method, options)
    except (CompressError, TypeError) as exc:
        raise CompressError(f"{path}: step {k} ({method}): {exc}") from None


def _check_set(method: str, options: dict) -> None:
    """A training step's ``set`` mapping: settable keys (settings.SET_REFUSED) whose values fit
    the detector config's schema (checked on the defaults; the step applies them to its
    parent's config)."""
    from sarbridge.train.config import ConfigError, with_overrides
    from sarbridge.train.recipes.detect import DetConfig

    from .api import DEFAULT_EPOCHS
    from .settings import step_overrides

    if options.get("epochs") == 0:
        raise CompressError("set changes the fine-tuning config: it needs epochs of at least 1")
    items = step_overrides(options["set"])
    epochs = options.get("epochs", DEFAULT_EPOCHS[method])  # what cross-field checks compare
    try:
        with_overrides(DetConfig(), [f"optim.epochs={epochs}", *items], leaves_only=True)
    except ConfigError as exc:
        raise CompressError(f"set: {exc}") from None


def _outputs(recipe: Recipe, runs_dir: Path, artifacts_dir: Path) -> list[Path]:
    return [
        (runs_dir / recipe.name if s.method in TRAINING_METHODS else artifacts_dir / recipe.name) / s.label
        for s in recipe.steps
    ]


def _done(step: Step, out: Path) -> bool:
    if step.method in TRAINING_METHODS:
        record = out / "run.json"
        return record.is_file() and "compare" in json.loads(record.read_text())
    return (out / "manifest.json").is_file()


def run_recipe_file(
    path: str | Path,
    *,
    resume: bool = False,
    threads: int | None = None,
    runs_dir: str | Path = "runs",
    artifacts_dir: str | Path = "artifacts",
    source: str | None = None,
    progress: bool = True,
) -> dict:
    """Run a recipe step by step; returns its record (also ``<runs_dir>/<name>/recipe.json``).

    Raises:
        CompressError: a bad recipe (nothing is written), outputs of an earlier start without
            ``resume``, or the first failing step (the finished ones stay).
    """
    from sarbridge.runtime.fileio import atomic_write_json

    from .api import compress

    recipe = load_recipe(path, source)
    runs_dir, artifacts_dir = Path(runs_dir), Path(artifacts_dir)
    outs = _outputs(recipe, runs_dir, artifacts_dir)
    existing = [o for o in outs if o.exists()]
    if existing and not resume:
        raise CompressError(
            f"recipe {recipe.name}: {existing[0]} exists (an earlier start); pass --resume to "
            "continue it where it stopped, or remove its outputs (nothing was written)"
        )
    record_path = runs_dir / recipe.name / "recipe.json"
    record = {
        "recipe": recipe.name,
        "file": str(recipe.path),
        "source": recipe.source,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "steps": [],
    }
    previous = recipe.source
    for step, out in zip(recipe.steps, outs, strict=True):
        opts = dict(step.options)
        if opts.get("teacher") == "source":
            opts["teacher"] = recipe.source
        entry = {"step": step.index, "method": step.method, "options": step.options,
                 "from": str(previous), "out": str(out)}  # fmt: skip
        if _done(step, out):
            print(f"== step {step.index}/{len(recipe.steps)}: {step.method} -> {out}: done")
            entry["result"] = _result(step, out)
        else:
            print(f"== step {step.index}/{len(recipe.steps)}: {step.method} {previous} -> {out}")
            kwargs = {RECIPE_KWARGS.get(k, k): v for k, v in opts.items()}
            result = compress(
                step.method, previous, out, threads=threads, progress=progress,
                resume=resume and step.method in RESUMABLE_METHODS,
                runs_dir=runs_dir / recipe.name, **kwargs,
            )  # fmt: skip
            entry["result"] = _summary(step, result)
        record["steps"].append(entry)
        record["updated"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
        record_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(record, record_path)
        previous = out
    return record


def _summary(step: Step, result: dict) -> dict:
    if step.method in TRAINING_METHODS:
        return result  # the comparison with its parent
    return {"metrics": result.get("metrics", {}), "precision": result.get("precision")}


def _result(step: Step, out: Path) -> dict:
    if step.method in TRAINING_METHODS:
        return json.loads((out / "run.json").read_text())["compare"]
    from sarbridge.runtime.manifest import load_manifest

    return _summary(step, load_manifest(out))


__all__ = ["CHAIN_RULES", "Recipe", "Step", "chain_problem", "load_recipe", "run_recipe_file"]
