"""The report as a PDF to hand in (STUDY/report.pdf), laid out by WeasyPrint from the same
document the HTML report shows.

A4 pages numbered "page i of n"; the answer sheet alone on the first page, then a table of
contents whose entries link to their sections and give their pages (the sections are PDF
bookmarks too); figures as SVG where matplotlib drew them (build the report inside
`figures.vector_figures()`), the Grad-CAM galleries as the PNGs Grad-CAM drew; no table, figure
or gallery broken across pages where it fits on one (a longer table repeats its header row);
tables of many columns set small enough to fit the page's width.

WeasyPrint (pip) needs Pango from the operating system. Where either is missing,
`PdfUnavailable` says in one line what to install; the HTML report does not depend on it.
"""
from __future__ import annotations

from pathlib import Path

from resnorm.fileio import atomic_write_bytes
from resnorm.report.document import Img, Report
from resnorm.report.figures import vector_of
from resnorm.report.render import esc, html_sections

__all__ = ["PdfUnavailable", "pdf_engine", "print_html", "write_pdf", "INSTALL_PDF"]

INSTALL_PDF = ("pip install 'resnorm[pdf]' (WeasyPrint), and Pango: apt-get install "
               "libpango-1.0-0 libpangoft2-1.0-0 (macOS: brew install pango)")


class PdfUnavailable(RuntimeError):
    """WeasyPrint or the system libraries it needs are missing (the message says which)."""


def pdf_engine():
    """The weasyprint module, or PdfUnavailable saying what to install.

    Importing WeasyPrint turns on Pillow's LOAD_TRUNCATED_IMAGES for the whole process; it is
    put back, so that `resnorm prepare` (in the same notebook kernel, say) still refuses a
    truncated image instead of decoding half of it."""
    from PIL import ImageFile

    truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        import weasyprint
    except ImportError:
        raise PdfUnavailable(f"no PDF: WeasyPrint is not installed: {INSTALL_PDF}") from None
    except OSError as exc:  # its cffi bindings found no Pango/GObject library
        why = str(exc).splitlines()[0][:120]
        raise PdfUnavailable(f"no PDF: WeasyPrint cannot load its system libraries ({why}): "
                             f"{INSTALL_PDF}") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated
    return weasyprint


PRINT_CSS = """
@page { size: A4; margin: 14mm 13mm 16mm;
  @bottom-center { content: "page " counter(page) " of " counter(pages);
                   font: 7.5pt "DejaVu Sans", sans-serif; color: #666 }
  @top-left { content: string(doctitle); font: 7.5pt "DejaVu Sans", sans-serif; color: #888 } }
@page :first { @top-left { content: none } }
html { font: 8.5pt/1.38 "DejaVu Sans", sans-serif; color: #222 }
h1 { font-size: 15pt; margin: 0; string-set: doctitle content() }
.sub { color: #666; margin: 2px 0 8px }
h2 { font-size: 12.5pt; border-bottom: 1.2px solid #ccc; padding-bottom: 2px;
     margin: 16px 0 6px; break-after: avoid }
h3 { font-size: 10pt; margin: 10px 0 4px; break-after: avoid }
h3 + p { break-after: avoid }
p { margin: 3px 0 6px; orphans: 3; widows: 3 }
ul { padding-left: 14px; margin: 4px 0 } li { margin: 3px 0 }
nav.toc { break-before: page; break-after: page } nav.toc h2 { bookmark-level: none }
nav.toc ol { list-style: none; padding: 0; font-size: 10pt; line-height: 1.9 }
nav.toc a { color: inherit; text-decoration: none }
nav.toc a::after { content: leader(".") target-counter(attr(href), page) }
table { border-collapse: collapse; width: 100%; margin: 6px 0; font-size: 7.3pt;
        break-inside: avoid }
table.wide { font-size: 5.9pt } table.long { break-inside: auto }
th, td { padding: 1.5px 3px; border-bottom: 0.5px solid #ddd; text-align: left;
         vertical-align: top; overflow-wrap: break-word }
th { background: #eee } td.n { text-align: right; white-space: nowrap }
thead { display: table-header-group } tr { break-inside: avoid }
caption { caption-side: bottom; text-align: left; color: #666; font-size: 6.8pt;
          padding-top: 2px }
#s1 table { font-size: 8.3pt } #s1 td { padding: 4px 4px }
#s1 td:first-child { width: 5% } #s1 td:nth-child(2) { width: 22% }
figure { margin: 6px 0; break-inside: avoid }
figure img { max-width: 100%; max-height: 228mm; object-fit: contain }
figure.narrow { display: inline-block; width: 49%; vertical-align: top; margin: 3px 0 }
figure.narrow img { width: 100% }
figcaption { font-size: 7pt; color: #555 }
.scroll { overflow: visible }
"""


def file_image(block: Img) -> str:
    """The figure as a file: its SVG when one was drawn with it, else its PNG."""
    source = vector_of(block.path) or block.path
    return f'<img src="{esc(source.resolve().as_uri())}" alt="{esc(block.caption)}">'


def print_html(report: Report) -> str:
    """The page WeasyPrint lays out: the title and the answer sheet (section 1) on the first
    page, the contents on the next, then every other section."""
    sections = html_sections(report, image=file_image)
    toc = "".join(f'<li><a href="#s{i}">{i}. {esc(s.title)}</a></li>'
                  for i, s in enumerate(report.sections, 1))
    page = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{esc(report.title)}</title><style>{PRINT_CSS}</style></head>\n"
            f'<body><h1>{esc(report.title)}</h1><p class="sub">{esc(report.subtitle)}</p>'
            f"{sections[0] if sections else ''}"
            f'<nav class="toc"><h2>Contents</h2><ol>{toc}</ol></nav>\n'
            f"{''.join(sections[1:])}</body></html>\n")
    # in narrow table cells "27.2 ± 4.5" may break before the half-width, never after the ±
    return page.replace(" ± ", " ±\u00a0")


def write_pdf(report: Report, path: str | Path) -> Path:
    """Lay the report out as a PDF at `path` (written whole or not at all)."""
    weasyprint = pdf_engine()
    path = Path(path)
    html = weasyprint.HTML(string=print_html(report), base_url=str(report.root.resolve()))
    atomic_write_bytes(path, html.write_pdf())
    return path
