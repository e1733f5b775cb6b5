"""Stage infer@DOMAIN: probability maps (uint8 PNG, p = v/255) for every image of one test domain.

infer.mode `paper` slides the model's windows (128/64) with mean blending (the method); `fast` runs the same
windows, the overlapping ones only near candidates and none outside the field of view; infer.precision int8 runs
either through a quantized copy of the model on the CPU (benchmarks/infer.py measures all of them). infer.runtime
torch (the default) gives the same bytes on every x86-64 CPU in the reproducible compute mode; onnxruntime and
openvino run the model's ONNX export faster, with bits that depend on the CPU (benchmarks/runtimes.py). Window and
stride come from the model's recipe unless params.yaml `infer` sets them. A model of recipe study_baseline predicts
the RGB photograph in its square frame, mapped back to the native frame (micropatch.square)."""
import argparse
from pathlib import Path

from micropatch.inference.entrypoints import infer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("domain")
    for name in ("model", "manifest", "preprocessed", "out"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    infer(parser.parse_args())


if __name__ == "__main__":
    main()
