"""`micropatch datasets`: print one JSON object describing a dataset root; exit 1 when it is broken or has problems."""
from __future__ import annotations

import json
from pathlib import Path

from micropatch.data.datasets import ADAPTERS
from micropatch.data.datasets.inspection import inspect_root


def add_parser(sub) -> None:
    actions = sub.add_parser("datasets", help="dataset tools").add_subparsers(dest="action", required=True)
    parser = actions.add_parser("inspect", help="check a dataset root before a long run: one JSON object, exit 1 "
                                                 "on a broken root or any problem")
    parser.add_argument("adapter", choices=ADAPTERS)
    parser.add_argument("root", type=Path, help="the dataset's top folder or the folder above it")
    parser.add_argument("--images", type=Path, help="maples_dr: the MESSIDOR photographs' root (Base11 ... Base34)")
    parser.add_argument("--uncertain-as-lesion", action="store_true",
                        help="retinal_lesions: value 127 (a lesion the authors excluded) counts as lesion")
    parser.set_defaults(func=run)


def run(args) -> int:
    """Print one JSON object describing a dataset root; exit 1 when it is broken or has problems."""

    options = {"images": args.images} if args.images else {}
    if args.uncertain_as_lesion:
        options["uncertain_as_lesion"] = True
    report = inspect_root(args.adapter, args.root, **options)
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1
