"""The `micropatch` command: what a user runs by hand, beside the DVC stages."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import logs
from .io import InputError, load_params


def cmd_synth(args) -> None:
    """Write the embedded synthetic default (IDRiD layout) from the `synthetic` params section."""
    import shutil
    import tempfile

    from .synthetic import SyntheticSpec, write_idrid_layout

    params = load_params("synthetic", args.params)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:  # build aside, then swap in: an interrupted run never leaves a half-written dataset
        spec = SyntheticSpec(width=params["width"], height=params["height"])
        ids = write_idrid_layout(tmp, params["n_images"], params["seed"], spec)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logging.info("synth: %d images (%dx%d) in %s", len(ids), params["width"], params["height"], out)


def main(argv: list[str] | None = None) -> int:
    logs.setup()
    parser = argparse.ArgumentParser(prog="micropatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth", help="write the synthetic default dataset (IDRiD layout)")
    synth.add_argument("--out", default="data/sources/synthetic")
    synth.add_argument("--params", default="params.yaml")
    synth.set_defaults(func=cmd_synth)
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except InputError as err:
        print(f"micropatch {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
