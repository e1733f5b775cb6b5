"""`micropatch study combinations`: the cross-dataset study, every training-set combination x seed as a DVC
experiment, then the strategies across seeds and the tables (micropatch.experiments.study)."""
from __future__ import annotations

from pathlib import Path

from micropatch.core import compute
from micropatch.experiments.study.project import StudyProject
from micropatch.experiments.study.runs import run_study


def add_parser(sub) -> None:
    parser = sub.add_parser("study", help="the cross-dataset study: its training-set combinations as DVC experiments, "
                                          "ensembles, SWA and model soups, and its tables")
    parser.add_argument("action", choices=["combinations"])
    parser.add_argument("--project", type=Path, default=Path("results/study-combinations"),
                        help="the study project folder (params.yaml with a `study` section), committed")
    parser.add_argument("--tables-only", action="store_true",
                        help="queue nothing: read the finished experiments and write the tables")
    parser.set_defaults(func=run)


def run(args) -> int:
    """Run the study (or only its tables) and print its two tables."""
    project = StudyProject(args.project)
    compute.configure(**project.params["compute"])  # before torch is imported: soups predict in the stages' mode
    run_study(project, queue=not args.tables_only)
    for name in ("strategies.md", "leave_one_out.md"):
        print((project.out / name).read_text())
    return 0
