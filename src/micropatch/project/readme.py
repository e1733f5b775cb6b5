"""Regenerate README.md's results block from metrics/ (so the table is never pasted by hand)."""
from __future__ import annotations

import json
import re
from pathlib import Path

from micropatch.core.fileio import load_params, write_text
from micropatch.evaluation.postprocess import lesion_point

BEGIN, END = "<!-- results:begin (micropatch readme) -->", "<!-- results:end -->"
RECORD_BEGIN, RECORD_END = "<!-- idrid-ma:begin (micropatch readme) -->", "<!-- idrid-ma:end -->"
# The micro-patching paper's figures: IDRiD MA, patient-isolated 43 / 11 validation, pixels pooled at 0.5
PAPER_IDRID_MA = {"precision": 0.4846, "recall": 0.4540, "dice": 0.4688, "iou": 0.3061}


def results_block(metrics: Path) -> str:
    """Markdown: the cross-domain table, oracle thresholds, and the figures and panels that exist."""
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


RECORDS = ("idrid-ma", "idrid-ma-best")  # the paper's configuration, and the best one measured here


def record_row(record: Path) -> tuple[str, str]:
    """(table row, training facts) of one real-IDRiD record from its committed metrics."""

    scores = json.loads((record / "metrics" / "domains" / "idrid_val.json").read_text())
    ma = scores["lesions"]["MA"]
    point = scores.get("operating_point", {"threshold": scores.get("threshold", 0.5), "min_area": 0})
    train = json.loads((record / "metrics" / "train.json").read_text())
    cfg = load_params("train", record / "params.yaml")
    steps = cfg["max_steps_per_epoch"] or -(-train["train_patches"] // cfg["batch_size"])
    row = (f"| micropatch (`results/{record.name}`) | {point['threshold']:.2f} / {point['min_area']} | "
           + " | ".join(f"{100 * ma[k]:.2f}" for k in ("precision", "recall", "dice", "iou"))
           + f" | {ma['aupr_11']:.4f} | {ma['ap']:.4f} | {100 * ma['lesion_sensitivity']:.1f} | "
             f"{ma['fps_per_image']:.2f} | {ma['froc']:.3f} |")
    selected = (f"epoch {train['best_epoch']} selected on {train['selection_split']} {train['select_on']}"
                if "select_on" in train else f"epoch {train['best_epoch']} selected on val patch Dice")
    facts = (f"`results/{record.name}`: {train['epochs_run']} epochs of {steps} steps of {cfg['batch_size']} "
             f"({train['epochs_run'] * steps * cfg['batch_size']:,} patch draws from {train['train_patches']:,} "
             f"training patches), random init, {train['device']}; {selected}.")
    return row, facts


def record_block(records: list[Path]) -> str:
    """Markdown: the real-IDRiD records' validation figures next to the paper's, with their training facts."""
    rows = ["| IDRiD MA, val (11 images) | threshold / min area | P % | R % | Dice % | IoU % | aupr_11 | AP | "
            "lesion sens. % | FPs/img | FROC |", "|---|---|---|---|---|---|---|---|---|---|---|",
            "| micro-patching paper | 0.50 / 0 | " + " | ".join(f"{100 * PAPER_IDRID_MA[k]:.2f}" for k in
                                                        ("precision", "recall", "dice", "iou"))
            + " | - | - | - | - | - |"]
    facts = []
    for record in records:
        row, fact = record_row(record)
        rows.append(row)
        facts.append(f"- {fact}")
    images = []
    for record in records:
        plots = record / "metrics" / "plots"
        images += [f"![{record.name} {name}]({plots / name})" for name in ("training.png", "curves.png")
                   if (plots / name).is_file()]
    return "\n".join([RECORD_BEGIN, "", *rows, "", *facts, "", *images, "", RECORD_END])


LESIONS_BEGIN, LESIONS_END = "<!-- idrid-4lesions:begin (micropatch readme) -->", "<!-- idrid-4lesions:end -->"
LESIONS_RECORD = "idrid-4lesions"
# aupr_11 on the 27 official IDRiD test images: the cross-dataset study's best rows (U-Net SE-ResNet101, 1536 px)
# and the IDRiD challenge's leaders, per lesion (../shared/SPEC.md, "Reference figures"); SE is the study's CWS.
STUDY_IDRID_AUPR = {"EX": 0.842, "HE": 0.593, "MA": 0.484, "SE": 0.641, "mean": 0.640}
CHALLENGE_IDRID_AUPR = {"EX": 0.8850, "HE": 0.6804, "MA": 0.5017, "SE": 0.6995}


def lesions_block(record: Path) -> str:
    """Markdown: the four-lesion record's per-lesion scores on its 11 val images next to the study's and the
    challenge's IDRiD test AUPR, with its training facts."""
    scores = json.loads((record / "metrics" / "domains" / "idrid_val.json").read_text())

    point = scores["operating_point"]
    rows = ["| lesion | aupr_11 | AP | threshold / min area | Dice % | lesion sens. % | FPs/img | study, IDRiD test | "
            "challenge leader, IDRiD test |", "|---|---|---|---|---|---|---|---|---|"]
    for lesion, s in [*scores["lesions"].items(), ("mean", scores.get("lesion_mean"))]:
        if s is None:
            continue
        challenge = CHALLENGE_IDRID_AUPR.get(lesion)
        own = lesion_point(point, lesion) if lesion in scores["lesions"] else None
        rows.append(f"| {lesion} | {s['aupr_11']:.4f} | {s['ap']:.4f} | "
                    + (f"{own['threshold']:.2f} / {own['min_area']} | " if own else "- | ")
                    + f"{100 * s['dice']:.2f} | "
                    f"{100 * s['lesion_sensitivity']:.1f} | {s['fps_per_image']:.2f} | "
                    f"{STUDY_IDRID_AUPR.get(lesion, float('nan')):.3f} | "
                    + (f"{challenge:.4f} |" if challenge else "- |"))
    _, facts = record_row(record)
    return "\n".join([LESIONS_BEGIN, "", *rows, "",
                      f"- {facts} Each lesion's operating point is the one with the best pooled Dice on the tune "
                      "split; AUPR and AP do not depend on it.", "",
                      f"![{record.name} training.png]({record / 'metrics/plots/training.png'})", "", LESIONS_END])


ABLATIONS_BEGIN, ABLATIONS_END = "<!-- ablations:begin (micropatch readme) -->", "<!-- ablations:end -->"
ABLATION_COLUMNS = ("aupr_11", "ap", "dice", "lesion_sensitivity", "fps_per_image")


def ablation_block(ablations: Path, shift: Path) -> str:
    """Markdown: benchmarks/results/record_ablations.json and camera_shift.json as tables (those that exist)."""
    lines = [ABLATIONS_BEGIN, ""]
    if ablations.is_file():
        measured = json.loads(ablations.read_text())
        lines += [f"Inference-side ablations of `results/{measured['record']}` on its {measured['images']} val images "
                  f"(`{ablations.relative_to(ablations.parents[2])}`):", "",
                  "| row | aupr_11 | AP | Dice % | lesion sens. % | FPs/img |", "|---|---|---|---|---|---|"]
        for name, row in measured["rows"].items():
            lines.append(f"| {name} | {row['aupr_11']:.4f} | {row['ap']:.4f} | {100 * row['dice']:.2f} | "
                         f"{100 * row['lesion_sensitivity']:.1f} | {row['fps_per_image']:.2f} |")
        lines.append("")
    if shift.is_file():
        measured = json.loads(shift.read_text())
        lines += [f"Camera shift (`{shift.relative_to(shift.parents[2])}`): the {measured['images']} val photographs "
                  "and masks resampled and re-encoded as JPEG q75, scored at their own size at the model's operating "
                  f"point; inference {measured['inference']['mode']} {measured['inference']['precision']}; training "
                  f"FOV diameter {measured['train_fov_diameter']} px:", "",
                  "| set | Dice % | of native | aupr_11 | lesion sens. % | FPs/img |", "|---|---|---|---|---|---|"]
        for name, row in measured["results"].items():
            lines.append(f"| {name} | {100 * row['dice']:.2f} | {100 * row['dice_vs_native']:.0f} % | "
                         f"{row['aupr_11']:.4f} | {100 * row['lesion_sensitivity']:.1f} | {row['fps_per_image']:.2f} |")
        lines.append("")
    return "\n".join(lines + [ABLATIONS_END])


STUDY_BEGIN, STUDY_END = "<!-- study:begin (micropatch readme) -->", "<!-- study:end -->"
STUDY_PROJECT = "study-combinations"


def study_block(project: Path) -> str:
    """Markdown: the default study's measured time, its figure-4 table (strategies) and table 3 (leave-one-out)."""
    out = project / "metrics" / "study"
    timing = json.loads((out / "time.json").read_text())
    return "\n".join([
        STUDY_BEGIN, "",
        (f"Measured: {timing['of']} experiments ({timing['experiments_run']} run in that call) through the DVC queue "
         f"with {timing['workers']} workers in {timing['experiments_minutes']} min, on {timing['cpu_cores']} CPU "
         "cores; " if "experiments_minutes" in timing else "Measured: ")
        + f"the experiments' commits from {timing['experiments_committed'][0]} to {timing['experiments_committed'][1]}; "
        f"the ensembles, soups and tables in {timing['strategies_and_tables_minutes']} min"
        + (f"; the whole study, queueing to tables, in **{timing['total_minutes']} min**, compute mode "
           f"`{timing['compute']['mode']}` with "
           + (f"{timing['compute']['threads']} thread(s) per worker." if "threads" in timing["compute"]
              else "the machine's thread count per worker.")
           if "total_minutes" in timing else "."), "",
        "Strategies (the study's figure 4; `metrics/study/strategies.md`):", "",
        (out / "strategies.md").read_text().strip(), "",
        "Leave-one-out (the study's table 3; `metrics/study/leave_one_out.md`):", "",
        (out / "leave_one_out.md").read_text().strip(), "",
        f"![figure 3]({out / 'combinations.png'})", "", f"![figure 4]({out / 'strategies.png'})", "", STUDY_END])


def replace_block(text: str, begin: str, end: str, block: str, readme: Path) -> str:
    """text with the block between the begin and end markers replaced."""
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"{readme} has no block {begin} ... {end}")
    return pattern.sub(lambda _: block, text)


def update(readme: Path = Path("README.md"), metrics: Path = Path("metrics"), results: Path = Path("results")) -> None:
    """Replace README.md's results block (and the real-IDRiD records', those with metrics) in place."""
    text = replace_block(readme.read_text(), BEGIN, END, results_block(metrics), readme)
    records = [results / name for name in RECORDS if (results / name / "metrics/domains/idrid_val.json").is_file()]
    if records:
        text = replace_block(text, RECORD_BEGIN, RECORD_END, record_block(records), readme)
    if (results / LESIONS_RECORD / "metrics/domains/idrid_val.json").is_file():
        text = replace_block(text, LESIONS_BEGIN, LESIONS_END, lesions_block(results / LESIONS_RECORD), readme)
    if (results / STUDY_PROJECT / "metrics/study/time.json").is_file():
        text = replace_block(text, STUDY_BEGIN, STUDY_END, study_block(results / STUDY_PROJECT), readme)
    measured = Path(__file__).resolve().parents[3] / "benchmarks" / "results"
    if ABLATIONS_BEGIN in text:
        text = replace_block(text, ABLATIONS_BEGIN, ABLATIONS_END,
                             ablation_block(measured / "record_ablations.json", measured / "camera_shift.json"), readme)
    write_text(readme, text)
