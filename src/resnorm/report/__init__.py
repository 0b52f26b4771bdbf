"""The study report: one self-contained HTML page (images embedded) and a Markdown twin.

`resnorm report STUDY` reads whatever the study folder holds — finished runs, their curves,
the Grad-CAM summary — and writes STUDY/report.html and STUDY/report.md. Runs that are not
finished are listed, never silently left out. Every observation is generated from numbers
that appear in the report's tables; nothing is canned.

The report is built as a small document model (sections of paragraphs, tables, figures,
bullet lists of plain text) and rendered twice; the HTML renderer escapes every string, so a
class folder named `<script>` stays text.

Modules, top down (each imports only modules below it):
  cli           `resnorm report STUDY`
  build         read the study folder, assemble the sections, write report.html/report.md
  sections      Setup, Results, Curves
  comparisons   the sanity check (PyTorch BN vs own BN), batch size (BN vs GN), every pair
  inspection    BIN gates and Grad-CAM
  answers       the answer sheet: the assignment's items in order, first in the report
  observations  the closing bullet list, in words, from numbers the sections computed
  summary       the study's statistics as one dict (summary.json)
  run_scores    each run's scored seeds, the shared resamples and models, a run's entry
  families      which tests are primary or exploratory, their adjustment, detectable effects
  verdicts      the primary family's table, the ranking, verdicts as text
  faithfulness  the Grad-CAM galleries' faithfulness and black-corner numbers
  figures       matplotlib figures, written to STUDY/report_assets/
  render        the HTML and Markdown renderers
  gallery_data  what gradcam.json holds for the report, shares with their intervals
  roles         the design's runs as records (Roles); lookups in run records
  format        number formatting (tables and observations share it)
  document      the document model
"""
from resnorm.report.build import build_report, write_report
from resnorm.report.render import render_html, render_markdown

__all__ = ["write_report", "build_report", "render_html", "render_markdown"]
