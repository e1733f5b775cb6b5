"""Where a model's windows run: torch (the pipeline's runtime, whose reproducible compute mode gives the same bytes
on every x86-64 CPU), ONNX Runtime or OpenVINO, from an ONNX export that carries the model's recipe.

The exported graph is the network alone: input `input`, float32 (N, 1, H, W), the CLAHE green channel normalised
as the recipe's `normalisation` says ((v / 255 - mean) / std); output `logits`, float32 (N, L, H, W), one map per
lesion in the recipe's `lesions` order (sigmoid gives the probability). Batch, height and width are free (H and W
multiples of 32). The recipe is the checkpoint's own JSON, in the ONNX metadata under `micropatch`, with an `onnx`
entry: precision, the sha256 of the checkpoint it came from and, for int8, how it was calibrated.

int8 is ONNX Runtime's static QDQ quantization (per-channel int8 weights, uint8 activations whose ranges are the
minimum and maximum over calibration windows from training photographs), done once at export; both runtimes run
the same file. As in torch's int8 path, the stem convolution and the segmentation head stay float32.

Neither ONNX Runtime nor OpenVINO promises the same bits on two CPUs: both pick kernels by instruction set (and
OpenVINO by cache size). So the pipeline's stages run torch; these runtimes are for `micropatch predict`."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from micropatch.core.fileio import InputError, sha256_file
from micropatch.core.recipe import RUNTIME_PRECISIONS, RUNTIMES, int8_export_path, read_recipe
from micropatch.inference.export import INPUT, OPSET, OUTPUT, export_onnx
from micropatch.inference.shipped import model_cache
from micropatch.training.network import load_checkpoint

log = logging.getLogger(__name__)


class ExportedModel(torch.nn.Module):
    """An exported model on ONNX Runtime or OpenVINO, called like the torch model: normalised float32 (N, 1, h, w)
    tensor in, logits tensor out (on the input's device), so every inference mode runs it unchanged."""

    def __init__(self, path: Path, runtime: str, precision: str, threads: int | None = None):
        super().__init__()
        self.path, self.runtime, self.precision = Path(path), runtime, precision
        self.recipe = read_recipe(self.path)
        stored = self.recipe["onnx"]["precision"]
        precision = self.precision = precision or stored
        wanted = "fp32" if precision == "bf16" else precision  # bf16 is OpenVINO's execution of the fp32 graph
        if stored != wanted:
            raise InputError(f"{path}: an {stored} export, asked to run as {precision}; export it as {wanted} "
                             f"(`micropatch export ... --precision {wanted}`) or run --precision {stored}")
        self.threads = threads or os.cpu_count() or 1
        self.run = self.onnxruntime_session() if runtime == "onnxruntime" else self.openvino_request()

    def onnxruntime_session(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        return lambda batch: session.run([OUTPUT], {INPUT: batch})[0]

    def openvino_request(self):
        import openvino as ov

        core = ov.Core()
        if self.precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise InputError(f"{self.path}: bf16 needs a CPU with bf16 instructions (AVX512-BF16 or AMX); this one "
                             "has none: run --precision int8 or fp32")
        window = self.recipe["inference"]["window"]
        # One stream per core, each a one-thread request on its own share of the batch: a 128 px window is too
        # small for two threads to share one convolution well (25 % more windows per second here than one
        # two-thread request)
        streams = self.threads
        size = max(1, self.recipe["inference"]["batch_size"] // streams)
        config = {"INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams,
                  "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32"}

        def compiled(batch: int):
            model = core.read_model(str(self.path))
            model.reshape([batch, 1, window, window])  # -1: any batch size
            return core.compile_model(model, "CPU", config)

        # full shares through a static shape (15 % faster here than a free batch size); the rest, where fast
        # mode's last rounds hold a few windows, through a free one rather than padded
        queue, rest = ov.AsyncInferQueue(compiled(size), streams), compiled(-1).create_infer_request()

        def run(batch: np.ndarray) -> np.ndarray:
            full = len(batch) // size * size
            outputs = [None] * (full // size)

            def keep(request, k):
                outputs[k] = request.get_output_tensor(0).data.copy()

            queue.set_callback(keep)
            for k in range(0, full, size):
                queue.start_async({0: batch[k:k + size]}, k // size)
            queue.wait_all()
            if full < len(batch):
                outputs.append(rest.infer({0: batch[full:]})[0].copy())
            return np.concatenate(outputs)
        return run

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        logits = self.run(np.ascontiguousarray(batch.detach().float().cpu().numpy()))
        return torch.from_numpy(logits).to(batch.device)


def check_runtime(runtime: str, precision: str) -> None:
    if runtime not in RUNTIMES:
        raise ValueError(f"infer.runtime '{runtime}': choose one of {RUNTIMES}")
    if precision not in RUNTIME_PRECISIONS[runtime]:
        raise ValueError(f"infer.precision '{precision}' does not run on {runtime}: choose one of "
                         f"{RUNTIME_PRECISIONS[runtime]}")


def fp32_export(checkpoint: Path, sha256: str) -> Path:
    """The checkpoint's fp32 export, written once into the model cache and reused (keyed by its sha256)."""
    path = model_cache() / "onnx" / f"{sha256[:16]}-fp32-opset{OPSET}.onnx"
    if not path.is_file():
        log.info("exporting %s to ONNX once (%s)", checkpoint, path)
        export_onnx(*load_checkpoint(checkpoint), path, sha256)
    return path


def load_model(path: Path, runtime: str, precision: str | None, threads: int | None = None,
               device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """(model, recipe) ready for predict_probability with params runtime/precision.

    path: a micropatch checkpoint (.safetensors) or an export (.onnx). For onnxruntime / openvino a checkpoint runs
    through its fp32 export (cached), or for int8 through the int8 export beside it, which must come from the same
    checkpoint (its recorded sha256).
    """
    path = Path(path)
    if precision is not None:
        check_runtime(runtime, precision)
    if path.suffix == ".onnx":
        if runtime == "torch":
            raise InputError(f"{path}: an ONNX export runs on onnxruntime or openvino (--runtime), torch runs the "
                             "checkpoint it was exported from")
        exported = ExportedModel(path, runtime, precision, threads)
        return exported, exported.recipe
    if runtime == "torch":
        return load_checkpoint(path, device)
    if not path.is_file():
        raise InputError(f"{path}: model checkpoint not found")
    sha256 = sha256_file(path)  # the export must come from this very file
    if precision == "int8":
        onnx_path = int8_export_path(path)
        if not onnx_path.is_file():
            raise InputError(f"{path}: no int8 export beside it ({onnx_path.name}); write it once with `micropatch "
                             f"export {path} --precision int8 --calibration TRAINING_PHOTOS...`, or run --precision "
                             "fp32")
    else:
        onnx_path = fp32_export(path, sha256)
    if precision is None:  # a checkpoint's own precision is fp32
        precision = "fp32"
    source = read_recipe(onnx_path)["onnx"]["source_sha256"]
    if source != sha256:
        raise InputError(f"{onnx_path}: exported from another checkpoint than {path} (sha256 {source[:12]}..., not "
                         f"{sha256[:12]}...): export it again from this one")
    exported = ExportedModel(onnx_path, runtime, precision, threads)
    return exported, exported.recipe
