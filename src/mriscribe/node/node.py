"""The DICOM node: studies in by C-STORE, analysed once stable, results out to the PACS.

Three kinds of thread share the spool (``spool.py``) and nothing else: the receiver's (one per
association, pynetdicom's), the analyser (one study at a time: inference already uses every
core) and the sender (so a PACS that is down never holds up analysis). Everything the node
knows is on disk, so a restart carries on where the last process stopped.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mriscribe import outputs, pipeline
from mriscribe.analysis import Analysis
from mriscribe.detection import Detector
from mriscribe.errors import MriscribeError
from mriscribe.node.delivery import DeliveryError, Destination, destinations
from mriscribe.node.receiver import Receiver
from mriscribe.node.spool import Job, Spool, in_use
from mriscribe.report.writer import ReportWriter
from mriscribe.settings import Settings, SettingsError

log = logging.getLogger("mriscribe.node")

STATUS_FILE = "status.json"
_TICK_S = 0.1
_PURGE_EVERY_S = 60.0
_STATUS_EVERY_S = 2.0
_ANALYSIS_ATTEMPTS = 3
_FILE_NUMBER = re.compile(r"^file (\d+)")


class NodeError(MriscribeError):
    """The node cannot start (its port, its spool)."""


@dataclass
class _Retry:
    attempts: int = 0
    due: float = 0.0


@dataclass
class NodeStatus:
    """What /health and ``mriscribe models`` show: counts, times and reasons, no patient data."""

    studies_analysed: int = 0
    studies_without_results: int = 0
    studies_skipped_by_loop_guard: int = 0
    studies_delivered: int = 0
    last_delivery: str | None = None
    delivery_errors: int = 0
    analysis_errors: int = 0
    last_error: str | None = None
    last_error_at: str | None = None

    def error(self, message: str) -> None:
        self.last_error = message
        self.last_error_at = _now()


def check_node_settings(settings: Settings) -> None:
    """SettingsError, naming the setting, for a node that cannot work or would be open."""
    if not settings.node_send_to and not settings.node_stow_url:
        raise SettingsError(
            "the DICOM node has nowhere to send results: set node_send_to (--send-to "
            "AE@HOST:PORT) or node_stow_url (--stow-url)"
        )
    for name in settings.node_outputs:
        try:
            output = outputs.get_output(name)
        except MriscribeError:
            raise SettingsError(f"node_outputs: no output named {name!r}") from None
        if not output.needs_dicom or not output.media_type.startswith("application/dicom"):
            raise SettingsError(f"node_outputs: {name!r} does not make DICOM")
    loopback = settings.model_copy(update={"host": settings.node_host}).loopback_only
    if not (loopback or settings.node_allowed_calling_aets or settings.node_allow_any_calling_ae):
        raise SettingsError(
            f"node_host {settings.node_host} is beyond loopback: set node_allowed_calling_aets "
            "(--allow-calling-ae), or node_allow_any_calling_ae to accept any sender"
        )


class DicomNode:
    """One node: ``start()``, then it runs in its own threads until ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        *,
        detector: Detector | None = None,
        writer: ReportWriter | None = None,
    ) -> None:
        check_node_settings(settings)
        self.settings = settings
        # Outputs and errors name images "file N": spooled files are named by hashes.
        self.analysis_settings = settings.model_copy(
            update={
                "name_images_by_number": True,
                "report_engine": settings.node_report_engine or settings.report_engine,
            }
        )
        self.spool = Spool(settings.node_spool_dir)
        self.receiver = Receiver(settings, self.spool)
        self.destinations: list[Destination] = destinations(settings)
        self.detector = detector
        self.writer = writer
        self._own_writer = writer is None
        self.status = NodeStatus()
        # Backoff per destination (a PACS that is down is down for every study) and per job
        # whose analysis failed unexpectedly (retried, then given up with the reason).
        self._retries: dict[str, _Retry] = {}
        self._failures: dict[str, float] = {}  # job -> when its analysis may be retried
        self._stopping = threading.Event()
        self._results_ready = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listening = False
        self._status_lock = threading.Lock()
        self._last_purge = 0.0
        self._last_status = 0.0
        self._snapshot: dict[str, Any] = {}

    # Life

    def start(self) -> None:
        """Open the spool, listen, load the models, and resume whatever was left."""
        self.spool.open()
        try:
            try:
                self.receiver.start()
            except OSError as exc:
                where = f"{self.settings.node_host}:{self.settings.node_port}"
                raise NodeError(f"cannot listen on {where} ({exc.strerror})") from None
            if self.detector is None:
                self.detector = pipeline.get_detector(self.settings)
            if self.writer is None:
                self.writer = ReportWriter(self.analysis_settings)
                self.writer.load()
            # The first DICOM results in a process pay for the standard's tables: paid here.
            from mriscribe.outputs.warm import warm_up

            warm_up(self.settings, self.detector)
        except BaseException:
            self.receiver.stop()
            self.spool.close()
            raise
        # Studies left from before wait node_resume_grace_s from now: their senders may be
        # resending what was not acknowledged (a study resent meanwhile goes on as usual).
        self.spool.restart_clocks(
            max(0.0, self.settings.node_resume_grace_s - self.settings.node_stable_s)
        )
        self._listening = True
        waiting = len(self.spool.waiting())
        jobs = self.spool.pending_jobs()
        for job in jobs:
            if job.outcome() == "analysed":  # a stop between the results and the loop guard
                self.spool.remember(job.study, (path.stem for path in job.instances()))
        log.info(
            "DICOM node listening",
            extra={
                "ae_title": self.settings.node_ae_title,
                "port": self.receiver.port,
                "studies_waiting": waiting,
                "jobs_resumed": len(jobs),
                "destinations": [d.label for d in self.destinations],
            },
        )
        loops = (("node-analyser", self._analyse_loop), ("node-sender", self._send_loop))
        for name, target in loops:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._write_status()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop listening, let the study or delivery in hand finish, close the spool."""
        self._listening = False
        self.receiver.stop()
        self._stopping.set()
        self._results_ready.set()
        for thread in self._threads:
            thread.join(timeout_s)
        busy = [thread.name for thread in self._threads if thread.is_alive()]
        self._threads.clear()
        self._write_status()
        if busy:  # the spool stays locked: nothing else may take it while they run
            log.error("DICOM node stopped with work still running", extra={"threads": busy})
            return
        if self._own_writer and self.writer is not None:
            self.writer.close()
        self.spool.close()

    @property
    def port(self) -> int:
        return self.receiver.port

    @property
    def started(self) -> bool:
        return bool(self._threads)

    # Analysis

    def _analyse_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._take_stable()
                self._purge()
                job = self._next_job()
                if job is not None:
                    self._analyse_guarded(job)
                    self._results_ready.set()
                    continue
                if time.monotonic() - self._last_status > _STATUS_EVERY_S:
                    self._write_status()
            except Exception as exc:  # the spool itself failed (disk): the node keeps running
                self._error(f"analysis failed ({type(exc).__name__})", analysis=True)
                log.exception("node analysis failed")
                self._stopping.wait(1.0)
            self._stopping.wait(_TICK_S)

    def _next_job(self) -> Job | None:
        """The oldest job not analysed yet and not waiting for a retry."""
        now = time.monotonic()
        for job in self.spool.pending_jobs():
            due = self._failures.get(job.path.name, 0.0)
            if job.results() is None and job.exists and due <= now:
                return job
        return None

    def _analyse_guarded(self, job: Job) -> None:
        """Analyse one job; an unexpected failure is retried twice, then the job is given up
        with its reason (never blocking the studies behind it). Attempts are counted on disk,
        so a study that kills the process is given up after as many starts."""
        attempts = job.attempt(self.spool) + 1
        if attempts > _ANALYSIS_ATTEMPTS:
            job.commit(self.spool, [], f"no results: analysis did not finish in "
                       f"{_ANALYSIS_ATTEMPTS} attempts")
            self.status.studies_without_results += 1
            self._error(f"{job.label}: analysis did not finish; given up", analysis=True)
            return
        try:
            self._analyse(job)
            self._failures.pop(job.path.name, None)
        except Exception as exc:
            if not job.exists:  # finished or removed meanwhile
                return
            self._failures[job.path.name] = time.monotonic() + 2.0 * attempts
            reason = f"internal error ({type(exc).__name__})"
            log.exception("node analysis failed", extra={"job": job.label})
            if attempts >= _ANALYSIS_ATTEMPTS and job.results() is None:
                self._failures.pop(job.path.name, None)
                job.commit(self.spool, [], f"no results: {reason}")
                self.status.studies_without_results += 1
            self._error(f"{job.label}: {reason}, attempt {attempts}", analysis=True)

    def _take_stable(self) -> None:
        quiet_since = time.monotonic() - self.settings.node_stable_s
        for study, arrived in sorted(self.spool.waiting().items(), key=lambda item: item[1]):
            if arrived <= quiet_since:
                self.spool.take(study, quiet_since)

    def _analyse(self, job: Job) -> None:
        started = time.perf_counter()
        instances = job.instances()
        keys = {path.stem for path in instances}
        if not instances:  # a stop between making the job and moving its instances in
            job.commit(self.spool, [], "empty")
            return
        if keys <= self.spool.guarded(job.study):
            job.commit(self.spool, [], "already analysed: loop guard")
            self.status.studies_skipped_by_loop_guard += 1
            log.info("study skipped: already analysed (loop guard)", extra={"job": job.label})
            return
        analysis, problem = self._run_analysis(job, instances)
        results: list[tuple[str, bytes]] = []
        if analysis is not None:
            try:
                made = outputs.render(analysis, self.settings.node_outputs)
                results = [
                    (artifact.name, artifact.data)
                    for name in self.settings.node_outputs
                    for artifact in made[name]
                ]
            except outputs.OutputRefusedError as exc:
                problem = str(exc)
        if analysis is None or problem is not None:
            job.commit(self.spool, [], f"no results: {problem}")
            self.status.studies_without_results += 1
            self._error(f"{job.label}: no results ({problem})", analysis=True)
            return
        job.commit(self.spool, results, "analysed")
        self.status.studies_analysed += 1
        log.info(
            "study analysed",
            extra={
                "job": job.label,
                "images": analysis.facts.image_count,
                "lesions": len(analysis.facts.lesions),
                "results": len(results),
                "report_engine": analysis.report.engine,
                "timings_ms": analysis.timings_ms,
                "ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        # A study that comes back (a PACS forwarding what it holds, our results included) is
        # not analysed again: its instances are remembered, by keyed hash, for node_guard_days.
        # One that got no results is not: sent again (a limit raised, say), it is read again.
        self.spool.remember(job.study, keys)

    def _run_analysis(self, job: Job, instances: list[Path]) -> tuple[Analysis | None, str | None]:
        """The analysis of a job's instances, leaving out any that cannot be decoded."""
        files = list(instances)
        for _ in range(2):
            try:
                analysis = pipeline.analyze(
                    files,
                    self.analysis_settings,
                    detector=self.detector,
                    writer=self.writer,
                    report_engine=self.analysis_settings.report_engine,
                    render_images=outputs.needs_images(self.settings.node_outputs),
                )
                return analysis, None
            except pipeline.InputProblemsError as exc:
                bad = {
                    int(found.group(1))
                    for problem in exc.problems
                    if (found := _FILE_NUMBER.match(problem.path))
                }
                for problem in exc.problems:
                    log.warning("instance not analysed", extra={"job": job.label,
                                                                "problem": str(problem)})
                if not bad or len(bad) != len(exc.problems) or len(bad) >= len(files):
                    return None, "no usable image" if len(bad) >= len(files) else str(
                        exc.problems[0]
                    )
                files = [path for number, path in enumerate(files, start=1) if number not in bad]
            except MriscribeError as exc:
                return None, str(exc)
        return None, "no usable image"

    # Delivery

    def _send_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._send_due()
            except Exception as exc:  # the node keeps running; the results stay for a retry
                self._error(f"delivery failed ({type(exc).__name__})")
                log.exception("node delivery failed")
            self._results_ready.wait(_TICK_S)
            self._results_ready.clear()

    def _send_due(self) -> None:
        now = time.monotonic()
        waiting = [self._retries.get(d.key) for d in self.destinations]
        if self.destinations and all(r is not None and r.due > now for r in waiting):
            return  # every destination is down and waiting: no need to look at the jobs
        for job in self.spool.pending_jobs():
            if self._stopping.is_set():
                return
            results = job.results()
            if results is None:
                continue
            for destination in self.destinations:
                if not results or destination.key in job.delivered():
                    continue
                now = time.monotonic()
                down = self._retries.get(destination.key)
                refused = self._retries.get(f"{destination.key}/{job.path.name}")
                if (down is not None and down.due > now) or (
                    refused is not None and refused.due > now
                ):
                    continue
                started = time.perf_counter()
                try:
                    destination.send(results)
                    job.mark_delivered(self.spool, destination.key)
                except Exception as exc:  # any failure is retried later
                    reason = str(exc) if isinstance(exc, DeliveryError) else (
                        f"{destination.label}: {type(exc).__name__}"
                    )
                    # A destination that is down waits as a whole; one that refused these
                    # results waits for this study only (the next study may go through).
                    unreachable = isinstance(exc, DeliveryError) and exc.unreachable
                    self._schedule_retry(job, destination, reason, unreachable)
                    continue
                self._retries.pop(destination.key, None)
                self._retries.pop(f"{destination.key}/{job.path.name}", None)
                log.info(
                    "results delivered",
                    extra={
                        "job": job.label,
                        "destination": destination.label,
                        "results": len(results),
                        "ms": round((time.perf_counter() - started) * 1000, 1),
                    },
                )
            if not results or all(d.key in job.delivered() for d in self.destinations):
                if job.outcome() == "analysed":  # the loop guard first, then the spool goes
                    self.spool.remember(job.study, (path.stem for path in job.instances()))
                if results:
                    with self._status_lock:
                        self.status.studies_delivered += 1
                        self.status.last_delivery = _now()
                self.spool.finish(job, self.settings.node_retention_h * 3600)
                self._write_status()

    def _schedule_retry(
        self, job: Job, destination: Destination, reason: str, unreachable: bool
    ) -> None:
        key = destination.key if unreachable else f"{destination.key}/{job.path.name}"
        retry = self._retries.setdefault(key, _Retry())
        retry.attempts += 1
        delay = min(
            self.settings.node_retry_max_s,
            self.settings.node_retry_base_s * 2 ** (retry.attempts - 1),
        ) * random.uniform(0.8, 1.2)
        retry.due = time.monotonic() + delay
        self._error(f"{reason}; {job.label}: retry {retry.attempts} in {delay:.1f} s")
        log.warning(
            "delivery failed; will retry",
            extra={"job": job.label, "reason": reason, "retry_in_s": round(delay, 1)},
        )

    # Status

    def _error(self, message: str, analysis: bool = False) -> None:
        with self._status_lock:
            if analysis:
                self.status.analysis_errors += 1
            else:
                self.status.delivery_errors += 1
            self.status.error(message)
        self._write_status()

    def health(self) -> dict[str, Any]:
        """The node's state for /health: no UIDs, names or hashes of a study."""
        jobs = self.spool.pending_jobs() if self._listening else []
        analysed = sum(1 for job in jobs if job.results() is not None)
        counters = self.receiver.counters
        status = self.status
        return {
            "listening": self._listening,
            "ae_title": self.settings.node_ae_title,
            "port": self.receiver.port if self._listening else self.settings.node_port,
            "destinations": [d.label for d in self.destinations],
            "studies_receiving": len(self.spool.waiting()),
            "studies_analysing": len(jobs) - analysed,
            "studies_awaiting_delivery": analysed,
            "instances_stored": counters.stored,
            "instances_repeated": counters.repeated,
            "instances_ignored": counters.results_ignored,
            "instances_refused": dict(counters.refused),
            "associations": counters.associations,
            "associations_refused": counters.refused_associations,
            "presentation_contexts_refused": counters.refused_contexts,
            "studies_analysed": status.studies_analysed,
            "studies_without_results": status.studies_without_results,
            "studies_skipped_by_loop_guard": status.studies_skipped_by_loop_guard,
            "studies_delivered": status.studies_delivered,
            "last_delivery": status.last_delivery,
            "delivery_errors": status.delivery_errors,
            "analysis_errors": status.analysis_errors,
            "last_error": status.last_error,
            "last_error_at": status.last_error_at,
            "updated": _now(),
        }

    def snapshot(self) -> dict[str, Any]:
        """The status as last written (at every change, and every 2 s): what /health shows,
        without touching the disk on the service's event loop."""
        return dict(self._snapshot) if self._snapshot else self.health()

    def _write_status(self) -> None:
        """The health, in the spool, for ``mriscribe models`` run beside the node."""
        self._last_status = time.monotonic()
        try:
            self._snapshot = self.health()
            body = json.dumps(self._snapshot, indent=2).encode()
            self.spool.write_file(self.spool.root / STATUS_FILE, body)
        except (OSError, ValueError):
            pass

    def _purge(self) -> None:
        now = time.monotonic()
        if now - self._last_purge < _PURGE_EVERY_S:
            return
        self._last_purge = now
        settings = self.settings
        self.spool.purge(settings.node_retention_h * 3600, settings.node_guard_days * 86400)
        self._write_status()


def read_status(spool_dir: Path) -> dict[str, Any] | None:
    """The status a node last wrote into its spool (``listening`` false unless a node holds
    the spool now), or None if no node ever ran there."""
    try:
        status = json.loads((spool_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(status, dict):
        return None
    status["listening"] = bool(status.get("listening")) and in_use(spool_dir)
    return status


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
