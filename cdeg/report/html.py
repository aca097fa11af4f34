"""HTML pieces of the study report: escaping, tables, inline images, the page shell and its stylesheet.

Everything is inline (base64 PNG, one <style>, one small <script>), so the file opens from a USB stick or an
e-mail attachment with no network. Patient cards open through the URL fragment (CSS ``:target``), which
needs no script at all; the script only adds a "close" shortcut and opening the card after a page reload.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CSS = """
:root{--ink:#1d2327;--muted:#5b6670;--line:#d8dde2;--soft:#f4f6f8;--accent:#1f5fa8;--warn:#b35c00}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:var(--ink);margin:0;
line-height:1.5;background:#fff}
header.top{background:#183a5a;color:#fff;padding:1.2em 2em}
header.top h1{margin:0 0 .2em 0;font-size:1.6em}
header.top p{margin:0;color:#d5e2ef}
nav.toc{position:sticky;top:0;background:#fff;border-bottom:1px solid var(--line);padding:.5em 2em;z-index:5;
font-size:.95em}
nav.toc a{margin-right:1.2em;color:var(--accent);text-decoration:none}
main{max-width:1180px;margin:0 auto;padding:0 2em 4em 2em}
h2{font-size:1.35em;border-bottom:2px solid var(--line);padding-bottom:.2em;margin-top:2em}
h3{font-size:1.1em;margin:1.4em 0 .4em 0}
.howto{background:#eef4fb;border-left:4px solid var(--accent);padding:.6em 1em;margin:.8em 0;font-size:.95em}
.howto b{color:var(--accent)}
.warn{background:#fff4e5;border-left:4px solid var(--warn);padding:.6em 1em;margin:.8em 0}
.muted{color:var(--muted);font-size:.92em}
table{border-collapse:collapse;margin:.6em 0;font-size:.93em}
td,th{border:1px solid var(--line);padding:.3em .65em;text-align:right;vertical-align:top}
th{background:var(--soft);font-weight:600}
td:first-child,th:first-child{text-align:left}
td.l,th.l{text-align:left}
.headline{display:flex;flex-wrap:wrap;gap:1em;margin:1em 0}
.kpi{border:1px solid var(--line);border-radius:6px;padding:.7em 1em;min-width:240px;flex:1}
.kpi .v{font-size:1.6em;font-weight:600;color:var(--accent)}
.figs{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
figure{margin:.4em 0;max-width:100%}
figure img{max-width:100%;border:1px solid var(--line)}
figcaption{font-size:.9em;color:var(--muted);max-width:560px}
.gallery{display:flex;flex-wrap:wrap;gap:.8em}
.gallery figure{width:240px}
.flag{color:var(--warn);font-weight:600}
.ok{color:#2b7a3d}
.card{display:none;border:2px solid var(--accent);border-radius:8px;padding:1em 1.4em;margin:1em 0;background:#fff}
.card:target{display:block}
.card h3{margin-top:0}
.card .close{float:right;font-size:.9em}
details summary{cursor:pointer;color:var(--accent)}
pre{background:var(--soft);padding:.8em;overflow:auto;font-size:.85em;max-height:420px}
.bar{display:inline-block;height:.7em;background:var(--accent);vertical-align:middle}
"""

# Inline script (optional comfort, the page works without it): Escape closes an open card.
SCRIPT = """
document.addEventListener('keydown',function(e){if(e.key==='Escape'&&location.hash.indexOf('#patient-')===0){
location.hash='#patients';}});
"""


def esc(x: Any) -> str:
    """HTML-escape any value's text."""
    return html.escape("" if x is None else str(x))


def fmt(x: Any, nd: int = 2, pct: bool = False) -> str:
    """A number for a table: fixed decimals, '-' for missing, optional percentage."""
    if x is None:
        return "-"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if v != v:  # NaN
        return "-"
    return f"{100 * v:.{max(nd - 2, 0)}f}%" if pct else f"{v:.{nd}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], raw: bool = False, cls: str = "") -> str:
    """A table; cells are escaped unless `raw` (then they are trusted HTML built by this package)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    cell = (lambda c: str(c)) if raw else esc
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def png_data(path: str | Path, width: int | None = None, colours: int | None = None) -> str:
    """A PNG file as a base64 data URI, optionally downscaled to `width` px and reduced to a palette.

    Plots and QC overlays are shown far smaller than they are written; shrinking them keeps a report of a
    hundred patient cards to a few megabytes.
    """
    raw = Path(path).read_bytes()
    if width is not None or colours is not None:
        from PIL import Image

        im = Image.open(io.BytesIO(raw))
        im = im.convert("RGB")
        if width is not None and im.width > width:
            im = im.resize((width, max(1, round(im.height * width / im.width))), Image.LANCZOS)
        if colours is not None:
            # Fast octree rather than median cut, and zlib's default level rather than `optimize`: a third of
            # the time per figure (a report of 109 patient cards embeds ~900), and smaller files for plots.
            im = im.quantize(colors=colours, method=Image.Quantize.FASTOCTREE)
        buf = io.BytesIO()
        im.save(buf, format="PNG", compress_level=6)
        raw = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")


def svg_data(path: str | Path) -> str:
    """An SVG file as a base64 data URI."""
    return "data:image/svg+xml;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def figure(
    path: str | Path | None,
    caption: str,
    width: int | None = None,
    colours: int | None = 128,
    css_width: int | None = None,
) -> str:
    """A <figure> with an inline PNG or SVG and its caption; a note when the file is missing. `width` and
    `colours` shrink a PNG (:func:`png_data`); an SVG is embedded as it is."""
    if path is None or not Path(path).is_file():
        return f'<p class="muted">({esc(caption)}: not available)</p>'
    style = f' style="width:{css_width}px"' if css_width else ""
    src = svg_data(path) if Path(path).suffix == ".svg" else png_data(path, width, colours)
    return (
        f'<figure{style}><img alt="{esc(caption)}" src="{src}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def howto(text: str) -> str:
    """The short "how to read this" box at the top of a section."""
    return f'<div class="howto"><b>How to read this.</b> {text}</div>'


def page(title: str, subtitle: str, nav: Sequence[tuple[str, str]], body: Sequence[str]) -> str:
    """The whole document."""
    links = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in nav)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f'<header class="top"><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>'
        f'<nav class="toc">{links}</nav><main>{"".join(body)}</main>'
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def section(anchor: str, title: str) -> str:
    """A section heading that the page's navigation links to (``#anchor``)."""
    return f'<h2 id="{esc(anchor)}">{esc(title)}</h2>'
