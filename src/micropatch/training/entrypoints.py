"""The training phase's pipeline stages (train, swa), given the stage scripts' parsed arguments. Each pins the
compute mode before torch is imported, so the torch-land modules are imported inside the functions, after it."""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from micropatch.core import compute, logs
from micropatch.core.fileio import InputError, load_params, sha256_file, write_json, write_text


def write_history(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]), delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text(path, buf.getvalue())


def train_stage(args: argparse.Namespace, script: Path) -> None:
    """stages/train.py: U-Net (ResNet34, scSE) on the train patches; the weights of the epoch that scores best on the
    selection split (tune when the manifest has one, else val) with their recipe, per-epoch history, resumable after a
    kill (also when DVC has deleted the outputs before rerunning the stage).

    Data-parallel: with `train.processes` > 1 the stage runs itself under torchrun on this machine; on several
    machines, start `torchrun --nnodes ... stages/train.py <the same arguments>` on each (docs/how-to/scale-out.md).

    args: the stage script's parsed arguments (the paths dvc.yaml names); script: that script, which torchrun
    reruns in each process.
    """
    logs.setup()
    params = load_params()
    processes = params["train"]["processes"]
    if processes > 1 and "LOCAL_RANK" not in os.environ:  # one machine: become torchrun's N workers
        os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                  f"--nproc-per-node={processes}", str(script), *sys.argv[1:]])
    settings = compute.configure(**params["compute"])  # before torch is imported: it pins what decides the bits
    from micropatch.core.provenance import versions
    from micropatch.core.recipe import model_recipe, training_recipe
    from micropatch.training import parallel
    from micropatch.training.config import TrainConfig
    from micropatch.training.network import INPUT_MEAN, INPUT_STD
    from micropatch.training.trainer import train

    baseline = params["study_baseline"] if model_recipe(params) == "study_baseline" else None
    # recipe study_baseline: its own architecture (the study's U-Net SE-ResNet101); the rest of `train` is shared
    cfg = TrainConfig(**params["train"] | ({k: baseline[k] for k in ("encoder", "attention")} if baseline else {}))
    selection = "tune" if (args.patches / "tune").is_dir() else "val"
    inputs = [sha256_file(args.patches / s / f) for s in ("train", selection) for f in ("images.npy", "masks.npy")]
    fingerprint = hashlib.sha256(json.dumps([params["train"], params["lesions"], params["compute"], inputs]
                                            + ([baseline] if baseline else []), sort_keys=True).encode()).hexdigest()
    recipe = training_recipe(params["preprocess"], params["patchify"], {"mean": INPUT_MEAN, "std": INPUT_STD},
                             settings, sha256_file(args.manifest), baseline)
    # with a tune split, val is scored each epoch for the history (never for selection): its full-image estimates
    ctx = parallel.setup()
    if ctx.distributed and ctx.world != processes:
        logging.warning("train: %d processes, train.processes says %d (the global batch is still %d)", ctx.world,
                        processes, cfg.batch_size)
    summary = train(args.patches / "train", args.patches / selection, params["lesions"], cfg, args.model, args.state,
                    fingerprint, recipe, on_epoch=lambda history: write_history(args.history, history),
                    monitor_dir=args.patches / "val" if selection == "tune" and cfg.monitor_val else None,
                    ctx=ctx)
    parallel.teardown(ctx)
    if not ctx.is_main:
        return
    history = summary.pop("history")
    write_history(args.history, history)
    write_json(args.summary, summary | {"seed": cfg.seed, "compute": settings, "versions": versions()})
    args.state.unlink(missing_ok=True)  # finished: a later run with other params must start fresh
    logging.info("train: best %s %s %.4f at epoch %d of %d", selection, cfg.select_on, summary["best_select_score"],
                 summary["best_epoch"], summary["epochs_run"])


def swa(args: argparse.Namespace) -> None:
    """stages/swa.py: stochastic weight averaging of one run (the cross-dataset study's SWA): the weights of the last
    `train.swa_epochs` epochs averaged over the encoder, the decoder or the full model (the rest from the selected
    model), then BatchNorm statistics recomputed on training patches. One model file per part, and its maps of every
    test domain written by the infer stage's own code (inference.write_domain_maps), which the score stage reads like
    any other (stage score-strategy). One process for all of it: the study runs this in each of its experiments.

    args: the stage script's parsed arguments (the paths dvc.yaml names).
    """
    logs.setup()
    params = load_params()
    compute.configure(**params["compute"])  # before torch is imported: it pins what decides the bits
    from micropatch.core.recipe import resolve
    from micropatch.data.manifest import domain_rows, read_manifest
    from micropatch.inference.maps import write_domain_maps
    from micropatch.inference.modes import DEFAULTS
    from micropatch.training.averaging import averaged_model, bn_batches
    from micropatch.training.network import save_checkpoint

    strategies = params["strategies"]
    epochs = sorted(args.epochs.glob("epoch_*.safetensors"))
    if not epochs:
        raise InputError(f"{args.epochs}: no epoch weights; train with train.swa_epochs > 0 (dvc repro train)")
    images = np.load(args.patches / "train" / "images.npy", mmap_mode="r")

    def batches():
        return bn_batches(images, params["train"]["batch_size"], strategies["bn_patches"], params["train"]["seed"])

    manifest = read_manifest(args.manifest)
    for part in strategies["swa_parts"]:
        model, config = averaged_model(epochs, part, args.model, batches)
        config |= {"strategy": f"swa_{part}", "averaged_epochs": [p.stem for p in epochs]}
        save_checkpoint(args.out / f"swa_{part}.safetensors", model, config)
        settings = resolve(config, "inference", params["infer"], DEFAULTS)
        for domain, spec in params["roles"]["test_on"].items():
            write_domain_maps(model, config, domain, spec, domain_rows(manifest, domain, spec), args.preprocessed,
                              settings, args.predictions / f"swa_{part}" / domain)
        logging.info("swa %s: %d epochs averaged (%s), BatchNorm recomputed on %d training patches", part,
                     len(epochs), ", ".join(p.stem for p in epochs), min(len(images), strategies["bn_patches"]))
