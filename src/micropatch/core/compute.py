"""Compute modes: what decides the bits of a CPU training or prediction, pinned before torch makes a kernel.

`reproducible` (the default of every stage that trains or predicts) gives the same bytes on every x86-64 CPU from
AVX2 up, whatever its core count: measured on an AVX-512 EPYC, each of these changed the weights of a seeded
3-step training when left free (benchmarks/compute.py and tests/test_compute.py):

- oneDNN's convolutions. Its AVX2 kernels are brgemm kernels whose blocking comes from the CPU's cache sizes, so
  pinning `ONEDNN_MAX_CPU_ISA=AVX2` makes one machine repeat itself, not two machines agree. So oneDNN (and
  NNPACK, which has its own instruction-set dispatch) is switched off, and convolutions run through ATen's
  im2col + MKL GEMM, whose code path `MKL_CBWR=COMPATIBLE,STRICT` pins (MKL's "conditional numerical
  reproducibility", with dynamic thread adjustment off). COMPATIBLE (SSE2 without the approximate rcpps/rsqrtps)
  because MKL honours every other branch on Intel CPUs only: elsewhere it silently takes AUTO, its own dispatch.
  The AVX2 branch, pinned here before, gave one set of bytes on AMD EPYCs and another on an Intel Xeon (measured:
  a fresh clone's `make run` rewrote the trained model). It costs about 1.5x on a convolution-heavy step.
- ATen's own vectorised kernels (reductions, BatchNorm, the loss): `ATEN_CPU_CAPABILITY=avx2`.
- The number of intra-op threads, which splits every parallel reduction: fixed (`compute.threads`), not taken
  from the machine's core count.
- fbgemm's int8 kernels: without VNNI, AVX2 and AVX-512 multiply-add pairs of int8 products in saturating int16,
  with VNNI they do not, so int8 maps depend on the CPU generation: `FBGEMM_ENABLE_INSTRUCTIONS=AVX2` everywhere.

`fast` leaves every library to pick its fastest path for the machine (oneDNN's convolutions among them): 2x to 5x
the training speed here, the same bits only on the same kind of machine. Given `compute.threads`, it keeps that
many intra-op threads too, so that several processes on one machine (the study's queue workers) do not each take
every core; without, the machine's default.
On a GPU neither mode promises bit identity across machines.
"""
from __future__ import annotations

import os
import sys

MODES = ("reproducible", "fast")
# The network's arithmetic on the CPU (train.precision, and torch's infer.precision besides int8): fp32, or bf16
# (autocast: convolutions in bfloat16 on CPUs with AVX512-BF16 or AMX; losses, BatchNorm statistics and weights in
# float32). CUDA always autocasts (float16), as before.
PRECISIONS = ("fp32", "bf16")
DEFAULT_THREADS = 2
# Read by the libraries when they initialise, so they must be in the environment before torch is imported.
REPRODUCIBLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE,STRICT",  # the one fixed branch MKL keeps on every vendor's CPU
    "MKL_DYNAMIC": "FALSE",
    "OMP_DYNAMIC": "FALSE",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
}
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


class ComputeModeError(RuntimeError):
    """The compute mode cannot be applied (torch was imported first under another environment)."""


def settings(mode: str = "reproducible", threads: int | None = None) -> dict:
    """The environment and library switches a mode sets: recorded in the model's metadata and in train.json.
    threads None: DEFAULT_THREADS in reproducible mode (the bits depend on it), the machine's choice in fast mode."""
    if mode not in MODES:
        raise ValueError(f"compute.mode must be one of {MODES}, got {mode!r}")
    if threads is None and mode == "reproducible":
        threads = DEFAULT_THREADS
    if threads is not None and not (isinstance(threads, int) and threads >= 1):
        raise ValueError(f"compute.threads must be a positive integer, got {threads!r}")
    if mode == "fast":
        if threads is None:
            return {"mode": "fast"}
        return {"mode": "fast", "threads": threads, "env": {name: str(threads) for name in THREAD_ENV}}
    env = REPRODUCIBLE_ENV | {name: str(threads) for name in THREAD_ENV}
    return {"mode": mode, "threads": threads, "env": env, "mkldnn": False, "nnpack": False}


def configure(mode: str = "reproducible", threads: int | None = None) -> dict:
    """Apply a compute mode to this process and return its settings; call it before anything imports torch.

    The environment half only works before torch is imported; if torch is already loaded under a different
    environment the bits would silently not be pinned, so that is refused.
    """
    applied = settings(mode, threads)
    wrong = {k: os.environ.get(k) for k, v in applied.get("env", {}).items() if os.environ.get(k) != v}
    if mode == "reproducible" and wrong and "torch" in sys.modules:
        raise ComputeModeError(
            f"compute mode 'reproducible' must be configured before torch is imported (the environment has "
            f"{wrong}); call micropatch.compute.configure() first, or run in a fresh process")
    if "torch" not in sys.modules:  # fast: torch.set_num_threads below is what counts once torch is loaded
        os.environ.update(applied.get("env", {}))
    import torch

    if "threads" in applied:
        torch.set_num_threads(applied["threads"])
    if mode == "reproducible":
        torch.backends.mkldnn.enabled = False
        torch.backends.nnpack.set_flags(False)
    return applied

