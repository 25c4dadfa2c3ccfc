"""The one run skeleton every recipe shares: start the run, join DDP, fit, reload the best
checkpoint, test, record.

A recipe supplies two functions: ``prepare(run_dir, info) -> Job`` (data, the model it was
handed or built, optimizer, schedule, lineage) and ``finish(job, best) -> report`` (the test
evaluation of the best checkpoint; it may replace the weights ``best`` holds, which are then
written back to best.pt). Everything else (refusing to overwrite a run, seeding,
threads, resume, checkpoints, NaN guard, run.json, the final record) happens here once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sarbridge.train.checkpoint import atomic_torch_save, load_checkpoint, metrics_of_test
from sarbridge.train.config import config_hash, from_dict, to_dict
from sarbridge.train.engine import (
    DistInfo,
    EpochPlan,
    Trainer,
    cleanup_distributed,
    record_final,
    setup_distributed,
    start_run,
)


@dataclass
class Job:
    """What a recipe's ``prepare`` hands the skeleton."""

    net: torch.nn.Module  # the model to step (DDP-wrapped under torchrun)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    epochs: int
    plan: EpochPlan
    best_metric: str  # validation key that picks best.pt
    lineage: list[dict]  # the parent's steps, then this run's own
    summary: dict  # data summary for run.json
    extra: dict = field(default_factory=dict)  # stored in every checkpoint (e.g. classes)
    extra_state: tuple[Callable[[], dict], Callable[[dict], None]] | None = None
    after_step: Callable[[], None] | None = None
    after_epoch: Callable[[int], None] | None = None  # epoch -> None, before its checkpoint
    scheduler_per_step: bool = False
    context: dict[str, Any] = field(default_factory=dict)  # what finish() needs from prepare()


def run_recipe(
    task: str,
    cfg,
    runs_dir: str | Path,
    resume: bool,
    progress: bool,
    prepare: Callable[[Path, DistInfo], Job],
    finish: Callable[[Job, dict, DistInfo], dict],
) -> dict:
    """Run one training recipe in ``runs_dir/cfg.name``; return its final report (in run.json)."""
    info = setup_distributed(cfg.device)
    try:
        run_dir = Path(runs_dir) / cfg.name
        start_run(run_dir, resume, cfg.seed, cfg.threads)
        job = prepare(run_dir, info)
        trainer = Trainer(
            run_dir,
            task,
            job.net,
            job.optimizer,
            job.scheduler,
            job.epochs,
            to_dict(cfg),
            job.best_metric,
            info,
            extra=job.extra,
            progress=progress,
            scheduler_per_step=job.scheduler_per_step,
            extra_state=job.extra_state,
            after_step=job.after_step,
            after_epoch=job.after_epoch,
            lineage=job.lineage,
            normalize_config=lambda stored: to_dict(from_dict(type(cfg), stored)),
        )
        if resume and trainer.resume() and info.is_main:
            print(f"resumed {run_dir} at epoch {trainer.start_epoch + 1}/{job.epochs}")
        trainer.fit(job.plan, job.summary | {"config_sha256": config_hash(cfg)})
        best = load_checkpoint(run_dir / "best.pt")
        report = finish(job, best, info)
        record_final(run_dir, report, info)
        if info.is_main:
            if best.get("lineage") and isinstance(report.get("test"), dict):
                # the kept checkpoint carries its own test metrics, as run.json does
                best["lineage"][-1]["metrics"] = metrics_of_test(report["test"])
            # and the weights finish() kept (e.g. a weight average)
            atomic_torch_save(best, run_dir / "best.pt")
        return report
    finally:
        cleanup_distributed()
