"""Stage swa: stochastic weight averaging of one run (the cross-dataset study's SWA): the weights of the last
`train.swa_epochs` epochs averaged over the encoder, the decoder or the full model (the rest from the selected
model), then BatchNorm statistics recomputed on training patches. One model file per part, and its maps of every
test domain written by the infer stage's own code (inference.write_domain_maps), which the score stage reads like
any other (stage score-strategy). One process for all of it: the study runs this in each of its experiments."""
import argparse
import logging
from pathlib import Path

import numpy as np

from micropatch import compute, logs
from micropatch.fileio import InputError, load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("epochs", "model", "patches", "manifest", "preprocessed", "out", "predictions"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    args = parser.parse_args()
    logs.setup()
    params = load_params()
    compute.configure(**params["compute"])  # before torch is imported: it pins what decides the bits
    from micropatch.averaging import averaged_model, bn_batches
    from micropatch.inference import DEFAULTS, write_domain_maps
    from micropatch.model import save_checkpoint
    from micropatch.recipe import resolve
    from micropatch.split import domain_rows, read_manifest

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


if __name__ == "__main__":
    main()
