"""`micropatch ship`: copy a record's released model into models/ with a model card written from the file's own
metadata and the record's committed metrics (never by hand), so the shipped file, its card and the record agree."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from micropatch.core.fileio import InputError, atomic_path, file_digest, sha256_file, write_text
from micropatch.core.recipe import int8_export_path, read_recipe
from micropatch.data.manifest import read_manifest
from micropatch.project.readme import PAPER_IDRID_MA


def fmt(value: float) -> str:
    return f"{100 * value:.2f}"


def int8_lines(model: Path) -> list[str]:
    """The card's lines about the int8 export beside the model, if there is one."""
    path = int8_export_path(model)
    if not path.is_file():
        return []
    if read_recipe(path)["onnx"].get("source_sha256") != sha256_file(model):  # another model's export
        return [f"- The int8 export beside it (`{path.name}`) was written from another file, and predict refuses it "
                "until it is written again: `micropatch export model.safetensors --precision int8 --calibration "
                "TRAIN_IMAGES...` (docs/how-to/runtimes.md)."]
    calibration = read_recipe(path)["onnx"]["calibration"]
    return [f"- Its int8 export: `{path.name}`, {path.stat().st_size / 1e6:.1f} MB, sha256 "
            f"`{sha256_file(path)}`: ONNX,",
            "  ONNX Runtime static QDQ quantization (per-channel int8 weights, uint8 activations; the stem and head",
            f"  convolutions stay float32), activation ranges from {calibration['windows']} windows of the "
            f"{calibration['images']} train images;",
            "  what `micropatch predict` runs by default, on OpenVINO. Written by `micropatch export model.safetensors",
            "  --precision int8 --calibration TRAIN_IMAGES...` (docs/how-to/runtimes.md)."]


def card(model: Path, record: Path, shift: Path | None, runtimes: Path | None = None) -> str:
    """The model card's markdown."""
    from micropatch.training.network import load_checkpoint

    _, config = load_checkpoint(model)
    scores = json.loads((record / "metrics/domains/idrid_val.json").read_text())
    ma = scores["lesions"]["MA"]
    train = json.loads((record / "metrics/train.json").read_text())
    manifest = read_manifest(record / "data/splits/manifest.csv")
    by_split = {s: [r["image_id"] for r in manifest if r["split"] == s] for s in ("train", "tune", "val")}
    point = config["operating_point"]
    lines = [
        f"# micropatch model card: IDRiD microaneurysms (`{record.name}`)", "",
        f"- File: `model.safetensors`, {model.stat().st_size / 1e6:.1f} MB, sha256 `{sha256_file(model)}`.",
        "  safetensors (no pickle); convolution kernels stored as float16 and loaded into float32; everything",
        "  prediction needs is in its metadata (`micropatch` key): preprocessing, windows, normalisation, operating",
        "  point and the training images' FOV diameter.",
        f"- Made by: `dvc repro` in `{record.relative_to(record.parents[1])}` (its params.yaml and dvc.lock); "
        "this file is",
        "  that record's `data/model/release.safetensors`, byte for byte (tests/integration/test_shipped_model.py",
        "  checks it), so the figures below are this file's.",
        f"- Architecture: U-Net, {config['encoder']} encoder from random init, {config['attention']} decoder "
        "attention,",
        f"  1 input channel (CLAHE green), outputs {config['lesions']}.", *int8_lines(model), "",
        "## Training data", "",
        f"IDRiD segmentation training set (India, Kowa VX-10α, 4288x2848, CC BY 4.0): {len(by_split['train'])} train, "
        f"{len(by_split['tune'])} tune (epoch selection and operating point), {len(by_split['val'])} val images, split "
        f"by patient before any patch existed; manifest sha256 `{config['train_manifest_sha256']}` (leakage audit: "
        f"`{record.name}/metrics/leakage_report.md`). Val images: {', '.join(by_split['val'])}.", "",
        "## Recipe (also in the file's metadata)", "",
        f"- Preprocessing: {json.dumps(config['preprocess'])}.",
        f"- Inference: {json.dumps(config['inference'])}.",
        f"- Operating point (chosen on the tune images, never on val): threshold {point['threshold']}, predicted "
        f"components under {point['min_area']} px removed.",
        f"- Training: {train['epochs_run']} epochs, epoch {train['best_epoch']} selected on "
        f"{train.get('selection_split', 'val')} {train.get('select_on', 'patch_dice')}; compute mode "
        f"{config['compute']['mode']}.", "",
        "## Metrics: IDRiD val, 11 images, pooled pixels at the operating point", "",
        "| | P % | R % | Dice % | IoU % | aupr_11 | AP | lesion sens. % | FPs/img | FROC |",
        "|---|---|---|---|---|---|---|---|---|---|",
        "| micro-patching paper (0.5) | " + " | ".join(fmt(PAPER_IDRID_MA[k]) for k in ("precision", "recall", "dice",
                                                                                    "iou")) + " | - | - | - | - | - |",
        "| this model | " + " | ".join(fmt(ma[k]) for k in ("precision", "recall", "dice", "iou"))
        + f" | {ma['aupr_11']:.4f} | {ma['ap']:.4f} | {100 * ma['lesion_sensitivity']:.1f} | {ma['fps_per_image']:.2f}"
          f" | {ma['froc']:.3f} |", "",
        f"Per-image Dice: mean {fmt(ma['dice_per_image_mean'])} %, 95 % bootstrap CI over images "
        f"{fmt(ma['dice_per_image_ci95'][0])}-{fmt(ma['dice_per_image_ci95'][1])} %. Eleven images are few: read "
        "differences under a few points as noise.", ""]
    digest = sha256_file(model)
    lines += unmeasured(runtimes, digest, "What `micropatch predict` runs by default",
                        "python benchmarks/runtimes.py --parts accuracy --val-manifest "
                        f"{record.relative_to(record.parents[1])}/data/splits/manifest.csv | tail -1 > {runtimes}")
    lines += unmeasured(shift, digest, "Other cameras", "python benchmarks/camera_shift.py --split val --manifest "
                        f"{record.relative_to(record.parents[1])}/data/splits/manifest.csv")
    timed, shifted = own_result(runtimes, digest), own_result(shift, digest)
    if timed and "accuracy" in timed:
        accuracy = timed["accuracy"]
        lines += ["## What `micropatch predict` runs by default", "",
                  "| setting (11 val images) | Dice % | aupr_11 | AP | lesion sens. % |", "|---|---|---|---|---|"]
        for name in ("torch_fp32_paper", "openvino_int8_fast"):
            row = accuracy[name]
            lines.append(f"| {name.replace('_', ' ')} | {fmt(row['dice'])} | {row['aupr_11']:.4f} | {row['ap']:.4f} | "
                         f"{100 * row['lesion_sensitivity']:.1f} |")
        lines += ["", f"From `benchmarks/runtimes.py` ({runtimes.name}), on the original photographs through "
                  "predict's code path: torch fp32 paper mode against the default (`model-int8.onnx` on OpenVINO, "
                  "fast mode). The metrics above are the record's own infer and score stages (torch fp32, fast "
                  "mode with one tiling), hence the small difference.", ""]
    if shifted:
        measured = shifted
        lines += ["## Other cameras (a built shift: val resampled and re-encoded as JPEG q75)", "",
                  "| set | Dice % | of native | lesion sens. % | FPs/img |", "|---|---|---|---|---|"]
        for name, value in measured["results"].items():
            lines.append(f"| {name} | {fmt(value['dice'])} | {100 * value['dice_vs_native']:.0f} % | "
                         f"{100 * value['lesion_sensitivity']:.1f} | {value['fps_per_image']:.2f} |")
        lines += ["", f"From `benchmarks/camera_shift.py` ({shift.name}), through predict's code path at the model's "
                  "operating point: `off` predicts each photograph as it is, `on` resamples it to the training FOV "
                  "diameter (the minimum area scaled with it), `auto` (predict's default, `--rescale-fov auto`) "
                  "resamples only where the FOV diameter differs from the training one by more than "
                  f"{100 * measured['auto_rescale_tolerance']:.0f} %.", ""]
    lines += ["## Intended use", "",
              "Research on diabetic-retinopathy lesion segmentation: maps, masks and lesion lists of microaneurysms in "
              "colour fundus photographs, at native resolution (`micropatch predict photo.jpg --out DIR`). Not a "
              "medical device; not for diagnosis or screening decisions.", "",
              "## Limits", "",
              f"- Trained on {len(by_split['train'])} images from one camera and one population; microaneurysms only.",
              "- Measured on 11 images of the same release; every other camera is untested"
              + (" except the built shift above" if shifted else "")
              + ". Real e-ophtha or DDR figures need those datasets (docs/how-to/real-datasets.md).",
              "- Probabilities are not calibrated; the operating point is the tune split's best Dice.",
              "- Random-init encoder (no ImageNet weights offline); trained in the `fast` compute mode, so retraining "
              "on another CPU gives close, not identical, weights.", ""]
    return "\n".join(lines)


def benchmark_result(result: Path | None) -> dict | None:
    """A benchmark's result file as its JSON value (None when there is no such file); InputError, naming the file,
    when it is not a benchmark's JSON."""
    if not (result and result.is_file()):
        return None
    try:
        return json.loads(result.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{result}: not a benchmark's JSON result ({error}); give the file the benchmark's last "
                         "line was written to") from None


def own_result(result: Path | None, digest: str) -> dict | None:
    """A benchmark's result (its JSON object) when the file exists and was measured on the model file of this
    sha256, else None; InputError, naming the file, when it is not a benchmark's JSON."""
    measured = benchmark_result(result)
    return measured if isinstance(measured, dict) and measured.get("model_sha256") == digest else None


def measured_on(result: Path | None, digest: str) -> bool:
    """Whether a benchmark's result file exists and was measured on the model file of this sha256."""
    return own_result(result, digest) is not None


def unmeasured(result: Path | None, digest: str, section: str, command: str) -> list[str]:
    """The card's lines for a benchmark section whose result is not this file's (another model's figures would
    pass for this one's): what is missing and the command that measures it."""
    if result is None or measured_on(result, digest):
        return []
    return [f"## {section}", "", f"Not measured for this file yet (`{result}` holds another model's figures, or "
            f"none): `{command}`, then `micropatch ship`.", ""]


def ship(record: Path, out: Path, shift: Path | None = None, runtimes: Path | None = None) -> Path:
    """Copy the record's release into out/model.safetensors and write out/MODEL_CARD.md (an int8 export already
    beside it is kept only if it still comes from the released file: runtimes.load_model checks that)."""
    release = record / "data/model/release.safetensors"
    target = out / "model.safetensors"
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: not a folder; --out names the folder the model and its card go into")
    for result in (shift, runtimes):  # a bad result file stops ship before the model is replaced
        benchmark_result(result)
    if release.is_file():
        with atomic_path(target) as partial:  # Ctrl-C mid-copy leaves the previous model, not half of this one
            shutil.copyfile(release, partial)
    elif not (target.is_file() and file_digest(target, "md5") == locked_release_md5(record)):
        # a record's data is not kept in git: its card can be rewritten only over the very file its dvc.lock names
        raise InputError(f"{release}: no released model, and {target} is not the one {record}/dvc.lock names; run "
                         f"`dvc repro` in {record} first")
    write_text(out / "MODEL_CARD.md", card(target, record, shift, runtimes))
    return target


def locked_release_md5(record: Path) -> str | None:
    """The MD5 of data/model/release.safetensors in the record's dvc.lock (None if the lock has no such output)."""
    lock = record / "dvc.lock"
    if not lock.is_file():
        return None
    for stage in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).values():
        for output in stage.get("outs", []):
            if output.get("path") == "data/model/release.safetensors":
                return output.get("md5")
    return None
