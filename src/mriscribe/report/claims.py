"""What a report text claims: image numbers, sizes, percentages, counts and classes, per clause.

The verifier compares these claims with the study facts. Parsing is deliberately literal: a
number that none of the patterns explains is kept as an unexplained number, which the verifier
rejects, so an unusual phrasing fails closed rather than slipping a wrong figure through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

WORD_NUMBERS = {
    "a single": 1,
    "single": 1,
    "one": 1,
    "two": 2,
    "both": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
}
ORDINALS = {
    "first": 1,
    "second": 2,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
    "tenth": 10,
}
_NUMBER = r"\d+(?:\.\d+)?"
# An image number: a whole number that is not the start of a decimal, a size or a percentage.
_IMG = r"\d+(?!\d|\.\d|\s*(?:%|mm|cm|x\b|by\b|percent))"
_COUNT_WORD = r"\d+|" + "|".join(sorted(WORD_NUMBERS, key=len, reverse=True))
_MM = r"(?:mm|millimet(?:re|er)s?)\b"
_CM = r"(?:cm|centimet(?:re|er)s?)\b"
_TUMOUR_NOUN = (
    r"tumou?rs?|lesions?|masses|mass|neoplasms?|detections?|findings?|abnormalit(?:y|ies)|"
    r"nodules?"
)
_KIND_NOUN = (
    r"gliomas?|glioblastomas?|astrocytomas?|meningiomas?|pituitary(?:\s+(?:tumou?rs?|adenomas?|"
    r"lesions?|masses|mass))?|(?:macro|micro)?adenomas?"
)
_IMAGE_NOUN = r"images?|slices?"
_QUALIFIER = r"(?:(?:suspected|possible|probable|separate|distinct|additional|further|"
_QUALIFIER += r"individual|tumou?r)\s+)*"

# Tumour vocabulary: a word here names a kind of tumour; class_kind() maps our classes to the
# first three. Anything else named in a text is a kind the detector cannot report.
TUMOUR_WORDS = {
    "glioma": "glioma",
    "gliomas": "glioma",
    "glioblastoma": "glioma",
    "glioblastomas": "glioma",
    "astrocytoma": "glioma",
    "astrocytomas": "glioma",
    "oligodendroglioma": "glioma",
    "meningioma": "meningioma",
    "meningiomas": "meningioma",
    "pituitary": "pituitary",
    "adenoma": "pituitary",
    "adenomas": "pituitary",
    "macroadenoma": "pituitary",
    "microadenoma": "pituitary",
    "schwannoma": "schwannoma",
    "neuroma": "schwannoma",
    "metastasis": "metastasis",
    "metastases": "metastasis",
    "metastatic": "metastasis",
    "lymphoma": "lymphoma",
    "ependymoma": "ependymoma",
    "medulloblastoma": "medulloblastoma",
    "craniopharyngioma": "craniopharyngioma",
    "haemangioblastoma": "haemangioblastoma",
    "hemangioblastoma": "haemangioblastoma",
    "chordoma": "chordoma",
    "abscess": "abscess",
    "cyst": "cyst",
    "cysts": "cyst",
}
_TUMOUR_WORD_RE = re.compile(r"\b(" + "|".join(TUMOUR_WORDS) + r")\b", re.IGNORECASE)
_NEGATION_BEFORE = re.compile(
    r"\b(?:no|not|without|nor|neither|excluded?|absent)\W+(?:\w+\W+){0,2}$"
)


@dataclass
class Clause:
    """One clause of a sentence and what it claims."""

    text: str  # with the parsed entities replaced by placeholders
    images: list[int] = field(default_factory=list)
    sizes: list[tuple[float, ...]] = field(default_factory=list)  # mm, with rounding tolerance
    size_tolerances: list[float] = field(default_factory=list)
    percents: list[tuple[float, float]] = field(default_factory=list)  # (value, tolerance)
    counts: list[tuple[str, int, str]] = field(default_factory=list)  # (noun, n, comparison)
    image_totals: list[int] = field(default_factory=list)  # "N of M images": M
    kinds: list[str] = field(default_factory=list)  # tumour kinds named (not negated)
    # The kinds named by the clauses joined to this one by "and": an image listed there must
    # hold one of them ("images 2, 3 and 5, two gliomas and one pituitary tumour").
    group_kinds: list[str] = field(default_factory=list)
    negated_kinds: list[str] = field(default_factory=list)
    classified_negative: bool = False  # "classified No Tumor"
    unexplained_numbers: list[str] = field(default_factory=list)


def tolerance(written: str, factor: float = 1.0) -> float:
    """Half a unit of the last written digit ("23" -> 0.5, "23.4" -> 0.05), scaled by factor."""
    decimals = len(written.split(".")[1]) if "." in written else 0
    return 0.5 * 10**-decimals * factor + 1e-6


def count_value(word: str) -> int:
    word = re.sub(r"\s+", " ", word.lower())
    return int(word) if word.isdigit() else WORD_NUMBERS[word]


def image_numbers(listing: str) -> list[int]:
    """ "1-3, 5 and 7" -> [1, 2, 3, 5, 7] (a descending or absurd range is kept as its ends)."""
    numbers: list[int] = []
    for part in re.split(r"\s*(?:,\s*and|,|\band\b|&|\bor\b)\s*", listing.strip()):
        ends = re.split(r"\s*(?:-|\bto\b|through)\s*", part.strip())
        values = [int(value) for value in ends if value.isdigit()]
        if len(values) == 2 and values[0] <= values[1] and values[1] - values[0] <= 1000:
            numbers.extend(range(values[0], values[1] + 1))
        else:
            numbers.extend(values)
    return numbers


def normalise(text: str) -> str:
    """Unicode punctuation to ASCII so the patterns see one spelling."""
    table = {
        "\u00d7": "x",
        "\u2013": "-",
        "\u2014": "-",
        "\u2011": "-",
        "\u2019": "'",
        "\u2018": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u00a0": " ",
    }
    for old, new in table.items():
        text = text.replace(old, new)
    return text


def sentences(text: str) -> list[str]:
    """Sentences and lines: a line break always ends one; '.', '!' end one before a space.

    A full stop inside a number ("23.4") or an abbreviation-like "e.g." does not split.
    """
    parts: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        parts.extend(p.strip() for p in re.split(r"(?<=[.!])\s+(?=[A-Z(])", line) if p.strip())
    return parts


def parse_clauses(sentence: str, negative_names: set[str]) -> list[Clause]:
    """The clauses of one sentence, each with its claims extracted."""
    text = sentence
    claims: dict[str, tuple[str, object]] = {}

    def hold(kind: str, value: object) -> str:
        key = f"\u27e6{len(claims)}\u27e7"
        claims[key] = (kind, value)
        return key

    # The negative class as a classification ("classified No Tumor") before anything reads
    # "No" as a negation.
    for name in sorted(negative_names, key=len, reverse=True):
        text = re.sub(
            rf"\b(classified(?:\s+as)?|class(?:ification)?(?:\s+of)?|as)\s+\"?{re.escape(name)}\"?",
            lambda m: f"{m.group(1)} " + hold("negclass", None),
            text,
            flags=re.IGNORECASE,
        )
    # Image references, lists and ranges included; ordinals ("the second image").
    text = re.sub(
        rf"\b(?:{_IMAGE_NOUN})\s+(?:number\s+|no\.\s*|#)?"
        rf"({_IMG}(?:\s*(?:-|\bto\b|through)\s*{_IMG})?(?:\s*(?:,\s*and|,|\band\b|&|\bor\b)\s*"
        rf"{_IMG}(?:\s*(?:-|\bto\b|through)\s*{_IMG})?)*)",
        lambda m: hold("images", image_numbers(m.group(1))),
        text,
        flags=re.IGNORECASE,
    )
    text = re.sub(
        rf"\b({'|'.join(ORDINALS)})\s+(?:{_IMAGE_NOUN})\b",
        lambda m: hold("images", [ORDINALS[m.group(1).lower()]]),
        text,
        flags=re.IGNORECASE,
    )
    # Sizes: "23.4 x 18.0 mm", "2.3 x 1.8 cm", "23 mm".
    for unit, factor in ((_MM, 1.0), (_CM, 10.0)):
        text = re.sub(
            rf"({_NUMBER})\s*(?:mm\s*)?(?:x|by)\s*({_NUMBER})\s*{unit}",
            lambda m, f=factor: hold(
                "size",
                (
                    (float(m.group(1)) * f, float(m.group(2)) * f),
                    max(tolerance(m.group(1), f), tolerance(m.group(2), f)),
                ),
            ),
            text,
            flags=re.IGNORECASE,
        )
        text = re.sub(
            rf"({_NUMBER})\s*-?\s*{unit}",
            lambda m, f=factor: hold("size", ((float(m.group(1)) * f,), tolerance(m.group(1), f))),
            text,
            flags=re.IGNORECASE,
        )
    # Percentages, and a confidence written as a fraction ("confidence 0.91").
    text = re.sub(
        rf"({_NUMBER})\s*(?:%|percent\b|per\s+cent\b)",
        lambda m: hold("percent", (float(m.group(1)), tolerance(m.group(1)))),
        text,
        flags=re.IGNORECASE,
    )
    text = re.sub(
        r"(confidence(?:\s+(?:score|level|of|was|is))*\s*(?:of\s+|=\s*|:\s*)?)(0?\.\d+)\b",
        lambda m: (
            m.group(1) + hold("percent", (float(m.group(2)) * 100, tolerance(m.group(2), 100.0)))
        ),
        text,
        flags=re.IGNORECASE,
    )
    # "2 of 3 images"
    text = re.sub(
        rf"\b({_COUNT_WORD})\s+(?:out\s+)?of\s+(?:the\s+|all\s+)?({_COUNT_WORD})\s+({_IMAGE_NOUN})\b",
        lambda m: (
            hold("count", ("image", count_value(m.group(1)), "="))
            + " of "
            + hold("total", count_value(m.group(2)))
        ),
        text,
        flags=re.IGNORECASE,
    )
    # Counts: "two suspected gliomas", "3 images", "more than one tumour class", "Glioma (1)",
    # "detections: 2".
    text = re.sub(
        rf"\b(more\s+than|at\s+least|over|fewer\s+than|less\s+than|up\s+to)?\s*\b({_COUNT_WORD})"
        rf"\s+{_QUALIFIER}((?:tumou?r\s+)?class(?:es)?|{_KIND_NOUN}|{_TUMOUR_NOUN}|{_IMAGE_NOUN})\b",
        lambda m: (
            " "
            + hold(
                "count",
                (_noun_kind(m.group(3)), count_value(m.group(2)), _comparison(m.group(1))),
            )
            + " "
            + m.group(3)
        ),
        text,
        flags=re.IGNORECASE,
    )
    text = re.sub(
        rf"\b({_KIND_NOUN})\s*\((\d+)\)",
        lambda m: m.group(1) + " " + hold("count", (_noun_kind(m.group(1)), int(m.group(2)), "=")),
        text,
        flags=re.IGNORECASE,
    )
    text = re.sub(
        rf"\b((?:{_TUMOUR_NOUN}))\s*:\s*(\d+)\b",
        lambda m: m.group(1) + ": " + hold("count", ("tumour", int(m.group(2)), "=")),
        text,
        flags=re.IGNORECASE,
    )

    # Clauses: ";" and "but" start a new subject; a clause joined by "and" ("Image 2 shows a
    # glioma (...) and a meningioma (...)") keeps the images of the clause before it.
    clauses: list[Clause] = []
    for block in re.split(r";|,?\s+(?:but|while|whereas|although)\s+", text, flags=re.I):
        previous: Clause | None = None
        chain: list[Clause] = []
        for part in re.split(
            r",?\s+and\s+(?=(?:no|not|image|images|the|a|an|one|two|three|four|\u27e6)\b|\u27e6)",
            block,
            flags=re.IGNORECASE,
        ):
            if not part.strip():
                continue
            clause = _clause(part.strip(), claims)
            if previous is not None and not clause.images:
                clause.images = list(previous.images)
            clauses.append(clause)
            chain.append(clause)
            previous = clause
        kinds = sorted({kind for clause in chain for kind in clause.kinds})
        for clause in chain:
            clause.group_kinds = kinds
    return clauses


def _comparison(prefix: str | None) -> str:
    if not prefix:
        return "="
    prefix = re.sub(r"\s+", " ", prefix.lower())
    return {
        "more than": ">",
        "over": ">",
        "at least": ">=",
        "fewer than": "<",
        "less than": "<",
        "up to": "<=",
    }[prefix]


def _noun_kind(noun: str) -> str:
    noun = noun.lower()
    if re.match(_IMAGE_NOUN, noun):
        return "image"
    if "class" in noun:
        return "class"
    word = noun.split()[0]
    if word in TUMOUR_WORDS:
        return "kind:" + TUMOUR_WORDS[word]
    return "tumour"


def _clause(text: str, claims: dict[str, tuple[str, object]]) -> Clause:
    clause = Clause(text=text)
    for key in re.findall(r"\u27e6\d+\u27e7", text):
        kind, value = claims[key]
        if kind == "images":
            clause.images.extend(value)  # type: ignore[arg-type]
        elif kind == "size":
            values, tol = value  # type: ignore[misc]
            clause.sizes.append(values)
            clause.size_tolerances.append(tol)
        elif kind == "percent":
            clause.percents.append(value)  # type: ignore[arg-type]
        elif kind == "count":
            clause.counts.append(value)  # type: ignore[arg-type]
        elif kind == "total":
            clause.image_totals.append(value)  # type: ignore[arg-type]
        elif kind == "negclass":
            clause.classified_negative = True
    plain = re.sub(r"\u27e6\d+\u27e7", " ", text)
    for match in _TUMOUR_WORD_RE.finditer(plain):
        kind = TUMOUR_WORDS[match.group(1).lower()]
        if _NEGATION_BEFORE.search(plain[: match.start()].lower()):
            clause.negated_kinds.append(kind)
        else:
            clause.kinds.append(kind)
    clause.unexplained_numbers = re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?![\w])", plain)
    return clause
