"""The service-era commands: serve, analyze, models, verify-report and keys (``detect`` lives
in cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mriscribe.errors import OutputError
from mriscribe.settings import Settings, load_settings


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from --config, the environment, and the flags the user gave."""
    overrides: dict[str, Any] = {
        "model_path": getattr(args, "model", None),
        "conf_threshold": getattr(args, "conf", None),
        "iou_threshold": getattr(args, "iou", None),
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "default_spacing_mm": getattr(args, "spacing", None),
        "nifti_step": getattr(args, "nifti_step", None),
        "report_engine": getattr(args, "report_engine", None),
        "allow_unauthenticated": getattr(args, "allow_unauthenticated", None) or None,
        "api_keys_file": getattr(args, "keys_file", None),
    }
    return load_settings(getattr(args, "config", None), **overrides)


def serve(args: argparse.Namespace) -> int:
    from mriscribe.service import server
    from mriscribe.service.logs import configure_logging

    settings = settings_from(args)
    configure_logging(settings.log_level)
    # A refusal to start (SettingsError, naming the setting) is printed plainly by the CLI:
    # stderr is still the terminal until the C libraries' output is captured below.
    app = server.prepare(settings)
    configure_logging(settings.log_level, capture_native=True)
    server.run(settings, app)
    return 0


def dicom_node(args: argparse.Namespace) -> int:
    """Run the DICOM node until SIGTERM or Ctrl-C (both stop it cleanly)."""
    import signal
    import threading

    from mriscribe.node.node import DicomNode
    from mriscribe.service.logs import configure_logging

    overrides: dict[str, Any] = {
        "node_port": args.port,
        "node_host": args.host,
        "node_ae_title": args.ae_title,
        "node_send_to": args.send_to,
        "node_stow_url": args.stow_url,
        "node_stable_s": args.stable_s,
        "node_spool_dir": args.spool,
        "node_allowed_calling_aets": args.allow_calling_ae,
        "node_retention_h": args.retention_h,
        "node_report_engine": args.report_engine,
    }
    settings = load_settings(
        args.config,
        model_path=args.model,
        **{key: value for key, value in overrides.items() if value is not None},
    )
    configure_logging(settings.log_level)
    node = DicomNode(settings)
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    node.start()
    print(
        f"DICOM node {settings.node_ae_title} listening on {settings.node_host}:{node.port}; "
        f"results to {', '.join(d.label for d in node.destinations)}",
        file=sys.stderr,
    )
    stop.wait()
    node.stop()
    return 0


def keys_secret(args: argparse.Namespace) -> int:
    """Write a new server secret (0600) to --file or api_key_secret_file."""
    from mriscribe.service.keys import write_secret

    path = args.file or settings_from(args).api_key_secret_file
    if path is None:
        print("error: give --file PATH, or set api_key_secret_file", file=sys.stderr)
        return 2
    write_secret(path, force=args.force)
    print(f"wrote a new server secret to {path} (mode 0600); set api_key_secret_file to it",
          file=sys.stderr)
    return 0


def keys_create(args: argparse.Namespace) -> int:
    """Make a key: the key itself on stdout, once; only its keyed digest is stored."""
    key_file = _key_file(args)
    record, key = key_file.create(args.name, args.scope)
    print(key)
    print(f"created key {record.id} ({record.name}, scope {record.scope}) in {key_file.path}; "
          "the key above is shown only now", file=sys.stderr)
    return 0


def keys_list(args: argparse.Namespace) -> int:
    """The keys without their secret: id, name, scope, created, revoked."""
    keys = [key.listing() for key in _key_file(args).read()]
    if not args.all:
        keys = [key for key in keys if key["revoked"] is None]
    if args.json:
        print(json.dumps(keys, indent=2))
        return 0
    print(f"{'id':<12}  {'name':<24}  {'scope':<7}  {'created':<25}  revoked")
    for key in keys:
        print(f"{key['id']:<12}  {key['name']:<24}  {key['scope']:<7}  {key['created']:<25}  "
              f"{key['revoked'] or '-'}")
    return 0


def keys_revoke(args: argparse.Namespace) -> int:
    """Revoke a key by id or name; a running service refuses it from its next request."""
    record = _key_file(args).revoke(args.key)
    print(f"revoked key {record.id} ({record.name})", file=sys.stderr)
    return 0


def _key_file(args: argparse.Namespace) -> Any:
    from mriscribe.service.keys import KeyFile, load_secret
    from mriscribe.settings import SettingsError

    settings = settings_from(args)
    if settings.api_keys_file is None:
        raise SettingsError(
            "api_keys_file: not set; set it (MRISCRIBE_API_KEYS_FILE or the TOML file) or pass "
            "--keys-file PATH"
        )
    return KeyFile(settings.api_keys_file, load_secret(settings))


# The analyze command's output flags: (flag's attribute, output names, folder or file).
DICOM_OUTPUTS = ("dicom-sr", "dicom-pr", "dicom-pdf")


def requested_outputs(args: argparse.Namespace) -> list[tuple[str, Path, bool]]:
    """(output name, path, whether the path is a folder) for each output the flags ask for."""
    wanted: list[tuple[str, Path, bool]] = []
    if args.json is not None:
        wanted.append(("json", args.json, False))
    if args.pdf is not None:
        wanted.append(("pdf", args.pdf, False))
    if args.dicom_out is not None:
        wanted.extend((name, args.dicom_out, True) for name in DICOM_OUTPUTS)
    if args.fhir is not None:
        wanted.append(("fhir", args.fhir, False))
    return wanted


def analyze(args: argparse.Namespace) -> int:
    from mriscribe import outputs, pipeline
    from mriscribe.imaging.files import expand_paths

    settings = settings_from(args)
    wanted = requested_outputs(args)
    if args.dicom_out is not None and args.dicom_out.exists() and not args.dicom_out.is_dir():
        print(f"error: {args.dicom_out}: is a file; --dicom-out takes a folder", file=sys.stderr)
        return 1
    files, skipped = expand_paths(args.paths)
    for path in skipped:
        print(f"note: {path}: skipped (not an image file)", file=sys.stderr)
    if not files:
        print("error: no image files found in the given paths", file=sys.stderr)
        return 1
    bar = _progress_bar(len(files)) if len(files) >= 8 and sys.stderr.isatty() else None

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    try:
        analysis = pipeline.analyze(
            files,
            settings,
            render_images=outputs.needs_images(name for name, _, _ in wanted),
            progress=progress,
        )
    except pipeline.InputProblemsError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        print("error: nothing was written; fix or remove the files above", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    try:
        made = outputs.render(
            analysis,
            [name for name, _, _ in wanted],
            {"fhir_version": args.fhir_version},
        )
    except outputs.OutputRefusedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print("error: nothing was written", file=sys.stderr)
        return 1
    written: list[tuple[Path, bytes]] = []
    for name, path, folder in wanted:
        for artifact in made[name]:
            written.append((path / artifact.name if folder else path, artifact.data))
    write_all_atomically(written)
    print(analysis.report.text)
    facts = analysis.facts
    print(
        f"\n{facts.image_count} image(s) in {len(facts.series)} series, "
        f"{len(facts.tumours)} tumour detection(s), {len(facts.lesions)} lesion(s)"
        + "".join(f"; wrote {path}" for path, _ in written),
        file=sys.stderr,
    )
    return 0


def models(args: argparse.Namespace) -> int:
    from mriscribe.detection import DEFAULT_MODEL
    from mriscribe.errors import MriscribeError
    from mriscribe.pipeline import get_detector

    settings = settings_from(args)
    entry: dict[str, Any] = {
        "detector": {
            "path": str(settings.model_path or DEFAULT_MODEL),
            "default": settings.model_path is None,
        },
        "report_engines": report_engines(settings),
    }
    try:
        info = get_detector(settings).info
        entry["detector"].update(loaded=True, **info.as_dict(), description=info.description)
        status = 0
    except MriscribeError as exc:
        entry["detector"].update(loaded=False, error=str(exc))
        status = 2
    node = node_status(settings)
    if node is not None:
        entry["dicom_node"] = node
    if args.json:
        print(json.dumps(entry, indent=2))
    else:
        detector = entry["detector"]
        print(f"detector: {detector['path']}{' (shipped default)' if detector['default'] else ''}")
        if detector.get("loaded"):
            print(f"  loaded on {detector['backend']}, input {detector['input_size']}")
            print(f"  classes: {', '.join(detector['classes'])}")
            if detector["version"]:
                print(f"  version {detector['version']}")
        else:
            print(f"  NOT loaded: {detector['error']}")
        writer = entry["report_engines"]
        print(f"report writer: {writer['mode']} (deadline {writer['deadline_s']:g} s)")
        for name, engine in writer["engines"].items():
            state = "installed" if engine["installed"] else f"missing {engine['missing']}"
            print(f"  engine {name}: {state}")
        for link in writer["chain"]:
            print(f"  chain: {link['model']}: {link['status']}"
                  + (f" ({link['reason']})" if link["reason"] else ""))
        print("  template: deterministic; always available")
        if node is not None:
            print(_node_lines(node))
    return status


def node_status(settings: Settings) -> dict[str, Any] | None:
    """The DICOM node's last status from its spool (node_spool_dir), if a node ran there."""
    from mriscribe.node.node import read_status

    found = read_status(settings.node_spool_dir)
    if found is None and settings.node_enabled:
        return {"listening": False, "ae_title": settings.node_ae_title,
                "port": settings.node_port, "note": "no node has run on this spool yet"}
    return found


def _node_lines(node: dict[str, Any]) -> str:
    state = "listening" if node.get("listening") else "not running"
    lines = [f"dicom node: {node.get('ae_title')} on port {node.get('port')}: {state}"]
    if "studies_receiving" in node:
        lines.append(
            f"  studies: {node['studies_receiving']} receiving, {node['studies_analysing']} "
            f"analysing, {node['studies_awaiting_delivery']} awaiting delivery; "
            f"{node['studies_delivered']} delivered (last {node['last_delivery'] or 'never'})"
        )
        lines.append(
            f"  errors: {node['delivery_errors']} delivery, {node['analysis_errors']} analysis"
            + (f"; last: {node['last_error']}" if node.get("last_error") else "")
        )
    if node.get("note"):
        lines.append(f"  {node['note']}")
    return "\n".join(lines)


def report_engines(settings: Settings) -> dict[str, Any]:
    """Which engines are installed, and (in chain mode) which model of the chain loads."""
    from mriscribe.report.engines import ENGINES, engine_module, missing_packages
    from mriscribe.report.writer import ReportWriter

    writer = ReportWriter(settings)
    writer.load()
    status = writer.status()
    writer.close()
    engines = {
        name: {
            "installed": not missing_packages(name),
            "missing": ", ".join(missing_packages(name)),
            "extra": engine_module(name).EXTRA,
        }
        for name in ENGINES
    }
    return {**status, "engines": engines, "template": {"available": True}}


def verify_report(args: argparse.Namespace) -> int:
    """Check a report text against saved findings: exit 0 accepted, 1 rejected, 2 bad input."""
    from mriscribe.report.facts import facts_from_results
    from mriscribe.report.template import detector_label
    from mriscribe.report.verify import split_sections, verify_sections, verify_text

    settings = settings_from(args)
    try:
        findings = json.loads(args.findings.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: {args.findings}: cannot be read ({_why(exc)})", file=sys.stderr)
        return 2
    except json.JSONDecodeError as exc:
        print(f"error: {args.findings}: not JSON ({exc})", file=sys.stderr)
        return 2
    threshold = settings.conf_threshold
    detector: str | None = None
    if isinstance(findings, dict) and "detection_results" in findings:
        model = findings.get("model")
        if isinstance(model, dict):
            # The threshold and detector the report was written with.
            stated = model.get("conf_threshold")
            if args.conf is None and isinstance(stated, int | float) and 0 < stated < 1:
                threshold = float(stated)
            name, version = model.get("name"), model.get("version")
            if isinstance(name, str) and name:
                detector = detector_label(name, str(version or ""))
        findings = findings["detection_results"]  # the whole /analyze-json answer
    try:
        text = args.text.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: {args.text}: cannot be read ({_why(exc)})", file=sys.stderr)
        return 2
    try:
        facts = facts_from_results(
            findings if isinstance(findings, dict) else {},
            default_spacing_mm=settings.default_spacing_mm,
            conf_threshold=threshold,
        )
    except ValueError as exc:
        print(f"error: {args.findings}: {exc}", file=sys.stderr)
        return 2
    sections = split_sections(text)
    if sections is None:
        verdict, checked = verify_text(text, facts), "the whole text"
    else:
        verdict = verify_sections(sections, facts, detector=detector)
        checked = (
            "every section of the report"
            if sections.whole
            else "its FINDINGS and IMPRESSION sections"
        )
    if verdict.accepted:
        print(f"accepted ({checked})")
        return 0
    print(f"rejected ({checked}):")
    for reason in verdict.reasons:
        print(f"  - {reason}")
    return 1


def write_atomically(path: Path, data: bytes) -> None:
    """Write via a temporary file beside ``path``, so a failure never leaves half a file."""
    write_all_atomically([(path, data)])


def write_all_atomically(outputs: list[tuple[Path, bytes]]) -> None:
    """Write every output to a temporary file beside it first, then move them all into place:
    if any cannot be written (a folder, no permission, a full disk), none is."""
    import os
    import tempfile

    temps: list[tuple[str, Path]] = []
    try:
        for path, data in outputs:
            if path.is_dir():
                raise OutputError(str(path), "is a folder; give a file name")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                handle, temp = tempfile.mkstemp(
                    dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
                )
                temps.append((temp, path))
                with os.fdopen(handle, "wb") as stream:
                    stream.write(data)
            except OSError as exc:
                raise OutputError(str(path), f"cannot be written ({exc.strerror})") from None
        for temp, path in temps:
            os.replace(temp, path)
    finally:
        for temp, _ in temps:
            Path(temp).unlink(missing_ok=True)


def _progress_bar(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="image", desc="analysing", file=sys.stderr, leave=False)


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", type=Path, default=None, help="a TOML settings file")
    config.add_argument("--model", type=Path, default=None, help="detector model file")

    p = commands.add_parser(
        "serve", parents=[config], help="run the HTTP service and upload page",
        description="Run the HTTP API (the prototype's routes) and the upload page.",
    )
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 5000)")
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="serve beyond loopback without API keys (refused otherwise)")
    p.set_defaults(handler=serve)

    p = commands.add_parser(
        "dicom-node", parents=[config], help="run the DICOM node (C-STORE in, results out)",
        description="Receive studies by C-STORE, analyse each once no instance of it has "
        "arrived for --stable-s seconds, and send the DICOM SR, presentation state and "
        "encapsulated PDF to --send-to (C-STORE) and/or --stow-url (STOW-RS). Every "
        "instance is on disk (the spool) before it is acknowledged; a restart resumes.",
    )
    p.add_argument("--port", type=int, default=None, help="DICOM port (default 11112)")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    p.add_argument("--ae-title", default=None, help="the node's AE title (default MRISCRIBE)")
    p.add_argument("--send-to", action="append", default=None, metavar="AE@HOST:PORT",
                   help="send results by C-STORE here (repeatable)")
    p.add_argument("--stow-url", default=None, metavar="URL",
                   help="send results by STOW-RS to this DICOMweb base URL")
    p.add_argument("--stable-s", type=float, default=None, metavar="S",
                   help="analyse a study once nothing of it arrived for S seconds (default 10)")
    p.add_argument("--spool", type=Path, default=None, metavar="DIR",
                   help="the spool folder (default ./mriscribe-spool)")
    p.add_argument("--allow-calling-ae", action="append", default=None, metavar="AE",
                   help="accept associations only from this calling AE title (repeatable)")
    p.add_argument("--retention-h", type=float, default=None, metavar="H",
                   help="keep a delivered study's files H hours (default 0: remove at once)")
    p.add_argument("--report-engine", choices=("chain", "template"), default=None,
                   help="the language model chain (default when installed) or the template")
    p.set_defaults(handler=dicom_node)

    p = commands.add_parser(
        "analyze", parents=[config], help="analyse images and write the report",
        description="Analyse image files and folders (PNG, JPEG, TIFF, DICOM, NIfTI) as one "
        "study; prints the report and writes the PDF, JSON, DICOM and FHIR results if asked. "
        "DICOM results need DICOM images of one study; the others work for every format.",
    )
    p.add_argument("paths", nargs="+", type=Path, help="image files or folders")
    p.add_argument("--pdf", type=Path, default=None, help="write the PDF report here")
    p.add_argument("--json", type=Path, default=None, help="write the JSON results here")
    p.add_argument("--dicom-out", type=Path, default=None, metavar="DIR",
                   help="write the DICOM results into this folder: the SR (TID 1500), the "
                   "presentation state and the report as an encapsulated PDF, each a new "
                   "series in the source study")
    p.add_argument("--fhir", type=Path, default=None, metavar="FILE",
                   help="write a FHIR Bundle (DiagnosticReport, an Observation per lesion) here")
    p.add_argument("--fhir-version", choices=("R4B", "R5"), default="R4B",
                   help="the FHIR release of --fhir (default R4B)")
    p.add_argument("--conf", type=float, default=None, help="confidence threshold")
    p.add_argument("--iou", type=float, default=None, help="NMS IoU threshold")
    p.add_argument("--spacing", type=float, default=None,
                   help="mm per pixel for files that state none (default 0.5, an estimate)")
    p.add_argument("--nifti-step", type=int, default=None,
                   help="NIfTI: every Nth axial slice through the brain (0: automatic)")
    p.add_argument("--report-engine", choices=("chain", "template"), default=None,
                   help="the language model chain (default when installed) or the template")
    p.set_defaults(handler=analyze)

    p = commands.add_parser(
        "verify-report", parents=[config], help="check a report text against findings",
        description="Run the faithfulness check alone: does REPORT.txt read as sentences of the "
        "report grammar bound to the findings? A whole mriscribe report is checked section by "
        "section (FINDINGS and IMPRESSION by the grammar, the others against the template). "
        "Exit 0 accepted, 1 rejected (the reasons are printed), 2 unreadable input.",
    )
    p.add_argument("--findings", type=Path, required=True,
                   help="FINDINGS.json: the 'detection_results' object of /analyze-json")
    p.add_argument("--text", type=Path, required=True, help="REPORT.txt: the text to check")
    p.add_argument("--spacing", type=float, default=None,
                   help="mm per pixel where the findings state none (default 0.5)")
    p.add_argument("--conf", type=float, default=None, help="the confidence threshold used")
    p.set_defaults(handler=verify_report)

    p = commands.add_parser(
        "models", parents=[config], help="show the detector and report engines",
        description="Show which detector and report engines are available and whether they load.",
    )
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(handler=models)
    _add_key_commands(commands, config)


def _add_key_commands(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    config: argparse.ArgumentParser,
) -> None:
    files = argparse.ArgumentParser(add_help=False, parents=[config])
    files.add_argument("--keys-file", type=Path, default=None,
                       help="the key file (default: the api_keys_file setting)")
    group = commands.add_parser(
        "keys", help="API keys: create, list, revoke; the server secret",
        description="API keys for the service. The key file holds only HMAC-SHA256 digests "
        "under a server secret (api_key_secret_file, or the variable api_key_secret_env "
        "names); a running service reads it again when it changes.",
    )
    keys = group.add_subparsers(dest="keys_command", required=True)

    p = keys.add_parser("create", parents=[files], help="make a key; prints it once",
                        description="Make a key and print it on stdout, once.")
    p.add_argument("--name", required=True, help="who or what uses it (letters, digits, ._-)")
    p.add_argument("--scope", choices=("analyze", "admin"), default="analyze",
                   help="analyze (the analysis routes) or admin (those and /metrics)")
    p.set_defaults(handler=keys_create)

    p = keys.add_parser("list", parents=[files], help="list keys (never their secret)")
    p.add_argument("--all", action="store_true", help="revoked keys too")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(handler=keys_list)

    p = keys.add_parser("revoke", parents=[files], help="revoke a key by id or name")
    p.add_argument("key", help="the key's id or name")
    p.set_defaults(handler=keys_revoke)

    p = keys.add_parser("secret", parents=[config], help="write a new server secret (0600)",
                        description="Write a new random server secret for hashing keys.")
    p.add_argument("--file", type=Path, default=None,
                   help="where (default: the api_key_secret_file setting)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing secret (every key made with it stops working)")
    p.set_defaults(handler=keys_secret)


def _why(exc: Exception) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or type(exc).__name__
