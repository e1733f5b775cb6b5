"""Probability maps of a seeded model on a synthetic fundus, run in a fresh process: prints one sha256 per
inference setting (paper and fast, fp32), of the uint8 maps as the infer stage writes them. (int8 is not here:
a random-init network's int8 maps are constant, which proves nothing; README "Same bytes" has its measurement.)

usage: golden_inference.py MODE THREADS   (MODE: reproducible or fast)
"""
import hashlib
import json
import sys

from micropatch import compute

compute.configure(sys.argv[1], int(sys.argv[2]))  # before torch is imported

import torch  # noqa: E402

from micropatch.inference import DEFAULTS, predict_probability, to_uint8  # noqa: E402
from micropatch.model import build_model  # noqa: E402
from micropatch.preprocessing import fov_mask, green_clahe  # noqa: E402
from micropatch.synthetic import SyntheticSpec, synth_fundus  # noqa: E402

SETTINGS = {"paper_fp32": {"mode": "paper"}, "fast_fp32": {"mode": "fast"}}

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
print(json.dumps(hashes))
