"""Prometheus metrics of one service instance, in a registry of its own: requests by route
template and status, analysis stage timings, reports by engine, images, work in flight.

Labels hold only bounded, non-identifying values (route templates, methods, status codes,
stage and engine names): never a file name, a raw path, a request id, a key or its name.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)

from mriscribe import __version__
from mriscribe.analysis import Analysis

CONTENT_TYPE = CONTENT_TYPE_LATEST
OTHER_ROUTE = "(other)"
STAGES = ("decode", "detect", "measure", "report", "annotate", "total")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def route_of(scope: MutableMapping[str, Any]) -> str:
    """The route template a request matched (``/analyze-json``, or a mount's prefix such as
    ``/docs-assets``), never the raw path (a client's text): ``(other)`` when none matched."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str) and path:
        return path
    # A mount sets no route; it extends root_path by its own prefix.
    mount = str(scope.get("root_path", ""))[len(str(scope.get("app_root_path", ""))) :]
    return mount or OTHER_ROUTE


class ServiceMetrics:
    """The metrics of one app instance; ``render()`` gives the /metrics body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        labels = ("route", "method", "status")
        self.requests = Counter(
            "mriscribe_http_requests",
            "HTTP requests answered, by route template, method and status code",
            labels,
            registry=registry,
        )
        self.durations = Histogram(
            "mriscribe_http_request_duration_seconds",
            "Time from a request's arrival to its answer, by route template, method and status",
            labels,
            buckets=_REQUEST_BUCKETS,
            registry=registry,
        )
        self.stages = Histogram(
            "mriscribe_analysis_stage_seconds",
            "Time spent in each stage of an analysis (total: the whole analysis)",
            ("stage",),
            buckets=_STAGE_BUCKETS,
            registry=registry,
        )
        self.analyses = Counter(
            "mriscribe_analyses",
            "Analyses, by outcome: ok, or limit / unsupported / unreadable input",
            ("outcome",),
            registry=registry,
        )
        self.images = Counter(
            "mriscribe_images_analysed", "Images (slices) analysed", registry=registry
        )
        self.reports = Counter(
            "mriscribe_reports",
            "Reports written, by engine kind and whether the template stood in for the model",
            ("engine", "fallback"),
            registry=registry,
        )
        self.refusals = Counter(
            "mriscribe_access_refusals",
            "Requests refused before their body was read, by reason",
            ("reason",),
            registry=registry,
        )
        Info("mriscribe", "The service's version", registry=registry).info(
            {"version": __version__}
        )
        ProcessCollector(registry=registry)

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge read at each scrape (work in flight, models loaded)."""
        Gauge(name, documentation, registry=self.registry).set_function(read)

    def observe_request(
        self, scope: MutableMapping[str, Any], status: int, seconds: float
    ) -> None:
        method = str(scope.get("method", ""))
        labels = (route_of(scope), method if method in _METHODS else "OTHER", str(status))
        self.requests.labels(*labels).inc()
        self.durations.labels(*labels).observe(seconds)

    def observe_analysis(self, analysis: Analysis) -> None:
        for stage in STAGES:
            ms = analysis.timings_ms.get(stage)
            if ms is not None:
                self.stages.labels(stage).observe(ms / 1000.0)
        self.analyses.labels("ok").inc()
        self.images.inc(len(analysis.images))
        report = analysis.report
        engine = report.engine.split(":", 1)[0]  # the kind, never a model's file name
        fallback = "true" if report.fallback_reason is not None else "false"
        self.reports.labels(engine, fallback).inc()

    def observe_rejected(self, kind: str) -> None:
        self.analyses.labels(kind).inc()

    def observe_refusal(self, reason: str) -> None:
        self.refusals.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
