"""The `micropatch` command: what a user runs by hand, beside the DVC stages."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import logs
from .audit import PHASH_THRESHOLD
from .datasets import ADAPTERS
from .fileio import InputError, load_params, sha256_file
from .postprocess import OPERATING_DEFAULTS

from . import predict as predict_args
from .recipe import AUTO_RESCALE_TOLERANCE, PREDICT_DEFAULTS, RUNTIMES


def cmd_synth(args) -> None:
    """Write the synthetic datasets of the `synthetic` params section, each in its dataset's official layout."""
    from .fileio import staged_folder
    from .synthetic import LAYOUT_WRITERS, SyntheticSpec

    sets = load_params("synthetic", args.params)
    for name in args.only or list(sets):
        settings = dict(sets[name])
        layout, n_images, seed = settings.pop("layout"), settings.pop("n_images"), settings.pop("seed")
        with staged_folder(args.out / name) as staging:  # an interrupted run never leaves a half-written dataset
            ids = LAYOUT_WRITERS[layout](staging, n_images, seed, SyntheticSpec(**settings))
        logging.info("synth: %s: %d images (%dx%d, %s layout) in %s", name, len(ids), settings["width"],
                     settings["height"], layout, args.out / name)


def cmd_inspect(args) -> int:
    """Print one JSON object describing a dataset root; exit 1 when it is broken or has problems."""
    import json

    from .datasets.inspection import inspect_root

    options = {"images": args.images} if args.images else {}
    if args.uncertain_as_lesion:
        options["uncertain_as_lesion"] = True
    report = inspect_root(args.adapter, args.root, **options)
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


def cmd_audit(args) -> int:
    """Audit a split manifest (and patch sets) for leakage; exit 1 on any leak."""
    from .audit import run_audit

    return run_audit(Path(args.manifest), None if args.no_patches else Path(args.patches), Path(args.out),
                     args.threshold)


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
    from .fileio import read_mask, read_png

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

    summary, rows = score_images(items(), args.threshold, args.min_area, seed=0)
    if args.csv:
        write_rows(Path(args.csv), rows)
    keys = ("precision", "recall", "dice", "iou", "aupr_11", "ap", "degenerate", "lesion_sensitivity",
            "fps_per_image", "froc", "n_images")
    print(json.dumps({k: summary[k] for k in keys}, indent=2))
    return 0


def cmd_predict(args) -> int:
    """Lesion maps, masks, overlay and lesion list for each photograph, a run record and report.html; one JSON
    summary line per photograph on stdout (micropatch.predict)."""
    from .predict import run

    return run(args)


def cmd_export(args) -> int:
    """Write a checkpoint's ONNX export (fp32, or int8 calibrated on training photographs), recipe included."""
    from . import compute

    import tempfile

    compute.configure("fast")
    from .model import load_checkpoint
    from .recipe import int8_export_path, model_recipe
    from .runtimes import CALIBRATION_PER_IMAGE, calibration_windows, export_onnx, quantize_int8

    model, config = load_checkpoint(args.model)
    if model_recipe(config) != "micropatch":
        raise InputError(f"{args.model}: recipe {model_recipe(config)} runs on torch fp32 only (README, \"Recipes\"); "
                         "micropatch export writes micro-patching models")
    sha256 = sha256_file(args.model)
    out = args.out or (int8_export_path(args.model) if args.precision == "int8" else args.model.with_suffix(".onnx"))
    if args.precision == "fp32":
        export_onnx(model, config, out, sha256)
    else:
        windows = calibration_windows(args.calibration, config, args.per_image or CALIBRATION_PER_IMAGE)
        with tempfile.TemporaryDirectory() as work:
            fp32 = export_onnx(model, config, Path(work) / "fp32.onnx", sha256)
            quantize_int8(fp32, out, windows, {"images": len(args.calibration), "windows": len(windows),
                                               "method": "minmax", "stems": sorted(p.stem for p in args.calibration)})
    logging.info("export: %s (%s, from %s)", out, args.precision, args.model)
    return 0


def cmd_tune(args) -> int:
    """Run (or join) an Optuna study over params.yaml's `tune.space`; optionally write the best values back."""
    from . import compute
    from .tuning import Workspace, run_study, write_best

    params = load_params(path=args.params)
    tune = params["tune"]
    compute.configure(**params["compute"])  # before torch is imported: it pins what decides the bits
    workspace = Workspace(Path(args.params), args.patches, args.preprocessed, args.manifest, args.work)
    if not (args.patches / "train" / "meta.json").is_file():
        raise InputError(f"{args.patches}/train holds no patch set: run `dvc repro patchify` first (the study "
                         "trains on the pipeline's train patches and scores on its selection split)")
    study = run_study(workspace, args.storage or tune["storage"], args.study or tune["study"],
                      args.trials or tune["trials"], tune["seed"] if args.seed is None else args.seed,
                      args.heartbeat, args.grace, args.max_retry, dvc_experiments=not args.no_dvc_exp)
    if args.write_best:
        try:
            best = study.best_trial
        except ValueError:
            raise InputError(f"study {study.study_name} has no complete trial yet: nothing to write") from None
        write_best(Path(args.params), best.params)
        logging.info("tune: wrote trial %d's values (%s %.4f) into %s: `dvc repro` trains them", best.number,
                     tune["objective"], best.value, args.params)
    return 0


def cmd_ablate(args) -> int:
    """Proxy experiments: variants of a record's params, each trained for the protocol's short budget and scored on
    the record's full tune and val photographs, a row each in the committed table (micropatch.ablation)."""
    from . import compute
    from .ablation import load_variants, main_args

    protocol, _ = load_variants(args.variants_file)
    compute.configure(protocol.get("compute.mode", "fast"), protocol.get("compute.threads"))  # before torch
    return main_args(args)


def cmd_pipeline(args) -> int:
    """Write dvc.yaml for the root project and every record (or check that they are current)."""
    from .pipeline import is_current, projects, write

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


def cmd_study(args) -> int:
    """The cross-dataset study: every training-set combination x seed as a DVC experiment, then the strategies
    across seeds and the tables (micropatch.study)."""
    from . import compute
    from .study import Study

    study = Study(args.project)
    compute.configure(**study.params["compute"])  # before torch is imported: soups predict in the stages' mode
    study.run(queue=not args.tables_only)
    for name in ("strategies.md", "leave_one_out.md"):
        print((study.out / name).read_text())
    return 0


class OneLineParser(argparse.ArgumentParser):
    """An argument error is one line on stderr (exit 2), not the usage block above it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    logs.setup()
    parser = OneLineParser(prog="micropatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth", help="write the synthetic datasets of params `synthetic` in their official "
                                         "layouts (the embedded default is shipped: make data restores it)")
    synth.add_argument("--out", default=Path("data/sources"), type=Path, help="one folder per set is written here")
    synth.add_argument("--params", default="params.yaml")
    synth.add_argument("--only", nargs="+", help="write only these sets of params `synthetic`")
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
    ev.add_argument("--threshold", type=float, default=OPERATING_DEFAULTS["threshold"])
    ev.add_argument("--min-area", type=int, default=OPERATING_DEFAULTS["min_area"],
                    help="predicted components smaller than this (px) are removed before P/R/Dice")
    ev.add_argument("--csv", help="also write the per-image table here")
    ev.set_defaults(func=cmd_evaluate)
    datasets = sub.add_parser("datasets", help="dataset tools").add_subparsers(dest="action", required=True)
    ins = datasets.add_parser("inspect", help="check a dataset root before a long run: one JSON object, exit 1 "
                                              "on a broken root or any problem")
    ins.add_argument("adapter", choices=ADAPTERS)
    ins.add_argument("root", type=Path, help="the dataset's top folder or the folder above it")
    ins.add_argument("--images", type=Path, help="maples_dr: the MESSIDOR photographs' root (Base11 ... Base34)")
    ins.add_argument("--uncertain-as-lesion", action="store_true",
                     help="retinal_lesions: value 127 (a lesion the authors excluded) counts as lesion")
    ins.set_defaults(func=cmd_inspect)
    pr = sub.add_parser("predict", help="native-resolution lesion maps for fundus photographs (JPEG/PNG/TIFF), "
                                        "files or folders, with report.html")
    pr.add_argument("images", nargs="+", type=Path,
                    help="photographs, folders of them (JPEG, PNG, TIFF) or quoted glob patterns")
    pr.add_argument("--out", required=True, type=Path,
                    help="output folder (created); a folder's subfolders are mirrored in it (--recursive)")
    pr.add_argument("--recursive", action="store_true", help="also the photographs in the folders' subfolders")
    pr.add_argument("--model", help="a micropatch checkpoint file (.safetensors) or its ONNX export, or an https "
                                    "URL of one (with --model-sha256); default: the shipped model, "
                                    "models/idrid-ma/model.safetensors (its MODEL_CARD.md)")
    pr.add_argument("--model-sha256", help="the sha256 a --model URL must have; the file is kept in "
                                           "$MICROPATCH_CACHE (default ~/.cache/micropatch) and verified")
    pr.add_argument("--rescale-fov", choices=("auto", "on", "off"),
                    help="resample each photograph so that its field of view has the model's training diameter, "
                         "and the maps back: auto (default) when it differs by more than "
                         f"{int(AUTO_RESCALE_TOLERANCE * 100)} %%; the minimum component area is scaled with it")
    pr.add_argument("--threshold", type=predict_args.threshold_arg,
                    help="probability in [0, 1] that makes the masks (default: the model's operating point)")
    pr.add_argument("--min-area", type=predict_args.min_area_arg,
                    help="predicted components smaller than this many px (at the model's training scale) are "
                         "dropped; >= 0 (default: the model's operating point)")
    pr.add_argument("--overlay", choices=tuple(predict_args.OVERLAY_FORMATS), default="jpeg",
                    help=f"full-size overlay as JPEG (quality {predict_args.JPEG_QUALITY}, default) or PNG")
    pr.add_argument("--runtime", choices=RUNTIMES,
                    help="where the windows run (default: openvino, or torch for --compute reproducible); "
                         "onnxruntime and openvino run the model's ONNX export")
    pr.add_argument("--precision", choices=("fp32", "int8", "bf16"),
                    help="default: int8 when the model has its int8 export beside it (the shipped one does), else "
                         "fp32; torch int8 calibrates a copy on each image; bf16: openvino, on CPUs that have it")
    pr.add_argument("--compute", choices=("reproducible", "fast"),
                    help="torch only: reproducible (the pipeline's infer stage bytes on any x86-64 CPU from AVX2 "
                         "up; implies --runtime torch) or fast")
    pr.add_argument("--mode", choices=("paper", "fast"),
                    help="paper: the model's 128/64 windows, every one; fast (default): the same windows, the "
                         "overlapping ones only near candidates, so masks at the operating point are paper's")
    pr.add_argument("--first-pass-tilings", type=int, choices=(1, 2),
                    help="fast mode: windows tiling the photograph once or twice (shifted by half a window) before "
                         "refining near candidates; 1 misses lesions on window borders (default 2)")
    pr.add_argument("--shifted-evidence", type=float,
                    help="fast mode, 2 tilings: run a shifted window only where the first tiling's maps reach this "
                         f"probability in it; 0: all of them (default {PREDICT_DEFAULTS['shifted_evidence']})")
    pr.add_argument("--threads", type=int, help="CPU threads (default: all cores; torch reproducible: 2)")
    pr.add_argument("--clahe-clip-limit", type=float, help="default: the model's recipe")
    pr.add_argument("--clahe-grid", type=int, help="default: the model's recipe")
    pr.add_argument("--fov-threshold", type=int, help="default: the model's recipe")
    pr.add_argument("--tta", choices=("none", "flips"), help="flips: mean over 4 flips of each window, 4x the "
                                                              "compute (default: the model's recipe)")
    pr.set_defaults(func=cmd_predict)
    ex = sub.add_parser("export", help="write a checkpoint as ONNX (recipe in its metadata) for onnxruntime/openvino")
    ex.add_argument("model", type=Path, help="a micropatch checkpoint (.safetensors)")
    ex.add_argument("--format", choices=("onnx",), default="onnx")
    ex.add_argument("--precision", choices=("fp32", "int8"), default="fp32")
    ex.add_argument("--calibration", nargs="+", type=Path, default=[],
                    help="int8: training photographs (not the ones to predict) whose windows set activation ranges")
    ex.add_argument("--per-image", type=int, help="int8: calibration windows per photograph (default: "
                                                  "runtimes.CALIBRATION_PER_IMAGE)")
    ex.add_argument("--out", type=Path, help="default: beside the checkpoint, <stem>.onnx or <stem>-int8.onnx "
                                             "(where predict looks for the int8 export)")
    ex.set_defaults(func=cmd_export)
    tu = sub.add_parser("tune", help="hyper-parameter search (Optuna: TPE, pruning) over params.yaml tune.space, on "
                                     "the pipeline's train patches and selection split; workers may share a study")
    tu.add_argument("--params", default="params.yaml")
    tu.add_argument("--patches", type=Path, default=Path("data/patches"))
    tu.add_argument("--preprocessed", type=Path, default=Path("data/preprocessed"))
    tu.add_argument("--manifest", type=Path, default=Path("data/splits/manifest.csv"))
    tu.add_argument("--work", type=Path, default=Path("data/tune"),
                    help="cached patch sets, per-trial dvclive folders, <study>/best.json")
    tu.add_argument("--storage", help="SQLAlchemy URL (default: params tune.storage, a SQLite file); "
                                      "postgresql+psycopg2://user@host:port/db lets workers on many machines share it")
    tu.add_argument("--study", help="study name (default: params tune.study)")
    tu.add_argument("--trials", type=int, help="stop when the study holds this many finished trials, whichever "
                                               "workers ran them (default: params tune.trials)")
    tu.add_argument("--seed", type=int, help="TPE sampler seed (default: params tune.seed); give each worker "
                                             "its own, or they propose the same first trials")
    tu.add_argument("--heartbeat", type=int, default=60, help="seconds between a running trial's heartbeats")
    tu.add_argument("--grace", type=int, default=180,
                    help="a running trial without a heartbeat for this long is failed (its worker died) and retried")
    tu.add_argument("--max-retry", type=int, default=1, help="retries of a trial whose worker died")
    tu.add_argument("--no-dvc-exp", action="store_true", help="log trials with dvclive without saving DVC experiments")
    tu.add_argument("--write-best", action="store_true",
                    help="write the best trial's values into params.yaml (comments kept), for `dvc repro`")
    tu.set_defaults(func=cmd_tune)
    ab = sub.add_parser("ablate", help="proxy experiments: variants of a record's params trained for a short fixed "
                                       "budget, scored on its full tune and val photographs, one table row each")
    ab.add_argument("variants", nargs="+", help="names in the variants file (baseline, bce, scale050, ...)")
    ab.add_argument("--seeds", nargs="+", type=int, default=[0])
    ab.add_argument("--record", type=Path, default=Path("results/idrid-ma-best"),
                    help="the record whose params, split and preprocessed data the variants use")
    ab.add_argument("--variants-file", type=Path, default=Path("benchmarks/ablations.yaml"))
    ab.add_argument("--table", type=Path, default=Path("benchmarks/results/ablations.csv"),
                    help="the committed table a row per run is appended to")
    ab.set_defaults(func=cmd_ablate)
    pl = sub.add_parser("pipeline", help="write dvc.yaml of the root project and of every record under results/ "
                                         "from params.yaml and the stage scripts' imports")
    pl.add_argument("--check", action="store_true", help="only check that every dvc.yaml is current (exit 1 if not)")
    pl.set_defaults(func=cmd_pipeline)
    sh = sub.add_parser("ship", help="copy a record's released model into models/ with its model card")
    sh.add_argument("--record", type=Path, default=Path("results/idrid-ma-best"))
    sh.add_argument("--out", type=Path, default=Path("models/idrid-ma"))
    sh.add_argument("--shift", type=Path, default=Path("benchmarks/results/camera_shift.json"),
                    help="camera-shift measurement to quote in the card (benchmarks/camera_shift.py)")
    sh.add_argument("--runtimes", type=Path, default=Path("benchmarks/results/runtimes.json"),
                    help="runtime accuracy measurement to quote in the card (benchmarks/runtimes.py)")
    sh.set_defaults(func=lambda args: print(__import__("micropatch.modelcard", fromlist=["ship"]).ship(
        args.record, args.out, args.shift, args.runtimes)))
    st = sub.add_parser("study", help="the cross-dataset study: its training-set combinations as DVC experiments, "
                                      "ensembles, SWA and model soups, and its tables")
    st.add_argument("action", choices=["combinations"])
    st.add_argument("--project", type=Path, default=Path("results/study-combinations"),
                    help="the study project folder (params.yaml with a `study` section), committed")
    st.add_argument("--tables-only", action="store_true",
                    help="queue nothing: read the finished experiments and write the tables")
    st.set_defaults(func=cmd_study)
    rd = sub.add_parser("readme", help="regenerate README.md's results block from metrics/")
    rd.set_defaults(func=lambda args: __import__("micropatch.readme", fromlist=["update"]).update())
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except InputError as err:
        print(f"micropatch {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"\nmicropatch {args.command}: interrupted{f': {err}' if str(err) else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
