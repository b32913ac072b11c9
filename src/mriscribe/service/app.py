"""The HTTP routes. Analysis itself lives in mriscribe.pipeline; this file only translates."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from mriscribe import __version__
from mriscribe.analysis import Analysis
from mriscribe.errors import LimitError, MriscribeError
from mriscribe.pipeline import InputFile, InputProblemsError, analyze, safe_name
from mriscribe.render.pdf import render_pdf
from mriscribe.render.results import results_json
from mriscribe.service.middleware import RequestContextMiddleware
from mriscribe.service.state import ServiceState
from mriscribe.settings import Settings

log = logging.getLogger("mriscribe.service")

FIELD = "images"  # the prototype's multipart field name
ReportChoice = Literal["chain", "template"]
REPORT_CHOICE_HELP = (
    "'template' for the deterministic report only (fastest), 'chain' for the language model's "
    "text where it passes verification in time; default: the service's setting"
)
_STATUS = {"limit": 413, "unsupported": 415, "unreadable": 400}


def create_app(settings: Settings, *, load_models: bool = True) -> FastAPI:
    """The service for ``settings``. Models load in the background after start-up; until they
    are ready /health and the analysis routes answer 503 with the reason."""
    state = ServiceState(settings)

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
        expose_headers=["X-Request-ID", "Content-Disposition"],
    )
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.limits.max_request_bytes)
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
        analysis = await _run(request, state, render_images=True, report_engine=report_engine)
        if isinstance(analysis, JSONResponse):
            return analysis
        pdf = await run_in_threadpool(render_pdf, analysis)
        stamp = analysis.timestamp.strftime("%Y%m%dT%H%M%SZ")
        return Response(
            pdf,
            media_type="application/pdf",
            headers={"Content-Disposition": f'attachment; filename="mriscribe-report-{stamp}.pdf"'},
        )

    @app.post("/analyze-json", summary="Analyse images; returns detections and the report as JSON")
    async def analyze_json(
        request: Request,
        annotated: bool = Query(False, description="include each annotated image as a data URL"),
        pdf: bool = Query(False, description="include the PDF report, base64-encoded"),
        report_engine: Annotated[ReportChoice | None, Query(description=REPORT_CHOICE_HELP)] = None,
    ) -> JSONResponse:
        analysis = await _run(
            request, state, render_images=annotated or pdf, report_engine=report_engine
        )
        if isinstance(analysis, JSONResponse):
            return analysis
        document = await run_in_threadpool(render_pdf, analysis) if pdf else None
        return JSONResponse(results_json(analysis, annotated=annotated, pdf=document))

    return app


async def _run(
    request: Request,
    state: ServiceState,
    *,
    render_images: bool,
    report_engine: ReportChoice | None = None,
) -> Analysis | JSONResponse:
    """Read the upload and analyse it off the event loop; errors come back as JSON responses."""
    if not state.ready:
        return _error(503, state.not_ready_reason)
    settings = state.settings
    limits = settings.limits
    try:
        files = await _read_upload(request, limits.max_images, limits.max_file_bytes)
    except ClientDisconnect:
        log.info("client disconnected during upload")
        return _error(400, "the upload was interrupted")
    except MriscribeError as exc:
        return _error(413 if isinstance(exc, LimitError) else 400, str(exc))
    try:
        async with state.slots:
            analysis = await run_in_threadpool(
                analyze,
                files,
                settings,
                detector=state.detector,
                render_images=render_images,
                writer=state.writer,
                report_engine=report_engine,
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
    return analysis


async def _read_upload(request: Request, max_images: int, max_file_bytes: int) -> list[InputFile]:
    content_type = request.headers.get("content-type", "").lower()
    if not content_type.startswith("multipart/form-data"):
        raise MriscribeError(f"send the images as multipart/form-data in the field '{FIELD}'")
    try:
        form = await request.form(max_files=max_images + 1, max_fields=100)
    except StarletteHTTPException as exc:  # starlette's own limits and malformed bodies
        if "Too many files" in str(exc.detail):
            raise LimitError("request", f"more than the limit of {max_images} files") from None
        raise MriscribeError(f"the upload could not be read: {exc.detail}") from None
    try:
        uploads = [item for item in form.getlist(FIELD) if isinstance(item, UploadFile)]
        if not uploads:
            raise MriscribeError(f"no image files were sent in the multipart field '{FIELD}'")
        if len(uploads) > max_images:
            raise LimitError("request", f"more than the limit of {max_images} files")
        files: list[InputFile] = []
        for number, upload in enumerate(uploads, start=1):
            name = safe_name(upload.filename, number)
            if upload.size is not None and upload.size > max_file_bytes:
                raise LimitError(
                    name,
                    f"file is {upload.size:,} bytes, more than the limit of {max_file_bytes:,}",
                )
            files.append(InputFile(name, await upload.read()))
        return files
    finally:
        await form.close()  # spooled uploads go away now, whatever happened


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


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
