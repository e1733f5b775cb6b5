"""The study's tables and figures: every score (records.csv), figure 3 (combinations), table 3 (leave-one-out) and
figure 4 (strategies), AP beside every aupr_11 and degenerate maps marked."""
from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from micropatch.core.fileio import write_json, write_text
from micropatch.evaluation.figures import _save
from micropatch.evaluation.score import DEGENERATE_FOOTNOTE
from micropatch.experiments.study.project import BASELINE, STYLES, combination_style


def seed_means(records: list[dict]) -> list[dict]:
    """One record per (strategy, combination, domain): Dice, AP and aupr_11 averaged over seeds, Dice's range, and
    whether any seed's map was degenerate (metrics.is_degenerate)."""
    groups = defaultdict(list)
    for r in records:
        groups[r["strategy"], r["combination"], r["domain"]].append(r)
    out = []
    for (strategy, combination, domain), group in groups.items():
        dice = [g["dice"] for g in group]
        out.append({k: group[0][k] for k in ("strategy", "combination", "domain", "zero_shot", "n_train_images")}
                   | {"dice": float(np.mean(dice)), "dice_min": float(min(dice)), "dice_max": float(max(dice)),
                      "ap": float(np.mean([g["ap"] for g in group])),
                      "aupr_11": float(np.mean([g["aupr_11"] for g in group])),
                      "degenerate": any(g["degenerate"] for g in group), "n": len(group)})
    return out


def strategy_table(means: list[dict]) -> dict[str, dict]:
    """Figure 4: per strategy, the mean Dice, AP and aupr_11 over every (combination, test domain) pair the
    combination did not train on (the leave-one-out pairs), and over all pairs; the change against the baseline;
    how many leave-one-out pairs are degenerate maps (their aupr_11 reads the challenge's convention)."""
    table = {}
    for strategy in dict.fromkeys(m["strategy"] for m in means):
        mine = [m for m in means if m["strategy"] == strategy]
        zero = [m for m in mine if m["zero_shot"]]
        table[strategy] = {"dice_leave_one_out": mean_of(zero, "dice"), "ap_leave_one_out": mean_of(zero, "ap"),
                           "aupr_11_leave_one_out": mean_of(zero, "aupr_11"), "dice_all": mean_of(mine, "dice"),
                           "ap_all": mean_of(mine, "ap"), "pairs_leave_one_out": len(zero), "pairs_all": len(mine),
                           "degenerate_leave_one_out": sum(bool(m["degenerate"]) for m in zero)}
    base = table.get(BASELINE, {}).get("dice_leave_one_out", math.nan)
    for row in table.values():
        row["dice_change_leave_one_out"] = row["dice_leave_one_out"] - base
    return table


def mean_of(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows])) if rows else math.nan


def leave_one_out_table(means: list[dict], styles: dict[str, str]) -> list[dict]:
    """Table 3: per test domain, the baseline's Dice trained on its own dataset (in-domain: combinations holding
    it) and zero-shot by the labelling style of the combination (fine, mixed, coarse): mean and best."""
    rows = []
    for domain in dict.fromkeys(m["domain"] for m in means):
        mine = [m for m in means if m["strategy"] == BASELINE and m["domain"] == domain]
        groups = [("in-domain", [m for m in mine if not m["zero_shot"]])]
        groups += [(f"zero-shot {style}", [m for m in mine if m["zero_shot"]
                                           and combination_style(tuple(m["combination"].split("+")), styles) == style])
                   for style in STYLES]
        for scenario, group in groups:
            if not group:
                continue
            best = max(group, key=lambda m: m["dice"]) if group else None
            rows.append({"domain": domain, "scenario": scenario, "combinations": len(group),
                         "dice_mean": mean_of(group, "dice"), "ap_mean": mean_of(group, "ap"),
                         "degenerate": sum(bool(m["degenerate"]) for m in group),
                         "best_combination": best["combination"] if best else "", "best_dice": best["dice"] if best
                         else math.nan})
    return rows


def percent(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.1f}"


def write_tables(records: list[dict], styles: dict[str, str], out: Path) -> None:
    """records.csv (every score), combinations.{csv,png} (figure 3), leave_one_out.{md,json} (table 3),
    strategies.{md,json,png} (figure 4) under out."""
    means = seed_means(records)
    buf = io.StringIO()
    fields = sorted({k for r in records for k in r})
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(records, key=lambda r: (r["strategy"], r["combination"], str(r["seed"]), r["domain"])))
    write_text(out / "records.csv", buf.getvalue())

    figure3 = sorted((m | {"style": combination_style(tuple(m["combination"].split("+")), styles)}
                      for m in means if m["strategy"] == BASELINE),
                     key=lambda m: (m["domain"], m["n_train_images"], m["combination"]))
    buf = io.StringIO()
    keys = ["domain", "combination", "style", "n_train_images", "zero_shot", "dice", "dice_min", "dice_max", "n"]
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(figure3)
    write_text(out / "combinations.csv", buf.getvalue())

    table3 = leave_one_out_table(means, styles)
    write_json(out / "leave_one_out.json", table3)
    lines = ["| test domain | scenario | combinations | mean Dice % | mean AP | best combination | its Dice % |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['domain']} | {r['scenario']} | {r['combinations']} | {percent(r['dice_mean'])} | "
              f"{r['ap_mean']:.4f}{'*' if r['degenerate'] else ''} | {r['best_combination'] or '-'} | "
              f"{percent(r['best_dice'])} |" for r in table3]
    write_text(out / "leave_one_out.md", "\n".join(lines) + "\n"
               + (DEGENERATE_FOOTNOTE if any(r["degenerate"] for r in table3) else ""))

    table4 = strategy_table(means)
    write_json(out / "strategies.json", table4)
    lines = ["| strategy | mean Dice %, leave-one-out | change vs baseline (points) | mean AP, leave-one-out | "
             "mean aupr_11, leave-one-out | mean Dice %, all pairs |", "|---|---|---|---|---|---|"]
    lines += [f"| {s} | {percent(r['dice_leave_one_out'])} | {100 * r['dice_change_leave_one_out']:+.1f} | "
              f"{r['ap_leave_one_out']:.4f} | {r['aupr_11_leave_one_out']:.4f}"
              f"{'*' if r['degenerate_leave_one_out'] else ''} | {percent(r['dice_all'])} |" for s, r in table4.items()]
    write_text(out / "strategies.md", "\n".join(lines) + "\n"
               + (DEGENERATE_FOOTNOTE if any(r["degenerate_leave_one_out"] for r in table4.values()) else ""))
    study_figures(figure3, table4, out / "combinations.png", out / "strategies.png")


STYLE_COLOURS = {"fine": "#dbe9f6", "mixed": "#eeeeee", "coarse": "#fbe3d6"}


def study_figures(figure3: list[dict], table4: dict[str, dict], combinations_png: Path, strategies_png: Path) -> None:
    """The study's figure 3 (per test domain, the baseline's Dice of every combination, ordered by training images,
    seeds' range as error bars, background the combination's labelling style) and figure 4 (mean leave-one-out
    Dice per strategy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    domains = list(dict.fromkeys(m["domain"] for m in figure3))
    fig, axes = plt.subplots(1, len(domains), figsize=(4.2 * len(domains), 4), squeeze=False)
    for ax, domain in zip(axes[0], domains):
        rows = [m for m in figure3 if m["domain"] == domain]
        x = np.arange(len(rows))
        for i, m in enumerate(rows):
            ax.axvspan(i - 0.5, i + 0.5, color=STYLE_COLOURS[m["style"]], zorder=0)
        dice = np.array([m["dice"] for m in rows]) * 100
        spread = np.array([[m["dice"] - m["dice_min"], m["dice_max"] - m["dice"]] for m in rows]).T * 100
        ax.bar(x, dice, 0.6, yerr=spread, capsize=3, color=["0.6" if m["zero_shot"] else "C0" for m in rows])
        ax.set(xticks=x, xlim=(-0.5, len(rows) - 0.5), ylabel="Dice % (lesion mean)", title=f"test: {domain}")
        ax.set_xticklabels([f"{m['combination']}\n({m['n_train_images']})" for m in rows], rotation=60, fontsize=7,
                           ha="right")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in ("C0", "0.6", *STYLE_COLOURS.values())]
    labels = ["trained on the test dataset", "zero-shot"] + [f"background: {s} labels" for s in STYLE_COLOURS]
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=5, fontsize=8)
    _save(fig, combinations_png)

    names = list(table4)
    fig, axes = plt.subplots(1, 2, figsize=(2 * max(5, 0.9 * len(names)), 3.8))
    for ax, key, label, fmt in ((axes[0], "dice_leave_one_out", "mean Dice % over leave-one-out pairs", "%.1f"),
                                (axes[1], "ap_leave_one_out", "mean AP over leave-one-out pairs", "%.3f")):
        scale = 100 if key.startswith("dice") else 1
        bars = ax.bar(np.arange(len(names)), [scale * table4[n][key] for n in names],
                      color=["C0" if n == BASELINE else "C1" for n in names])
        ax.bar_label(bars, fmt=fmt, fontsize=7)
        ax.set(xticks=np.arange(len(names)), ylabel=label)
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    fig.suptitle("Strategies: mean zero-shot Dice and AP over every combination and test domain it excludes")
    _save(fig, strategies_png)
