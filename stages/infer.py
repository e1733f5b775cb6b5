"""Stage infer@DOMAIN: probability maps (uint8 PNG, p = v/255) for every image of one test domain.

infer.mode `paper` slides 128/64 windows with mean blending (the method); `fast` runs the same windows, the
overlapping ones only near candidates and none outside the field of view; infer.precision int8 runs either through
a quantized copy of the model on the CPU (benchmarks/infer.py measures all of them).
"""
import logging
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from micropatch import logs
from micropatch.inference import predict_probability, to_uint8
from micropatch.io import load_params, read_png, write_json, write_png
from micropatch.model import load_checkpoint
from micropatch.split import domain_rows, read_manifest


def main(domain: str) -> None:
    logs.setup()
    params = load_params("infer")
    spec = load_params("roles")["test_on"][domain]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, config = load_checkpoint("data/model/model.safetensors", device)
    rows = domain_rows(read_manifest("data/splits/manifest.csv"), domain, spec)
    out = Path("data/predictions") / domain
    for row in tqdm(rows, desc=f"infer {domain}", unit="img"):
        folder = Path("data/preprocessed") / row["dataset"]
        image = read_png(folder / f"{row['image_id']}.png")
        fov = read_png(folder / f"{row['image_id']}_fov.png") > 0
        probability = predict_probability(model, image, fov, params, device)
        for lesion, channel in zip(config["lesions"], probability):
            write_png(out / f"{row['image_id']}_{lesion}.png", to_uint8(channel))
    write_json(out / "domain.json", {"domain": domain, **spec,
                                     "lesions": config["lesions"], "image_ids": [r["image_id"] for r in rows]})
    logging.info("infer %s: %d images (%s mode, %s)", domain, len(rows), params["mode"], params["precision"])


if __name__ == "__main__":
    main(sys.argv[1])
