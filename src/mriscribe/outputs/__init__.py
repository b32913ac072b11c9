"""Outputs: every form a result leaves in, one module each, looked up by name.

Each module of this package that defines ``OUTPUT`` (see :mod:`mriscribe.outputs.base`) is an
output; the routes and the CLI find them here by name, so adding an output is adding a file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from mriscribe.outputs.base import Artifact, Output, OutputRefusedError, Rendering

if TYPE_CHECKING:
    from mriscribe.analysis import Analysis

__all__ = [
    "Artifact",
    "Output",
    "OutputRefusedError",
    "Rendering",
    "get_output",
    "registry",
    "render",
]


@cache
def registry() -> Mapping[str, Output]:
    """Every output by name: the modules of this package that define ``OUTPUT``."""
    found: dict[str, Output] = {}
    for module in pkgutil.iter_modules(__path__):
        loaded = importlib.import_module(f"{__name__}.{module.name}")
        output = getattr(loaded, "OUTPUT", None)
        if output is not None:
            if output.name in found:
                raise RuntimeError(f"two outputs are named {output.name!r}")
            found[output.name] = output
    return dict(sorted(found.items()))


def get_output(name: str) -> Output:
    """The output called ``name`` (KeyError naming the known ones if there is none)."""
    outputs = registry()
    if name not in outputs:
        raise KeyError(f"no output is called {name!r}; known: {', '.join(outputs)}")
    return outputs[name]


def needs_images(names: Iterable[str]) -> bool:
    """Whether any of these outputs needs the annotated images drawn by the pipeline."""
    return any(get_output(name).needs_images for name in names)


def render(
    analysis: Analysis, names: Sequence[str], options: Mapping[str, Any] | None = None
) -> dict[str, tuple[Artifact, ...]]:
    """The named outputs of one analysis, made in one rendering (shared UIDs, the PDF made
    once). OutputRefusedError names the first output that cannot be made."""
    rendering = Rendering(analysis, options=dict(options or {}))
    return {name: rendering.artifacts(name) for name in names}
