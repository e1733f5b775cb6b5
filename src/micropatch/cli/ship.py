"""`micropatch ship`: copy a record's released model into models/ with its model card."""
from __future__ import annotations

from pathlib import Path

from micropatch.project.modelcard import ship


def add_parser(sub) -> None:
    parser = sub.add_parser("ship", help="copy a record's released model into models/ with its model card")
    parser.add_argument("--record", type=Path, default=Path("results/idrid-ma-v2"))
    parser.add_argument("--out", type=Path, default=Path("models/idrid-ma"))
    parser.add_argument("--shift", type=Path, default=Path("benchmarks/results/camera_shift_val.json"),
                        help="camera-shift measurement to quote in the card (benchmarks/camera_shift.py)")
    parser.add_argument("--runtimes", type=Path, default=Path("benchmarks/results/runtimes_accuracy.json"),
                        help="runtime accuracy measurement to quote in the card (benchmarks/runtimes.py --parts "
                             "accuracy; quoted only when it measured the shipped file)")
    parser.set_defaults(func=run)


def run(args) -> int:
    """Copy a record's released model into models/ with its model card."""
    print(ship(args.record, args.out, args.shift, args.runtimes))
    return 0
