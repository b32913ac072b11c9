"""The PDF report, made with fpdf2: summary, lesion table, report text, the key image of each
lesion, findings table and annotated images.

Speed matters (the service returns the PDF inline), so: the bundled fonts are small subsets (see
fonts/README.md), text is wrapped here with fpdf2's width table instead of ``multi_cell`` (whose
line breaking costs milliseconds per paragraph), and annotated JPEGs are embedded as they are.
The output depends only on the Analysis: the creation date is the analysis timestamp, the
producer is fixed and fpdf2's file ID is a hash of the content, so equal analyses give equal bytes.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from datetime import UTC, datetime

from fpdf import FPDF

from mriscribe.analysis import Analysis, ImageResult, MeasuredFinding
from mriscribe.imaging.geometry import Plane
from mriscribe.render.annotate import FONTS, TIMES, annotated_jpeg, class_colour
from mriscribe.report.facts import LesionFact
from mriscribe.report.wording import (
    class_kind,
    extent_text,
    images_phrase,
    number_ranges,
    percent,
    side_text,
    size_text,
    study_result,
    threshold_text,
    volume_text,
)

FAMILY = "DejaVu"
REGULAR_FONT = FONTS / "DejaVuSans.ttf"
BOLD_FONT = FONTS / "DejaVuSans-Bold.ttf"

MARGIN = 15.0  # mm, A4 portrait
LINE = 4.6  # mm per line of body text
BODY_PT = 9.5
SMALL_PT = 8.0
IMAGE_COLUMNS = 2
COLUMN_GAP = 6.0

GREY = (100, 100, 100)
RULE = (200, 200, 200)
SHADE = (242, 242, 242)
BANNER = (255, 243, 205)  # pale amber: a caution, not an alarm
# A negative result is not an all-clear: dark blue, not green.
RESULT_COLOURS = {"positive": (180, 20, 20), "negative": (30, 70, 130), "indeterminate": GREY}

# The findings table: (heading, width in mm); widths add up to the 180 mm text width.
COLUMNS = (
    ("Image", 12.0),
    ("File", 45.0),
    ("Class", 31.0),
    ("Confidence", 20.0),
    (f"W {TIMES} H (mm)", 27.0),
    ("Spacing source", 45.0),
)
FILE_COLUMN, CLASS_COLUMN = 1, 2

# The lesion table: (heading, width in mm), 180 mm in all. Cells wrap (a fact is never cut
# short); headings wrap too, so "Volume (est.)" marks the volume as an estimate in the header.
LESION_COLUMNS = (
    ("Lesion", 13.0),
    ("Class", 26.0),
    ("Side", 17.0),
    ("Images", 21.0),
    (f"Largest (W {TIMES} H)", 52.0),
    ("Extent", 14.0),
    ("Volume (est.)", 17.0),
    ("Confidence", 20.0),
)
LESION_CLASS_COLUMN = 1
TABLE_LINE = 3.9  # mm per line of a wrapped table cell
# Under the key images: what the letters drawn at the image edges (render/annotate.py) mean.
ORIENTATION_NOTE = (
    "Letters at the image edges give the patient's orientation: L/R left/right, "
    "A/P anterior/posterior, H/F head/feet."
)
NO_VALUE = "-"  # extent, volume or side where the series has no slice positions
NBSP = "\u00a0"  # keeps a size, or "on image N", on one line of a wrapped cell
SWATCH = 3.2  # mm a class's colour swatch takes from its cell

PAGES_ALIAS = "\x01nb\x01"
_SIZE_X = re.compile(r"(\d) x (\d)")


def render_pdf(analysis: Analysis) -> bytes:
    """The PDF for ``analysis``: byte-identical for equal analyses (its timestamp included)."""
    layout = _Layout(analysis)
    layout.title_block()
    layout.summary()
    layout.lesion_table()
    layout.report_sections()
    layout.key_images()
    layout.findings_table()
    layout.images()
    layout.disclaimer()
    return bytes(layout.pdf.output())


def _utc(timestamp: datetime) -> datetime:
    """The timestamp in UTC; a naive one is taken to be UTC already."""
    if timestamp.tzinfo is None:
        return timestamp.replace(tzinfo=UTC)
    return timestamp.astimezone(UTC)


def _model_label(analysis: Analysis) -> str:
    name = analysis.model.name or "detector"
    details = [f"version {analysis.model.version}"] if analysis.model.version else []
    if analysis.model.backend:
        details.append(analysis.model.backend)
    return f"{name} ({', '.join(details)})" if details else name


def _size(item: MeasuredFinding) -> str:
    approx = "≈ " if item.size.estimated else ""
    return f"{approx}{item.size.width_mm:.1f} {TIMES} {item.size.height_mm:.1f}"


def _row_height(lines: Sequence[Sequence[str]]) -> float:
    """A wrapped table row's height: its tallest cell, with half a millimetre above and below."""
    return TABLE_LINE * max(len(cell) for cell in lines) + 1.0


def _lesion_cells(lesion: LesionFact) -> list[str]:
    """A lesion's row in the words of its report sentence (report/wording.py): side, extent and
    volume where the geometry holds them, "-" where its series has no slice positions, and "not
    stated" for a side the geometry could not call (too near the midline)."""
    largest = lesion.largest
    number = largest.image_number
    hedge = "about " if largest.size_estimated else ""
    side = lesion.side or ("not stated" if lesion.geometry else NO_VALUE)
    extent = lesion.craniocaudal_mm
    volume = lesion.volume_ml
    return [
        str(lesion.id),
        lesion.class_name,
        side,
        number_ranges(lesion.images),
        f"{hedge}{_unbroken(size_text(largest, TIMES))} {_unbroken(f'on image {number}')}",
        NO_VALUE if extent is None else extent_text(extent),
        NO_VALUE if volume is None else volume_text(volume),
        percent(lesion.confidence),
    ]


def _unbroken(text: str) -> str:
    """``text`` that wrapping keeps on one line: its spaces non-breaking."""
    return text.replace(" ", NBSP)


def _lesion_note(lesions: Sequence[LesionFact], side_threshold_mm: float) -> str:
    """The lesion table's footnote: how extent, volume and side are measured, and what "-" and
    "about" mean where the table shows them."""
    note = (
        "Largest: the lesion's largest detection box (width "
        f"{TIMES} height) and the image it is on. Confidence: its most confident detection of "
        "its class."
    )
    if any(lesion.geometry for lesion in lesions):
        note += (
            " Extent: craniocaudal, from the positions of the lesion's slices plus one slice "
            f"spacing. Volume: a box-based estimate (mean box area {TIMES} depth), not a "
            "segmentation. Side: the patient's, measured from the head's own midline on up to "
            "five slices around the lesion's largest; stated only when the median distance of "
            f"its centre from the midline is at least {side_threshold_mm:g} mm, no slice puts "
            "it more than 3 mm on the other side, and its box does not reach more than 5 mm "
            "across the midline."
        )
    if any(not lesion.geometry for lesion in lesions):
        note += f" {NO_VALUE}: no slice positions in the series, so each detection is a lesion."
    if any(lesion.largest.size_estimated for lesion in lesions):
        note += " about: estimated from the default pixel spacing (the file states none)."
    return note


def _plane(image: ImageResult) -> Plane | None:
    """The displayed slice's place in the patient, where its file states one and says which
    way the patient lies (a plane without that gets no orientation letters)."""
    source = image.slice.source
    plane = source.plane if source is not None else None
    return plane if plane is not None and plane.oriented else None


def _key_caption(lesion: LesionFact) -> str:
    """ "Lesion 2: Glioma, left, image 14": the lesion, its class and side as its sentence states
    them, and the image it is largest on."""
    return (
        f"Lesion {lesion.id}: {lesion.class_name}{side_text(lesion.side)}, "
        f"image {lesion.largest.image_number}"
    )


class _Pdf(FPDF):
    """fpdf2's document with our footer; everything else is laid out by _Layout (composition
    rather than subclassing keeps our method names clear of fpdf2's, now and in later versions)."""

    def __init__(self, engine: str) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.report_engine = engine

    def footer(self) -> None:
        self.set_y(-MARGIN)
        self.set_font(FAMILY, "", 7.5)
        self.set_text_color(*GREY)
        third = self.epw / 3
        self.cell(third, 4, f"Page {self.page_no()} of {PAGES_ALIAS}", align="L")
        self.cell(third, 4, "Preliminary machine read, unverified", align="C")
        self.cell(third, 4, f"Report: {self.report_engine}", align="R")
        self.set_text_color(0)


class _Layout:
    """One report being laid out; the methods add its parts in order."""

    def __init__(self, analysis: Analysis) -> None:
        self.analysis = analysis
        self.timestamp = _utc(analysis.timestamp)
        pdf = self.pdf = _Pdf("")
        pdf.set_margins(MARGIN, MARGIN, MARGIN)
        pdf.set_auto_page_break(auto=True, margin=MARGIN + 4)
        # fpdf2 replaces this alias by the page count in any text: a control character, which
        # clean() removes from everything else, keeps a file name like "{nb}.png" as it is.
        pdf.alias_nb_pages(PAGES_ALIAS)
        pdf.set_creation_date(self.timestamp)
        pdf.set_producer("mriscribe")
        pdf.set_creator("mriscribe")
        pdf.set_title("Brain MRI automated first-read report")
        pdf.set_lang("en")
        pdf.add_font(FAMILY, "", str(REGULAR_FONT))
        pdf.add_font(FAMILY, "B", str(BOLD_FONT))
        for font in pdf.fonts.values():
            # fpdf2 subsets each font when writing. Recomputing bounding boxes and maxima then
            # expands and recompiles every kept glyph, the slowest part of writing the PDF; the
            # full font's values stay valid bounds for a subset of it.
            font.ttfont.recalcBBoxes = False
        # Characters outside the bundled subset would print as empty boxes (and make fpdf2 log a
        # warning per document): they are printed as "?" instead.
        self._charset = frozenset(pdf.fonts[FAMILY.lower()].cmap)
        report = analysis.report
        engine = f"{report.engine} (fallback)" if report.fallback_reason else report.engine
        pdf.report_engine = self.clean(engine)
        # Annotated JPEGs drawn here for images the pipeline did not render, by image number: a
        # key image is drawn once and embedded once, however many sections show it.
        self._drawn: dict[int, bytes] = {}
        pdf.add_page()

    # Text helpers -----------------------------------------------------------------------------

    def clean(self, text: str) -> str:
        """``text`` with characters the bundled fonts lack as "?" and tabs as spaces."""
        charset = self._charset
        return "".join(
            c if c == "\n" or ord(c) in charset else " " if c in "\t\r" else "?" for c in text
        )

    def font(self, size: float = BODY_PT, bold: bool = False) -> None:
        self.pdf.set_font(FAMILY, "B" if bold else "", size)

    def width(self, text: str) -> float:
        """``text``'s width in mm in the current font, from the font's width table (fpdf2's
        get_string_width builds text fragments on every call: too slow to wrap with)."""
        widths = self.pdf.current_font.cw
        missing = self.pdf.current_font.desc.missing_width
        return sum(widths.get(ord(c), missing) for c in text) * self.pdf.font_size / 1000

    def wrap(self, text: str, width: float) -> list[str]:
        """``text`` broken into lines no wider than ``width`` mm in the current font; words
        longer than a line (long file names) are broken between characters."""
        available = width - 2 * self.pdf.c_margin
        space = self.width(" ")
        lines: list[str] = []
        for paragraph in text.split("\n"):
            words: list[str] = []
            used = 0.0
            for word in paragraph.split(" "):
                size = self.width(word)
                if words and used + space + size <= available:
                    words.append(word)
                    used += space + size
                    continue
                if words:
                    lines.append(" ".join(words))
                while size > available and len(word) > 1:
                    cut, taken = 0, 0.0
                    for char in word:
                        char_size = self.width(char)
                        if cut and taken + char_size > available:
                            break
                        cut, taken = cut + 1, taken + char_size
                    lines.append(word[:cut])
                    word, size = word[cut:], size - taken
                words, used = [word], size
            lines.append(" ".join(words))
        return lines

    def paragraph(
        self, text: str, size: float = BODY_PT, bold: bool = False, indent: float = 0.0
    ) -> None:
        self.font(size, bold)
        width = self.pdf.epw - indent
        height = LINE * size / BODY_PT
        for line in self.wrap(self.clean(text), width):
            self.pdf.set_x(self.pdf.l_margin + indent)
            self.pdf.cell(width, height, line, new_x="LMARGIN", new_y="NEXT")

    def bullets(self, lines: Sequence[str], size: float = BODY_PT) -> None:
        """One bullet per line, wrapped lines indented under the text."""
        self.font(size)
        indent = 4.0
        width = self.pdf.epw - indent
        for item in lines:
            for number, line in enumerate(self.wrap(self.clean(item), width)):
                if number == 0:
                    self.pdf.cell(indent, LINE, "•", new_x="RIGHT", new_y="TOP")
                else:
                    self.pdf.set_x(self.pdf.l_margin + indent)
                self.pdf.cell(width, LINE, line, new_x="LMARGIN", new_y="NEXT")

    def heading(self, text: str, size: float = 11.0, keep: float = 3 * LINE) -> None:
        """A section heading, on a new page unless ``keep`` mm of what follows fit under it."""
        if self.pdf.will_page_break(keep + 10):
            self.pdf.add_page()
        self.pdf.ln(2.5)
        self.font(size, bold=True)
        self.pdf.cell(0, 6, self.clean(text), new_x="LMARGIN", new_y="NEXT")
        self.pdf.set_draw_color(*RULE)
        self.pdf.set_line_width(0.2)
        self.pdf.line(self.pdf.l_margin, self.pdf.y, self.pdf.l_margin + self.pdf.epw, self.pdf.y)
        self.pdf.ln(1.2)

    # Parts of the report ----------------------------------------------------------------------

    def title_block(self) -> None:
        self.font(16, bold=True)
        self.pdf.cell(0, 8, "Brain MRI: automated first-read report", new_x="LMARGIN", new_y="NEXT")
        self.font(SMALL_PT)
        self.pdf.set_text_color(*GREY)
        generated = self.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ")
        self.pdf.cell(0, 5, f"Generated {generated} (UTC)", new_x="LMARGIN", new_y="NEXT")
        self.pdf.set_text_color(0)
        self.pdf.ln(2)
        self.pdf.set_fill_color(*BANNER)
        self.font(SMALL_PT + 0.5, bold=True)
        self.multi_line_box(
            "Automated first read for research and decision support. Not a diagnosis: it must be "
            "reviewed by a qualified radiologist before any clinical decision."
        )
        self.pdf.ln(1)

    def multi_line_box(self, text: str) -> None:
        """Wrapped text on a filled background, in the current font."""
        lines = self.wrap(self.clean(text), self.pdf.epw - 2)
        height = LINE * len(lines) + 2
        if self.pdf.will_page_break(height):
            self.pdf.add_page()
        self.pdf.rect(self.pdf.l_margin, self.pdf.y, self.pdf.epw, height, style="F")
        self.pdf.ln(1)
        for line in lines:
            self.pdf.set_x(self.pdf.l_margin + 1)
            self.pdf.cell(self.pdf.epw - 2, LINE, line, new_x="LMARGIN", new_y="NEXT")
        self.pdf.ln(1)

    def summary(self) -> None:
        analysis = self.analysis
        facts = analysis.facts
        result = study_result(facts)
        result_text = {
            "positive": "Positive: tumour detected by the automated system",
            "negative": "Negative: no tumour detected by the automated system",
            "indeterminate": "Indeterminate: not every image has a detection above the threshold",
        }[result]
        counts = facts.lesion_counts
        classes = ", ".join(f"{name} ({count})" for name, count in counts.items()) or "none"
        lesions = len(facts.lesions)
        found = "none"
        if lesions:
            found = f"{lesions} on {images_phrase(facts.positive_images)}"
            if len(facts.tumours) != lesions:
                found += f" ({len(facts.tumours)} detections linked across adjacent slices)"
        lesion = facts.largest_lesion
        estimated_images = [image.number for image in facts.images if image.size_estimated]
        if not estimated_images:
            sizes = "measured with the pixel spacing stated in the files"
        elif len(estimated_images) == facts.image_count:
            sizes = "estimates: no pixel spacing in the files, default spacing used"
        else:
            sizes = (
                f"estimates on {images_phrase(estimated_images)} (no pixel spacing in the "
                "file, default spacing used); measured on the others"
            )
        report = analysis.report
        engine = report.engine
        if report.fallback_reason:
            engine = f"{engine} (fallback: {report.fallback_reason})"
        rows: list[tuple[str, str]] = [
            ("Study result", result_text),
            ("Images analysed", str(facts.image_count)),
            ("Lesions", found),
            ("Classes", classes),
        ]
        if lesion is not None:
            largest = lesion.largest
            approx = "≈ " if largest.size_estimated else ""
            rows.append(
                (
                    "Largest lesion",
                    f"{approx}{largest.width_mm:.1f} {TIMES} {largest.height_mm:.1f} mm "
                    f"(lesion {lesion.id}, {lesion.class_name}, image {largest.image_number})",
                )
            )
        rows += [
            ("Sizes", sizes),
            ("Spacing sources", "; ".join(facts.spacing_sources) or "none"),
            ("Detector", _model_label(analysis)),
            (
                "Thresholds",
                f"confidence {threshold_text(analysis.conf_threshold)}, "
                f"NMS IoU {analysis.iou_threshold:g}",
            ),
            ("Report engine", engine),
        ]
        self.heading("Summary")
        key_width = 38.0
        for key, value in rows:
            lines = self.wrap(self.clean(value), self.pdf.epw - key_width)
            if self.pdf.will_page_break(LINE * len(lines)):
                self.pdf.add_page()
            self.font(BODY_PT, bold=True)
            self.pdf.cell(key_width, LINE, key, new_x="RIGHT", new_y="TOP")
            bold = key == "Study result"
            self.font(BODY_PT, bold=bold)
            if bold:
                self.pdf.set_text_color(*RESULT_COLOURS[result])
            for number, line in enumerate(lines):
                if number:
                    self.pdf.set_x(self.pdf.l_margin + key_width)
                self.pdf.cell(self.pdf.epw - key_width, LINE, line, new_x="LMARGIN", new_y="NEXT")
            self.pdf.set_text_color(0)

    def lesion_table(self) -> None:
        """One row per lesion, in the report's spellings: the table a reader scans before the
        prose. Nothing without lesions (a negative or indeterminate study). Rows flow across
        pages, the header repeated on each."""
        facts = self.analysis.facts
        if not facts.lesions:
            return
        self.font(SMALL_PT, bold=True)
        header = self.cell_lines([heading for heading, _ in LESION_COLUMNS])
        self.font(SMALL_PT)
        rows = [
            (self.cell_lines(_lesion_cells(lesion), swatch=True), class_colour(lesion.class_name))
            for lesion in facts.lesions
        ]
        self.heading("Lesions", keep=_row_height(header) + _row_height(rows[0][0]))
        self.lesion_header(header)
        for lines, colour in rows:
            if self.pdf.will_page_break(_row_height(lines)):
                self.pdf.add_page()
                self.lesion_header(header)
            self.font(SMALL_PT)
            self.wrapped_row(lines, colour)
        self.pdf.ln(1)
        self.font(7.5)
        self.pdf.set_text_color(*GREY)
        self.paragraph(_lesion_note(facts.lesions, facts.side_threshold_mm), size=7.5)
        self.pdf.set_text_color(0)

    def cell_lines(self, cells: Sequence[str], swatch: bool = False) -> list[list[str]]:
        """Each lesion-table cell wrapped to its column in the current font (the class column
        narrower by its colour swatch where ``swatch``)."""
        lines = []
        for column, ((_, width), text) in enumerate(zip(LESION_COLUMNS, cells, strict=True)):
            if swatch and column == LESION_CLASS_COLUMN:
                width -= SWATCH
            lines.append(self.wrap(self.clean(text), width))
        return lines

    def lesion_header(self, header: list[list[str]]) -> None:
        """The lesion table's shaded header row (again at the top of each page it runs onto)."""
        self.font(SMALL_PT, bold=True)
        self.pdf.set_fill_color(*SHADE)
        self.pdf.rect(self.pdf.l_margin, self.pdf.y, self.pdf.epw, _row_height(header), style="F")
        self.wrapped_row(header, None, rule=False)

    def wrapped_row(
        self, lines: list[list[str]], colour: tuple[int, int, int] | None, rule: bool = True
    ) -> None:
        """A table row of wrapped cells in the current font, as tall as its tallest cell; a
        swatch in the box colour before the class where ``colour`` (as in the findings table)."""
        pdf = self.pdf
        top, left = pdf.y, pdf.l_margin
        for column, ((_, width), cell) in enumerate(zip(LESION_COLUMNS, lines, strict=True)):
            x = left
            if column == LESION_CLASS_COLUMN and colour is not None:
                pdf.set_fill_color(*colour)
                pdf.rect(x + 1, top + 0.5 + (TABLE_LINE - 2.2) / 2, 2.2, 2.2, style="F")
                x += SWATCH
            for number, line in enumerate(cell):
                pdf.set_xy(x, top + 0.5 + number * TABLE_LINE)
                pdf.cell(width - (x - left), TABLE_LINE, line)
            left += width
        pdf.set_xy(pdf.l_margin, top + _row_height(lines))
        if rule:
            pdf.set_draw_color(*RULE)
            pdf.line(pdf.l_margin, pdf.y, pdf.l_margin + pdf.epw, pdf.y)

    def report_sections(self) -> None:
        for title, body in self.analysis.report.sections.items():
            if title.upper() == "DISCLAIMER":
                continue  # printed last, in its own box
            self.heading(title.capitalize())
            # The report text has an ASCII "x" between sizes for plain-text readers; print TIMES.
            lines = [
                _SIZE_X.sub(rf"\1 {TIMES} \2", line) for line in body.split("\n") if line.strip()
            ]
            if len(lines) > 1:
                self.bullets(lines)
            else:
                self.paragraph("\n".join(lines))

    def findings_table(self) -> None:
        self.heading("Detections", keep=5.5 + 2 * 4.8)
        self.table_header()
        self.font(SMALL_PT)
        any_estimated = False
        for image in self.analysis.images:
            name = self.clean(image.slice.name)
            if not image.findings:
                self.table_row(
                    [str(image.number), name, "no detection", "", "", image.spacing_source],
                    None,
                )
            for item in image.findings:
                negative = class_kind(item.finding.class_name) == "negative"
                any_estimated |= item.size.estimated and not negative
                self.table_row(
                    [
                        str(image.number),
                        name,
                        item.finding.class_name,
                        f"{item.finding.confidence * 100:.1f}%",
                        "n/a (no tumour)" if negative else _size(item),
                        item.size.spacing_source,
                    ],
                    class_colour(item.finding.class_name),
                )
        self.pdf.ln(1)
        self.font(7.5)
        self.pdf.set_text_color(*GREY)
        note = f"W {TIMES} H: width {TIMES} height of the detection box."
        if any(not image.findings for image in self.analysis.images):
            threshold = threshold_text(self.analysis.conf_threshold)
            note += f" No detection: nothing above the {threshold} threshold (indeterminate)."
        if any_estimated:
            note += " ≈: estimated from the default pixel spacing (the file states none)."
        self.paragraph(note, size=7.5)
        self.pdf.set_text_color(0)

    def table_header(self) -> None:
        self.font(SMALL_PT, bold=True)
        self.pdf.set_fill_color(*SHADE)
        for heading, width in COLUMNS:
            self.pdf.cell(width, 5.5, heading, fill=True, new_x="RIGHT", new_y="TOP")
        self.pdf.ln(5.5)

    def table_row(self, cells: Sequence[str], colour: tuple[int, int, int] | None) -> None:
        height = 4.8
        if self.pdf.will_page_break(height):
            self.pdf.add_page()
            self.table_header()
            self.font(SMALL_PT)
        for column, ((_, width), text) in enumerate(zip(COLUMNS, cells, strict=True)):
            x = self.pdf.x
            if column == CLASS_COLUMN and colour is not None:
                # A swatch in the box colour links the row to the annotated image.
                self.pdf.set_fill_color(*colour)
                self.pdf.rect(x + 1, self.pdf.y + 1.3, 2.2, 2.2, style="F")
                self.pdf.set_x(x + SWATCH)
                width -= SWATCH
            text = self.fit(self.clean(text), width, keep_end=column == FILE_COLUMN)
            self.pdf.cell(width, height, text, new_x="RIGHT", new_y="TOP")
        self.pdf.ln(height)
        self.pdf.set_draw_color(*RULE)
        self.pdf.line(self.pdf.l_margin, self.pdf.y, self.pdf.l_margin + self.pdf.epw, self.pdf.y)

    def fit(self, text: str, width: float, keep_end: bool = False) -> str:
        """``text`` shortened with an ellipsis to fit ``width`` mm; ``keep_end`` keeps its end
        (a file name's or path's end tells most), else its start."""
        available = width - 2 * self.pdf.c_margin
        size = self.width(text)
        if size <= available:
            return text
        size += self.width("…")
        while len(text) > 1 and size > available:
            drop = text[0] if keep_end else text[-1]
            size -= self.width(drop)
            text = text[1:] if keep_end else text[:-1]
        return "…" + text if keep_end else text + "…"

    def key_images(self) -> None:
        """The key image of each lesion: the annotated image it is largest on, captioned
        "Lesion N: class, side, image M", so the images that matter need no search through
        every slice. An image that is the key image of several lesions is shown once, with each
        lesion's caption; a lesion whose image is not among the analysed ones has none."""
        by_number = {image.number: image for image in self.analysis.images}
        captions: dict[int, list[str]] = {}
        for lesion in self.analysis.facts.lesions:
            number = lesion.largest.image_number
            if number in by_number:
                captions.setdefault(number, []).append(_key_caption(lesion))
        width = self.column_width()
        self.font(SMALL_PT + 0.5, bold=True)
        entries = [
            (
                by_number[number],
                [(line, True) for text in texts for line in self.wrap(self.clean(text), width)],
            )
            for number, texts in captions.items()
        ]
        # DICOM images are shown as stored, so the patient's left may be on either side: the
        # letters drawn at the edges of every image with a known plane say which.
        note = ORIENTATION_NOTE if any(_plane(image) for image, _ in entries) else None
        self.image_grid("Key images", entries, note=note)

    def column_width(self) -> float:
        """The width of one column of images, in mm."""
        return (self.pdf.epw - COLUMN_GAP * (IMAGE_COLUMNS - 1)) / IMAGE_COLUMNS

    def jpeg(self, image: ImageResult) -> bytes:
        """The image's annotated JPEG: the pipeline's, else drawn here (once per image)."""
        if image.annotated_jpeg:
            return image.annotated_jpeg
        if image.number not in self._drawn:
            self._drawn[image.number] = annotated_jpeg(
                image.slice.pixels, image.findings, plane=_plane(image)
            )
        return self._drawn[image.number]

    def images(self) -> None:
        width = self.column_width()
        entries = [(image, self.image_block_lines(image, width)) for image in self.analysis.images]
        self.image_grid("Annotated images", entries)

    def image_grid(
        self,
        title: str,
        entries: Sequence[tuple[ImageResult, list[tuple[str, bool]]]],
        note: str | None = None,
    ) -> None:
        """Images in columns, each over its (text, bold) lines, under ``title`` and ``note`` (a
        small grey line); no heading where there is no image."""
        column_width = self.column_width()
        note_size = 7.5
        self.font(note_size)
        note_lines = self.wrap(self.clean(note), self.pdf.epw) if note else []
        note_height = (LINE * note_size / BODY_PT) * len(note_lines) + (1 if note_lines else 0)
        for start in range(0, len(entries), IMAGE_COLUMNS):
            row = entries[start : start + IMAGE_COLUMNS]
            sizes = [self.image_size(image, column_width) for image, _ in row]
            text_height = max(LINE * 0.9 * len(lines) for _, lines in row)
            row_height = max(height for _, height in sizes) + 2 + text_height
            if start == 0:
                self.heading(title, keep=row_height + note_height)
                if note:
                    self.pdf.set_text_color(*GREY)
                    self.paragraph(note, size=note_size)
                    self.pdf.set_text_color(0)
                    self.pdf.ln(1)
            if self.pdf.will_page_break(row_height):
                self.pdf.add_page()
            top = self.pdf.y
            for column, ((image, lines), (width, height)) in enumerate(
                zip(row, sizes, strict=True)
            ):
                left = self.pdf.l_margin + column * (column_width + COLUMN_GAP)
                self.pdf.image(io.BytesIO(self.jpeg(image)), x=left, y=top, w=width, h=height)
                self.pdf.set_xy(left, top + height + 1)
                for text, bold in lines:
                    self.font(SMALL_PT + (0.5 if bold else 0), bold=bold)
                    self.pdf.set_x(left)
                    self.pdf.cell(column_width, LINE * 0.9, text, new_x="LEFT", new_y="NEXT")
            self.pdf.set_xy(self.pdf.l_margin, top + row_height + 3)

    def image_size(self, image: ImageResult, column_width: float) -> tuple[float, float]:
        """The printed size: the column's width for a square slice, never taller than that."""
        ratio = image.slice.height / image.slice.width if image.slice.width else 1.0
        width = column_width if ratio <= 1 else column_width / ratio
        return width, width * ratio

    def image_block_lines(self, image: ImageResult, width: float) -> list[tuple[str, bool]]:
        self.font(SMALL_PT + 0.5, bold=True)
        lines = [
            (line, True)
            for line in self.wrap(self.clean(f"Image {image.number} · {image.slice.name}"), width)
        ]
        self.font(SMALL_PT)
        if not image.findings:
            lines.append(("No detection above the threshold (indeterminate)", False))
        for item in image.findings:
            finding = item.finding
            text = f"{finding.class_name} · {finding.confidence * 100:.1f}%"
            if class_kind(finding.class_name) == "negative":
                text += " · negative finding (no tumour)"
            else:
                text += f" · {_size(item)} mm"
            lines.extend((line, False) for line in self.wrap(self.clean(text), width))
        return lines

    def disclaimer(self) -> None:
        sections = {key.upper(): value for key, value in self.analysis.report.sections.items()}
        text = sections.get("DISCLAIMER") or (
            "Automated first read for research and decision support only. It is not a diagnosis "
            "and must be reviewed by a qualified radiologist before any clinical use."
        )
        self.heading("Disclaimer")
        self.pdf.set_fill_color(*SHADE)
        self.font(BODY_PT)
        self.multi_line_box(text)
