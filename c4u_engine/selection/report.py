"""A self-contained HTML report of one Selection: one file, inline CSS, thumbnails as data URIs, nothing fetched.

Everything that comes from outside (profile text, model reasoning and raw output, error messages, stats) is passed
through `html.escape`; a Content-Security-Policy meta tag forbids scripts and remote loads as a second line of defence.
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any, Sequence

import numpy as np
from PIL import Image

from c4u_engine.errors import InvalidInputError
from c4u_engine.selection.aggregation import PairwiseMatrix
from c4u_engine.selection.results import Comparison, Selection

THUMBNAIL_SIDE = 256

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222;background:#fafafa}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ddd;padding:4px 8px;vertical-align:top}
th{background:#eee}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.winner td{background:#fff4c2;font-weight:bold}
.card{display:flex;gap:1.5em;background:#fff4c2;border:2px solid #e0b000;padding:1em;border-radius:6px}
.thumb{max-width:128px;max-height:128px}.card .thumb{max-width:256px;max-height:256px}
.text{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
.matrix td{text-align:center;min-width:3.5em}.matrix td.self{background:#ccc}.matrix td.gap{color:#999}
.flag{color:#b00;font-weight:bold}.muted{color:#777}
"""


def thumbnail_data_uri(image: Image.Image, max_side: int = THUMBNAIL_SIDE) -> str:
    """`image` scaled to fit max_side x max_side, as a data URI: PNG when it has transparency, JPEG otherwise."""
    if not isinstance(image, Image.Image):  # an HxWx3 uint8 array (e.g. LoadedImage.pixels)
        image = Image.fromarray(np.asarray(image))
    thumb = image.copy()
    thumb.thumbnail((max_side, max_side))
    has_alpha = thumb.mode in ("RGBA", "LA", "PA") or (thumb.mode == "P" and "transparency" in thumb.info)
    buffer = io.BytesIO()
    if has_alpha:
        thumb.convert("RGBA").save(buffer, format="PNG", optimize=True)
        mime = "image/png"
    else:
        thumb.convert("RGB").save(buffer, format="JPEG", quality=85)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _thumb(images: Sequence[Image.Image | None] | None, index: int, css: str = "thumb") -> str:
    image = images[index] if images is not None else None
    if image is None:
        return '<span class="muted">no preview</span>'
    try:
        uri = thumbnail_data_uri(image)
    except (OSError, ValueError) as exc:  # a broken image must not take the whole report down
        return f'<span class="muted">preview failed: {_e(exc)}</span>'
    return f'<img class="{css}" alt="creative #{index}" src="{uri}">'


def _prob_cell(p: float | None, inconsistent: bool) -> str:
    if p is None:
        return '<td class="gap">&middot;</td>'
    # Red (0) through yellow to green (1): P(row beats column).
    style = f"background:hsl({120 * p:.0f},65%,78%)"
    flag = ' <span class="flag" title="the two orders disagree">!</span>' if inconsistent else ""
    return f'<td style="{style}">{p:.2f}{flag}</td>'


def _matrix_section(matrix: PairwiseMatrix, order: list[int], label) -> str:
    head = "".join(f"<th>{label(c)}</th>" for c in order)
    rows = []
    for i in order:
        cells = []
        for j in order:
            if i == j:
                cells.append('<td class="self"></td>')
                continue
            pair = matrix.pair(i, j)
            cells.append(_prob_cell(matrix.prob(i, j), pair is not None and pair.inconsistent))
        rows.append(f"<tr><th>{label(i)}</th>{''.join(cells)}</tr>")
    return (
        "<h2>Pairwise matrix</h2><p>P(row beats column), both orders combined; "
        '<span class="flag">!</span> marks pairs whose two orders disagree.</p>'
        f'<table class="matrix"><tr><th></th>{head}</tr>{"".join(rows)}</table>'
    )


def _comparison_row(number: int, c: Comparison, deciding: set[tuple[int, int]], label) -> str:
    winner = label(c.winner) if c.winner is not None else '<span class="flag">none</span>'
    details = []
    if c.reasoning:
        details.append(f'<div class="text">{_e(c.reasoning)}</div>')
    if c.error:
        details.append(f'<div class="flag">{_e(c.error)}</div>')
        if c.raw_text:
            details.append(f'<details><summary>raw output</summary><div class="text">{_e(c.raw_text)}</div>'
                           "</details>")
    mark = " &#9733;" if (c.first, c.second) in deciding else ""
    return (
        f'<tr><td class="num">{number}{mark}</td><td>{label(c.first)}</td><td>{label(c.second)}</td>'
        f'<td>{_e(c.mode)}</td>'
        f'<td>{_e(c.answer) if c.answer is not None else "&ndash;"}</td><td class="num">{c.prob_a:.3f}</td>'
        f"<td>{winner}</td><td>{''.join(details)}</td></tr>"
    )


def render_html(selection: Selection, images: Sequence[Image.Image | None] | None = None,
                profile_text: str = "", *, title: str = "c4u_engine selection report",
                names: Sequence[str] | None = None) -> str:
    """One self-contained HTML page describing `selection`.

    `images[i]` is input i (None where no preview is wanted or possible, e.g. an unreadable input); `images` may be
    None for a report without thumbnails. `profile_text` is the user profile the judge saw. `names[i]`: what input
    i is called (its file), shown beside its number.
    """
    def label(i: int) -> str:
        return f"{_e(names[i])} (#{i})" if names is not None and i < len(names) else f"#{i}"

    referenced = set(selection.ranking) | set(selection.rejected) | set(selection.duplicates)
    if images is not None and referenced and max(referenced) >= len(images):
        raise InvalidInputError(
            f"render_html got {len(images)} images but the selection refers to input #{max(referenced)}")
    # The matrix covers the judged candidates: duplicates ranked beside their original were never compared.
    judged = [i for i in selection.ranking if i not in selection.duplicates]
    others = sorted({i for c in selection.comparisons for i in (c.first, c.second)} - set(judged))
    order = judged + others
    matrix = PairwiseMatrix(order, selection.comparisons)
    deciding = set(map(tuple, selection.deciding_pairs))
    winner = selection.winner

    explanation = selection.explanation
    why = (f'<div class="text">{_e(explanation)}</div>' if explanation
           else f'<p class="muted">{_e(selection.explanation_hint)}</p>')
    parts = [
        f"<h1>{_e(title)}</h1>",
        "<h2>Profile</h2>",
        f'<div class="text">{_e(profile_text) if profile_text else "(none)"}</div>',
        "<h2>Winner</h2>",
        f'<div class="card"><div>{_thumb(images, winner, "thumb")}</div><div>'
        f"<p><b>{'Creative ' if names is None else ''}{label(winner)}</b> &mdash; "
        f"{_e(selection.score_label(winner))}</p>{why}</div></div>",
        "<h2>Ranking</h2>",
        '<p class="muted">Best first. won: the opponents it beat of those it met (a pair judged in both orders '
        "counts once); mean P: the judge's probability that it beats them, averaged over them.</p>",
        "<table><tr><th>rank</th><th>creative</th><th>input</th><th>won</th><th>mean P</th></tr>",
    ]
    for rank, i in enumerate(selection.ranking, start=1):
        css = ' class="winner"' if i == winner else ""
        won, met = selection.record(i)
        record = f"= {label(selection.duplicates[i])}" if i in selection.duplicates else f"{won} of {met}"
        flag = (f' <span class="flag" title="{_e(selection.flagged[i])}">flagged by screening</span>'
                if i in selection.flagged else "")
        parts.append(f'<tr{css}><td class="num">{rank}</td><td>{_thumb(images, i)}</td><td>{label(i)}{flag}</td>'
                     f'<td class="num">{record}</td><td class="num">{selection.scores[i]:.2f}</td></tr>')
    parts.append("</table>")
    parts.append(_matrix_section(matrix, order, label))

    parts.append(f"<h2>Comparisons ({len(selection.comparisons)})</h2>"
                 "<p>&#9733; marks the comparisons that decided the winner.</p>"
                 "<table><tr><th>n</th><th>A</th><th>B</th><th>mode</th><th>answer</th><th>P(A)</th>"
                 "<th>picked</th><th>reasoning / error</th></tr>")
    parts.extend(_comparison_row(n, c, deciding, label) for n, c in enumerate(selection.comparisons, start=1))
    parts.append("</table>")

    # Screened out: valid images the usability screener judged unusable (stats["screening"] lists them).
    screening = selection.stats.get("screening") or {}
    screened = {i: r for i, r in selection.rejected.items() if i in set(screening.get("screened_out", ()))}
    if screening:
        parts.append(f"<h2>Screened out as unusable ({len(screened)} of {screening.get('screened', '?')})</h2>"
                     f'<p class="muted">usability screening ({_e(screening.get("mode", ""))}): unusable when '
                     f"P(available) &lt; {_e(screening.get('threshold', ''))}</p>")
        parts.extend(_reasons_table(images, screened, label))
        parts.append(f"<h2>Kept but flagged by screening ({len(selection.flagged)})</h2>"
                     f'<p class="muted">the screener was unsure: P(available) between '
                     f"{_e(screening.get('reject_below', ''))} and {_e(screening.get('threshold', ''))}</p>")
        parts.extend(_reasons_table(images, selection.flagged, label))
    others = {i: r for i, r in selection.rejected.items() if i not in screened}
    parts.append(f"<h2>Rejected ({len(others)})</h2>")
    parts.extend(_reasons_table(images, others, label))

    parts.append(f"<h2>Duplicates ({len(selection.duplicates)})</h2>")
    if selection.duplicates:
        parts.append("<table><tr><th>input</th><th>creative</th><th>same image as</th></tr>")
        parts.extend(f"<tr><td>{label(i)}</td><td>{_thumb(images, i)}</td><td>{label(of)}</td></tr>"
                     for i, of in sorted(selection.duplicates.items()))
        parts.append("</table>")
    else:
        parts.append('<p class="muted">none</p>')

    parts.append("<h2>Stats</h2><table>")
    parts.extend(f'<tr><th>{_e(k)}</th><td class="text">{_e(json.dumps(v, default=str))}</td></tr>'
                 for k, v in selection.to_dict()["stats"].items())
    parts.append("</table>")

    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )


def _reasons_table(images, reasons: dict[int, str], label) -> list[str]:
    """HTML rows of input, thumbnail and reason (screened-out, flagged and rejected inputs alike), or "none"."""
    if not reasons:
        return ['<p class="muted">none</p>']
    return (["<table><tr><th>input</th><th>creative</th><th>reason</th></tr>"]
            + [f"<tr><td>{label(i)}</td><td>{_thumb(images, i)}</td><td>{_e(reason)}</td></tr>"
               for i, reason in sorted(reasons.items())]
            + ["</table>"])
