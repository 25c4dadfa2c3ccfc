"""One loader for every run: a model whose channel counts changed after it was built from its
config trains, saves and restores through load_model with the same outputs; lineage is flat."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from sarbridge.runtime.errors import SarbridgeError
from sarbridge.runtime.fileio import sha256_file
from sarbridge.train.checkpoint import (
    capture_structure,
    deployed_weights,
    lineage_list,
    load_checkpoint,
    load_model,
    release_checkpoint,
)
from sarbridge.train.config import from_dict
from sarbridge.train.models.layers import Residual
from sarbridge.train.recipes.detect import DetConfig, model_from_config, train_detector


def _prune_hidden(res: Residual, keep: int) -> None:
    """Keep the first ``keep`` hidden channels of a residual block, in place, the way a channel
    pruner edits a network (the 1x1 conv's outputs, its BatchNorm, the 3x3 conv's inputs)."""
    conv1, bn1 = res.block[0][0], res.block[0][1]
    conv2 = res.block[1][0]
    conv1.weight = nn.Parameter(conv1.weight.detach()[:keep].clone())
    conv1.out_channels = keep
    bn1.weight = nn.Parameter(bn1.weight.detach()[:keep].clone())
    bn1.bias = nn.Parameter(bn1.bias.detach()[:keep].clone())
    bn1.running_mean = bn1.running_mean[:keep].clone()
    bn1.running_var = bn1.running_var[:keep].clone()
    bn1.num_features = keep
    conv2.weight = nn.Parameter(conv2.weight.detach()[:, :keep].clone())
    conv2.in_channels = keep


def _cfg(name: str, **data) -> DetConfig:
    return from_dict(
        DetConfig,
        {
            "name": name,
            "threads": 1,
            "data": {"input_size": 64, "max_train_images": 8, "val_fraction": 0.02, **data},
            "optim": {"epochs": 1, "batch_size": 4, "warmup_steps": 1},
        },
    )


def test_a_model_with_changed_channels_trains_saves_and_restores(tmp_path, data):
    cfg = _cfg("pruned")
    torch.manual_seed(0)
    model = model_from_config(cfg, 1)
    full_params = sum(p.numel() for p in model.parameters())
    blocks = [m for m in model.modules() if isinstance(m, Residual)]
    for res in blocks:
        _prune_hidden(res, res.block[0][0].out_channels // 2)
    pruned_params = sum(p.numel() for p in model.parameters())
    assert pruned_params < full_params

    parent = [{"kind": "prune", "name": "halved", "parent": None, "config_sha256": None, "metrics": {}}]
    report = train_detector(cfg, tmp_path, progress=False, model=model, lineage=parent)
    run = tmp_path / "pruned"
    assert report["parameters"] == pruned_params

    # a model built from the config alone cannot take these weights
    best = load_checkpoint(run / "best.pt")
    with pytest.raises(RuntimeError, match="size mismatch"):
        model_from_config(cfg, 1).load_state_dict(deployed_weights(best))

    loaded = load_model(run)
    assert sum(p.numel() for p in loaded.model.parameters()) == pruned_params
    reference = copy.deepcopy(model).eval().to(memory_format=torch.contiguous_format)
    reference.load_state_dict(deployed_weights(best))
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), reference(x), rtol=0, atol=0)
    for res in (m for m in loaded.model.modules() if isinstance(m, Residual)):
        assert res.block[0][0].out_channels == res.block[0][1].num_features
        assert res.block[1][0].in_channels == res.block[0][0].out_channels

    # the lineage: the step that made the model, then this run's training
    record = json.loads((run / "run.json").read_text())
    assert [(s["kind"], s["name"]) for s in record["lineage"]] == [
        ("prune", "halved"),
        ("train", "pruned"),
    ]
    assert record["lineage"][1]["init"] == "model"
    assert loaded.lineage == record["lineage"]

    # a release checkpoint keeps the structure: the same outputs again
    slim = release_checkpoint(run, tmp_path / "release" / "checkpoint.pt")
    again = load_model(slim)
    assert set(load_checkpoint(slim)) >= {"task", "config", "model", "structure", "lineage"}
    assert "optimizer" not in load_checkpoint(slim)
    with torch.no_grad():
        torch.testing.assert_close(again.model(x), reference(x), rtol=0, atol=0)
    assert again.lineage == record["lineage"]


def test_structure_naming_a_missing_module_is_refused():
    from sarbridge.train.checkpoint import restore_structure

    model = model_from_config(_cfg("x"), 1)
    structure = capture_structure(model)
    structure["head.not_a_layer"] = {"out_channels": 3}
    with pytest.raises(SarbridgeError, match="head.not_a_layer"):
        restore_structure(model, structure, model.state_dict())


def test_legacy_lineage_dicts_become_flat_steps():
    legacy = {
        "init": "det",
        "run": "runs/long",
        "epoch": 60,
        "parent_lineage": {"init": "bnn", "file": "runs/bnn_edge/sar_backbone.pt", "run": "runs/bnn_edge"},
    }
    steps = lineage_list(legacy, "long_more", "a" * 64)
    assert [(s["kind"], s["name"]) for s in steps] == [
        ("train", "bnn_edge"),
        ("train", "long"),
        ("train", "long_more"),
    ]
    assert steps[-1]["config_sha256"] == "a" * 64 and steps[-1]["init"] == "det"
    assert steps[1]["init"] == "bnn" and steps[-1]["after"] == "long"


def test_a_checkpoint_that_is_not_ours_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    before = sha256_file(path)
    with pytest.raises(SarbridgeError, match="not a sarbridge checkpoint"):
        load_model(path)
    assert sha256_file(path) == before  # the file is left as it was
