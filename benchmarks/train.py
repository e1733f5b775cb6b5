"""Training throughput: patches/s at batch 16 and how much of a step is spent waiting for data.

Runs micropatch.training.train_step itself (channels_last, Dice + Focal, AdamW; AMP on CUDA) behind the
training loader and its augmentation, on a patch set: the real-IDRiD record's when present, else a synthetic one
written to a temp folder, in the compute mode given (--compute; params.yaml's by default). Data time = waiting
for the next batch; compute time = forward, backward and optimizer step.
--variants measures each setting alone against the channels_last fp32 baseline, in one run (issue: training
throughput): contiguous (no channels_last), bf16 (autocast, AVX512-BF16 / AMX CPUs), compile (torch.compile).
Prints a line per variant and, last, one JSON object.  --quick: 3 timed steps after 1 of warm-up (it checks
that the script runs, not the speed).
"""
import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from micropatch.core import compute
from micropatch.core.fileio import load_params
from micropatch.data.patches import write_patch_set

REPO = Path(__file__).resolve().parents[1]
RECORD_PATCHES = REPO / "results" / "idrid-ma-best" / "data" / "patches" / "train"
# each alone: (channels_last, precision, compile)
VARIANTS = {"baseline": (True, "fp32", False), "contiguous": (False, "fp32", False), "bf16": (True, "bf16", False),
            "compile": (True, "fp32", True)}


def synthetic_patch_set(folder: Path, n: int = 512) -> Path:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 128, 128), dtype=np.uint8)
    masks = (rng.random((n, 1, 128, 128)) < 0.01).astype(np.uint8)
    write_patch_set(folder, images, masks, [], {"split": "train"})
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--patches", type=Path, default=RECORD_PATCHES)
    parser.add_argument("--compute", choices=compute.MODES,
                        default=load_params("compute", REPO / "params.yaml")["mode"])
    parser.add_argument("--variants", nargs="+", default=["baseline"], choices=VARIANTS)
    args = parser.parse_args()
    settings = compute.configure(args.compute)  # before torch is imported
    import torch
    from torch.utils.data import DataLoader

    from micropatch.training.config import TrainConfig
    from micropatch.training.dataset import PatchDataset
    from micropatch.training.loss import make_loss
    from micropatch.training.network import build_model
    from micropatch.training.trainer import train_step

    steps, warmup = (3, 1) if args.quick else (args.steps, 3)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = {"compute": settings["mode"], "batch_size": args.batch_size, "workers": args.workers, "steps": steps,
               "device": torch.cuda.get_device_name() if device.type == "cuda"
               else f"cpu ({torch.get_num_threads()} threads)", "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        patches = args.patches if (args.patches / "images.npy").is_file() else synthetic_patch_set(Path(tmp))
        results["patch_set"] = "real IDRiD record" if patches == args.patches else "synthetic"
        for name in args.variants:
            channels_last, precision, compiled = VARIANTS[name]
            dataset = PatchDataset(patches, augment=True, seed=0)
            loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                pin_memory=device.type == "cuda", drop_last=True,
                                generator=torch.Generator().manual_seed(0))
            torch.manual_seed(0)
            cfg = TrainConfig.from_params(REPO / "params.yaml")
            model = build_model(1, cfg.encoder, None, cfg.attention).to(device)
            model = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            model.train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            runner = torch.compile(model) if compiled else model
            scaler = torch.amp.GradScaler(enabled=device.type == "cuda")
            loss_fn = make_loss(1, cfg)
            data_s, compute_s = [], []
            batches = iter(loader)
            first = time.perf_counter()
            for step in range(warmup + steps):
                started = time.perf_counter()
                images, masks = next(batches)
                loaded = time.perf_counter()
                train_step(runner, optimizer, scaler, loss_fn, images, masks, device, precision, channels_last)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if step >= warmup:
                    data_s.append(loaded - started)
                    compute_s.append(time.perf_counter() - loaded)
                elif step == warmup - 1:
                    warmup_s = time.perf_counter() - first
            step_s = statistics.median(d + c for d, c in zip(data_s, compute_s))
            results["variants"][name] = {
                "patches_per_s": args.batch_size / step_s, "median_step_s": step_s,
                "median_data_s": statistics.median(data_s),
                "data_fraction": sum(data_s) / (sum(data_s) + sum(compute_s)), "warmup_s": warmup_s}
            base = results["variants"].get("baseline", {}).get("patches_per_s")
            print(f"{name}: {args.batch_size / step_s:.1f} patches/s"
                  + (f", {args.batch_size / step_s / base:.2f}x the baseline" if base else "")
                  + f"; warm-up {warmup_s:.0f} s", flush=True)
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
