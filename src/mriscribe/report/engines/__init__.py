"""Report engines: one module per engine, each an optional extra.

Each module declares the packages it needs (``DEPENDENCIES``) and the extra that installs them
(``EXTRA``), and has ``load(spec, warm_prefix=...)``. Nothing heavy is imported until an engine
is loaded, so ``available()`` can say exactly what is missing without importing torch.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from mriscribe.report.engines.base import (
    Constraint,
    DeadlineExceededError,
    EngineLoadError,
    Generation,
    GenerationError,
    ModelTurn,
    Prompt,
    ReportEngine,
    generate_all,
)
from mriscribe.settings import LanguageModel

ENGINES = {
    "llama-cpp": "mriscribe.report.engines.llama_cpp",
    "transformers": "mriscribe.report.engines.transformers",
    "openai": "mriscribe.report.engines.openai",
}

__all__ = [
    "ENGINES",
    "Constraint",
    "DeadlineExceededError",
    "EngineLoadError",
    "Generation",
    "GenerationError",
    "ModelTurn",
    "Prompt",
    "ReportEngine",
    "engine_module",
    "generate_all",
    "load_engine",
    "missing_packages",
]


def engine_module(engine: str) -> ModuleType:
    if engine not in ENGINES:
        raise EngineLoadError(f"unknown report engine '{engine}' (one of {', '.join(ENGINES)})")
    return importlib.import_module(ENGINES[engine])


def missing_packages(engine: str) -> list[str]:
    """The packages ``engine`` needs that are not installed ([] when it can be loaded)."""
    module = engine_module(engine)
    return [name for name in module.DEPENDENCIES if importlib.util.find_spec(name) is None]


def load_engine(spec: LanguageModel, *, warm_prefix: str = "") -> ReportEngine:
    """Load one link of the chain; EngineLoadError names what is missing or wrong."""
    module = engine_module(spec.engine)
    missing = missing_packages(spec.engine)
    if missing:
        raise EngineLoadError(
            f"{spec.engine} needs {', '.join(missing)}: pip install 'mriscribe[{module.EXTRA}]'"
        )
    engine: ReportEngine = module.load(spec, warm_prefix=warm_prefix)
    return engine
