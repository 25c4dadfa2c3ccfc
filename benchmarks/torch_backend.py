"""The optional PyTorch row of `sarbridge bench`: a runtime backend that runs the training run
an artifact was exported from (its lineage), eagerly, through the same Detector path.

Imported only when the ``pytorch`` backend is asked for; boards without torch never load it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sarbridge.runtime.backends import Backend, register_backend
from sarbridge.runtime.errors import SarbridgeError


@register_backend("pytorch")
class TorchBackend(Backend):
    name = "pytorch"

    def __init__(
        self,
        model_path: Path,
        manifest: dict,
        threads: int | None = None,
        device: str = "auto",
    ):
        from sarbridge.train.detect_train import load_detector

        train = next((s for s in manifest["lineage"] if s.get("step") == "train"), None)
        run = Path(train["run"]) if train and train.get("run") else None
        if run is None or not (run / "best.pt").is_file():
            raise SarbridgeError(
                f"{model_path.parent}: the PyTorch row needs the training run this artifact came "
                f"from ({run or 'not in its lineage'}), and it is not here"
            )
        if threads:
            torch.set_num_threads(int(threads))
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        )
        self.model, _, _ = load_detector(run)
        self.model.to(self.device).eval()
        self.kind = getattr(self.model, "kind", "dense")
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
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return [raw.float().cpu().numpy()]

    def peak_device_memory_mib(self) -> float | None:
        if self.device.type != "cuda":
            return None
        return torch.cuda.max_memory_allocated() / 2**20
