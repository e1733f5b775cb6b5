"""Probability maps of seeded models, run in a fresh process: prints one sha256 per inference setting, of the uint8
maps as the infer stage writes them.

- paper_fp32, fast_fp32: the seeded U-Net on a synthetic fundus. A random-init U-Net responds everywhere, so fast
  mode refines every window there and its map is paper's: these two pin the network's kernels.
- local_paper_fp32, local_fast_fp32: a small seeded conv net that responds only near a few bright dots on a flat
  frame, so fast mode skips most overlapping windows and its map differs from paper's (on about 18,000 pixels):
  these pin fast mode's own paths (the first tiling, the refinement).
(int8 is not here: a random-init network's int8 maps are constant, which proves nothing; its maps are not in the
"same bytes" promise.)

usage: golden_inference.py MODE THREADS   (MODE: reproducible or fast)
"""
import hashlib
import json
import sys

from micropatch.core import compute

compute.configure(sys.argv[1], int(sys.argv[2]))  # before torch is imported

import numpy as np  # noqa: E402
import torch  # noqa: E402

from micropatch.data.preprocessing import fov_mask, green_clahe  # noqa: E402
from micropatch.data.synthetic import SyntheticSpec, synth_fundus  # noqa: E402
from micropatch.evaluation.metrics import to_uint8  # noqa: E402
from micropatch.inference.modes import DEFAULTS, predict_probability  # noqa: E402
from micropatch.training.network import build_model  # noqa: E402

SETTINGS = {"paper_fp32": {"mode": "paper"}, "fast_fp32": {"mode": "fast"}}


def local_net() -> torch.nn.Module:
    """conv-BN-ReLU x2 and a head whose logits are spread (x20) and shifted (-6): p >= 0.15 only near bright dots."""
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 1, 3, padding=1)).eval()
    with torch.no_grad():
        net[-1].weight.mul_(20)
        net[-1].bias.fill_(-6.0)
    return net


def dotted_frame() -> np.ndarray:
    """uint8 (512, 768): a flat frame with six 8 px bright dots at seeded places."""
    frame = np.full((512, 768), 60, np.uint8)
    for y, x in np.random.default_rng(11).integers(20, 480, (6, 2)):
        frame[y:y + 8, x:x + 8] = 230
    return frame


torch.manual_seed(0)
model = build_model(1).eval()
with torch.no_grad():  # a random-init U-Net says ~0.5 everywhere: spread its logits so the maps carry structure
    model.segmentation_head[0].bias.fill_(-4.0)
rgb, _ = synth_fundus(11, SyntheticSpec(width=384, height=256))
image, fov = green_clahe(rgb), fov_mask(rgb)
hashes = {}
for name, setting in SETTINGS.items():
    maps = to_uint8(predict_probability(model, image, fov, DEFAULTS | setting))
    hashes[name] = hashlib.sha256(maps.tobytes()).hexdigest()
frame = dotted_frame()
local = local_net()
for name in ("paper", "fast"):
    maps = to_uint8(predict_probability(local, frame, np.ones(frame.shape, bool), DEFAULTS | {"mode": name}))
    hashes[f"local_{name}_fp32"] = hashlib.sha256(maps.tobytes()).hexdigest()
print(json.dumps(hashes))
