"""resnorm from Python: what a notebook (Kaggle, Colab; examples/assignment.ipynb) calls
instead of shelling out to `resnorm study`. Both are exported lazily by the package:
`import resnorm` stays cheap, `resnorm.run_study` imports the pipeline on first use.

    import resnorm
    study = resnorm.run_study("configs/assignment.yaml", "/kaggle/working/studies/birds",
                              data="/kaggle/input/indian-birds/Birds_25")
    resnorm.show_report(study)   # the report in the notebook, and where report.pdf is

Running the same call again resumes the study (finished runs are skipped, an interrupted one
continues from its last checkpoint): after a notebook session is cut, keep `out` on storage
that outlives it and run the cell again.
"""
from __future__ import annotations

import html
import os
import sys
from pathlib import Path
from typing import Callable, Union

from resnorm.studydir import StudyDir

__all__ = ["run_study", "show_report"]

PathLike = Union[str, os.PathLike]


def run_study(plan: PathLike, out: PathLike, *, data: PathLike | None = None,
              synthetic: PathLike | None = None, seeds: int | list[int] | None = None,
              jobs: int | str = 1, pdf: bool = True, gradcam: bool = True,
              keep_leaked: bool = False, cache: str | None = None, progress: bool = True,
              say: Callable[[str], None] = print) -> Path:
    """Run (or resume) the study `plan` (a YAML file, e.g. configs/assignment.yaml) into the
    folder `out`, as `resnorm study` does; return that folder.

    data: the dataset (train/ with valid/, val/ or test/; Kaggle's train/ + valid/ included)
    or a prepared cache; synthetic: instead, a folder for the synthetic stand-in (made if
    missing). seeds: overrides the plan's seeds (a count or a list). jobs: runs at once (1
    shows each epoch's progress bar here; "auto": as many as the GPU holds). pdf: write
    report.pdf beside report.html (needs WeasyPrint and Pango; without them one line says what
    to install). gradcam, keep_leaked, cache: as --no-gradcam, --keep-leaked, --cache.

    A bad plan or dataset raises resnorm.errors.UsageError (one line). A run that fails is
    said in one line and listed in the report; calling again retries it.
    """
    from resnorm import pipeline
    from resnorm.study.plan.options import StudyOptions

    options = StudyOptions(data=data, synthetic=synthetic, cache=cache, progress=progress,
                           gradcam=gradcam, pdf=pdf, jobs=jobs, seeds=seeds,
                           keep_leaked=keep_leaked)
    result = pipeline.run_study(plan, out, options, say=say)
    if result.failed:
        print(f"run_study: {len(result.failed)} job(s) failed: {', '.join(result.failed)} "
              "(their error.txt says why; run again to retry them)", file=sys.stderr)
    if result.gradcam_error:
        print(f"run_study: Grad-CAM failed: {result.gradcam_error}", file=sys.stderr)
    return result.study


def show_report(study: PathLike, height: int = 900):
    """The study's report for a notebook to display (report.html, whose images it holds, in a
    frame of `height` pixels, so that its styles stay its own); prints where report.html and
    report.pdf are. Returns an IPython HTML object: the last line of a cell shows it."""
    from IPython.display import HTML

    folder = StudyDir(study)
    if not folder.report_html.is_file():
        raise FileNotFoundError(f"{folder.report_html} does not exist yet (resnorm report "
                                f"{folder.dir} writes it)")
    pdf = folder.report_pdf
    print(f"report: {folder.report_html}\n"
          + (f"PDF to hand in: {pdf}" if pdf.is_file() else "no report.pdf (pdf=False, or "
             "WeasyPrint could not run)"))
    page = html.escape(folder.report_html.read_text(encoding="utf-8"), quote=True)
    return HTML(f'<div class="resnorm-report"><iframe srcdoc="{page}" style="width:100%;'
                f'height:{int(height)}px;border:1px solid #ddd"></iframe></div>')
