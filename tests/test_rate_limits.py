"""Rate limits against real servers: per key and per client address in memory, 429 with
Retry-After before any body is read, and counters shared through a real redis-server."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from access import Keys, make_keys, partial_upload
from conftest import LiveServer, _free_port
from mriscribe.settings import Settings

REDIS_SERVER = shutil.which("redis-server")
REDIS_PASSWORD = "test-only-Zq81x"


def _empty_upload(server: LiveServer, key: str | None = None, **headers: str) -> httpx.Response:
    """An analysis request with no files: cheap (400 once past the checks), yet counted."""
    if key is not None:
        headers["X-API-Key"] = key
    return httpx.post(
        f"{server.url}/analyze-json",
        files=[("other", ("note.txt", b"x", "text/plain"))],
        headers=headers,
        timeout=30,
    )


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"), a="analyze", b="analyze", c="analyze")


@pytest.fixture(scope="module")
def limited(tmp_path_factory, keys: Keys) -> Iterator[LiveServer]:
    server = LiveServer(
        tmp_path_factory.mktemp("limited"),
        {
            **keys.env,
            "MRISCRIBE_RATE_LIMIT_PER_KEY": "3/minute",
            "MRISCRIBE_RATE_LIMIT_PER_ADDRESS": "5/minute",
        },
    )
    yield server
    server.stop()


def _retry_after(response: httpx.Response) -> int:
    value = int(response.headers["retry-after"])
    assert 1 <= value <= 60
    return value


def test_each_key_and_each_address_has_its_own_limit(limited, keys):
    a, b = keys.keys["a"], keys.keys["b"]
    for _ in range(3):
        assert _empty_upload(limited, a).status_code == 400  # counted, then "no files"
    over = _empty_upload(limited, a)  # the address's 4th, key a's 4th
    assert over.status_code == 429
    assert over.headers["content-type"] == "application/json"
    assert "this API key" in over.json()["error"]
    _retry_after(over)
    assert _empty_upload(limited, b).status_code == 400  # another key: the address's 5th
    crowded = _empty_upload(limited, b)  # the address's 6th
    assert crowded.status_code == 429 and "this client address" in crowded.json()["error"]
    _retry_after(crowded)
    # Failed keys count against the address too: a guesser is slowed like anyone else.
    assert _empty_upload(limited, "mrs_guess").status_code == 429
    # Another client, as a trusted proxy (loopback, the default) names it, has its own window.
    elsewhere = _empty_upload(limited, b, **{"X-Forwarded-For": "192.0.2.10"})
    assert elsewhere.status_code == 400, elsewhere.text
    # Open routes are never limited: an orchestrator's health checks go through.
    assert all(httpx.get(f"{limited.url}/health").status_code == 200 for _ in range(8))


def test_over_the_limit_is_answered_before_the_body_arrives(limited, keys):
    for _ in range(3):
        _empty_upload(limited, keys.keys["c"], **{"X-Forwarded-For": "192.0.2.20"})
    status, headers, body = partial_upload(
        limited.port, "/analyze-json", f"X-API-Key: {keys.keys['c']}",
        "X-Forwarded-For: 192.0.2.20",
    )
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert "rate limit exceeded" in json.loads(body)["error"]
    assert limited.leftovers() == []


def test_without_keys_limits_are_per_address_and_off_on_open_loopback(tmp_path: Path):
    # The prototype's local use (open, on loopback) has no limits unless asked for; a service
    # reachable beyond loopback, or one with keys, has them.
    assert not Settings().rate_limited
    assert Settings(host="0.0.0.0", allow_unauthenticated=True).rate_limited
    assert Settings(api_keys_file=tmp_path / "keys.json").rate_limited
    server = LiveServer(
        tmp_path / "open",
        {"MRISCRIBE_RATE_LIMIT_ENABLED": "true", "MRISCRIBE_RATE_LIMIT_PER_ADDRESS": "2/minute"},
    )
    try:
        assert [_empty_upload(server).status_code for _ in range(3)] == [400, 400, 429]
        over = _empty_upload(server)
        assert "this client address" in over.json()["error"]
        _retry_after(over)
    finally:
        server.stop()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real redis-server on a free loopback port, with its own config, password and folder;
    stopped after the test."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (make install-system installs it)")
    port = _free_port()
    folder = tmp_path / "redis"
    folder.mkdir()
    config = folder / "redis.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\nprotected-mode yes\nrequirepass {REDIS_PASSWORD}\n"
        f'save ""\nappendonly no\ndir {folder}\nlogfile {folder / "redis.log"}\n'
        "daemonize no\n"
    )
    process = subprocess.Popen([REDIS_SERVER, str(config)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not _answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"redis-server did not start: {(folder / 'redis.log').read_text()}")
        time.sleep(0.1)
    yield f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0", process
    process.terminate()
    process.wait(timeout=10)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(f"AUTH {REDIS_PASSWORD}\r\nPING\r\n".encode())
            reply = b""
            while b"+PONG" not in reply:
                chunk = sock.recv(100)
                if not chunk:
                    return False
                reply += chunk
            return True
    except OSError:
        return False


def test_two_replicas_share_their_counters_through_redis(tmp_path: Path, keys, redis):
    uri, process = redis
    env = {
        **keys.env,
        "MRISCRIBE_RATE_LIMIT_STORAGE_URI": uri,
        "MRISCRIBE_RATE_LIMIT_PER_KEY": "4/minute",
        "MRISCRIBE_RATE_LIMIT_PER_ADDRESS": "100/minute",
    }
    first = LiveServer(tmp_path / "one", env)
    second = LiveServer(tmp_path / "two", env)
    try:
        key = keys.keys["a"]
        for server in (first, second, first, second):
            assert _empty_upload(server, key).status_code == 400
        for server in (first, second):  # the key's 5th and 6th, whichever replica
            over = _empty_upload(server, key)
            assert over.status_code == 429 and "this API key" in over.json()["error"]
            _retry_after(over)
        # Redis gone: the replicas refuse analyses (503, Retry-After) rather than run unlimited.
        process.terminate()
        process.wait(timeout=10)
        down = _empty_upload(first, keys.keys["b"])
        assert down.status_code == 503
        assert down.json() == {"error": "the rate-limit store is unavailable; try again shortly"}
        assert int(down.headers["retry-after"]) >= 1
        assert httpx.get(f"{first.url}/health").status_code == 200
    finally:
        first.stop()
        second.stop()
    for server in (first, second):  # the store's password is never logged
        log = server.log_path.read_text()
        assert REDIS_PASSWORD not in log and uri not in log
