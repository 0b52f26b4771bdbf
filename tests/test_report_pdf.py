"""`resnorm report STUDY --pdf`: the PDF of a hand-made study (tests/test_report.py's
fake_study, no training), rendered once and read back with pypdf. Where WeasyPrint or its
system libraries (Pango) are missing these tests skip, saying what to install; the HTML report
never depends on them."""
from __future__ import annotations

import re
import sys

import pytest

from resnorm import cli
from resnorm.report.document import Img
from resnorm.report.figures import vector_figures, vector_of
from resnorm.report.pdf import PdfUnavailable, pdf_engine, write_pdf
from resnorm.report.build import build_report
from resnorm.studydir import StudyDir

from test_report import fake_gradcam, fake_study
from test_report_answers import with_faithfulness

A4_WIDTH, A4_HEIGHT = 595.28, 841.89  # points


def _missing() -> str | None:
    try:
        pdf_engine()
        import pypdf  # noqa: F401
    except PdfUnavailable as exc:
        return str(exc)
    except ImportError:
        return "pypdf is not installed: pip install pypdf (resnorm's dev extras)"
    return None


needs_pdf = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A study of every role with Grad-CAM, its report written by `resnorm report --pdf`."""
    if _missing():
        pytest.skip(_missing())
    import pypdf

    study = fake_study(tmp_path_factory.mktemp("pdf") / "s")
    fake_gradcam(study, "A")
    with_faithfulness(study, corners=True)
    with vector_figures():  # what `resnorm report --pdf` does (write_report), keeping the
        report = build_report(study)  # document it lays out
    reader = pypdf.PdfReader(write_pdf(report, StudyDir(study).report_pdf))
    return {"study": study, "report": report, "pdf": reader,
            "pages": [page.extract_text() for page in reader.pages]}


def squashed(text: str) -> str:
    """Text without whitespace: pypdf breaks lines where the layout did."""
    return re.sub(r"\s+", "", text)


@needs_pdf
def test_every_section_title_and_figure_is_in_the_pdf(made):
    text = squashed(" ".join(made["pages"]))
    sections = made["report"].sections
    for i, section in enumerate(sections, 1):
        assert squashed(f"{i}. {section.title}") in text, section.title
    figures = [b for s in sections for b in s.blocks if isinstance(b, Img)]
    assert len(figures) >= 12  # overlay, 8 run curves, sanity, batch size, ranking, gallery
    for figure in figures:
        assert squashed(figure.caption) in text, figure.caption
    # the report's own figures are vectors (their text is text in the PDF); the run curves and
    # the Grad-CAM gallery are raster images: one image in the PDF for each of those
    vectors = [f for f in figures if vector_of(f.path)]
    assert {f.path.name for f in vectors} >= {"overlay.png", "sanity.png", "batch_size.png",
                                              "ranking.png"}
    for words in ("Validation accuracy", "Time per epoch", "best set in colour"):
        assert squashed(words) in text
    images = {name for page in made["pdf"].pages
              for name, x in page["/Resources"].get("/XObject", {}).items()
              if x.get_object().get("/Subtype") == "/Image"}
    assert len(images) == len({f.path for f in figures if not vector_of(f.path)})


@needs_pdf
def test_the_first_page_is_the_answer_sheet_and_the_second_links_every_section(made):
    first = made["pages"][0]
    assert "1. Answer sheet" in first and "2. Setup" not in first
    for item in ("1.1", "2.4", "2.5", "2.6", "2.7"):
        assert item in first
    assert "page 1 of" in first
    contents = made["pdf"].pages[1]
    assert "Contents" in made["pages"][1]
    links = [a.get_object() for a in contents.get("/Annots", [])]
    sections = made["report"].sections
    assert {a["/Dest"] for a in links} == {f"s{i}" for i in range(1, len(sections) + 1)}
    # and each section is a bookmark of the PDF
    outline = made["pdf"].outline
    titles = [o.title for o in (outline[1] if isinstance(outline[1], list) else outline)
              if not isinstance(o, list)]
    assert titles[:len(sections)] == [f"{i}. {s.title}" for i, s in enumerate(sections, 1)]


@needs_pdf
def test_no_page_is_wider_than_a4_and_nothing_runs_off_its_edge(made):
    for number, page in enumerate(made["pdf"].pages, 1):
        width, height = float(page.mediabox.width), float(page.mediabox.height)
        assert width <= A4_WIDTH + 0.5 and height <= A4_HEIGHT + 0.5, number
        starts: list[float] = []

        def text_start(text, cm, tm, font, size):
            # the page's own text (paragraphs, tables): pypdf gives text drawn inside an SVG
            # figure in the figure's coordinates (an identity cm), so those are left out;
            # a figure is fitted to the page by its max-width
            if text.strip() and list(cm) != [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]:
                starts.append(cm[0] * tm[4] + cm[2] * tm[5] + cm[4])

        page.extract_text(visitor_text=text_start)
        # wide tables are set to fit: no text starts in the right margin or beyond the page
        assert starts and max(starts) < width - 30, (number, max(starts))


@needs_pdf
def test_weasyprint_leaves_pillow_refusing_truncated_images(monkeypatch):
    """Importing WeasyPrint turns on Pillow's LOAD_TRUNCATED_IMAGES for the process; through
    pdf_engine it is put back (WeasyPrint imported afresh here)."""
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    for name in [m for m in sys.modules if m.split(".")[0] == "weasyprint"]:
        monkeypatch.delitem(sys.modules, name)
    pdf_engine()
    assert "weasyprint.images" in sys.modules and ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_without_weasyprint_the_html_is_written_and_one_line_says_what_to_install(
        tmp_path, monkeypatch, capsys):
    """`resnorm report --pdf` exits 1 after writing the HTML; `resnorm study --pdf`
    (StudyOptions.pdf, the pipeline's report step) says the same line and goes on."""
    from resnorm.cli import build_parser
    from resnorm.pipeline import report_step
    from resnorm.study.cli import study_options

    study = fake_study(tmp_path / "s")
    monkeypatch.setitem(sys.modules, "weasyprint", None)  # import weasyprint fails
    assert cli.main(["report", str(study), "--pdf"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'resnorm[pdf]'" in err and "pango" in err
    assert StudyDir(study).report_html.is_file() and not StudyDir(study).report_pdf.exists()
    args = build_parser().parse_args(["study", "--synthetic", "d", "--plan", "p.yaml", "--out",
                                      "o", "--pdf"])
    assert study_options(args).pdf is True
    import resnorm.report

    def unavailable(folder, pdf):  # what write_report did above, without building it again
        raise PdfUnavailable(err.split(": ", 1)[1].strip())

    monkeypatch.setattr(resnorm.report, "write_report", unavailable)
    said: list[str] = []
    report_step(study, pdf=True, say=said.append)
    assert said == [f"report: {StudyDir(study).report_html}\nreport: {err.split(': ', 1)[1]}"
                    .strip()]
