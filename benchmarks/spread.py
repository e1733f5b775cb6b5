"""How far the default's metrics move: with the seed (train.seed 0, 1, 2) and with the kernels (compute.mode
fast against reproducible, i.e. oneDNN's kernels for this CPU against the pinned MKL AVX2 path).

Each variant is the full default pipeline (`dvc repro` after `make data`'s restore) in its own copy of the
repository's tracked files, run one after the other. About 8 minutes per variant on 2 cores. --quick checks that
the script works, not the spread, without running the default again: its one variant is seed 0 in a copy that
checks out the default's outputs from this checkout's DVC cache (`make run` fills it), where `dvc repro` must then
run no stage (the committed dvc.lock is what this checkout built). Prints one line per variant and, last, one JSON
object with the pooled Dice, AP and FROC of every domain, the stages each variant's `dvc repro` ran, and the spread
(max - min) over seeds and over modes.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from micropatch.project.pipeline import fresh_copy

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"seed 0": {}, "seed 1": {"train": {"seed": 1}}, "seed 2": {"train": {"seed": 2}},
            "seed 0, compute fast": {"compute": {"mode": "fast"}}}


def domain_metrics(metrics: Path) -> dict:
    out = {}
    for path in sorted((metrics / "domains").glob("*.json")):
        ma = json.loads(path.read_text())["lesions"]["MA"]
        out[path.stem] = {k: ma[k] for k in ("dice", "ap", "aupr_11", "froc")}
    return out


def run_variant(changes: dict, cache: Path | None = None) -> tuple[dict, list[str]]:
    """The default pipeline with changes to its params, in a fresh copy: its domain metrics and the stages its
    `dvc repro` ran. With cache (a DVC cache holding the default's outputs), the copy checks those out first."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fresh_copy(work)
        params = yaml.safe_load((work / "params.yaml").read_text())
        for section, values in changes.items():
            params[section].update(values)
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        commands = [["git", "init", "-q"], ["dvc", "pull", "-q", "--remote", "embedded", "data.dvc"]]
        if cache:
            commands += [["dvc", "cache", "dir", str(cache)], ["dvc", "checkout", "-q", "dvc.yaml"]]
        for cmd in commands:
            subprocess.run(cmd, cwd=work, env=env, check=True, capture_output=True)
        repro = subprocess.run(["dvc", "repro"], cwd=work, env=env, check=True, capture_output=True, text=True)
        return domain_metrics(work / "metrics"), re.findall(r"Running stage '([^']+)'", repro.stdout + repro.stderr)


def spread(results: dict, names: list[str]) -> dict:
    domains = results[names[0]]
    return {d: {k: round(max(results[n][d][k] for n in names) - min(results[n][d][k] for n in names), 4)
                for k in domains[d]} for d in domains}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--committed-baseline", action="store_true",
                        help="take 'seed 0' from the repository's committed metrics/ instead of rerunning it (they "
                             "are its bytes when `dvc status` is clean: README, 'Same bytes')")
    args = parser.parse_args()
    cache = REPO / ".dvc" / "cache"
    if args.quick and not (cache / "runs").is_dir():
        sys.exit(f"{cache} holds no run of the default: run `make run` first (--quick checks its outputs out)")
    variants = {"seed 0": {}} if args.quick else VARIANTS
    results, stages_run = {}, {}
    if args.committed_baseline and not args.quick:
        results["seed 0"] = domain_metrics(REPO / "metrics")
        variants = {k: v for k, v in variants.items() if k != "seed 0"}
    for name, changes in variants.items():
        results[name], stages_run[name] = run_variant(changes, cache if args.quick else None)
        print(name, json.dumps(results[name]), f"({len(stages_run[name])} stages run)")
    summary = {"variants": results, "stages_run": stages_run}
    if not args.quick:
        summary["spread_over_seeds"] = spread(results, ["seed 0", "seed 1", "seed 2"])
        summary["spread_over_compute_modes"] = spread(results, ["seed 0", "seed 0, compute fast"])
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
