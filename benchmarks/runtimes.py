"""Runtimes (torch, ONNX Runtime, OpenVINO) and precisions (fp32, int8, bf16 where the CPU has it) on full frames.

Speed: one frame (real IDRiD_03, 4288x2848, when $MICROPATCH_IDRID is set; --quick: a synthetic 512x340 frame,
fast mode only, no torch fp32), every runtime x precision in paper mode and fast mode as predict runs it (two
first-pass tilings, the shifted one where the first saw a trace), and, for int8, fast with both tilings in full
(fast2) and with one (fast1, as before), each in a fresh process (its peak RSS is its own): seconds for the
probability maps once the model is loaded and compiled (that cost is reported apart: a
folder pays it once). torch runs in the pipeline's reproducible compute mode, as the pipeline and `micropatch
predict` did before the runtimes existed (today's fast + int8: torch int8 calibrated on each image, one tiling).

`micropatch predict` itself (--parts predict): the whole command on the frame, per-image seconds (read,
preprocess, predict, write the maps, masks, overlay and lesion list) with its default setting against today's
fast + int8 (`--runtime torch --compute reproducible --mode fast --first-pass-tilings 1 --precision int8`), the
two alternated --repeats times (this machine's speed drifts by 10-15 % from one minute to the next: the medians and
their ratio are reported, with every run), and images per minute over --folder photographs with the default.

Accuracy (--val-manifest, real IDRiD): pooled Dice at the model's operating point, aupr_11, AP and lesion
sensitivity on the manifest's val images for each fast-mode setting, against torch fp32 paper mode (--reference:
a folder of its <stem>_MA_probability.png maps, from `micropatch predict --runtime torch --mode paper --precision
fp32`; computed here when not given).

The model is --model (default: the shipped one, whose int8 export is beside it); for --quick, the default
pipeline's model, exported here (int8 calibrated on two synthetic training frames). Prints a line per
measurement and, last, one JSON object.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from micropatch.core.recipe import PREDICT_DEFAULTS  # no torch import: the child pins its compute mode first

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "models/idrid-ma/model.safetensors"
QUICK_MODEL = ROOT / "data/model/release.safetensors"
IDRID_IMAGES = "A. Segmentation/1. Original Images/a. Training Set"
IDRID_MA = "A. Segmentation/2. All Segmentation Groundtruths/a. Training Set/1. Microaneurysms"
# Settings scored on the val images: ONNX Runtime fp32 is left out (OpenVINO fp32 is the same network within 1e-5),
# and so is torch fp32 fast (paper at every pixel it refines, like OpenVINO fp32 fast).
ACCURACY = [("torch", "int8", "fast1"), ("openvino", "int8", "fast1"), ("openvino", "int8", "fast2"),
            ("openvino", "fp32", "fast"), ("onnxruntime", "int8", "fast"), ("openvino", "int8", "fast")]
MODES = ("paper", "fast", "fast2", "fast1")
TODAY = ["--runtime", "torch", "--compute", "reproducible", "--mode", "fast", "--first-pass-tilings", "1",
         "--precision", "int8"]
# Today's fast + int8 as it ran when issue #22 was filed: the reproducible mode pinned MKL's AVX2 branch then
# (COMPATIBLE since, README "Same bytes"), which is faster on the fp32 work of the per-image calibration.
AS_FILED = ("import sys\nfrom micropatch.core import compute\ncompute.REPRODUCIBLE_ENV = {**compute.REPRODUCIBLE_ENV, "
            "'MKL_CBWR': 'AVX2,STRICT'}\nfrom micropatch.cli import main\nsys.argv[0] = 'micropatch'\nmain()")


def settings(quick: bool) -> list[tuple[str, str]]:
    """(runtime, precision) pairs to measure: bf16 only where OpenVINO says the CPU has it."""
    import openvino as ov

    pairs = [("torch", "fp32"), ("torch", "int8"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"),
             ("openvino", "fp32"), ("openvino", "int8")]
    if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pairs.append(("openvino", "bf16"))
    return [p for p in pairs if not (quick and p == ("torch", "fp32"))]


def frame_path(quick: bool, work: Path) -> Path:
    """The benchmark photograph: real IDRiD_03, else (or --quick) a synthetic frame written into work."""
    root = os.environ.get("MICROPATCH_IDRID")
    if root and not quick:
        return Path(root) / IDRID_IMAGES / "IDRiD_03.jpg"
    return synthetic_frames(work, 1, quick)[0]


def synthetic_frames(work: Path, n: int, quick: bool, first: int = 0) -> list[Path]:
    from micropatch.core.fileio import write_png
    from micropatch.data.synthetic import SyntheticSpec, synth_fundus

    spec = SyntheticSpec(width=512, height=340) if quick else SyntheticSpec(width=4288, height=2848)
    paths = []
    for k in range(first, first + n):
        path = work / f"synthetic_{k}.png"
        write_png(path, synth_fundus(k, spec)[0])
        paths.append(path)
    return paths


def child(args) -> None:
    """Load one setting, time its probability maps of the frame; print one JSON line."""
    runtime, precision, mode = args.child.split(":")
    from micropatch.core import compute

    compute.configure("reproducible" if runtime == "torch" else "fast")
    from micropatch.core.fileio import read_fundus
    from micropatch.data.preprocessing import checked_fov, green_clahe
    from micropatch.inference.modes import predict_probability
    from micropatch.inference.runtimes import load_model

    started = time.perf_counter()
    model, config = load_model(args.model, runtime, precision)
    loaded = time.perf_counter() - started
    rgb = read_fundus(args.frame)
    fov = checked_fov(rgb, config["preprocess"]["fov_threshold"], args.frame)
    image = green_clahe(rgb, config["preprocess"]["clahe_clip_limit"], config["preprocess"]["clahe_grid"])
    params = setting_params(config, runtime, precision, mode)
    started = time.perf_counter()
    predict_probability(model, image, fov, params)
    seconds = time.perf_counter() - started
    print(json.dumps({"load_s": loaded, "seconds": seconds,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def setting_params(config: dict, runtime: str, precision: str, mode: str) -> dict:
    """Infer params of a setting as `micropatch predict` resolves them; mode paper, fast (predict's: two first-pass
    tilings, the shifted one where the first saw a trace), fast2 (both tilings in full) or fast1 (one tiling, as
    fast mode was before)."""
    from micropatch.inference.modes import DEFAULTS

    return DEFAULTS | config["inference"] | {
        "mode": "paper" if mode == "paper" else "fast", "runtime": runtime, "precision": precision,
        "first_pass_tilings": 1 if mode == "fast1" else PREDICT_DEFAULTS["first_pass_tilings"],
        "shifted_evidence": PREDICT_DEFAULTS["shifted_evidence"] if mode == "fast" else 0.0,
        "refine_threshold": min(config["inference"]["refine_threshold"], config["operating_point"]["threshold"])}


def run_child(args, runtime: str, precision: str, mode: str) -> dict:
    command = [sys.executable, __file__, "--child", f"{runtime}:{precision}:{mode}", "--model", str(args.model),
               "--frame", str(args.frame)]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{runtime} {precision} {mode} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def predict_command(model: Path, images: list[Path], out: Path, extra: list[str], as_filed: bool = False
                    ) -> list[float]:
    """Per-image seconds of one `micropatch predict` call (its own JSON lines); as_filed: under the MKL branch
    the reproducible mode pinned when #22 was filed."""
    entry = ["-c", AS_FILED] if as_filed else ["-m", "micropatch.cli"]
    command = [sys.executable, *entry, "predict", *map(str, images), "--model", str(model), "--out", str(out),
               *extra]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        sys.exit(f"micropatch predict {' '.join(extra)} failed:\n{result.stderr[-3000:]}")
    return [json.loads(line)["seconds"] for line in result.stdout.splitlines() if line.startswith("{")]


def accuracy(args, pairs: list[tuple[str, str]], work: Path) -> dict:
    """Pooled scores of each fast setting and of the torch fp32 paper reference on the val images."""
    from tqdm import tqdm

    from micropatch.core import compute

    compute.configure("fast")
    from micropatch.core.fileio import read_fundus, read_mask, read_png
    from micropatch.data.manifest import read_manifest
    from micropatch.data.preprocessing import checked_fov, green_clahe
    from micropatch.evaluation.metrics import to_uint8
    from micropatch.evaluation.score import score_images
    from micropatch.inference.modes import DEFAULTS, predict_probability
    from micropatch.inference.runtimes import load_model

    root = Path(os.environ["MICROPATCH_IDRID"])
    ids = [r["image_id"] for r in read_manifest(args.val_manifest) if r["split"] == "val"]
    config = load_model(args.model, "torch", "fp32")[1]
    point, pre = config["operating_point"], config["preprocess"]
    inputs = {}
    for image_id in tqdm(ids, desc="read val images", unit="img"):
        rgb = read_fundus(root / IDRID_IMAGES / f"{image_id}.jpg")
        fov = checked_fov(rgb, pre["fov_threshold"], image_id)
        truth = read_mask(root / IDRID_MA / f"{image_id}_MA.tif", rgb.shape[:2])
        inputs[image_id] = (green_clahe(rgb, pre["clahe_clip_limit"], pre["clahe_grid"]), fov, truth)

    def summary(maps: dict) -> dict:
        items = ((i, maps[i], inputs[i][2], inputs[i][1]) for i in ids)
        scores = score_images(items, point["threshold"], point["min_area"], bootstrap_draws=10)[0]
        return {k: scores[k] for k in ("dice", "aupr_11", "ap", "lesion_sensitivity", "fps_per_image")}

    if args.reference:
        reference = {i: read_png(Path(args.reference) / f"{i}_MA_probability.png") for i in ids}
    else:
        model = load_model(args.model, "torch", "fp32")[0]
        reference = {i: to_uint8(predict_probability(model, inputs[i][0], inputs[i][1],
                                                     DEFAULTS | config["inference"] | {"mode": "paper"})[0])
                     for i in tqdm(ids, desc="torch fp32 paper", unit="img")}
    results = {"val_images": len(ids), "operating_point": point, "torch_fp32_paper": summary(reference)}
    print(f"accuracy: torch fp32 paper {results['torch_fp32_paper']}", flush=True)
    for runtime, precision, mode in ACCURACY:
        chosen = not args.accuracy or f"{runtime}:{precision}:{mode}" in args.accuracy
        if (runtime, precision) not in pairs or not chosen:
            continue
        model = load_model(args.model, runtime, precision)[0]
        params = setting_params(config, runtime, precision, mode)
        started, maps = time.perf_counter(), {}
        for i in tqdm(ids, desc=f"{runtime} {precision} {mode}", unit="img"):
            maps[i] = to_uint8(predict_probability(model, inputs[i][0], inputs[i][1], params)[0])
        name = f"{runtime}_{precision}_{mode}"
        results[name] = summary(maps) | {"seconds_per_image": (time.perf_counter() - started) / len(ids)}
        for key in ("dice", "aupr_11", "ap", "lesion_sensitivity"):
            results[name][f"{key}_change"] = results[name][key] - results["torch_fp32_paper"][key]
        print(f"accuracy: {name} {results[name]}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model", type=Path, help="default: the shipped model (--quick: the default pipeline's)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES,
                        help="fast: predict's (two first-pass tilings, the shifted one where the first saw a trace); "
                             "fast2: both tilings in full; fast1: one tiling, as before")
    parser.add_argument("--folder", type=int, default=20, help="photographs in the images-per-minute call")
    parser.add_argument("--val-manifest", type=Path, help="real IDRiD split manifest whose val images are scored")
    parser.add_argument("--reference", type=Path, help="torch fp32 paper maps of those images (<stem>_MA_probability"
                                                       ".png), to reuse instead of recomputing")
    parser.add_argument("--parts", nargs="+", default=["speed", "predict", "accuracy"],
                        choices=("speed", "predict", "accuracy"),
                        help="speed: the maps of each setting; predict: the whole command; accuracy needs "
                             "--val-manifest and the real IDRiD copy")
    parser.add_argument("--repeats", type=int, default=3, help="alternated predict runs of today's and the default")
    parser.add_argument("--accuracy", nargs="+", help="only these of the accuracy settings (RUNTIME:PRECISION:MODE)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--frame", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["MICROPATCH_CACHE"] = str(work / "cache")  # a checkpoint's fp32 export goes here, not in ~/.cache
        args.frame = frame_path(args.quick, work)
        if args.model is None:
            args.model = QUICK_MODEL if args.quick else SHIPPED
            if args.quick:  # the default pipeline's model has no exports yet: write them into the work folder
                if not QUICK_MODEL.is_file():
                    sys.exit(f"{QUICK_MODEL} is missing: run `make run` first")
                args.model = work / "model.safetensors"
                args.model.write_bytes(QUICK_MODEL.read_bytes())
                calibration = synthetic_frames(work, 2, True, first=100)
                subprocess.run([sys.executable, "-m", "micropatch.cli", "export", str(args.model), "--precision",
                                "int8", "--calibration", *map(str, calibration)], check=True, cwd=ROOT,
                               capture_output=True)
        import openvino as ov

        from micropatch.core.fileio import sha256_file

        results = {"frame": f"{args.frame.name}", "model": str(args.model), "model_sha256": sha256_file(args.model),
                   "cpu_count": os.cpu_count(),
                   "openvino_capabilities": ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")}
        pairs = settings(args.quick)
        if "speed" in args.parts:
            for mode in ["fast"] if args.quick else args.modes:
                for runtime, precision in pairs:
                    if mode in ("fast1", "fast2") and precision != "int8":
                        continue  # int8 only: today's fast + int8 and the default's runtime, to show what tilings cost
                    out = run_child(args, runtime, precision, mode)
                    name = f"{runtime}_{precision}_{mode}"
                    results[name] = {"seconds": round(out["seconds"], 2), "load_s": round(out["load_s"], 2),
                                     "peak_rss_mb": round(out["peak_rss_mb"])}
                    print(f"{name}: {out['seconds']:.1f} s (model ready in {out['load_s']:.1f} s), peak RSS "
                          f"{out['peak_rss_mb']:.0f} MB", flush=True)
        if "predict" in args.parts:
            # the command a user runs: today's fast + int8 against the default, the same frame, one process each,
            # alternated so that a slow spell of the machine hits both
            today, filed, default = [], [], []
            for _ in range(1 if args.quick else args.repeats):
                today += predict_command(args.model, [args.frame], work / "today", TODAY)
                filed += predict_command(args.model, [args.frame], work / "filed", TODAY, as_filed=True)
                default += predict_command(args.model, [args.frame], work / "default", [])
            results["predict_today_fast_int8_s"] = {"runs": today, "median": float(np.median(today))}
            results["predict_today_as_filed_s"] = {"runs": filed, "median": float(np.median(filed))}
            results["predict_default_s"] = {"runs": default, "median": float(np.median(default))}
            results["predict_speedup"] = float(np.median(filed) / np.median(default))
            results["predict_speedup_vs_todays_pin"] = float(np.median(today) / np.median(default))
            print(f"micropatch predict, one frame: today's fast + int8 as filed (MKL AVX2 branch) {filed} s, under "
                  f"today's pin {today} s, default {default} s: medians {np.median(filed):.1f} / "
                  f"{np.median(today):.1f} / {np.median(default):.1f} s = {results['predict_speedup']:.2f}x as "
                  f"filed, {results['predict_speedup_vs_todays_pin']:.2f}x under today's pin", flush=True)
            if args.quick:
                folder = [args.frame]
            elif os.environ.get("MICROPATCH_IDRID"):
                folder = sorted((Path(os.environ["MICROPATCH_IDRID"]) / IDRID_IMAGES).glob("*.jpg"))[:args.folder]
            else:
                folder = synthetic_frames(work, args.folder, False, first=200)
            started = time.perf_counter()
            per_image = predict_command(args.model, folder, work / "folder", [])
            wall = time.perf_counter() - started
            results["folder"] = {"images": len(folder), "wall_s": round(wall, 1),
                                 "images_per_minute": round(60 * len(folder) / wall, 2),
                                 "mean_image_s": round(float(np.mean(per_image)), 2)}
            print(f"micropatch predict, {len(folder)} photographs: {results['folder']}", flush=True)
        if "accuracy" in args.parts and args.val_manifest and not args.quick:
            results["accuracy"] = accuracy(args, pairs, work)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
