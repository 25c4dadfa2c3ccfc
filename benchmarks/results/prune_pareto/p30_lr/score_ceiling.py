"""Where a 30 % student's highest stride-8 class score lies on one SSDD test image (inside the
image or in the letterbox padding), and how many of each level's class-output weights are
positive: a student whose weights are all negative can score no higher than the sigmoid of its
class bias, whatever its features (they are ReLU outputs, never negative).

    python benchmarks/results/prune_pareto/p30_lr/score_ceiling.py runs/edge_p30_kd30_lr3e3_s0
"""

import sys

import numpy as np
import torch  # noqa: TID251 - a research script beside its results, not the deployed path

from sarbridge.runtime.decode import letterbox
from sarbridge.train.checkpoint import load_model
from sarbridge.train.data.detection import make_sets

torch.set_num_threads(1)
loaded = load_model(sys.argv[1])
model, cfg = loaded.model, loaded.config
test = make_sets(cfg.data)[2]
img = test.image(0)
x, box = letterbox(img, cfg.data.input_size)
feats = {}
model.cls_out[0].register_forward_hook(lambda mod, i, o: feats.__setitem__("p3", o.detach()))
with torch.no_grad():
    model(torch.from_numpy(x[None]))
scores = torch.sigmoid(feats["p3"][0, 0]).numpy()  # stride 8
rows, cols = int(np.ceil(box.resized_height / 8)), int(np.ceil(box.resized_width / 8))
inside = scores[:rows, :cols].max()
padding = max(scores[rows:].max(initial=0.0), scores[:, cols:].max(initial=0.0))
print(f"image {img.shape}, {box}")
print(f"stride-8 max score {scores.max():.4f}: inside the image {inside:.4f}, padding {padding:.2e}")
for i, conv in enumerate(model.cls_out):
    w = conv.weight
    print(f"level {i}: {int((w > 0).sum())} of {w.numel()} class weights positive, "
          f"sigmoid(bias) {torch.sigmoid(conv.bias).item():.4f}")
