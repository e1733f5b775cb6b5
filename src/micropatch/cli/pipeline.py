"""`micropatch pipeline`: write dvc.yaml for the root project and every record (or check that they are current)."""
from __future__ import annotations

import logging
import sys

from micropatch.project.pipeline import is_current, projects, write


def add_parser(sub) -> None:
    parser = sub.add_parser("pipeline", help="write dvc.yaml of the root project and of every record under results/ "
                                             "from params.yaml and the stage scripts' imports")
    parser.add_argument("--check", action="store_true",
                        help="only check that every dvc.yaml is current (exit 1 if not)")
    parser.set_defaults(func=run)


def run(args) -> int:
    """Write dvc.yaml for the root project and every record (or check that they are current)."""
    stale = []
    for project in projects():
        if args.check:
            if not is_current(project):
                stale.append(str(project / "dvc.yaml"))
        elif write(project):
            logging.info("pipeline: wrote %s", project / "dvc.yaml")
    if stale:
        print(f"out of date (run `micropatch pipeline`): {', '.join(stale)}", file=sys.stderr)
    return 1 if stale else 0
