"""Every benchmark script still runs (--quick) and ends with its JSON line, so none of them rots unseen.

Their figures are not checked here: speed and memory targets live in the scripts and the README, never in a
timed test. Scripts that read the default pipeline's outputs (a trained model, preprocessed images) need
`make run` first, as CI does; without them they are skipped with that reason.
"""
import json
import subprocess
import sys

import pytest
from helpers.workspace import REPO, require_idrid

pytestmark = pytest.mark.slow
MODEL, PREPROCESSED = REPO / "data/model/release.safetensors", REPO / "data/preprocessed"
BENCHMARKS = {
    "compute": [], "mask_rule": [], "score": [], "train": [], "spread": [],
    "infer": ["--model", str(MODEL), "--preprocessed", str(PREPROCESSED), "--manifest",
              str(REPO / "data/splits/manifest.csv")],
    "patchify": ["--pipeline", str(REPO)],
    "camera_shift": ["--record", str(REPO)],
    "record_ablations": ["--record", str(REPO), "--domain", "synthetic_val", "--tta"],
    "runtimes": [],
    "study": ["--project", str(REPO / "results/study-combinations")],
}
NEEDS_PIPELINE = {"infer", "patchify", "camera_shift", "record_ablations", "runtimes"}
NEEDS_IDRID = {"mask_rule"}  # real masks only


def test_every_script_is_listed():
    assert {p.stem for p in (REPO / "benchmarks").glob("*.py")} == set(BENCHMARKS)


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_benchmark_runs_quick_and_prints_json(name):
    if name in NEEDS_PIPELINE and not (MODEL.is_file() and PREPROCESSED.is_dir()):
        pytest.skip("needs the default pipeline's outputs: run `make run` first")
    if name in NEEDS_IDRID:
        require_idrid()
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{name}.py"), "--quick", *BENCHMARKS[name]],
                         capture_output=True, text=True, cwd=REPO, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert isinstance(json.loads(out.stdout.strip().splitlines()[-1]), dict)


@pytest.mark.parametrize("path", sorted((REPO / "benchmarks/results").glob("*.json")), ids=lambda p: p.name)
def test_committed_results_are_the_json_a_run_printed(path):
    """The README quotes these files: each must be a run's JSON object (compute.json once held only a line of
    `time`'s output, and nothing noticed)."""
    assert isinstance(json.loads(path.read_text()), dict), path
