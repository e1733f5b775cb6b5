"""A seeded training of a few steps, run in a fresh process: prints the sha256 of the checkpoint it writes.

usage: golden_training.py MODE THREADS OUT_FILE   (MODE: reproducible or fast)
The weights come from micropatch's own training step (model, loss, AdamW) on seeded patches, so the hash moves
when anything that decides the bits moves: kernels, instruction set, thread count, library versions.
"""
import sys
from pathlib import Path

from micropatch.core import compute

compute.configure(sys.argv[1], int(sys.argv[2]))  # before torch is imported

import numpy as np  # noqa: E402
import torch  # noqa: E402

from micropatch.core.fileio import sha256_file  # noqa: E402
from micropatch.training.config import TrainConfig  # noqa: E402
from micropatch.training.loss import make_loss  # noqa: E402
from micropatch.training.network import build_model, save_checkpoint  # noqa: E402
from micropatch.training.trainer import train_step  # noqa: E402

STEPS, BATCH, SIZE = 3, 4, 64

cfg = TrainConfig.from_params(Path(__file__).resolve().parents[2] / "params.yaml")
rng = np.random.default_rng(0)
images = torch.from_numpy(rng.integers(0, 256, (STEPS, BATCH, 1, SIZE, SIZE)).astype(np.float32))
masks = torch.from_numpy((rng.random((STEPS, BATCH, 1, SIZE, SIZE)) < 0.05).astype(np.float32))
torch.manual_seed(0)
model = build_model(1, cfg.encoder, None, cfg.attention).to(memory_format=torch.channels_last).train()
optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
scaler = torch.amp.GradScaler(enabled=False)
loss_fn = make_loss(1, cfg)
for step in range(STEPS):
    train_step(model, optimizer, scaler, loss_fn, images[step], masks[step], torch.device("cpu"))
save_checkpoint(Path(sys.argv[3]), model, {"lesions": ["MA"], "encoder": cfg.encoder, "attention": cfg.attention})
print(sha256_file(sys.argv[3]))
