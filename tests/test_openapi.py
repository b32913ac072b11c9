"""The contract in the OpenAPI document: the prototype's fields must stay in the schemas, every
JSON answer has a model, every error the one error model, the multipart body is described, the
API key scheme is shown when keys are on, and real answers fit the schemas."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from access import make_keys
from conftest import HELDOUT
from mriscribe.service.app import create_app
from mriscribe.settings import Settings

# The prototype's fields, as its users' scripts read them. Removing any of these from the
# schema breaks the contract: the test fails. (Paths through objects; [] steps into a list.)
PROTOTYPE_ANALYZE_JSON = [
    "success",
    "detection_results",
    "detection_results.timestamp",
    "detection_results.images",
    "detection_results.images[].filename",
    "detection_results.images[].detections",
    "detection_results.images[].detections[].class",
    "detection_results.images[].detections[].confidence",
    "detection_results.images[].detections[].bbox",
    *(f"detection_results.images[].detections[].bbox.{k}" for k in
      ("x1", "y1", "x2", "y2", "width", "height")),
    "medical_report",
    "summary",
    "summary.total_images",
    "summary.total_detections",
]
PROTOTYPE_HEALTH = ["status", "models_loaded", "models_loaded.yolo", "models_loaded.llm",
                    "timestamp"]
# mriscribe's own fields, after the prototype's.
OURS_ANALYZE_JSON = [
    "detection_results.images[].detections[].size_mm.width_mm",
    "detection_results.images[].detections[].size_mm.spacing_source",
    "detection_results.images[].detections[].size_mm.estimated",
    "detection_results.images[].pixel_spacing_mm",
    "summary.tumour_detections",
    "summary.classes_detected",
    "report.engine",
    "report.fallback_reason",
    "report.sections",
    "model.name",
    "timings_ms",
]
ERROR_CODES = {"400", "408", "413", "415", "500", "503"}


def _resolve(document: dict, schema: dict) -> dict:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = document["components"]["schemas"][name]
    for option in schema.get("anyOf", []):  # X | None: the X
        if option.get("type") != "null":
            return _resolve(document, option)
    return schema


def _field(document: dict, schema: dict, path: str) -> dict:
    """The schema of ``path`` inside ``schema``; fails naming the first missing step."""
    for step in path.split("."):
        is_list = step.endswith("[]")
        name = step.removesuffix("[]")
        schema = _resolve(document, schema)
        assert name in schema.get("properties", {}), f"{path}: no '{name}' in the schema"
        schema = _resolve(document, schema["properties"][name])
        if is_list:
            assert schema.get("type") == "array", f"{path}: '{name}' is not an array"
            schema = schema["items"]
    return _resolve(document, schema)


def _answer_schema(document: dict, path: str, method: str, status: str) -> dict:
    responses = document["paths"][path][method]["responses"]
    return responses[status]["content"]["application/json"]["schema"]


def _conforms(document: dict, value: Any, schema: dict, where: str = "$") -> None:
    """Every key of ``value`` is declared, every required one present, recursively: the
    document describes what the service sends."""
    schema = _resolve(document, schema)
    if isinstance(value, dict) and "properties" in schema:
        properties = schema["properties"]
        undeclared = set(value) - set(properties)
        assert not undeclared, f"{where}: sent but not in the schema: {sorted(undeclared)}"
        missing = set(schema.get("required", [])) - set(value)
        assert not missing, f"{where}: required but not sent: {sorted(missing)}"
        for key, item in value.items():
            _conforms(document, item, properties[key], f"{where}.{key}")
    elif isinstance(value, list) and schema.get("type") == "array":
        for index, item in enumerate(value):
            _conforms(document, item, schema["items"], f"{where}[{index}]")


@pytest.fixture(scope="module")
def document() -> dict:
    return create_app(Settings(), load_models=False).openapi()


@pytest.fixture(scope="module")
def keyed_document(tmp_path_factory) -> dict:
    keys = make_keys(tmp_path_factory.mktemp("keys"), someone="analyze")
    settings = Settings(api_keys_file=keys.key_file, api_key_secret_file=keys.secret_file)
    return create_app(settings, load_models=False).openapi()


@pytest.mark.parametrize("field", PROTOTYPE_ANALYZE_JSON + OURS_ANALYZE_JSON)
def test_the_analyze_json_schema_keeps_every_field(document, field):
    _field(document, _answer_schema(document, "/analyze-json", "post", "200"), field)


@pytest.mark.parametrize("field", PROTOTYPE_HEALTH)
def test_the_health_schema_keeps_the_prototype_fields(document, field):
    for status in ("200", "503"):
        _field(document, _answer_schema(document, "/health", "get", status), field)


def test_the_prototype_fields_come_first(document):
    answer = _resolve(document, _answer_schema(document, "/analyze-json", "post", "200"))
    assert list(answer["properties"])[:4] == [
        "success", "detection_results", "medical_report", "summary"
    ]
    detection = _field(document, answer, "detection_results.images[].detections[]")
    assert list(detection["properties"])[:3] == ["class", "confidence", "bbox"]
    image = _field(document, answer, "detection_results.images[]")
    assert list(image["properties"])[:2] == ["filename", "detections"]
    summary = _field(document, answer, "summary")
    assert list(summary["properties"])[:2] == ["total_images", "total_detections"]
    health = _resolve(document, _answer_schema(document, "/health", "get", "200"))
    assert list(health["properties"])[:3] == ["status", "models_loaded", "timestamp"]


def test_the_upload_is_described_as_multipart_images(document):
    for path in ("/analyze", "/analyze-json"):
        body = document["paths"][path]["post"]["requestBody"]
        assert body["required"] is True
        schema = body["content"]["multipart/form-data"]["schema"]
        assert schema["required"] == ["images"]
        images = schema["properties"]["images"]
        assert images["type"] == "array"
        assert images["items"] == {
            "type": "string", "contentMediaType": "application/octet-stream"
        }
    pdf = document["paths"]["/analyze"]["post"]["responses"]["200"]["content"]
    assert list(pdf) == ["application/pdf"]


def test_every_error_has_the_one_error_model(document, keyed_document):
    error = {"$ref": "#/components/schemas/ErrorBody"}
    assert document["components"]["schemas"]["ErrorBody"]["required"] == ["error"]
    for doc, extra in ((document, set()), (keyed_document, {"401", "403", "429"})):
        for path in ("/analyze", "/analyze-json", "/analyze-dicom", "/analyze-fhir"):
            responses = doc["paths"][path]["post"]["responses"]
            # 422: a result that cannot be made from the images (DICOM results from PNG).
            refused = {"422"} if path in ("/analyze-dicom", "/analyze-fhir") else set()
            assert set(responses) == {"200"} | ERROR_CODES | extra | refused, path
            for code in ERROR_CODES | extra | refused:
                assert responses[code]["content"]["application/json"]["schema"] == error
        for path in doc["paths"].values():
            for operation in path.values():  # invalid parameters get 400, not FastAPI's 422
                assert "HTTPValidationError" not in json.dumps(operation["responses"])
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_the_api_key_scheme_is_shown_when_keys_are_on(document, keyed_document):
    schemes = keyed_document["components"]["securitySchemes"]
    assert schemes["APIKey"] == {
        **schemes["APIKey"], "type": "apiKey", "in": "header", "name": "X-API-Key"
    }
    assert schemes["Bearer"]["scheme"] == "bearer"
    for path in ("/analyze", "/analyze-json", "/metrics"):
        operation = next(iter(keyed_document["paths"][path].values()))
        assert operation["security"] == [{"APIKey": []}, {"Bearer": []}], path
    assert "security" not in keyed_document["paths"]["/health"]["get"]
    # Without keys (loopback, the prototype's use) nothing asks for one.
    assert "securitySchemes" not in document.get("components", {})


def test_the_served_document_and_real_answers_fit_the_schemas(live_server, document):
    served = httpx.get(f"{live_server}/openapi.json").json()
    assert served == document
    image = HELDOUT / "glioma_1.png"
    answer = httpx.post(
        f"{live_server}/analyze-json?annotated=true&pdf=true",
        files=[("images", (image.name, image.read_bytes(), "image/png"))],
        timeout=60,
    )
    assert answer.status_code == 200
    assert answer.json()["success"] is True
    first = ["success", "detection_results", "medical_report", "summary"]
    assert list(answer.json())[:4] == first  # as sent, too
    _conforms(document, answer.json(), _answer_schema(document, "/analyze-json", "post", "200"))
    health = httpx.get(f"{live_server}/health")
    _conforms(document, health.json(), _answer_schema(document, "/health", "get", "200"))
    assert list(health.json())[:3] == ["status", "models_loaded", "timestamp"]
    bad = httpx.post(f"{live_server}/analyze-json?report_engine=poetry", timeout=30)
    assert bad.status_code == 400
    _conforms(document, bad.json(), _answer_schema(document, "/analyze-json", "post", "400"))
