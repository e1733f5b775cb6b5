"""Break the code once per named test (a one-line mutation), run that test, record whether it fails and how
(issue: every test can fail). Run it on a scratch worktree, never on a checkout you work in:

    git worktree add --detach /tmp/mut HEAD
    .venv/bin/python tests/mutation/mutate.py /tmp/mut [NAME-FRAGMENT ...] > mutations.jsonl

Each mutation is undone after its test (and on Ctrl-C). Prints one JSON line per mutation; exit 1 when any
mutation's test passed (the test could not see that break)."""
import json
import os
import subprocess
import sys
from pathlib import Path

M = [
 ("GlobalBatchNorm2d: each rank's own variance", "src/micropatch/training/parallel.py",
  "var = _SumAcrossProcesses.apply((centred * centred).sum((0, 2, 3))) / total[-1]",
  "var = (centred * centred).sum((0, 2, 3)) / (total[-1] / 2)",
  "tests/integration/test_distributed.py::test_global_batchnorm_uses_the_whole_batchs_statistics_across_two_processes"),
 ("lesion sensitivity 0 instead of NaN without true lesions", "src/micropatch/evaluation/metrics.py",
  'lesion_sensitivity = float(found / lesions) if lesions else float("nan")',
  'lesion_sensitivity = float(found / lesions) if lesions else 0.0',
  "tests/unit/evaluation/test_lesion_metrics.py::test_without_true_lesions_sensitivity_and_froc_are_undefined_and_fps_are_counted"),
 ("bootstrap interval widened", "src/micropatch/evaluation/metrics.py",
  "float(np.percentile(means, 97.5))", "float(np.percentile(means, 99.5))",
  "tests/unit/evaluation/test_metrics.py::test_summary_pools_pixels_and_bootstraps_per_image_dice"),
 ("degenerate share 0 (only empty maps flagged)", "src/micropatch/evaluation/metrics.py",
  "DEGENERATE_SHARE = 0.1", "DEGENERATE_SHARE = 0.0",
  "tests/unit/evaluation/test_metrics.py::test_a_map_marking_under_a_tenth_of_the_true_pixels_at_half_is_flagged"),
 ("aupr_11 without its start at recall 0, precision 1", "src/micropatch/evaluation/metrics.py",
  "return float(np.trapezoid(precision, recall))", "return float(np.trapezoid(precision[1:], recall[1:]))",
  "tests/unit/evaluation/test_metrics.py::test_a_perfect_map_scores_one_on_both_and_is_not_flagged"),
 ("AP by trapezoids", "src/micropatch/evaluation/metrics.py",
  "return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))",
  "return float(np.trapezoid(np.concatenate([[1.0], precision]), np.concatenate([[0.0], recall])))",
  "tests/unit/evaluation/test_metrics.py::test_ap_matches_scikit_learn_on_random_maps"),
 ("save_npy writes in place, not through a temporary file", "src/micropatch/core/fileio.py",
  'with atomic_path(path) as tmp, open(tmp, "wb") as f:\n        np.save(f, array)',
  'with open(path, "wb") as f:\n        np.save(f, array)',
  "tests/integration/test_interruption.py::test_a_write_killed_midway_leaves_the_old_file"),
 ("square tiles every half window", "src/micropatch/training/squares.py",
  "window_starts(self.images.shape[1], patch, patch)", "window_starts(self.images.shape[1], patch, patch // 2)",
  "tests/integration/test_study_baseline.py::test_tiles_cover_every_square_and_overlap_only_where_the_last_is_flush_with_the_edge"),
 ("MKL's branch not pinned", "src/micropatch/core/compute.py",
  '"MKL_CBWR": "COMPATIBLE,STRICT",', '"MKL_CBWR": "AUTO",',
  "tests/unit/core/test_compute.py::test_committed_weights_hold_when_mkl_dispatches_as_on_another_vendors_cpu"),
 ("MKL's branch not pinned (maps, AVX2-only play)", "src/micropatch/core/compute.py",
  '"MKL_CBWR": "COMPATIBLE,STRICT",', '"MKL_CBWR": "AUTO",',
  "tests/unit/core/test_compute.py::test_maps_hold_when_mkl_dispatches_as_on_another_vendors_cpu"),
 ("fast mode never refines", "src/micropatch/inference/windows.py",
  "candidates = (mean >= refine_threshold).any(axis=0) & inside", "candidates = (mean > 1.0).any(axis=0) & inside",
  "tests/unit/inference/test_model_and_inference.py::test_fast_marks_only_what_paper_marks_and_is_exact_wherever_it_could_matter"),
 ("--threshold up to 2 accepted", "src/micropatch/inference/predict.py",
  "if not 0.0 <= value <= 1.0:", "if not 0.0 <= value <= 2.0:",
  "tests/integration/test_predict.py::test_bad_input_is_one_line_exit_2_before_the_model_loads_and_leaves_nothing"),
 ("a hand-written figure in the README", "README.md",
  "# micropatch", "# micropatch\n\nTraining takes 17 minutes on 2 cores.",
  "tests/unit/project/test_readme.py::test_no_page_holds_a_hand_written_figure"),
 ("CI no longer requires IDRiD", ".ci/run",
  "MICROPATCH_REQUIRE_IDRID=1", "MICROPATCH_REQUIRE_IDRID=0",
  "tests/integration/test_ci.py"),
 ("make test audits a fixed list", "Makefile",
  "MANIFESTS := $(wildcard data/splits/manifest.csv results/*/data/splits/manifest.csv)",
  "MANIFESTS := data/splits/manifest.csv results/idrid-ma-best/data/splits/manifest.csv",
  "tests/integration/test_ci.py::test_make_test_lints_and_audits_every_committed_manifest"),
 ("score benchmark's committed memory growth", "benchmarks/results/score.json",
  '"rss_growth_ratio": 1.1206143874872785', '"rss_growth_ratio": 1.6',
  "tests/integration/test_benchmarks.py::test_the_quick_run_matches_the_committed_results_shape_and_figures[score]"),
]

def main() -> None:
    root = Path(sys.argv[1]).resolve()
    only = sys.argv[2:]
    out = []
    for name, file, old, new, test in M:
        if only and not any(o in name for o in only):
            continue
        path = root / file
        text = path.read_text()
        if text.count(old) < 1:
            out.append({"mutation": name, "error": f"pattern not found in {file}"})
            print(json.dumps(out[-1]), flush=True)
            continue
        path.write_text(text.replace(old, new, 1))
        try:
            run = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", test],
                                 cwd=root, capture_output=True, text=True, timeout=1800,
                                 env=os.environ | {"PYTHONPATH": str(root / "src")})
            lines = run.stdout.splitlines()
            errors = [line for line in lines if line.startswith("E ")][:3]
            failed = [line for line in lines if line.startswith("FAILED")][:1]
            out.append({"mutation": name, "file": file, "test": test, "exit": run.returncode, "failed": failed,
                        "E": errors, "tail": lines[-1] if lines else run.stderr[-300:]})
        finally:
            path.write_text(text)
        print(json.dumps(out[-1]), flush=True)
    sys.exit(1 if any(row.get("exit") == 0 for row in out) else 0)


if __name__ == "__main__":
    main()
