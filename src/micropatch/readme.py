"""Regenerate README.md's results block from metrics/ (so the table is never pasted by hand)."""
from __future__ import annotations

import re
from pathlib import Path

BEGIN, END = "<!-- results:begin (micropatch readme) -->", "<!-- results:end -->"


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


def update(readme: Path = Path("README.md"), metrics: Path = Path("metrics")) -> None:
    """Replace the results block of README.md in place."""
    from .io import write_text

    text = readme.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"{readme} has no results block ({BEGIN} ... {END})")
    write_text(readme, pattern.sub(lambda _: results_block(metrics), text))
