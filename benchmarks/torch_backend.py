"""The optional PyTorch row of `sarbridge bench`: a runtime backend that runs the training run
an artifact was exported from (its lineage), eagerly, through the same Detector path.

Registered lazily in :mod:`sarbridge.runtime.backends` (extra ``train``): imported only when the
``pytorch`` backend is asked for; boards without torch never load it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sarbridge.runtime.backends import Backend
from sarbridge.runtime.errors import SarbridgeError


def _kind(step: dict) -> str | None:
    """A lineage step's kind: ``kind`` in manifest schema 2, ``step`` in schema 1."""
    return step.get("kind", step.get("step"))


def _source_checkpoint(folder: Path, manifest: dict) -> Path:
    """The checkpoint the artifact was exported from: a ``checkpoint.pt`` beside the manifest
    (zoo folders), else the export step's ``source`` (schema 2) or the train step's ``run``
    (schema 1). Where the export step names its parent's sha256, the checkpoint must match it,
    so the PyTorch row runs the very weights that were exported."""
    from sarbridge.runtime.fileio import sha256_file
    from sarbridge.train.checkpoint import resolve_checkpoint

    export = next((s for s in reversed(manifest["lineage"]) if _kind(s) == "export"), {})
    train = next((s for s in manifest["lineage"] if _kind(s) == "train"), {})
    wanted = (export.get("parent") or {}).get("sha256")
    candidates = [folder / "checkpoint.pt", export.get("source"), train.get("run")]
    tried = []
    for candidate in candidates:
        if not candidate:
            continue
        try:
            path = resolve_checkpoint(candidate)
        except SarbridgeError:
            tried.append(str(candidate))
            continue
        if wanted and sha256_file(path) != wanted:
            tried.append(f"{candidate} (other weights)")
            continue
        return path
    raise SarbridgeError(
        f"{folder}: the PyTorch row needs the checkpoint this artifact was exported from, and it "
        f"is not here (looked for: {', '.join(tried) or 'nothing named in its lineage'})"
    )


class TorchBackend(Backend):
    name = "pytorch"

    def __init__(
        self,
        model_path: Path,
        manifest: dict,
        threads: int | None = None,
        device: str = "auto",
    ):
        from sarbridge.train.checkpoint import load_model

        run = _source_checkpoint(model_path.parent, manifest)
        if threads:
            torch.set_num_threads(int(threads))
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        )
        loaded = load_model(run)
        self.model, _ = loaded.model, loaded.config
        self.model.to(self.device).eval()
        self.kind = getattr(self.model, "kind", "dense")
        # a DFL head's graph outputs its bin logits, channels first
        self.bins_out = manifest["postprocessing"].get("decode") == "dense_dfl"
        if self.bins_out:
            self.model.emit_box_bins = True
        if self.kind == "torchvision":  # as in the exported graph (export/onnx_export.BoxesExport)
            post = manifest["postprocessing"]
            heads = self.model.detector.roi_heads
            heads.score_thresh = 0.001
            heads.nms_thresh = float(post["iou_threshold"])
            heads.detections_per_img = int(post["max_detections"])
        self.max_batch = 1 if self.kind == "torchvision" else None
        self.description = f"pytorch {torch.__version__} eager ({self.device.type}), run {run}"

    @torch.no_grad()
    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device)
        if self.kind == "torchvision":
            out = self.model.detector(list(x))[0]
            return [
                out["boxes"].cpu().numpy(),
                out["scores"].cpu().numpy(),
                (out["labels"] - 1).cpu().numpy(),
            ]
        raw = self.model(x)
        if self.bins_out:
            raw = raw.transpose(1, 2)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return [raw.float().cpu().numpy()]

    def peak_device_memory_mib(self) -> float | None:
        if self.device.type != "cuda":
            return None
        return torch.cuda.max_memory_allocated() / 2**20
