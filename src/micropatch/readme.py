"""Regenerate README.md's results block from metrics/ (so the table is never pasted by hand)."""
from __future__ import annotations

import re
from pathlib import Path

BEGIN, END = "<!-- results:begin (micropatch readme) -->", "<!-- results:end -->"
RECORD_BEGIN, RECORD_END = "<!-- idrid-ma:begin (micropatch readme) -->", "<!-- idrid-ma:end -->"
# The micro-patching paper's figures: IDRiD MA, patient-isolated 43 / 11 validation, pixels pooled at 0.5
PAPER_IDRID_MA = {"precision": 0.4846, "recall": 0.4540, "dice": 0.4688, "iou": 0.3061}


def results_block(metrics: Path) -> str:
    """Markdown: the cross-domain table, oracle thresholds, and the figures and panels that exist."""
    import json

    lines = [BEGIN, "", (metrics / "cross_domain.md").read_text().strip(), ""]
    for domain_file in sorted((metrics / "domains").glob("*.json")):
        scores = json.loads(domain_file.read_text())
        domain = scores["domain"]
        for lesion, s in scores["lesions"].items():
            lines.append(f"- {domain} {lesion}: per-image Dice {100 * s['dice_per_image_mean']:.2f} % "
                         f"(95 % bootstrap CI {100 * s['dice_per_image_ci95'][0]:.2f}-{100 * s['dice_per_image_ci95'][1]:.2f}); "
                         f"oracle threshold {s['oracle_threshold_max_dice']:.3f} would give Dice {100 * s['oracle_dice']:.2f} % "
                         "(tuned on this very domain: not a result, a diagnostic)")
    lines.append("")
    for figure in ("curves.png", "cross_domain.png"):
        if (metrics / "plots" / figure).is_file():
            lines.append(f"![{figure}](metrics/plots/{figure})")
    panels = sorted((metrics / "plots" / "panels").glob("*_median.png"))
    if panels:
        lines += ["", f"Qualitative panel (median image by Dice): ![panel](metrics/plots/panels/{panels[0].name})"]
    return "\n".join(lines + ["", END])


def record_block(record: Path) -> str:
    """Markdown: the real-IDRiD record's validation figures next to the paper's, with its training facts."""
    import json

    ma = json.loads((record / "metrics" / "domains" / "idrid_val.json").read_text())["lesions"]["MA"]
    from .fileio import load_params

    train = json.loads((record / "metrics" / "train.json").read_text())
    cfg = load_params("train", record / "params.yaml")
    steps = cfg["max_steps_per_epoch"] or -(-train["train_patches"] // cfg["batch_size"])
    rows = ["| IDRiD MA, val (11 images) | P % | R % | Dice % | IoU % | aupr_11 | AP | lesion sens. % | FPs/img | FROC |",
            "|---|---|---|---|---|---|---|---|---|---|",
            "| micro-patching paper | " + " | ".join(f"{100 * PAPER_IDRID_MA[k]:.2f}" for k in ("precision", "recall", "dice", "iou"))
            + " | - | - | - | - | - |",
            "| micropatch (`results/idrid-ma`) | " + " | ".join(f"{100 * ma[k]:.2f}" for k in ("precision", "recall",
                                                                                          "dice", "iou"))
            + f" | {ma['aupr_11']:.4f} | {ma['ap']:.4f} | {100 * ma['lesion_sensitivity']:.1f} | "
              f"{ma['fps_per_image']:.2f} | {ma['froc']:.3f} |"]
    facts = (f"Trained {train['epochs_run']} epochs of {steps} steps of {cfg['batch_size']} "
             f"({train['epochs_run'] * steps * cfg['batch_size']:,} patch draws from {train['train_patches']:,} "
             f"training patches), from random init (encoder_weights: {cfg['encoder_weights']}), on "
             f"{train['device']}; the best val Dice on patches came at epoch {train['best_epoch']}.")
    plots = record / "metrics" / "plots"
    images = [f"![{name}]({plots / name})" for name in ("training.png", "curves.png") if (plots / name).is_file()]
    images += [f"![{p.stem}]({p})" for p in sorted((plots / "panels").glob("idrid_val_MA_*.png"))]
    return "\n".join([RECORD_BEGIN, "", *rows, "", facts, "", *images, "", RECORD_END])


def replace_block(text: str, begin: str, end: str, block: str, readme: Path) -> str:
    """text with the block between the begin and end markers replaced."""
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"{readme} has no block {begin} ... {end}")
    return pattern.sub(lambda _: block, text)


def update(readme: Path = Path("README.md"), metrics: Path = Path("metrics"),
           record: Path = Path("results/idrid-ma")) -> None:
    """Replace README.md's results block (and the real-IDRiD record's, when the record has metrics) in place."""
    from .fileio import write_text

    text = replace_block(readme.read_text(), BEGIN, END, results_block(metrics), readme)
    if (record / "metrics" / "domains" / "idrid_val.json").is_file():
        text = replace_block(text, RECORD_BEGIN, RECORD_END, record_block(record), readme)
    write_text(readme, text)
