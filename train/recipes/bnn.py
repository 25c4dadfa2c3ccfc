"""The BNN pretraining recipe: its config, the training step on the global batch, matching
evaluation (accuracy, AUC, retrieval), the run, and the SAR backbone export for detectors.
Data and sampling live in :mod:`sarbridge.train.data.pairs`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sarbridge.runtime.metrics import best_threshold, matching_metrics, roc_auc
from sarbridge.runtime.pairs import PatchPair
from sarbridge.runtime.preprocess import SarPreprocess
from sarbridge.train.checkpoint import lineage_step
from sarbridge.train.config import ConfigError, config_hash
from sarbridge.train.data.pairs import (
    BNNBatch,
    PatchTensors,
    derangement,
    epoch_batches,
    make_splits,
)
from sarbridge.train.engine import (
    DistInfo,
    EpochPlan,
    all_gather_with_grad,
    make_optimizer,
    wrap_ddp,
)
from sarbridge.train.losses.bnn import bnn_loss
from sarbridge.train.models.bnn import BridgeNet, bnn_distance
from sarbridge.train.recipes.common import Job, run_recipe

# ---------------------------------------------------------------- config


@dataclass(frozen=True)
class BNNData:
    roots: tuple[str, ...] = ("optsar_sen12_volkov100", "optsar_sih1733_tharun")
    patch_size: int = 256
    stride: int = 256
    input_size: int = 256  # patches are resized to this side (area) before the network
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    split_seed: int = 0
    train_fraction: float = 1.0  # share of training patches used (training-set-size curve)
    synthetic_scenes: int = 0  # synthetic 512 px scene pairs added to TRAINING only
    sar_preprocess: dict = field(default_factory=lambda: SarPreprocess().to_dict())


@dataclass(frozen=True)
class BNNModel:
    backbone: str = "edge"
    embed_dim: int = 50
    reduce_channels: int = 64
    pool: int = 4
    imagenet_weights: str | None = None  # local torchvision state_dict for the optical branch
    imagenet_sar: bool = False  # also start the SAR branch from it
    freeze_bn: bool = False  # BatchNorm on running statistics (small per-process batches)


@dataclass(frozen=True)
class BNNLoss:
    alpha: float = 1.0
    negatives_per_positive: int = 1
    hard_negative_fraction: float = 0.0  # extra negatives from the same scene, per positive


@dataclass(frozen=True)
class Optim:
    name: str = "sgd"  # "sgd" (the paper's) or "adamw"
    epochs: int = 200
    batch_size: int = 20
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = (30, 100)
    gamma: float = 0.5


@dataclass(frozen=True)
class BNNEval:
    threshold: float | None = None  # None: best-accuracy threshold on validation pairs
    retrieval_candidates: int = 100
    seed: int = 0


@dataclass(frozen=True)
class BNNConfig:
    name: str = "bnn"
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    augment: bool = True
    data: BNNData = BNNData()
    model: BNNModel = BNNModel()
    loss: BNNLoss = BNNLoss()
    optim: Optim = Optim()
    eval: BNNEval = BNNEval()

    def __post_init__(self):
        if self.optim.batch_size < 2:
            raise ConfigError("optim.batch_size must be at least 2 (negatives come from the batch)")
        if not 0 < self.data.train_fraction <= 1:
            raise ConfigError("data.train_fraction must be in (0, 1]")
        d = self.data
        if not (0 < d.test_fraction < 1 and d.val_fraction >= 0 and d.test_fraction + d.val_fraction < 1):
            raise ConfigError(
                "data.test_fraction must be in (0, 1) and data.val_fraction at least 0, with "
                f"their sum under 1 (got {d.test_fraction} and {d.val_fraction})"
            )


# ---------------------------------------------------------------- step


def bnn_step(model, batch: BNNBatch, cfg: BNNConfig, info: DistInfo):
    """Loss on the global batch (embeddings all-gathered across processes)."""
    n_local = len(batch.sar)
    n_hard = 0 if batch.hard_opt is None else len(batch.hard_opt)
    opt_in = batch.opt if batch.hard_opt is None else torch.cat([batch.opt, batch.hard_opt])
    z_s, z_o_ext = model(batch.sar.to(info.device), opt_in.to(info.device))  # one pass per branch
    z_o, z_h = z_o_ext[:n_local], z_o_ext[n_local:]
    z_s_all, z_o_all = all_gather_with_grad(z_s, info), all_gather_with_grad(z_o, info)  # [B, n]
    d_pos = bnn_distance(z_s_all, z_o_all)
    d_neg = [bnn_distance(z_s_all, z_o_all[perm]) for perm in batch.negatives]
    if cfg.loss.hard_negative_fraction > 0:
        # hard negatives sit in the first rows of each process's share; gather with equal shapes
        z_h_all = all_gather_with_grad(_pad_rows(z_h, n_local), info)
        rows = [
            torch.arange(r * n_local, r * n_local + c)
            for r, c in enumerate(_gather_counts(n_hard, info))
        ]
        rows = torch.cat(rows)
        if len(rows):
            d_neg.append(bnn_distance(z_s_all[rows], z_h_all[rows]))
    loss, l_p, l_n = bnn_loss(d_pos, torch.cat(d_neg), cfg.loss.alpha)
    return loss, {"loss": loss.item(), "l_pos": l_p.item(), "l_neg": l_n.item()}


def _pad_rows(z: torch.Tensor, n: int) -> torch.Tensor:
    """Pad [k, D] to [n, D] with zeros so every process gathers the same shape."""
    return torch.cat([z, z.new_zeros(n - len(z), z.shape[1])]) if len(z) < n else z


def _gather_counts(k: int, info: DistInfo) -> list[int]:
    if not info.distributed:
        return [k]
    import torch.distributed as dist

    t = torch.tensor([k])
    out = [torch.zeros_like(t) for _ in range(info.world_size)]
    dist.all_gather(out, t)
    return [int(x) for x in out]


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def embed_patches(
    model: BridgeNet, tensors: PatchTensors, patches: list[PatchPair], device, batch_size: int = 32
):
    """(z_s [N, n], z_o [N, n]) for patches, in eval mode."""
    model.eval()
    zs, zo = [], []
    for start in range(0, len(patches), batch_size):
        sar, opt = tensors.batch(patches[start : start + batch_size])
        a, b = model(sar.to(device), opt.to(device))
        zs.append(a.cpu())
        zo.append(b.cpu())
    return torch.cat(zs), torch.cat(zo)


def pair_distances(
    z_s: torch.Tensor, z_o: torch.Tensor, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed, seeded evaluation pairs: every positive, and one negative (i, j != i) per positive."""
    n = len(z_s)
    perm = derangement(n, np.random.default_rng(seed))
    d_pos = bnn_distance(z_s, z_o).numpy()
    d_neg = bnn_distance(z_s, z_o[perm]).numpy()
    return np.concatenate([d_pos, d_neg]), np.concatenate([np.ones(n, bool), np.zeros(n, bool)])


def retrieval(z_s: torch.Tensor, z_o: torch.Tensor, candidates: int, seed: int) -> dict[str, float]:
    """SAR-to-optical retrieval: rank of the true optical patch among ``candidates`` (itself + others)."""
    n = len(z_s)
    c = min(candidates, n)
    rng = np.random.default_rng(seed + 1)
    ranks = []
    for i in range(n):
        others = rng.choice([j for j in range(n) if j != i], c - 1, replace=False)
        cand = np.concatenate([[i], others])
        d = bnn_distance(z_s[i : i + 1].expand(c, -1), z_o[cand]).numpy()
        ranks.append(int((d < d[0]).sum()))  # ties count in the true patch's favour
    ranks = np.asarray(ranks)
    return {"top1": float((ranks < 1).mean()), "top5": float((ranks < 5).mean()), "candidates": c}


def evaluate_split(
    model, tensors, patches, cfg: BNNConfig, device, threshold: float
) -> dict[str, float]:
    z_s, z_o = embed_patches(model, tensors, patches, device)
    d, y = pair_distances(z_s, z_o, cfg.eval.seed)
    m = matching_metrics(d, y, threshold)
    m["auc"] = roc_auc(d, y)
    m["best_threshold"] = best_threshold(d, y)
    m["mean_d_pos"] = float(d[y].mean())
    m["mean_d_neg"] = float(d[~y].mean())
    m.update(
        {
            f"retrieval_{k}": v
            for k, v in retrieval(z_s, z_o, cfg.eval.retrieval_candidates, cfg.eval.seed).items()
        }
    )
    return m


# ---------------------------------------------------------------- run


def build_model(cfg: BNNConfig) -> BridgeNet:
    m = cfg.model
    return BridgeNet(
        m.backbone,
        cfg.data.input_size,
        m.embed_dim,
        m.reduce_channels,
        m.pool,
        m.imagenet_weights,
        m.imagenet_sar,
        m.freeze_bn,
    )


def train_bnn(
    cfg: BNNConfig,
    runs_dir: str | Path = "runs",
    resume: bool = False,
    progress: bool = True,
    model: BridgeNet | None = None,
) -> dict:
    """Train a BNN; return the final report (also in run.json). ``model``: a ready model to
    train instead of the one ``cfg.model`` builds."""

    def prepare(run_dir: Path, info: DistInfo) -> Job:
        splits = make_splits(cfg, run_dir)
        tensors = PatchTensors(cfg)
        net_model = (model if model is not None else build_model(cfg)).to(info.device)
        if info.distributed and not cfg.model.freeze_bn:
            if info.device.type == "cuda":  # batch statistics over all GPUs
                net_model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net_model)
            elif info.is_main:
                print(
                    "note: SyncBatchNorm needs GPUs; on CPU each process normalises its own "
                    "share of the batch"
                )
        net = wrap_ddp(net_model, info)
        o = cfg.optim
        optimizer = make_optimizer(net.parameters(), o.name, o.lr, o.weight_decay, o.momentum)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(o.milestones), o.gamma)
        if info.is_main:
            s = splits.summary["patches"]
            print(
                f"BNN {cfg.model.backbone}: {s['train']} train / {s['val']} val / {s['test']} "
                f"test patch pairs (scene-level split), world size {info.world_size}"
            )
        eval_set = splits.val or splits.test
        threshold = 0.5 if cfg.eval.threshold is None else cfg.eval.threshold

        def evaluate(epoch: int) -> dict[str, float]:
            m = evaluate_split(net_model, tensors, eval_set, cfg, info.device, threshold)
            return {
                f"val_{k}": v
                for k, v in m.items()
                if k in ("accuracy", "auc", "retrieval_top1", "best_threshold")
            }

        plan = EpochPlan(
            batches=lambda epoch: epoch_batches(cfg, splits, tensors, epoch, info),
            step=lambda batch: bnn_step(net, batch, cfg, info),
            batch_items=lambda batch: len(batch.sar),
            evaluate=evaluate,
            steps_per_epoch=len(splits.train) // o.batch_size,
        )
        return Job(
            net=net,
            optimizer=optimizer,
            scheduler=scheduler,
            epochs=o.epochs,
            plan=plan,
            best_metric="val_auc",
            lineage=[lineage_step("train", cfg.name, None, config_hash(cfg))],
            summary=splits.summary,
            context={"model": net_model, "splits": splits, "tensors": tensors},
        )

    def finish(job: Job, best: dict, info: DistInfo) -> dict:
        # the best checkpoint, its threshold chosen on validation, its metrics on test
        net_model, splits, tensors = (job.context[k] for k in ("model", "splits", "tensors"))
        net_model.load_state_dict(best["model"])
        val = (
            evaluate_split(net_model, tensors, splits.val, cfg, info.device, 0.5)
            if splits.val
            else None
        )
        threshold = (
            cfg.eval.threshold
            if cfg.eval.threshold is not None
            else (val["best_threshold"] if val else 0.5)
        )
        test = evaluate_split(net_model, tensors, splits.test, cfg, info.device, threshold)
        test_at_half = matching_metrics(
            *pair_distances(
                *embed_patches(net_model, tensors, splits.test, info.device), cfg.eval.seed
            ),
            0.5,
        )
        report = {
            "threshold": threshold,
            "threshold_source": "config"
            if cfg.eval.threshold is not None
            else ("validation" if val else "default 0.5"),
            "best_epoch": int(best["epoch"]) + 1,
            "val": val,
            "test": test,
            "test_at_0.5": test_at_half,
            "patches": splits.summary["patches"],
        }
        if info.is_main:
            t = report["test"]
            print(
                f"test (threshold {threshold:.3f} from {report['threshold_source']}): accuracy "
                f"{t['accuracy']:.3f}, precision {t['precision']:.3f}, recall {t['recall']:.3f}, "
                f"AUC {t['auc']:.3f}, retrieval top-1 {t['retrieval_top1']:.3f} / top-5 "
                f"{t['retrieval_top5']:.3f} of {t['retrieval_candidates']}"
            )
        return report

    return run_recipe("bnn", cfg, runs_dir, resume, progress, prepare, finish)


def export_sar_backbone(
    run: str | Path, out: str | Path | None = None, which: str = "best"
) -> Path:
    """Write a BNN's SAR backbone weights in the form the detectors load; ``run`` is a BNN run
    folder, checkpoint or ``zoo:<name>`` (then ``out`` is required)."""
    from sarbridge.runtime.errors import SarbridgeError
    from sarbridge.runtime.zoo import is_zoo_ref
    from sarbridge.train.checkpoint import load_model
    from sarbridge.train.models.backbones import save_backbone_weights

    loaded = load_model(run, which="last" if which == "last" else "best")
    if loaded.task != "bnn":
        raise SarbridgeError(f"{run}: holds a {loaded.task} model, not a BNN")
    if out is None:
        if is_zoo_ref(str(run)) or not Path(run).is_dir():
            raise SarbridgeError(f"{run}: give --out for the backbone file")
        out = Path(run) / "sar_backbone.pt"
    return save_backbone_weights(
        loaded.model.sar.backbone,
        out,
        source="bnn",
        run=str(run),
        epoch=int(loaded.checkpoint.get("epoch", -1)) + 1,
        config_sha256=config_hash(loaded.config),
    )
