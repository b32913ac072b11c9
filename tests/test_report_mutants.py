"""The verifier rejects every unfaithful text: generated mutants and outside reviewers' texts.

Mutants (tests/mutants.py) are faithful texts (the template's, the prompt's worked examples')
changed in one known way each, from fixed seeds; every one states something its facts do not
hold. external.json holds texts written by reviewers outside the project, each contradicting
its findings. The template's own texts, unchanged, must pass: a verifier that rejected them
would reject everything.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import run_cli
from mriscribe.report.facts import StudyFacts, facts_from_results
from mriscribe.report.verify import verify_text
from mutants import KINDS, Mutant, all_mutants, faithful_sources

MIN_PER_KIND = 20
MIN_TOTAL = 500
SHOWN = 4  # accepted mutants shown in a failure message

REPORTS = Path(__file__).parent / "fixtures" / "reports"
EXTERNAL: list[dict] = json.loads((REPORTS / "external.json").read_text(encoding="utf-8"))
EXTERNAL_BY_ID = {case["id"]: case for case in EXTERNAL}
EXTERNAL_DEFECTS = {
    "threshold_as_confidence",
    "swapped_values",
    "wrong_count",
    "negative_flip",
    "qualifier",
    "time",
    "location",
    "feature",
    "estimate_as_measurement",
    "wrong_size",
    "wrong_confidence",
    "wrong_class",
    "wrong_image",
    "number_in_words",
    "foreign_sentence",
}
# A few external texts also checked through the command line, as a user would.
CLI_CASES = (
    "ext-threshold-as-confidence",
    "ext-radiologist-agreed",
    "ext-hippocampal-glioma",
    "ext-enlarging-meningioma",
)

# What each kind's mutants must include, read from their change notes: the variants the
# mutators promise (sizes and confidences swapped, counts up and down, ...).
VARIANTS = {
    "swapped_values": ("sizes ", "confidences "),
    "threshold_as_confidence": ("confidence ",),
    "count_off_by_one": ("(up,", "(down,", "in the FINDINGS", "in the IMPRESSION", "kind count"),
    "negation_flip": (
        "Positive study -> Negative study",
        "Negative study -> Positive study",
        "Indeterminate study -> ",
        "Tumour detections: none",
        "(it has a tumour)",
        "(it has none)",
    ),
    "image_moved": ("(another image)", "(beyond "),
    "class_renamed": ("in the FINDINGS", "in the IMPRESSION"),
    "qualifier_appended": ("appended ", "added ", "before "),
    "location_inserted": ("before ", "after "),
    "time_word_inserted": ("before ", "after ", "appended ", "added "),
    "feature_inserted": ("before ", "after "),
    "number_in_words": ("size ", "confidence "),
    "foreign_sentence": ("inserted 'Image ", "inserted 'Tumour detections", " study"),
    "size_changed": ("size ",),
    "confidence_changed": ("confidence ",),
    "hedge_removed": ("hedge removed: 'Image ",),
}


def describe(mutant: Mutant) -> str:
    return f"[{mutant.source}] {mutant.change}\n{mutant.text}"


def external_facts(case: dict) -> StudyFacts:
    """The facts of an external case's findings, read as verify-report reads them."""
    return facts_from_results(case["findings"], default_spacing_mm=0.5, conf_threshold=0.25)


# The generator ------------------------------------------------------------------------------


def test_every_kind_has_enough_mutants() -> None:
    counts = Counter(mutant.kind for mutant in all_mutants())
    short = {kind: counts[kind] for kind in KINDS if counts[kind] < MIN_PER_KIND}
    assert not short, f"kinds with fewer than {MIN_PER_KIND} mutants: {short}"
    assert sum(counts.values()) >= MIN_TOTAL, dict(counts)


@pytest.mark.parametrize("kind", KINDS)
def test_mutants_cover_each_variant_of_their_kind(kind: str) -> None:
    changes = [mutant.change for mutant in all_mutants() if mutant.kind == kind]
    missing = [variant for variant in VARIANTS[kind] if not any(variant in c for c in changes)]
    assert not missing, f"no {kind} mutant with {missing}"


def test_mutants_come_from_the_examples_and_the_template() -> None:
    for kind in KINDS:
        sources = {mutant.source.split(" ")[0] for mutant in all_mutants() if mutant.kind == kind}
        assert sources == {"example", "study"}, f"{kind}: sources {sources}"


def test_mutants_differ_from_their_source_and_from_each_other() -> None:
    originals = {source.name: source.text for source in faithful_sources()}
    unchanged = [m for m in all_mutants() if m.text == originals[m.source]]
    assert not unchanged, describe(unchanged[0])
    keys = [(mutant.kind, mutant.text) for mutant in all_mutants()]
    assert len(set(keys)) == len(keys)


def test_mutants_are_the_same_every_run() -> None:
    """Fixed seeds and no dependence on hash order: another process with another hash seed makes
    the very same mutants, so a failure names the same ones on every run and machine."""
    digest = "import hashlib, mutants; print(hashlib.sha256(repr([(m.kind, m.text) for m in "
    digest += "mutants.all_mutants()]).encode()).hexdigest())"
    result = subprocess.run(
        [sys.executable, "-c", digest],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parent,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert result.returncode == 0, result.stderr
    here = [(mutant.kind, mutant.text) for mutant in all_mutants()]
    assert result.stdout.strip() == hashlib.sha256(repr(here).encode()).hexdigest()


# The verifier on faithful sources and on mutants ----------------------------------------------


def test_template_texts_are_accepted_unchanged() -> None:
    """The sanity check: every faithful source the mutants start from passes as it is."""
    refused = []
    for source in faithful_sources():
        verdict = verify_text(source.text, source.facts)
        if not verdict.accepted:
            refused.append(f"[{source.name}] {'; '.join(verdict.reasons)}\n{source.text}")
    if refused:
        shown = "\n\n".join(refused[:SHOWN])
        message = f"{len(refused)} faithful texts rejected; first ones:"
        pytest.fail(f"{message}\n\n{shown}", pytrace=False)


@pytest.mark.parametrize("kind", KINDS)
def test_every_mutant_is_rejected(kind: str) -> None:
    mutants = [mutant for mutant in all_mutants() if mutant.kind == kind]
    accepted = []
    for mutant in mutants:
        verdict = verify_text(mutant.text, mutant.facts)
        if verdict.accepted or not verdict.reasons:
            accepted.append(mutant)
    if accepted:
        shown = "\n\n".join(describe(mutant) for mutant in accepted[:SHOWN])
        message = f"{len(accepted)} of {len(mutants)} {kind} mutants accepted; first ones:"
        pytest.fail(f"{message}\n\n{shown}", pytrace=False)


# The outside reviewers' texts -----------------------------------------------------------------


def test_external_set_is_well_formed() -> None:
    assert len(EXTERNAL) >= 25
    assert len(EXTERNAL_BY_ID) == len(EXTERNAL), "duplicate ids"
    for case in EXTERNAL:
        assert set(case) == {"id", "defect", "why", "findings", "text"}, case["id"]
        assert case["defect"] in EXTERNAL_DEFECTS, case["id"]
        assert external_facts(case).images, case["id"]
    assert set(CLI_CASES) <= set(EXTERNAL_BY_ID)


@pytest.mark.parametrize("case", EXTERNAL, ids=[case["id"] for case in EXTERNAL])
def test_external_text_is_rejected(case: dict) -> None:
    verdict = verify_text(case["text"], external_facts(case))
    assert not verdict.accepted, f"accepted, but: {case['why']}\n{case['text']}"
    assert verdict.reasons


def verify_report(tmp_path: Path, case: dict) -> subprocess.CompletedProcess:
    findings = tmp_path / "findings.json"
    findings.write_text(json.dumps(case["findings"]), encoding="utf-8")
    text = tmp_path / "report.txt"
    text.write_text(case["text"], encoding="utf-8")
    return run_cli("verify-report", "--findings", str(findings), "--text", str(text))


@pytest.mark.parametrize("case_id", CLI_CASES)
def test_external_text_is_rejected_by_the_command(tmp_path: Path, case_id: str) -> None:
    result = verify_report(tmp_path, EXTERNAL_BY_ID[case_id])
    assert result.returncode == 1, result.stdout + result.stderr
    assert "rejected" in result.stdout
    assert "Traceback" not in result.stderr
