"""Stochastic weight averaging of detector runs: the cyclic schedule, the running average, and a
run whose kept model is the mean of its last epochs' weights with BatchNorm measured again."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sarbridge.runtime.errors import SarbridgeError
from sarbridge.train.checkpoint import deployed_weights, load_checkpoint, load_model
from sarbridge.train.config import ConfigError, from_dict
from sarbridge.train.engine import WeightAverage, warmup_schedule
from sarbridge.train.recipes.detect import DetConfig, train_detector


def test_cyclic_schedule_restarts_every_cycle_and_ends_each_at_its_floor():
    f = warmup_schedule(total_steps=30, warmup_steps=1, schedule="cyclic", cycle_steps=10)
    for cycle in range(3):
        first, last = f(cycle * 10), f(cycle * 10 + 9)
        assert first == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 0.1)))
        assert last == pytest.approx(0.05)  # the snapshot of each epoch is taken here
        steps = [f(cycle * 10 + i) for i in range(10)]
        assert steps == sorted(steps, reverse=True)
    # the plain cosine decays once over the whole run
    g = warmup_schedule(total_steps=30, warmup_steps=1, schedule="cosine")
    assert g(10) < g(9) and g(29) < g(10)


def test_schedules_refuse_unknown_names_and_a_cycle_without_length():
    with pytest.raises(SarbridgeError, match="cosine, step, cyclic"):
        warmup_schedule(10, 1, "linear")
    with pytest.raises(SarbridgeError, match="steps of one cycle"):
        warmup_schedule(10, 1, "cyclic")


def test_weight_average_is_the_mean_and_survives_a_checkpoint():
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)) for _ in range(3)]
    for i, m in enumerate(models):
        m[1].num_batches_tracked.fill_(10 * (i + 1))
    avg = WeightAverage()
    avg.add(models[0])
    restored = WeightAverage()
    restored.load_state_dict(avg.state_dict())  # as set_state after --resume
    for m in models[1:]:
        restored.add(m)
    out = restored.average(models[0].state_dict())
    assert restored.count == 3
    expected = torch.stack([m[0].weight.detach() for m in models]).mean(0)
    torch.testing.assert_close(out["0.weight"], expected)
    torch.testing.assert_close(
        out["1.running_var"], torch.stack([m[1].running_var for m in models]).mean(0)
    )
    assert out["0.weight"].dtype == torch.float32
    assert int(out["1.num_batches_tracked"]) == 30  # counters: the last snapshot's
    with pytest.raises(SarbridgeError, match="no weights"):
        WeightAverage().average(models[0].state_dict())


def test_swa_epochs_is_checked_against_the_schedule():
    with pytest.raises(ConfigError, match="swa_epochs must be between 0 and optim.epochs"):
        from_dict(DetConfig, {"optim": {"epochs": 2, "swa_epochs": 3}})
    with pytest.raises(ConfigError, match="optim.schedule must be one of"):
        from_dict(DetConfig, {"optim": {"schedule": "linear"}})


def test_a_weight_averaged_run_keeps_the_mean_of_its_last_epochs(tmp_path, data):
    cfg = from_dict(
        DetConfig,
        {
            "name": "swa",
            "threads": 1,
            "data": {"input_size": 64, "max_train_images": 8, "val_fraction": 0.0},
            "optim": {
                "epochs": 3, "batch_size": 4, "warmup_steps": 1, "lr": 0.01,
                "schedule": "cyclic", "swa_epochs": 2,
            },
        },
    )  # fmt: skip
    report = train_detector(cfg, tmp_path, progress=False)
    run = tmp_path / "swa"
    assert report["swa_snapshots"] == 2
    last, best = load_checkpoint(run / "checkpoint.pt"), load_checkpoint(run / "best.pt")
    assert last["swa"]["count"] == 2  # epochs 2 and 3
    assert "ema" not in best  # the average replaces the EMA
    kept = deployed_weights(best)
    sums, n = last["swa"]["sums"], last["swa"]["count"]
    conv = next(k for k, v in kept.items() if k.endswith("weight") and v.dim() == 4)
    torch.testing.assert_close(kept[conv], (sums[conv] / n).float())
    assert not torch.equal(kept[conv], last["model"][conv])  # not the last epoch's weights
    # BatchNorm statistics were measured again for the averaged weights, not averaged
    bn = next(k for k in kept if k.endswith("running_mean"))
    assert not torch.allclose(kept[bn], (sums[bn] / n).float())
    # the one loader restores the average, and the run's test figures are of it
    loaded = load_model(run)
    for k, v in loaded.model.state_dict().items():
        torch.testing.assert_close(v, kept[k])
    assert best["lineage"][-1]["metrics"]["test_AP50_95"] == pytest.approx(
        report["test"]["AP50_95"]
    )


def test_compress_steps_do_not_inherit_a_parents_weight_averaging():
    """A parent that ended its run with weight averaging (the zoo detector) hands its config to
    compress: its fine-tuning and QAT steps get their own schedule (one cosine, EMA, the best
    epoch), for any number of epochs, not the parent's cyclic schedule and swa_epochs."""
    from sarbridge.compress.finetune import _finetune_config
    from sarbridge.compress.qat import qat_config
    from sarbridge.compress.settings import STEP_SCHEDULE

    parent = from_dict(
        DetConfig,
        {"optim": {"epochs": 12, "schedule": "cyclic", "swa_epochs": 12, "ema": False}},
    )
    for epochs in (1, 10, 30):  # fewer and more epochs than the parent averaged
        configs = (
            _finetune_config(parent, "ft", epochs, 1e-3, 0, teacher=None, amp="fp32"),
            qat_config(parent, "qat", epochs, 1e-4),
        )
        for cfg in configs:
            o = cfg.optim
            assert (o.epochs, o.schedule, o.swa_epochs, o.ema) == (epochs, "cosine", 0, True)
    assert set(STEP_SCHEDULE) <= set(DetConfig().optim.__dataclass_fields__)


BN_NET = "nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2))"
BN_BATCHES = "[torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(i)) * (i + 1) + i for i in range(4)]"


def test_batchnorm_measured_by_two_ranks_is_what_one_process_measures_on_every_batch(tmp_path):
    """Two gloo processes each run update_bn on their own two batches (different scales and
    offsets), then mean_batchnorm_over_ranks: every BatchNorm's statistics equal one process's
    update_bn over all four batches. Without the all-reduce, rank 0 keeps its own half."""
    import subprocess
    import sys

    from torch.optim.swa_utils import update_bn

    script = tmp_path / "ranks.py"
    script.write_text(
        "import torch\nfrom torch import nn\nfrom torch.optim.swa_utils import update_bn\n"
        "from sarbridge.train.engine import mean_batchnorm_over_ranks, setup_distributed\n"
        "info = setup_distributed('cpu')\n"
        f"torch.manual_seed(0)\nnet = {BN_NET}\nbatches = {BN_BATCHES}\n"
        "with torch.no_grad():\n"
        "    update_bn(batches[2 * info.rank: 2 * info.rank + 2], net)\n"
        "    own = {k: v.clone() for k, v in net.state_dict().items()}\n"
        "    mean_batchnorm_over_ranks(net, info)\n"
        "torch.save({'own': own, 'mean': net.state_dict()}, f'{__import__(\"sys\").argv[1]}/rank{info.rank}.pt')\n"
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29541", str(script), str(tmp_path)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    torch.manual_seed(0)
    net = eval(BN_NET)
    with torch.no_grad():
        update_bn(eval(BN_BATCHES), net)
    one = net.state_dict()
    ranks = [torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in range(2)]
    stats = [k for k in one if k.endswith(("running_mean", "running_var"))]
    assert len(stats) == 4
    for k in stats:
        assert not torch.allclose(ranks[0]["own"][k], one[k], rtol=1e-3)  # half the batches differ
        for rank in ranks:
            torch.testing.assert_close(rank["mean"][k], one[k], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_weight_averaged_run_under_ddp_keeps_the_mean_and_measures_batchnorm_on_every_rank(
    tmp_path, data
):
    """Two gloo processes through the weight-averaging path, BatchNorm all-reduce included:
    rank 0's best.pt holds the mean of the epochs' weights and BatchNorm statistics measured
    again (finite, not the averaged ones). That they are the mean over both ranks' shares is
    checked apart, where each rank's batches are known (the test above)."""
    import json

    import yaml
    from conftest import train_under_ddp

    (tmp_path / "tiny.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "ddp_swa",
                "threads": 1,
                "data": {"input_size": 64, "max_train_images": 16, "val_fraction": 0.0},
                "optim": {
                    "epochs": 2, "batch_size": 4, "warmup_steps": 1, "lr": 0.01,
                    "schedule": "cyclic", "swa_epochs": 2, "ema": False,
                },
            }
        )
    )  # fmt: skip
    r = train_under_ddp("detect", tmp_path / "tiny.yaml", tmp_path, port=29537)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "ddp_swa"
    record = json.loads((run / "run.json").read_text())
    assert record["world_size"] == 2 and record["final"]["swa_snapshots"] == 2
    last, best = load_checkpoint(run / "checkpoint.pt"), load_checkpoint(run / "best.pt")
    kept = deployed_weights(best)
    sums, n = last["swa"]["sums"], last["swa"]["count"]
    conv = next(k for k, v in kept.items() if k.endswith("weight") and v.dim() == 4)
    torch.testing.assert_close(kept[conv], (sums[conv] / n).float())
    bn = next(k for k in kept if k.endswith("running_var"))
    assert torch.isfinite(kept[bn]).all() and (kept[bn] > 0).all()
    assert not torch.allclose(kept[bn], (sums[bn] / n).float())  # measured, not averaged
    assert record["lineage"][-1]["metrics"]["test_AP50_95"] == pytest.approx(
        record["final"]["test"]["AP50_95"]
    )
