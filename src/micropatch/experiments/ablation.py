"""Proxy experiments (`micropatch ablate`): one variant of a record's params trained for a fixed, short budget on
the record's own train / tune / val split, scored on the full tune and val photographs, one row appended to a
committed table. Cheap proxies first, one full run last: every row is read against the same baseline, and two
seeds of one variant say how large a difference must be before it is not noise.

The protocol and the variants live in a YAML file (benchmarks/ablations.yaml): `protocol` holds the budget (epochs,
steps, compute mode, precision) that every variant shares; each variant holds its params overrides (dotted keys,
applied after the protocol) and why it is tried. A variant may also be test-time only (`from`: another variant's
trained model, and inference or averaging settings), which costs no training.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import json
import logging
import math
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from micropatch.core.fileio import InputError, atomic_path, load_params, read_png, sha256_file, write_json

log = logging.getLogger(__name__)

TABLE_COLUMNS = ("variant", "seed", "overrides", "steps", "patch_draws", "train_minutes", "score_minutes",
                 "patches_per_s", "best_epoch", "threshold", "min_area", "tune_ap", "tune_aupr_11", "tune_dice",
                 "val_ap", "val_aupr_11", "val_dice", "val_precision", "val_recall", "val_lesion_sensitivity",
                 "val_fps_per_image", "val_froc", "val_degenerate", "commit", "date", "command")
SCORES = ("ap", "aupr_11", "dice", "precision", "recall", "lesion_sensitivity", "fps_per_image", "froc", "degenerate")


def set_dotted(params: dict, key: str, value) -> None:
    """params with params[a][b] = value for key 'a.b' (sections created as needed)."""
    *path, last = key.split(".")
    for part in path:
        params = params.setdefault(part, {})
    params[last] = value


def variant_params(record_params: dict, protocol: dict, overrides: dict, seed: int) -> dict:
    """The record's params with the protocol's and then the variant's dotted overrides, and train.seed."""
    params = copy.deepcopy(record_params)
    for key, value in {**protocol, **overrides, "train.seed": seed}.items():
        set_dotted(params, key, value)
    return params


SPEC_SHAPE = "needs a `protocol` mapping and a `variants` mapping"  # what an ablations file must hold


def read_spec(path: Path) -> dict:
    """The whole ablations YAML file (protocol, variants, full_runs); InputError, naming the file, for one that is
    missing, not YAML or not a mapping."""
    try:
        spec = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such file: give the ablations YAML file (benchmarks/ablations.yaml)") from None
    except (IsADirectoryError, UnicodeDecodeError):
        raise InputError(f"{path}: not a YAML text file: give the ablations YAML file (benchmarks/ablations.yaml)"
                         ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise InputError(f"{path}: not valid YAML{where}: fix the file (benchmarks/ablations.yaml is an example)"
                         ) from None
    if not isinstance(spec, dict):
        raise InputError(f"{path}: {SPEC_SHAPE}")
    return spec


def load_variants(path: Path) -> tuple[dict, dict]:
    """(protocol, variants) of an ablations YAML file; InputError for a malformed one."""
    spec = read_spec(path)
    if "protocol" not in spec or "variants" not in spec:
        raise InputError(f"{path}: {SPEC_SHAPE}")
    return spec["protocol"], spec["variants"]


def patch_sets(params: dict, manifest: Path, preprocessed: Path, cache: Path) -> Path:
    """The train / tune / val patch sets of params' patchify section, built once per distinct section (and
    lesions, manifest) under cache/<hash>/, as the patchify stage builds them (extras on train only)."""
    from micropatch.data.manifest import read_manifest
    from micropatch.data.patches import build_patch_set, write_patch_set

    spec = {"patchify": params["patchify"], "lesions": params["lesions"], "manifest": sha256_file(manifest)}
    folder = Path(cache) / hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    if (folder / "val" / "meta.json").is_file():
        return folder
    rows = read_manifest(manifest)
    patchify = params["patchify"]
    for split in ("train", "tune", "val"):
        extras = (patchify["hard_negative_keep"], patchify["lesion_jitter"]) if split == "train" else (0.0, 0)
        images, masks, index, _ = build_patch_set([r for r in rows if r["split"] == split], preprocessed,
                                                  params["lesions"], patchify["size"], patchify["stride"],
                                                  patchify["background_keep"], patchify["seed"], *extras,
                                                  scale=patchify.get("scale", 1.0))
        write_patch_set(folder / split, images, masks, index,
                        {"split": split, "background_keep": patchify["background_keep"], "spec": spec})
    return folder


def image_items(model, config: dict, rows: list[dict], preprocessed: Path, settings: dict, lesion: str):
    """(image_id, probability uint8, truth, fov) of each row, its map predicted by the model's recipe."""
    from tqdm import tqdm

    from micropatch.evaluation.metrics import to_uint8
    from micropatch.inference.maps import manifest_probability

    channel = config["lesions"].index(lesion)
    for row in tqdm(rows, desc="score", unit="img", leave=False):
        folder = Path(preprocessed) / row["dataset"]
        probability = manifest_probability(model, config, row, preprocessed, settings)[channel]
        yield (row["image_id"], to_uint8(probability), read_png(folder / f"{row['image_id']}_{lesion}.png") > 0,
               read_png(folder / f"{row['image_id']}_fov.png") > 0)


def score_model(model, config: dict, rows: list[dict], preprocessed: Path, settings: dict,
                temperature: float = 1.0, fixed_point: dict | None = None) -> dict:
    """{tune, val, point}: the operating point chosen on the tune photographs' full maps (pooled Dice; or
    fixed_point), the tune and val scores at it. temperature: probabilities re-scaled as sigmoid(logit(p) / T)
    before scoring (AP does not move; aupr_11 does)."""
    from micropatch.evaluation.postprocess import choose_operating_point, operating_counts
    from micropatch.evaluation.score import score_images

    lesion = config["lesions"][0]
    maps = {split: [tempered(item, temperature) for item in image_items(
        model, config, [r for r in rows if r["split"] == split], preprocessed, settings, lesion)]
        for split in ("tune", "val")}
    pooled = sum(operating_counts(probability, truth, fov) for _, probability, truth, fov in maps["tune"])
    point = fixed_point or choose_operating_point(pooled)
    scored = {split: score_images(items, point["threshold"], point["min_area"], bootstrap_draws=0)[0]
              for split, items in maps.items()}
    return {"point": {"threshold": point["threshold"], "min_area": point["min_area"]}, **scored}


def tempered(item: tuple, temperature: float) -> tuple:
    """An image item with its uint8 probabilities re-scaled at a temperature (1: unchanged)."""
    if temperature == 1.0:
        return item
    from micropatch.evaluation.metrics import to_uint8

    image_id, probability, truth, fov = item
    p = np.clip(probability / 255.0, 1e-4, 1 - 1e-4)
    return image_id, to_uint8(1 / (1 + np.exp(-np.log(p / (1 - p)) / temperature))), truth, fov


def git_commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    return result.stdout.strip() + ("+" if dirty.stdout.strip() else "") if result.returncode == 0 else "unknown"


def append_row(table: Path, row: dict) -> None:
    """Append one row to the committed CSV table (header written once), atomically."""
    rows = []
    if Path(table).is_file():
        with open(table, newline="") as f:
            rows = list(csv.DictReader(f))
    rows.append({k: row.get(k, "") for k in TABLE_COLUMNS})
    with atomic_path(table) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def train_variant(params: dict, record: Path, work: Path) -> tuple[Path, dict]:
    """Train one variant on the record's split (selection on tune), resumable; (model path, train summary)."""
    from micropatch.core.recipe import training_recipe
    from micropatch.training.config import TrainConfig
    from micropatch.training.network import INPUT_MEAN, INPUT_STD
    from micropatch.training.trainer import train

    manifest, preprocessed = record / "data/splits/manifest.csv", record / "data/preprocessed"
    patches = patch_sets(params, manifest, preprocessed, work.parent / "patches")
    cfg = TrainConfig(**params["train"])
    fingerprint = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    recipe = training_recipe(params["preprocess"], params["patchify"], {"mean": INPUT_MEAN, "std": INPUT_STD},
                             params["compute"], sha256_file(manifest))
    model_path = work / "model.safetensors"
    summary_path = work / "train.json"
    if model_path.is_file() and summary_path.is_file() and json.loads(summary_path.read_text())["fingerprint"] \
            == fingerprint:
        return model_path, json.loads(summary_path.read_text())
    started = time.perf_counter()
    summary = train(patches / "train", patches / "tune", params["lesions"], cfg, model_path, work / "state.pt",
                    fingerprint, recipe)
    summary |= {"minutes": (time.perf_counter() - started) / 60, "fingerprint": fingerprint,
                "steps": summary["epochs_run"] * math.ceil(min(summary["train_patches"] / cfg.batch_size,
                                                              cfg.max_steps_per_epoch or math.inf))}
    (work / "state.pt").unlink(missing_ok=True)
    write_json(summary_path, summary)
    return model_path, summary


def run(record: Path, variants_file: Path, names: list[str], seeds: list[int], table: Path, work: Path) -> list[dict]:
    """Run each named variant for each seed (a trained model is reused when its params did not change); append a
    row per run to `table`; return the rows."""
    from micropatch.core.recipe import resolve
    from micropatch.data.manifest import read_manifest
    from micropatch.inference.modes import DEFAULTS
    from micropatch.training.network import load_checkpoint

    protocol, variants = load_variants(variants_file)
    unknown = sorted(set(names) - set(variants))
    if unknown:
        raise InputError(f"{variants_file}: no variant named {unknown}; it has {sorted(variants)}")
    if not (record / "data/preprocessed").is_dir():
        raise InputError(f"{record}/data/preprocessed is missing: build the record's data first (`cd {record} && "
                         "dvc repro patient-split`, with its data/sources in place: the record's README)")
    record_params = load_params(path=record / "params.yaml")
    rows = read_manifest(record / "data/splits/manifest.csv")
    out = []
    for name in names:
        spec = variants[name]
        for seed in seeds:
            trained = spec.get("from", name)
            params = variant_params(record_params, protocol, variants[trained].get("overrides", {}), seed)
            model_path, summary = train_variant(params, record, work / f"{trained}-s{seed}")
            started = time.perf_counter()
            model, config = load_checkpoint(model_path)
            if spec.get("swa_epochs"):
                model = swa_of(work / f"{trained}-s{seed}", model, spec["swa_epochs"], params, record, work)
            settings = resolve(config, "inference", params["infer"] | spec.get("infer", {}), DEFAULTS)
            temperature = choose_temperature(model, config, rows, record, settings) if spec.get("temperature") \
                else 1.0
            scores = score_model(model, config, rows, record / "data/preprocessed", settings, temperature,
                                 spec.get("point"))
            row = {"variant": name, "seed": seed, "steps": summary["steps"],
                   "overrides": json.dumps(spec.get("overrides", {}) | {k: spec[k] for k in ("from", "infer",
                                           "swa_epochs", "temperature", "point") if k in spec}, sort_keys=True),
                   "patch_draws": summary["steps"] * params["train"]["batch_size"],
                   "train_minutes": round(summary["minutes"], 1) if "from" not in spec else 0,
                   "score_minutes": round((time.perf_counter() - started) / 60, 1),
                   "patches_per_s": round(summary["steps"] * params["train"]["batch_size"]
                                          / (60 * summary["minutes"]), 1),
                   "best_epoch": summary["best_epoch"], **scores["point"],
                   "commit": git_commit(), "date": time.strftime("%Y-%m-%d"),
                   "command": "micropatch ablate " + shlex.join([name, "--seeds", str(seed)])}
            for split in ("tune", "val"):
                row |= {f"{split}_{k}": round(float(scores[split][k]), 4) for k in SCORES
                        if f"{split}_{k}" in TABLE_COLUMNS}
            row["val_degenerate"] = bool(scores["val"]["degenerate"])
            append_row(table, row)
            log.info("ablate %s seed %d: val AP %.4f, aupr_11 %.4f, Dice %.4f (tune point %.2f / %d px)", name, seed,
                     row["val_ap"], row["val_aupr_11"], row["val_dice"], row["threshold"], row["min_area"])
            out.append(row)
    return out


def swa_of(folder: Path, model, epochs: int, params: dict, record: Path, work: Path):
    """The mean of a run's last `epochs` epochs' weights (train.swa_epochs kept them), BatchNorm recomputed on its
    train patches."""
    from micropatch.training.averaging import averaged_model, bn_batches

    paths = sorted((folder / "epochs").glob("epoch_*.safetensors"))[-epochs:]
    if len(paths) < epochs:
        raise InputError(f"{folder}/epochs holds {len(paths)} epochs' weights, not {epochs}: train the variant "
                         f"with train.swa_epochs >= {epochs}")
    patches = patch_sets(params, record / "data/splits/manifest.csv", record / "data/preprocessed",
                         work / "patches")
    images = np.load(patches / "train" / "images.npy", mmap_mode="r")
    averaged, _ = averaged_model(paths, "full", paths[-1], lambda: bn_batches(images, 32, 2048, 0))
    return averaged


TEMPERATURES = (0.5, 0.7, 1.0, 1.5, 2.0, 3.0)


def choose_temperature(model, config: dict, rows: list[dict], record: Path, settings: dict) -> float:
    """The temperature of TEMPERATURES with the best tune aupr_11 (AP is the same at every temperature)."""
    from micropatch.evaluation.score import score_images

    tune = list(image_items(model, config, [r for r in rows if r["split"] == "tune"], record / "data/preprocessed",
                            settings, config["lesions"][0]))
    best = max(TEMPERATURES, key=lambda t: score_images([tempered(i, t) for i in tune], 0.5, 0,
                                                         bootstrap_draws=0)[0]["aupr_11"])
    log.info("ablate: temperature %.1f chosen on tune aupr_11", best)
    return best


def markdown(table: Path) -> str:
    """The table as Markdown: one row per run, the baseline's first, each with its difference in val AP from the
    baseline's first seed, its minutes and its command."""
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    rows = sorted(rows, key=lambda r: r["variant"] != "baseline")  # stable: otherwise in the order they ran
    base = next((float(r["val_ap"]) for r in rows if r["variant"] == "baseline"), math.nan)
    lines = ["| variant | seed | what changes | val AP | vs baseline | val aupr_11 | val Dice % (tune point) | "
             "lesion sens. % | FPs/img | tune AP | train min | score min | command |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        flag = "*" if r["val_degenerate"] == "True" else ""
        lines.append(f"| {r['variant']} | {r['seed']} | `{r['overrides']}` | {float(r['val_ap']):.4f} | "
                     f"{float(r['val_ap']) - base:+.4f} | {float(r['val_aupr_11']):.4f}{flag} | "
                     f"{100 * float(r['val_dice']):.2f} | {100 * float(r['val_lesion_sensitivity']):.1f} | "
                     f"{float(r['val_fps_per_image']):.1f} | {float(r['tune_ap']):.4f} | {r['train_minutes']} | "
                     f"{r['score_minutes']} | `{r['command']}` |")
    return "\n".join(lines) + "\n"


def main_args(args) -> int:
    """`micropatch ablate`'s body: the CLI has pinned the compute mode already."""
    rows = run(args.record, args.variants_file, args.variants, args.seeds, args.table, args.record / "data/ablate")
    print(markdown(args.table))
    return 0 if rows else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run it as `micropatch ablate`")
