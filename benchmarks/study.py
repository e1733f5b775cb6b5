"""How long the cross-dataset study's ensembles and soups take for one combination of training sets, from the
study's finished experiments (`micropatch study combinations` first), and the records they give.

Times `Study.combination_strategies` (the ensemble, the uniform and greedy soups over encoder, decoder and full
model, each predicted and scored on the test domains) in this process, in the project's compute mode. To compare
two versions of the code, run it once with each on PYTHONPATH and compare the two JSON files: same records, other
seconds. The experiments are found by name among the repository's experiment refs (any baseline commit).

    python benchmarks/study.py --project results/study-combinations --combination synthetic+retinal_lesions \
        --work /tmp/study-bench --out benchmarks/results/study.json
"""
import argparse
import json
import subprocess
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, default=Path("results/study-combinations"))
    parser.add_argument("--combination", default="synthetic+retinal_lesions", help="datasets joined by '+'")
    parser.add_argument("--work", type=Path, help="an empty folder for the fetched maps and models")
    parser.add_argument("--quick", action="store_true", help="only find the combination's experiments (a fresh "
                        "clone has none): checks the script's machinery, times nothing")
    parser.add_argument("--out", type=Path, help="JSON: seconds, the records, the code's location")
    args = parser.parse_args()

    from micropatch.core import compute
    from micropatch.core.fileio import write_json
    from micropatch.experiments.study.project import StudyProject

    project = StudyProject(args.project)
    refs = project.git("for-each-ref", "--format=%(objectname) %(refname)", "refs/exps").split("\n")
    revs = {line.split()[1].rsplit("/", 1)[1]: line.split()[0] for line in refs if line.strip()}
    combination = tuple(args.combination.split("+"))
    runs = [r for r in project.runs() if r["combination"] == combination]
    missing = [r["name"] for r in runs if r["name"] not in revs]
    if args.quick:
        print(json.dumps({"combination": args.combination, "runs": len(runs), "finished": len(runs) - len(missing)}))
        return
    if args.work is None:
        parser.error("--work is required")
    project.work = args.work.resolve()
    compute.configure(**project.params["compute"])
    if not runs or missing:
        raise SystemExit(f"no finished experiment for {missing or args.combination}: run the study first")
    preprocessed = project.fetch("data/preprocessed", revs[runs[0]["name"]], project.work / "preprocessed")
    started = time.perf_counter()
    from micropatch.experiments.study import soups  # torch: after the compute mode

    records = soups.combination_strategies(project, combination, runs, revs, preprocessed)
    seconds = time.perf_counter() - started
    package = Path(soups.__file__).parents[3]  # src/ of the checkout whose code ran
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=package, capture_output=True, text=True)
    result = {"combination": args.combination, "seconds": round(seconds, 1),
              "code": f"{Path(soups.__file__).relative_to(package).as_posix()} at {commit.stdout.strip()}",
              "records": records}
    print(json.dumps({k: v for k, v in result.items() if k != "records"}))
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
