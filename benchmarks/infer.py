"""Full-image inference: `paper` (128/64 windows, mean blending) vs `fast` (the same windows, overlaps only near
candidates, none outside the FOV).

Speed: one 4288x2848 frame (real IDRiD_03 when $MICROPATCH_IDRID is set, else a synthetic frame of that size),
each mode in a fresh process (so its peak RSS is its own), median of --repeats runs, with a trained --model:
fast's work depends on what the model finds (default: the real record's model, else the default pipeline's).
Also times, through fast's own loop, one pass of the network over the frame (non-overlapping 128 windows: the
floor) and all of paper's windows (what fast gains from running fewer windows, apart from leaving MONAI out).
Agreement (--preprocessed DIR --manifest CSV): pooled Dice at 0.5 of both modes over the manifest's val images;
--paper-predictions DIR reuses the pipeline's paper maps instead of recomputing them.
Prints a line per measurement and, last, one JSON object.  --quick: a 1024x680 frame, one repeat.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from micropatch.inference import DEFAULTS, accumulate_windows, predict_probability, to_uint8
from micropatch.io import read_fundus, read_png
from micropatch.model import load_checkpoint
from micropatch.patches import window_starts
from micropatch.preprocessing import fov_mask, green_clahe

ROOT = Path(__file__).resolve().parent.parent
WINDOW_LOOPS = {"one_pass": 128, "paper_windows_loop": 64}  # mode -> stride of windows_through_loop
TRAINED = (ROOT / "results/idrid-ma/data/model/model.safetensors", ROOT / "data/model/model.safetensors")


def frame(quick: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """(CLAHE green uint8 (H, W), FOV bool (H, W), description) of the benchmark frame."""
    root = os.environ.get("MICROPATCH_IDRID")
    if root and not quick:
        path = Path(root) / "A. Segmentation/1. Original Images/a. Training Set/IDRiD_03.jpg"
        rgb, name = read_fundus(path), "real IDRiD_03"
    else:
        from micropatch.synthetic import SyntheticSpec, synth_fundus

        spec = SyntheticSpec(width=1024, height=680) if quick else SyntheticSpec(width=4288, height=2848)
        rgb, name = synth_fundus(0, spec)[0], "synthetic"
    return green_clahe(rgb), fov_mask(rgb), f"{name} {rgb.shape[1]}x{rgb.shape[0]}"


def trained_checkpoint(given: str | None) -> str:
    """--model, else the first trained checkpoint present (real record, then the default pipeline's)."""
    if given:
        return given
    for path in TRAINED:
        if path.is_file():
            return str(path)
    sys.exit(f"no trained model: none of {[str(p) for p in TRAINED]} exists; run `make run` or pass --model")


def windows_through_loop(model: torch.nn.Module, image: np.ndarray, stride: int, batch_size: int) -> None:
    """Every 128 window of the grid with this stride through fast's loop, no skipping: stride 128 is one pass of
    the network over the frame (the compute floor), stride 64 is all of paper's windows without MONAI. Both
    benchmark frames exceed a window, so no padding is needed."""
    height, width = image.shape
    boxes = [(y, x) for y in window_starts(height, 128, stride) for x in window_starts(width, 128, stride)]
    accumulate_windows(model, image, boxes, 128, batch_size, torch.device("cpu"))


def child(mode: str, repeats: int, quick: bool, checkpoint: str, infer_params: dict) -> None:
    """Time one mode on the frame; print {"seconds": [...], "windows": N, "peak_rss_mb": ...}."""
    image, fov, _ = frame(quick)
    model = load_checkpoint(checkpoint)[0].eval().to(memory_format=torch.channels_last)
    windows = []
    model.register_forward_pre_hook(lambda module, args: windows.append(len(args[0])))
    seconds = []
    for _ in range(repeats):
        windows.clear()
        started = time.perf_counter()
        if mode in WINDOW_LOOPS:
            windows_through_loop(model, image, WINDOW_LOOPS[mode], infer_params["batch_size"])
        else:
            predict_probability(model, image, fov, infer_params | {"mode": mode})
        seconds.append(time.perf_counter() - started)
    print(json.dumps({"seconds": seconds, "windows": sum(windows),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def pooled_dice(pairs) -> float:
    """Pooled Dice at 0.5 over (probability uint8, truth bool, fov bool) triples."""
    tp = fp = fn = 0
    for probability, truth, fov in pairs:
        predicted = (probability >= 128) & fov  # uint8 maps: p = v / 255 >= 0.5
        tp += int((predicted & truth).sum())
        fp += int((predicted & ~truth & fov).sum())
        fn += int((~predicted & truth & fov).sum())
    return 2 * tp / max(1, 2 * tp + fp + fn)


def agreement(args, infer_params: dict) -> dict:
    """Pooled Dice of paper and fast maps over the manifest's val images, and the share of pixels that differ."""
    from tqdm import tqdm

    from micropatch.split import read_manifest

    model = load_checkpoint(args.model)[0]
    rows = [r for r in read_manifest(args.manifest) if r["split"] == "val"]
    paper, fast, differing, fov_pixels = [], [], 0, 0
    for row in tqdm(rows, desc="agreement", unit="img"):
        folder = Path(args.preprocessed) / row["dataset"]
        image = read_png(folder / f"{row['image_id']}.png")
        fov = read_png(folder / f"{row['image_id']}_fov.png") > 0
        truth = read_png(folder / f"{row['image_id']}_MA.png") > 0
        if args.paper_predictions:
            paper_map = read_png(Path(args.paper_predictions) / f"{row['image_id']}_MA.png")
        else:
            paper_map = to_uint8(predict_probability(model, image, fov, DEFAULTS | {"mode": "paper"})[0])
        fast_map = to_uint8(predict_probability(model, image, fov, infer_params | {"mode": "fast"})[0])
        paper.append((paper_map, truth, fov))
        fast.append((fast_map, truth, fov))
        differing += int((((paper_map >= 128) != (fast_map >= 128)) & fov).sum())
        fov_pixels += int(fov.sum())
    dice_paper, dice_fast = pooled_dice(paper), pooled_dice(fast)
    print(f"agreement on {len(rows)} val images: Dice paper {dice_paper:.4f}, fast {dice_fast:.4f}, "
          f"masks differ on {100 * differing / fov_pixels:.3f} % of FOV pixels")
    return {"val_images": len(rows), "dice_paper": dice_paper, "dice_fast": dice_fast,
            "dice_delta": dice_fast - dice_paper, "mask_pixels_differing_pct": 100 * differing / fov_pixels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", help="a trained checkpoint (default: the record's, else the default pipeline's)")
    parser.add_argument("--preprocessed", help="data/preprocessed of the pipeline that trained --model")
    parser.add_argument("--manifest", help="its split manifest (val images are compared)")
    parser.add_argument("--paper-predictions", help="its paper-mode maps, to reuse instead of recomputing")
    parser.add_argument("--refine-threshold", type=float, default=DEFAULTS["refine_threshold"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    args.model = trained_checkpoint(args.model)
    infer_params = DEFAULTS | {"refine_threshold": args.refine_threshold}
    if args.child:
        return child(args.child, repeats, args.quick, args.model, infer_params)
    _, fov, name = frame(args.quick)
    results = {"frame": name, "fov_fraction": round(float(fov.mean()), 3), "threads": torch.get_num_threads(),
               "device": "cpu", "repeats": repeats, "model": args.model, "refine_threshold": args.refine_threshold}
    for mode in ("paper", "paper_windows_loop", "fast", "one_pass"):
        command = [sys.executable, __file__, "--child", mode] + (["--quick"] if args.quick else []) + \
                  ["--repeats", str(repeats), "--model", args.model, "--refine-threshold", str(args.refine_threshold)]
        out = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        results[f"{mode}_s"] = statistics.median(out["seconds"])
        results[f"{mode}_peak_rss_mb"] = round(out["peak_rss_mb"])
        results[f"{mode}_windows"] = out["windows"]
        print(f"{mode}: median {results[f'{mode}_s']:.1f} s of {out['seconds']}, {out['windows']} windows, "
              f"peak RSS {out['peak_rss_mb']:.0f} MB", flush=True)
    results["speedup"] = results["paper_s"] / results["fast_s"]
    results["fast_vs_one_pass"] = results["fast_s"] / results["one_pass_s"]
    results["fast_window_share"] = results["fast_windows"] / results["paper_windows"]
    if args.preprocessed and args.manifest:
        results |= agreement(args, infer_params)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
