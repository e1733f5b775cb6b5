"""Stage train: U-Net (ResNet34, scSE) on the train patches; the weights of the epoch that scores best on the
selection split (tune when the manifest has one, else val) with their recipe, per-epoch history, resumable after a
kill (also when DVC has deleted the outputs before rerunning the stage).

Data-parallel: with `train.processes` > 1 the stage runs itself under torchrun on this machine; on several
machines, start `torchrun --nnodes ... stages/train.py <the same arguments>` on each (README, "Scale out")."""
import argparse
import csv
import hashlib
import io
import json
import logging
import os
import sys
from pathlib import Path

from micropatch import compute, logs
from micropatch.fileio import load_params, sha256_file, write_json, write_text


def write_history(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]), delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text(path, buf.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("patches", "manifest", "model", "state", "history", "summary"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    args = parser.parse_args()
    logs.setup()
    params = load_params()
    processes = params["train"]["processes"]
    if processes > 1 and "LOCAL_RANK" not in os.environ:  # one machine: become torchrun's N workers
        os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                  f"--nproc-per-node={processes}", __file__, *sys.argv[1:]])
    settings = compute.configure(**params["compute"])  # before torch is imported: it pins what decides the bits
    from micropatch import parallel
    from micropatch.model import INPUT_MEAN, INPUT_STD
    from micropatch.provenance import versions
    from micropatch.recipe import model_recipe, training_recipe
    from micropatch.training import TrainConfig, train

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


if __name__ == "__main__":
    main()
