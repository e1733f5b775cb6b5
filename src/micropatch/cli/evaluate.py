"""`micropatch evaluate`: score any method's probability maps against truth masks, paired by file stem; one JSON
object on stdout."""
from __future__ import annotations

import json
from pathlib import Path

from micropatch.evaluation.folders import evaluate
from micropatch.evaluation.postprocess import OPERATING_DEFAULTS


def add_parser(sub) -> None:
    parser = sub.add_parser("evaluate", help="score probability maps (PNG p=v/255 or .npy) against masks, by file stem")
    parser.add_argument("--pred", required=True, type=Path)
    parser.add_argument("--truth", required=True, type=Path)
    parser.add_argument("--fov", type=Path, help="field-of-view masks; pixels outside never count as predictions")
    parser.add_argument("--threshold", type=float, default=OPERATING_DEFAULTS["threshold"])
    parser.add_argument("--min-area", type=int, default=OPERATING_DEFAULTS["min_area"],
                        help="predicted components smaller than this (px) are removed before P/R/Dice")
    parser.add_argument("--csv", help="also write the per-image table here")
    parser.set_defaults(func=run)


def run(args) -> int:
    """Score the folders (micropatch.evaluation.folders) and print the summary."""
    print(json.dumps(evaluate(args.pred, args.truth, args.fov, args.threshold, args.min_area, args.csv), indent=2))
    return 0
