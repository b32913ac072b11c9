"""The node's durable spool: nothing acknowledged is lost, nothing it writes names a patient.

Layout (folders 0700, files 0600; every name is a hash of a UID, never the UID itself)::

    incoming/<study>/<instance>.dcm   received, waiting for the study to be stable
    jobs/<stamp>-<study>/             one stable study, taken whole from incoming/
        instances/<instance>.dcm
        results/NN-<name>             the results, committed at once (a folder rename)
        delivered/<destination>       one empty marker per destination that has them all
    done/<stamp>-<study>/             delivered, kept for node_retention_h
    guard/<study>                     the loop guard: the instance hashes already analysed
    tmp/                              files being written (cleared at start)

Every file is written to tmp/, flushed with fsync, renamed into place and its folder fsynced:
an instance is only acknowledged after that, so a crash (``kill -9``) loses nothing that was
acknowledged, and a rename is the only step that makes anything visible. A restart finds
every study and job where it was: incoming studies wait ``stable_s`` again, jobs without
results are analysed again, results not delivered everywhere are sent again (with the same
UIDs, so a PACS that had them keeps one copy).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mriscribe.errors import MriscribeError

FILE_MODE = 0o600
STALE_TMP_S = 3600.0
FOLDER_MODE = 0o700


class SpoolError(MriscribeError):
    """The spool cannot be opened, or another node holds it."""


def uid_key(uid: str, secret: bytes) -> str:
    """The name a UID is spooled under: a keyed hash (HMAC-SHA256 under the spool's own random
    key), so that a name in the spool cannot be matched to a study by hashing its UID."""
    digest = hmac.new(secret, uid.strip().encode("ascii", "replace"), hashlib.sha256)
    return digest.hexdigest()[:32]


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_folder(folder: Path) -> None:
    """``folder`` and its missing parents, 0700, durably (each new entry's parent fsynced)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for item in reversed(missing):
        try:
            item.mkdir(mode=FOLDER_MODE)
        except FileExistsError:
            continue
        fsync_folder(item.parent)


class Spool:
    """The spool under ``root``; safe to use from the receiver's and the node's threads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming = root / "incoming"
        self.jobs = root / "jobs"
        self.done = root / "done"
        self.guard = root / "guard"
        self.tmp = root / "tmp"
        # Held while a study folder in incoming/ changes (a file renamed in, the folder taken
        # as a job): a few milliseconds, never while writing or fsyncing a whole file.
        self.lock = threading.Lock()
        self._arrivals: dict[str, float] = {}
        self._guarded: dict[str, set[str]] = {}
        self._counter = 0
        self._lock_handle: int | None = None
        self._secret = b""

    def open(self) -> None:
        """Create the folders, take the spool's lock (one node per spool), clear half-written
        files and find every study waiting. SpoolError if another node holds it."""
        try:
            make_folder(self.root)
            os.chmod(self.root, FOLDER_MODE)
            handle = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            raise SpoolError(f"{self.root}: cannot open the spool ({exc.strerror})") from None
        if not _lock(handle, fcntl.LOCK_EX, wait_s=2.0):
            os.close(handle)
            raise SpoolError(f"{self.root}: another mriscribe node is using it") from None
        self._lock_handle = handle
        for folder in (self.incoming, self.jobs, self.done, self.guard, self.tmp):
            make_folder(folder)
        key_file = self.root / "key"
        secret = key_file.read_bytes() if key_file.is_file() else b""
        if len(secret) != 32:
            if any(any(folder.iterdir()) for folder in (self.incoming, self.jobs, self.guard)):
                self.close()
                raise SpoolError(
                    f"{self.root}: the spool's key is missing or damaged while studies are in it"
                )
            secret = secrets.token_bytes(32)
            self.write_file(key_file, secret)
        self._secret = secret
        for item in self.tmp.iterdir():
            _remove(item)
        now = time.monotonic()
        with self.lock:
            # A study found at start waits stable_s from now: its senders may still be resending.
            self._arrivals = {item.name: now for item in self.incoming.iterdir() if item.is_dir()}
        for item in self.guard.iterdir():
            self._guarded[item.name] = set(item.read_text(encoding="ascii").split())

    def close(self) -> None:
        """Release the spool's lock (the files stay)."""
        if self._lock_handle is not None:
            os.close(self._lock_handle)
            self._lock_handle = None

    # Receiving

    def key_of(self, uid: str) -> str:
        """The spool's name for a study's or an instance's UID."""
        return uid_key(uid, self._secret)

    def guarded(self, study: str) -> set[str]:
        """The instances of this study analysed already."""
        with self.lock:
            return set(self._guarded.get(study, ()))

    def seen(self, study: str, instance: str) -> bool:
        """Whether this instance of this study was analysed already (the loop guard)."""
        with self.lock:
            return instance in self._guarded.get(study, ())

    def restart_clocks(self, grace_s: float = 0.0) -> None:
        """Every study waiting counts its quiet time from now, plus ``grace_s`` (when the node
        starts to listen: its senders may resend what was not acknowledged before a crash)."""
        now = time.monotonic() + grace_s
        with self.lock:
            self._arrivals = dict.fromkeys(self._arrivals, now)

    def store(self, study: str, instance: str, data: bytes | Path) -> None:
        """Write one received instance (its bytes, or a received file, copied in 1 MiB blocks,
        never whole in memory) durably; the same instance again replaces it."""
        temporary = self._write_temporary(data)
        try:
            self._place(study, instance, temporary)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def _place(self, study: str, instance: str, temporary: Path) -> None:
        with self.lock:
            folder = self.incoming / study
            make_folder(folder)
            os.replace(temporary, folder / f"{instance}.dcm")
            fsync_folder(folder)
            self._arrivals[study] = time.monotonic()

    def waiting(self) -> dict[str, float]:
        """Study -> when its last instance arrived (``time.monotonic()``)."""
        with self.lock:
            return dict(self._arrivals)

    def take(self, study: str, quiet_since: float) -> Job | None:
        """Move a study that has been quiet since ``quiet_since`` from incoming/ to a job."""
        with self.lock:
            arrived = self._arrivals.get(study)
            if arrived is None or arrived > quiet_since:
                return None
            if not (self.incoming / study).is_dir():  # gone (by hand): nothing to take
                del self._arrivals[study]
                return None
            self._counter += 1
            job = Job(self.jobs / f"{time.time_ns():020d}{self._counter:04d}-{study}")
            make_folder(job.path)
            os.replace(self.incoming / study, job.instances_folder)
            del self._arrivals[study]
            fsync_folder(self.incoming)
            fsync_folder(job.path)
            return job

    # Jobs

    def pending_jobs(self) -> list[Job]:
        """Every job in the spool, oldest first."""
        return [Job(item) for item in sorted(self.jobs.iterdir()) if item.is_dir()]

    def remember(self, study: str, instances: Iterable[str]) -> None:
        """Record these instances as analysed (the loop guard), durably."""
        with self.lock:
            known = self._guarded.setdefault(study, set())
            known.update(instances)
            text = "\n".join(sorted(known)) + "\n"
        self.write_file(self.guard / study, text.encode("ascii"))

    def finish(self, job: Job, retention_s: float) -> None:
        """A job is delivered (or has nothing to deliver): keep it for the retention time or
        remove it."""
        if retention_s > 0:
            os.replace(job.path, self.done / job.path.name)
            fsync_folder(self.done)
            fsync_folder(self.jobs)
            return
        # Out of jobs/ in one step first: a crash halfway through deleting must not leave a
        # job that looks unanalysed (tmp/ is cleared at start).
        trash = self.tmp / f"finished-{job.path.name}"
        os.replace(job.path, trash)
        fsync_folder(self.jobs)
        _remove(trash)

    def purge(self, retention_s: float, guard_s: float) -> None:
        """Remove delivered jobs past their retention and loop-guard records past theirs."""
        now = time.time()
        for item in self.done.iterdir():
            if _age(item, now) > retention_s:
                trash = self.tmp / f"expired-{item.name}"
                os.replace(item, trash)
                _remove(trash)
        for item in self.tmp.iterdir():  # transfers a sender abandoned long ago
            if _age(item, now) > STALE_TMP_S and item.is_file():
                item.unlink(missing_ok=True)
        for item in self.guard.iterdir():
            if _age(item, now) > guard_s:
                with self.lock:
                    self._guarded.pop(item.name, None)
                    item.unlink(missing_ok=True)

    # Writing

    def write_file(self, path: Path, data: bytes) -> None:
        """Write ``path`` durably (0600): temporary file, fsync, rename, folder fsync."""
        os.replace(self._write_temporary(data), path)
        fsync_folder(path.parent)

    def _write_temporary(self, data: bytes | Path) -> Path:
        with self.lock:
            self._counter += 1
            path = self.tmp / f"{os.getpid()}-{threading.get_ident()}-{self._counter}.part"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            if isinstance(data, Path):
                with data.open("rb") as source:
                    while block := source.read(1 << 20):
                        _write_all(fd, block, sync=False)
                os.fsync(fd)
            else:
                _write_all(fd, data)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        return path


@dataclass(frozen=True)
class Job:
    """One stable study taken from incoming/, until its results are delivered."""

    path: Path

    @property
    def study(self) -> str:
        return self.path.name.split("-", 1)[1]

    @property
    def label(self) -> str:
        """How logs and the status name the job: when it was taken (nothing of the study)."""
        return f"job {self.path.name.split('-', 1)[0]}"

    @property
    def exists(self) -> bool:
        return self.path.is_dir()

    @property
    def instances_folder(self) -> Path:
        return self.path / "instances"

    @property
    def results_folder(self) -> Path:
        return self.path / "results"

    @property
    def delivered_folder(self) -> Path:
        return self.path / "delivered"

    def instances(self) -> list[Path]:
        try:
            return sorted(self.instances_folder.glob("*.dcm"))
        except FileNotFoundError:  # finished meanwhile
            return []

    def results(self) -> list[Path] | None:
        """The committed results (possibly none: a study with nothing to send), or None if the
        job has not been analysed yet (or is gone: finished meanwhile)."""
        try:
            return sorted(
                item for item in self.results_folder.iterdir() if item.name != "outcome"
            )
        except (FileNotFoundError, NotADirectoryError):
            return None

    def commit(self, spool: Spool, results: list[tuple[str, bytes]], outcome: str) -> None:
        """Write the results (and why there are none) as one step: a folder renamed in."""
        staging = spool.tmp / f"results-{self.path.name}"
        _remove(staging)
        staging.mkdir(mode=FOLDER_MODE)
        for number, (name, data) in enumerate(results, start=1):
            _write_plain(staging / f"{number:02d}-{name}", data)
        _write_plain(staging / "outcome", outcome.encode("utf-8"))
        fsync_folder(staging)
        os.replace(staging, self.results_folder)
        fsync_folder(self.path)

    def attempt(self, spool: Spool) -> int:
        """Count one more analysis attempt, durably (a study that kills the process is given
        up after a few, not analysed at every restart); the attempts before this one."""
        path = self.path / "attempts"
        try:
            before = int(path.read_text(encoding="ascii") or 0)
        except (FileNotFoundError, ValueError):
            before = 0
        spool.write_file(path, str(before + 1).encode("ascii"))
        return before

    def outcome(self) -> str:
        path = self.results_folder / "outcome"
        return path.read_text(encoding="utf-8") if path.is_file() else ""

    def delivered(self) -> set[str]:
        try:
            return {item.name for item in self.delivered_folder.iterdir()}
        except FileNotFoundError:
            return set()

    def mark_delivered(self, spool: Spool, destination: str) -> None:
        make_folder(self.delivered_folder)
        spool.write_file(self.delivered_folder / destination, b"")


def in_use(root: Path) -> bool:
    """Whether a node holds the spool at ``root`` now (its lock is taken)."""
    try:
        handle = os.open(root / "lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        free = _lock(handle, fcntl.LOCK_SH, wait_s=0.0)
        if free:
            fcntl.flock(handle, fcntl.LOCK_UN)
        return not free
    finally:
        os.close(handle)


def _lock(handle: int, kind: int, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(handle, kind | fcntl.LOCK_NB)
            return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def _write_plain(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes, sync: bool = True) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    if sync:
        os.fsync(fd)


def _age(path: Path, now: float) -> float:
    """Seconds since ``path`` last changed (0 if it is gone meanwhile)."""
    try:
        return now - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
