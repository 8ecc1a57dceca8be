"""What a question is about: its concepts, their spellings, and the slots a paper must fill.

Pure functions over the question's text, used by retrieval (which papers mention which concept)
and by the judge. A concept is a term ("ResNet-50"), a phrase of two adjacent content terms
("sign language") or a group of alternatives the question offers ("X or Y", "X (Y)", "X, i.e. Y").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from paperchat.rag.text import STOPWORDS, words

_WORD = re.compile(r"\w+")
_COMPOUND = re.compile(r"\w+(?:[-./]\w+)+")
# Any of these between two content words breaks a phrase: "X (Y)", "X, i.e. Y", "X or Y".
_UNIT = re.compile(r"\w+(?:[-./]\w+)*|[^\w\s]+")

# Words that frame a question about papers rather than name what it is about. They are added to
# the lexical stopwords for concept matching only: "Which papers report results on X" asks about X.
FRAMING_WORDS = frozenset([
    "address", "addresses", "addressing", "apply", "applies", "applying", "build", "builds", "building",
    "introduce", "introduces", "introducing", "present", "presents", "presenting", "describe", "describes",
    "describing", "report", "reports", "reporting", "results", "result", "evaluate", "evaluates",
    "evaluating", "evaluation", "main", "subject", "subjects", "topic", "topics", "focus", "focuses",
    "focusing", "deal", "deals", "dealing", "concern", "concerns", "concerning", "related", "regarding",
    "relating", "based", "around", "via", "i.e", "e.g", "etc", "ie", "eg", "including", "include",
    "includes", "kind", "kinds", "sort", "type", "types", "way", "ways", "something", "anything", "someone",
    "anyone", "tell", "know", "known", "recent", "recently", "new", "good", "many", "much", "often",
    "another", "other", "others", "whose", "mainly", "mostly", "primarily", "chiefly", "largely",
    "specifically", "particularly", "especially", "actually", "really", "generally", "explicitly",
    "directly", "somehow"
])
# Prefixes that only modify the word they are hyphenated to ("re-collected", "non-linear").
_PREFIXES = frozenset([
    "re", "pre", "non", "un", "co", "multi", "self", "semi", "sub", "super", "anti", "de", "post", "over",
    "under", "cross", "inter", "intra", "counter", "mis", "out"
])


_ALIAS_MARKERS = frozenset(["i.e", "ie", "e.g", "eg", "namely", "aka", "a.k.a"])
# "A/B" offers alternatives when both sides are words ("classification/detection", "and/or"), not "TCP/IP"
_SLASH_ALTERNATIVES = re.compile(r"(?:[a-z][\w-]{2,}|or)(?:/(?:[a-z][\w-]{2,}|or))+", re.IGNORECASE)


@dataclass
class Concept:
    """One thing the question asks about, with the spellings that count as mentioning it.

    `kind` is "term" (a word or a hyphenated/compound term like ResNet-50), "phrase" (two
    adjacent content terms of the question, like "sign language") or "group" (alternatives that
    each satisfy the question: "X or Y", "X (Y)", "X, i.e. Y"; each alternative is a list of
    terms, and the group has no spellings of its own). `df` is how many papers of the whole
    collection mention it (for a group: 1 when some alternative's terms all occur, else 0); `idf`
    follows from it (for a group: that of its most common alternative, judged by its rarest term).
    """

    text: str
    spellings: list[str]  # FTS5 phrase queries, any of which counts
    idf: float = 1.0
    kind: str = "term"
    df: int = -1
    alternatives: list[list[Concept]] = field(default_factory=list)

    def credit(self, mentioned: set[str]) -> float:
        """How far a paper that mentions the concepts named `mentioned` mentions this one (0..1).

        A group counts its best alternative, by the IDF-weighted share of that alternative's terms.

        >>> g = Concept("a b | c", [], kind="group", alternatives=[
        ...     [Concept("a", ["a"], idf=1.0), Concept("b", ["b"], idf=3.0)], [Concept("c", ["c"], idf=2.0)]])
        >>> g.credit({"b"}), g.credit({"c"}), g.credit({"a"}), Concept("a", ["a"]).credit({"a"})
        (0.75, 1.0, 0.25, 1.0)
        """
        if self.kind != "group":
            return 1.0 if self.text in mentioned else 0.0
        return max(idf_share(alternative, mentioned) for alternative in self.alternatives)


def spelling_variants(word: str) -> list[str]:
    """The word and its other common spellings (British/American), for matching a mention.

    >>> spelling_variants("recognising"), spelling_variants("modelling"), spelling_variants("colour")
    (['recognising', 'recognizing'], ['modelling', 'modeling'], ['colour', 'color'])
    >>> spelling_variants("optimize"), spelling_variants("four")
    (['optimize', 'optimise'], ['four'])
    """
    variants = [word]
    for pattern, repl in ((r"(?<=\w\w)is(e|es|ed|ing|ation|ations|er|ers)$", r"iz\1"),
                          (r"(?<=\w\w)iz(e|es|ed|ing|ation|ations|er|ers)$", r"is\1"),
                          (r"(?<=\w\w)ys(e|es|ed|ing)$", r"yz\1"),
                          (r"(?<=\w\w\w)our(s?)$", r"or\1"),
                          (r"(?<=\w\w[aeiou])ll(ed|ing|er|ers)$", r"l\1")):
        other = re.sub(pattern, repl, word)
        if other != word and other not in variants:
            variants.append(other)
    return variants


def is_content_word(word: str) -> bool:
    """Whether a (lower-case) word names something the question is about.

    >>> words = "which papers report results on sign language as their main subject".split()
    >>> [w for w in words if is_content_word(w)]
    ['sign', 'language']
    """
    return not (word in STOPWORDS or word in FRAMING_WORDS or (len(word) < 2 and not word.isdigit()))


def _unit_concept(unit: str) -> Concept | None:
    """The concept one word or compound of a question names, or None when it names nothing."""
    parts = [p.lower() for p in _WORD.findall(unit)]
    if not parts:
        return None
    if len(parts) == 1:
        return Concept(parts[0], spelling_variants(parts[0])) if is_content_word(parts[0]) else None
    if not any(is_content_word(p) for p in parts) or "".join(parts) in FRAMING_WORDS:  # "i.e."
        return None
    spellings = [" ".join(parts), "".join(parts)]
    if parts[0] in _PREFIXES:  # "re-collected" also counts as "collected"
        spellings.append(" ".join(parts[1:]))
    return Concept(unit.lower(), list(dict.fromkeys(spellings)))


def _question_items(question: str) -> list[Concept | str]:
    """The question as content concepts and, between them, the other tokens (lower-case).

    "A/B" between words becomes "A or B" ("and/or" becomes "and or or").
    """
    items: list[Concept | str] = []
    for match in _UNIT.finditer(question):
        unit = match.group(0)
        pieces = unit.split("/") if _SLASH_ALTERNATIVES.fullmatch(unit) else [unit]
        for i, piece in enumerate(pieces):
            if i:
                items.append("or")
            concept = _unit_concept(piece)
            items.append(concept if concept is not None else piece.lower())
    return items


def _alternative_groups(items: list[Concept | str]) -> list[list[list[Concept]]]:
    """Runs of content concepts that the question offers as alternatives of one another.

    "X or Y" and "X, Y or Z" (each listed run at most 3 terms long, so that a clause before a comma
    is not taken for an item) join runs as alternatives; so do aliases: "X (Y)" (Y: the run inside the
    brackets) and "X, i.e. Y" (Y: every content term up to the next punctuation, since what
    follows "i.e." usually defines X in several common words).
    """
    runs: list[list[Concept]] = []
    gaps: list[list[str]] = []  # gaps[i]: the tokens between runs[i - 1] and runs[i]
    gap: list[str] = []
    i = 0
    while i < len(items):
        item = items[i]
        if isinstance(item, str):
            gap.append(item.strip())
            i += 1
            continue
        if any(t in _ALIAS_MARKERS for t in gap):  # the alias clause runs to the next punctuation
            run = []
            while i < len(items) and not (isinstance(items[i], str) and not _WORD.search(items[i])):
                if isinstance(items[i], Concept):
                    run.append(items[i])
                i += 1
        else:
            run = []
            while i < len(items) and isinstance(items[i], Concept):
                run.append(items[i])
                i += 1
        runs.append(run)
        gaps.append(gap)
        gap = []
    parent = list(range(len(runs)))

    def root(k: int) -> int:
        while parent[k] != k:
            k = parent[k]
        return k

    joined_by_or = [False] * len(runs)  # joined_by_or[i]: runs[i - 1] and runs[i] are alternatives
    for k in range(len(runs) - 1, 0, -1):
        tokens = gaps[k]
        opens = any("(" in t for t in tokens) and not any(")" in t for t in tokens)
        if opens or any(t in _ALIAS_MARKERS for t in tokens):
            joined_by_or[k] = True
        elif "or" in tokens or (tokens == [","] and k + 1 < len(runs) and joined_by_or[k + 1]
                                and len(runs[k - 1]) <= 3):
            # The whole run before "or" is one alternative, even where its first words are shared
            # ("attack image classifiers or detectors"): an alternative too long is only partly
            # credited, while one cut to its last word ("handwritten text" to "text") credits anything.
            joined_by_or[k] = True
        if joined_by_or[k]:
            parent[root(k)] = root(k - 1)
    groups: dict[int, list[list[Concept]]] = {}
    for k, run in enumerate(runs):
        groups.setdefault(root(k), []).append(run)
    return [alternatives for alternatives in groups.values() if len(alternatives) > 1]


def query_concepts(question: str) -> list[Concept]:
    """The content terms, compound terms, two-term phrases and alternatives of a question, framing removed.

    >>> [c.spellings for c in query_concepts("Which papers prune ResNet-50?")]
    [['prune'], ['resnet 50', 'resnet50'], ['prune resnet 50', 'prune resnet50']]
    >>> [c.text for c in query_concepts("Are there papers on recognising sign language from video?")]
    ['recognising', 'sign', 'language', 'video', 'recognising sign', 'sign language']
    >>> def groups(question):
    ...     return [c.text for c in query_concepts(question) if c.kind == "group"]
    >>> groups("Which papers study patch attacks on image classifiers or detectors?")
    ['image classifiers | detectors']
    >>> groups("Are there papers on Kolmogorov-Arnold networks (KANs)?")
    ['kolmogorov-arnold networks | kans']
    >>> groups("Which papers use hypernetworks, i.e. networks that generate weights?")
    ['hypernetworks | networks generate weights']
    """
    items = _question_items(question)
    terms: dict[str, Concept] = {}
    phrases: dict[str, Concept] = {}
    previous: Concept | None = None
    for item in items:
        if isinstance(item, str):  # a non-content word or punctuation ends a phrase
            previous = None
            continue
        concept = terms.setdefault(item.text, item)
        if previous is not None:
            text = f"{previous.text} {concept.text}"
            phrases.setdefault(text, Concept(text, [f"{a} {b}" for a in previous.spellings[:2]
                                                    for b in concept.spellings[:2]], kind="phrase"))
        previous = concept
    groups: dict[str, Concept] = {}
    for alternatives in _alternative_groups(items):
        alternatives = [list({terms[c.text].text: terms[c.text] for c in run}.values())
                        for run in alternatives]
        text = " | ".join(" ".join(c.text for c in run) for run in alternatives)
        groups.setdefault(text, Concept(text, [], kind="group", alternatives=alternatives))
    # compound terms after single words, so that single words lead
    words = [c for c in terms.values() if " " not in c.spellings[0]]
    compounds = [c for c in terms.values() if " " in c.spellings[0]]
    return words + compounds + list(phrases.values()) + list(groups.values())


def match_expression(concept: Concept) -> str:
    """The FTS5 MATCH expression that finds a mention of `concept`: any of its spellings, as phrases.

    >>> match_expression(Concept("resnet-50", ["resnet 50", "resnet50"]))
    '"resnet 50" OR "resnet50"'
    """
    return " OR ".join(f'"{spelling}"' for spelling in concept.spellings)


def idf_share(concepts: Sequence[Concept], mentioned: set[str]) -> float:
    """The IDF-weighted share of `concepts` whose text is in `mentioned` (0 when there are none).

    >>> idf_share([Concept("sign", ["sign"], idf=5.0), Concept("video", ["video"], idf=3.0)], {"sign"})
    0.625
    """
    total = sum(c.idf for c in concepts)
    return sum(c.idf for c in concepts if c.text in mentioned) / total if total else 0.0


def question_slots(concepts: Sequence[Concept]) -> list[Concept]:
    """What a paper must mention, one slot each: a group of alternatives, or a term in none.

    >>> concepts = query_concepts("Which papers study patch attacks on image classifiers or detectors?")
    >>> [c.text for c in question_slots(concepts)]
    ['patch', 'attacks', 'image classifiers | detectors']
    """
    groups = [c for c in concepts if c.kind == "group"]
    grouped = {t.text for g in groups for alternative in g.alternatives for t in alternative}
    return [c for c in concepts if c.kind == "term" and c.text not in grouped] + groups


def credit_share(slots: Sequence[Concept], mentioned: set[str]) -> float:
    """The IDF-weighted share of `slots` a paper mentions (a group by its best alternative; 0 when none).

    >>> g = Concept("a | b", [], kind="group", idf=2.0,
    ...             alternatives=[[Concept("a", ["a"])], [Concept("b", ["b"])]])
    >>> credit_share([Concept("c", ["c"], idf=2.0), g], {"b"})
    0.5
    """
    total = sum(c.idf for c in slots)
    return sum(c.idf * c.credit(mentioned) for c in slots) / total if total else 0.0


# A short form defined in brackets: "knowledge distillation (KD)", "large language models (LLMs)".
_SHORT_FORM = re.compile(r"\(\s*([A-Za-z][A-Za-z0-9-]{1,9})\s*[;,)]")
# How a question writes an abbreviation: two capitals at least ("KD", "ViT", "LLMs", "ResNet").
_ABBREVIATION = re.compile(r"\b[A-Za-z0-9-]*[A-Z][A-Za-z0-9-]*[A-Z][A-Za-z0-9-]*\b")


def _without_plural(short: str) -> str:
    """An abbreviation without its plural "s" ("LLMs" -> "LLM")."""
    return short[:-1] if len(short) > 2 and short.endswith("s") and short[-2].isupper() else short


def _singular(short: str) -> str:
    """An abbreviation as it is looked up: without its plural "s", lower-case ("LLMs" -> "llm")."""
    return _without_plural(short).lower()


def long_form(short: str, before: str) -> str | None:
    """The words of `before` that `short` abbreviates (Schwartz & Hearst, 2003), or None.

    Each character of the short form must occur in the long form in order, from the right, and its
    first character must begin a word; the long form is at most min(|short| + 5, 2·|short|) words.

    >>> long_form("KD", "we study knowledge distillation"), long_form("ViT", "a plain Vision Transformer")
    ('knowledge distillation', 'Vision Transformer')
    >>> long_form("LLMs", "prompting large language models"), long_form("NAS", "we use the proposed method")
    ('large language models', None)
    """
    short = _without_plural(short)
    tokens = before.split()
    window = " ".join(tokens[-min(len(short) + 5, 2 * len(short)):])
    s, i = len(short) - 1, len(window) - 1
    while s >= 0:
        c = short[s].lower()
        if not c.isalnum():
            s -= 1
            continue
        while i >= 0 and (window[i].lower() != c or (s == 0 and i > 0 and window[i - 1].isalnum())):
            i -= 1
        if i < 0:
            return None
        i -= 1
        s -= 1
    found = window[window.rfind(" ", 0, i + 1) + 1:].strip(" ,;:-")
    if len(found.split()) < 2 or short.lower() in found.lower().split():
        return None
    return found


def abbreviations_in(question: str) -> list[str]:
    """The abbreviations a question uses, lower-case and singular.

    >>> abbreviations_in("Which papers apply KD to ViTs or to LLMs, not to CNNs?")
    ['kd', 'vit', 'llm', 'cnn']
    """
    return list(dict.fromkeys(_singular(token) for token in _ABBREVIATION.findall(question)))


def find_abbreviations(texts: Iterable[str]) -> dict[str, set[str]]:
    """Abbreviations the texts define, lower-case and singular, with their long forms (word lists).

    >>> find_abbreviations(["We revisit knowledge distillation (KD) for ViTs.",
    ...                     "Large language models (LLMs) ..."])
    {'kd': {'knowledge distillation'}, 'llm': {'large language models'}}
    """
    found: dict[str, set[str]] = {}
    for text in texts:
        for match in _SHORT_FORM.finditer(text):
            short = match.group(1)
            if sum(ch.isupper() for ch in short) < 2:
                continue
            long = long_form(short, text[:match.start()])
            if long:
                found.setdefault(_singular(short), set()).add(" ".join(words(long)))
    return found


def expand_abbreviations(concepts: Sequence[Concept], question: str,
                         definitions: dict[str, set[str]]) -> None:
    """Let each abbreviation of the question also be matched by its long form, and each long form
    the question spells out by its abbreviation, as the candidates' own texts define them.

    >>> cs = query_concepts("Which papers use KD on neural architecture search?")
    >>> expand_abbreviations(cs, "Which papers use KD on neural architecture search?",
    ...                      {"kd": {"knowledge distillation"}, "nas": {"neural architecture search"}})
    >>> [c.spellings for c in cs if c.text in ("kd", "search", "architecture search")]
    [['kd', 'knowledge distillation'], ['search', 'nas'], ['architecture search', 'nas']]
    """
    by_text = {c.text: c for c in concepts if c.kind != "group"}
    for token in _ABBREVIATION.findall(question):
        concept = by_text.get(token.lower())
        for long in sorted(definitions.get(_singular(token), ())) if concept else ():
            if long not in concept.spellings:
                concept.spellings.append(long)
    asked = " ".join(words(question))
    for short, longs in definitions.items():
        for long in longs:
            if f" {long} " not in f" {asked} ":
                continue
            parts = long.split()
            inside = [c for c in concepts if c.kind != "group" and c.text in parts
                      or c.kind == "phrase" and f" {c.text} " in f" {long} "]
            for concept in inside:
                if short not in concept.spellings:
                    concept.spellings.append(short)
