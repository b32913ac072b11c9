"""The JSON results: detections, lesions, series and the report (render/results.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from mriscribe.outputs.base import Artifact, Rendering


@dataclass(frozen=True)
class JsonResults:
    name: str = "json"
    summary: str = "detections, lesions, series and the report as JSON"
    media_type: str = "application/json"
    needs_images: bool = False
    needs_dicom: bool = False

    def render(self, rendering: Rendering) -> tuple[Artifact, ...]:
        from mriscribe.render.results import results_json

        body = results_json(rendering.analysis)
        text = json.dumps(body, indent=2, ensure_ascii=False) + "\n"
        return (Artifact("results.json", self.media_type, text.encode()),)


OUTPUT = JsonResults()
