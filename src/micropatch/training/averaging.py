"""Weight averaging and prediction ensembles (the cross-dataset study's strategies): SWA over one run's last epochs,
uniform and greedy model soups over runs that share their initial weights, each over the encoder, the decoder
(with the segmentation head) or the full model; BatchNorm statistics recomputed on training patches afterwards,
never averaged (an average of running variances is not the variance of the averaged network's activations)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.optim.swa_utils import update_bn

from micropatch.core.fileio import InputError
from micropatch.evaluation.metrics import to_uint8
from micropatch.training.network import load_checkpoint, normalise

log = logging.getLogger(__name__)

PARTS = ("encoder", "decoder", "full")  # decoder: every weight outside the encoder (decoder and segmentation head)


def in_part(key: str, part: str) -> bool:
    """Whether a state-dict key of an smp Unet belongs to a part (PARTS)."""
    if part not in PARTS:
        raise ValueError(f"part '{part}': choose one of {PARTS}")
    return part == "full" or key.startswith("encoder.") == (part == "encoder")


def average_states(states: list[dict[str, torch.Tensor]], part: str,
                   base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """base with the part's floating-point tensors replaced by their uniform mean over states (computed in float64,
    stored in the tensors' own dtype); integer buffers (BatchNorm's num_batches_tracked) and the rest are base's."""
    if not states:
        raise ValueError("nothing to average: no weights given")
    keys = set(base)
    for n, state in enumerate(states):
        if set(state) != keys:
            raise InputError(f"weights #{n} do not have the architecture of the others (keys differ): only runs of "
                             "one architecture can be averaged")
    out = {}
    for key, value in base.items():
        if in_part(key, part) and value.is_floating_point():
            out[key] = torch.stack([s[key].double() for s in states]).mean(0).to(value.dtype)
        else:
            out[key] = value.clone()
    return out


def bn_batches(images: np.ndarray, batch_size: int, limit: int, seed: int):
    """Batches of normalised model input from a patch set's uint8 images (N, S, S) or (N, C, S, S): at most `limit`
    patches, a seeded choice, in a fixed order."""
    order = np.sort(np.random.default_rng(seed).permutation(len(images))[:limit])
    for start in range(0, len(order), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[order[start:start + batch_size]])).float()
        yield normalise(batch[:, None] if batch.ndim == 3 else batch)


def recompute_batchnorm(model: torch.nn.Module, batches) -> torch.nn.Module:
    """BatchNorm running statistics recomputed from scratch as the plain mean over `batches` (torch's
    swa_utils.update_bn: momentum None, a cumulative average), the model left in eval mode."""
    update_bn(list(batches), model)
    return model.eval()


def averaged_model(paths: list[Path], part: str, base: Path, batches_fn: Callable) -> tuple[torch.nn.Module, dict]:
    """The model of `base` (a micropatch checkpoint) with its `part` averaged over the checkpoints `paths`, then its
    BatchNorm statistics recomputed on batches_fn()'s batches. Returns (model, base's config)."""
    model, config = load_checkpoint(base)
    states = [load_checkpoint(p)[0].state_dict() for p in paths]
    model.load_state_dict(average_states(states, part, model.state_dict()))
    return recompute_batchnorm(model, batches_fn()), config


def greedy_soup(ranked: list, score: Callable[[list], float]) -> tuple[list, float]:
    """The greedy soup (Wortsman et al. 2022): ingredients in order of their own held-out score, best first; each is
    kept when the soup with it scores at least as well on held-out data as without it. Returns (kept, score)."""
    if not ranked:
        raise ValueError("a soup needs at least one ingredient")
    kept, best = [ranked[0]], score([ranked[0]])
    for candidate in ranked[1:]:
        trial = score(kept + [candidate])
        if trial >= best:
            kept, best = kept + [candidate], trial
    return kept, best


def ensemble_maps(maps: list[np.ndarray]) -> np.ndarray:
    """The prediction ensemble of uint8 probability maps (p = v / 255): their mean probability, stored the same way."""
    if not maps or any(m.shape != maps[0].shape for m in maps):
        raise ValueError(f"an ensemble needs maps of one shape, got {[m.shape for m in maps]}")
    return to_uint8(np.mean([m.astype(np.float64) / 255 for m in maps], axis=0))
