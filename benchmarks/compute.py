"""What the reproducible compute mode costs: training patches/s and full-frame inference time, reproducible
against fast, as ratios measured in one run (each mode in its own process, one after the other).

Training: benchmarks/train.py (the real train_step, batch 16) in each mode. Inference: paper mode (fp32, and int8)
over a real IDRiD frame ($MICROPATCH_IDRID, else a synthetic 4288x2848 frame) with a seeded model; speed does not
depend on the weights in paper mode. --quick: 8 training steps and a 1024x1024 crop.
Prints a line per measurement and, last, one JSON object.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def frame(quick: bool):
    """uint8 (H, W) CLAHE green image and bool FOV of a real IDRiD frame (or a synthetic one of that size)."""
    from micropatch.preprocessing import fov_mask, green_clahe

    root = Path(os.environ.get("MICROPATCH_IDRID", HERE.parent.parent / "shared" / "datasets" / "IDRiD"))
    path = root / "A. Segmentation" / "1. Original Images" / "a. Training Set" / "IDRiD_03.jpg"
    if path.is_file():
        from micropatch.fileio import read_fundus

        rgb, name = read_fundus(path), "real IDRiD_03"
    else:
        from micropatch.synthetic import SyntheticSpec, synth_fundus

        rgb, name = synth_fundus(0, SyntheticSpec(width=4288, height=2848))[0], "synthetic 4288x2848"
    image, fov = green_clahe(rgb), fov_mask(rgb)
    return (image[:1024, 1600:2624], fov[:1024, 1600:2624], name + " crop 1024x1024") if quick else (image, fov, name)


def child(mode: str, quick: bool) -> dict:
    """One mode's inference timings, in this process."""
    from micropatch import compute

    compute.configure(mode)
    import torch

    from micropatch.inference import DEFAULTS, predict_probability
    from micropatch.model import build_model

    torch.manual_seed(0)
    model = build_model(1).eval()
    image, fov, name = frame(quick)
    out = {"frame": name}
    for precision in ("fp32", "int8"):
        started = time.perf_counter()
        predict_probability(model, image, fov, DEFAULTS | {"mode": "paper", "precision": precision})
        out[f"paper_{precision}_s"] = round(time.perf_counter() - started, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", choices=("reproducible", "fast"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.quick)))
        return
    results = {}
    for mode in ("reproducible", "fast"):
        train = subprocess.run([sys.executable, str(HERE / "train.py"), "--compute", mode, "--steps", "16",
                                *(["--quick"] if args.quick else [])], capture_output=True, text=True, check=True)
        infer = subprocess.run([sys.executable, __file__, "--child", mode, *(["--quick"] if args.quick else [])],
                               capture_output=True, text=True, check=True)
        results[mode] = json.loads(train.stdout.splitlines()[-1]) | json.loads(infer.stdout.splitlines()[-1])
        print(f"{mode}: training {results[mode]['patches_per_s']:.1f} patches/s; paper inference on "
              f"{results[mode]['frame']}: fp32 {results[mode]['paper_fp32_s']} s, int8 {results[mode]['paper_int8_s']} s")
    fast, slow = results["fast"], results["reproducible"]
    results["ratios"] = {"training_speed_reproducible_over_fast": round(slow["patches_per_s"] / fast["patches_per_s"], 3),
                         "paper_fp32_time_reproducible_over_fast": round(slow["paper_fp32_s"] / fast["paper_fp32_s"], 3),
                         "paper_int8_time_reproducible_over_fast": round(slow["paper_int8_s"] / fast["paper_int8_s"], 3)}
    print(f"reproducible/fast: training speed x{results['ratios']['training_speed_reproducible_over_fast']}, "
          f"inference time fp32 x{results['ratios']['paper_fp32_time_reproducible_over_fast']}, "
          f"int8 x{results['ratios']['paper_int8_time_reproducible_over_fast']}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
