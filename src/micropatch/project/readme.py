"""`micropatch readme`: every generated block of README.md and docs/ rewritten from the committed results, so that
no figure is pasted by hand. A block is `<!-- NAME:begin (micropatch readme) -->` ... `<!-- NAME:end -->`; each name
has one generator here, and each generator's block must appear in some page (tests/unit/project/test_readme.py)."""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
from pathlib import Path

from micropatch.core.fileio import load_params, write_text
from micropatch.evaluation.postprocess import lesion_point
from micropatch.evaluation.score import aupr_11_cell

REPO = Path(__file__).resolve().parents[3]
MARKER = re.compile(r"<!-- ([a-z0-9-]+):begin \(micropatch readme\) -->.*?<!-- \1:end -->", re.DOTALL)

# The micro-patching paper's figures: IDRiD MA, patient-isolated 43 / 11 validation, pixels pooled at 0.5.
PAPER_IDRID_MA = {"precision": 0.4846, "recall": 0.4540, "dice": 0.4688, "iou": 0.3061}
# aupr_11 on the 27 official IDRiD test images: the cross-dataset study's best rows (U-Net SE-ResNet101, 1536 px)
# and the IDRiD challenge's leaders, per lesion (Porwal et al., Medical Image Analysis 2020); SE is the study's CWS.
STUDY_IDRID_AUPR = {"EX": 0.842, "HE": 0.593, "MA": 0.484, "SE": 0.641, "mean": 0.640}
CHALLENGE_IDRID_AUPR = {"EX": 0.8850, "HE": 0.6804, "MA": 0.5017, "SE": 0.6995}
# The real-IDRiD MA records, in the order the table shows them (those present are shown).
RECORDS = ("idrid-ma-best", "idrid-ma-v2")
LESIONS_RECORD = "idrid-4lesions"
STUDIES = ("study-combinations", "study-idrid")


def pct(value: float, places: int = 2) -> str:
    return "n/a" if value is None or value != value else f"{100 * value:.{places}f}"


# --- the default pipeline -----------------------------------------------------------------------------------------

def results(root: Path) -> str:
    """The embedded default's cross-domain table (metrics/cross_domain.md) and its figures."""
    metrics = root / "metrics"
    lines = [(metrics / "cross_domain.md").read_text().strip(), ""]
    lines += [f"![{name}](metrics/plots/{name})" for name in ("curves.png", "cross_domain.png")
              if (metrics / "plots" / name).is_file()]
    return "\n".join(lines)


def characterisation(root: Path) -> str:
    """The characterise stage's verdict per dataset of the default."""
    found = json.loads((root / "metrics" / "characterisation.json").read_text())
    rows = ["| dataset | style found | images with lesions that look coarse | quality grades |", "|---|---|---|---|"]
    for name, s in found.items():
        grades = ", ".join(f"{n} {grade}" for grade, n in s["quality"].items() if n)
        rows.append(f"| {name} | {s['style']} | {pct(s['coarse_share'], 0)} % of {s['images']} | "
                    f"{grades} |")
    return "\n".join(rows)


# --- real IDRiD records ------------------------------------------------------------------------------------------

def record_row(record: Path) -> tuple[str, str]:
    """(table row, training facts) of one real-IDRiD record from its committed metrics."""
    scores = json.loads((record / "metrics" / "domains" / "idrid_val.json").read_text())
    ma = scores["lesions"]["MA"]
    point = scores.get("operating_point", {"threshold": 0.5, "min_area": 0})
    train = json.loads((record / "metrics" / "train.json").read_text())
    cfg = load_params("train", record / "params.yaml")
    steps = cfg["max_steps_per_epoch"] or -(-train["train_patches"] // cfg["batch_size"])
    row = (f"| micropatch (`results/{record.name}`) | {point['threshold']:.2f} / {point['min_area']} | "
           + " | ".join(pct(ma[k]) for k in ("precision", "recall", "dice", "iou"))
           + f" | {aupr_11_cell(ma)} | {ma['ap']:.4f} | {pct(ma['lesion_sensitivity'], 1)} | "
             f"{ma['fps_per_image']:.2f} | {ma['froc']:.3f} |")
    facts = (f"`results/{record.name}`: {train['epochs_run']} epochs of {steps} steps of {cfg['batch_size']} "
             f"({train['epochs_run'] * steps * cfg['batch_size']:,} patch draws from {train['train_patches']:,} "
             f"training patches), random init, {cfg.get('precision', 'fp32')} on the {train['device']}; epoch "
             f"{train['best_epoch']} selected on {train['selection_split']} {train['select_on']}.")
    return row, facts


def real_idrid(root: Path) -> str:
    """The real-IDRiD MA records' validation figures next to the paper's, with their training facts."""
    records = [root / "results" / name for name in RECORDS
               if (root / "results" / name / "metrics/domains/idrid_val.json").is_file()]
    rows = ["| IDRiD MA, val (11 images) | threshold / min area | P % | R % | Dice % | IoU % | aupr_11 | AP | "
            "lesion sens. % | FPs/img | FROC |", "|---|---|---|---|---|---|---|---|---|---|---|",
            "| micro-patching paper | 0.50 / 0 | " + " | ".join(pct(PAPER_IDRID_MA[k]) for k in
                                                        ("precision", "recall", "dice", "iou"))
            + " | - | - | - | - | - |"]
    facts = []
    for record in records:
        row, fact = record_row(record)
        rows.append(row)
        facts.append(f"- {fact}")
    return "\n".join([*rows, "", *facts])


def four_lesions(root: Path) -> str:
    """The four-lesion record's per-lesion scores next to the study's and the challenge's IDRiD test AUPR."""
    record = root / "results" / LESIONS_RECORD
    scores = json.loads((record / "metrics" / "domains" / "idrid_val.json").read_text())
    point = scores["operating_point"]
    rows = ["| lesion | aupr_11 | AP | threshold / min area | Dice % | lesion sens. % | FPs/img | study, IDRiD test "
            "aupr_11 | challenge leader, IDRiD test aupr_11 |", "|---|---|---|---|---|---|---|---|---|"]
    for lesion, s in [*scores["lesions"].items(), ("mean", scores.get("lesion_mean"))]:
        if s is None:
            continue
        own = lesion_point(point, lesion) if lesion in scores["lesions"] else None
        challenge = CHALLENGE_IDRID_AUPR.get(lesion)
        rows.append(f"| {lesion} | {aupr_11_cell(s)} | {s['ap']:.4f} | "
                    + (f"{own['threshold']:.2f} / {own['min_area']} | " if own else "- | ")
                    + f"{pct(s['dice'])} | {pct(s['lesion_sensitivity'], 1)} | {s['fps_per_image']:.2f} | "
                    f"{STUDY_IDRID_AUPR.get(lesion, math.nan):.3f} | " + (f"{challenge:.4f} |" if challenge else "- |"))
    _, facts = record_row(record)
    return "\n".join([*rows, "", f"- {facts}"])


# --- the proxy experiments and the camera shift -----------------------------------------------------------------

def proxy_vs_full(root: Path, rows: list[dict]) -> list[str]:
    """Lines of the proxy-vs-full check: the full runs of benchmarks/ablations.yaml's `full_runs` (a record's
    committed val metrics, or figures with their source) beside the proxy's first seed of the same variants."""
    from micropatch.experiments.ablation import read_spec

    full = read_spec(root / "benchmarks" / "ablations.yaml").get("full_runs", {})
    if not full:
        return []
    lines = ["Proxy against full runs (val, 11 images):", "",
             "| variant | full run | full: AP | aupr_11 | Dice % | proxy (seed 0): AP | aupr_11 | Dice % |",
             "|---|---|---|---|---|---|---|---|"]
    for name, run in full.items():
        if "record" in run:
            ma = json.loads((root / run["record"] / "metrics/domains/idrid_val.json").read_text())["lesions"]["MA"]
            figures, source = (ma["ap"], ma["aupr_11"], ma["dice"]), f"`{run['record']}`"
        else:
            figures, source = (run["val_ap"], run["val_aupr_11"], run["val_dice"]), run["source"]
        proxy = next((r for r in rows if r["variant"] == name and r["seed"] == "0"), None)
        lines.append(f"| {name} | {source} | {figures[0]:.4f} | {figures[1]:.4f} | {pct(figures[2])} | "
                     + (f"{float(proxy['val_ap']):.4f} | {float(proxy['val_aupr_11']):.4f} | "
                        f"{pct(float(proxy['val_dice']))} |" if proxy else "(not run) | | |"))
    return lines


def ablations(root: Path) -> str:
    """The committed proxy table (benchmarks/results/ablations.csv): every run, then each variant against the
    baseline, with the two-seed spread of the baseline beside it."""
    from micropatch.experiments.ablation import markdown

    table = root / "benchmarks" / "results" / "ablations.csv"
    if not table.is_file():
        return "(no proxy run is committed yet: `micropatch ablate baseline`)"
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    base = [r for r in rows if r["variant"] == "baseline"]
    lines = [markdown(table).strip(), "", *proxy_vs_full(root, rows)]
    if len(base) >= 2:
        spread = {k: max(float(r[k]) for r in base) - min(float(r[k]) for r in base)
                  for k in ("val_ap", "val_aupr_11", "val_dice")}
        lines += ["", f"Two seeds of the baseline differ by {spread['val_ap']:.4f} val AP, {spread['val_aupr_11']:.4f} "
                      f"aupr_11 and {pct(spread['val_dice'])} Dice points: a variant whose difference from the "
                      "baseline is within that is not told from noise."]
    return "\n".join(lines)


def camera_shift(root: Path) -> str:
    """benchmarks/results/camera_shift_{tune,val}.json: Dice of predict's defaults (rescale auto) against off and
    on, per camera size, as a share of native Dice; the tolerances right at every size (tune)."""
    lines = []
    for split in ("tune", "val"):
        path = root / "benchmarks" / "results" / f"camera_shift_{split}.json"
        if not path.is_file():
            lines += [f"(no {split} run is committed yet: `python benchmarks/camera_shift.py --split {split}`)", ""]
            continue
        run = json.loads(path.read_text())
        res = run["results"]
        sizes = list(dict.fromkeys(k.split()[0] for k in res if k != "native"))
        lines += [f"{split.capitalize()} images ({run['images']}; `{path.relative_to(root)}`, model "
                  f"`{run['model']}`, {run['inference']['runtime']} {run['inference']['precision']}, operating point "
                  f"{run['operating_point']['threshold']} / {run['operating_point']['min_area']} px; native Dice "
                  f"{pct(res['native']['dice'])} %, AP {res['native']['ap']:.4f}):", "",
                  "| size | FOV / training FOV | Dice % off | on | **auto (default)** | auto, of native | AP auto |",
                  "|---|---|---|---|---|---|---|"]
        ratios = (run.get("choice") or {}).get("by_size", {})
        for size in sizes:
            off, on, auto = (res[f"{size} {s}"] for s in ("off", "on", "auto"))
            ratio = ratios.get(size, {}).get("fov_ratio")
            lines.append(f"| {size} | {'-' if ratio is None else f'{ratio:.2f}'} | {pct(off['dice'])} | "
                         f"{pct(on['dice'])} | **{pct(auto['dice'])}** | {pct(auto['dice_vs_native'], 0)} % | "
                         f"{auto['ap']:.4f} |")
        if run.get("choice"):
            lines += ["", "Tolerances (share of the training FOV diameter within which auto does not resample) that "
                          "pick the better of off and on at every size: "
                          + (", ".join(f"{t:g}" for t in run["choice"]["tolerances_right_at_every_size"]) or "none")
                          + "."]
        lines.append("")
    return "\n".join(lines).strip()


# --- the cross-dataset study --------------------------------------------------------------------------------------

def study(root: Path, name: str = "study-combinations") -> str:
    """A study project's measured time, its figure-4 table (strategies) and table 3 (leave-one-out)."""
    out = root / "results" / name / "metrics" / "study"
    timing = json.loads((out / "time.json").read_text())
    measured = (f"Measured: {timing['of']} experiments through the DVC queue with {timing['workers']} workers in "
                f"{timing['experiments_minutes']} min on {timing['cpu_cores']} CPU cores, the strategies and tables "
                f"in {timing['strategies_and_tables_minutes']} min"
                + (f", **{timing['total_minutes']} min** in all, compute mode `{timing['compute']['mode']}`."
                   if "total_minutes" in timing else "."))
    rel = out.relative_to(root)
    return "\n".join([measured, "", f"Strategies (the study's figure 4; `{rel}/strategies.md`):", "",
                      (out / "strategies.md").read_text().strip(), "",
                      f"Leave-one-out (the study's table 3; `{rel}/leave_one_out.md`):", "",
                      (out / "leave_one_out.md").read_text().strip(), "",
                      f"![figure 3]({rel}/combinations.png)", "", f"![figure 4]({rel}/strategies.png)"])


def study_idrid(root: Path) -> str:
    return study(root, "study-idrid")


# --- benchmarks -----------------------------------------------------------------------------------------------------

def benchmarks(root: Path) -> str:
    """One row per committed benchmark result with its headline figures (what each script printed last)."""
    results_dir = root / "benchmarks" / "results"
    load = lambda name: json.loads((results_dir / name).read_text())  # noqa: E731
    rows = ["| result | what | figures |", "|---|---|---|"]
    train = load("train.json")
    base = train["variants"]["baseline"]["patches_per_s"]
    rows.append("| `train.json` | training steps, batch 16, real IDRiD patches, compute fast, each setting alone | "
                + "; ".join(f"{name} {v['patches_per_s']:.1f} patches/s ({v['patches_per_s'] / base:.2f}x)"
                            for name, v in train["variants"].items()) + " |")
    compute = load("compute.json")
    rows.append("| `compute.json` | the reproducible compute mode against fast | training "
                f"{compute['reproducible']['patches_per_s'] / compute['fast']['patches_per_s']:.2f}x the speed |")
    inspected = load("datasets_inspect.json")["layouts"]
    rows.append("| `datasets_inspect.json` | `micropatch datasets inspect idrid` on the official layout | " + "; ".join(
        f"{v['images']} images ({name}) {v['median_s']:.0f} s" for name, v in inspected.items()) + " |")
    mask = load("mask_rule.json")
    rows.append("| `mask_rule.json` | stray-value share of the real IDRiD masks | " + "; ".join(
        f"{name}: at least {pct(v['stray_fraction_min'], 1)} %" for name, v in mask.items()
        if isinstance(v, dict) and "stray_fraction_min" in v) + " |")
    patchify = load("patchify.json")
    rows.append(f"| `patchify.json` | the patchify stage's code on the {patchify['images']} real IDRiD images | "
                f"{patchify['seconds']} s; " + ", ".join(f"{s} {v['patches']:,} patches ({v['megabytes']} MB)"
                                                         for s, v in patchify["splits"].items()) + " |")
    runtimes = load("runtimes.json")
    rows.append(f"| `runtimes.json` | `micropatch predict` on one real photograph ({runtimes['cpu_count']} cores) | "
                f"default median {runtimes['predict_default_s']['median']:.1f} s, folder of "
                f"{runtimes['folder']['images']}: {runtimes['folder']['images_per_minute']:.1f} images/min |")
    score = load("score.json")
    rows.append("| `score.json` | the score stage's peak memory against the number of full-size images | "
                + "; ".join(f"{n} images {mb:.0f} MB" for n, mb in zip(score["images"], score["peak_rss_mb"]))
                + f" ({score['rss_growth_ratio']:.2f}x from the first to the last) |")
    return "\n".join(rows)


# --- reference pages ------------------------------------------------------------------------------------------------

def cli_reference(top: argparse.ArgumentParser) -> str:
    """Every command's --help, as argparse prints it (so the page cannot drift from the code). The command line is
    handed in (generators()): the CLI imports this module, so this module does not import the CLI."""
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    environ, os.environ["COLUMNS"] = os.environ.get("COLUMNS"), "110"
    try:
        sections = []
        for name, sub in commands.choices.items():
            nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
            for leaf_name, leaf in ([(f"{name} {n}", p) for n, p in nested[0].choices.items()] if nested
                                    else [(name, sub)]):
                sections += [f"### micropatch {leaf_name}", "", "```", leaf.format_help().strip(), "```", ""]
    finally:
        if environ is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = environ
    return "\n".join(sections).strip()


PARAM_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.]*):(?P<value>[^#]*?)\s*(?:#\s?(?P<comment>.*))?$")
COMMENT_LINE = re.compile(r"^ +#\s?(?P<comment>.*)$")


def params_reference(root: Path) -> str:
    """params.yaml as a table: every key (dotted), its default and the comment beside it, in file order."""
    rows = ["| key | default | what it is |", "|---|---|---|"]
    stack: list[tuple[int, str]] = []
    entries: list[list[str]] = []
    for line in (root / "params.yaml").read_text().splitlines():
        if (found := COMMENT_LINE.match(line)) and entries and line.index("#") > 20:
            entries[-1][2] += " " + found["comment"].strip()
            continue
        found = PARAM_LINE.match(line)
        if not found or line.lstrip().startswith("-"):
            continue
        indent = len(found["indent"])
        stack = [(i, k) for i, k in stack if i < indent] + [(indent, found["key"])]
        value = found["value"].strip()
        entries.append([".".join(k for _, k in stack), value, (found["comment"] or "").strip()])
    for key, value, comment in entries:
        rows.append(f"| `{key}` | {'`' + value.replace('|', '/') + '`' if value else ''} | "
                    f"{comment.replace('|', '/')} |")
    return "\n".join(rows)


BLOCKS = {"results": results, "characterisation": characterisation, "real-idrid": real_idrid,
          "four-lesions": four_lesions, "ablations": ablations, "camera-shift": camera_shift, "study": study,
          "study-idrid": study_idrid, "benchmarks": benchmarks, "params": params_reference}


def generators(cli: argparse.ArgumentParser) -> dict:
    """Every block's generator (name -> function of the repository root): BLOCKS, and the CLI reference page
    written from the command line it is given."""
    return BLOCKS | {"cli": lambda root: cli_reference(cli)}


def pages(root: Path) -> list[Path]:
    """README.md and every page under docs/."""
    return [root / "README.md"] + sorted((root / "docs").rglob("*.md"))


LINK = re.compile(r"(\]\()([^)#\s]+)(\))")


def relative_links(text: str, page: Path, root: Path) -> str:
    """The generators name files from the repository root; a page links to them from its own folder."""
    def relative(match: re.Match) -> str:
        target = match.group(2)
        if target.startswith(("http", "mailto", "#", "/")):
            return match.group(0)
        return match.group(1) + os.path.relpath(Path(root) / target, Path(page).parent) + match.group(3)

    return LINK.sub(relative, text)


def render(text: str, root: Path, page: Path, blocks: dict) -> tuple[str, set[str]]:
    """A page's text with every block regenerated by its generator in blocks, and the names of the blocks it
    holds."""
    found = set()

    def block(match: re.Match) -> str:
        name = match.group(1)
        if name not in blocks:
            raise ValueError(f"{page}: block {name!r} has no generator; known: {sorted(blocks)}")
        found.add(name)
        return (f"<!-- {name}:begin (micropatch readme) -->\n\n{relative_links(blocks[name](root).strip(), page, root)}"
                f"\n\n<!-- {name}:end -->")

    return MARKER.sub(block, text), found


def update(root: Path, blocks: dict) -> None:
    """Rewrite every generated block of README.md and docs/ with blocks (generators()); every generator's block
    must be on some page."""
    placed = set()
    for page in pages(Path(root)):
        text = page.read_text()
        new, found = render(text, Path(root), page, blocks)
        placed |= found
        if new != text:
            write_text(page, new)
    missing = sorted(set(blocks) - placed)
    if missing:
        raise ValueError(f"no page holds the block(s) {missing}: add `<!-- NAME:begin (micropatch readme) -->` ... "
                         "`<!-- NAME:end -->` where they belong")


__all__ = ["update", "generators", "BLOCKS"]
