"""The PDF report: summary, lesions, the report's text, key images (render/pdf.py)."""

from __future__ import annotations

from dataclasses import dataclass

from mriscribe.outputs.base import Artifact, Rendering


@dataclass(frozen=True)
class PdfReport:
    name: str = "pdf"
    summary: str = "the report as a PDF with the annotated images"
    media_type: str = "application/pdf"
    needs_images: bool = True
    needs_dicom: bool = False

    def render(self, rendering: Rendering) -> tuple[Artifact, ...]:
        from mriscribe.render.pdf import render_pdf

        return (Artifact("report.pdf", self.media_type, render_pdf(rendering.analysis)),)


OUTPUT = PdfReport()
