"""Structured (channel) pruning with Torch-Pruning's dependency graph: the pruned model is a
smaller dense network (fewer channels, no masks) that every runtime runs faster.

Each model declares what may be pruned (``pruning_scope()``: the module and the layers whose
output channels must stay, such as the heads' class, box and DFL-bin convolutions). The target
is a fraction of the parent's MACs (measured with Torch-Pruning's counter at the model's input
size) or of its channels:

* MACs: Torch-Pruning's pruner (global ranking by default, or one uniform ratio per layer)
  at the channel ratio found by bisection on copies of the model, the copy closest to the
  target from above kept; then single steps of ``round_to`` channels from the weakest group
  until the target is met (:func:`_greedy_to_macs`): within one step of one group, where the
  ratio alone moves every layer at once, in jumps of several points of the MACs;
* channels: one uniform ratio, directly.

Both rank channels with the chosen importance, except that each class output keeps its
``class_evidence`` strongest channels of each sign (:class:`_ClassEvidence`).

Channel counts stay multiples of ``round_to`` (16 by default: AVX-512 registers hold 16
floats; at half the MACs ONNX Runtime ran the zoo detector in 13.9 ms with 16, 17.7 ms with
8: benchmarks/results/prune_pareto/round_to_latency.md).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .errors import CompressError
from .settings import IMPORTANCES, PruneSettings


@dataclass
class PruneResult:
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    # Torch-Pruning's ratio (of channels removed) before the single steps that reach the target
    channel_ratio: float

    @property
    def macs_kept(self) -> float:
        return self.macs_after / self.macs_before

    def as_dict(self) -> dict:
        return {
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_kept": round(self.macs_kept, 4),
            "channel_ratio": round(self.channel_ratio, 4),
        }


def pruning_scope(model: nn.Module) -> tuple[nn.Module, list[nn.Module]]:
    """The module to prune and its protected layers, as the model declares them."""
    scope = getattr(model, "pruning_scope", None)
    if scope is None:
        raise CompressError(
            f"{type(model).__name__} does not declare what may be pruned (pruning_scope())"
        )
    return scope()


def count_macs(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(MACs, parameters) of ``model`` on ``example`` (Torch-Pruning's counter)."""
    import torch_pruning as tp

    was = model.training
    model.eval()
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, example)
    model.train(was)
    return int(macs), int(params)


def _importance(settings: PruneSettings, model: nn.Module):
    """The channel importance of ``settings`` for pruning ``model`` (the copy being pruned)."""
    import torch_pruning as tp

    if settings.importance == "l2":
        base = tp.importance.GroupMagnitudeImportance(p=2)
    elif settings.importance == "bn":
        base = tp.importance.BNScaleImportance()
    else:
        base = tp.importance.GroupTaylorImportance()
    heads = class_outputs(model)
    if settings.class_evidence and heads:
        return _ClassEvidence(base, heads, settings.class_evidence)
    return base


class _ClassEvidence:
    """An importance under which each class-output convolution keeps evidence for its class as
    well as against it: for every class, the ``keep`` most important input channels with a
    positive weight and the ``keep`` with a negative weight rank above every other channel.

    The class outputs read ReLU features, which are never negative: a level whose remaining
    weights for a class are all negative scores that class at most at the sigmoid of its bias,
    on any image. Magnitude is blind to sign; at 30 % of the zoo detector's MACs it removed every
    channel with a positive class weight at all three levels (0 of 16 left; the parent has 13-21
    of 64), fine-tuning never brought one back, and no score of the student passed 0.27
    (benchmarks/results/prune_pareto/p30_lr). Channels of one sign only would, the other way
    round, put a floor under every score. Up to 2 x ``keep`` x classes channels rank first; a
    layer narrowed below that keeps the most important of them. The fine-tuning that follows
    may still drive them negative (it did at the coarser levels: p30_evidence)."""

    BONUS = 1e4  # times the group's largest score: above any ranking, global or per layer

    def __init__(self, base, heads: list[nn.Conv2d], keep: int):
        self.base, self.keep = base, keep
        self.heads = {id(conv) for conv in heads}

    @torch.no_grad()
    def __call__(self, group):
        import torch_pruning as tp

        scores = self.base(group)
        if scores is None:
            return None
        bonus = self.BONUS * max(1.0, float(scores.abs().max()))
        protected = torch.zeros(len(scores), dtype=torch.bool, device=scores.device)
        for i, (dep, idxs) in enumerate(group):
            if id(dep.layer) not in self.heads or dep.pruning_fn != tp.prune_conv_in_channels:
                continue
            roots = torch.as_tensor(group[i].root_idxs, device=scores.device)
            # idxs: the head's input channels, in the order of root_idxs (the group's channels)
            weights = dep.layer.weight.detach()[:, list(idxs)].flatten(2).sum(2)
            for row in weights.to(scores.device):  # one class
                for side in (row > 0, row < 0):
                    where = torch.nonzero(side).flatten()
                    best = where[torch.argsort(scores[roots[where]], descending=True)[: self.keep]]
                    protected[roots[best]] = True
        return torch.where(protected, scores + bonus, scores)


def _prune_copy(model: nn.Module, example, settings: PruneSettings, ratio: float) -> nn.Module:
    """A copy of ``model`` with its scope pruned at channel ratio ``ratio`` (one shot)."""
    import torch_pruning as tp

    pruned = copy.deepcopy(model)  # gradients (Taylor importance) are copied with the weights
    module, protected = pruning_scope(pruned)
    module.eval()
    pruner = tp.pruner.MetaPruner(
        module,
        example,
        importance=_importance(settings, pruned),
        pruning_ratio=ratio,
        max_pruning_ratio=settings.max_layer_ratio,
        global_pruning=settings.global_pruning,
        round_to=settings.round_to,
        ignored_layers=protected,
        output_transform=_flat_outputs,
    )
    pruner.step()  # gradients stay (Taylor importance ranks the refinement steps too)
    return pruned


def _greedy_to_macs(
    source: nn.Module,
    example,
    settings: PruneSettings,
    target: float,
    progress: bool,
    unpruned: nn.Module,
) -> nn.Module:
    """The last stretch to a MAC target in steps: a step removes the ``round_to`` least
    important channels of one group (coupled layers); the groups whose weakest channels are the
    weakest relative to their own mean importance (Torch-Pruning's group importance, mean
    normaliser) go first. MACs are counted after each round until they reach ``target``: the
    target is met to within one step of one group. A round is one step, except for a large
    network far from its target (see the loop), where it takes one step from each of several
    groups.

    Used after Torch-Pruning's own ratio has come close: on its own, from the unpruned model,
    this ranking ignores what a channel costs and strips the wide, low-resolution layers first
    (the zoo detector at 30 % of its MACs kept 32 of its 256 deepest channels and trained to
    AP50:95 0.17 in 12 epochs). ``unpruned``: the model before any pruning, whose widths set
    each layer's limit."""
    import torch_pruning as tp
    from tqdm import tqdm

    pruned = copy.deepcopy(source)
    module, protected = pruning_scope(pruned)
    module.eval()
    keep = set(map(id, protected))
    graph = tp.DependencyGraph().build_dependency(
        module, example, output_transform=_flat_outputs, verbose=False
    )
    importance = _importance(settings, pruned)
    widths = dict(
        (name, m.out_channels)
        for name, m in pruning_scope(unpruned)[0].named_modules()
        if isinstance(m, nn.Conv2d)
    )
    initial = {id(m): widths.get(name, m.out_channels) for name, m in module.named_modules()
               if isinstance(m, nn.Conv2d)}  # fmt: skip
    macs = count_macs(module, example)[0]
    bar = tqdm(total=max(macs - target, 0) / 1e6, desc="pruning to the MAC target",
               unit=" MMAC", disable=not progress, leave=False)  # fmt: skip
    per_step = None  # MACs one step removed, on average, in the last round
    steps_available = None
    while macs > target:
        candidates = []  # (score, pruning function, root module, channel indices) per group
        for group in graph.get_all_groups(ignored_layers=protected, root_module_types=[nn.Conv2d]):
            if _touches(group, graph, keep):
                continue
            root = group[0].dep.target.module
            n = root.out_channels
            floor = max(settings.round_to, int(initial.get(id(root), n) * (1 - settings.max_layer_ratio)))
            if n - settings.round_to < floor:
                continue
            scores = importance(group)
            if scores is None or len(scores) != n:
                continue
            order = torch.argsort(scores)[: settings.round_to]
            candidates.append((float(scores[order].mean()), group[0].dep.handler, root,
                               order.tolist()))  # fmt: skip
        if not candidates:
            break  # nothing left to prune within the limits
        candidates.sort(key=lambda c: c[0])
        # a large network (more than 512 steps' worth of channels), far from the target: the
        # weakest groups one step each per round, a 64th of the steps left by the last
        # round's MACs per step; otherwise, and near the target, one step per round
        count = 1
        if steps_available is None:
            steps_available = sum(c[2].out_channels for c in candidates) // settings.round_to
        if per_step is not None and steps_available > 512:
            count = max(1, int((macs - target) / per_step) // 64)
        done = 0
        for _, handler, root, idxs in candidates[:count]:
            step = graph.get_pruning_group(root, handler, idxs=idxs)
            if graph.check_pruning_group(step):
                step.prune()
                done += 1
        if not done:
            break
        new = count_macs(module, example)[0]
        per_step = max((macs - new) / done, 1)
        bar.update((macs - max(new, target)) / 1e6)  # the last step may pass the target
        macs = new
    bar.close()
    for p in pruned.parameters():
        p.grad = None
    return pruned


def _touches(group, graph, keep: set[int]) -> bool:
    """Whether pruning ``group`` would change the output channels of a protected layer."""
    return any(
        id(dep.target.module) in keep and graph.is_out_channel_pruning_fn(dep.handler)
        for dep, _ in group
    )


def _flat_outputs(out):
    """Torch-Pruning traces tensors: a dict or list of outputs (an FPN's levels) as one list."""
    if isinstance(out, dict):
        return list(out.values())
    return out


def prune(
    model: nn.Module,
    example: torch.Tensor,
    settings: PruneSettings,
    gradients: Callable[[nn.Module], None] | None = None,
    progress: bool = True,
) -> tuple[nn.Module, PruneResult]:
    """A pruned copy of ``model`` (the original is left as it was) and what was removed.

    MACs and parameters are those of the model's pruning scope (the whole model for the dense
    detectors; a Faster R-CNN's backbone + FPN; a BNN's SAR branch).

    Args:
        example: an input batch at the deployed size (MACs are counted on it).
        gradients: for Taylor importance, a function that runs the training loss on real
            images through the model it is given and calls ``backward()``.

    Raises:
        CompressError: the model declares no pruning scope, Taylor importance without
            ``gradients``, or no ratio reaches the target.
    """
    model.eval()
    macs0, params0 = count_macs(pruning_scope(model)[0], example)
    source = model
    if settings.importance == "taylor":
        if gradients is None:
            raise CompressError("Taylor importance needs gradients on real images")
        source = copy.deepcopy(model)
        source.zero_grad(set_to_none=True)
        gradients(source)
        source.eval()
    if settings.ratio_of == "channels":
        pruned = _prune_copy(source, example, settings, 1 - settings.ratio)
        macs, params = count_macs(pruning_scope(pruned)[0], example)
        return pruned.eval(), PruneResult(macs0, macs, params0, params, 1 - settings.ratio)
    target = settings.ratio * macs0
    # 1. Torch-Pruning's ratio (global threshold or uniform per layer) by bisection; the copy
    #    closest to the target from above is kept
    lo, hi = 0.0, settings.max_layer_ratio
    above = None  # (macs, ratio, model)
    from tqdm import tqdm

    for _ in tqdm(range(12), desc="pruning to the MAC target", unit="try", disable=not progress,
                  leave=False):  # fmt: skip
        mid = (lo + hi) / 2
        candidate = _prune_copy(source, example, settings, mid)
        macs = count_macs(pruning_scope(candidate)[0], example)[0]
        if macs > target and (above is None or macs < above[0]):
            above = (macs, mid, candidate)
        if macs > target:
            lo = mid
        else:
            hi = mid
        if above is not None and above[0] - target < 0.005 * macs0:
            break
    if above is None:  # even the smallest ratio tried went below the target
        above = (macs0, 0.0, copy.deepcopy(source))
    # 2. the rest of the way in single steps of round_to channels (weakest group first)
    _, ratio, pruned = above
    pruned = _greedy_to_macs(pruned, example, settings, target, progress, unpruned=source)
    macs, params = count_macs(pruning_scope(pruned)[0], example)
    if macs > target * 1.02:
        raise CompressError(
            f"the model reaches {macs / macs0:.1%} of its MACs at most, not {settings.ratio:.0%}: "
            f"every layer is at its limit ({settings.max_layer_ratio:.0%} of its channels removed "
            f"or {settings.round_to} left)"
        )
    return pruned.eval(), PruneResult(macs0, macs, params0, params, ratio)


def class_outputs(model: nn.Module) -> list[nn.Conv2d]:
    """The class-output convolutions of a dense detector's head (``cls_out``, one per level,
    reading ReLU features); empty for models without such a head."""
    heads = getattr(model, "cls_out", None)
    if not isinstance(heads, nn.ModuleList):
        return []
    return [conv for conv in heads if isinstance(conv, nn.Conv2d)]


def class_score_ceilings(model: nn.Module) -> dict[int, float]:
    """Levels of a dense detector's class head that can no longer score high: level -> the
    highest score it can give, for every class-output convolution (``cls_out``, fed by ReLU
    features, which are never negative) that has no positive weight left. Its logits are then
    at most its bias, whatever the image. Magnitude pruning is blind to sign and can remove every
    channel that fed a positive class weight (the zoo detector at 30 % of its MACs:
    benchmarks/results/prune_pareto/p30_lr; PruneSettings.class_evidence prevents it), and
    fine-tuning can remove them too (p30_evidence: the coarser levels). Empty for models without
    such a head."""
    capped = {}
    for level, conv in enumerate(class_outputs(model)):
        if conv.bias is not None and not (conv.weight > 0).any():
            capped[level] = float(torch.sigmoid(conv.bias.detach().max()))
    return capped


def changed_layers(before: nn.Module, after: nn.Module) -> dict[str, tuple[int, int]]:
    """Convolutions whose output channels changed: name -> (before, after)."""
    old = {n: m.out_channels for n, m in before.named_modules() if isinstance(m, nn.Conv2d)}
    return {
        n: (old[n], m.out_channels)
        for n, m in after.named_modules()
        if isinstance(m, nn.Conv2d) and n in old and old[n] != m.out_channels
    }


__all__ = [
    "IMPORTANCES",
    "class_outputs",
    "class_score_ceilings",
    "PruneResult",
    "PruneSettings",
    "changed_layers",
    "count_macs",
    "prune",
    "pruning_scope",
]
