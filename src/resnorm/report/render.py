"""Rendering the document model twice: one self-contained HTML page (images embedded) and a
Markdown twin (figures linked relative to the study folder). Both escape every string."""
from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path
from typing import Any, Callable

from resnorm.report.document import Block, Bold, Bullets, Cell, Img, Para, Report, Sub, Table


# HTML: every string goes through esc(); images are embedded as base64 data URIs.
CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#222;margin:0;
background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:24px 32px;background:#fff}
h1{margin-bottom:0} .sub{color:#666;margin-top:4px}
h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:40px}
h3{margin:24px 0 8px}
nav ol{columns:2;color:#444}
table{border-collapse:collapse;margin:10px 0 6px;font-size:13px}
th,td{padding:4px 9px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top}
th{background:#f2f2f2} tr:nth-child(even) td{background:#fbfbfb}
td.n{text-align:right;font-variant-numeric:tabular-nums}
caption{caption-side:bottom;text-align:left;color:#666;font-size:12px;padding-top:4px}
figure{margin:14px 0} figure img{max-width:100%;border:1px solid #eee}
figure.narrow{display:inline-block;width:49%;vertical-align:top;margin:6px 0}
figcaption{color:#555;font-size:13px}
ul.obs li{margin:6px 0}
.scroll{overflow-x:auto}
"""


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


_NUMERIC = re.compile(r"^[-+]?[\d,.]+\s*(%|s|min|h|points|points rel\.)?( \(\S+\))?$|^—$")


def _html_cell(cell: Cell, tag: str, align_numbers: bool = True) -> str:
    text = cell.text if isinstance(cell, Bold) else cell
    inner = f"<b>{esc(text)}</b>" if isinstance(cell, Bold) else esc(text)
    numeric = align_numbers and tag == "td" and _NUMERIC.match(str(text).strip())
    cls = ' class="n"' if numeric else ""
    return f"<{tag}{cls}>{inner}</{tag}>"


def embedded_image(block: Img) -> str:
    """The figure's PNG inside the page (a data URI): the HTML report is one file."""
    data = base64.b64encode(block.path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(block.caption)}">'


# The PDF sets a "wide" table (this many columns or more) in a smaller font to fit the page,
# and lets a "long" one (more rows than this) run over pages, its header repeated.
WIDE_TABLE = 9
LONG_TABLE = 25


def html_block(block: Block, image: Callable[[Img], str] = embedded_image) -> str:
    """One block as HTML; `image` writes a figure's <img> (embedded, or a file for the PDF)."""
    if isinstance(block, Para):
        return f"<p>{esc(block.text)}</p>"
    if isinstance(block, Sub):
        return f"<h3>{esc(block.title)}</h3>"
    if isinstance(block, Bullets):
        return '<ul class="obs">' + "".join(f"<li>{esc(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Table):
        head = "" if not any(block.header) else \
            "<thead><tr>" + "".join(_html_cell(h, "th") for h in block.header) + "</tr></thead>"
        keyed = not any(block.header)  # a key/value table: values read as text
        body = "".join("<tr>" + "".join(_html_cell(c, "td", not keyed) for c in row) + "</tr>"
                       for row in block.rows)
        cap = f"<caption>{esc(block.caption)}</caption>" if block.caption else ""
        kinds = " ".join(k for k, on in (("wide", len(block.header) >= WIDE_TABLE),
                                         ("long", len(block.rows) > LONG_TABLE)) if on)
        cls = f' class="{kinds}"' if kinds else ""
        return (f'<div class="scroll"><table{cls}>{cap}{head}<tbody>{body}</tbody></table>'
                "</div>")
    if isinstance(block, Img):
        cls = ' class="narrow"' if block.narrow else ""
        return f"<figure{cls}>{image(block)}<figcaption>{esc(block.caption)}</figcaption></figure>"
    raise TypeError(f"unknown block {block!r}")


def html_sections(report: Report, image: Callable[[Img], str] = embedded_image) -> list[str]:
    """Each section as HTML, numbered, with the id the contents link to (#s1, #s2, ...)."""
    return [f'<section id="s{i}"><h2>{i}. {esc(s.title)}</h2>'
            + "\n".join(html_block(b, image) for b in s.blocks) + "</section>\n"
            for i, s in enumerate(report.sections, 1)]


def render_html(report: Report) -> str:
    toc = "".join(f'<li><a href="#s{i}">{esc(s.title)}</a></li>'
                  for i, s in enumerate(report.sections, 1))
    body = "".join(html_sections(report))
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{esc(report.title)}</title><style>{CSS}</style></head>\n"
            f"<body><main><h1>{esc(report.title)}</h1><p class=\"sub\">{esc(report.subtitle)}</p>"
            f"<nav><ol>{toc}</ol></nav>\n{body}</main></body></html>\n")


# Markdown: HTML-escape (markdown passes raw HTML through) and backslash-escape markdown syntax.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|])")


def md_esc(text: Any) -> str:
    return _MD_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=False))


def _md_cell(cell: Cell) -> str:
    return f"**{md_esc(cell.text)}**" if isinstance(cell, Bold) else md_esc(cell)


def _md_block(block: Block, root: Path) -> str:
    if isinstance(block, Para):
        return md_esc(block.text)
    if isinstance(block, Sub):
        return f"### {md_esc(block.title)}"
    if isinstance(block, Bullets):
        return "\n".join(f"- {md_esc(i)}" for i in block.items)
    if isinstance(block, Table):
        header = [h or " " for h in block.header]
        lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
                 "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
        if block.caption:
            lines.append(f"\n*{md_esc(block.caption)}*")
        return "\n".join(lines)
    if isinstance(block, Img):
        rel = os.path.relpath(block.path, root).replace(os.sep, "/")
        return f"![{md_esc(block.caption)}]({rel})\n\n*{md_esc(block.caption)}*"
    raise TypeError(f"unknown block {block!r}")


def render_markdown(report: Report) -> str:
    parts = [f"# {md_esc(report.title)}", f"*{md_esc(report.subtitle)}*"]
    for i, s in enumerate(report.sections, 1):
        parts.append(f"## {i}. {md_esc(s.title)}")
        parts.extend(_md_block(b, report.root) for b in s.blocks)
    return "\n\n".join(parts) + "\n"
