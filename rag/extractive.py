"""The answer without an LLM: built from the retrieved abstracts' own sentences.

Instant, deterministic, and the fallback whenever an LLM is not configured or not reachable.
Every statement carries a `[n]` marker for the paper it was taken from.
"""

from __future__ import annotations

from paperchat.rag.answer import Answer, Citation, RetrievedPaper, enforce_citations, neutralise_markers
from paperchat.rag.judge import Judgement
from paperchat.rag.sentences import best_sentences

# A fact answer quotes its paper's best sentences (`rag.sentences.best_sentences`): on the tune fact
# questions 2 held the required facts for 0.833 of them, 3 for 0.892, 4 for 0.902 at 25 % more text.
FACT_SENTENCES = 3


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
                f"\"{neutralise_markers(p.title)}\"{_year(p)}" for p in nearest) + "."
        return Answer(question=question, search_query=search_query, kind=judgement.kind, text=text,
                      retrieved=retrieved, abstained=True, answerer="extractive", notice=notice)

    numbering = {n: paper.id for n, paper in enumerate(judgement.matching, 1)}
    if judgement.kind == "list":
        count = len(judgement.matching)
        papers, match = ("paper", "matches") if count == 1 else ("papers", "match")
        lines = [f"{count} {papers} in this collection {match}:"]
        for n, paper in enumerate(judgement.matching, 1):
            sentence = evidence_sentence(paper, search_query)
            lines.append(f"{n}. {neutralise_markers(paper.title)}{_year(paper)}: "
                         f"{neutralise_markers(sentence)} [{n}]")
        related = judgement.related or []
        if related:
            lines.append("Possibly related (weaker evidence, not counted): "
                         + "; ".join(f"\"{neutralise_markers(p.title)}\"" for p in related) + ".")
        text = "\n".join(lines)
    else:
        paper = judgement.matching[0]
        sentences = best_sentences(search_query, paper.abstract or paper.passage, limit=FACT_SENTENCES)
        text = (f"From \"{neutralise_markers(paper.title)}\"{_year(paper)}: "
                + " ".join(f"{neutralise_markers(s)} [1]" for s in sentences))
    text, citations, dropped = enforce_citations(text, retrieved, numbering)
    citations = [_with_passage(c, search_query, retrieved) for c in citations]
    return Answer(question=question, search_query=search_query, kind=judgement.kind, text=text,
                  citations=citations, retrieved=retrieved, abstained=False, answerer="extractive",
                  notice=notice, dropped_citations=dropped)


def _year(paper: RetrievedPaper) -> str:
    """" (2021)" after a title, or nothing for an undated paper."""
    return f" ({paper.year})" if paper.year else ""


def evidence_sentence(paper: RetrievedPaper, query: str) -> str:
    """The sentence that shows why a paper matches: the one naming the question's key concepts
    together (found by retrieval), else the one sharing most words with the query."""
    evidence = paper.signals.evidence
    if evidence and evidence != paper.title:
        return evidence
    return (best_sentences(query, paper.abstract or paper.passage, limit=1) or [""])[0]


def _with_passage(citation: Citation, query: str, retrieved: list[RetrievedPaper]) -> Citation:
    paper = next(p for p in retrieved if p.id == citation.id)
    sentences = best_sentences(query, paper.abstract or paper.passage, limit=2)
    return citation.model_copy(update={"passage": " ".join(sentences) or paper.passage})
