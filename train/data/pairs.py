"""Optical/SAR patch pairs for BNN pretraining: scene-level splits, patch tensors through the
runtime's preprocessing, seeded epoch batches with derangement negatives.

Splits are made over scenes, per data root (each root keeps scenes in test), then cut into
aligned patches. Negatives are SAR patch i with optical patch j != i drawn fresh each epoch
from the global batch (a derangement), and optionally hard negatives: another patch of the
same scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from sarbridge.runtime.errors import SarbridgeError
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
from sarbridge.train.engine import DistInfo, shard

if TYPE_CHECKING:
    from sarbridge.train.recipes.bnn import BNNConfig


def derangement(n: int, rng) -> list[int]:
    """A random permutation with no fixed point (n >= 2): negatives never pair i with i."""
    if n < 2:
        raise ValueError("negatives need at least 2 pairs in a batch")
    # a random cyclic shift of a random order has no fixed point
    order = rng.permutation(n)
    shift = int(rng.integers(1, n))
    perm = [0] * n
    for k in range(n):
        perm[order[k]] = int(order[(k + shift) % n])
    return perm


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
        raise SarbridgeError(
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
