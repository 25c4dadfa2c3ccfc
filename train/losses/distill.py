"""Knowledge distillation for the dense anchor-free edge detector: a teacher detector's outputs
and neck features as extra targets for a student (a pruned copy, a narrower detector).

Three terms, each weighted in the config (``distill.*``):

* classification: the teacher's class probabilities as soft targets of the student's logits
  (binary cross-entropy over every grid point, normalised by the teacher's total foreground
  probability, as the detection loss normalises by its soft targets);
* localization distillation (LD, Zheng et al., CVPR 2022): the teacher's DFL box-side
  distributions, softened by a temperature, distilled into the student's with KL divergence,
  weighted per point by the teacher's top class probability (where it sees a ship);
* feature imitation on the three neck levels through 1x1 adapters (student channels -> teacher
  channels): PKD (Cao et al., NeurIPS 2022), mean squared error between features normalised
  per channel to zero mean and unit variance, i.e. one minus their Pearson correlation. It does
  not need the two networks to share an architecture or feature scale.

The teacher runs in eval mode under ``no_grad``, once per batch, on the same augmented images;
with ``teacher_flips`` also on each flipped view of them, and its outputs (class probabilities,
DFL bin logits) are averaged over the views (:func:`flip_ensemble`; the neck features stay the
plain view's): the targets of its test-time flips, at the cost of one teacher pass per flip and
none in the deployed student (self-distillation when the teacher is the student's own parent).
"""

from __future__ import annotations

from contextlib import ExitStack

import torch
import torch.nn.functional as F
from torch import nn

from sarbridge.runtime.decode import FLIP_AXES
from sarbridge.runtime.errors import SarbridgeError
from sarbridge.train.models.layers import input_channels


def _normalise(feat: torch.Tensor) -> torch.Tensor:
    """Per sample and channel: zero mean, unit variance over the positions."""
    mean = feat.mean((2, 3), keepdim=True)
    std = feat.std((2, 3), keepdim=True)
    return (feat - mean) / (std + 1e-6)


def pkd_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """PKD feature loss: 1 - Pearson correlation, as MSE of per-channel normalised features
    (halved as in the paper)."""
    return F.mse_loss(_normalise(student), _normalise(teacher)) / 2


def soft_class_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """BCE of student logits [B, N, C] against the teacher's probabilities, per foreground."""
    target = teacher_logits.sigmoid()
    loss = F.binary_cross_entropy_with_logits(student_logits, target, reduction="sum")
    return loss / target.sum().clamp(min=1.0)


def localization_loss(
    student_bins: torch.Tensor,
    teacher_bins: torch.Tensor,
    weight: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """LD: KL(teacher || student) of the box-side bin distributions [B, N, 4, R] at
    ``temperature``, per point weighted by ``weight`` [B, N]."""
    t = temperature
    log_s = F.log_softmax(student_bins / t, -1)
    p_t = F.softmax(teacher_bins / t, -1)
    kl = (p_t * (torch.log(p_t.clamp(min=1e-12)) - log_s)).sum(-1).mean(-1)  # [B, N]
    return (kl * weight).sum() / weight.sum().clamp(min=1e-6) * t * t


def unflip_raw(
    raw: torch.Tensor, flip: str, image_size: tuple[int, int], strides, box_width: int
) -> torch.Tensor:
    """A dense head's raw output [B, N, box_width + C] for the ``flip`` view of the inputs, in the
    plain view's layout: each level's grid reversed along the flipped axes, and the box sides
    (left, top, right, bottom; 4 log-distances or 4 x R bin logits) swapped left <-> right for
    a mirror left-right, top <-> bottom for one top-bottom. Exact for inputs whose sides the
    strides divide (cell centres at (i + 1/2) * stride map onto each other)."""
    height, width = image_size
    if any(height % s or width % s for s in strides):
        raise ValueError(f"a {height}x{width} input does not divide into strides {tuple(strides)}")
    axes = tuple(a - 1 for a in FLIP_AXES[flip])  # [B, h, w, K]: image axes -2, -1 -> -3, -2
    levels, start = [], 0
    for s in strides:
        h, w = height // s, width // s
        level = raw[:, start : start + h * w].unflatten(1, (h, w))
        levels.append(level.flip(axes).flatten(1, 2))
        start += h * w
    if start != raw.shape[1]:
        raise ValueError(f"{raw.shape[1]} grid points for {start} of a {height}x{width} input")
    out = torch.cat(levels, 1)
    sides = [0, 1, 2, 3]
    if "h" in flip:
        sides[0], sides[2] = 2, 0
    if "v" in flip:
        sides[1], sides[3] = 3, 1
    box = out[..., :box_width].unflatten(-1, (4, box_width // 4))[..., sides, :]
    return torch.cat([box.flatten(-2), out[..., box_width:]], -1)


def flip_ensemble(views: list[torch.Tensor], box_width: int) -> torch.Tensor:
    """Raw outputs of one batch under several views, each in the plain layout, as one: box
    parts (log-distances or bin logits) averaged, class logits replaced by the logit of the
    mean probability."""
    stack = torch.stack(views)
    box = stack[..., :box_width].mean(0)
    prob = stack[..., box_width:].sigmoid().mean(0)
    return torch.cat([box, torch.logit(prob, eps=1e-6)], -1)


class Distiller(nn.Module):
    """The teacher, the feature adapters and the distillation loss of one training run.

    Only the adapters are trained (their parameters go to the optimizer and their state into
    the run's checkpoints); the teacher is frozen.
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        input_size: int,
        cls_weight: float = 1.0,
        box_weight: float = 1.0,
        feature_weight: float = 1.0,
        temperature: float = 2.0,
        teacher_flips: tuple[str, ...] = (),
    ):
        super().__init__()
        check_pair(teacher, student)
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.teacher = [teacher.eval()]  # a list: not a submodule (not saved, not trained)
        self.cls_weight, self.box_weight = cls_weight, box_weight
        self.feature_weight, self.temperature = feature_weight, temperature
        self.teacher_flips = tuple(teacher_flips)
        self.bins = student.box_bins
        self.use_ld = box_weight > 0 and student.box_bins > 0 and teacher.box_bins == student.box_bins
        s_ch = _neck_channels(student, input_size)
        t_ch = _neck_channels(teacher, input_size)
        self.adapters = nn.ModuleList(nn.Conv2d(s, t, 1) for s, t in zip(s_ch, t_ch, strict=True))

    @property
    def teacher_model(self) -> nn.Module:
        return self.teacher[0]

    def describe(self) -> str:
        terms = [f"classes x{self.cls_weight:g}"]
        if self.teacher_flips:
            flips = ",".join(self.teacher_flips)
            terms.insert(0, f"teacher averaged over the plain view and flips {flips}")
        if self.use_ld:
            terms.append(f"box distributions (LD, T={self.temperature:g}) x{self.box_weight:g}")
        elif self.box_weight > 0:
            terms.append("no box distributions (teacher and student differ in DFL bins)")
        if self.feature_weight > 0:
            terms.append(f"neck features (PKD, 1x1 adapters) x{self.feature_weight:g}")
        return ", ".join(terms)

    def loss(self, net: nn.Module, images: torch.Tensor, targets: list[dict], input_size: int,
             box_weight: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
        """(detection loss + distillation terms, logs) of one batch for the student ``net``."""
        from sarbridge.train.losses.edge_det import detection_loss
        from sarbridge.train.models.edge_det import box_distributions, neck_features

        inner = net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net
        teacher = self.teacher_model
        s_box = 4 * max(self.bins, 1)  # the box part of a raw output: bin logits or 4 distances
        t_box = s_box if self.use_ld else 4
        with torch.no_grad(), ExitStack() as stack:
            if self.use_ld:
                stack.enter_context(box_distributions(teacher))
            stack.enter_context(neck_features(teacher))
            t_raw, t_feats = teacher(images)
            if self.teacher_flips:
                views = [t_raw.float()]
                for flip in self.teacher_flips:
                    flipped = teacher(images.flip(FLIP_AXES[flip]))[0].float()
                    views.append(unflip_raw(flipped, flip, tuple(images.shape[-2:]),
                                            teacher.strides, t_box))  # fmt: skip
                t_raw = flip_ensemble(views, t_box)
        with ExitStack() as stack:
            if self.bins:
                stack.enter_context(box_distributions(inner))
            stack.enter_context(neck_features(inner))
            raw, feats = net(images)
        raw, t_raw = raw.float(), t_raw.float()
        weights = {} if box_weight is None else {"box_weight": box_weight}
        loss, logs = detection_loss(
            raw, targets, input_size, tuple(inner.strides), box_bins=self.bins, **weights
        )
        t_logits = t_raw[..., t_box:]
        kd_cls = soft_class_loss(raw[..., s_box:], t_logits)
        total = loss + self.cls_weight * kd_cls
        logs["kd_cls"] = float(kd_cls.detach())
        if self.use_ld:
            weight = t_logits.sigmoid().amax(-1)
            kd_box = localization_loss(
                raw[..., :s_box].unflatten(-1, (4, self.bins)),
                t_raw[..., :t_box].unflatten(-1, (4, self.bins)),
                weight,
                self.temperature,
            )
            total = total + self.box_weight * kd_box
            logs["kd_box"] = float(kd_box.detach())
        if self.feature_weight > 0:
            with torch.autocast(images.device.type, enabled=False):  # float32 statistics
                kd_feat = sum(
                    pkd_loss(adapter(f.float()), tf.float())
                    for adapter, f, tf in zip(self.adapters, feats, t_feats, strict=True)
                ) / len(feats)
            total = total + self.feature_weight * kd_feat
            logs["kd_feat"] = float(kd_feat.detach())
        logs["loss"] = float(total.detach())
        return total, logs


def _neck_channels(model: nn.Module, input_size: int) -> list[int]:
    from sarbridge.train.models.edge_det import neck_features

    was = model.training
    model.eval()
    with torch.no_grad(), neck_features(model):
        _, feats = model(torch.zeros(1, input_channels(model), 64, 64))
    model.train(was)
    return [f.shape[1] for f in feats]


def check_pair(teacher: nn.Module, student: nn.Module) -> None:
    """A teacher must be a dense edge detector with the student's classes, strides and input.

    Raises:
        SarbridgeError: naming what differs.
    """
    from sarbridge.train.models.edge_det import EdgeDetector

    for role, model in (("teacher", teacher), ("student", student)):
        if not isinstance(model, EdgeDetector):
            raise SarbridgeError(
                f"distillation needs edge detectors (edge_det); the {role} is "
                f"{type(model).__name__}"
            )
    if teacher.num_classes != student.num_classes:
        raise SarbridgeError(
            f"the teacher detects {teacher.num_classes} classes, the student "
            f"{student.num_classes}: a teacher must share the student's class set"
        )
    if tuple(teacher.strides) != tuple(student.strides):
        raise SarbridgeError(f"teacher strides {teacher.strides} differ from {student.strides}")
    if input_channels(teacher) != input_channels(student):
        raise SarbridgeError(
            f"the teacher reads {input_channels(teacher)} input channels, the student "
            f"{input_channels(student)}"
        )
