"""Helpers of the access tests (keys, limits, metrics): keys made with the real CLI, and raw
requests whose body never finishes arriving."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from conftest import LiveServer, run_cli

BOUNDARY = "mriscribe-access-test"


@dataclass
class Keys:
    """A server secret and a key file made by `mriscribe keys`, and the keys it printed."""

    folder: Path
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def secret_file(self) -> Path:
        return self.folder / "secret"

    @property
    def key_file(self) -> Path:
        return self.folder / "keys.json"

    @property
    def env(self) -> dict[str, str]:
        return {
            "MRISCRIBE_API_KEYS_FILE": str(self.key_file),
            "MRISCRIBE_API_KEY_SECRET_FILE": str(self.secret_file),
        }

    def cli(self, *args: str):
        return run_cli("keys", *args, env=self.env)

    def create(self, name: str, scope: str = "analyze") -> str:
        result = self.cli("create", "--name", name, "--scope", scope)
        assert result.returncode == 0, result.stderr
        self.keys[name] = result.stdout.strip()
        return self.keys[name]

    def revoke(self, name: str) -> None:
        result = self.cli("revoke", name)
        assert result.returncode == 0, result.stderr


def make_keys(folder: Path, **scopes: str) -> Keys:
    """A new secret, then one key per ``name=scope``."""
    folder.mkdir(parents=True, exist_ok=True)
    made = Keys(folder)
    result = run_cli("keys", "secret", "--file", str(made.secret_file))
    assert result.returncode == 0, result.stderr
    for name, scope in scopes.items():
        made.create(name, scope)
    return made


def upload_head(path: str, length: int, *headers: str) -> bytes:
    """A POST's request line and headers announcing a multipart body of ``length`` bytes, and
    the start of its first part."""
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
        f"Content-Length: {length}",
        *headers,
    ]
    part = (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"images\"; "
        'filename="scan.png"\r\nContent-Type: image/png\r\n\r\n'
    )
    return ("\r\n".join(lines) + "\r\n\r\n" + part).encode()


def read_response(sock: socket.socket, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one response (by its Content-Length) on ``sock``."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def partial_upload(port: int, path: str, *headers: str) -> tuple[int, dict[str, str], bytes]:
    """A request announcing 50 MB of upload that sends only its first bytes, then waits: its
    answer must come from checks made before the body is read."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(upload_head(path, 50_000_000, *headers) + b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
        return read_response(sock)


def access_record(server: LiveServer, server_id: str, timeout: float = 10.0) -> dict:
    """The access-log record of one request (written just after its answer is sent)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in server.records_of(server_id) if r["msg"] == "request"]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.05)
