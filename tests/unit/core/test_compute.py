"""The reproducible compute mode: a seeded training gives committed weight bytes on every x86-64 CPU of a vendor from
AVX2 up (one hash per vendor), and seeded networks give committed maps on both."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.workspace import REPO

GOLDEN = REPO / "tests" / "helpers" / "golden_training.py"
# sha256 of the checkpoint tests/helpers/golden_training.py writes in reproducible mode with 2 threads, since MKL's
# branch is COMPATIBLE, per CPU vendor. An AMD EPYC (Zen 4), the first AMD machine to run the COMPATIBLE pin
# (2026-12-07), gave other weights than the Intel Xeon with AVX-512 VNNI and AMX; its inference maps (below) are the
# Xeon's. Most likely MKL's COMPATIBLE GEMM: on the EPYC, MKL's branch moves a convolution's weight gradient and a
# matmul, not the convolution's output or input gradient (docs/explanation/same-bytes.md). Under the AVX2 branch
# pinned before, AMD EPYCs gave 4cc5cfa0..., the Xeon 3fcfd40f...
GOLDEN_SHA256_BY_VENDOR = {"GenuineIntel": "448410f227b0b0ed793bce7fbe9ffa942bbde4b26d4368318e3c3297aec4517a",
                           "AuthenticAMD": "47e4502d7ce5c2bb544fde67c634d24743322e8badeeafb8f63c0fb377aeaad5"}


def cpu_vendor() -> str:
    """/proc/cpuinfo's vendor_id (GenuineIntel, AuthenticAMD)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("vendor_id"):
            return line.split(":", 1)[1].strip()
    return "unknown"


GOLDEN_SHA256 = GOLDEN_SHA256_BY_VENDOR.get(cpu_vendor(), "no weights measured for this CPU vendor")


def golden(mode: str, tmp_path: Path, threads: int = 2, env: dict | None = None) -> str:
    out = subprocess.run([sys.executable, str(GOLDEN), mode, str(threads), str(tmp_path / f"{mode}.safetensors")],
                         capture_output=True, text=True, env=env or dict(os.environ), check=True)
    return out.stdout.strip().splitlines()[-1]


def test_seeded_training_gives_the_committed_weights(tmp_path):
    assert golden("reproducible", tmp_path) == GOLDEN_SHA256, f"CPU vendor {cpu_vendor()}"



def test_committed_weights_hold_with_opencv_and_numpy_kernels_switched_down(tmp_path):
    """Another machine's libraries pick other kernels: none of that may reach the weights."""
    env = dict(os.environ, OPENCV_CPU_DISABLE="AVX512_SKX,AVX2,FMA3,AVX,FP16",
               NPY_DISABLE_CPU_FEATURES="AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX2 FMA3")
    assert golden("reproducible", tmp_path, env=env) == GOLDEN_SHA256


def test_committed_weights_hold_when_mkl_dispatches_as_on_another_vendors_cpu(tmp_path):
    """On a CPU that is not Intel's, MKL ignores every fixed branch but COMPATIBLE and takes its own dispatch (AUTO).
    Capping MKL's dispatch at SSE4.2 plays that here: under the AVX2 branch pinned before, the weights moved
    (3fcfd40f... to 3ac41dba... on an Intel Xeon), as they did between AMD and Intel machines."""
    env = dict(os.environ, MKL_ENABLE_INSTRUCTIONS="SSE4_2")
    assert golden("reproducible", tmp_path, env=env) == GOLDEN_SHA256


# An AVX2-only CPU's fast mode, played on any CPU from AVX2 up: oneDNN's and ATen's dispatch capped at AVX2 (a cap
# is a no-op where the CPU has no more), so the checks below run on AVX2-only machines too, where the cross-vendor
# promise matters most.
AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


@pytest.mark.parametrize("cap", [{}, AVX2_ONLY], ids=["this CPU", "as an AVX2-only CPU"])
def test_without_the_pin_the_weights_change(tmp_path, cap):
    """compute: fast lets oneDNN take its own kernels (brgemm, blocked by the CPU's caches), and the bytes move,
    on this CPU and as an AVX2-only CPU: the pin is what holds them."""
    assert golden("fast", tmp_path, env=dict(os.environ, **cap)) != GOLDEN_SHA256


def test_thread_count_is_part_of_the_pin(tmp_path):
    """One thread splits reductions differently: which is why the mode fixes the count, not the machine."""
    assert golden("reproducible", tmp_path, threads=1) != GOLDEN_SHA256


def test_configure_refuses_when_torch_was_imported_first():
    code = ("import torch, os; os.environ.pop('ATEN_CPU_CAPABILITY', None)\n"
            "from micropatch.core import compute\n"
            "try:\n    compute.configure('reproducible')\n"
            "except compute.ComputeModeError as e:\n    print('refused', e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("refused") and "before torch is imported" in out


def test_fast_mode_keeps_its_threads_and_the_fast_kernels():
    """fast: compute.threads intra-op threads (the study's two queue workers, one core each), oneDNN left on."""
    code = ("from micropatch.core import compute\ncompute.configure('fast', 1)\nimport torch, os\n"
            "print(torch.get_num_threads(), torch.backends.mkldnn.enabled, os.environ['OMP_NUM_THREADS'])")
    env = {k: v for k, v in os.environ.items() if k not in compute_env_names()}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == ["1", "True", "1"]


def compute_env_names() -> set[str]:
    from micropatch.core import compute

    return set(compute.REPRODUCIBLE_ENV) | set(compute.THREAD_ENV)


def test_settings_are_recorded_and_validated():
    from micropatch.core import compute

    settings = compute.settings("reproducible", 2)
    assert settings["env"]["MKL_CBWR"] == "COMPATIBLE,STRICT" and settings["env"]["OMP_NUM_THREADS"] == "2"
    assert settings["mkldnn"] is False and json.loads(json.dumps(settings)) == settings
    assert compute.settings("fast", 1) == {"mode": "fast", "threads": 1,
                                           "env": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}}
    assert compute.settings("fast") == {"mode": "fast"}  # no threads given: the machine's default
    assert compute.settings("reproducible")["threads"] == compute.DEFAULT_THREADS
    with pytest.raises(ValueError, match="compute.mode"):
        compute.settings("turbo")
    with pytest.raises(ValueError, match="threads"):
        compute.settings("reproducible", 0)


GOLDEN_INFERENCE = REPO / "tests" / "helpers" / "golden_inference.py"
# sha256 of the uint8 maps tests/helpers/golden_inference.py writes in reproducible mode with 2 threads.
# paper and fast are one map for the U-Net (fast refines every window of a random-init network); the local net's
# fast map skips windows and differs from its paper map, which pins fast mode's own paths.
GOLDEN_MAPS = {"paper_fp32": "124a45f47c4e4ff99567023ae142d592f55d2bba8964ab2a74b2ea2086d4354e",
               "fast_fp32": "124a45f47c4e4ff99567023ae142d592f55d2bba8964ab2a74b2ea2086d4354e",
               "local_paper_fp32": "8ace9ade5efe23b76bc6a821e8f433b1af978eec5a2e87b407768987ebc478e7",
               "local_fast_fp32": "76463cf175d5d1dc516f978887212fe9894f3058645a926c98b66ac3d8226c9e"}


def golden_maps(mode: str, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, str(GOLDEN_INFERENCE), mode, "2"], capture_output=True, text=True,
                         env=env or dict(os.environ), check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_probability_maps_are_the_committed_bytes_in_paper_and_fast_mode():
    assert GOLDEN_MAPS["local_paper_fp32"] != GOLDEN_MAPS["local_fast_fp32"]  # fast mode's own paths are pinned
    assert golden_maps("reproducible") == GOLDEN_MAPS


def test_maps_hold_when_mkl_dispatches_as_on_another_vendors_cpu():
    """As for the weights: under the AVX2 branch the maps were 75b80d62... on AMD EPYCs and 81ac2ab1... here."""
    assert golden_maps("reproducible", dict(os.environ, MKL_ENABLE_INSTRUCTIONS="SSE4_2")) == GOLDEN_MAPS


@pytest.mark.parametrize("cap", [{}, AVX2_ONLY], ids=["this CPU", "as an AVX2-only CPU"])
def test_without_the_pin_the_maps_change(cap):
    assert golden_maps("fast", dict(os.environ, **cap))["paper_fp32"] != GOLDEN_MAPS["paper_fp32"]
