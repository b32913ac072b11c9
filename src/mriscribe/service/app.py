"""The HTTP routes. Analysis itself lives in mriscribe.pipeline; this file only translates."""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any, Literal

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from mriscribe import __version__
from mriscribe.analysis import Analysis
from mriscribe.outputs import (
    Artifact,
    OutputRefusedError,
    get_output,
    needs_images,
    registry,
    render,
)
from mriscribe.pipeline import InputFile, InputProblemsError, analyze
from mriscribe.render.results import results_json
from mriscribe.service.auth import KEY_HEADER, Guard
from mriscribe.service.memory import release_memory
from mriscribe.service.metrics import CONTENT_TYPE, ServiceMetrics
from mriscribe.service.middleware import RequestContextMiddleware, arrival_time
from mriscribe.service.schemas import UPLOAD_BODY, AnalyzeResult, HealthBody, error_responses
from mriscribe.service.state import ServiceState
from mriscribe.service.upload import UploadError, UploadLimits, spooled_files
from mriscribe.settings import Settings

log = logging.getLogger("mriscribe.service")

ReportChoice = Literal["chain", "template"]
REPORT_CHOICE_HELP = (
    "'template' for the deterministic report only (fastest), 'chain' for the language model's "
    "text where it passes verification in time; default: the service's setting"
)
_STATUS = {"limit": 413, "unsupported": 415, "unreadable": 400}
_PROTOTYPE_FIELDS = ("detection_results", "medical_report", "summary")
# Requests that may queue for admission, per place: the rest get 503 at once.
_WAITING_PER_PLACE = 8
Respond = Callable[[Analysis], Awaitable[Response]]


def create_app(settings: Settings, *, load_models: bool = True) -> FastAPI:
    """The service for ``settings``. Models load in the background after start-up; until they
    are ready /health and the analysis routes answer 503 with the reason.

    Raises SettingsError, naming the setting, if the API keys, their secret, the rate limits
    or the CORS origins are misconfigured."""
    state = ServiceState(settings)
    metrics = ServiceMetrics() if settings.metrics_enabled else None
    guard = Guard(settings, metrics)
    analyses = _AnalysisRoute(state, metrics)
    if settings.node_enabled:
        from mriscribe.node.node import DicomNode

        # Built now so that its settings are checked before anything listens.
        state.node = DicomNode(settings, writer=state.writer)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if load_models:
            state.start_loading()
        if guard.limits is not None and guard.limits.shared and not await guard.limits.check():
            log.error("the rate-limit store does not answer: analyses get 503 until it does")
        if state.node is not None and load_models:
            await anyio.to_thread.run_sync(state.node.start)
        try:
            yield
        finally:
            if state.node is not None and state.node.started:
                await anyio.to_thread.run_sync(state.node.stop)

    app = FastAPI(
        title="mriscribe",
        version=__version__,
        description="Brain MRI tumour detection with millimetre measurements and a first-read "
        "report, as JSON or PDF. Decision support only: every result needs a radiologist.",
        lifespan=lifespan,
        docs_url=None,  # served below from a packaged Swagger UI: no CDN, works offline
        redoc_url=None,
    )
    app.state.service = state
    if settings.allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"]
            if guard.keys is None
            else [KEY_HEADER, "Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=[
                "X-Request-ID", "X-Server-Request-ID", "Content-Disposition", "Retry-After"
            ],
        )
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.limits.max_request_bytes,
        idle_timeout_s=settings.idle_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        observe=metrics.observe_request if metrics is not None else None,
    )
    _add_error_handlers(app)
    _add_offline_docs(app)
    _document_errors_as_sent(app)
    page = _load_page()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get(
        "/health",
        summary="Service and model status",
        description="Open to all (an orchestrator's health check needs no key).",
        response_model=HealthBody,
        responses={503: {"model": HealthBody, "description": "not ready: `reason` says why"}},
    )
    async def health() -> JSONResponse:
        status = state.health()
        body = {  # the prototype's fields first, as in HealthBody
            "status": status.pop("status"),
            "models_loaded": status.pop("models_loaded"),
            "timestamp": datetime.now(UTC).isoformat(),
            "version": __version__,
            **status,
        }
        if not state.ready:
            body["reason"] = state.not_ready_reason
            return JSONResponse(body, status_code=503)
        return JSONResponse(body)

    analysis_errors = error_responses(400, 408, 413, 415, 500, 503)
    if guard.keys is not None:
        analysis_errors.update(error_responses(401, 403))
    if guard.limits is not None:
        analysis_errors.update(error_responses(429))

    @app.post(
        "/analyze",
        summary="Analyse images; returns the PDF report",
        response_class=Response,
        responses={
            200: {
                "content": {
                    "application/pdf": {
                        "schema": {"type": "string", "contentMediaType": "application/pdf"}
                    }
                },
                "description": "the PDF report, as a download",
            },
            **analysis_errors,
        },
        dependencies=guard.dependencies("analyze"),
        openapi_extra={"requestBody": UPLOAD_BODY},
    )
    async def analyze_pdf(
        request: Request,
        report_engine: Annotated[ReportChoice | None, Query(description=REPORT_CHOICE_HELP)] = None,
    ) -> Response:
        async def respond(analysis: Analysis) -> Response:
            pdf = (await run_in_threadpool(render, analysis, ["pdf"]))["pdf"][0].data
            stamp = analysis.timestamp.strftime("%Y%m%dT%H%M%SZ")
            return Response(
                pdf,
                media_type="application/pdf",
                headers={
                    "Content-Disposition": f'attachment; filename="mriscribe-report-{stamp}.pdf"'
                },
            )

        return await analyses(request, respond, render_images=True, report_engine=report_engine)

    @app.post(
        "/analyze-json",
        summary="Analyse images; returns detections and the report as JSON",
        response_model=AnalyzeResult,
        responses=analysis_errors,
        dependencies=guard.dependencies("analyze"),
        openapi_extra={"requestBody": UPLOAD_BODY},
    )
    async def analyze_json(
        request: Request,
        annotated: bool = Query(False, description="include each annotated image as a data URL"),
        pdf: bool = Query(False, description="include the PDF report, base64-encoded"),
        report_engine: Annotated[ReportChoice | None, Query(description=REPORT_CHOICE_HELP)] = None,
    ) -> Response:
        async def respond(analysis: Analysis) -> Response:
            document = (
                (await run_in_threadpool(render, analysis, ["pdf"]))["pdf"][0].data
                if pdf
                else None
            )
            body = results_json(analysis, annotated=annotated, pdf=document)
            # The prototype's fields first, as in AnalyzeResult.
            first = {key: body.pop(key) for key in _PROTOTYPE_FIELDS}
            return JSONResponse({"success": True, **first, **body})

        return await analyses(
            request, respond, render_images=annotated or pdf, report_engine=report_engine
        )

    _add_result_routes(app, guard, analyses, analysis_errors)
    if metrics is not None:
        _add_metrics(app, settings, guard, metrics, analyses)
    return app


DICOM_OUTPUTS = ("dicom-sr", "dicom-pr", "dicom-pdf")
DICOM_MULTIPART = 'multipart/related; type="application/dicom"'
FHIR_RELEASES = {"R4B": "4.3", "R5": "5.0"}


def _add_result_routes(
    app: FastAPI, guard: Guard, analyses: _AnalysisRoute, errors: dict[int | str, Any]
) -> None:
    """The standard results: DICOM (as DICOMweb answers, multipart/related) and FHIR. Both
    look their outputs up by name; an output that cannot be made from the upload (DICOM
    results from PNG slices) answers 422 saying why."""
    refused = error_responses(422)

    @app.post(
        "/analyze-dicom",
        summary="Analyse a DICOM study; returns the DICOM results",
        description="The DICOM SR (TID 1500 measurement report), the grayscale softcopy "
        "presentation state (boxes and labels on the source images) and the report as an "
        "encapsulated PDF: each a new series in the source study, marked preliminary and "
        "unverified. The answer is `multipart/related; type=\"application/dicom\"`, one "
        "Part 10 instance per part, as DICOMweb answers. Needs DICOM images of one study.",
        response_class=Response,
        responses={
            200: {
                "content": {
                    DICOM_MULTIPART: {
                        "schema": {"type": "string", "contentMediaType": DICOM_MULTIPART}
                    }
                },
                "description": "the DICOM results, one instance per part",
            },
            **errors,
            **refused,
        },
        dependencies=guard.dependencies("analyze"),
        openapi_extra={"requestBody": UPLOAD_BODY},
    )
    async def analyze_dicom(
        request: Request,
        outputs: Annotated[
            list[Literal["dicom-sr", "dicom-pr", "dicom-pdf"]] | None,
            Query(description="which DICOM results (repeat the parameter; default: all three)"),
        ] = None,
        report_engine: Annotated[ReportChoice | None, Query(description=REPORT_CHOICE_HELP)] = None,
    ) -> Response:
        names = list(dict.fromkeys(outputs or DICOM_OUTPUTS))

        async def respond(analysis: Analysis) -> Response:
            made = await _rendered(analysis, names, {})
            if isinstance(made, Response):
                return made
            return _multipart([a for name in names for a in made[name]])

        return await analyses(
            request, respond, render_images=needs_images(names), report_engine=report_engine
        )

    @app.post(
        "/analyze-fhir",
        summary="Analyse images; returns a FHIR Bundle",
        description="A Bundle with a preliminary DiagnosticReport (the PDF as its presented "
        "form) and an Observation per lesion, after the HL7 DICOM SR to FHIR mapping. Works "
        "for every image format; Patient and ImagingStudy references where the source (DICOM) "
        "has them. 422 when the images name more than one patient.",
        response_class=Response,
        responses={
            200: {
                "content": {"application/fhir+json": {"schema": {"type": "object"}}},
                "description": "the FHIR Bundle",
            },
            **errors,
            **refused,
        },
        dependencies=guard.dependencies("analyze"),
        openapi_extra={"requestBody": UPLOAD_BODY},
    )
    async def analyze_fhir(
        request: Request,
        version: Annotated[
            Literal["R4B", "R5"], Query(description="the FHIR release (default R4B)")
        ] = "R4B",
        report_engine: Annotated[ReportChoice | None, Query(description=REPORT_CHOICE_HELP)] = None,
    ) -> Response:
        async def respond(analysis: Analysis) -> Response:
            made = await _rendered(analysis, ["fhir"], {"fhir_version": version})
            if isinstance(made, Response):
                return made
            bundle = made["fhir"][0]
            # The FHIR media type names its release (FHIR's http page: fhirVersion).
            release = FHIR_RELEASES[version]
            return Response(bundle.data, media_type=f"{bundle.media_type}; fhirVersion={release}")

        return await analyses(
            request,
            respond,
            render_images=get_output("fhir").needs_images,
            report_engine=report_engine,
        )

    @app.post(
        "/analyze-outputs",
        summary="Analyse images; returns the named outputs of one analysis",
        description="Any outputs by name (`json`, `pdf`, `images`, `dicom-sr`, `dicom-pr`, "
        "`dicom-pdf`, `fhir`), made from one analysis, so the SR, the presentation state and the "
        "FHIR observations name each lesion by the same tracking UID. The answer is "
        "`multipart/mixed`, one file per part with its media type and file name.",
        response_class=Response,
        responses={
            200: {
                "content": {"multipart/mixed": {"schema": {"type": "string"}}},
                "description": "the outputs, one file per part",
            },
            **errors,
            **refused,
        },
        dependencies=guard.dependencies("analyze"),
        openapi_extra={"requestBody": UPLOAD_BODY},
    )
    async def analyze_outputs(
        request: Request,
        outputs: Annotated[
            list[str], Query(description="the outputs by name (repeat the parameter)")
        ],
        version: Annotated[
            Literal["R4B", "R5"], Query(description="the FHIR release (default R4B)")
        ] = "R4B",
        report_engine: Annotated[ReportChoice | None, Query(description=REPORT_CHOICE_HELP)] = None,
    ) -> Response:
        names = list(dict.fromkeys(outputs))
        unknown = [name for name in names if name not in registry()]
        if unknown or not names:
            return _error(
                400,
                f"invalid request: outputs: no output is called {', '.join(unknown) or '(none)'}; "
                f"known: {', '.join(registry())}",
            )

        async def respond(analysis: Analysis) -> Response:
            made = await _rendered(analysis, names, {"fhir_version": version})
            if isinstance(made, Response):
                return made
            return _multipart([a for name in names for a in made[name]], related=False)

        return await analyses(
            request, respond, render_images=needs_images(names), report_engine=report_engine
        )


async def _rendered(
    analysis: Analysis, names: list[str], options: dict[str, Any]
) -> dict[str, tuple[Artifact, ...]] | Response:
    """The named outputs, made off the event loop, or the 422 answer saying why not."""
    try:
        return await run_in_threadpool(render, analysis, names, options)
    except OutputRefusedError as exc:
        log.info("output refused", extra={"output": exc.output})
        return _error(422, str(exc))


def _multipart(artifacts: list[Artifact], *, related: bool = True) -> Response:
    """Files as one multipart body: DICOM instances as multipart/related (RFC 2387), as
    DICOMweb sends them; any outputs as multipart/mixed, each part named by its file name."""
    boundary = secrets.token_hex(16)
    parts = []
    for artifact in artifacts:
        head = f"--{boundary}\r\nContent-Type: {artifact.media_type}\r\n"
        if not related:
            head += f'Content-Disposition: attachment; filename="{artifact.name}"\r\n'
        parts.append(head.encode() + b"\r\n" + artifact.data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    kind = DICOM_MULTIPART if related else "multipart/mixed"
    return Response(body, media_type=f"{kind}; boundary={boundary}")


def _add_metrics(
    app: FastAPI,
    settings: Settings,
    guard: Guard,
    metrics: ServiceMetrics,
    analyses: _AnalysisRoute,
) -> None:
    """/metrics for Prometheus: open without keys, else for an admin key unless
    ``metrics_public``; the gauges of work in flight read the admission and analysis slots."""
    state = analyses.state
    places, slots = analyses.places, state.slots
    active, concurrent = settings.max_active_requests, settings.max_concurrent_analyses
    metrics.gauge(
        "mriscribe_requests_in_flight",
        "Analysis requests admitted: being received, waiting for a slot or analysed",
        lambda: active - places.value,
    )
    metrics.gauge(
        "mriscribe_requests_waiting",
        "Analysis requests waiting for admission",
        lambda: places.statistics().tasks_waiting,
    )
    metrics.gauge(
        "mriscribe_analyses_in_flight",
        "Analyses running (detection, report, rendering)",
        lambda: concurrent - slots.value,
    )
    metrics.gauge(
        "mriscribe_detector_loaded", "1 when the detector is loaded", lambda: float(state.ready)
    )
    metrics.gauge(
        "mriscribe_llm_loaded",
        "1 when a language model of the report chain is loaded",
        lambda: float(state.writer.engine is not None),
    )
    public = guard.keys is None or settings.metrics_public
    responses = {200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}}
    if not public:
        responses.update(error_responses(401, 403))

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        description="The text exposition format. Needs an admin key when the service has "
        "keys, unless metrics_public is set.",
        response_class=Response,
        responses=responses,
        dependencies=[] if public else guard.dependencies("admin", rate_limited=False),
    )
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)


class _AnalysisRoute:
    """What /analyze and /analyze-json share: admission, the upload, the analysis, the response.

    At most ``max_active_requests`` requests are past admission at once, from before their body
    is read until their response is ready; a few more wait up to ``admission_timeout_s``, the
    rest get 503 with Retry-After. Inside, ``state.slots`` bounds the analyses themselves.
    """

    def __init__(self, state: ServiceState, metrics: ServiceMetrics | None) -> None:
        settings = state.settings
        self.state = state
        self.metrics = metrics
        self.uploads = UploadLimits.from_settings(settings)
        self.places = anyio.Semaphore(settings.max_active_requests)
        self.max_waiting = settings.max_active_requests * _WAITING_PER_PLACE
        self.retry_after_s = max(1, math.ceil(settings.admission_timeout_s))

    async def __call__(
        self,
        request: Request,
        respond: Respond,
        *,
        render_images: bool,
        report_engine: ReportChoice | None,
    ) -> Response:
        if not self.state.ready:
            return _error(503, self.state.not_ready_reason, headers={"Retry-After": "5"})
        if not await self._admit():
            return _error(
                503,
                "the service is busy: too many uploads at once; try again shortly",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        try:
            return await self._answer(request, respond, render_images, report_engine)
        finally:
            self.places.release()
            # The study's data went with _answer's frame: give the freed memory back.
            await run_in_threadpool(release_memory)

    async def _admit(self) -> bool:
        if self.places.statistics().tasks_waiting >= self.max_waiting:
            return False
        with anyio.move_on_after(self.state.settings.admission_timeout_s):
            await self.places.acquire()
            return True
        return False

    async def _answer(
        self,
        request: Request,
        respond: Respond,
        render_images: bool,
        report_engine: ReportChoice | None,
    ) -> Response:
        """The upload, spooled, then analysed and answered; errors as JSON responses."""
        settings = self.state.settings
        # Time spent queueing and uploading counts against the report's deadline.
        deadline = arrival_time(request.scope) + settings.report_deadline_s
        try:
            async with spooled_files(request, self.uploads) as files:
                return await self._analyse(files, deadline, respond, render_images, report_engine)
        except ClientDisconnect:
            log.info("client disconnected during upload")
            return _error(400, "the upload was interrupted")
        except UploadError as exc:
            headers = {"Retry-After": str(self.retry_after_s)} if exc.status == 503 else None
            return _error(exc.status, str(exc), headers=headers)

    async def _analyse(
        self,
        files: list[InputFile],
        deadline: float,
        respond: Respond,
        render_images: bool,
        report_engine: ReportChoice | None,
    ) -> Response:
        """Analysis and answer off the event loop, inside an analysis slot: the study's slices
        are held until the answer is rendered, so the rendering counts as part of the analysis
        in the service's memory bound."""
        state = self.state
        async with state.slots:
            try:
                analysis = await run_in_threadpool(
                    analyze,
                    files,
                    state.settings,
                    detector=state.detector,
                    render_images=render_images,
                    writer=state.writer,
                    report_engine=report_engine,
                    deadline=deadline,
                )
            except InputProblemsError as exc:
                log.info("input rejected", extra={"files": len(files), "kind": exc.kind})
                if self.metrics is not None:
                    self.metrics.observe_rejected(exc.kind)
                return _error(_STATUS[exc.kind], str(exc))
            if self.metrics is not None:
                self.metrics.observe_analysis(analysis)
            log.info(
                "analysed",
                extra={
                    "files": len(files),
                    "images": analysis.facts.image_count,
                    "detections": sum(len(i.findings) for i in analysis.images),
                    "timings_ms": analysis.timings_ms,
                },
            )
            return await respond(analysis)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return _error(400, f"invalid request: {problems}")


def _document_errors_as_sent(app: FastAPI) -> None:
    """The OpenAPI document without FastAPI's automatic 422 answers: invalid parameters get
    400 with the error model here (see the handler above), and the document says so."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    answers = operation.get("responses", {})
                    if "HTTPValidationError" in str(answers.get("422", "")):
                        answers.pop("422")
            components = schema.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                components.pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_offline_docs(app: FastAPI) -> None:
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.mount(
        "/docs-assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs"
    )

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="mriscribe API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )


def _load_page() -> str:
    try:
        return resources.files("mriscribe.service.web").joinpath("index.html").read_text("utf-8")
    except (FileNotFoundError, ModuleNotFoundError):
        return "<!doctype html><title>mriscribe</title><p>The upload page is not installed.</p>"
