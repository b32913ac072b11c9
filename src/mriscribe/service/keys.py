"""API keys: made by the CLI, kept in a key file only as HMAC-SHA256 digests under a server
secret, checked in constant time, revocable while the service runs."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

from mriscribe.settings import Settings, SettingsError

log = logging.getLogger("mriscribe.service")

Scope = Literal["analyze", "admin"]
SCOPES: tuple[Scope, ...] = ("analyze", "admin")
FILE_FORMAT = "mriscribe-api-keys/1"
MIN_SECRET_CHARS = 32
# mrs_<id: 12 hex, public, shown by `keys list`>_<token: 32 random bytes, base64url>
KEY_PATTERN = re.compile(r"mrs_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
MAX_KEY_CHARS = 128
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SECRET_CHECK = b"mriscribe api key file"

Failure = Literal["missing", "invalid", "revoked", "unavailable"]


def grants(held: Scope, needed: Scope) -> bool:
    """Whether a key of scope ``held`` may use a route that needs ``needed`` (admin implies
    analyze)."""
    return held == "admin" or held == needed


@dataclass(frozen=True)
class ApiKey:
    """One key as the key file holds it: never the key itself, only its keyed digest."""

    id: str
    name: str
    scope: Scope
    digest: str  # HMAC-SHA256(server secret, key), hex
    created: str
    revoked: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked is None

    def listing(self) -> dict[str, str | None]:
        """What `mriscribe keys list` shows: everything but the digest."""
        return {
            "id": self.id,
            "name": self.name,
            "scope": self.scope,
            "created": self.created,
            "revoked": self.revoked,
        }


def load_secret(settings: Settings) -> bytes:
    """The server secret, from ``api_key_secret_file`` or else the environment variable
    ``api_key_secret_env`` names. SettingsError, naming the setting, if there is none."""
    env = settings.api_key_secret_env
    path = settings.api_key_secret_file
    if path is not None:
        where = f"api_key_secret_file ({path})"
        try:
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise SettingsError(
                f"{where}: not found; make one with `mriscribe keys secret --file {path}`"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not text"
            raise SettingsError(f"{where}: cannot be read ({reason})") from None
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "the server secret file can be read by other users: chmod 600 it",
                extra={"setting": "api_key_secret_file"},
            )
    else:
        where = f"the environment variable {env} (api_key_secret_env)"
        text = os.environ.get(env, "").strip()
        if not text:
            raise SettingsError(
                f"api_key_secret_file: not set, and {where} is empty: API keys are hashed "
                "with a server secret; make one with `mriscribe keys secret --file PATH` and "
                "set api_key_secret_file to it"
            )
    if len(text) < MIN_SECRET_CHARS:
        raise SettingsError(
            f"{where}: the server secret must be at least {MIN_SECRET_CHARS} characters "
            "(`mriscribe keys secret` makes one of 64)"
        )
    return text.encode("utf-8")


def write_secret(path: Path, *, force: bool = False) -> None:
    """Write a new random server secret to ``path``, readable by its owner only (0600)."""
    if path.exists() and not force:
        raise SettingsError(
            f"{path}: a server secret is already there; --force replaces it, and every key "
            "made with the old one stops working"
        )
    _write_private(path, secrets.token_hex(32) + "\n")


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600: a temporary file beside it, synced,
    then renamed over it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise SettingsError(f"{path}: cannot be written ({exc.strerror})") from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except OSError as exc:
        raise SettingsError(f"{path}: cannot be written ({exc.strerror})") from None
    finally:
        Path(temp).unlink(missing_ok=True)


def key_digest(secret: bytes, key: str) -> str:
    return hmac.new(secret, key.encode("utf-8"), hashlib.sha256).hexdigest()


def _secret_check(secret: bytes) -> str:
    """A fingerprint of the secret a key file was made with (it reveals nothing of it)."""
    return hmac.new(secret, _SECRET_CHECK, hashlib.sha256).hexdigest()[:16]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class KeyFile:
    """The key file: JSON, read whole, changed under a lock and replaced atomically."""

    def __init__(self, path: Path, secret: bytes) -> None:
        self.path = path
        self.secret = secret

    def read(self) -> list[ApiKey]:
        """The keys; an absent file holds none. SettingsError if it is unreadable, malformed
        or made with another server secret."""
        where = f"api_keys_file ({self.path})"
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not text"
            raise SettingsError(f"{where}: cannot be read ({reason})") from None
        except json.JSONDecodeError as exc:
            problem = f"not a key file (bad JSON at line {exc.lineno})"
            raise SettingsError(f"{where}: {problem}") from None
        try:
            if document["format"] != FILE_FORMAT:
                raise ValueError(f"format {document['format']!r}, expected {FILE_FORMAT!r}")
            keys = [_key_from(entry) for entry in document["keys"]]
            check = document["secret_check"]
        except (KeyError, TypeError, ValueError) as exc:
            raise SettingsError(f"{where}: not a key file ({_why(exc)})") from None
        if keys and not hmac.compare_digest(str(check), _secret_check(self.secret)):
            raise SettingsError(
                f"{where}: its keys were made with another server secret than the one "
                "api_key_secret_file (or api_key_secret_env) gives"
            )
        return keys

    def create(self, name: str, scope: Scope) -> tuple[ApiKey, str]:
        """A new key: its record (stored) and the key itself (shown once, never stored)."""
        if not NAME_PATTERN.fullmatch(name):
            raise SettingsError(
                f"key name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a "
                "letter or digit"
            )
        if scope not in SCOPES:
            raise SettingsError(f"scope {scope!r}: must be one of {', '.join(SCOPES)}")
        with self._locked() as keys:
            if any(k.name == name and k.active for k in keys):
                raise SettingsError(f"key name {name!r}: an active key has it already")
            taken = {k.id for k in keys}
            key_id = secrets.token_hex(6)
            while key_id in taken:
                key_id = secrets.token_hex(6)
            key = f"mrs_{key_id}_{secrets.token_urlsafe(32)}"
            record = ApiKey(key_id, name, scope, key_digest(self.secret, key), _now())
            self._write([*keys, record])
        return record, key

    def revoke(self, name_or_id: str) -> ApiKey:
        """Revoke the active key with this id or name; SettingsError if there is none."""
        with self._locked() as keys:
            found = [k for k in keys if k.active and name_or_id in (k.id, k.name)]
            if not found:
                raise SettingsError(f"{name_or_id}: no active key has this id or name")
            revoked = replace(found[0], revoked=_now())
            self._write([revoked if k is found[0] else k for k in keys])
        return revoked

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[ApiKey]]:
        """The keys, with the key file's folder locked against other writers meanwhile."""
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(folder, os.O_RDONLY)
        except OSError as exc:
            raise SettingsError(f"api_keys_file ({self.path}): {exc.strerror}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield self.read()
        finally:
            os.close(descriptor)  # releases the lock

    def _write(self, keys: list[ApiKey]) -> None:
        document = {
            "format": FILE_FORMAT,
            "secret_check": _secret_check(self.secret),
            "keys": [
                {
                    "id": k.id,
                    "name": k.name,
                    "scope": k.scope,
                    "hmac_sha256": k.digest,
                    "created": k.created,
                    "revoked": k.revoked,
                }
                for k in keys
            ],
        }
        _write_private(self.path, json.dumps(document, indent=2) + "\n")


def _key_from(entry: dict[str, Any]) -> ApiKey:
    scope = entry["scope"]
    if scope not in SCOPES:
        raise ValueError(f"key {entry.get('id')!r} has scope {scope!r}")
    digest = str(entry["hmac_sha256"])
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"key {entry.get('id')!r} has no valid digest")
    revoked = entry.get("revoked")
    return ApiKey(
        id=str(entry["id"]),
        name=str(entry["name"]),
        scope=cast(Scope, scope),
        digest=digest,
        created=str(entry.get("created", "")),
        revoked=None if revoked is None else str(revoked),
    )


def _why(exc: Exception) -> str:
    return f"no {exc.args[0]!r} entry" if isinstance(exc, KeyError) else str(exc)


@dataclass(frozen=True)
class Verdict:
    """What a presented key is: the key's record, or why there is none."""

    key: ApiKey | None
    failure: Failure | None = None


class KeyRing:
    """The keys a running service accepts: the key file, read again as soon as it changes on
    disk (a revoked key is refused from the next request on). A key file that becomes
    unreadable refuses every key until it is mended (fail closed)."""

    def __init__(self, path: Path, secret: bytes) -> None:
        self.file = KeyFile(path, secret)
        self._secret = secret
        self._lock = threading.Lock()
        self._stamp: tuple[int, ...] | None = None
        self._keys: dict[str, ApiKey] = {}
        self._broken = False
        # Compared against when the presented id is unknown, so that the time taken does not
        # say whether an id exists.
        self._decoy = key_digest(secret, secrets.token_urlsafe(32))
        if not path.is_file():
            raise SettingsError(
                f"api_keys_file ({path}): not found; create a key with "
                "`mriscribe keys create --name NAME`"
            )
        self._refresh()
        if self._broken:  # at start-up a bad key file stops the service, naming it
            self.file.read()

    @property
    def active_count(self) -> int:
        self._refresh()
        return sum(1 for k in self._keys.values() if k.active)

    def verify(self, presented: str | None) -> Verdict:
        """The record of the key ``presented``, compared in constant time with its digest."""
        if not presented:
            return Verdict(None, "missing")
        self._refresh()
        if self._broken:
            return Verdict(None, "unavailable")
        match = KEY_PATTERN.fullmatch(presented) if len(presented) <= MAX_KEY_CHARS else None
        record = self._keys.get(match.group(1)) if match else None
        digest = key_digest(self._secret, presented)
        same = hmac.compare_digest(digest, record.digest if record else self._decoy)
        if record is None or not same:
            return Verdict(None, "invalid")
        if not record.active:
            return Verdict(record, "revoked")
        return Verdict(record)

    def _refresh(self) -> None:
        """Read the key file again if it changed (inode, size or time) since last read."""
        try:
            info = os.stat(self.file.path)
            stamp: tuple[int, ...] = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        except OSError:
            stamp = ()
        if stamp == self._stamp:
            return
        with self._lock:
            if stamp == self._stamp:
                return
            try:
                if not stamp:
                    raise SettingsError(f"api_keys_file ({self.file.path}): not found")
                keys = {k.id: k for k in self.file.read()}
            except SettingsError as exc:
                if not self._broken:
                    log.error("API keys refused: the key file cannot be used", extra={
                        "reason": str(exc)
                    })
                self._broken = True
            else:
                if self._broken or self._stamp is not None:
                    log.info("API keys read again", extra={
                        "active_keys": sum(1 for k in keys.values() if k.active)
                    })
                self._keys = keys
                self._broken = False
            self._stamp = stamp
