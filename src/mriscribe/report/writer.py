"""The report writer: a chain of language models, a deadline, and the verifier between the
model's text and any reader, with the template report as the answer whenever the model fails.

The first model in the chain that loads serves; those that fail to load are skipped, their
reasons logged and shown by /health. The model writes the FINDINGS prose one sentence at a
time, each an answer to one line of facts (see report/prompt.py), and the IMPRESSION too where
``llm_writes_impression`` is set; the other sections come from the template. A model that
errors, passes the deadline, runs out of tokens or writes anything the verifier rejects yields
the template report, with the reason recorded.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from typing import Literal

from mriscribe.analysis import Report
from mriscribe.report.engines import (
    DeadlineExceededError,
    EngineLoadError,
    GenerationError,
    ReportEngine,
    generate_all,
    load_engine,
    missing_packages,
)
from mriscribe.report.facts import StudyFacts
from mriscribe.report.prompt import (
    PREFIX,
    cue_header,
    line_prompt,
    max_new_tokens,
    plan,
    sections,
)
from mriscribe.report.template import template_report
from mriscribe.report.verify import reason_kind, verify_text
from mriscribe.settings import Settings

log = logging.getLogger(__name__)

Mode = Literal["chain", "template"]
# The engine must be done this long before the report's deadline: room to verify the text and
# assemble the report, so the report itself is back by the deadline. An engine that overruns is
# not waited for: the template goes out at the deadline and the engine finishes on its own.
_RESERVE_S = 0.05
# Less time than this left when a report could start: not even one sentence fits (one fact
# line takes about 0.13 s to read and a short sentence about 0.3 s to write on 2 cores).
_MIN_START_S = 0.25


@dataclass(frozen=True)
class ChainLink:
    """One configured model and what became of it at load."""

    label: str
    status: Literal["serving", "failed", "not tried"]
    reason: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {"model": self.label, "status": self.status, "reason": self.reason}


def default_mode(settings: Settings) -> Mode:
    """The setting, or else "chain" when an engine of the chain is installed."""
    if settings.report_engine is not None:
        return settings.report_engine
    if any(not missing_packages(spec.engine) for spec in settings.llm_chain):
        return "chain"
    return "template"


class ReportWriter:
    """Writes reports for one process: the chain loads once and is shared between threads."""

    def __init__(self, settings: Settings, engines: Sequence[ReportEngine] | None = None) -> None:
        self.settings = settings
        self.mode: Mode = default_mode(settings)
        self.engine: ReportEngine | None = None
        self.links: list[ChainLink] = []
        self.loading = False
        self.counts: Counter[str] = Counter()
        self.last_fallback: str | None = None
        self._worker = _Worker()
        self._counts_lock = threading.Lock()
        self._running_deadline: float | None = None  # of the report the engine is writing
        if engines is not None:  # already loaded (a caller's own engine, or tests)
            self.engine = engines[0] if engines else None
            self.links = [
                ChainLink(e.name, "serving" if i == 0 else "not tried")
                for i, e in enumerate(engines)
            ]
            self.mode = "chain"

    def load(self) -> None:
        """Load the chain's models in order until one loads (nothing in template mode)."""
        if self.mode == "template" or self.engine is not None:
            return
        self.loading = True
        try:
            links: list[ChainLink] = []
            for spec in self.settings.llm_chain:
                if self.engine is not None:
                    links.append(ChainLink(spec.label, "not tried"))
                    continue
                started = time.perf_counter()
                try:
                    self.engine = load_engine(spec, warm_prefix=PREFIX)
                except EngineLoadError as exc:
                    links.append(ChainLink(spec.label, "failed", str(exc)))
                    log.warning(
                        "language model not loaded", extra={"model": spec.label, "reason": str(exc)}
                    )
                    continue
                except Exception as exc:  # a broken install: reported, never raised
                    reason = f"unexpected failure ({type(exc).__name__})"
                    links.append(ChainLink(spec.label, "failed", reason))
                    log.exception("language model not loaded", extra={"model": spec.label})
                    continue
                links.append(ChainLink(spec.label, "serving"))
                log.info(
                    "language model loaded",
                    extra={
                        "model": spec.label,
                        "engine": self.engine.name,
                        "load_ms": round((time.perf_counter() - started) * 1000, 1),
                    },
                )
            self.links = links
        finally:
            self.loading = False

    def close(self) -> None:
        self._worker.shutdown()
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    # Writing --------------------------------------------------------------------------------

    def write(
        self,
        facts: StudyFacts,
        *,
        model_name: str,
        model_version: str = "",
        mode: Mode | None = None,
        deadline: float | None = None,
    ) -> Report:
        """The report for ``facts``: the language model's where it is accepted in time, else
        the template's with the reason. Returns by the deadline whatever the engine does.

        ``deadline`` (``time.monotonic()`` clock) defaults to the report deadline from now; the
        service counts it from the request's arrival. A report with too little time left to
        start writing is the template at once.
        """
        started = time.monotonic()
        template = template_report(facts, model_name=model_name, model_version=model_version)
        mode = mode or self.mode
        if mode == "template":
            return self._count(template)
        engine = self.engine
        if engine is None:
            return self._count(replace(template, fallback_reason=self._unavailable()))
        if deadline is None:
            deadline = started + self.settings.report_deadline_s
        # Waiting (for admission, the upload, a slot, the detector) left less time than a
        # sentence takes and less than half the deadline: a report started now would only end
        # as the template.
        if deadline - started < min(_MIN_START_S, self.settings.report_deadline_s / 2):
            reason = (
                f"the report could not start before its {self.settings.report_deadline_s:g} s "
                "deadline (the time went on the upload and on waiting for the service)"
            )
            return self._fallback(template, reason)
        if not facts.images:
            return self._count(template)  # nothing for a model to write about
        if self._engine_overdue():
            return self._fallback(template, _BUSY)
        engine_deadline = deadline - _RESERVE_S
        future = self._worker.submit(self._narrative, engine, facts, engine_deadline, template)
        try:
            narrative = self._wait(future, deadline)
        except _BusyError:
            return self._fallback(template, _BUSY)
        except (FutureTimeout, DeadlineExceededError):
            future.cancel()  # if it has not started yet, it never will
            reason = f"the language model passed the {self.settings.report_deadline_s:g} s deadline"
            return self._fallback(template, reason)
        except _RejectedError as exc:
            return self._fallback(template, str(exc))
        except GenerationError as exc:
            return self._fallback(template, f"the language model failed: {exc}")
        except Exception as exc:  # an engine's own bug must not cost the report
            log.exception("report engine crashed")
            return self._fallback(template, f"the language model failed ({type(exc).__name__})")
        merged = {**template.sections, **narrative}
        return self._count(Report(sections=merged, engine=engine.name, fallback_reason=None))

    def _narrative(
        self, engine: ReportEngine, facts: StudyFacts, deadline: float, template: Report
    ) -> dict[str, str]:
        """The model's FINDINGS (and IMPRESSION, if the settings say so), one answer per fact
        line, each decoded inside the report grammar where the engine can, all written side by
        side where it can, and verified together with whatever of the template stands beside
        them."""
        settings = self.settings
        header, lines = plan(facts, engine.count_tokens, settings.llm_max_prompt_tokens)
        asked = lines if settings.llm_writes_impression else lines[:-1]
        if not asked:
            return {}
        self._running_deadline = deadline  # known to later reports while the engine works
        try:
            generations = generate_all(
                engine,
                [line_prompt(header, line, cue_header(facts)) for line in asked],
                deadline=deadline,
                max_new_tokens=max(
                    max_new_tokens(line, settings.llm_max_new_tokens) for line in asked
                ),
            )
        finally:
            self._running_deadline = None
        answers: list[str] = []
        for generation in generations:
            if generation.finish_reason == "length":
                raise _RejectedError("the language model's text was cut off at its token limit")
            answer = " ".join(generation.text.split())
            if not answer:
                raise _RejectedError("the language model wrote nothing for a line of facts")
            answers.append(answer)
        if settings.llm_writes_impression:
            narrative = sections(answers)
        else:
            narrative = {"FINDINGS": " ".join(answers)}
        impression = narrative.get("IMPRESSION", template.sections["IMPRESSION"])
        verdict = verify_text(f"Findings: {narrative['FINDINGS']}\nImpression: {impression}", facts)
        if not verdict.accepted:
            # What was wrong, never the rejected words or numbers themselves.
            shown = "; ".join(dict.fromkeys(reason_kind(r) for r in verdict.reasons[:3]))
            raise _RejectedError(f"the language model's text was rejected by the verifier: {shown}")
        return narrative

    def _engine_overdue(self) -> bool:
        """Whether the engine is still generating for a report whose deadline has passed (stuck,
        or overrunning): a report that would queue behind it gets the template at once."""
        running = self._running_deadline
        return running is not None and time.monotonic() > running

    def _wait(self, future: Future[dict[str, str]], deadline: float) -> dict[str, str]:
        """The narrative by the deadline; _BusyError as soon as it is clear that it waits in
        the queue behind a generation past its own deadline."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FutureTimeout
            try:
                return future.result(timeout=min(left, _POLL_S))
            except FutureTimeout:
                if not future.running() and self._engine_overdue() and future.cancel():
                    raise _BusyError from None

    def _unavailable(self) -> str:
        """Why no model writes: short, for the report; /health lists each link's reason."""
        if self.loading:
            return "the language model is still loading"
        if any(link.reason for link in self.links):
            return "no language model could be loaded (the service's /health says why)"
        return "no language model is configured"

    def _fallback(self, template: Report, reason: str) -> Report:
        log.info("template report used", extra={"reason": reason})
        self.last_fallback = reason
        return self._count(replace(template, fallback_reason=reason))

    def _count(self, report: Report) -> Report:
        with self._counts_lock:
            key = "template" if report.engine == "template" else "language model"
            self.counts[key] += 1
            if report.fallback_reason:
                self.counts["fallbacks"] += 1
        return report

    def status(self) -> dict[str, object]:
        """What /health and `mriscribe models` say about the report writer."""
        return {
            "mode": self.mode,
            "engine": self.engine.name if self.engine is not None else "template",
            "deadline_s": self.settings.report_deadline_s,
            "loading": self.loading,
            "chain": [link.as_dict() for link in self.links],
            "reports": dict(self.counts),
            "last_fallback_reason": self.last_fallback,
        }


class _BusyError(Exception):
    """A report waited in the queue behind a generation past its deadline."""


_BUSY = "the language model is still busy with an earlier report past its deadline"
_POLL_S = 0.02


class _Worker:
    """One daemon thread that runs the writer's jobs in order. A daemon, so an engine that
    never returns cannot keep the process from exiting (the CLI's run ends, the service stops)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[
            tuple[Future[dict[str, str]], Callable[..., dict[str, str]], tuple[object, ...]] | None
        ] = queue.SimpleQueue()
        threading.Thread(target=self._loop, name="report-writer", daemon=True).start()

    def submit(self, work: Callable[..., dict[str, str]], *args: object) -> Future[dict[str, str]]:
        future: Future[dict[str, str]] = Future()
        self._jobs.put((future, work, args))
        return future

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, work, args = job
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while it waited
            try:
                future.set_result(work(*args))
            except BaseException as exc:  # handed to the caller, who maps it
                future.set_exception(exc)

    def shutdown(self) -> None:
        """Stop after the running job, without waiting for it."""
        self._jobs.put(None)


class _RejectedError(GenerationError):
    """The model's text may not reach a reader (cut off, or rejected by the verifier)."""


_writers: dict[tuple[object, ...], ReportWriter] = {}
_writers_lock = threading.Lock()


def get_writer(settings: Settings) -> ReportWriter:
    """The report writer for ``settings``, loaded once per process."""
    key = (
        settings.report_engine,
        tuple(settings.llm_chain),
        settings.report_deadline_s,
        settings.llm_max_prompt_tokens,
        settings.llm_max_new_tokens,
        settings.llm_writes_impression,
    )
    with _writers_lock:
        writer = _writers.get(key)
        if writer is None:
            writer = _writers[key] = ReportWriter(settings)
            writer.load()
        return writer
