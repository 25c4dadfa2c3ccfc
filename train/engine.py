"""What every trainer shares: run directories, checkpoints, resume, NaN guard, DDP, progress.

A run lives in ``runs/<name>/``:

* ``checkpoint.pt``: the last completed epoch (model, optimizer, scheduler,
  epoch, history, config), loadable with ``torch.load(weights_only=True)``;
* ``best.pt``: the same at the best validation metric (the last epoch when a run has no
  validation);
* ``run.json``: resolved config, git sha, data summary, metrics per epoch.

Every file is written to a temporary name and renamed, so a run killed at any
moment leaves the previous good files intact. Data order, augmentation and
negative sampling are functions of (seed, epoch), so ``--resume`` continues
exactly where an uninterrupted run would be.

Distributed training is PyTorch DDP under ``torchrun`` (gloo on CPU, nccl on
GPU). The global batch is sharded across processes; the loss is computed on
the global batch (embeddings are all-gathered where the loss couples samples).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from sarbridge.runtime.errors import SarbridgeError
from sarbridge.runtime.fileio import atomic_write_json, git_sha
from sarbridge.train.checkpoint import (
    atomic_torch_save,
    capture_structure,
    load_checkpoint,
    metrics_of_test,
)


class TrainingDiverged(SarbridgeError, RuntimeError):
    """The loss became NaN or infinite."""


# ---------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when started by torchrun (WORLD_SIZE > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    dev = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local, dev)


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_gather_with_grad(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate ``x`` from every process along dim 0, keeping gradients to the local part."""
    if not info.distributed:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def shard(items: list, info: DistInfo) -> list:
    """This process's contiguous share of a global batch (sizes must divide evenly)."""
    if not info.distributed:
        return items
    if len(items) % info.world_size:
        raise SarbridgeError(
            f"global batch of {len(items)} does not divide over {info.world_size} processes"
        )
    n = len(items) // info.world_size
    return items[info.rank * n : (info.rank + 1) * n]


def mean_batchnorm_over_ranks(model: torch.nn.Module, info: DistInfo) -> None:
    """BatchNorm running statistics that each rank measured on its share of the batches (e.g.
    ``torch.optim.swa_utils.update_bn``, a cumulative average of the batches' statistics) made
    their mean over the ranks, in place; with as many batches on every rank, what one process
    measuring every batch would hold. Nothing to do in one process."""
    if not info.distributed:
        return
    for m in model.modules():
        if getattr(m, "running_mean", None) is not None:  # BatchNorm that tracks statistics
            for buf in (m.running_mean, m.running_var):
                dist.all_reduce(buf)
                buf.div_(info.world_size)


# ---------------------------------------------------------------- run directory


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


# ---------------------------------------------------------------- run set-up


def start_run(run_dir: Path, resume: bool, seed: int, threads: int | None) -> None:
    """Refuse to overwrite a run unless resuming; set threads and the seed."""
    if threads:
        torch.set_num_threads(threads)
    if (run_dir / "checkpoint.pt").is_file() and not resume:
        raise SarbridgeError(
            f"{run_dir} already holds a run: pass --resume to continue it, or choose another --name"
        )
    torch.manual_seed(seed)


def wrap_ddp(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` when running under torchrun, else ``model``."""
    if not info.distributed:
        return model
    ids = [info.device] if info.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def make_optimizer(params, name: str, lr: float, weight_decay: float, momentum: float = 0.9):
    """SGD (momentum) or AdamW by name."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise SarbridgeError(f"unknown optimizer {name!r}; choose 'sgd' or 'adamw'")


def record_final(run_dir: Path, report: dict, info: DistInfo) -> None:
    """Add the final (test) report to run.json; its test metrics become the run's own lineage
    step's metrics."""
    if not info.is_main:
        return
    path = run_dir / "run.json"
    record = json.loads(path.read_text())
    record["final"] = report
    if record.get("lineage") and isinstance(report.get("test"), dict):
        record["lineage"][-1]["metrics"] = metrics_of_test(report["test"])
    atomic_write_json(record, path)


# ---------------------------------------------------------------- trainer


@dataclass
class EpochPlan:
    """What a trainer supplies: per-epoch batches and a step that returns the loss and logs."""

    batches: Callable[[int], Iterable[Any]]  # epoch -> global batches (this process's share)
    step: Callable[[Any], tuple[torch.Tensor, dict[str, float]]]  # batch -> (loss, logs)
    batch_items: Callable[[Any], int]  # items in a batch (for throughput)
    evaluate: Callable[[int], dict[str, float]] | None = None  # epoch -> validation metrics
    steps_per_epoch: int | None = None


class Trainer:
    """Epoch loop with checkpoints, resume, NaN guard and progress bars.

    Args:
        run_dir: ``runs/<name>``.
        task: what the run trains (``"detect"``, ``"bnn"``), stored in checkpoints and run.json.
        model: the (possibly DDP-wrapped) model.
        optimizer, scheduler: stepped per iteration / per epoch.
        epochs: total epochs.
        config: resolved config (plain dict) stored in checkpoints and run.json.
        best_metric: validation key to maximise for ``best.pt``.
        info: distributed info; only rank 0 writes files and shows progress.
        lineage: the flat lineage list ending with this run's own step (stored in checkpoints
            and run.json).
    """

    def __init__(
        self,
        run_dir: str | Path,
        task: str,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None,
        epochs: int,
        config: dict,
        best_metric: str,
        info: DistInfo,
        extra: dict | None = None,
        progress: bool = True,
        max_grad_norm: float | None = 10.0,
        scheduler_per_step: bool = False,
        extra_state: tuple[Callable[[], dict], Callable[[dict], None]] | None = None,
        after_step: Callable[[], None] | None = None,
        after_epoch: Callable[[int], None] | None = None,
        lineage: list[dict] | None = None,
        normalize_config: Callable[[dict], dict] | None = None,
    ):
        self.run_dir = Path(run_dir)
        # a stored config as this version writes it (keys added since filled with defaults),
        # so a run started before a config key existed still resumes
        self.normalize_config = normalize_config
        self.task = task
        self.lineage = list(lineage or [])
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.epochs, self.config, self.best_metric, self.info = epochs, config, best_metric, info
        self.extra = extra or {}
        self.progress = progress and info.is_main
        self.max_grad_norm = max_grad_norm
        self.scheduler_per_step = scheduler_per_step
        self.extra_state = extra_state  # (get, set) of state beyond model/optimizer, e.g. an EMA
        self.after_step = after_step
        self.after_epoch = after_epoch  # epoch -> None, before its checkpoint is written
        self.history: list[dict] = []
        self.best_value = -math.inf
        self.start_epoch = 0

    # -- state
    def _state(self, epoch: int) -> dict:
        return {
            "task": self.task,
            "model": unwrap(self.model).state_dict(),
            "structure": capture_structure(unwrap(self.model)),
            "lineage": self.lineage,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else {},
            "epoch": epoch,
            "best_value": self.best_value,
            "history": self.history,
            "config": self.config,
            "torch_rng": torch.get_rng_state(),
            **self.extra,
            **(self.extra_state[0]() if self.extra_state else {}),
        }

    def resume(self) -> bool:
        """Load ``checkpoint.pt`` if present; return whether a run was resumed."""
        path = self.run_dir / "checkpoint.pt"
        if not path.is_file():
            return False
        state = load_checkpoint(path)
        stored = state.get("config")
        if self.normalize_config is not None and isinstance(stored, dict):
            # not a config of this kind: the comparison below refuses it
            with contextlib.suppress(SarbridgeError):
                stored = self.normalize_config(stored)
        if stored != self.config:
            raise SarbridgeError(
                f"{path}: the run was started with another config; use a new --name or the same config"
            )
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state["scheduler"]:
            self.scheduler.load_state_dict(state["scheduler"])
        self.history = list(state["history"])
        self.best_value = float(state["best_value"])
        self.start_epoch = int(state["epoch"]) + 1
        torch.set_rng_state(state["torch_rng"])
        if self.extra_state:
            self.extra_state[1](state)
        return True

    def _write_run_json(self, status: str, data_summary: dict | None = None) -> None:
        if not self.info.is_main:
            return
        path = self.run_dir / "run.json"
        previous = json.loads(path.read_text()) if path.is_file() else {}
        record = {
            "task": self.task,
            "config": self.config,
            "lineage": previous.get("lineage") or self.lineage,
            "git_sha": previous.get("git_sha") or git_sha(),
            "started": previous.get("started")
            or datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "status": status,
            "world_size": self.info.world_size,
            "data": data_summary or previous.get("data", {}),
            "best": {
                "metric": self.best_metric,
                "value": self.best_value if self.history else None,
            },
            "history": self.history,
        }
        atomic_write_json(record, path)

    # -- loop
    def fit(self, plan: EpochPlan, data_summary: dict | None = None) -> list[dict]:
        if self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if plan.evaluate is None:
            self.best_metric = "epoch"  # nothing to select by: best.pt is the last epoch
        self._write_run_json("running", data_summary)
        for epoch in range(self.start_epoch, self.epochs):
            logs = self._train_epoch(plan, epoch)
            if self.after_epoch:
                self.after_epoch(epoch)
            metrics = plan.evaluate(epoch) if plan.evaluate else {}
            record = {"epoch": epoch, **logs, **metrics}
            self.history.append(record)
            value = record.get(self.best_metric, -math.inf)
            is_best = value > self.best_value
            if is_best:
                self.best_value = value
            if self.info.is_main:
                state = self._state(epoch)
                atomic_torch_save(state, self.run_dir / "checkpoint.pt")
                if is_best:
                    atomic_torch_save(state, self.run_dir / "best.pt")
                self._write_run_json("running")
                shown = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if isinstance(v, float))
                print(f"epoch {epoch + 1}/{self.epochs}: {shown}", flush=True)
        self._write_run_json("finished")
        if self.info.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every rank may read best.pt once the main one wrote it
        return self.history

    def _train_epoch(self, plan: EpochPlan, epoch: int) -> dict[str, float]:
        self.model.train()
        batches = plan.batches(epoch)
        if self.progress:
            from tqdm import tqdm

            batches = tqdm(
                batches,
                total=plan.steps_per_epoch,
                desc=f"epoch {epoch + 1}/{self.epochs}",
                unit="step",
            )
        sums: dict[str, float] = {}
        lr = float(self.optimizer.param_groups[0]["lr"])
        steps, items, t0 = 0, 0, time.perf_counter()
        for batch in batches:
            loss, logs = plan.step(batch)
            if not torch.isfinite(loss):
                self._write_run_json("diverged")
                last = self.run_dir / "checkpoint.pt"
                kept = (
                    f"the last good checkpoint is {last}"
                    if last.is_file()
                    else "no checkpoint was written yet"
                )
                raise TrainingDiverged(
                    f"loss became {loss.item()} at epoch {epoch + 1}, step {steps + 1}; {kept}. "
                    "Lower the learning rate or check the inputs"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
            self.optimizer.step()
            if self.scheduler and self.scheduler_per_step:
                self.scheduler.step()
            if self.after_step:
                self.after_step()
            steps += 1
            items += plan.batch_items(batch) * self.info.world_size
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            if self.progress:
                rate = items / max(time.perf_counter() - t0, 1e-9)
                batches.set_postfix(loss=f"{float(loss.detach()):.4f}", items_s=f"{rate:.1f}")
        if self.scheduler and not self.scheduler_per_step:
            self.scheduler.step()
        seconds = time.perf_counter() - t0
        out = {k: v / max(steps, 1) for k, v in sums.items()}
        out.update(
            {
                "lr": lr,
                "seconds": seconds,
                "items_per_s": items / max(seconds, 1e-9),
            }
        )
        return out


# ---------------------------------------------------------------- EMA, schedule, precision


class ModelEMA:
    """Exponential moving average of weights (decay ramps up over the first steps)."""

    def __init__(self, model: torch.nn.Module, decay: float, ramp_steps: int = 200):
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.ramp_steps, self.updates = decay, max(int(ramp_steps), 1), 0

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.ramp_steps))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        src = unwrap(model).state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src[k].detach(), alpha=1 - d)
            else:
                v.copy_(src[k])


SCHEDULES = ("cosine", "step", "cyclic")


def warmup_schedule(
    total_steps: int,
    warmup_steps: int,
    schedule: str = "cosine",
    milestones=(0.7, 0.9),
    cycle_steps: int | None = None,
) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up over ``warmup_steps``, then a cosine decay
    to 5 % of the rate (``"cosine"``), x0.1 at each milestone (fractions of training, ``"step"``),
    or the cosine decay restarted every ``cycle_steps`` (``"cyclic"``: each cycle ends at 5 %,
    where :class:`WeightAverage` takes its snapshots)."""
    if schedule not in SCHEDULES:
        raise SarbridgeError(
            f"optim.schedule must be one of {', '.join(SCHEDULES)}, not {schedule!r}"
        )
    if schedule == "cyclic" and not (cycle_steps and cycle_steps > 0):
        raise SarbridgeError("the cyclic schedule needs the steps of one cycle (an epoch)")

    def cosine(t: float) -> float:
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    def f(step: int) -> float:
        warm = min(1.0, (step + 1) / max(warmup_steps, 1))
        t = step / max(total_steps, 1)
        if schedule == "cosine":
            return warm * cosine(t)
        if schedule == "cyclic":
            return warm * cosine((step % cycle_steps + 1) / cycle_steps)
        return warm * (0.1 ** sum(t >= m for m in milestones))

    return f


class WeightAverage:
    """The equal-weight average of a model's weights taken at several points of training
    (stochastic weight averaging, Izmailov et al. 2018): ``add`` at the end of each cycle,
    ``average()`` the state dict. Floating-point tensors are averaged (in float64, so the order
    of snapshots does not matter to rounding), the others (counters) kept from the last snapshot.
    BatchNorm statistics of averaged weights must be measured again (``update_bn`` of
    torch.optim.swa_utils) before the average is used."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    @torch.no_grad()
    def add(self, model: torch.nn.Module) -> None:
        for k, v in unwrap(model).state_dict().items():
            v = v.detach().to("cpu")
            if v.dtype.is_floating_point:
                v = v.to(torch.float64)
                self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
            else:
                self.sums[k] = v.clone()
        self.count += 1

    def average(self, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The averaged state dict, each tensor in the dtype and on the device of ``like``'s."""
        if not self.count:
            raise SarbridgeError("no weights were averaged")
        return {
            k: ((v / self.count) if v.dtype.is_floating_point else v).to(
                device=like[k].device, dtype=like[k].dtype
            )
            for k, v in self.sums.items()
        }

    def state_dict(self) -> dict:
        return {"sums": self.sums, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.sums, self.count = dict(state["sums"]), int(state["count"])


def cpu_has_native_bf16() -> bool | None:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX on x86, BF16 on Arm),
    read from /proc/cpuinfo; None where that cannot be told (not Linux)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return None
    return bool({"avx512_bf16", "amx_bf16", "bf16"} & set(flags))


def autocast_dtype(amp: str, device: torch.device, warn: bool = True) -> torch.dtype | None:
    """The autocast dtype of the training step for ``optim.amp`` on ``device`` (None: float32);
    ``warn``: say so when bfloat16 would be emulated (one process of a DDP job says it)."""
    if amp not in ("auto", "bf16", "fp32", "off"):
        raise SarbridgeError(f"optim.amp must be 'auto', 'bf16' or 'fp32' ('off'), not {amp!r}")
    if amp in ("fp32", "off") or (amp == "auto" and device.type != "cuda"):
        return None
    if warn and device.type == "cpu" and cpu_has_native_bf16() is False:
        print(
            "warning: optim.amp=bf16 on a CPU without AVX512-BF16: bfloat16 is emulated and "
            "many times slower than float32 (--set optim.amp=fp32 trains in float32)"
        )
    return torch.bfloat16
