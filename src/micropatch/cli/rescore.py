"""`micropatch rescore`: recompute a finished record's aupr_11, AP and degenerate flags from its committed curves."""
from __future__ import annotations

import logging
from pathlib import Path

from micropatch.core.fileio import InputError
from micropatch.evaluation.rescore import rescore_record

log = logging.getLogger("micropatch.rescore")


def add_parser(sub) -> None:
    parser = sub.add_parser("rescore", help="recompute a record's ranking figures (aupr_11, AP, degenerate) from "
                            "its committed PR curves, after a metric's definition changes; then `dvc commit` there")
    parser.add_argument("metrics", nargs="+", type=Path, help="a record's metrics folder (domains/, plots/pr/, "
                        "per_image/), e.g. results/idrid-4lesions/metrics")
    parser.set_defaults(func=run)


def run(args) -> int:
    """Rescore each metrics folder; log what moved."""
    for metrics in args.metrics:
        missing = [p for p in ("domains", "plots/pr", "per_image") if not (metrics / p).is_dir()]
        if missing:
            raise InputError(f"{metrics}: no {', '.join(missing)} folder; give a record's metrics folder (the score "
                             "stage's --out)")
    for metrics in args.metrics:
        for (domain, lesion), moved in rescore_record(metrics).items():
            log.info("%s %s %s: %s", metrics, domain, lesion,
                     ", ".join(f"{key} {before} -> {after}" for key, (before, after) in moved.items()))
    return 0
