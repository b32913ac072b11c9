"""The DICOM node with a real PACS: latency, load and crashes, with Orthanc and DCMTK's storescu.

    python bench/dicom_node.py [--rounds 5] [--stable-s 1.0] [--studies 10] [--json out.json]
                               [--report-engine template|chain]

Each study is the Colin27 head (Debian mricron-data) with a synthetic tumour as 24 DICOM slices,
its UIDs new for each study; the node (``mriscribe dicom-node``, template report unless
``--report-engine chain``) runs as a
subprocess and sends its SR, presentation state and PDF to Orthanc by C-STORE.

- latency: a series stored straight into the node (from storescu's exit) until all three results
  are in Orthanc (its REST API polled every 50 ms), less the node's stable time; the same through
  Orthanc (stored in Orthanc, Lua OnStableStudy sends it to the node), less Orthanc's StableAge
  and the node's stable time; the baseline is storescu storing the same 24 slices into Orthanc.
  Target: the median <= 3 s, both ways.
- load: ``--studies`` studies at once from three calling AEs (three storescu processes started
  together): every one delivered exactly once (1 SR, 1 PR, 1 PDF in Orthanc), none lost.
- crash: ``kill -9`` of the node while it receives three studies (restarted on the same spool
  and port, the studies sent again as a sender retries), and while it delivers three: every
  study delivered exactly once after the restart.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pydicom

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from orthanc import Orthanc, free_port, start_orthanc, storescu  # noqa: E402
from result_studies import COLIN27, series_files  # noqa: E402

RESULTS = {"1.2.840.10008.5.1.4.1.1.88.34": "SR", "1.2.840.10008.5.1.4.1.1.11.1": "PR",
           "1.2.840.10008.5.1.4.1.1.104.1": "PDF"}  # fmt: skip
RESULT_MODALITIES = ("SR", "PR", "DOC")
TARGET_S = 3.0
STABLE_AGE_S = 1
CALLING_AETS = ("SCU_A", "SCU_B", "SCU_C")
POLL_S = 0.05
WAIT_S = 180.0


class Study:
    """One 24-slice study written to ``folder``."""

    def __init__(self, folder: Path, seed: int) -> None:
        folder.mkdir(parents=True)
        self.files: list[Path] = []
        for item in series_files(seed=seed):
            ds = pydicom.dcmread(io.BytesIO(item.data))
            self.files.append(folder / item.name)
            ds.save_as(self.files[-1], enforce_file_format=True)
        self.uid = str(ds.StudyInstanceUID)


class Node:
    """``mriscribe dicom-node`` in a subprocess, so that it can be killed."""

    engine = "template"  # the report writer of every node in this run (--report-engine)

    def __init__(self, folder: Path, port: int, send_to: int, stable_s: float) -> None:
        self.folder, self.port, self.send_to, self.stable_s = folder, port, send_to, stable_s
        self.spool = folder / "spool"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Node:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = self.folder / "node.stderr"
        start = log.stat().st_size if log.exists() else 0
        args = ["dicom-node", "--port", str(self.port), "--stable-s", str(self.stable_s),
                "--send-to", f"ORTHANC@127.0.0.1:{self.send_to}", "--spool", str(self.spool),
                "--report-engine", self.engine]  # fmt: skip
        env = {**os.environ, "MRISCRIBE_REPORT_ENGINE": self.engine}
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mriscribe", *args], stdout=out, stderr=out, env=env
            )
        deadline = time.monotonic() + 60
        while "listening on" not in log.read_text(errors="replace")[start:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the node did not start:\n" + log.read_text()[start:][-3000:])
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def incoming(self) -> int:
        """Instances spooled and not yet taken as a job."""
        return sum(1 for _ in (self.spool / "incoming").glob("*/*.dcm"))


def results_in(orthanc: Orthanc, uid: str) -> int:
    """Instances of result series (SR, PR, encapsulated PDF) in a study: one REST call."""
    body = {"Level": "Series", "Query": {"StudyInstanceUID": uid}, "Expand": True}
    found = orthanc.post("/tools/find", body)
    return sum(
        len(s["Instances"])
        for s in found
        if s["MainDicomTags"].get("Modality") in RESULT_MODALITIES
    )


def exactly_once(orthanc: Orthanc, uid: str) -> bool:
    """The study holds exactly one SR, one PR and one PDF."""
    counts = Counter(r["SOPClassUID"] for r in orthanc.study_instances(uid))
    return all(counts[sop_class] == 1 for sop_class in RESULTS)


def wait(predicate: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> float:
    """Poll every 50 ms; the time.monotonic() at which ``predicate`` held."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} in {timeout_s:.0f} s")
        time.sleep(POLL_S)
    return time.monotonic()


def send(files: list[Path], port: int, called: str, calling: str = "STORESCU") -> float:
    """storescu the files; seconds it took (raises when it failed)."""
    start = time.monotonic()
    done = storescu(files, port, called_aet=called, calling_aet=calling)
    if done.returncode != 0 or "E:" in done.stderr:
        raise RuntimeError(f"storescu failed: {done.stderr[-2000:]}")
    return time.monotonic() - start


def start_storescu(files: list[Path], port: int, calling: str) -> subprocess.Popen[bytes]:
    """storescu of the files to the node, running; its output dropped."""
    args = ["storescu", "-nh", "-aet", calling, "-aec", "MRISCRIBE", "127.0.0.1", str(port)]
    return subprocess.Popen(
        [*args, *map(str, files)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def latency(
    stack: ExitStack, work: Path, studies: list[Study], route: list[Study], stable_s: float
) -> dict[str, Any]:
    """Direct and routed latency, and the transfer baseline (storescu into Orthanc)."""
    pacs = stack.enter_context(start_orthanc(work / "pacs", stable_age_s=STABLE_AGE_S))
    node = Node(work / "node-latency", free_port(), pacs.dicom_port, stable_s).start()
    stack.callback(node.stop)
    direct, baseline = [], []
    for study in studies:
        send(study.files, node.port, "MRISCRIBE")
        stored = time.monotonic()
        arrived = wait(lambda s=study: results_in(pacs, s.uid) >= 3, "results")  # type: ignore[misc]
        direct.append(arrived - stored - stable_s)
        baseline.append(send(study.files, pacs.dicom_port, pacs.aet))

    node_port = free_port()
    modalities = {"mriscribe": ("MRISCRIBE", "127.0.0.1", node_port)}
    routing = stack.enter_context(
        start_orthanc(
            work / "routing", modalities=modalities, route_stable_to="mriscribe",
            stable_age_s=STABLE_AGE_S,
        )
    )  # fmt: skip
    routed_node = Node(work / "node-route", node_port, routing.dicom_port, stable_s).start()
    stack.callback(routed_node.stop)
    routed = []
    for study in route:
        send(study.files, routing.dicom_port, routing.aet, "SCANNER")
        stored = time.monotonic()
        arrived = wait(lambda s=study: results_in(routing, s.uid) >= 3, "routed results")  # type: ignore[misc]
        routed.append(arrived - stored)
    return {"direct": direct, "routed": routed, "baseline": baseline, "pacs": pacs, "node": node}


def load(pacs: Orthanc, node: Node, studies: list[Study]) -> dict[str, Any]:
    """All studies at once from three calling AEs."""
    groups: list[list[Path]] = [[] for _ in CALLING_AETS]
    for number, study in enumerate(studies):
        groups[number % len(groups)] += study.files
    start = time.monotonic()
    senders = [
        start_storescu(files, node.port, aet)
        for aet, files in zip(CALLING_AETS, groups, strict=True)
    ]
    failed = [p.args[3] for p in senders if p.wait(timeout=WAIT_S) != 0]
    done = wait(lambda: all(results_in(pacs, s.uid) >= 3 for s in studies), "load results")
    once = sum(exactly_once(pacs, s.uid) for s in studies)
    return {"seconds": done - start, "delivered": once, "failed_senders": failed}


def crash_receiving(pacs: Orthanc, node: Node, studies: list[Study]) -> dict[str, Any]:
    """kill -9 while three studies arrive; restart; the sender sends them all again."""
    files = [path for study in studies for path in study.files]
    sender = start_storescu(files, node.port, "SCU_A")
    wait(lambda: node.incoming() >= 10, "instances spooled", 60)
    node.kill()
    spooled = node.incoming()
    sender.wait(timeout=60)
    node.start()
    send(files, node.port, "MRISCRIBE", "SCU_A")
    wait(lambda: all(results_in(pacs, s.uid) >= 3 for s in studies), "results after the crash")
    once = sum(exactly_once(pacs, s.uid) for s in studies)
    return {"spooled_at_kill": spooled, "sender_rc": sender.returncode, "delivered": once}


def crash_sending(pacs: Orthanc, node: Node, studies: list[Study]) -> dict[str, Any]:
    """kill -9 as soon as the first result of three studies reaches Orthanc; restart."""
    before = int(pacs.get("/statistics")["CountInstances"])
    for study in studies:
        send(study.files, node.port, "MRISCRIBE", "SCU_B")
    wait(lambda: int(pacs.get("/statistics")["CountInstances"]) > before, "a first result")
    node.kill()
    at_kill = sum(results_in(pacs, s.uid) for s in studies)
    node.start()
    wait(lambda: all(results_in(pacs, s.uid) >= 3 for s in studies), "results after the crash")
    time.sleep(node.stable_s + 2)  # room for a duplicate, were one to come
    once = sum(exactly_once(pacs, s.uid) for s in studies)
    return {"results_at_kill": at_kill, "delivered": once}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stable-s", type=float, default=1.0)
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--report-engine", choices=("template", "chain"), default="template",
                        help="the node's report writer (chain: the language model, deadline 3 s)")
    args = parser.parse_args(argv)
    Node.engine = args.report_engine
    if not COLIN27.exists():
        print(f"needs {COLIN27}: apt-get install mricron-data", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="dicom-node-bench-") as folder, ExitStack() as stack:
        work = Path(folder)
        counts = {"direct": args.rounds, "route": args.rounds, "load": args.studies,
                  "receiving": 3, "sending": 3}  # fmt: skip
        made: dict[str, list[Study]] = {}
        seed = 1000
        for name, count in counts.items():
            made[name] = []
            for _ in range(count):
                made[name].append(Study(work / "studies" / str(seed), seed))
                seed += 1
        measured = latency(stack, work, made["direct"], made["route"], args.stable_s)
        pacs, node = measured["pacs"], measured["node"]
        loaded = load(pacs, node, made["load"])
        receiving = crash_receiving(pacs, node, made["receiving"])
        sending = crash_sending(pacs, node, made["sending"])
    return report(args, measured, loaded, receiving, sending)


def report(
    args: argparse.Namespace,
    measured: dict[str, Any],
    loaded: dict[str, Any],
    receiving: dict[str, Any],
    sending: dict[str, Any],
) -> int:
    direct, routed, baseline = measured["direct"], measured["routed"], measured["baseline"]
    waits = STABLE_AGE_S + args.stable_s
    rows: list[tuple[str, str, str, bool | None]] = [
        ("direct: results after the stable time, median", f"{statistics.median(direct):.2f} s",
         f"<= {TARGET_S:.0f} s", statistics.median(direct) <= TARGET_S),
        ("direct: results after the stable time, max", f"{max(direct):.2f} s", "", None),
        ("via Orthanc: results after the last instance, median",
         f"{statistics.median(routed):.2f} s", "", None),
        (f"via Orthanc: less StableAge + stable time ({waits:g} s), median",
         f"{statistics.median(routed) - waits:.2f} s", f"<= {TARGET_S:.0f} s",
         statistics.median(routed) - waits <= TARGET_S),
        ("via Orthanc: less StableAge + stable time, max", f"{max(routed) - waits:.2f} s", "",
         None),
        ("baseline: storescu of 24 slices into Orthanc, median",
         f"{statistics.median(baseline):.2f} s", "", None),
        (f"load: {args.studies} studies from {len(CALLING_AETS)} AEs, delivered exactly once",
         f"{loaded['delivered']}/{args.studies}", "all", loaded["delivered"] == args.studies
         and not loaded["failed_senders"]),
        ("load: time to deliver all", f"{loaded['seconds']:.1f} s", "", None),
        (f"crash while receiving ({receiving['spooled_at_kill']} instances spooled at kill): "
         "exactly once", f"{receiving['delivered']}/3", "all", receiving["delivered"] == 3),
        (f"crash while sending ({sending['results_at_kill']} results in Orthanc at kill): "
         "exactly once", f"{sending['delivered']}/3", "all", sending["delivered"] == 3),
    ]  # fmt: skip
    width = max(len(row[0]) for row in rows)
    print(f"{'measure':<{width}}  {'value':>9}  {'target':>7}  met")
    for name, value, target, met in rows:
        verdict = "" if met is None else "yes" if met else "NO"
        print(f"{name:<{width}}  {value:>9}  {target:>7}  {verdict}")
    print(f"report engine {args.report_engine}, rounds {args.rounds}, node stable time "
          f"{args.stable_s:g} s, StableAge {STABLE_AGE_S} s;"
          " direct rounds: " + ", ".join(f"{t:.2f}" for t in direct) + " s")  # fmt: skip
    ok = all(met for *_, met in rows if met is not None)
    if args.json:
        results = {"direct_s": direct, "routed_s": routed, "baseline_s": baseline,
                   "load": loaded, "crash_receiving": receiving, "crash_sending": sending,
                   "met": ok}  # fmt: skip
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
