"""`<out>/report.html`: one self-contained page for a predict folder (no network fonts, scripts or images: the
previews are embedded), a card per photograph and a summary table, from the folder's run record."""
from __future__ import annotations

import base64
import html
from pathlib import Path

import cv2
import numpy as np

from micropatch.core.fileio import write_text

REPORT = "report.html"
# Outline colours (RGB) chosen away from what a fundus already shows in that place: exudates are yellow-white,
# haemorrhages and vessels dark red, the disc pale orange. Cyan, green, blue and magenta are none of these.
LESION_COLOURS = {"MA": (0, 255, 255), "HE": (57, 255, 20), "EX": (40, 90, 255), "SE": (255, 0, 255)}
OTHER_COLOUR = (255, 255, 255)
PREVIEW_WIDTH = 1600
PREVIEW_QUALITY = 82
LESION_NAMES = {"MA": "microaneurysm", "HE": "haemorrhage", "EX": "hard exudate", "SE": "soft exudate"}
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;background:#f6f6f4;color:#1d1d1d}
h1{font-size:1.4em;margin:0 0 4px}
p.note{color:#555;max-width:70em}
table{border-collapse:collapse;margin:12px 0 24px;background:#fff}
th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}
.card{background:#fff;border:1px solid #ccc;border-radius:6px;padding:14px;margin:0 0 24px;max-width:1640px}
.card h2{font-size:1.1em;margin:0 0 8px;word-break:break-all}
.card img{width:100%;max-width:1600px;height:auto;display:block;background:#000}
.facts{display:flex;flex-wrap:wrap;gap:6px 24px;margin:8px 0}
.swatch{display:inline-block;width:14px;height:14px;border:2px solid #000;border-radius:50%;vertical-align:middle;
margin-right:4px}
.count{font-weight:600}
"""


def preview_data_uri(overlay: Path) -> str | None:
    """The overlay resized to PREVIEW_WIDTH px wide as a JPEG data URI, or None when the file is gone."""
    image = cv2.imread(str(overlay), cv2.IMREAD_COLOR)
    if image is None:
        return None
    if image.shape[1] > PREVIEW_WIDTH:
        height = round(image.shape[0] * PREVIEW_WIDTH / image.shape[1])
        image = cv2.resize(image, (PREVIEW_WIDTH, height), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, PREVIEW_QUALITY])
    return "data:image/jpeg;base64," + base64.b64encode(np.asarray(buf).tobytes()).decode() if ok else None


def swatch(lesion: str) -> str:
    red, green, blue = LESION_COLOURS.get(lesion, OTHER_COLOUR)
    return f'<span class="swatch" style="border-color:rgb({red},{green},{blue})"></span>'


def point_text(result: dict, lesion: str) -> str:
    point = result.get("applied_point", {}).get(lesion) or result["settings"]["operating_point"]
    return f"p &ge; {point['threshold']:g}, components &ge; {point['min_area']} px"


def card(out: Path, result: dict) -> str:
    """One photograph's card: preview, legend with counts, geometry, time, links."""
    folder = Path(result["files"]).parent
    name = html.escape(Path(result["image"]).name)
    overlay = folder / result["overlay"]
    lesions_csv = folder / f"{Path(result['files']).name}_lesions.csv"
    uri = preview_data_uri(out / overlay)
    picture = (f'<img src="{uri}" alt="predicted lesions outlined on {name}">' if uri
               else '<p class="note">(the overlay file is gone from this folder)</p>')
    counts = "".join(f'<span>{swatch(lesion)}{LESION_NAMES.get(lesion, lesion)} ({html.escape(lesion)}): '
                     f'<span class="count" data-lesion="{html.escape(lesion)}">{count}</span> '
                     f'<small>({point_text(result, lesion)})</small></span>'
                     for lesion, count in result["counts"].items())
    scale = result["scale"]
    geometry = (f"FOV {result['fov_diameter_px']} px across"
                + (f", resampled x{scale:.2f} to the model's {result['model_fov_diameter_px']} px" if scale != 1
                   else ", predicted at its own size"))
    return (f'<div class="card" id="{html.escape(result["files"])}"><h2>{name}</h2>{picture}'
            f'<div class="facts">{counts}</div>'
            f'<div class="facts"><span>{result["width"]}x{result["height"]} px</span><span>{geometry}</span>'
            f'<span>{result["seconds"]:.1f} s</span>'
            f'<a href="{html.escape(overlay.as_posix())}">full-size overlay</a>'
            f'<a href="{html.escape(lesions_csv.as_posix())}">lesion list (CSV)</a></div></div>')


def summary_table(results: list[dict], lesions: list[str]) -> str:
    """One row per photograph and a total: counts per lesion class, FOV, scale, seconds."""
    head = "".join(f"<th>{swatch(lesion)}{html.escape(lesion)}</th>" for lesion in lesions)
    rows = []
    for result in results:
        cells = "".join(f"<td>{result['counts'].get(lesion, '-')}</td>" for lesion in lesions)
        rows.append(f'<tr><td><a href="#{html.escape(result["files"])}">{html.escape(Path(result["image"]).name)}'
                    f'</a></td>{cells}<td>{result["fov_diameter_px"]}</td><td>{result["scale"]:.2f}</td>'
                    f'<td>{result["seconds"]:.1f}</td></tr>')
    totals = "".join(f"<td><b>{sum(r['counts'].get(lesion, 0) for r in results)}</b></td>" for lesion in lesions)
    rows.append(f"<tr><td><b>all {len(results)}</b></td>{totals}<td></td><td></td>"
                f"<td><b>{sum(r['seconds'] for r in results):.1f}</b></td></tr>")
    return (f"<table><tr><th>photograph</th>{head}<th>FOV px</th><th>scale</th><th>seconds</th></tr>"
            + "".join(rows) + "</table>")


def render(out: Path, results: list[dict]) -> str:
    """The report page for a predict folder, from the latest result of each photograph (predict.latest_results)."""
    lesions = list(dict.fromkeys(lesion for r in results for lesion in r["counts"]))
    models = sorted({r["settings"]["model"] for r in results})
    cards = "".join(card(out, r) for r in results)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>micropatch predict: {len(results)} photograph(s)</title><style>{STYLE}</style></head><body>"
            f"<h1>micropatch predict: {len(results)} photograph(s)</h1>"
            f"<p class=\"note\">Model: {html.escape(', '.join(models))}. Outlines: each predicted lesion, in its "
            "class's colour, at the model's operating point (a probability threshold and a minimum component area, "
            "counted at the model's training scale). Counts are connected components. A research tool, not a "
            "diagnosis.</p>"
            f"{summary_table(results, lesions)}{cards}</body></html>\n")


def write_report(out: Path, results: list[dict]) -> Path:
    """Rewrite <out>/report.html from the latest result of each photograph in the folder's run record
    (predict.latest_results); returns its path."""
    path = Path(out) / REPORT
    write_text(path, render(Path(out), results))
    return path
