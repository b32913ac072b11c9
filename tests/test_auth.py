"""API keys against a real `mriscribe serve` on localhost: the keys CLI, 401 / 403 before any
body is read, scopes, revocation while running, CORS, the start-up refusals, and no key
material in the log."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from access import Keys, access_record, make_keys, partial_upload
from conftest import HELDOUT, LiveServer, _free_port
from mriscribe.service.auth import check_exposure
from mriscribe.service.keys import KEY_PATTERN
from mriscribe.settings import Settings, SettingsError

ORIGIN = "https://pacs.example.org"
IMAGE = HELDOUT / "glioma_1.png"


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Keys:
    made = make_keys(tmp_path_factory.mktemp("keys"), ward="analyze", ops="admin", gone="analyze")
    made.revoke("gone")
    return made


@pytest.fixture(scope="module")
def server(tmp_path_factory, keys: Keys):
    live = LiveServer(
        tmp_path_factory.mktemp("keyed"),
        {**keys.env, "MRISCRIBE_CORS_ORIGINS": json.dumps([ORIGIN])},
    )
    yield live
    live.stop()


def _analyse(server: LiveServer, path: str = "/analyze-json", **headers: str) -> httpx.Response:
    return httpx.post(
        server.url + path,
        files=[("images", (IMAGE.name, IMAGE.read_bytes(), "image/png"))],
        headers=headers,
        timeout=60,
    )


def _wrong_token(key: str) -> str:
    """The key's public id with another 43-character token: the right form, the wrong key."""
    return f"{_key_id(key)}_{'A' * len(_token(key))}"


def _key_id(key: str) -> str:
    """"mrs_<id>" of a key "mrs_<id>_<token>" (the token may itself hold "_")."""
    return "_".join(key.split("_", 2)[:2])


def _token(key: str) -> str:
    """The secret token of a key "mrs_<id>_<token>"."""
    return key.split("_", 2)[2]


def test_the_keys_cli_stores_only_keyed_digests(tmp_path: Path):
    made = make_keys(tmp_path / "k")
    assert stat.S_IMODE(made.secret_file.stat().st_mode) == 0o600
    key = made.create("radiology-1")
    assert KEY_PATTERN.fullmatch(key)
    stored = made.key_file.read_text()
    assert key not in stored and _token(key) not in stored
    assert stat.S_IMODE(made.key_file.stat().st_mode) == 0o600
    assert json.loads(stored)["keys"][0]["hmac_sha256"]

    listing = made.cli("list", "--json")
    assert listing.returncode == 0, listing.stderr
    (entry,) = json.loads(listing.stdout)
    assert entry == {
        "id": key.split("_")[1],
        "name": "radiology-1",
        "scope": "analyze",
        "created": entry["created"],
        "revoked": None,
    }
    assert _token(key) not in listing.stdout
    assert "hmac" not in listing.stdout

    again = made.cli("create", "--name", "radiology-1")
    assert again.returncode == 2 and "an active key has it already" in again.stderr
    assert made.cli("create", "--name", "x", "--scope", "root").returncode == 2
    assert made.cli("revoke", "radiology-1").returncode == 0
    assert json.loads(made.cli("list", "--json").stdout) == []
    (revoked,) = json.loads(made.cli("list", "--all", "--json").stdout)
    assert revoked["revoked"] is not None
    unknown = made.cli("revoke", "nobody")
    assert unknown.returncode == 2 and "no active key" in unknown.stderr

    kept = made.secret_file.read_text()
    refused = run_secret(made.secret_file)
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert made.secret_file.read_text() == kept
    assert sorted(p.name for p in made.folder.iterdir()) == ["keys.json", "secret"]
    for result in (listing, again, unknown, refused):
        assert "Traceback" not in result.stderr


def run_secret(path: Path) -> subprocess.CompletedProcess:
    from conftest import run_cli

    return run_cli("keys", "secret", "--file", str(path))


@pytest.mark.parametrize("case", ["missing", "wrong", "wrong token", "revoked", "bearer wrong"])
def test_a_missing_wrong_or_revoked_key_gets_401_and_nothing_is_analysed(server, keys, case):
    headers = {
        "missing": {},
        "wrong": {"X-API-Key": "not-a-key"},
        "wrong token": {"X-API-Key": _wrong_token(keys.keys["ward"])},
        "revoked": {"X-API-Key": keys.keys["gone"]},
        "bearer wrong": {"Authorization": f"Bearer {_wrong_token(keys.keys['ops'])}"},
    }[case]
    for path in ("/analyze-json", "/analyze"):
        response = _analyse(server, path, **headers)
        assert response.status_code == 401, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.headers["www-authenticate"].startswith("Bearer")
        error = response.json()["error"]
        assert ("revoked" in error) == (case == "revoked")
        server_id = response.headers["x-server-request-id"]
        access = access_record(server, server_id)
        assert access["status"] == 401 and access["request_bytes"] == 0  # the body never read
        assert not [r for r in server.records_of(server_id) if r["msg"] == "analysed"]


def test_the_key_is_checked_before_the_body_arrives(server, keys):
    # 50 MB announced, a few bytes sent: the answer comes at once, from the headers alone.
    status, _, body = partial_upload(server.port, "/analyze-json")
    assert status == 401 and "API key is needed" in json.loads(body)["error"]
    status, _, _ = partial_upload(server.port, "/analyze", f"X-API-Key: {keys.keys['gone']}")
    assert status == 401
    assert server.leftovers() == []


def test_a_key_with_the_scope_analyses(server, keys):
    response = _analyse(server, **{"X-API-Key": keys.keys["ward"]})
    assert response.status_code == 200, response.text
    assert response.json()["detection_results"]["images"][0]["filename"] == IMAGE.name
    access = access_record(server, response.headers["x-server-request-id"])
    assert access["key_id"] == keys.keys["ward"].split("_")[1]  # the public id, for audits
    # admin implies analyze; the same key works as a bearer token.
    pdf = _analyse(server, "/analyze", Authorization=f"Bearer {keys.keys['ops']}")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")


def test_metrics_need_an_admin_key(server, keys):
    url = f"{server.url}/metrics"
    assert httpx.get(url).status_code == 401
    forbidden = httpx.get(url, headers={"X-API-Key": keys.keys["ward"]})
    assert forbidden.status_code == 403
    assert forbidden.json() == {"error": "this API key lacks the 'admin' scope"}
    scraped = httpx.get(url, headers={"Authorization": f"Bearer {keys.keys['ops']}"})
    assert scraped.status_code == 200
    assert "mriscribe_http_requests_total" in scraped.text


def test_health_the_page_and_the_docs_stay_open_and_say_nothing_secret(server, keys):
    health = httpx.get(f"{server.url}/health")
    assert health.status_code == 200 and health.json()["status"] == "healthy"
    for path in ("/", "/docs", "/openapi.json"):
        assert httpx.get(server.url + path).status_code == 200, path
    text = health.text
    for name, key in keys.keys.items():
        assert name not in text and key.split("_")[1] not in text
    assert str(keys.folder) not in text and "secret" not in text.lower()


def test_keys_made_or_revoked_while_running_count_from_the_next_request(server, keys):
    late = keys.create("late")
    assert _analyse(server, **{"X-API-Key": late}).status_code == 200
    keys.revoke("late")
    response = _analyse(server, **{"X-API-Key": late})
    assert response.status_code == 401
    assert response.json()["error"] == "the API key has been revoked"


def test_cors_answers_only_the_configured_origins(server):
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(
            f"{server.url}/analyze-json",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-api-key",
            },
        )

    allowed = preflight(ORIGIN)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "x-api-key" in allowed.headers["access-control-allow-headers"].lower()
    other = preflight("https://elsewhere.example.com")
    assert "access-control-allow-origin" not in other.headers
    # Unset, the origins are any without keys and none with them.
    assert Settings().allowed_origins == ["*"]
    assert Settings(api_keys_file=Path("k.json")).allowed_origins == []


def test_key_material_never_reaches_the_log(server, keys):
    # Every way a key can arrive, right and wrong, then the whole log of this server is read.
    for key in keys.keys.values():
        _analyse(server, **{"X-API-Key": key})
        httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {key}"})
        _analyse(server, **{"X-API-Key": _wrong_token(key)})
    log = server.log_path.read_text()
    assert log.strip()
    secret = keys.secret_file.read_text().strip()
    stored = json.loads(keys.key_file.read_text())["keys"]
    forbidden = [secret, *(k["hmac_sha256"] for k in stored)]
    for key in keys.keys.values():
        forbidden += [key, _token(key), _token(_wrong_token(key))]
    for value in forbidden:
        assert value not in log
    assert all(json.loads(line) for line in log.splitlines() if line.strip())


# Start-up: each of these must stop `mriscribe serve` before it listens, naming the setting,
# with exit code 2 and no traceback.


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, **(env or {})}
    environment.pop("MRISCRIBE_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "mriscribe", "serve", *args],
        capture_output=True,
        text=True,
        timeout=90,
        env=environment,
    )


def _refused(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)


def test_serving_beyond_loopback_without_keys_is_refused(tmp_path: Path):
    port = str(_free_port())
    _refused(_serve("--host", "0.0.0.0", "--port", port), "host", "allow_unauthenticated")
    _refused(
        _serve("--port", port, env={"MRISCRIBE_HOST": "::", "MRISCRIBE_LOG_LEVEL": "INFO"}),
        "host: :: reaches beyond this machine",
    )
    # Loopback needs no key (the prototype's local use); beyond it, keys or the explicit flag.
    check_exposure(Settings(host="127.0.0.1"))
    check_exposure(Settings(host="localhost"))
    check_exposure(Settings(host="0.0.0.0", allow_unauthenticated=True))
    check_exposure(Settings(host="0.0.0.0", api_keys_file=tmp_path / "keys.json"))
    with pytest.raises(SettingsError, match=r"^host: 192\.0\.2\.7 reaches beyond"):
        check_exposure(Settings(host="192.0.2.7"))


def test_bad_key_settings_stop_the_service(tmp_path: Path, keys):
    port = str(_free_port())
    env = keys.env
    _refused(
        _serve("--port", port, env={**env, "MRISCRIBE_API_KEY_SECRET_FILE": str(tmp_path / "no")}),
        "api_key_secret_file", "mriscribe keys secret",
    )
    _refused(
        _serve("--port", port, env={**env, "MRISCRIBE_API_KEYS_FILE": str(tmp_path / "no.json")}),
        "api_keys_file", "not found",
    )
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "mriscribe-api-keys/1", "keys": [')
    _refused(
        _serve("--port", port, env={**env, "MRISCRIBE_API_KEYS_FILE": str(broken)}),
        "api_keys_file", "bad JSON at line 1",
    )
    other = tmp_path / "other-secret"
    other.write_text("b" * 64)
    _refused(
        _serve("--port", port, env={**env, "MRISCRIBE_API_KEY_SECRET_FILE": str(other)}),
        "api_keys_file", "another server secret",
    )
    no_secret = {"MRISCRIBE_API_KEYS_FILE": env["MRISCRIBE_API_KEYS_FILE"]}
    _refused(
        _serve("--port", port, env={**no_secret, "MRISCRIBE_API_KEY_SECRET": "short"}),
        "MRISCRIBE_API_KEY_SECRET", "at least 32 characters",
    )
    _refused(
        _serve("--port", port, env={**env, "MRISCRIBE_CORS_ORIGINS": '["*"]'}), "cors_origins"
    )
    _refused(
        _serve("--port", port, "--allow-unauthenticated", env=env), "allow_unauthenticated"
    )


@pytest.mark.parametrize(
    ("variable", "value", "setting"),
    [
        ("MRISCRIBE_PORT", "five thousand", "port"),
        ("MRISCRIBE_TRUSTED_PROXIES", "10.0.0.1", "trusted_proxies"),
        ("MRISCRIBE_RATE_LIMIT_PER_KEY", "lots", "rate_limit_per_key"),
        ("MRISCRIBE_RATE_LIMIT_STORAGE_URI", "http://u:hunter2@cache", "rate_limit_storage_uri"),
        ("MRISCRIBE_ALLOW_UNAUTHENTICATED", "perhaps", "allow_unauthenticated"),
    ],
)
def test_a_malformed_environment_value_stops_the_service(variable, value, setting):
    args = [] if variable == "MRISCRIBE_PORT" else ["--port", str(_free_port())]
    result = _serve(*args, env={variable: value})
    _refused(result, setting)
    assert "hunter2" not in result.stderr  # a storage URI may hold a password


def test_a_malformed_config_file_stops_the_service(tmp_path: Path):
    config = tmp_path / "mriscribe.toml"
    port = str(_free_port())
    config.write_text('log_level = "INFO"\nrate_limit_per_address = "60/minute\n')
    _refused(_serve("--config", str(config), "--port", port), str(config),
             "line 2", "setting rate_limit_per_address")
    config.write_text('rate_limit_per_address = "sixty a minute"\n')
    _refused(_serve("--config", str(config), "--port", port), "rate_limit_per_address")
    config.write_text('api_keys_file = ["a", "b"]\n')
    _refused(_serve("--config", str(config), "--port", port), "api_keys_file")
