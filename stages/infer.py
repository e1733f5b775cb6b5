"""Stage infer@DOMAIN: probability maps (uint8 PNG, p = v/255) for every image of one test domain.

infer.mode `paper` slides the model's windows (128/64) with mean blending (the method); `fast` runs the same
windows, the overlapping ones only near candidates and none outside the field of view; infer.precision int8 runs
either through a quantized copy of the model on the CPU (benchmarks/infer.py measures all of them). infer.runtime
torch (the default) gives the same bytes on every x86-64 CPU in the reproducible compute mode; onnxruntime and
openvino run the model's ONNX export faster, with bits that depend on the CPU (benchmarks/runtimes.py). Window and
stride come from the model's recipe unless params.yaml `infer` sets them. A model of recipe study_baseline predicts
the RGB photograph in its square frame, mapped back to the native frame (micropatch.square).
"""
import argparse
import logging
from pathlib import Path

from micropatch import compute, logs
from micropatch.fileio import load_params
from micropatch.split import domain_rows, read_manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("domain")
    for name in ("model", "manifest", "preprocessed", "out"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    args = parser.parse_args()
    logs.setup()
    params = load_params()
    compute.configure(**params["compute"])  # before torch is imported: it pins what decides the bits
    import torch

    from micropatch.inference import DEFAULTS, write_domain_maps
    from micropatch.recipe import resolve
    from micropatch.runtimes import load_model

    spec = params["roles"]["test_on"][args.domain]
    runtime, precision = params["infer"]["runtime"], params["infer"]["precision"]
    device = "cuda" if torch.cuda.is_available() and runtime == "torch" else "cpu"
    if runtime != "torch":
        logging.warning("infer.runtime %s: these maps' bits depend on this CPU; torch in the reproducible compute "
                        "mode gives the same bytes on every x86-64 CPU", runtime)
    model, config = load_model(args.model, runtime, precision, device=device)
    settings = resolve(config, "inference", params["infer"], DEFAULTS)
    rows = domain_rows(read_manifest(args.manifest), args.domain, spec)
    write_domain_maps(model, config, args.domain, spec, rows, args.preprocessed, settings, args.out, device)
    logging.info("infer %s: %d images (%s mode, %s %s)", args.domain, len(rows), settings["mode"], runtime,
                 settings["precision"])


if __name__ == "__main__":
    main()
