"""The annotated images: each analysed slice with its boxes and labels, as JPEG."""

from __future__ import annotations

from dataclasses import dataclass

from mriscribe.outputs.base import Artifact, Rendering


@dataclass(frozen=True)
class AnnotatedImages:
    name: str = "images"
    summary: str = "each image with its boxes and labels, as JPEG"
    media_type: str = "image/jpeg"
    needs_images: bool = True
    needs_dicom: bool = False

    def render(self, rendering: Rendering) -> tuple[Artifact, ...]:
        from mriscribe.render.annotate import annotated_jpeg

        images = rendering.analysis.images
        width = max(3, len(str(len(images))))
        made = []
        for image in images:
            data = image.annotated_jpeg
            if data is None:  # the pipeline was asked not to draw: draw here
                source = image.slice.source
                data = annotated_jpeg(
                    image.slice.pixels,
                    image.findings,
                    plane=source.plane if source is not None else None,
                )
            made.append(Artifact(f"image-{image.number:0{width}d}.jpg", self.media_type, data))
        return tuple(made)


OUTPUT = AnnotatedImages()
