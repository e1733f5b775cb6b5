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


def run_audit(manifest: str, patches: str | None, out_dir: str, threshold: int) -> int:
    """Audit a manifest (and the patch sets under `patches`), write leakage.json + report; 1 on any leak."""
    from . import audit
    from .io import write_json, write_text
    from .patches import read_patch_index
    from .split import read_manifest

    rows = read_manifest(manifest)
    patch_sets = {}
    if patches:
        for index in sorted(Path(patches).glob("*/index.csv")):
            patch_sets[index.parent.name] = read_patch_index(index.parent)
    leaks = audit.audit_manifest(rows, threshold) + audit.audit_patches(rows, patch_sets)
    counts = audit.summary(leaks, rows, patch_sets, threshold)
    text = audit.report(leaks, counts)
    write_json(Path(out_dir) / "leakage.json", counts)
    write_text(Path(out_dir) / "leakage_report.md", text)
    print(text, end="")
    return 1 if leaks else 0


def cmd_audit(args) -> int:
    """Audit a split manifest (and patch sets) for leakage; exit 1 on any leak."""
    return run_audit(args.manifest, None if args.no_patches else args.patches, args.out, args.threshold)


def main(argv: list[str] | None = None) -> int:
    logs.setup()
    parser = argparse.ArgumentParser(prog="micropatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth", help="write the synthetic default dataset (IDRiD layout)")
    synth.add_argument("--out", default="data/sources/synthetic")
    synth.add_argument("--params", default="params.yaml")
    synth.set_defaults(func=cmd_synth)
    aud = sub.add_parser("audit", help="check a split manifest and patch sets for leakage (exit 1 on any leak)")
    aud.add_argument("--manifest", default="data/splits/manifest.csv")
    aud.add_argument("--patches", default="data/patches", help="folder of patch sets (train/, val/ with index.csv)")
    aud.add_argument("--no-patches", action="store_true", help="audit the manifest only (as CI does)")
    aud.add_argument("--out", default="metrics", help="where leakage.json and leakage_report.md go")
    aud.add_argument("--threshold", type=int, default=None, help="near-duplicate Hamming distance (bits of 256)")
    aud.set_defaults(func=cmd_audit)
    args = parser.parse_args(argv)
    if getattr(args, "threshold", 0) is None:
        from .audit import PHASH_THRESHOLD

        args.threshold = PHASH_THRESHOLD
    try:
        return args.func(args) or 0
    except InputError as err:
        print(f"micropatch {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
