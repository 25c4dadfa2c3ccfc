"""Checkpoints, lineage, and ONE loader for every run: :func:`load_model`.

A checkpoint (``runs/<name>/best.pt`` / ``checkpoint.pt``, or a release checkpoint in
``zoo/``) is a plain dict loadable with ``torch.load(weights_only=True)``:

* ``task``: ``"detect"`` or ``"bnn"``; ``config``: the resolved config the model was built from;
* ``model`` (and ``ema`` when the run kept an average: the weights that are deployed);
* ``structure``: every module's shape-defining attributes (channel counts, groups, features,
  and the plain numbers a module keeps), so a model whose structure no longer matches its
  config, e.g. after channel pruning, is rebuilt from the config and then reshaped to the
  stored structure before its weights are loaded (the pattern of Torch-Pruning's
  ``state_dict``/``load_state_dict``). Models wrapped by a quantizer are restored by replaying
  their recorded lineage steps instead (ModelOpt's restore pattern), once such steps exist;
* ``lineage``: a flat list of steps, each ``{kind, name, parent: {name, sha256} | None,
  config_sha256, metrics}`` plus what the step adds (its initialisation, say); the manifest
  carries the same list with the export step appended.

Every file is written to a temporary name and renamed (:func:`atomic_torch_save`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sarbridge.runtime.errors import SarbridgeError
from sarbridge.runtime.fileio import atomic_path, sha256_file
from sarbridge.runtime.manifest import LINEAGE_KINDS

TASKS = ("detect", "bnn")
_WHICH = {"best": "best.pt", "last": "checkpoint.pt"}


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary name, then rename: a kill never leaves half a file."""
    with atomic_path(Path(path)) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint (weights only: no code is unpickled); a run folder means its last one."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise SarbridgeError(f"{path}: no checkpoint here")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SarbridgeError(f"{path}: cannot load checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise SarbridgeError(f"{path}: not a sarbridge checkpoint (no 'model' and 'config')")
    return ckpt


# ---------------------------------------------------------------- structure


def _plain(value) -> bool:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return True
    return isinstance(value, (tuple, list)) and all(
        isinstance(v, (bool, int, float, str)) for v in value
    )


def capture_structure(model: nn.Module) -> dict[str, dict]:
    """Each module's public plain attributes (``in_channels``, ``out_channels``, ``groups``,
    ``num_features``, ``in_features``, a block's split sizes...): what rebuilds a model whose
    channel counts were changed after it was built from its config."""
    out = {}
    for name, module in model.named_modules():
        attrs = {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in vars(module).items()
            if not k.startswith("_") and k != "training" and _plain(v)
        }
        if attrs:
            out[name] = attrs
    return out


def restore_structure(model: nn.Module, structure: dict[str, dict], state: dict) -> nn.Module:
    """Give ``model`` (freshly built from its config) the stored ``structure`` and reshape every
    parameter and buffer to the shape in ``state``, so ``load_state_dict(state)`` fits.

    Raises:
        SarbridgeError: the structure names a module this model does not have.
    """
    modules = dict(model.named_modules())
    unknown = sorted(set(structure) - set(modules))
    if unknown:
        raise SarbridgeError(
            f"the checkpoint's structure names modules this model does not have: {unknown[:5]}"
        )
    for name, attrs in structure.items():
        module = modules[name]
        for k, v in attrs.items():
            current = getattr(module, k, None)
            setattr(module, k, tuple(v) if isinstance(current, tuple) and isinstance(v, list) else v)
    for key, value in state.items():
        owner, _, leaf = key.rpartition(".")
        module = modules.get(owner)
        if module is None:
            continue
        if leaf in module._parameters and module._parameters[leaf] is not None:
            old = module._parameters[leaf]
            if old.shape != value.shape:
                module._parameters[leaf] = nn.Parameter(
                    torch.empty(value.shape, dtype=old.dtype), requires_grad=old.requires_grad
                )
        elif leaf in module._buffers and module._buffers[leaf] is not None:
            old = module._buffers[leaf]
            if old.shape != value.shape:
                module._buffers[leaf] = torch.empty(value.shape, dtype=old.dtype)
    return model


# ---------------------------------------------------------------- lineage


def lineage_step(
    kind: str,
    name: str,
    parent: dict | None = None,
    config_sha256: str | None = None,
    metrics: dict | None = None,
    **extra,
) -> dict:
    """One lineage step: ``parent`` is ``{"name", "sha256"}`` of the weights or model file it
    started from (None for a start from scratch)."""
    if kind not in LINEAGE_KINDS:
        raise ValueError(f"unknown lineage kind {kind!r}; one of {LINEAGE_KINDS}")
    return {
        "kind": kind,
        "name": name,
        "parent": parent,
        "config_sha256": config_sha256,
        "metrics": dict(metrics or {}),
        **extra,
    }


def metrics_of_test(test: dict) -> dict:
    """A run's test report as a lineage step's metrics (``test_`` + each number)."""
    return {f"test_{k}": v for k, v in test.items() if isinstance(v, (int, float))}


def parent_ref(name: str, path: str | Path) -> dict:
    """``{"name", "sha256"}`` of a parent's weights or model file."""
    return {"name": name, "sha256": sha256_file(path)}


def lineage_list(value, name: str = "unknown", config_sha256: str | None = None) -> list[dict]:
    """A checkpoint's or run's lineage as the flat list; lineage dicts written before the list
    existed (``{"init": ..., "parent_lineage": {...}}``) become the steps they describe."""
    if isinstance(value, list):
        return [dict(step) for step in value]
    if not isinstance(value, dict) or not value:
        return [lineage_step("train", name, None, config_sha256)]
    steps = []
    if value.get("init") == "det":
        steps = lineage_list(value.get("parent_lineage") or {}, Path(value["run"]).name)
    elif value.get("init") == "bnn" and value.get("run"):
        steps = [lineage_step("train", Path(value["run"]).name, None, value.get("config_sha256"))]
    init = {k: v for k, v in value.items() if k in ("init", "file", "anchors", "epoch")}
    after = {"after": steps[-1]["name"]} if steps else {}  # no file hash was recorded then
    return [*steps, lineage_step("train", name, None, config_sha256, **init, **after)]


# ---------------------------------------------------------------- one loader


@dataclass
class LoadedModel:
    """What :func:`load_model` gives back."""

    model: nn.Module  # eval mode, on the CPU, with the deployed weights (the EMA's if kept)
    task: str  # "detect" | "bnn"
    config: Any  # the recipe's config dataclass
    classes: list[str]
    lineage: list[dict]
    path: Path  # the checkpoint file
    checkpoint: dict = field(repr=False, default_factory=dict)

    @property
    def name(self) -> str:
        return self.lineage[-1]["name"] if self.lineage else self.path.parent.name


def checkpoint_task(ckpt: dict, path: str | Path = "<checkpoint>") -> str:
    """The checkpoint's task; checkpoints from before ``task`` was stored are told by their keys."""
    task = ckpt.get("task")
    if task is None:
        task = "detect" if "classes" in ckpt else "bnn" if "loss" in ckpt["config"] else None
    if task not in TASKS:
        raise SarbridgeError(f"{path}: unknown task {task!r} (one of {TASKS})")
    return task


def _builders() -> dict[str, tuple[type, Callable[[Any, dict], nn.Module]]]:
    from sarbridge.train.recipes.bnn import BNNConfig, build_model
    from sarbridge.train.recipes.detect import DetConfig, model_from_config

    def bnn(cfg, _ckpt):  # ImageNet files are only a starting point: the weights come next
        return build_model(replace(cfg, model=replace(cfg.model, imagenet_weights=None)))

    return {
        "detect": (DetConfig, lambda cfg, ckpt: model_from_config(cfg, len(ckpt["classes"]))),
        "bnn": (BNNConfig, bnn),
    }


def resolve_checkpoint(source: str | Path, which: str = "best") -> Path:
    """The checkpoint file of ``source``: ``zoo:<name>`` (its sha256 checked against
    zoo/zoo.json), a run folder (``best.pt`` or, with ``which="last"``, ``checkpoint.pt``),
    or a checkpoint file."""
    from sarbridge.runtime.zoo import is_zoo_ref, zoo_checkpoint

    if is_zoo_ref(source):
        return zoo_checkpoint(str(source))
    path = Path(source)
    if path.is_dir():
        if which not in _WHICH:
            raise SarbridgeError(f"which must be one of {sorted(_WHICH)}, not {which!r}")
        path = path / _WHICH[which]
    if not path.is_file():
        raise SarbridgeError(f"{path}: no checkpoint here (a run folder, a .pt file or zoo:<name>)")
    return path


def deployed_weights(ckpt: dict) -> dict:
    """The weights a checkpoint deploys: its EMA when it kept one."""
    return ckpt.get("ema", ckpt["model"])


def load_model(source: str | Path, which: str = "best") -> LoadedModel:
    """Load any run's or release's model, whatever was done to its structure since its config.

    Args:
        source: ``zoo:<name>``, a run folder, or a checkpoint file.
        which: for a run folder, ``"best"`` (best.pt) or ``"last"`` (checkpoint.pt).
    """
    from sarbridge.train.config import config_hash, from_dict

    path = resolve_checkpoint(source, which)
    ckpt = load_checkpoint(path)
    task = checkpoint_task(ckpt, path)
    config_cls, build = _builders()[task]
    try:
        cfg = from_dict(config_cls, ckpt["config"])
    except (SarbridgeError, TypeError, ValueError) as exc:
        raise SarbridgeError(f"{path}: its config does not build a {task} model ({exc})") from exc
    model = build(cfg, ckpt)
    state = deployed_weights(ckpt)
    if ckpt.get("structure"):
        restore_structure(model, ckpt["structure"], state)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise SarbridgeError(f"{path}: the weights do not fit the model ({exc})") from exc
    # a run's run.json holds the same steps with the test metrics filled in after the checkpoint
    record = run_record(path.parent) if path.name in _WHICH.values() else {}
    lineage = lineage_list(
        record.get("lineage") or ckpt.get("lineage"), path.parent.name, config_hash(cfg)
    )
    test = (record.get("final") or {}).get("test")
    if lineage and not lineage[-1]["metrics"] and isinstance(test, dict):  # a run from before
        lineage[-1]["metrics"] = metrics_of_test(test)  # the lineage list: from run.json
    return LoadedModel(
        model.eval(), task, cfg, list(ckpt.get("classes", [])), lineage, Path(path), ckpt
    )


def release_checkpoint(source: str | Path, out: str | Path, **metadata) -> Path:
    """A slim checkpoint of ``source`` for release (zoo/): the deployed weights as ``model``,
    no optimizer or history, structure and flat lineage included; written atomically."""
    loaded = load_model(source)
    ckpt = loaded.checkpoint
    slim = {
        "task": loaded.task,
        "config": ckpt["config"],
        "model": {k: v.contiguous() for k, v in loaded.model.state_dict().items()},
        "structure": capture_structure(loaded.model),
        "lineage": loaded.lineage,
        "epoch": int(ckpt.get("epoch", -1)),
        **({"classes": loaded.classes} if loaded.task == "detect" else {}),
        **metadata,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(slim, out)
    return out


def run_record(run: str | Path) -> dict:
    """A run's run.json (empty when there is none)."""
    path = Path(run) / "run.json"
    return json.loads(path.read_text()) if path.is_file() else {}
