"""The report grammar: every sentence a FINDINGS or IMPRESSION section may contain, and the facts
each sentence form is bound to.

A form is a pattern (see report/grammar.py) of fixed connective words and typed slots. Bound to
a study's facts, each form yields the sentences that are true of the study: a finding's sentence
carries that finding's image, class, size and confidence and nothing else, a count the right
count. The template writes the first path through the forms; the language model chooses among
the paths, its decoding confined to them; the verifier accepts a sentence only if it is one of
them. Nothing here is a list of bad phrasings: a sentence no bound form yields is rejected.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mriscribe.report.facts import ImageFacts, LesionFact, StudyFacts
from mriscribe.report.grammar import Binding, Form, gbnf
from mriscribe.report.wording import (
    ESTIMATED_NOTE,
    count_word,
    extent_text,
    images_phrase,
    kind_phrase,
    percent,
    side_text,
    size_text,
    study_result,
    threshold_text,
    volume_text,
)

_NUMBER = r"\d+(?:\.\d+)?"
_IMAGES = r"[Ii]mages? \d+(?:-\d+)?(?:, \d+(?:-\d+)?)*"
_WORDS = r"[^.;:()]+?"
SLOT_TYPES = {
    "image": r"\d+",
    "images": _IMAGES,
    "negative_images": _IMAGES,
    "empty_images": _IMAGES,
    "kind": r"[A-Za-z][A-Za-z0-9 _/-]*?",
    "class_name": r"[A-Za-z][A-Za-z0-9 _/-]*?",
    "size": rf"{_NUMBER} x {_NUMBER} mm",
    "longest": rf"{_NUMBER} mm",
    "confidence": rf"{_NUMBER}%",
    "threshold": rf"{_NUMBER}%",
    "count": r"\d+|[a-z]+",
    "total": r"\d+",
    "positive_count": r"\d+",
    "hedge": r"(?:about )?",
    "tumours": r"tumours?",
    "were": r"was|were",
    "counts": _WORDS,
    "class_counts": _WORDS,
    "classes": _WORDS,
    "negative_names": r"[^():]+?",
    "lesion": r"\d+",
    "side": r"(?:, (?:left|right|midline))?",
    "extent": rf"{_NUMBER} mm",
    "volume": rf"{_NUMBER} ml",
    "series_count": r"\d+",
    # Flags: an empty slot that admits the alternative it stands in.
    "one": "",
    "several": "",
    "all": "",
    "measured": "",
    "estimated": "",
}


def _form(name: str, pattern: str) -> Form:
    return Form(name, pattern, SLOT_TYPES)


# Sentences a language model writes, one per line of facts (see report/prompt.py).
FINDING = _form(
    "finding",
    "[Image {image} shows|On image {image} there is] a [suspected|possible] {kind} measuring "
    "{hedge}{size} (confidence {confidence}).",
)
MORE = _form("more", "{count} more suspected {tumours} {were} detected on {images}.")
NEGATIVE_IMAGES = _form("negative images", "No tumour was [detected|found] on {images}.")
EMPTY_IMAGES = _form(
    "images without a detection",
    "No detection above the [threshold|{threshold} threshold] on {images}.",
)
POSITIVE = _form("positive result", "[Positive study|The study is positive]: {counts}.")
NEGATIVE = _form("negative result", "Negative study: no tumour was [detected|found].")
CAVEAT = _form("negative caveat", "An automated negative result does not exclude a tumour.")
INDETERMINATE = _form(
    "indeterminate result",
    "Indeterminate study: no tumour was detected, but {empty_images} had no detection, so this "
    "is not a normal result.",
)

# A lesion seen on the slices of a series with geometry: one sentence for the template and the
# model alike (the model may only choose "possible" for "suspected").
LESION = _form(
    "lesion",
    "Lesion {lesion}: [suspected|possible] {kind}{side}, {images}, [largest {hedge}{size} on "
    "image {image}{several}|{hedge}{size}{one}], craniocaudal extent {extent}, box volume "
    "estimate {volume} (confidence {confidence}).",
)

# The template's sentences (its FINDINGS and IMPRESSION are the first path through these).
# Where the tumours are, as _where() binds it: one image, every image, or some of them.
_WHERE = (
    "[on the image{one}|on all {total} images ({images}){all}|"
    "on {positive_count} of {total} images ({images})]"
)
PER_SERIES = _form(
    "lesions counted per series",
    "Lesions are counted in each series on its own ({series_count} series with lesions): a "
    "tumour seen in more than one series is counted once in each.",
)
NONE_ANALYSED = _form("no images", "No images were analysed.")
NO_RESULT = _form("no result", "No images were analysed; no result.")
DETECTIONS = _form(
    "detection count",
    f"Tumour detections: {{count}} {_WHERE}.",
)
NO_DETECTIONS = _form("no detections", "Tumour detections: none.")
LISTED = _form(
    "listed finding",
    "Image {image}: {class_name}, confidence {confidence}, "
    f"[measuring {{size}}{{measured}}|approximately {{size}} ({ESTIMATED_NOTE}){{estimated}}].",
)
CONFLICT = _form(
    "conflicting detection",
    "Image {image}: also classified {class_name}, confidence {confidence} (conflicting "
    "detections on this image).",
)
LISTED_NEGATIVE = _form(
    "negative images listed", "No tumour detected (classified {negative_names}): {images}."
)
LISTED_EMPTY = _form(
    "images without a detection listed",
    "No detection above the {threshold} threshold (indeterminate, not a normal result): {images}.",
)
DETECTED = _form(
    "positive result stated",
    "Positive study: the automated system detected {count} suspected {tumours} "
    f"{_WHERE}: {{class_counts}}.",
)
LARGEST = _form(
    "largest lesion",
    "[Largest lesion{several}|Lesion size{one}]: {class_name} on image {image}, {size}, "
    f"longest box side {{longest}}[{{measured}}| ({ESTIMATED_NOTE}){{estimated}}].",
)
MIXED = _form(
    "several classes",
    "More than one tumour class was detected ({classes}): the classification of each lesion "
    "needs radiologist confirmation.",
)
NOT_DETECTED_ON = _form(
    "negative images stated", "No tumour was detected by the automated system on {images}."
)
EMPTY_STATED = _form(
    "images without a detection stated",
    "{images}: no detection above the {threshold} threshold (indeterminate).",
)
NEGATIVE_STATED = _form(
    "negative result stated",
    "Negative study: no tumour was detected by the automated system [on the image{one}|"
    "on any of the {total} images] (classified {negative_names}).",
)
INDETERMINATE_MIXED = _form(
    "indeterminate result stated",
    "Indeterminate study: no tumour was detected by the automated system, but only "
    "{negative_images} classified {negative_names}; {empty_images} had no detection above the "
    "{threshold} threshold (neither a tumour nor a no-tumour classification), so this is not a "
    "normal result.",
)
INDETERMINATE_EMPTY = _form(
    "indeterminate result stated",
    "Indeterminate study: no tumour was detected by the automated system, but [the image had "
    "no{one}|no image had any{several}] detection above the {threshold} threshold (neither a "
    "tumour nor a no-tumour classification), so this is not a normal result.",
)

FORMS: tuple[Form, ...] = (
    FINDING, LESION, MORE, NEGATIVE_IMAGES, EMPTY_IMAGES, POSITIVE, NEGATIVE, CAVEAT, INDETERMINATE,
    NONE_ANALYSED, NO_RESULT, DETECTIONS, NO_DETECTIONS, LISTED, CONFLICT, LISTED_NEGATIVE,
    LISTED_EMPTY, DETECTED, LARGEST, MIXED, NOT_DETECTED_ON, EMPTY_STATED, NEGATIVE_STATED,
    INDETERMINATE_MIXED, INDETERMINATE_EMPTY, PER_SERIES,
)  # fmt: skip

RESULT = "result"  # what an impression sentence covers
NEGATIVES = "negative images"  # the images classified as no tumour are stated
EMPTY = "images without a detection"  # the images with no detection are stated
CAVEAT_KEY = "caveat"  # a negative result's caveat is stated
PER_SERIES_KEY = "per series"  # lesions of several series: how they are counted is stated
MIXED_KEY = "mixed classes"  # a lesion whose slices disagree on its class: stated


def lesion_key(lesion: LesionFact) -> str:
    """What a sentence that states this lesion covers: every lesion must be covered exactly
    once (two identical detections on one image are two lesions: lesions are numbered)."""
    return f"lesion {lesion.id}"


@dataclass(frozen=True)
class Bound:
    """A form bound to facts: the sentences it yields are true of the study. ``covers`` names
    the facts those sentences state (every tumour and the result must be stated somewhere)."""

    form: Form
    binding: Binding
    covers: frozenset[str] = frozenset()

    def sentences(self) -> list[str]:
        return self.form.language(self.binding)

    def render(self) -> str:
        return self.form.render(self.binding)


def _flag(condition: bool, yes: str, no: str) -> dict[str, tuple[str, ...]]:
    return {yes: ("",)} if condition else {no: ("",)}


def _where(facts: StudyFacts) -> dict[str, tuple[str, ...]]:
    """The slots of "on the image" / "on all N images (...)" / "on P of N images (...)"."""
    positive = facts.positive_images
    total = facts.image_count
    if total == 1:
        return {"one": ("",)}
    where = {"total": (str(total),), "images": (images_phrase(positive),)}
    if len(positive) == total:
        where["all"] = ("",)
    else:
        where["positive_count"] = (str(len(positive)),)
    return where


def _counts(counts: dict[str, int], digits: bool) -> str:
    return ", ".join(
        f"{n if digits else count_word(n)} suspected {kind_phrase(name, n)}"
        for name, n in counts.items()
    )


def _negative_names(images: Iterable[ImageFacts]) -> str:
    names = dict.fromkeys(fact.class_name for image in images for fact in image.negatives)
    return "/".join(names) or "No Tumor"


def finding(lesion: LesionFact) -> Bound:
    """A language model's sentence for one lesion: a lesion sentence where its series has
    geometry, else the sentence of its one detection."""
    if lesion.geometry:
        return lesion_sentence(lesion)
    fact = lesion.largest
    binding = {
        "image": (str(fact.image_number),),
        "kind": (kind_phrase(fact.class_name),),
        "hedge": ("about ",) if fact.size_estimated else ("",),
        "size": (size_text(fact),),
        "confidence": (percent(fact.confidence),),
    }
    return Bound(FINDING, binding, frozenset({lesion_key(lesion)}))


def lesion_sentence(lesion: LesionFact) -> Bound:
    """The sentence of a lesion seen in a series with geometry (see LESION)."""
    largest = lesion.largest
    binding = {
        "lesion": (str(lesion.id),),
        "kind": (kind_phrase(lesion.class_name),),
        "side": (side_text(lesion.side),),
        "images": (images_phrase(lesion.images),),
        "image": (str(largest.image_number),),
        "hedge": ("about ",) if largest.size_estimated else ("",),
        "size": (size_text(largest),),
        "extent": (extent_text(lesion.craniocaudal_mm or 0.0),),
        "volume": (volume_text(lesion.volume_ml or 0.0),),
        "confidence": (percent(lesion.confidence),),
        **_flag(len(lesion.images) > 1, "several", "one"),
    }
    return Bound(LESION, binding, frozenset({lesion_key(lesion)}))


def more(rest: Sequence[LesionFact]) -> Bound:
    """The lesions a prompt had no room to list one by one, stated as a count."""
    count = len(rest)
    numbers = sorted({number for lesion in rest for number in lesion.images})
    binding = {
        "count": (str(count),),
        "tumours": ("tumour" if count == 1 else "tumours",),
        "were": ("was" if count == 1 else "were",),
        "images": (images_phrase(numbers),),
    }
    return Bound(MORE, binding, frozenset(lesion_key(lesion) for lesion in rest))


def negative_images(facts: StudyFacts) -> Bound:
    binding = {"images": (images_phrase(facts.negative_images),)}
    return Bound(NEGATIVE_IMAGES, binding, frozenset({NEGATIVES}))


def empty_images(facts: StudyFacts) -> Bound:
    threshold = threshold_text(facts.conf_threshold)
    binding = {"images": (images_phrase(facts.unremarkable_images),), "threshold": (threshold,)}
    return Bound(EMPTY_IMAGES, binding, frozenset({EMPTY}))


def _series_with_lesions(facts: StudyFacts) -> int:
    return len({lesion.series for lesion in facts.lesions})


def per_series(facts: StudyFacts) -> Bound | None:
    """How lesions are counted, where they come from more than one series (an axial and a
    coronal series of one head show one tumour twice): None otherwise."""
    count = _series_with_lesions(facts)
    if count < 2:
        return None
    return Bound(PER_SERIES, {"series_count": (str(count),)}, frozenset({PER_SERIES_KEY}))


def _disagreeing(facts: StudyFacts) -> bool:
    """Whether some lesion's slices were given different classes (its own class is a vote)."""
    return any(len({f.class_name for f in lesion.detections}) > 1 for lesion in facts.lesions)


def mixed(facts: StudyFacts) -> Bound | None:
    """The sentence that more than one class was detected, where one was (it must be stated
    where a lesion's own slices disagree, since its sentence names the vote's class only)."""
    if len(facts.classes_detected) < 2:
        return None
    covers = frozenset({MIXED_KEY}) if _disagreeing(facts) else frozenset()
    return Bound(MIXED, {"classes": (", ".join(facts.classes_detected),)}, covers)


def result(facts: StudyFacts) -> tuple[Bound, ...]:
    """A language model's IMPRESSION: the result, with its caveat where it is not positive."""
    covers = frozenset({RESULT})
    outcome = study_result(facts)
    if outcome == "positive":
        counts = facts.lesion_counts
        binding = {"counts": tuple(dict.fromkeys((_counts(counts, False), _counts(counts, True))))}
        extra = [per_series(facts), mixed(facts) if _disagreeing(facts) else None]
        return (Bound(POSITIVE, binding, covers), *(bound for bound in extra if bound))
    if outcome == "negative":
        return Bound(NEGATIVE, {}, covers | {NEGATIVES}), Bound(CAVEAT, {}, frozenset({CAVEAT_KEY}))
    empty = images_phrase(facts.unremarkable_images)
    return (Bound(INDETERMINATE, {"empty_images": (empty,)}, covers | {EMPTY}),)


def template_findings(facts: StudyFacts) -> list[Bound]:
    """The template's FINDINGS, sentence by sentence."""
    if not facts.images:
        return [Bound(NONE_ANALYSED, {})]
    bound: list[Bound] = []
    if facts.positive:
        count = {"count": (str(len(facts.tumours)),)}
        bound.append(Bound(DETECTIONS, {**count, **_where(facts)}))
    else:
        bound.append(Bound(NO_DETECTIONS, {}))
    starting: dict[int, list[LesionFact]] = {}
    for lesion in facts.lesions:
        starting.setdefault(min(lesion.images), []).append(lesion)
    for image in facts.images:
        for lesion in starting.get(image.number, ()):
            bound.append(_listed(lesion))
        if image.status != "positive":
            continue
        # A tumour and the no-tumour class on one slice disagree: say so rather than hide it.
        for fact in image.negatives:
            binding = {
                "image": (str(image.number),),
                "class_name": (fact.class_name,),
                "confidence": (percent(fact.confidence),),
            }
            bound.append(Bound(CONFLICT, binding))
    if facts.negative_images:
        negatives = [image for image in facts.images if image.status == "negative"]
        binding = {
            "negative_names": (_negative_names(negatives),),
            "images": (images_phrase(facts.negative_images),),
        }
        bound.append(Bound(LISTED_NEGATIVE, binding, frozenset({NEGATIVES})))
    if facts.unremarkable_images:
        binding = {
            "threshold": (threshold_text(facts.conf_threshold),),
            "images": (images_phrase(facts.unremarkable_images),),
        }
        bound.append(Bound(LISTED_EMPTY, binding, frozenset({EMPTY})))
    return bound


def _listed(lesion: LesionFact) -> Bound:
    """The template's sentence for a lesion: the lesion sentence where its series has geometry,
    else its one detection listed."""
    if lesion.geometry:
        return lesion_sentence(lesion)
    fact = lesion.largest
    binding = {
        "image": (str(fact.image_number),),
        "class_name": (fact.class_name,),
        "confidence": (percent(fact.confidence),),
        "size": (size_text(fact),),
        **_flag(fact.size_estimated, "estimated", "measured"),
    }
    return Bound(LISTED, binding, frozenset({lesion_key(lesion)}))


def template_impression(facts: StudyFacts) -> list[Bound]:
    """The template's IMPRESSION, sentence by sentence."""
    covers = frozenset({RESULT})
    total = facts.image_count
    threshold = {"threshold": (threshold_text(facts.conf_threshold),)}
    if total == 0:
        return [Bound(NO_RESULT, {}, covers)]
    outcome = study_result(facts)
    negatives, empty = facts.negative_images, facts.unremarkable_images
    if outcome == "positive":
        tumours = len(facts.lesions)
        class_counts = ", ".join(f"{name} ({n})" for name, n in facts.lesion_counts.items())
        binding = {
            "count": (str(tumours),),
            "tumours": ("tumour" if tumours == 1 else "tumours",),
            "class_counts": (class_counts,),
            **_where(facts),
        }
        bound = [Bound(DETECTED, binding, covers)]
        counted = per_series(facts)
        if counted is not None:
            bound.append(counted)
        # The largest detection, with the class its own image shows (a lesion's slices may
        # disagree: the MIXED sentence then says so).
        largest = facts.largest
        if largest is not None:
            binding = {
                "class_name": (largest.class_name,),
                "image": (str(largest.image_number),),
                "size": (size_text(largest),),
                "longest": (f"{largest.max_diameter_mm:.1f} mm",),
                **_flag(tumours > 1, "several", "one"),
                **_flag(largest.size_estimated, "estimated", "measured"),
            }
            bound.append(Bound(LARGEST, binding))
        several = mixed(facts)
        if several is not None:
            bound.append(several)
        if negatives:
            binding = {"images": (images_phrase(negatives),)}
            bound.append(Bound(NOT_DETECTED_ON, binding, frozenset({NEGATIVES})))
        if empty:
            binding = {"images": (images_phrase(empty).capitalize(),), **threshold}
            bound.append(Bound(EMPTY_STATED, binding, frozenset({EMPTY})))
        return bound
    if outcome == "negative":
        binding = {
            "negative_names": (_negative_names(facts.images),),
            **({"one": ("",)} if total == 1 else {"total": (str(total),)}),
        }
        return [
            Bound(NEGATIVE_STATED, binding, covers | {NEGATIVES}),
            Bound(CAVEAT, {}, frozenset({CAVEAT_KEY})),
        ]
    if negatives:
        negative = [image for image in facts.images if image.status == "negative"]
        binding = {
            "negative_images": (images_phrase(negatives),),
            "negative_names": (_negative_names(negative),),
            "empty_images": (images_phrase(empty),),
            **threshold,
        }
        return [Bound(INDETERMINATE_MIXED, binding, covers | {NEGATIVES, EMPTY})]
    binding = {**threshold, **_flag(total == 1, "one", "several")}
    return [Bound(INDETERMINATE_EMPTY, binding, covers | {EMPTY})]


def required(facts: StudyFacts) -> dict[str, str]:
    """What every narrative of the study must state (a covers key each), and how to say it is
    missing."""
    needed = {RESULT: "the study's result"}
    for lesion in facts.lesions:
        if lesion.geometry:
            what = f"lesion {lesion.id} ({lesion.class_name}, {images_phrase(lesion.images)})"
        else:
            what = f"the detected {lesion.class_name} on image {lesion.largest.image_number}"
        needed[lesion_key(lesion)] = what
    if facts.negative_images:
        needed[NEGATIVES] = "the images classified as no tumour"
    if facts.unremarkable_images:
        needed[EMPTY] = "the images without a detection"
    if study_result(facts) == "negative":
        needed[CAVEAT_KEY] = "that an automated negative result does not exclude a tumour"
    if per_series(facts) is not None:
        needed[PER_SERIES_KEY] = "that lesions are counted in each series on its own"
    if _disagreeing(facts):
        needed[MIXED_KEY] = "that the slices of a lesion were given different classes"
    return needed


def bound_forms(facts: StudyFacts) -> list[Bound]:
    """Every form bound to every fact it may state: the grammar of this study's reports."""
    bound = [*template_findings(facts), *template_impression(facts)]
    bound.extend(finding(lesion) for lesion in facts.lesions if not lesion.geometry)
    # "N more suspected tumours were detected on images ...": the last N lesions in the order
    # the prompt lists them, as a prompt summarises those it has no room for.
    for start in range(len(facts.lesions)):
        bound.append(more(facts.lesions[start:]))
    if facts.negative_images:
        bound.append(negative_images(facts))
    if facts.unremarkable_images:
        bound.append(empty_images(facts))
    if facts.images:
        bound.extend(result(facts))
    return bound


def answer_language(answer: Sequence[Bound]) -> list[str]:
    """Every text of an answer made of these bound forms in order (joined by spaces)."""
    texts = [""]
    for part in answer:
        texts = [f"{text} {s}".strip() for text in texts for s in part.sentences()]
    return texts


def answer_gbnf(answer: Sequence[Bound], lead: str = "") -> str:
    """The same language as llama.cpp GBNF (optionally after ``lead``, which a prompt that
    ends at its answer marker leaves to the model: the space before the first word)."""
    rules = [gbnf(part.form.node, part.binding, rule=f"s{n}") for n, part in enumerate(answer)]
    root = ' " " '.join(f"s{n}" for n in range(len(answer)))
    start = f'"{lead}"? ' if lead else ""
    return f"root ::= {start}{root}\n" + "".join(rules)
