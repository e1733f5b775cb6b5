"""What the reproducible compute mode costs: training patches/s and full-frame inference time, reproducible
against fast, as ratios measured in one run (each mode in its own process, one after the other).

Training: benchmarks/train.py (the real train_step, batch 16) in each mode. Inference: paper mode (fp32, and int8)
over a real IDRiD frame ($MICROPATCH_IDRID, else a synthetic 4288x2848 frame) with a seeded model; speed does not
depend on the weights in paper mode. Agreement: with the default pipeline's trained model (when `make run` has
made it), the paper-mode maps of its val images in fp32 and int8, compared across the modes and with fbgemm's
int8 kernels forced to AVX2 or AVX-512 VNNI. --quick (it checks that the script runs, not the speed): train.py's quick
steps, a 256x256 crop of the frame and of one val image, no forced kernels.
Prints a line per measurement and, last, one JSON object.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICK_CROP = 256  # --quick: the side of the centre crop of each frame


def frame(quick: bool):
    """uint8 (H, W) CLAHE green image and bool FOV of a real IDRiD frame (or a synthetic one of that size)."""
    from micropatch.data.preprocessing import fov_mask, green_clahe

    # empty where make test ran without IDRiD: the default path
    root = Path(os.environ.get("MICROPATCH_IDRID") or HERE.parent.parent / "shared" / "datasets" / "IDRiD")
    path = root / "A. Segmentation" / "1. Original Images" / "a. Training Set" / "IDRiD_03.jpg"
    if path.is_file():
        from micropatch.core.fileio import read_fundus

        rgb, name = read_fundus(path), "real IDRiD_03"
    else:
        from micropatch.data.synthetic import SyntheticSpec, synth_fundus

        rgb, name = synth_fundus(0, SyntheticSpec(width=4288, height=2848))[0], "synthetic 4288x2848"
    image, fov = green_clahe(rgb), fov_mask(rgb)
    if quick:
        image, fov = centre_crop(image), centre_crop(fov)
        return image, fov, f"{name} crop {QUICK_CROP}x{QUICK_CROP}"
    return image, fov, name


def centre_crop(array):
    """The QUICK_CROP square at the centre of a frame (inside the FOV: it is a disc at the centre)."""
    top, left = (array.shape[0] - QUICK_CROP) // 2, (array.shape[1] - QUICK_CROP) // 2
    return array[top:top + QUICK_CROP, left:left + QUICK_CROP]


def trained_maps(quick: bool) -> dict:
    """uint8 paper-mode maps (fp32, int8) of the default pipeline's model on its val images; {} without one."""
    from micropatch.core.fileio import read_png
    from micropatch.data.manifest import read_manifest
    from micropatch.evaluation.metrics import to_uint8
    from micropatch.inference.modes import DEFAULTS, predict_probability
    from micropatch.training.network import load_checkpoint

    repo = HERE.parent
    if not (repo / "data/model/model.safetensors").is_file():
        return {}
    model, _ = load_checkpoint(repo / "data/model/model.safetensors")
    rows = [r for r in read_manifest(repo / "data/splits/manifest.csv") if r["split"] == "val"][:1 if quick else None]
    maps = {}
    for row in rows:
        folder = repo / "data/preprocessed" / row["dataset"]
        image, fov = read_png(folder / f"{row['image_id']}.png"), read_png(folder / f"{row['image_id']}_fov.png") > 0
        if quick:
            image, fov = centre_crop(image), centre_crop(fov)
        for precision in ("fp32", "int8"):
            maps[f"{row['image_id']}_{precision}"] = to_uint8(
                predict_probability(model, image, fov, DEFAULTS | {"precision": precision}))
    return maps


def child(mode: str, quick: bool, maps_out: Path) -> dict:
    """One mode's inference timings, in this process; the trained model's maps go to maps_out (npz)."""
    import numpy as np

    from micropatch.core import compute

    compute.configure(mode)
    import torch

    from micropatch.inference.modes import DEFAULTS, predict_probability
    from micropatch.training.network import build_model

    torch.manual_seed(0)
    model = build_model(1).eval()
    image, fov, name = frame(quick)
    out = {"frame": name}
    for precision in ("fp32", "int8"):
        started = time.perf_counter()
        predict_probability(model, image, fov, DEFAULTS | {"mode": "paper", "precision": precision})
        out[f"paper_{precision}_s"] = round(time.perf_counter() - started, 2)
    np.savez(maps_out, **trained_maps(quick))
    return out


def differing(a: Path, b: Path) -> dict:
    """Pixels whose uint8 map differs between two runs' maps, per precision."""
    import numpy as np

    first, second = np.load(a), np.load(b)
    out = {}
    for precision in ("fp32", "int8"):
        keys = [k for k in first.files if k.endswith(precision)]
        out[precision] = int(sum((first[k] != second[k]).sum() for k in keys)) if keys else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", choices=("reproducible", "fast"))
    parser.add_argument("--maps", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.quick, args.maps)))
        return
    results, quick = {}, ["--quick"] if args.quick else []
    tmp = Path(tempfile.mkdtemp())
    for mode in ("reproducible", "fast"):
        train = subprocess.run([sys.executable, str(HERE / "train.py"), "--compute", mode, "--steps", "16", *quick],
                               capture_output=True, text=True, check=True)
        infer = subprocess.run([sys.executable, __file__, "--child", mode, "--maps", str(tmp / f"{mode}.npz"), *quick],
                               capture_output=True, text=True, check=True)
        trained = json.loads(train.stdout.splitlines()[-1])
        trained |= trained.pop("variants")["baseline"]  # train.py's default setting, measured alone
        results[mode] = trained | json.loads(infer.stdout.splitlines()[-1])
        print(f"{mode}: training {results[mode]['patches_per_s']:.1f} patches/s; paper inference on "
              f"{results[mode]['frame']}: fp32 {results[mode]['paper_fp32_s']} s, "
              f"int8 {results[mode]['paper_int8_s']} s")
    for isa in () if args.quick else ("AVX2", "AVX512_E1"):  # fbgemm's int8 kernels forced: without, with VNNI
        subprocess.run([sys.executable, __file__, "--child", "fast", "--maps", str(tmp / f"fast_{isa}.npz"), *quick],
                       capture_output=True, text=True, check=True, env=dict(os.environ, FBGEMM_ENABLE_INSTRUCTIONS=isa))
    results["pixels_differing"] = {
        "reproducible_vs_fast": differing(tmp / "reproducible.npz", tmp / "fast.npz"),
        "fbgemm_avx2_vs_avx512_vnni": None if args.quick else differing(tmp / "fast_AVX2.npz",
                                                                         tmp / "fast_AVX512_E1.npz")}
    shutil.rmtree(tmp)
    print(f"trained model's val maps, pixels differing: {results['pixels_differing']}")
    fast, slow = results["fast"], results["reproducible"]
    ratio = lambda key: round(slow[key] / fast[key], 3)  # noqa: E731
    results["ratios"] = {"training_speed_reproducible_over_fast": ratio("patches_per_s"),
                         "paper_fp32_time_reproducible_over_fast": ratio("paper_fp32_s"),
                         "paper_int8_time_reproducible_over_fast": ratio("paper_int8_s")}
    print(f"reproducible/fast: training speed x{results['ratios']['training_speed_reproducible_over_fast']}, "
          f"inference time fp32 x{results['ratios']['paper_fp32_time_reproducible_over_fast']}, "
          f"int8 x{results['ratios']['paper_int8_time_reproducible_over_fast']}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
