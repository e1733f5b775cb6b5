"""Stage train: U-Net (ResNet34, scSE) on the patch sets; best val-Dice weights, per-epoch history, resumable."""
import csv
import hashlib
import io
import json
import logging
from pathlib import Path

from micropatch import logs
from micropatch.io import load_params, sha256_file, write_json, write_text
from micropatch.provenance import versions
from micropatch.training import TrainConfig, train

MODEL = Path("data/model/model.safetensors")
STATE = Path("data/train_state/last.pt")  # outside DVC's outs: DVC deletes outs before a rerun, this must survive
HISTORY = Path("metrics/train_history.tsv")


def write_history(history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]), delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text(HISTORY, buf.getvalue())


def main() -> None:
    logs.setup()
    params = load_params("train")
    lesions = load_params("lesions")
    cfg = TrainConfig(**params)
    inputs = [sha256_file(Path("data/patches") / s / f) for s in ("train", "val") for f in ("images.npy", "masks.npy")]
    fingerprint = hashlib.sha256(json.dumps([params, lesions, inputs], sort_keys=True).encode()).hexdigest()
    summary = train(Path("data/patches/train"), Path("data/patches/val"), lesions, cfg, MODEL, STATE, fingerprint,
                    on_epoch=write_history)
    history = summary.pop("history")
    write_history(history)
    write_json("metrics/train.json", summary | {"seed": cfg.seed, "versions": versions()})
    STATE.unlink(missing_ok=True)  # finished: a later run with other params must start fresh
    logging.info("train: best val Dice %.4f at epoch %d of %d", summary["best_val_dice"], summary["best_epoch"],
                 summary["epochs_run"])


if __name__ == "__main__":
    main()
