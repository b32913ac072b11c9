"""`mriscribe verify-report` accepts, rejects and refuses input with the documented exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import run_cli
from mriscribe.report.facts import facts_from_results
from mriscribe.report.template import template_report

REPORTS = Path(__file__).parent / "fixtures" / "reports"
ADVERSARIAL = {case["id"]: case for case in json.loads((REPORTS / "adversarial.json").read_text())}
FAITHFUL = {case["id"]: case for case in json.loads((REPORTS / "faithful.json").read_text())}
GOOD = "good-single-glioma"
BAD = ("wc-glioma-called-meningioma", "is-left-frontal", "trunc-mid-size")


def verify(tmp_path: Path, findings: object, text: str) -> subprocess.CompletedProcess:
    """Write the findings (as JSON) and the text to files and run verify-report on them."""
    findings_path = tmp_path / "findings.json"
    findings_path.write_text(json.dumps(findings), encoding="utf-8")
    text_path = tmp_path / "report.txt"
    text_path.write_text(text, encoding="utf-8")
    return run_cli("verify-report", "--findings", str(findings_path), "--text", str(text_path))


def test_fixture_ids_used_here_exist() -> None:
    assert GOOD in FAITHFUL
    assert set(BAD) <= set(ADVERSARIAL)


def test_faithful_text_is_accepted(tmp_path: Path) -> None:
    case = FAITHFUL[GOOD]
    result = verify(tmp_path, case["findings"], case["text"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "accepted" in result.stdout
    assert "rejected" not in result.stdout


@pytest.mark.parametrize("case_id", BAD)
def test_adversarial_text_is_rejected_with_reasons(tmp_path: Path, case_id: str) -> None:
    case = ADVERSARIAL[case_id]
    result = verify(tmp_path, case["findings"], case["text"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert "rejected" in result.stdout
    reasons = [line for line in result.stdout.splitlines() if line.startswith("  - ")]
    assert reasons, result.stdout
    assert "Traceback" not in result.stderr


def test_whole_analyze_json_answer_is_accepted_as_findings(tmp_path: Path) -> None:
    case = FAITHFUL[GOOD]
    answer = {"success": True, "detection_results": case["findings"], "report": "..."}
    result = verify(tmp_path, answer, case["text"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "accepted" in result.stdout


def test_wrapped_findings_still_reject_an_unfaithful_text(tmp_path: Path) -> None:
    case = ADVERSARIAL["wc-glioma-called-meningioma"]
    result = verify(tmp_path, {"detection_results": case["findings"]}, case["text"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert "rejected" in result.stdout


def whole_report(case: dict) -> str:
    facts = facts_from_results(case["findings"], default_spacing_mm=0.5, conf_threshold=0.25)
    return template_report(facts, model_name="mriscribe-yolov8n", model_version="1.0").text


def test_a_whole_report_is_checked_section_by_section(tmp_path: Path) -> None:
    text = whole_report(FAITHFUL[GOOD])
    assert "RECOMMENDATIONS:" in text  # the whole report, not only its narrative
    result = verify(tmp_path, FAITHFUL[GOOD]["findings"], text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "accepted (every section of the report)" in result.stdout


@pytest.mark.parametrize(
    ("old", "new", "section"),
    [
        ("Radiologist review of all images", "No need for review of all images", "RECOMMENDATIONS"),
        ("Brain MRI: 1 image", "Brain MRI with contrast: 1 image", "EXAMINATION"),
    ],
)
def test_a_whole_report_with_an_altered_section_exits_1(
    tmp_path: Path, old: str, new: str, section: str
) -> None:
    text = whole_report(FAITHFUL[GOOD])
    assert old in text
    result = verify(tmp_path, FAITHFUL[GOOD]["findings"], text.replace(old, new))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"the {section} section is not what the template makes of the findings" in (
        result.stdout
    )


def test_the_narrative_sections_alone_are_checked_as_a_narrative(tmp_path: Path) -> None:
    case = FAITHFUL[GOOD]
    sections = whole_report(case).split("\n\n")
    narrative = "\n\n".join(
        part for part in sections if part.startswith(("FINDINGS", "IMPRESSION"))
    )
    result = verify(tmp_path, case["findings"], narrative)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "its FINDINGS and IMPRESSION sections" in result.stdout


def test_missing_findings_file_exits_2(tmp_path: Path) -> None:
    text_path = tmp_path / "report.txt"
    text_path.write_text(FAITHFUL[GOOD]["text"], encoding="utf-8")
    missing = tmp_path / "no-such-findings.json"
    result = run_cli("verify-report", "--findings", str(missing), "--text", str(text_path))
    assert result.returncode == 2
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr


def test_findings_that_are_not_json_exit_2(tmp_path: Path) -> None:
    findings_path = tmp_path / "findings.json"
    findings_path.write_text("images: [1, 2", encoding="utf-8")
    text_path = tmp_path / "report.txt"
    text_path.write_text(FAITHFUL[GOOD]["text"], encoding="utf-8")
    result = run_cli("verify-report", "--findings", str(findings_path), "--text", str(text_path))
    assert result.returncode == 2
    assert str(findings_path) in result.stderr
    assert "not JSON" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "findings",
    [{"success": True}, [1, 2, 3], "images", {"detection_results": {"count": 0}}],
    ids=["object-without-images", "a-list", "a-string", "wrapped-without-images"],
)
def test_findings_without_images_exit_2(tmp_path: Path, findings: object) -> None:
    result = verify(tmp_path, findings, FAITHFUL[GOOD]["text"])
    assert result.returncode == 2
    assert "images" in result.stderr
    assert "Traceback" not in result.stderr
    assert "accepted" not in result.stdout
