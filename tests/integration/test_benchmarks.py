"""Every benchmark script still runs (--quick) and ends with its JSON line, and what it prints has the shape of the
result committed for it, with the figures that do not depend on the data's size agreeing.

Speed and memory targets live in the scripts and docs, never in a timed test. Scripts that read the default
pipeline's outputs (a trained model, preprocessed images) need `make run` first, as CI does.
"""
import json
import subprocess
import sys

import pytest
from helpers.workspace import REPO, require_idrid

pytestmark = pytest.mark.slow
MODEL, PREPROCESSED = REPO / "data/model/release.safetensors", REPO / "data/preprocessed"
RESULTS = REPO / "benchmarks" / "results"
BENCHMARKS = {
    "compute": [], "mask_rule": [], "score": [], "train": [], "spread": [], "datasets_inspect": [],
    # the pipeline's own paper maps of its val images: the agreement check need not compute them again
    "infer": ["--model", str(MODEL), "--preprocessed", str(PREPROCESSED), "--manifest",
              str(REPO / "data/splits/manifest.csv"), "--paper-predictions",
              str(REPO / "data/predictions/synthetic_val")],
    "patchify": ["--pipeline", str(REPO)],
    "camera_shift": [],
    "runtimes": [],
    "study": ["--project", str(REPO / "results/study-combinations")],
}
NEEDS_PIPELINE = {"infer", "patchify", "camera_shift", "runtimes", "compute", "spread"}
NEEDS_IDRID = {"mask_rule"}  # real masks only
# The committed result(s) each script's quick output is compared with.
COMMITTED = {"compute": ["compute.json"], "datasets_inspect": ["datasets_inspect.json"],
             "mask_rule": ["mask_rule.json"], "score": ["score.json"], "train": ["train.json"],
             "spread": ["spread.json"], "infer": ["infer.json"],
             "patchify": ["patchify.json"], "camera_shift": ["camera_shift_tune.json", "camera_shift_val.json"],
             "runtimes": ["runtimes.json"], "study": ["study.json"]}


def quick(name: str) -> dict:
    if name in NEEDS_PIPELINE and not (MODEL.is_file() and PREPROCESSED.is_dir()):
        pytest.fail("needs the default pipeline's outputs: run `make run` first (as .ci/run does)")
    if name in NEEDS_IDRID:
        require_idrid()
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{name}.py"), "--quick", *BENCHMARKS[name]],
                         capture_output=True, text=True, cwd=REPO, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    printed = json.loads(out.stdout.strip().splitlines()[-1])
    assert isinstance(printed, dict)
    return printed


def committed(name: str) -> list[dict]:
    return [json.loads((RESULTS / file).read_text()) for file in COMMITTED[name]]


# Per script: what its quick run must share with the committed result (a key, a figure independent of the data).
def same_keys(printed: dict, result: dict, *paths: str) -> None:
    for path in paths:
        a, b = printed, result
        for part in path.split("."):
            assert part in a, f"quick output lacks {path}"
            assert part in b, f"committed result lacks {path}"
            a, b = a[part], b[part]


def check_compute(printed: dict, result: dict) -> None:
    same_keys(printed, result, "reproducible.patches_per_s", "fast.patches_per_s", "pixels_differing")
    # the 8-bit fp32 maps do not differ between the compute modes, on any frame
    assert printed["pixels_differing"]["reproducible_vs_fast"]["fp32"] == 0
    assert result["pixels_differing"]["reproducible_vs_fast"]["fp32"] == 0


def check_mask_rule(printed: dict, result: dict) -> None:
    same_keys(printed, result, "as shipped.stray_fraction_max", "jpeg q95.stray_fraction_min")
    assert printed["as shipped"]["stray_fraction_max"] == result["as shipped"]["stray_fraction_max"] == 0
    assert printed["jpeg q95"]["stray_fraction_min"] > 0.01 and result["jpeg q95"]["stray_fraction_min"] > 0.01


def check_datasets_inspect(printed: dict, result: dict) -> None:
    same_keys(printed, result, "layouts.as shipped.median_s", "layouts.with a test half.per_image_s")
    for run in (printed, result):  # the larger layout adds a test half of half the training images, and no problem
        shipped, larger = run["layouts"]["as shipped"], run["layouts"]["with a test half"]
        assert larger["images"] == shipped["images"] * 3 // 2 and shipped["problems"] == larger["problems"] == 0
    assert result["layouts"]["with a test half"]["images"] == 81  # the whole official segmentation set's size


def check_score(printed: dict, result: dict) -> None:
    same_keys(printed, result, "rss_growth_ratio", "seconds_per_image")
    # streamed: memory stays nearly flat in the number of images, at any image size
    assert printed["rss_growth_ratio"] < 1.5 and result["rss_growth_ratio"] < 1.5


def check_train(printed: dict, result: dict) -> None:
    same_keys(printed, result, "variants.baseline.patches_per_s", "variants.baseline.data_fraction")
    assert set(result["variants"]) == {"baseline", "contiguous", "bf16", "compile"}


def check_spread(printed: dict, result: dict) -> None:
    same_keys(printed, result, "variants")
    domains = lambda r: {d for v in r["variants"].values() for d in v}  # noqa: E731
    assert domains(printed) == domains(result)
    # the quick run checked the default's outputs out of this checkout's cache: a fresh copy's `dvc repro` then
    # runs nothing (a stage that ran would say the committed dvc.lock is not what this checkout built)
    assert printed["stages_run"] == {"seed 0": []}, printed["stages_run"]


def check_infer(printed: dict, result: dict) -> None:
    same_keys(printed, result, "paper_windows", "paper_s", "fast_s")
    assert printed["fast_windows"] < printed["paper_windows"] and result["fast_windows"] < result["paper_windows"]


def check_patchify(printed: dict, result: dict) -> None:
    same_keys(printed, result, "splits.train.patches", "splits.val.patches", "seconds")


def check_camera_shift(printed: dict, result: dict) -> None:
    same_keys(printed, result, "results.native.dice", "operating_point", "inference.rescale_fov")
    assert printed["inference"]["rescale_fov"] == result["inference"]["rescale_fov"] == "auto"  # predict's default
    assert printed["results"]["native"]["dice_vs_native"] == result["results"]["native"]["dice_vs_native"] == 1.0


def check_runtimes(printed: dict, result: dict) -> None:
    same_keys(printed, result, "openvino_int8_fast.seconds", "onnxruntime_int8_fast.seconds", "cpu_count")
    # every runtime x precision the quick run measures in fast mode was measured for the committed result too,
    # where the committed machine could: OpenVINO runs bf16 only on a CPU it reports BF16 for
    def possible_there(key: str) -> bool:
        runtime, precision = key.split("_")[:2]
        return runtime != "openvino" or precision in ("fp32", "int8") or precision.upper() in result[
            "openvino_capabilities"]

    assert {k for k in printed if k.endswith("_fast") and possible_there(k)} <= {k for k in result
                                                                                 if k.endswith("_fast")}


def check_study(printed: dict, result: dict) -> None:
    assert printed["combination"] == result["combination"]


def test_every_script_is_listed_and_has_a_committed_result():
    assert {p.stem for p in (REPO / "benchmarks").glob("*.py")} == set(BENCHMARKS) == set(COMMITTED)
    for name, files in COMMITTED.items():
        for file in files:
            assert (RESULTS / file).is_file(), f"{name}: {file} is not committed"


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_the_quick_run_matches_the_committed_results_shape_and_figures(name):
    printed = quick(name)
    for result in committed(name):
        globals()[f"check_{name}"](printed, result)


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_committed_results_are_the_json_a_run_printed(path):
    """The docs quote these files: each must be a run's JSON object (compute.json once held only a line of
    `time`'s output, and nothing noticed)."""
    assert isinstance(json.loads(path.read_text()), dict), path
