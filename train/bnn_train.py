"""BNN pretraining on real optical/SAR pairs: data, sampling, evaluation, the training run.

Splits are made over scenes, per data root (each root keeps scenes in test),
then cut into aligned patches. Negatives are SAR patch i with optical patch
j != i drawn fresh each epoch from the global batch (a derangement), and
optionally hard negatives: another patch of the same scene.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sarbridge.runtime.errors import SarbridgeError
from sarbridge.runtime.metrics import best_threshold, matching_metrics, roc_auc
from sarbridge.runtime.pairs import (
    PairLoader,
    PatchPair,
    ScenePair,
    cut_patches,
    find_scene_pairs,
    split_by_scene,
)
from sarbridge.runtime.paths import resolve_data_path
from sarbridge.runtime.preprocess import SarPreprocess, clip_range, preprocess
from sarbridge.train.bnn import BridgeNet, bnn_distance, bnn_loss, derangement
from sarbridge.train.config import config_hash, to_dict
from sarbridge.train.engine import (
    DistInfo,
    EpochPlan,
    Trainer,
    all_gather_with_grad,
    cleanup_distributed,
    load_checkpoint,
    make_optimizer,
    record_final,
    setup_distributed,
    shard,
    start_run,
    wrap_ddp,
)

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
            raise ValueError("batch_size must be at least 2 (negatives come from the batch)")
        if not 0 < self.data.train_fraction <= 1:
            raise ValueError("data.train_fraction must be in (0, 1]")


# ---------------------------------------------------------------- data


@dataclass
class PairSplits:
    train: list[PatchPair]
    val: list[PatchPair]
    test: list[PatchPair]
    summary: dict


def readable_scenes(
    scenes: list[ScenePair], params: SarPreprocess
) -> tuple[list[ScenePair], list[str]]:
    """The scene pairs whose two images decode (and whose SAR image has valid pixels), and a
    line for each one left out: a truncated or corrupt file is found before training, not
    when its first patch is drawn hours in."""
    loader = PairLoader(max_scenes=1)
    kept, bad = [], []
    for scene in scenes:
        try:
            sar, _ = loader.scene(scene)
            clip_range(sar, params, scene.sar_path)
        except SarbridgeError as exc:
            bad.append(f"left out, unreadable: {scene.scene_id}: {exc}")
            continue
        kept.append(scene)
    return kept, bad


def make_splits(cfg: BNNConfig, run_dir: Path | None = None) -> PairSplits:
    """Scene-level train/val/test splits per root, cut into patches. Scenes that cannot be
    read are left out after splitting (the other scenes keep their splits) and reported."""
    d = cfg.data
    train_s: list[ScenePair] = []
    val_s: list[ScenePair] = []
    test_s: list[ScenePair] = []
    summary: dict = {"roots": {}, "problems": []}
    params = SarPreprocess.from_dict(d.sar_preprocess)
    for root in d.roots:
        scenes, problems = find_scene_pairs(resolve_data_path(root))
        rest, test = split_by_scene(scenes, d.test_fraction, seed=d.split_seed)
        val_share = d.val_fraction / (1 - d.test_fraction)
        if len(rest) >= 2 and d.val_fraction > 0:
            tr, va = split_by_scene(rest, val_share, seed=d.split_seed + 1)
        else:
            tr, va = rest, []
        (tr, bad_tr), (va, bad_va), (test, bad_te) = (
            readable_scenes(part, params) for part in (tr, va, test)
        )
        problems = [str(p) for p in problems] + bad_tr + bad_va + bad_te
        for line in problems:
            print(f"{root}: {line}")
        summary["problems"] += problems
        train_s += tr
        val_s += va
        test_s += test
        summary["roots"][root] = {"scenes": {"train": len(tr), "val": len(va), "test": len(test)}}
    if d.synthetic_scenes:
        from sarbridge.runtime.datatools import write_synthetic

        syn_dir = (run_dir or Path("runs") / cfg.name) / "synthetic_pairs"
        if not (syn_dir / "annotations.json").is_file():
            write_synthetic(
                syn_dir, d.synthetic_scenes, size=512, seed=10_000, bits=16, progress=False
            )
        syn, _ = find_scene_pairs(syn_dir)
        train_s += syn
        summary["synthetic_scenes_in_train"] = len(syn)
    cut = lambda s: cut_patches(s, d.patch_size, d.stride)  # noqa: E731
    train, val, test = cut(train_s), cut(val_s), cut(test_s)
    if d.train_fraction < 1:
        rng = np.random.default_rng(d.split_seed + 7)
        keep = sorted(
            rng.choice(len(train), max(2, int(round(len(train) * d.train_fraction))), replace=False)
        )
        train = [train[i] for i in keep]
    if len(train) < cfg.optim.batch_size:
        raise ValueError(
            f"only {len(train)} training patches for a batch of {cfg.optim.batch_size}"
        )
    summary["patches"] = {"train": len(train), "val": len(val), "test": len(test)}
    summary["test_scenes"] = sorted(s.scene_id for s in test_s)
    summary["val_scenes"] = sorted(s.scene_id for s in val_s)
    return PairSplits(train, val, test, summary)


class PatchTensors:
    """Loads aligned patch pairs as network input through the runtime's preprocessing."""

    def __init__(self, cfg: BNNConfig):
        self.params = SarPreprocess.from_dict(cfg.data.sar_preprocess)
        self.input_size = cfg.data.input_size
        self.loader = PairLoader(max_scenes=128)
        self._clip: dict[str, tuple[float, float]] = {}

    def _lo_hi(self, scene: ScenePair, sar: np.ndarray) -> tuple[float, float]:
        if scene.scene_id not in self._clip:  # scene-wide, as in deployment
            self._clip[scene.scene_id] = clip_range(
                self.loader.scene(scene)[0], self.params, scene.sar_path
            )
        return self._clip[scene.scene_id]

    def load(
        self, patch: PatchPair, rot: int = 0, flip: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        sar, opt = self.loader.load(patch)
        s = preprocess(
            sar, self.params, self._lo_hi(patch.scene, sar), patch.scene.sar_path
        )  # [C, H, W]
        o = np.moveaxis(opt, -1, 0).astype(np.float32) * np.float32(1 / 255)  # [3, H, W]
        if rot:
            s, o = np.rot90(s, rot, axes=(1, 2)), np.rot90(o, rot, axes=(1, 2))
        if flip:
            s, o = s[:, :, ::-1], o[:, :, ::-1]
        return np.ascontiguousarray(s), np.ascontiguousarray(o)

    def batch(
        self, patches: list[PatchPair], augs: list[tuple[int, bool]] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        augs = augs or [(0, False)] * len(patches)
        pairs = [self.load(p, r, f) for p, (r, f) in zip(patches, augs, strict=True)]
        sar = torch.from_numpy(np.stack([p[0] for p in pairs]))  # [B, 1, P, P]
        opt = torch.from_numpy(np.stack([p[1] for p in pairs]))  # [B, 3, P, P]
        if sar.shape[-1] != self.input_size:
            sar = F.interpolate(sar, size=self.input_size, mode="area")
            opt = F.interpolate(opt, size=self.input_size, mode="area")
        return sar, opt


@dataclass
class BNNBatch:
    sar: torch.Tensor  # [b, 1, S, S] this process's positives
    opt: torch.Tensor  # [b, 3, S, S]
    negatives: list[list[int]]  # derangements over the GLOBAL batch
    hard_opt: (
        torch.Tensor | None
    )  # [b_h, 3, S, S] same-scene optical for this process's first items
    global_size: int


def epoch_batches(
    cfg: BNNConfig, splits: PairSplits, tensors: PatchTensors, epoch: int, info: DistInfo
):
    """Global batches for ``epoch`` (a function of seed and epoch only); yields this process's share."""
    rng = np.random.default_rng([cfg.seed, epoch])
    train = splits.train
    order = rng.permutation(len(train))
    B = cfg.optim.batch_size
    by_scene: dict[str, list[int]] = {}
    for k, p in enumerate(train):
        by_scene.setdefault(p.scene.scene_id, []).append(k)
    for start in range(0, len(order) - B + 1, B):  # drop the last partial batch
        idx = order[start : start + B].tolist()
        augs = [
            (int(rng.integers(4)), bool(rng.random() < 0.5)) if cfg.augment else (0, False)
            for _ in idx
        ]
        negs = [derangement(B, rng) for _ in range(cfg.loss.negatives_per_positive)]
        n_hard = int(round(cfg.loss.hard_negative_fraction * B))
        hard = []
        for i in idx[:n_hard]:
            same = [k for k in by_scene[train[i].scene.scene_id] if k != i]
            hard.append(
                int(rng.choice(same))
                if same
                else int(rng.choice([k for k in range(len(train)) if k != i]))
            )
        local = shard(list(range(B)), info)
        sar, opt = tensors.batch([train[idx[k]] for k in local], [augs[k] for k in local])
        local_hard = [k for k in local if k < n_hard]
        hard_opt = None
        if local_hard:
            _, hard_opt = tensors.batch(
                [train[hard[k]] for k in local_hard], [augs[k] for k in local_hard]
            )
        yield BNNBatch(sar, opt, negs, hard_opt, B)


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
    cfg: BNNConfig, runs_dir: str | Path = "runs", resume: bool = False, progress: bool = True
) -> dict:
    """Train a BNN; return the final report (also in run.json)."""
    info = setup_distributed(cfg.device)
    try:
        return _train(cfg, Path(runs_dir) / cfg.name, resume, progress, info)
    finally:
        cleanup_distributed()


def _train(cfg: BNNConfig, run_dir: Path, resume: bool, progress: bool, info: DistInfo) -> dict:
    start_run(run_dir, resume, cfg.seed, cfg.threads)
    splits = make_splits(cfg, run_dir)
    tensors = PatchTensors(cfg)
    model = build_model(cfg).to(info.device)
    if info.distributed and not cfg.model.freeze_bn:
        if info.device.type == "cuda":  # batch statistics over all GPUs
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif info.is_main:
            print(
                "note: SyncBatchNorm needs GPUs; on CPU each process normalises its own share of the batch"
            )
    net = wrap_ddp(model, info)
    o = cfg.optim
    optimizer = make_optimizer(net.parameters(), o.name, o.lr, o.weight_decay, o.momentum)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(o.milestones), o.gamma)
    config = to_dict(cfg)
    trainer = Trainer(
        run_dir, net, optimizer, scheduler, o.epochs, config, "val_auc", info, progress=progress
    )
    if resume and trainer.resume() and info.is_main:
        print(f"resumed {run_dir} at epoch {trainer.start_epoch + 1}/{o.epochs}")
    if info.is_main:
        s = splits.summary["patches"]
        print(
            f"BNN {cfg.model.backbone}: {s['train']} train / {s['val']} val / {s['test']} test patch pairs "
            f"(scene-level split), world size {info.world_size}"
        )
    eval_set = splits.val or splits.test

    def evaluate(epoch: int) -> dict[str, float]:
        m = evaluate_split(model, tensors, eval_set, cfg, info.device, cfg.eval.threshold or 0.5)
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
    trainer.fit(plan, splits.summary | {"config_sha256": config_hash(cfg)})

    # final: the best checkpoint, threshold chosen on validation, metrics on test
    best = load_checkpoint(run_dir / "best.pt") if (run_dir / "best.pt").is_file() else None
    if best is not None:
        model.load_state_dict(best["model"])
    val = evaluate_split(model, tensors, splits.val, cfg, info.device, 0.5) if splits.val else None
    threshold = (
        cfg.eval.threshold
        if cfg.eval.threshold is not None
        else (val["best_threshold"] if val else 0.5)
    )
    test = evaluate_split(model, tensors, splits.test, cfg, info.device, threshold)
    test_at_half = matching_metrics(
        *pair_distances(*embed_patches(model, tensors, splits.test, info.device), cfg.eval.seed),
        0.5,
    )
    report = {
        "threshold": threshold,
        "threshold_source": "config"
        if cfg.eval.threshold is not None
        else ("validation" if val else "default 0.5"),
        "best_epoch": int(best["epoch"]) + 1 if best else None,
        "val": val,
        "test": test,
        "test_at_0.5": test_at_half,
        "patches": splits.summary["patches"],
    }
    record_final(run_dir, report, info)
    if info.is_main:
        t = report["test"]
        print(
            f"test (threshold {threshold:.3f} from {report['threshold_source']}): accuracy {t['accuracy']:.3f}, "
            f"precision {t['precision']:.3f}, recall {t['recall']:.3f}, AUC {t['auc']:.3f}, "
            f"retrieval top-1 {t['retrieval_top1']:.3f} / top-5 {t['retrieval_top5']:.3f} of {t['retrieval_candidates']}"
        )
    return report


def export_sar_backbone(
    run: str | Path, out: str | Path | None = None, which: str = "best"
) -> Path:
    """Write the SAR branch's backbone weights in the form the detectors load."""
    from sarbridge.train.backbones import save_backbone_weights
    from sarbridge.train.config import from_dict

    run = Path(run)
    ckpt = load_checkpoint(run / ("best.pt" if which == "best" else "checkpoint.pt"))
    cfg = from_dict(BNNConfig, ckpt["config"])
    model = build_model(
        dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, imagenet_weights=None))
    )
    model.load_state_dict(ckpt["model"])
    out = Path(out) if out else run / "sar_backbone.pt"
    return save_backbone_weights(
        model.sar.backbone,
        out,
        source="bnn",
        run=str(run),
        epoch=int(ckpt["epoch"]) + 1,
        config_sha256=config_hash(cfg),
    )
