"""The report writer: latency, faithfulness, faults and memory, against the prototype's
generation on the same model in the same run.

    python bench/report_latency.py [--cases 50] [--baseline-cases 5] [--json results.json]

1. 50 varied finding sets (seeded: 1-6 images, 0-3 tumours of the three classes, negative and
   no-detection images, measured and estimated sizes) through ReportWriter with the default
   model (Gemma 3 270M Q4_K_M, llama-cpp, all cores, decoding inside the report grammar;
   --with-impression also measures the model writing the IMPRESSION): report time p50/p95 (the
   whole writer: prompt, generation, verification, template fallback), the share of reports
   whose model text was accepted, and every final narrative checked again by the verifier.
2. Unfaithful texts: the adversarial mutants (tests/mutants.py: 15 kinds of mutation of
   faithful texts) and the hand-written sets (tests/fixtures/reports/adversarial.json and
   external.json): the verifier must accept none.
3. Faults: an engine that never returns, and an OpenAI-compatible server that trickles a byte a
   second: each of 5 consecutive reports must return within the deadline + 0.2 s, as the
   template with the reason.
4. Baseline: the prototype's generation on the same model and machine: transformers
   generate(), FP32, its long prompt, greedy, max 256 new tokens; mean time per report against
   ours on the same finding sets.
5. Memory: a real `mriscribe serve` with the default LLM loaded, after 20 reports: RSS.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from mriscribe.report.engines.llama_cpp import LlamaCppEngine, resolve_model
from mriscribe.report.engines.openai import OpenAIEngine
from mriscribe.report.facts import FindingFact, StudyFacts, facts_from_results, image_facts
from mriscribe.report.prompt import PREFIX
from mriscribe.report.verify import verify_text
from mriscribe.report.writer import ReportWriter
from mriscribe.settings import Settings

# bench/ is on the path when run as a script
from service_latency import rss_mb, start_server, wait_for_language_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from mutants import all_mutants  # noqa: E402
from test_llm_writer import StalledEngine  # noqa: E402  (an engine that never returns)
from test_openai_engine import SlowServer  # noqa: E402

TARGETS = {"p50_s": 0.5, "p95_s": 1.0, "speedup": 20.0, "accepted_share": 0.95, "rss_mb": 900.0}
FAULT_DEADLINE_S = 1.0
FAULT_SLACK_S = 0.2
CLASSES = ("Glioma", "Meningioma", "Pituitary")


def finding_sets(count: int, seed: int = 0) -> list[StudyFacts]:
    """Varied studies: 1-6 images (single slices most often), 0-3 tumours."""
    rng = random.Random(seed)
    studies = []
    for _ in range(count):
        images = rng.choice([1, 1, 1, 2, 2, 3, 4, 6])
        tumours = min(rng.choice([0, 0, 1, 1, 1, 1, 2, 2, 3]), images * 2)
        estimated = rng.random() < 0.5
        found: dict[int, list[FindingFact]] = {number: [] for number in range(1, images + 1)}
        for _ in range(tumours):
            number = rng.randint(1, images)
            width = round(rng.uniform(6, 55), 1)
            found[number].append(
                FindingFact(
                    number,
                    rng.choice(CLASSES),
                    round(rng.uniform(0.3, 0.98), 4),
                    width,
                    round(width * rng.uniform(0.6, 1.0), 1),
                    estimated,
                )
            )
        for number, findings in found.items():
            if not findings and rng.random() < 0.75:
                conf = round(rng.uniform(0.4, 0.98), 4)
                findings.append(FindingFact(number, "No Tumor", conf, 100.0, 105.0, estimated))
        source = "default 0.5 mm/px (estimate)" if estimated else "DICOM PixelSpacing"
        studies.append(
            StudyFacts(
                tuple(image_facts(n, f, source, estimated) for n, f in found.items()), 0.25
            )
        )
    return studies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure_writer(
    studies: list[StudyFacts], log: list[dict[str, Any]], *, impression: bool = False
) -> dict[str, Any]:
    settings = Settings(report_engine="chain", llm_writes_impression=impression)
    engine = LlamaCppEngine(threads=0, warm_prefix=PREFIX)
    writer = ReportWriter(settings, engines=[engine])
    times: list[float] = []
    accepted = unfaithful = 0
    reasons: dict[str, int] = {}
    for number, facts in enumerate(studies):
        started = time.perf_counter()
        report = writer.write(facts, model_name="mriscribe-yolov8n")
        times.append(time.perf_counter() - started)
        narrative = f"{report.sections['FINDINGS']}\n{report.sections['IMPRESSION']}"
        verdict = verify_text(narrative, facts)
        unfaithful += not verdict.accepted
        if report.engine != "template":
            accepted += 1
        else:
            key = (report.fallback_reason or "").split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
        log.append(
            {
                "case": number,
                "seconds": round(times[-1], 3),
                "engine": report.engine,
                "fallback_reason": report.fallback_reason,
                "findings": report.sections["FINDINGS"],
                "impression": report.sections["IMPRESSION"],
            }
        )
    engine.close()
    return {
        "cases": len(studies),
        "p50_s": round(percentile(times, 0.5), 3),
        "p95_s": round(percentile(times, 0.95), 3),
        "mean_s": round(statistics.mean(times), 3),
        "accepted": accepted,
        "accepted_share": round(accepted / len(studies), 3),
        "unfaithful_in_output": unfaithful,
        "fallback_reasons": reasons,
        "times": times,
    }


def adversarial() -> dict[str, Any]:
    """Every unfaithful text we have: none may be accepted."""
    mutants = all_mutants()
    accepted_mutants = [m for m in mutants if verify_text(m.text, m.facts).accepted]
    kinds = sorted({m.kind for m in mutants})
    cases = []
    for name in ("adversarial.json", "external.json"):
        cases += json.loads((ROOT / "tests/fixtures/reports" / name).read_text())
    missed = []
    for case in cases:
        facts = facts_from_results(case["findings"], default_spacing_mm=0.5, conf_threshold=0.25)
        if verify_text(case["text"], facts).accepted:
            missed.append(case["id"])
    return {
        "mutants": len(mutants),
        "mutant_kinds": len(kinds),
        "mutants_accepted": len(accepted_mutants),
        "hand_written": len(cases),
        "hand_written_accepted": missed,
    }


def faults(studies: list[StudyFacts]) -> dict[str, Any]:
    """Five consecutive reports against a stalled engine and against a trickling server."""
    settings = Settings(report_engine="chain", report_deadline_s=FAULT_DEADLINE_S)
    results: dict[str, Any] = {}
    stalled = StalledEngine()
    server = SlowServer("body", interval=1.0, give_up_s=60)
    trickled = OpenAIEngine("m", server.url, check=False)
    try:
        for label, engine in (("stalled engine", stalled), ("trickling server", trickled)):
            writer = ReportWriter(settings, engines=[engine])
            times, reasons = [], []
            for facts in studies[:5]:
                started = time.perf_counter()
                report = writer.write(facts, model_name="mriscribe-yolov8n")
                times.append(round(time.perf_counter() - started, 3))
                reasons.append(report.fallback_reason if report.engine == "template" else None)
            results[label] = {
                "seconds": times,
                "worst_s": max(times),
                "all_template_with_reason": all(reasons),
                "reasons": sorted(set(filter(None, reasons))),
            }
    finally:
        stalled.close()
        server.close()
    return results


def prototype_prompt(facts: StudyFacts) -> str:
    """The prototype's long prompt: role, the raw detections, and a long list of asks."""
    detections = []
    for image in facts.images:
        for fact in (*image.tumours, *image.negatives):
            detections.append(
                f"- Image {image.number}: class={fact.class_name}, "
                f"confidence={fact.confidence:.4f}, bbox size={fact.width_mm:.2f}x"
                f"{fact.height_mm:.2f} mm"
            )
    listing = "\n".join(detections) or "- No detections"
    return (
        "You are an expert neuroradiologist with many years of experience in interpreting "
        "brain MRI scans. You have been provided with the results of an automated deep "
        "learning tumour detection system (YOLO) that analysed brain MRI slices. Based on the "
        "detection results below, write a comprehensive, professional medical report suitable "
        "for a referring clinician.\n\n"
        f"Number of images analysed: {facts.image_count}\n"
        f"Detection results:\n{listing}\n\n"
        "The report should include the following sections:\n"
        "1. Clinical Indication and Technique: describe the imaging technique and the "
        "automated analysis performed.\n"
        "2. Findings: describe each detected abnormality in detail, including its type, size, "
        "and the confidence of the detection, and comment on the images without findings.\n"
        "3. Impression: summarise the most important findings and the likely diagnosis.\n"
        "4. Differential Diagnosis: list the possible alternative diagnoses.\n"
        "5. Recommendations: suggest appropriate follow-up imaging, specialist referral and "
        "further investigations.\n"
        "6. Disclaimer: note the limitations of automated analysis.\n"
        "Use clear, concise medical terminology.\n\nMEDICAL REPORT:\n"
    )


def measure_baseline(studies: list[StudyFacts]) -> dict[str, Any]:
    """transformers generate, FP32, greedy, one beam, the KV cache, max 256 new tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mriscribe.report.engines.transformers import convert_gguf

    folder = convert_gguf(resolve_model("default"), ROOT / ".cache/gemma-3-270m-transformers")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    times, tokens = [], []
    for facts in studies:
        inputs = tokenizer(
            prototype_prompt(facts), return_tensors="pt", truncation=True, max_length=1024
        )
        started = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(
                **inputs, max_new_tokens=256, do_sample=False, num_beams=1, use_cache=True,
                pad_token_id=tokenizer.eos_token_id,
            )
        times.append(time.perf_counter() - started)
        tokens.append(int(output.shape[1] - inputs["input_ids"].shape[1]))
    return {
        "cases": len(studies),
        "mean_s": round(statistics.mean(times), 3),
        "new_tokens_mean": statistics.mean(tokens),
        "prompt_tokens_mean": statistics.mean(
            len(tokenizer(prototype_prompt(f))["input_ids"]) for f in studies
        ),
    }


def measure_service_rss(reports: int = 20) -> dict[str, Any]:
    process, url = start_server("chain")
    try:
        wait_for_language_model(url)
        images = sorted((ROOT / "tests/fixtures/heldout").glob("*.png"))
        engines = set()
        for number in range(reports):
            image = images[number % len(images)]
            response = httpx.post(
                f"{url}/analyze-json",
                files=[("images", (image.name, image.read_bytes(), "image/png"))],
                timeout=60,
            )
            engines.add(response.json()["report"]["engine"])
        return {
            "reports": reports,
            "engines_seen": sorted(engines),
            "rss_mb": round(rss_mb(process.pid), 1),
            "peak_rss_mb": round(rss_mb(process.pid, "VmHWM"), 1),
        }
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=50)
    parser.add_argument("--baseline-cases", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--texts", type=Path, default=None, help="write every report text here")
    parser.add_argument(
        "--with-impression",
        action="store_true",
        help="also measure llm_writes_impression=true (the model writes the IMPRESSION too)",
    )
    args = parser.parse_args()

    studies = finding_sets(args.cases)
    log: list[dict[str, Any]] = []
    ours = measure_writer(studies, log)
    print(
        f"writer, {ours['cases']} finding sets: p50 {ours['p50_s']:.3f} s, p95 "
        f"{ours['p95_s']:.3f} s (targets <= {TARGETS['p50_s']}, <= {TARGETS['p95_s']}); "
        f"model text accepted {ours['accepted']}/{ours['cases']} = "
        f"{ours['accepted_share']:.0%} (target >= 95%); unfaithful in output: "
        f"{ours['unfaithful_in_output']}; fallbacks: {ours['fallback_reasons']}"
    )
    variant: dict[str, Any] | None = None
    if args.with_impression:
        variant = measure_writer(studies, [], impression=True)
        variant.pop("times")
        print(
            f"  with llm_writes_impression=true: p50 {variant['p50_s']:.3f} s, p95 "
            f"{variant['p95_s']:.3f} s, accepted {variant['accepted']}/{variant['cases']}, "
            f"unfaithful {variant['unfaithful_in_output']}"
        )
    bad = adversarial()
    print(
        f"unfaithful texts accepted: {bad['mutants_accepted']} of {bad['mutants']} mutants "
        f"({bad['mutant_kinds']} kinds), {len(bad['hand_written_accepted'])} of "
        f"{bad['hand_written']} hand-written {bad['hand_written_accepted'] or ''}(target 0)"
    )
    stalls = faults(studies)
    for label, result in stalls.items():
        print(
            f"{label}: 5 consecutive reports in {result['seconds']} s (target <= "
            f"{FAULT_DEADLINE_S + FAULT_SLACK_S:g} each), template with reason: "
            f"{result['all_template_with_reason']} {result['reasons']}"
        )
    subset = studies[: args.baseline_cases]
    baseline = measure_baseline(subset)
    ours_subset = statistics.mean(ours["times"][: args.baseline_cases])
    speedup = baseline["mean_s"] / ours_subset
    print(
        f"prototype generation (transformers FP32, long prompt of "
        f"{baseline['prompt_tokens_mean']:.0f} tokens, max 256 new): {baseline['mean_s']:.2f} s "
        f"a report over {baseline['cases']} sets; ours on the same sets {ours_subset:.2f} s: "
        f"{speedup:.1f}x (target >= {TARGETS['speedup']:g}x)"
    )
    memory = measure_service_rss()
    print(
        f"service with the default LLM after {memory['reports']} reports: RSS "
        f"{memory['rss_mb']} MB, peak {memory['peak_rss_mb']} MB (target <= "
        f"{TARGETS['rss_mb']:g}); engines {memory['engines_seen']}"
    )
    checks = {
        "p50": ours["p50_s"] <= TARGETS["p50_s"],
        "p95": ours["p95_s"] <= TARGETS["p95_s"],
        "unfaithful": ours["unfaithful_in_output"] == 0,
        "accepted share": ours["accepted_share"] >= TARGETS["accepted_share"],
        "unfaithful accepted": bad["mutants_accepted"] == 0
        and not bad["hand_written_accepted"]
        and bad["mutants"] >= 500,
        "faults": all(
            r["worst_s"] <= FAULT_DEADLINE_S + FAULT_SLACK_S and r["all_template_with_reason"]
            for r in stalls.values()
        ),
        "speedup": speedup >= TARGETS["speedup"],
        "rss": memory["peak_rss_mb"] <= TARGETS["rss_mb"],
    }
    print("checks: " + ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in checks.items()))
    ours.pop("times")
    results = {"writer": ours, "writer_with_impression": variant, "adversarial": bad,
               "faults": stalls,
               "baseline": baseline,
               "speedup": round(speedup, 2), "service": memory, "checks": checks}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.texts:
        args.texts.write_text(json.dumps(log, indent=2) + "\n")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
