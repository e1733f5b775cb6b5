"""Full-image inference: `paper` (128/64 windows, mean blending) vs `fast` (the same windows, overlaps only near
candidates, none outside the FOV), each in fp32 and int8 (infer.precision: a quantized copy of the model).

Speed: one 4288x2848 frame (real IDRiD_03 when $MICROPATCH_IDRID is set, else a synthetic frame of that size),
each mode in a fresh process (so its peak RSS is its own), median of --repeats runs, with a trained --model:
fast's work depends on what the model finds (default: the shipped model, else the default pipeline's).
Also times, through fast's own loop, one pass of the network over the frame (non-overlapping 128 windows: the
floor) and all of paper's windows (what fast gains from running fewer windows, apart from leaving MONAI out).
Agreement (--preprocessed DIR --manifest CSV): pooled Dice at 0.5 of paper and of fast (fp32, int8) over the
manifest's val images; --paper-predictions DIR reuses the pipeline's paper maps instead of recomputing them.
Prints a line per measurement and, last, one JSON object.  --quick: a 512x340 frame, one repeat, the
agreement on the first val image only.
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

from micropatch.core.fileio import read_fundus, read_png
from micropatch.data.patches import window_starts
from micropatch.data.preprocessing import fov_mask, green_clahe
from micropatch.evaluation.metrics import to_uint8
from micropatch.inference import modes
from micropatch.inference.modes import DEFAULTS, predict_probability
from micropatch.inference.shipped import SHIPPED_MODEL
from micropatch.inference.windows import accumulate_windows
from micropatch.training.network import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {"paper": {"mode": "paper"}, "paper_int8": {"mode": "paper", "precision": "int8"},
            "fast": {"mode": "fast"}, "fast_int8": {"mode": "fast", "precision": "int8"}}  # name -> infer params
WINDOW_LOOPS = {"one_pass": 128, "paper_windows_loop": 64}  # name -> stride of windows_through_loop
TRAINED = (SHIPPED_MODEL, ROOT / "data/model/model.safetensors")  # the shipped model, else the default pipeline's


def frame(quick: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """(CLAHE green uint8 (H, W), FOV bool (H, W), description) of the benchmark frame."""
    root = os.environ.get("MICROPATCH_IDRID")
    if root and not quick:
        path = Path(root) / "A. Segmentation/1. Original Images/a. Training Set/IDRiD_03.jpg"
        rgb, name = read_fundus(path), "real IDRiD_03"
    else:
        from micropatch.data.synthetic import SyntheticSpec, synth_fundus

        spec = SyntheticSpec(width=512, height=340) if quick else SyntheticSpec(width=4288, height=2848)
        rgb, name = synth_fundus(0, spec)[0], "synthetic"
    return green_clahe(rgb), fov_mask(rgb), f"{name} {rgb.shape[1]}x{rgb.shape[0]}"


def trained_checkpoint(given: str | None) -> str:
    """--model, else the first trained checkpoint present (the shipped model, then the default pipeline's)."""
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


def hooked(quantize, hook):
    """int8_copy that hooks each quantized copy it makes (they are new modules: the float model's hook is not on
    them)."""
    def quantize_and_hook(*args):
        quantized = quantize(*args)
        quantized.register_forward_pre_hook(hook)
        return quantized
    return quantize_and_hook


def child(name: str, repeats: int, quick: bool, checkpoint: str, infer_params: dict) -> None:
    """Time one variant on the frame; print {"seconds": [...], "windows": N, "peak_rss_mb": ...}."""
    image, fov, _ = frame(quick)
    model = load_checkpoint(checkpoint)[0].eval().to(memory_format=torch.channels_last)
    windows = []

    def count_windows(module, args):
        windows.append(len(args[0]))

    model.register_forward_pre_hook(count_windows)
    modes.int8_copy = hooked(modes.int8_copy, count_windows)  # calibration runs before the hook is on
    seconds = []
    for _ in range(repeats):
        windows.clear()
        started = time.perf_counter()
        if name in WINDOW_LOOPS:
            windows_through_loop(model, image, WINDOW_LOOPS[name], infer_params["batch_size"])
        else:
            predict_probability(model, image, fov, infer_params | VARIANTS[name])
        seconds.append(time.perf_counter() - started)
    print(json.dumps({"seconds": seconds, "windows": sum(windows),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def pooled_dice(pairs) -> float:
    """Pooled Dice at 0.5 over (probability uint8, truth bool, fov bool) triples: the score stage's own definition
    (micropatch.metrics; a lesion pixel outside the FOV counts as missed)."""
    from micropatch.evaluation.metrics import counts_at, image_histograms, scores

    pooled = sum(image_histograms(probability, truth, fov) for probability, truth, fov in pairs)
    return scores(*counts_at(pooled, 0.5))["dice"]


def agreement(args, infer_params: dict) -> dict:
    """Pooled Dice of paper and fast (fp32, int8) maps over the manifest's val images, and the share of FOV pixels
    whose mask differs from paper's."""
    from tqdm import tqdm

    from micropatch.data.manifest import read_manifest

    model = load_checkpoint(args.model)[0]
    rows = [r for r in read_manifest(args.manifest) if r["split"] == "val"][:1 if args.quick else None]
    compared = ("fast", "fast_int8")
    paper, maps, differing, fov_pixels = [], {name: [] for name in compared}, dict.fromkeys(compared, 0), 0
    for row in tqdm(rows, desc="agreement", unit="img"):
        folder = Path(args.preprocessed) / row["dataset"]
        image = read_png(folder / f"{row['image_id']}.png")
        fov = read_png(folder / f"{row['image_id']}_fov.png") > 0
        truth = read_png(folder / f"{row['image_id']}_MA.png") > 0
        if args.paper_predictions:
            paper_map = read_png(Path(args.paper_predictions) / f"{row['image_id']}_MA.png")
        else:
            paper_map = to_uint8(predict_probability(model, image, fov, DEFAULTS | {"mode": "paper"})[0])
        paper.append((paper_map, truth, fov))
        fov_pixels += int(fov.sum())
        for name in compared:
            fast_map = to_uint8(predict_probability(model, image, fov, infer_params | VARIANTS[name])[0])
            maps[name].append((fast_map, truth, fov))
            differing[name] += int((((paper_map >= 128) != (fast_map >= 128)) & fov).sum())
    results = {"val_images": len(rows), "dice_paper": pooled_dice(paper)}
    for name, suffix in zip(compared, ("", "_int8")):
        results[f"dice_{name}"] = pooled_dice(maps[name])
        results[f"dice_delta{suffix}"] = results[f"dice_{name}"] - results["dice_paper"]
        results[f"mask_pixels_differing_pct{suffix}"] = 100 * differing[name] / fov_pixels
        print(f"agreement on {len(rows)} val images: Dice paper {results['dice_paper']:.5f}, {name} "
              f"{results[f'dice_{name}']:.5f}, masks differ on {results[f'mask_pixels_differing_pct{suffix}']:.4f} "
              "% of FOV pixels")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", help="a trained checkpoint (default: the shipped model, else the pipeline's)")
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
    for variant in (*VARIANTS, *WINDOW_LOOPS):  # the frame's `name` is already in results
        command = [sys.executable, __file__, "--child", variant] + (["--quick"] if args.quick else []) + \
                  ["--repeats", str(repeats), "--model", args.model, "--refine-threshold", str(args.refine_threshold)]
        out = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        results[f"{variant}_s"] = statistics.median(out["seconds"])
        results[f"{variant}_peak_rss_mb"] = round(out["peak_rss_mb"])
        results[f"{variant}_windows"] = out["windows"]
        print(f"{variant}: median {results[f'{variant}_s']:.1f} s of {out['seconds']}, {out['windows']} windows, "
              f"peak RSS {out['peak_rss_mb']:.0f} MB", flush=True)
    results["speedup"] = results["paper_s"] / results["fast_s"]
    results["speedup_int8"] = results["paper_s"] / results["fast_int8_s"]
    results["int8_engine_speedup"] = results["paper_s"] / results["paper_int8_s"]  # same windows, int8 network
    results["fast_vs_one_pass"] = results["fast_s"] / results["one_pass_s"]
    results["fast_window_share"] = results["fast_windows"] / results["paper_windows"]
    if args.preprocessed and args.manifest:
        results |= agreement(args, infer_params)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
