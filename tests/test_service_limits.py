"""The service under load and abuse on a real server: slow clients, admission, spool, memory."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from conftest import LiveServer, encode
from mriscribe.service.logs import JsonFormatter
from mriscribe.service.middleware import RequestContextMiddleware

MiB = 1024 * 1024
BOUNDARY = "mriscribe-test-boundary"


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory):
    """Short timeouts, one request admitted at a time, every upload byte spooled to disk."""
    root = tmp_path_factory.mktemp("strict")
    spool = root / "spool"
    server = LiveServer(
        root,
        {
            "MRISCRIBE_HEADER_TIMEOUT_S": "1",
            "MRISCRIBE_IDLE_TIMEOUT_S": "1.5",
            "MRISCRIBE_MAX_ACTIVE_REQUESTS": "1",
            "MRISCRIBE_ADMISSION_TIMEOUT_S": "0.5",
            "MRISCRIBE_SPOOL_DIR": str(spool),
            "MRISCRIBE_SPOOL_MEMORY_MB": "0",
            "MRISCRIBE_MAX_FILE_MB": "2",
        },
    )
    server.spool = spool
    yield server
    server.stop()


def _png() -> bytes:
    return encode(np.full((64, 64, 3), 90, np.uint8))


def _open_files_in(server: LiveServer, folder: Path) -> list[str]:
    """The server's open files in ``folder`` (spool files show as '#<inode> (deleted)')."""
    found = []
    fds = Path(f"/proc/{server.process.pid}/fd")
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


def _wait_for(condition, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _head(length: int) -> bytes:
    return (
        b"POST /analyze-json HTTP/1.1\r\nHost: x\r\n"
        + f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n".encode()
        + f"Content-Length: {length}\r\n\r\n".encode()
    )


def _part_start(name: str) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="images"; '
        f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()


def _post(url: str, files: list[tuple[str, bytes]]) -> httpx.Response:
    return httpx.post(
        f"{url}/analyze-json",
        files=[("images", (name, data, "application/octet-stream")) for name, data in files],
        timeout=60,
    )


def _read_response(sock: socket.socket, timeout: float = 15.0) -> tuple[int, dict, bytes]:
    """Status, headers and body of the response on ``sock``, read until the server closes."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines[0] else 0
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def _closed_by_server(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1024) == b""
    except (ConnectionResetError, BlockingIOError):
        return True


def test_trickling_clients_are_cut_off_at_the_header_timeout(strict_server):
    sockets = [socket.create_connection(("127.0.0.1", strict_server.port)) for _ in range(20)]
    closed: set[int] = set()
    try:
        for sock in sockets:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        deadline = time.monotonic() + 20  # generous: the timeout is 1 s
        while len(closed) < len(sockets) and time.monotonic() < deadline:
            for number, sock in enumerate(sockets):
                if number in closed:
                    continue
                try:
                    sock.send(b"a")  # a byte now and then never completes the headers
                except OSError:
                    closed.add(number)
                    continue
                if _closed_by_server(sock):
                    closed.add(number)
            time.sleep(0.2)
    finally:
        for sock in sockets:
            sock.close()
    assert len(closed) == len(sockets)
    assert httpx.get(f"{strict_server.url}/health").status_code == 200


@pytest.mark.parametrize(
    ("head", "status", "reason"),
    [
        (b"Content-Length: 12abc\r\n\r\n", 400, "bad Content-Length"),
        (b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n", 400, "conflicting Content-Length"),
        (b"X-Patient DOE_JOHN\r\n\r\n", 400, "illegal header line"),
        (b"Transfer-Encoding: gzip\r\n\r\n", 501, "Transfer-Encoding"),
        (b"X-Endless: DOE_JOHN" + b"a" * 20_000, 431, "too long"),  # the head never ends
    ],
    ids=["content-length", "two-lengths", "header-line", "transfer-encoding", "endless-head"],
)
def test_a_malformed_request_gets_a_json_error_that_quotes_nothing(
    strict_server, head, status, reason
):
    with socket.create_connection(("127.0.0.1", strict_server.port)) as sock:
        sock.sendall(b"POST /analyze-json HTTP/1.1\r\nHost: x\r\n" + head)
        answer, headers, body = _read_response(sock)
    assert answer == status
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error.startswith("invalid HTTP request: ") and reason in error
    assert b"DOE_JOHN" not in body


def test_a_body_that_stalls_gets_408_and_the_connection_closed(strict_server):
    with socket.create_connection(("127.0.0.1", strict_server.port)) as sock:
        sock.sendall(_head(100_000) + _part_start("slow.png") + b"\0" * 1000)
        status, headers, body = _read_response(sock)  # then nothing: the client stalls
    assert status == 408
    assert headers["content-type"] == "application/json"
    assert "paused" in json.loads(body)["error"]
    assert _wait_for(lambda: _open_files_in(strict_server, strict_server.spool) == [])


@contextlib.contextmanager
def _held_upload(server: LiveServer) -> Iterator[None]:
    """An upload in progress: admitted, its body still arriving a little at a time."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(_head(5 * MiB) + _part_start("held.png") + b"\0" * 100_000)
    stop = threading.Event()

    def trickle() -> None:  # often enough that the idle timeout never fires
        while not stop.wait(0.2):
            try:
                sock.sendall(b"\0" * 1000)
            except OSError:
                return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        # Admitted and spooling: the server holds its spool file (on disk: spool memory is 0).
        assert _wait_for(lambda: _open_files_in(server, server.spool) != [])
        yield
    finally:
        stop.set()
        thread.join()
        sock.close()


def test_a_request_that_cannot_be_admitted_gets_503_with_retry_after(strict_server):
    def analyse() -> httpx.Response:
        return _post(strict_server.url, [("a.png", _png())])

    with _held_upload(strict_server):
        response = analyse()
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert "busy" in response.json()["error"]
    assert int(response.headers["retry-after"]) >= 1
    # The place comes free once the held upload hangs up.
    assert _wait_for(lambda: analyse().status_code == 200)


def test_the_spool_is_empty_and_closed_after_every_kind_of_upload(strict_server):
    url = strict_server.url
    spool = strict_server.spool
    assert spool.is_dir() and (spool.stat().st_mode & 0o777) == 0o700
    assert _post(url, [("ok.png", _png()), ("ok2.png", _png())]).status_code == 200
    assert _post(url, [("text.png", b"Dear colleague" * 1000)]).status_code == 415
    oversized = _post(url, [("ok.png", _png()), ("big.png", b"\0" * (3 * MiB))])
    assert oversized.status_code == 413
    assert oversized.json()["error"].startswith("big.png: file is larger than the limit")
    with socket.create_connection(("127.0.0.1", strict_server.port)) as sock:  # hangs up
        sock.sendall(_head(MiB) + _part_start("cut.png") + b"\0" * 200_000)
        assert _wait_for(lambda: _open_files_in(strict_server, spool) != [])
    assert _wait_for(lambda: _open_files_in(strict_server, spool) == [])
    assert list(spool.iterdir()) == []
    assert strict_server.leftovers() == []


def test_a_request_id_holding_a_name_is_echoed_but_never_logged(strict_server):
    name_id = "DOE_JOHN_1961-03-07"
    response = httpx.get(f"{strict_server.url}/health", headers={"X-Request-ID": name_id})
    assert response.headers["x-request-id"] == name_id
    server_id = response.headers["x-server-request-id"]
    assert len(server_id) == 32 and server_id != name_id
    assert _wait_for(lambda: strict_server.records_of(server_id) != [])
    assert [r["msg"] for r in strict_server.records_of(server_id)] == ["request"]
    assert "DOE_JOHN" not in strict_server.log_path.read_text()


@pytest.mark.parametrize(
    ("raw", "marker"),
    [
        (b"ZQbidi\xe2\x80\xaeevil", "ZQbidi"),
        (b"ZQ space", "ZQ space"),
        (b"ZQ" + b"x" * 63, "ZQxxxx"),
        (b"ZQcaf\xc3\xa9", "ZQcaf"),
        (b"ZQ/../x", "ZQ/"),
    ],
    ids=["bidi", "space", "too-long", "non-ascii", "slash"],
)
def test_an_unsafe_request_id_is_replaced(strict_server, raw, marker):
    with socket.create_connection(("127.0.0.1", strict_server.port)) as sock:
        sock.sendall(
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Request-ID: "
            + raw
            + b"\r\n\r\n"
        )
        status, headers, _ = _read_response(sock)
    assert status == 200
    echoed = headers["x-request-id"]
    assert len(echoed) == 32 and all(c in "0123456789abcdef" for c in echoed)
    assert marker not in strict_server.log_path.read_text()


def _body_parts(files: int, file_bytes: int, block: bytes) -> tuple[int, Iterator[bytes]]:
    """A multipart body of ``files`` files of filler bytes, generated as it is sent."""
    head = [_part_start(f"filler-{n}.bin") for n in range(files)]
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    length = sum(len(h) for h in head) + files * (file_bytes + 2) + len(tail) - 2

    def chunks() -> Iterator[bytes]:
        for number, start in enumerate(head):
            yield (b"\r\n" if number else b"") + start
            for _ in range(file_bytes // len(block)):
                yield block
        yield tail

    return length, chunks()


def _memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def test_memory_stays_bounded_under_concurrent_large_uploads(tmp_path):
    """Eight 64 MB uploads at once (8 files of 8 MB each, no known format: 415): with 1 MB of
    spool memory a request, the bodies must not sit in the server's memory."""
    requests, files, file_bytes = 8, 8, 8 * MiB
    server = LiveServer(
        tmp_path,
        {
            "MRISCRIBE_SPOOL_MEMORY_MB": "1",
            "MRISCRIBE_MAX_ACTIVE_REQUESTS": "4",
            "MRISCRIBE_ADMISSION_TIMEOUT_S": "300",  # all eight are read, four at a time
        },
    )
    try:
        assert _post(server.url, [("warm.png", _png())]).status_code == 200
        Path(f"/proc/{server.process.pid}/clear_refs").write_text("5")  # peak := now
        before = _memory_kb(server.process.pid)
        block = bytes(range(256)) * 4096  # 1 MB that is no image format

        def upload(_: int) -> int:
            length, chunks = _body_parts(files, file_bytes, block)
            response = httpx.post(
                f"{server.url}/analyze-json",
                content=chunks,
                headers={
                    "content-type": f"multipart/form-data; boundary={BOUNDARY}",
                    "content-length": str(length),
                },
                timeout=300,
            )
            return response.status_code

        with ThreadPoolExecutor(requests) as pool:
            statuses = list(pool.map(upload, range(requests)))
        after = _memory_kb(server.process.pid)
    finally:
        server.stop()
    assert statuses == [415] * requests
    peak_growth_mb = (after["VmHWM"] - before["VmRSS"]) / 1024
    body_mb = files * file_bytes / MiB
    # What may be in memory: 1 MB of spool per admitted request, and the file each of the two
    # analyses is reading (a few copies while it is sniffed), plus allocator slack.
    bound_mb = 4 * 1 + 2 * 3 * file_bytes / MiB + 64
    assert peak_growth_mb < bound_mb < requests * body_mb / 3, (before, after)


class _Collect(logging.Handler):
    """Log lines as the service writes them (JSON, formatted while the request id is set)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def test_an_internal_error_gives_the_request_id_the_log_carries():
    patient = "DOE" + "^JANE"  # so that no source line shown in the frames holds the value

    async def broken(scope, receive, send):
        raise RuntimeError(f"could not read {patient}")

    collect = _Collect()
    logger = logging.getLogger("mriscribe.access")
    logger.addHandler(collect)
    try:
        client = TestClient(RequestContextMiddleware(broken, max_body_bytes=1000))
        response = client.get("/", headers={"X-Request-ID": "client-7"})
    finally:
        logger.removeHandler(collect)
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "client-7"
    failure = next(line for line in collect.lines if line["msg"] == "unexpected failure")
    assert response.json()["error"] == (
        f"internal error: logged with request id {failure['request_id']}"
    )
    assert "DOE^JANE" not in json.dumps(collect.lines)


def test_a_body_trickled_past_the_body_timeout_gets_408(tmp_path):
    """Bytes that keep coming, never pausing long enough for the idle timeout, still cannot
    hold an admission place for longer than the body timeout."""
    server = LiveServer(
        tmp_path, {"MRISCRIBE_BODY_TIMEOUT_S": "1.5", "MRISCRIBE_IDLE_TIMEOUT_S": "1"}
    )
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(_head(MiB) + _part_start("slow.png"))
            sent_for = time.monotonic() + 10
            with contextlib.suppress(OSError):  # the server closes the connection
                while time.monotonic() < sent_for:
                    sock.sendall(b"\0" * 100)
                    if select.select([sock], [], [], 0.3)[0]:
                        break
            status, headers, body = _read_response(sock)
        assert status == 408
        assert headers["content-type"] == "application/json"
        assert "took more than 1.5 s to arrive" in json.loads(body)["error"]
        assert _post(server.url, [("ok.png", _png())]).status_code == 200
    finally:
        server.stop()
