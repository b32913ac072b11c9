"""The HTTP routes. Analysis itself lives in mriscribe.pipeline; this file only translates."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Literal

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from mriscribe import __version__
from mriscribe.analysis import Analysis
from mriscribe.pipeline import InputFile, InputProblemsError, analyze
from mriscribe.render.pdf import render_pdf
from mriscribe.render.results import results_json
from mriscribe.service.memory import release_memory
from mriscribe.service.middleware import RequestContextMiddleware, arrival_time
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
# Requests that may queue for admission, per place: the rest get 503 at once.
_WAITING_PER_PLACE = 8
Respond = Callable[[Analysis], Awaitable[Response]]


def create_app(settings: Settings, *, load_models: bool = True) -> FastAPI:
    """The service for ``settings``. Models load in the background after start-up; until they
    are ready /health and the analysis routes answer 503 with the reason."""
    state = ServiceState(settings)
    analyses = _AnalysisRoute(state)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if load_models:
            state.start_loading()
        yield

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
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=["X-Request-ID", "X-Server-Request-ID", "Content-Disposition"],
    )
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.limits.max_request_bytes,
        idle_timeout_s=settings.idle_timeout_s,
        body_timeout_s=settings.body_timeout_s,
    )
    _add_error_handlers(app)
    _add_offline_docs(app)
    page = _load_page()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health", summary="Service and model status")
    async def health() -> JSONResponse:
        body = state.health()
        body["timestamp"] = datetime.now(UTC).isoformat()
        body["version"] = __version__
        if not state.ready:
            body["reason"] = state.not_ready_reason
            return JSONResponse(body, status_code=503)
        return JSONResponse(body)

    @app.post(
        "/analyze",
        summary="Analyse images; returns the PDF report",
        response_class=Response,
        responses={200: {"content": {"application/pdf": {}}}},
    )
    async def analyze_pdf(
        request: Request,
        report_engine: Annotated[ReportChoice | None, Query(description=REPORT_CHOICE_HELP)] = None,
    ) -> Response:
        async def respond(analysis: Analysis) -> Response:
            pdf = await run_in_threadpool(render_pdf, analysis)
            stamp = analysis.timestamp.strftime("%Y%m%dT%H%M%SZ")
            return Response(
                pdf,
                media_type="application/pdf",
                headers={
                    "Content-Disposition": f'attachment; filename="mriscribe-report-{stamp}.pdf"'
                },
            )

        return await analyses(request, respond, render_images=True, report_engine=report_engine)

    @app.post("/analyze-json", summary="Analyse images; returns detections and the report as JSON")
    async def analyze_json(
        request: Request,
        annotated: bool = Query(False, description="include each annotated image as a data URL"),
        pdf: bool = Query(False, description="include the PDF report, base64-encoded"),
        report_engine: Annotated[ReportChoice | None, Query(description=REPORT_CHOICE_HELP)] = None,
    ) -> Response:
        async def respond(analysis: Analysis) -> Response:
            document = await run_in_threadpool(render_pdf, analysis) if pdf else None
            return JSONResponse(results_json(analysis, annotated=annotated, pdf=document))

        return await analyses(
            request, respond, render_images=annotated or pdf, report_engine=report_engine
        )

    return app


class _AnalysisRoute:
    """What /analyze and /analyze-json share: admission, the upload, the analysis, the response.

    At most ``max_active_requests`` requests are past admission at once, from before their body
    is read until their response is ready; a few more wait up to ``admission_timeout_s``, the
    rest get 503 with Retry-After. Inside, ``state.slots`` bounds the analyses themselves.
    """

    def __init__(self, state: ServiceState) -> None:
        settings = state.settings
        self.state = state
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
                return _error(_STATUS[exc.kind], str(exc))
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
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return _error(400, f"invalid request: {problems}")


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
