"""The `micropatch` command: what a user runs by hand, beside the DVC stages."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import logs
from .audit import PHASH_THRESHOLD
from .io import InputError, load_params


def cmd_synth(args) -> None:
    """Write the synthetic dataset of the `synthetic` params section in one dataset's official layout."""
    from .io import staged_folder
    from .synthetic import LAYOUT_WRITERS, SyntheticSpec

    params = load_params("synthetic", args.params)
    with staged_folder(args.out) as staging:  # an interrupted run never leaves a half-written dataset
        spec = SyntheticSpec(width=params["width"], height=params["height"])
        ids = LAYOUT_WRITERS[args.layout](staging, params["n_images"], params["seed"], spec)
    logging.info("synth: %d images (%dx%d, %s layout) in %s", len(ids), params["width"], params["height"],
                 args.layout, args.out)


def cmd_inspect(args) -> int:
    """Print one JSON object describing a dataset root; exit 1 when it is broken or has problems."""
    import json

    from .datasets.inspect import inspect_root

    report = inspect_root(args.adapter, args.root)
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


def run_audit(manifest: str, patches: str | None, out_dir: str, threshold: int) -> int:
    """Audit a manifest (and the patch sets under `patches`), write leakage.json + report; 1 on any leak."""
    from . import audit
    from .io import write_json, write_text
    from .patches import read_patch_index
    from .provenance import versions
    from .split import read_manifest

    rows = read_manifest(manifest)
    patch_sets = {}
    if patches:
        for index in sorted(Path(patches).glob("*/index.csv")):
            patch_sets[index.parent.name] = read_patch_index(index.parent)
    leaks = audit.audit_manifest(rows, threshold) + audit.audit_patches(rows, patch_sets)
    counts = audit.summary(leaks, rows, patch_sets, threshold)
    text = audit.report(leaks, counts)
    write_json(Path(out_dir) / "leakage.json", counts | {"versions": versions()})
    write_text(Path(out_dir) / "leakage_report.md", text)
    print(text, end="")
    return 1 if leaks else 0


def cmd_audit(args) -> int:
    """Audit a split manifest (and patch sets) for leakage; exit 1 on any leak."""
    return run_audit(args.manifest, None if args.no_patches else args.patches, args.out, args.threshold)


def _by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    files = {}
    for path in sorted(Path(folder).iterdir()):
        if path.suffix.lower() in suffixes:
            if path.stem in files:
                raise InputError(f"{folder}: two files share the stem '{path.stem}' ({files[path.stem].name}, {path.name})")
            files[path.stem] = path
    return files


def cmd_evaluate(args) -> int:
    """Score any method's probability maps against truth masks, paired by file stem; print one JSON object."""
    import json

    import numpy as np

    from .evaluation import score_images, write_rows
    from .inference import to_uint8
    from .io import read_mask, read_png

    preds = _by_stem(args.pred, (".png", ".npy"))
    truths = _by_stem(args.truth, (".png", ".tif", ".tiff", ".gif", ".bmp"))
    fovs = _by_stem(args.fov, (".png", ".tif", ".tiff", ".gif", ".bmp")) if args.fov else {}
    unpaired = sorted(set(preds) ^ set(truths))
    if unpaired or not preds:
        raise InputError(f"--pred {args.pred} and --truth {args.truth} must hold the same stems; unpaired: "
                         f"{unpaired[:10] or 'no predictions found'}")

    def probability(path: Path) -> np.ndarray:
        if path.suffix.lower() == ".npy":
            values = np.load(path, allow_pickle=False)
            if values.ndim != 2 or not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
                raise InputError(f"{path}: .npy predictions must be finite 2-D probabilities in [0, 1]")
            return to_uint8(values)
        values = read_png(path)
        if values.ndim != 2 or values.dtype != np.uint8:
            raise InputError(f"{path}: PNG predictions must be 8-bit single-channel (p = value / 255)")
        return values

    def items():
        for stem in sorted(preds):
            prob = probability(preds[stem])
            truth = read_mask(truths[stem], prob.shape)
            fov = read_mask(fovs[stem], prob.shape) if stem in fovs else None
            yield stem, prob, truth, fov

    summary, rows = score_images(items(), args.threshold, seed=0)
    if args.csv:
        write_rows(Path(args.csv), rows)
    keys = ("precision", "recall", "dice", "iou", "aupr_11", "ap", "lesion_sensitivity", "fps_per_image", "froc",
            "n_images")
    print(json.dumps({k: summary[k] for k in keys}, indent=2))
    return 0


def cmd_predict(args) -> int:
    """Lesion maps, masks, overlay and lesion list for each image; one JSON summary line per image on stdout."""
    import json

    import torch
    from tqdm import tqdm

    from .inference import DEFAULTS
    from .model import load_checkpoint
    from .predict import predict_image

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, config = load_checkpoint(args.model, device)
    params = DEFAULTS | {"mode": args.mode, "precision": args.precision}
    failed = 0
    for image in tqdm(args.images, desc="predict", unit="img"):
        try:
            print(json.dumps(predict_image(model, config, image, args.out, params, args.threshold, device=device)))
        except InputError as err:  # one bad photograph does not stop the others
            failed += 1
            print(f"micropatch predict: error: {err}", file=sys.stderr)
    return 2 if failed else 0


def main(argv: list[str] | None = None) -> int:
    logs.setup()
    parser = argparse.ArgumentParser(prog="micropatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth", help="write the synthetic dataset in a dataset's official layout")
    synth.add_argument("--out", default="data/sources/synthetic")
    synth.add_argument("--params", default="params.yaml")
    synth.add_argument("--layout", default="idrid", choices=("idrid", "ddr", "eophtha"))
    synth.set_defaults(func=cmd_synth)
    aud = sub.add_parser("audit", help="check a split manifest and patch sets for leakage (exit 1 on any leak)")
    aud.add_argument("--manifest", default="data/splits/manifest.csv")
    aud.add_argument("--patches", default="data/patches", help="folder of patch sets (train/, val/ with index.csv)")
    aud.add_argument("--no-patches", action="store_true", help="audit the manifest only (as CI does)")
    aud.add_argument("--out", default="metrics", help="where leakage.json and leakage_report.md go")
    aud.add_argument("--threshold", type=int, default=PHASH_THRESHOLD,
                     help="near-duplicate Hamming distance (bits of 256)")
    aud.set_defaults(func=cmd_audit)
    ev = sub.add_parser("evaluate", help="score probability maps (PNG p=v/255 or .npy) against masks, by file stem")
    ev.add_argument("--pred", required=True, type=Path)
    ev.add_argument("--truth", required=True, type=Path)
    ev.add_argument("--fov", type=Path, help="field-of-view masks; pixels outside never count as predictions")
    ev.add_argument("--threshold", type=float, default=0.5)
    ev.add_argument("--csv", help="also write the per-image table here")
    ev.set_defaults(func=cmd_evaluate)
    datasets = sub.add_parser("datasets", help="dataset tools").add_subparsers(dest="action", required=True)
    ins = datasets.add_parser("inspect", help="check a dataset root before a long run: one JSON object, exit 1 "
                                              "on a broken root or any problem")
    ins.add_argument("adapter", choices=("idrid", "ddr", "eophtha"))
    ins.add_argument("root", type=Path, help="the dataset's top folder or the folder above it")
    ins.set_defaults(func=cmd_inspect)
    pr = sub.add_parser("predict", help="native-resolution lesion maps for fundus photographs (JPEG/PNG/TIFF)")
    pr.add_argument("images", nargs="+", type=Path)
    pr.add_argument("--model", required=True, type=Path, help="a micropatch checkpoint (model.safetensors)")
    pr.add_argument("--out", required=True, type=Path)
    pr.add_argument("--mode", default="paper", choices=("paper", "fast"),
                    help="paper: 128/64 windows; fast: the same windows, overlaps only near candidates")
    pr.add_argument("--precision", default="fp32", choices=("fp32", "int8"),
                    help="int8 (CPU only): a quantized copy of the model calibrated on each image; the "
                         "same windows run ~2.4x faster on a full-size frame")
    pr.add_argument("--threshold", type=float, default=0.5)
    pr.set_defaults(func=cmd_predict)
    rd = sub.add_parser("readme", help="regenerate README.md's results block from metrics/")
    rd.set_defaults(func=lambda args: __import__("micropatch.readme", fromlist=["update"]).update())
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except InputError as err:
        print(f"micropatch {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
