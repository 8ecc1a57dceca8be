"""The answer without an LLM: built from the retrieved abstracts' own sentences.

Instant, deterministic, and the fallback whenever an LLM is not configured or not reachable.
Every statement carries a `[n]` marker for the paper it was taken from.
"""

from __future__ import annotations

import re

from rag.answer import Answer, Citation, RetrievedPaper, enforce_citations, neutralise_markers
from rag.chunking import split_sentences
from rag.judge import Judgement
from rag.lexical import STOPWORDS

_WORD = re.compile(r"[a-z0-9]+(?:[-.][a-z0-9]+)*")
_NUMBER = re.compile(r"\d")
_ASKS_FOR_NUMBER = re.compile(r"^\s*(how (many|much|fast|accurate|long|large|big|well)|what (is the |was the )?"
                              r"(top-1|top-5|accuracy|error|speed|score|ap|map|bleu|f1|percentage|share|number|size))"
                              r"|\b(accuracy|error|ap|percent|speed|bandwidth|how many)\b", re.IGNORECASE)


def _stems(text: str) -> set[str]:
    """Crude stems (first six letters) of the content words, for overlap between question and sentence."""
    return {w[:6] for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) > 1}


def best_sentences(question: str, abstract: str, limit: int = 2) -> list[str]:
    """The sentences of `abstract` that share most with the question, in abstract order.

    A question asking for a number prefers sentences that hold one.

    >>> best_sentences("What top-1 accuracy does MEAL V2 reach?",
    ...     "We boost ResNet-50. MEAL V2 reaches 80.67% top-1 accuracy. Code is public.", limit=1)
    ['MEAL V2 reaches 80.67% top-1 accuracy.']
    """
    sentences = split_sentences(abstract)
    if not sentences:
        return []
    wanted = _stems(question)
    wants_number = bool(_ASKS_FOR_NUMBER.search(question))

    def score(item: tuple[int, str]) -> tuple[float, int]:
        position, sentence = item
        shared = len(wanted & _stems(sentence))
        bonus = 1.5 if wants_number and _NUMBER.search(sentence) else 0.0
        return (shared + bonus, -position)

    ranked = sorted(enumerate(sentences), key=score, reverse=True)[:limit]
    return [sentence for _, sentence in sorted(ranked)]


def extractive_answer(question: str, search_query: str, judgement: Judgement,
                      retrieved: list[RetrievedPaper], notice: str | None = None) -> Answer:
    """Compose the answer from sentences; citations numbered 1..n in the order they appear.

    Titles and sentences are the papers' words: their own "[n]" references are neutralised before
    any marker of ours is added, so every `[n]` left in the text is one this function wrote.
    """
    if judgement.abstained or not judgement.matching:
        nearest = retrieved[:3]
        text = f"No paper in this collection answers \"{question.strip()}\""
        if nearest:
            text += "\nThe nearest papers, which do not answer it: " + "; ".join(
                f"\"{neutralise_markers(p.title)}\"" + (f" ({p.year})" if p.year else "") for p in nearest) + "."
        return Answer(question=question, search_query=search_query, kind=judgement.kind, text=text,
                      retrieved=retrieved, abstained=True, answerer="extractive", notice=notice)

    numbering = {n: paper.id for n, paper in enumerate(judgement.matching, 1)}
    if judgement.kind == "list":
        count = len(judgement.matching)
        lines = [f"{count} paper{'s' if count != 1 else ''} in this collection match{'es' if count == 1 else ''}:"]
        for n, paper in enumerate(judgement.matching, 1):
            sentence = (best_sentences(search_query, paper.abstract or paper.passage, limit=1) or [""])[0]
            year = f" ({paper.year})" if paper.year else ""
            lines.append(f"{n}. {neutralise_markers(paper.title)}{year}: {neutralise_markers(sentence)} [{n}]")
        text = "\n".join(lines)
    else:
        paper = judgement.matching[0]
        sentences = best_sentences(search_query, paper.abstract or paper.passage, limit=2)
        text = f"From \"{neutralise_markers(paper.title)}\"" + (f" ({paper.year})" if paper.year else "") + ": " + \
            " ".join(f"{neutralise_markers(s)} [1]" for s in sentences)
    text, citations, dropped = enforce_citations(text, retrieved, numbering)
    citations = [_with_passage(c, search_query, retrieved) for c in citations]
    return Answer(question=question, search_query=search_query, kind=judgement.kind, text=text,
                  citations=citations, retrieved=retrieved, abstained=False, answerer="extractive",
                  notice=notice, dropped_citations=dropped)


def _with_passage(citation: Citation, query: str, retrieved: list[RetrievedPaper]) -> Citation:
    paper = next(p for p in retrieved if p.id == citation.id)
    sentences = best_sentences(query, paper.abstract or paper.passage, limit=2)
    return citation.model_copy(update={"passage": " ".join(sentences) or paper.passage})
