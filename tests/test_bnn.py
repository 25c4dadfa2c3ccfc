import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from sarbridge.train.checkpoint import load_checkpoint
from sarbridge.train.config import ConfigError, apply_overrides, from_dict, load_config, to_dict
from sarbridge.train.data.pairs import PatchTensors, derangement, epoch_batches, make_splits
from sarbridge.train.engine import DistInfo
from sarbridge.train.losses.bnn import bnn_loss
from sarbridge.train.models.bnn import BridgeNet, bnn_distance
from sarbridge.train.recipes.bnn import BNNConfig, export_sar_backbone, train_bnn


def tiny_config(**over) -> BNNConfig:
    """Real SIH1733 pairs, 64 px inputs, a handful of steps."""
    data = {
        "roots": ["optsar_sih1733_tharun"],
        "input_size": 64,
        "train_fraction": 0.3,
        "test_fraction": 0.34,
        "val_fraction": 0.33,
    }
    cfg = {
        "name": "tiny",
        "threads": 1,
        "data": data,
        "model": {"backbone": "edge", "reduce_channels": 16},
        "optim": {"epochs": 2, "batch_size": 8, "lr": 0.02, "milestones": [1]},
        "eval": {"retrieval_candidates": 10},
    }
    return from_dict(BNNConfig, apply_overrides(cfg, [f"{k}={v}" for k, v in over.items()]))


def test_loss_matches_hand_computation():
    d_pos, d_neg = torch.tensor([0.1, 0.3]), torch.tensor([0.8, 0.4])
    loss, l_p, l_n = bnn_loss(d_pos, d_neg, alpha=1.0)
    assert l_p.item() == pytest.approx(0.05)  # (0.01 + 0.09) / 2
    assert l_n.item() == pytest.approx(0.20)  # (0.04 + 0.36) / 2
    assert loss.item() == pytest.approx(0.125)
    assert bnn_loss(d_pos, d_neg, alpha=3.0)[0].item() == pytest.approx((0.05 + 3 * 0.2) / 4)
    z_s, z_o = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert bnn_distance(z_s, z_o).item() == pytest.approx(1.0)  # sqrt(2) / sqrt(2)


def test_distance_in_unit_interval_and_branches_separate():
    torch.manual_seed(0)
    net = BridgeNet("edge", patch_size=64, embed_dim=50)
    z_s, z_o = net(torch.randn(4, 1, 64, 64) * 10, torch.rand(4, 3, 64, 64))
    assert z_s.shape == (4, 50) and z_o.shape == (4, 50)
    d = bnn_distance(z_s, z_o)
    assert ((d >= 0) & (d <= 1)).all()
    sar_ids = {id(p) for p in net.sar.parameters()}
    assert sar_ids.isdisjoint(id(p) for p in net.optical.parameters())
    assert (
        net.sar.backbone.stem[0].in_channels == 1 and net.optical.backbone.stem[0].in_channels == 3
    )


def test_derangement_has_no_fixed_point():
    rng = np.random.default_rng(0)
    for n in (2, 3, 20):
        for _ in range(20):
            p = derangement(n, rng)
            assert sorted(p) == list(range(n)) and all(p[i] != i for i in range(n))


def test_config_rejects_unknown_keys_and_bad_types(tmp_path):
    with pytest.raises(ConfigError, match="unknown config keys.*optim.epoch"):
        from_dict(BNNConfig, {"optim": {"epoch": 3}})
    with pytest.raises(ConfigError, match="optim.epochs' must be an integer"):
        from_dict(BNNConfig, {"optim": {"epochs": "many"}})
    with pytest.raises(ConfigError, match="optim.name' must be a string.*YAML.*quote it"):
        load_config(BNNConfig, "configs/bnn_edge.yaml", ["optim.name=off"])
    cfg = load_config(
        BNNConfig, "configs/bnn_resnet50.yaml", ["optim.epochs=3", "data.input_size=128"]
    )
    assert (
        cfg.optim.epochs == 3
        and cfg.optim.milestones == (30, 100)
        and cfg.model.backbone == "resnet50"
    )
    assert from_dict(BNNConfig, to_dict(cfg)) == cfg


def test_batches_split_by_scene_and_augment_pairs_identically(data):
    cfg = tiny_config()
    splits = make_splits(cfg)
    train_scenes = {p.scene.scene_id for p in splits.train}
    assert train_scenes.isdisjoint(p.scene.scene_id for p in splits.test)
    assert train_scenes.isdisjoint(p.scene.scene_id for p in splits.val)
    tensors = PatchTensors(cfg)
    s, o = tensors.load(splits.train[0])
    s2, o2 = tensors.load(splits.train[0], rot=1, flip=True)
    np.testing.assert_array_equal(s2, np.rot90(s, 1, axes=(1, 2))[:, :, ::-1])
    np.testing.assert_array_equal(o2, np.rot90(o, 1, axes=(1, 2))[:, :, ::-1])
    b1 = list(epoch_batches(cfg, splits, tensors, 0, DistInfo()))
    b2 = list(epoch_batches(cfg, splits, tensors, 0, DistInfo()))
    b3 = list(epoch_batches(cfg, splits, tensors, 1, DistInfo()))
    assert (
        torch.equal(b1[0].sar, b2[0].sar) and b1[0].negatives == b2[0].negatives
    )  # a function of the epoch
    assert not torch.equal(b1[0].sar, b3[0].sar)


def test_a_few_steps_on_real_pairs_reduce_the_loss(data):
    from sarbridge.train.recipes.bnn import bnn_step

    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = tiny_config()
    splits = make_splits(cfg)
    batch = next(epoch_batches(cfg, splits, PatchTensors(cfg), 0, DistInfo()))
    net = BridgeNet("edge", 64, 50, 16)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(12):
        loss, _ = bnn_step(net, batch, cfg, DistInfo())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_resume_equals_uninterrupted(tmp_path, data, monkeypatch):
    from sarbridge.train import engine

    cfg = tiny_config(**{"loss.hard_negative_fraction": 0.25})
    train_bnn(cfg, tmp_path / "a", progress=False)
    full = load_checkpoint(tmp_path / "a" / "tiny")

    real_epoch = engine.Trainer._train_epoch
    calls = {"n": 0}

    def killed_in_second_epoch(self, plan, epoch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the process dies mid-run
        return real_epoch(self, plan, epoch)

    monkeypatch.setattr(engine.Trainer, "_train_epoch", killed_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_bnn(cfg, tmp_path / "b", progress=False)
    assert load_checkpoint(tmp_path / "b" / "tiny")["epoch"] == 0
    monkeypatch.setattr(engine.Trainer, "_train_epoch", real_epoch)
    with pytest.raises(Exception, match="pass --resume"):
        train_bnn(cfg, tmp_path / "b", progress=False)
    train_bnn(cfg, tmp_path / "b", resume=True, progress=False)
    resumed = load_checkpoint(tmp_path / "b" / "tiny")
    assert resumed["epoch"] == full["epoch"] == 1
    for k, v in full["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, rtol=0, atol=0, msg=k)
    run = json.loads((tmp_path / "b" / "tiny" / "run.json").read_text())
    assert run["status"] == "finished" and len(run["history"]) == 2
    assert {"accuracy", "precision", "recall", "auc", "retrieval_top1"} <= set(run["final"]["test"])
    assert run["final"]["threshold_source"] == "validation"
    # the SAR branch exports in the form detectors load
    path = export_sar_backbone(tmp_path / "b" / "tiny")
    payload = torch.load(path, weights_only=True)
    assert payload["backbone"] == "edge" and payload["source"] == "bnn"


def test_nan_loss_stops_with_a_clear_message(tmp_path, data, monkeypatch):
    from sarbridge.train.recipes import bnn as bnn_train

    cfg = tiny_config(**{"optim.epochs": 1})
    monkeypatch.setattr(
        bnn_train, "bnn_loss", lambda *a: (torch.tensor(math.nan, requires_grad=True),) * 3
    )
    with pytest.raises(
        Exception, match="loss became nan at epoch 1, step 1; no checkpoint was written yet"
    ):
        train_bnn(cfg, tmp_path, progress=False)
    assert json.loads((tmp_path / "tiny" / "run.json").read_text())["status"] == "diverged"


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_one_process(tmp_path, data):
    """Same global batch: 2 processes (gloo, all-gathered embeddings) == 1 process."""
    overrides = [
        "--set",
        "model.freeze_bn=true",
        "--set",
        "optim.epochs=1",
        "--set",
        "loss.hard_negative_fraction=0.25",
    ]
    base = [
        "--config",
        str(tmp_path / "tiny.yaml"),
        "--name",
        "ddp",
        "--no-progress",
        *overrides,
    ]
    import yaml

    (tmp_path / "tiny.yaml").write_text(
        yaml.safe_dump(to_dict(dataclasses.replace(tiny_config(), threads=1)))
    )
    env_cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        "-m",
        "sarbridge",
        "train",
        "bnn",
        "--runs-dir",
        str(tmp_path / "two"),
        *base,
    ]
    one = subprocess.run(
        [
            sys.executable,
            "-m",
            "sarbridge",
            "train",
            "bnn",
            "--runs-dir",
            str(tmp_path / "one"),
            *base,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(env_cmd, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = load_checkpoint(tmp_path / "one" / "ddp"), load_checkpoint(tmp_path / "two" / "ddp")
    assert json.loads((tmp_path / "two" / "ddp" / "run.json").read_text())["world_size"] == 2
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    assert a["history"][0]["loss"] == pytest.approx(b["history"][0]["loss"], rel=1e-5)


def test_synthetic_pairs_only_add_to_training(tmp_path, data):
    cfg = tiny_config(**{"data.synthetic_scenes": 2, "data.train_fraction": 1.0})
    splits = make_splits(cfg, tmp_path)
    synthetic = [p for p in splits.train if "synthetic_pairs" in p.scene.scene_id]
    assert len(synthetic) == 2 * 4  # two 512 px scenes, four 256 px patches each
    assert splits.summary["synthetic_scenes_in_train"] == 2
    assert not any("synthetic" in p.scene.scene_id for p in splits.val + splits.test)
    s, o = PatchTensors(cfg).load(synthetic[0])  # 16-bit SAR takes the dB path
    assert s.shape == (1, 256, 256) and s.min() >= 0 and s.max() <= 1


def test_unreadable_scene_is_reported_and_left_out_the_others_keep_their_split(
    tmp_path, data, capsys
):
    src = data / "optsar_sen12_volkov100"
    root = tmp_path / "pairs"
    for sub in ("sar", "opt"):
        (root / sub).mkdir(parents=True)
        for f in sorted((src / sub).iterdir()):
            (root / sub / f.name).symlink_to(f)

    def splits_of():
        cfg = tiny_config(**{"data.train_fraction": 1.0})
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, roots=(str(root),)))
        s = make_splits(cfg)
        return s, {k: {p.scene.scene_id for p in getattr(s, k)} for k in ("train", "val", "test")}

    _, clean = splits_of()
    gone = sorted(clean["test"])[0]  # "pairs/<name>"
    sar = root / "sar" / f"{gone.split('/')[1]}.png"
    data_bytes = sar.read_bytes()
    sar.unlink()
    sar.write_bytes(data_bytes[: len(data_bytes) // 3])  # truncated: the header still reads

    splits, left = splits_of()
    assert left["test"] == clean["test"] - {gone}
    assert left["train"] == clean["train"] and left["val"] == clean["val"]
    (line,) = splits.summary["problems"]
    assert line.startswith(f"left out, unreadable: {gone}:") and sar.name in line
    assert line in capsys.readouterr().out


@pytest.mark.parametrize("test, val", [(0.0, 0.1), (0.6, 0.4), (0.2, -0.1)])
def test_bad_split_fractions_are_config_errors(test, val):
    from sarbridge.train.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="test_fraction"):
        from_dict(BNNConfig, {"data": {"test_fraction": test, "val_fraction": val}})
