"""The report as ONE self-contained HTML page: inline CSS, figures embedded as base64 PNG, no
script, no external asset (it opens the same from a mail attachment or an archive)."""

from __future__ import annotations

import base64
import re
from html import escape

from nclab.report.markdown import Table

NUMBER = re.compile(r"^[-+]?[\d.]+(e[-+]?\d+)?%?( ± [\d.]+(e[-+]?\d+)?)?( \(n=\d+\))?$")   # right-aligned cells
LONG_CELL = 80                # characters: longer text cells wrap
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05em; margin: 1.5em 0 0.4em; }
ul.meta { color: #555; font-size: 0.92em; padding-left: 1.2em; }
nav { font-size: 0.92em; } nav a { margin-right: 1em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.3em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; white-space: nowrap; }
td.long { white-space: normal; min-width: 24em; max-width: 44em; }   /* prose wraps, so a table fits the page */
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafafa; }
.caption, figcaption { color: #444; font-size: 0.9em; max-width: 60em; }
.source { color: #777; font-size: 0.85em; }
figure { margin: 1.5em 0 2.5em; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
"""


def _cell_class(text: str) -> str:
    """Numbers align right; prose (a question, an answer) wraps instead of widening its column."""
    if NUMBER.match(text):
        return ' class="num"'
    return ' class="long"' if len(text) > LONG_CELL else ""


def table_html(t: Table) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(f"<td{_cell_class(c)}>{escape(c)}</td>" for c in row) + "</tr>" for row in t.rows)
    parts = [f"<h3>{escape(t.title)}</h3>"]
    if t.source:
        parts.append(f'<div class="source">from <code>{escape(t.source)}</code></div>')
    parts.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')
    if t.caption:
        parts.append(f'<p class="caption">{escape(t.caption)}</p>')
    return "\n".join(parts)


def figure_html(f) -> str:
    data = base64.b64encode(f.png).decode("ascii")
    return (f'<figure id="{escape(f.name)}"><h3>{escape(f.title)}</h3>'
            f'<img src="data:image/png;base64,{data}" alt="{escape(f.title)}">'
            f'<figcaption>{escape(f.caption)} <span class="source">({escape(f.name)}.png)</span></figcaption>'
            "</figure>")


def report_html(title: str, meta: list[str], tables: list[Table], figures: list) -> str:
    nav = " ".join(f'<a href="#{escape(f.name)}">{escape(f.title)}</a>' for f in figures)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{escape(title)}</h1>",
             '<ul class="meta">' + "".join(f"<li>{escape(m)}</li>" for m in meta) + "</ul>"]
    if figures:
        parts.append(f"<nav>Figures: {nav}</nav>")
    parts.append("<h2>Tables</h2>")
    parts += [table_html(t) for t in tables]
    parts.append("<h2>Figures</h2>")
    parts += [figure_html(f) for f in figures]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
