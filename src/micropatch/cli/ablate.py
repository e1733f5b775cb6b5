"""`micropatch ablate`: proxy experiments, variants of a record's params each trained for the protocol's short
budget, scored on the record's full tune and val photographs, a row each in a committed table."""
from __future__ import annotations

from pathlib import Path

from micropatch.core import compute
from micropatch.experiments.ablation import load_variants, main_args


def add_parser(sub) -> None:
    parser = sub.add_parser("ablate", help="proxy experiments: variants of a record's params trained for a short fixed "
                                           "budget, scored on its full tune and val photographs, one table row each")
    parser.add_argument("variants", nargs="+", help="names in the variants file (baseline, bce, scale050, ...)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--record", type=Path, default=Path("results/idrid-ma-best"),
                        help="the record whose params, split and preprocessed data the variants use")
    parser.add_argument("--variants-file", type=Path, default=Path("benchmarks/ablations.yaml"))
    parser.add_argument("--table", type=Path, default=Path("benchmarks/results/ablations.csv"),
                        help="the committed table a row per run is appended to")
    parser.set_defaults(func=run)


def run(args) -> int:
    """The runs (micropatch.experiments.ablation) in the protocol's compute mode, pinned before torch."""
    protocol, _ = load_variants(args.variants_file)
    compute.configure(protocol.get("compute.mode", "fast"), protocol.get("compute.threads"))
    return main_args(args)
