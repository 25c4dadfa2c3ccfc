"""Training and evaluating SAR ship detectors on SSDD-style data.

Images go through the runtime's preprocessing, are letterboxed to the input
size and augmented with flips, rot90 and scale jitter (no colour jitter: SAR
intensities carry meaning), optionally as 4-image mosaics and at a random input
side per batch (multi-scale). Large scenes (``data.tile_size``) are trained on
tiles cut by the runtime's tiler and evaluated whole, through the deployed
tiling and cross-tile merge. The official train split is split again (seeded)
into train and a validation share that picks the best checkpoint by AP50:95
(``data.val_fraction: 0`` trains on the whole train split and keeps the last
epoch, for a schedule already fixed on validation); the test split is scored
once, at the end, through the same numpy decode the deployed model uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from sarbridge.runtime.errors import SarbridgeError
from sarbridge.runtime.preprocess import SarPreprocess
from sarbridge.train.checkpoint import (
    deployed_weights,
    lineage_list,
    lineage_step,
    load_model,
    parent_ref,
    run_record,
)
from sarbridge.train.config import config_hash
from sarbridge.train.data.augment import epoch_batches
from sarbridge.train.data.detection import make_sets, training_set_anchors
from sarbridge.train.engine import (
    DistInfo,
    EpochPlan,
    ModelEMA,
    WeightAverage,
    autocast_dtype,
    make_optimizer,
    mean_batchnorm_over_ranks,
    warmup_schedule,
    wrap_ddp,
)
from sarbridge.train.evaluation import evaluate
from sarbridge.train.recipes.common import Job, run_recipe

# ---------------------------------------------------------------- config


@dataclass(frozen=True)
class DetData:
    root: str = "SSDD"
    train_split: str = "train"
    test_split: str = "test"
    val_fraction: float = 0.1  # of the train split, for checkpoint selection (0: none, last epoch)
    split_seed: int = 0
    input_size: int = 512
    preprocess: dict = field(default_factory=lambda: SarPreprocess().to_dict())
    max_train_images: int | None = None  # a subset for quick runs
    # large scenes (AIR-SARShip style): train on tiles cut by the runtime's tiler, evaluate whole
    # scenes through the deployed tiling and cross-tile merge; None: one image = one input
    tile_size: int | None = None
    tile_overlap: float = 0.5


@dataclass(frozen=True)
class DetAugment:
    flip: bool = True
    rot90: bool = True
    scale_min: float = 0.6
    scale_max: float = 1.2
    mosaic: float = 0.0  # probability that a training sample is a 4-image mosaic
    close_mosaic: int = 0  # last epochs trained without mosaic (the deployed view: one image)
    # (lo, hi): each batch's side a random multiple of 32 in [lo, hi] x data.input_size
    multi_scale: tuple[float, ...] | None = None


@dataclass(frozen=True)
class DetModel:
    name: str = "edge_det"
    backbone: str = "edge"
    width: int = 64
    anchors: str = "kmeans"  # anchor-based detectors: "kmeans" on the training set, or "default"
    box_weight: float | None = None  # anchor-free detectors: box (GIoU) loss weight; None: 2.0
    # edge detector's box regression: 0 one log-distance per side; R > 0 a distribution over R
    # bins per side trained with distribution focal loss (exported as log-distances all the same)
    box_bins: int = 0


@dataclass(frozen=True)
class DetOptim:
    name: str = "adamw"
    epochs: int = 40
    batch_size: int = 8
    lr: float = 0.002
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup_steps: int = 200
    # "cosine", "step", or "cyclic" (the cosine decay restarted every epoch, for swa_epochs)
    schedule: str = "cosine"
    milestones: tuple[float, ...] = (0.7, 0.9)  # step schedule: fractions of training
    # stochastic weight averaging: the model kept is the mean of the trained weights at the end
    # of each of the last swa_epochs epochs (with the "cyclic" schedule: each at the low point of
    # its cycle), its BatchNorm statistics measured again on one pass of the training batches;
    # it replaces the EMA and the best-epoch choice. 0: off
    ema: bool = True
    ema_decay: float = 0.999
    # the EMA's decay ramps up as decay * (1 - exp(-step / ema_ramp_steps)); a ramp much longer
    # than the schedule leaves the average at ~0.5 decay, i.e. no averaging at all
    ema_ramp_steps: int = 200
    # mixed precision of the training step: "auto" (bfloat16 on CUDA, float32 elsewhere),
    # "bf16" (bfloat16 autocast on any device; fast on a CPU with AVX512-BF16 or AMX, emulated
    # and slow on one without, benchmarks/results/det_edge_full_train), "fp32" (or "off":
    # float32 steps). Evaluation always runs in float32, as the exported model does.
    amp: str = "auto"
    # channels-last memory layout for model and batches: the same numbers up to float rounding,
    # faster convolutions on the CPU (measured in benchmarks/results/det_edge_long)
    channels_last: bool = True
    swa_epochs: int = 0

    def __post_init__(self):
        from sarbridge.train.config import ConfigError
        from sarbridge.train.engine import SCHEDULES

        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"optim.schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}"
            )
        if not 0 <= self.swa_epochs <= self.epochs:
            raise ConfigError(
                f"optim.swa_epochs must be between 0 and optim.epochs ({self.epochs}), "
                f"not {self.swa_epochs}"
            )


@dataclass(frozen=True)
class DetEval:
    score_threshold: float = 0.001  # for AP: keep low-score detections
    operating_threshold: float = 0.3  # precision/recall are reported here
    iou_threshold: float = 0.5
    # box voting after NMS: kept boxes become the score-weighted mean of the candidates that
    # overlap them by this IoU (runtime.boxes.box_vote); None: plain NMS
    vote_iou: float | None = None
    # test-time flips merged with the plain view before NMS ("h", "v", "hv";
    # runtime.decode.decode_views): one more network run per flip; () for none
    tta_flips: tuple[str, ...] = ()
    max_detections: int = 300
    every: int = 1

    def __post_init__(self):
        from sarbridge.runtime.decode import parse_flips
        from sarbridge.train.config import ConfigError

        try:
            parse_flips(self.tta_flips)
        except ValueError as exc:
            raise ConfigError(f"eval.tta_flips: {exc}") from None


@dataclass(frozen=True)
class DetDistill:
    """Knowledge distillation from a teacher detector (train/losses/distill.py); edge detectors."""

    teacher: str | None = None  # a detector run folder, checkpoint or zoo:<name>; None: off
    cls_weight: float = 1.0  # the teacher's class probabilities as soft targets
    box_weight: float = 1.0  # localization distillation of the DFL box distributions
    feature_weight: float = 1.0  # PKD on the neck levels through 1x1 adapters
    temperature: float = 2.0  # of the box distributions
    # flips ("h", "v", "hv") the teacher also sees each batch under; its targets are averaged
    # over the views (train/losses/distill.py flip_ensemble); () for the plain view only
    teacher_flips: tuple[str, ...] = ()

    def __post_init__(self):
        from sarbridge.runtime.decode import parse_flips
        from sarbridge.train.config import ConfigError

        for key in ("cls_weight", "box_weight", "feature_weight"):
            if getattr(self, key) < 0:
                raise ConfigError(f"distill.{key} must be at least 0, not {getattr(self, key)}")
        if self.temperature <= 0:
            raise ConfigError(f"distill.temperature must be above 0, not {self.temperature}")
        try:
            flips = parse_flips(self.teacher_flips)
        except ValueError as exc:
            raise ConfigError(f"distill.teacher_flips: {exc}") from None
        if flips and self.teacher is None:
            raise ConfigError("distill.teacher_flips needs distill.teacher (the teacher's views)")


@dataclass(frozen=True)
class DetConfig:
    name: str = "det_edge"
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    # "random" | "bnn:<run dir>" | "imagenet:<file>" | "file:<backbone .pt>"
    # | "det:<detector run dir>" (every weight, not just the backbone: a further schedule)
    # | "zoo:<name>" (a zoo detector: every weight; a zoo BNN: its SAR backbone)
    init: str = "random"
    data: DetData = DetData()
    augment: DetAugment = DetAugment()
    model: DetModel = DetModel()
    optim: DetOptim = DetOptim()
    eval: DetEval = DetEval()
    distill: DetDistill = DetDistill()


# ---------------------------------------------------------------- models


def model_from_config(cfg: DetConfig, num_classes: int) -> torch.nn.Module:
    """The detector ``cfg.model`` describes, at ``cfg.data.input_size``: the one place a
    detector is built from a config (recipes and :func:`~sarbridge.train.checkpoint.load_model`)."""
    from sarbridge.train.models.registry import build_detector

    extra = {}
    if cfg.model.box_bins:
        if cfg.model.name != "edge_det":
            raise SarbridgeError(
                f"model.box_bins applies to the edge detector (edge_det) only, not {cfg.model.name}"
            )
        if cfg.model.box_bins < 2:
            raise SarbridgeError(
                f"model.box_bins must be 0 (log-distance boxes) or at least 2, not {cfg.model.box_bins}"
            )
        extra["box_bins"] = cfg.model.box_bins
    return build_detector(
        cfg.model.name,
        num_classes=num_classes,
        backbone=cfg.model.backbone,
        width=cfg.model.width,
        input_size=cfg.data.input_size,
        **extra,
    )


def _same_detector(cfg: DetConfig, classes: list[str], loaded, where) -> None:
    """A whole-detector start must hold the detector this run trains."""
    parent = loaded.config
    mine = (cfg.model.name, cfg.model.backbone, cfg.model.width, list(classes), cfg.model.box_bins)
    theirs = (
        parent.model.name,
        parent.model.backbone,
        parent.model.width,
        list(loaded.classes),
        parent.model.box_bins,
    )
    if mine != theirs:
        raise SarbridgeError(
            f"{where}: holds detector {theirs[0]} (backbone {theirs[1]}, width {theirs[2]}, "
            f"classes {theirs[3]}, box bins {theirs[4]}), this run builds {mine[0]} (backbone "
            f"{mine[1]}, width {mine[2]}, classes {mine[3]}, box bins {mine[4]})"
        )


def initialise(
    model: torch.nn.Module, cfg: DetConfig, classes: list[str]
) -> tuple[list[dict], dict]:
    """Apply ``cfg.init`` to ``model``. Returns the parent's lineage steps (empty for a start
    from scratch or from a file) and what this run's own step records of its start
    (``parent``: name and sha256 of the weights it started from, ``init``: the kind)."""
    from sarbridge.runtime.zoo import is_zoo_ref
    from sarbridge.train.models.backbones import load_backbone_weights, load_imagenet_weights

    kind, _, arg = cfg.init.partition(":")
    if kind == "random":
        return [], {"init": "random", "parent": None}
    if kind == "imagenet":
        missing = load_imagenet_weights(model.backbone, arg)
        return [], {
            "init": "imagenet",
            "parent": parent_ref(Path(arg).name, arg),
            "missing_keys": len(missing),
        }
    if kind == "file":
        load_backbone_weights(model.backbone, arg)
        return [], {"init": "file", "parent": parent_ref(Path(arg).name, arg)}
    if kind in ("det", "zoo"):
        source = cfg.init if is_zoo_ref(cfg.init) else arg
        loaded = load_model(source)  # a zoo file's sha256 is checked once, here
        path = loaded.path
        if loaded.task == "bnn":  # a released BNN: its SAR branch starts the backbone
            model.backbone.load_state_dict(loaded.model.sar.backbone.state_dict())
            return loaded.lineage, {"init": "zoo_bnn", "parent": parent_ref(loaded.name, path)}
        _same_detector(cfg, classes, loaded, source)
        if _structure_changed(model, loaded.model):
            raise SarbridgeError(
                f"{source}: its structure differs from model.* (a pruned detector): a compression "
                "step hands such a model to the trainer; --init starts from the config's structure"
            )
        model.load_state_dict(loaded.model.state_dict())
        return loaded.lineage, {"init": "det", "parent": parent_ref(loaded.name, path)}
    if kind == "bnn":
        from sarbridge.train.recipes.bnn import export_sar_backbone

        run = Path(arg)
        path = run / "sar_backbone.pt"
        if not path.is_file():
            export_sar_backbone(run, path)
        meta = load_backbone_weights(model.backbone, path)
        parent_run = lineage_list(
            run_record(run).get("lineage"), run.name, meta.get("config_sha256")
        )
        return parent_run, {"init": "bnn", "parent": parent_ref(run.name, path)}
    raise SarbridgeError(
        f"unknown init {cfg.init!r}: use random, bnn:<run dir>, imagenet:<file>, "
        "file:<backbone .pt>, det:<detector run dir> or zoo:<name>"
    )


def load_teacher(cfg: DetConfig, student: torch.nn.Module, classes: list[str]):
    """The distiller of ``cfg.distill`` for ``student`` and what the lineage records of its
    teacher; (None, None) without a teacher.

    Raises:
        SarbridgeError: the teacher is not a detector, detects other classes, or is no edge
            detector (train/losses/distill.py names what differs).
    """
    from sarbridge.train.losses.distill import Distiller

    d = cfg.distill
    if d.teacher is None:
        return None, None
    loaded = load_model(d.teacher)
    if loaded.task != "detect":
        raise SarbridgeError(
            f"distill.teacher {d.teacher}: holds a {loaded.task} model, not a detector"
        )
    if list(loaded.classes) != list(classes):
        raise SarbridgeError(
            f"distill.teacher {d.teacher}: detects {loaded.classes}, the student {list(classes)}"
            ": a teacher must share the student's class set"
        )
    if d.teacher_flips and cfg.data.input_size % max(loaded.model.strides):
        raise SarbridgeError(
            f"distill.teacher_flips: the training input ({cfg.data.input_size} px) must be a "
            f"multiple of the largest stride ({max(loaded.model.strides)}) for a flipped view's "
            "grid to map onto the plain one"
        )
    distiller = Distiller(
        loaded.model, student, cfg.data.input_size, d.cls_weight, d.box_weight,
        d.feature_weight, d.temperature, d.teacher_flips,
    )  # fmt: skip
    ref = {**parent_ref(loaded.name, loaded.path), "source": str(d.teacher)}
    if d.teacher_flips:
        ref["flips"] = list(d.teacher_flips)
    return distiller, ref


def _structure_changed(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    shapes = {k: v.shape for k, v in a.state_dict().items()}
    return any(shapes.get(k) != v.shape for k, v in b.state_dict().items())


# ---------------------------------------------------------------- run


def train_detector(
    cfg: DetConfig,
    runs_dir: str | Path = "runs",
    resume: bool = False,
    progress: bool = True,
    model: torch.nn.Module | None = None,
    lineage: list[dict] | None = None,
    parent: dict | None = None,
) -> dict:
    """Train a detector; return the final report (also in run.json).

    Args:
        cfg: the resolved config.
        model: a ready model to train (a pruned or otherwise changed detector handed in by a
            compression step); None builds ``cfg.model`` and applies ``cfg.init``.
        lineage: the steps that made ``model`` (with ``model`` only).
        parent: ``{"name", "sha256"}`` of the file ``model`` was loaded from as it is (with
            ``model`` only; None when it was changed in memory, e.g. pruned).
    """
    from sarbridge.train.losses import detector_loss

    def prepare(run_dir: Path, info: DistInfo) -> Job:
        train, val, test, classes, summary = make_sets(cfg.data)
        net_model = model
        if net_model is None:
            net_model = model_from_config(cfg, len(classes))
            parent_steps, start = initialise(net_model, cfg, list(classes))
        else:
            parent_steps, start = list(lineage or []), {"init": "model", "parent": parent}
            if parent_steps and parent is None:  # made in memory: no file to hash
                start["after"] = parent_steps[-1]["name"]
        continued = start["init"] in ("det", "model")  # a trained detector: anchors come with it
        if hasattr(net_model, "set_anchors") and cfg.model.anchors == "kmeans" and not continued:
            anchors = training_set_anchors(train, cfg.data.input_size)
            net_model.set_anchors(anchors)
            start["anchors"] = [[round(float(v), 1) for v in a] for a in anchors]
            if info.is_main:
                print("anchors (k-means on the training boxes):", start["anchors"])
        distiller, teacher_ref = load_teacher(cfg, net_model, list(classes))
        if distiller is not None:
            start["teacher"] = teacher_ref
        own = lineage_step(
            "distill" if distiller else "train", cfg.name, start.pop("parent", None),
            config_hash(cfg), **start,
        )  # fmt: skip
        net_model.to(info.device)
        o = cfg.optim
        layout = torch.channels_last if o.channels_last else torch.contiguous_format
        net_model.to(memory_format=layout)
        amp_dtype = autocast_dtype(o.amp, info.device, warn=info.is_main)
        net = wrap_ddp(net_model, info)
        params = list(net.parameters())
        if distiller is not None:
            distiller.to(info.device)
            distiller.teacher_model.to(info.device).to(memory_format=layout)
            params += list(distiller.adapters.parameters())  # trained beside the student
        optimizer = make_optimizer(params, o.name, o.lr, o.weight_decay, o.momentum)
        steps_per_epoch = len(train.records) // o.batch_size
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            warmup_schedule(
                steps_per_epoch * o.epochs, o.warmup_steps, o.schedule, o.milestones,
                cycle_steps=steps_per_epoch,
            ),
        )  # fmt: skip
        # weight averaging replaces the EMA: none is kept beside it
        ema = ModelEMA(net_model, o.ema_decay, o.ema_ramp_steps) if o.ema and not o.swa_epochs else None
        eval_model = (lambda: ema.module) if ema else (lambda: net_model)  # noqa: E731
        swa = WeightAverage() if o.swa_epochs else None

        def add_to_average(epoch: int) -> None:
            if epoch >= o.epochs - o.swa_epochs:
                swa.add(net_model)

        def get_state() -> dict:
            state = {}
            if ema:
                state |= {"ema": ema.module.state_dict(), "ema_updates": ema.updates}
            if distiller is not None:
                state["distill_adapters"] = distiller.adapters.state_dict()
            if swa is not None:
                state["swa"] = swa.state_dict()
            return state

        def set_state(state: dict) -> None:
            if ema:
                ema.module.load_state_dict(state["ema"])
                ema.updates = int(state["ema_updates"])
            if distiller is not None:
                distiller.adapters.load_state_dict(state["distill_adapters"])
            if swa is not None:
                swa.load_state_dict(state["swa"])

        extra_state = (
            (get_state, set_state) if ema or distiller is not None or swa is not None else None
        )
        if info.is_main:
            n_params = sum(p.numel() for p in net_model.parameters())
            print(
                f"{cfg.model.name} ({n_params / 1e6:.2f} M parameters), init {start['init']}: "
                f"{summary['images']['train']} train / {summary['images']['val']} val / "
                f"{summary['images']['test']} test images"
            )
            if distiller is not None:
                print(f"distilled from {cfg.distill.teacher}: {distiller.describe()}")
            if swa is not None:
                print(
                    f"weight averaging: the model kept is the mean of the weights after each of "
                    f"the last {o.swa_epochs} epochs (schedule {o.schedule})"
                )
            elif not len(val.records):
                print(
                    f"no validation images (data.val_fraction {cfg.data.val_fraction:g}): "
                    "the last epoch is the one kept"
                )

        def step(batch):
            x, targets = batch
            x = x.contiguous(memory_format=layout)
            with torch.autocast(
                info.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
            ):
                if distiller is not None:
                    return distiller.loss(net, x, targets, x.shape[-1], cfg.model.box_weight)
                return detector_loss(net, x, targets, x.shape[-1], box_weight=cfg.model.box_weight)

        def evaluate_epoch(epoch: int) -> dict[str, float]:
            if (epoch + 1) % cfg.eval.every and epoch + 1 != o.epochs:
                return {}
            m = evaluate(eval_model(), val, cfg, info.device, classes)
            return {"val_AP50": m["AP50"], "val_AP50_95": m["AP50_95"]}

        plan = EpochPlan(
            batches=lambda epoch: epoch_batches(cfg, train, epoch, info, info.device),
            step=step,
            batch_items=lambda batch: len(batch[0]),
            # with weight averaging the average is kept, not a best epoch
            evaluate=evaluate_epoch if len(val.records) and swa is None else None,
            steps_per_epoch=steps_per_epoch,
        )
        return Job(
            net=net,
            optimizer=optimizer,
            scheduler=scheduler,
            epochs=o.epochs,
            plan=plan,
            best_metric="val_AP50_95",
            lineage=[*parent_steps, own],
            summary=summary,
            extra={"classes": list(classes)},
            extra_state=extra_state,
            after_step=(lambda: ema.update(net)) if ema else None,
            after_epoch=add_to_average if swa is not None else None,
            scheduler_per_step=True,
            context={
                "model": net_model, "train": train, "test": test, "classes": classes,
                "summary": summary, "swa": swa,
            },
        )  # fmt: skip

    def finish(job: Job, best: dict, info: DistInfo) -> dict:
        # the best weights in the trained module, laid out as load_model gives them (contiguous)
        final_model = job.context["model"].to(memory_format=torch.contiguous_format)
        final_model.load_state_dict(deployed_weights(best))
        swa = job.context["swa"]
        if swa is not None:
            # the kept checkpoint becomes the average (run_recipe writes ``best`` back)
            averaged = average_with_bn(final_model, swa, job.context["train"], info)
            best["model"] = averaged
            best.pop("ema", None)
            best.pop("swa", None)  # the running sums stay in checkpoint.pt (resume reads them)
            best["swa_snapshots"] = swa.count
        test_metrics = evaluate(final_model, job.context["test"], cfg, info.device, job.context["classes"])
        if info.is_main:
            t, n = test_metrics, job.context["summary"]["images"]["test"]
            print(
                f"test ({n} images): AP50 {t['AP50']:.4f}, AP50:95 {t['AP50_95']:.4f}, "
                f"AP small {t['AP_small']:.4f}, precision {t['precision']:.3f} / recall "
                f"{t['recall']:.3f} at score {cfg.eval.operating_threshold}"
            )
        return {
            **({"swa_snapshots": swa.count} if swa is not None else {}),
            "best_epoch": int(best["epoch"]) + 1,
            "test": test_metrics,
            "parameters": sum(p.numel() for p in final_model.parameters()),
        }

    def average_with_bn(model, swa: WeightAverage, train, info: DistInfo) -> dict:
        """``model`` loaded with the average of ``swa``, its BatchNorm statistics measured on one
        pass of the training batches (augmented as in the last epoch); the state dict."""
        from torch.optim.swa_utils import update_bn

        model.load_state_dict(swa.average(model.state_dict()))
        batches = (x for x, _ in epoch_batches(cfg, train, cfg.optim.epochs - 1, info, info.device))
        with torch.no_grad():
            update_bn(batches, model)
            mean_batchnorm_over_ranks(model, info)  # each rank saw its share of the batches
        model.eval()
        if info.is_main:
            print(
                f"weight average of {swa.count} snapshots; BatchNorm statistics measured on "
                "one pass of the training batches"
            )
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    return run_recipe("detect", cfg, runs_dir, resume, progress, prepare, finish)
