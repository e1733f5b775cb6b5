"""`micropatch audit`: audit a split manifest (and patch sets) for leakage; exit 1 on any leak."""
from __future__ import annotations

from pathlib import Path

from micropatch.data.audit import run_audit
from micropatch.data.duplicates import PHASH_THRESHOLD


def add_parser(sub) -> None:
    parser = sub.add_parser("audit", help="check a split manifest and patch sets for leakage (exit 1 on any leak)")
    parser.add_argument("--manifest", default="data/splits/manifest.csv")
    parser.add_argument("--patches", default="data/patches", help="folder of patch sets (train/, val/ with index.csv)")
    parser.add_argument("--no-patches", action="store_true", help="audit the manifest only (as CI does)")
    parser.add_argument("--out", default="metrics", help="where leakage.json and leakage_report.md go")
    parser.add_argument("--threshold", type=int, default=PHASH_THRESHOLD,
                        help="near-duplicate Hamming distance (bits of 256)")
    parser.set_defaults(func=run)


def run(args) -> int:
    """Audit a split manifest (and patch sets) for leakage; exit 1 on any leak."""
    return run_audit(Path(args.manifest), None if args.no_patches else Path(args.patches), Path(args.out),
                     args.threshold)
