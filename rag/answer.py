"""The one answer object that every front end (CLI, UI, eval) receives.

Rules that hold for every answerer, enforced here in code rather than asked of a prompt:
every `[n]` left in `Answer.text` names a paper in `Answer.retrieved`; a marker that does not is
removed and counted in `Answer.dropped_citations`.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

QuestionKind = Literal["list", "single", "none"]

CITATION_MARK = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
# Opens the quote of its paper that an LLM fact answer may carry beneath the model's words.
QUOTE_LEAD = "In the paper's words"


def neutralise_markers(paper_text: str) -> str:
    """Paper text (a title, a quoted sentence) with its own `[n]` references made unlike citations.

    Only markers the answerer wrote are citations: a "[2]" typed inside an abstract is the paper's
    reference to its own bibliography, so it must neither count as citing retrieved paper 2 nor be
    stripped from the quote (leaving "as shown by and.").

    >>> neutralise_markers("As shown by [2] and [3, 4].")
    'As shown by (ref. 2) and (ref. 3, 4).'
    """
    return CITATION_MARK.sub(lambda m: f"(ref. {', '.join(n.strip() for n in m.group(1).split(','))})",
                             paper_text)


class Signals(BaseModel):
    """What retrieval measured about one paper for one question: what `rag.judge` decides with.

    Shares are IDF-weighted over the question's concepts (`rag.query`); a "slot" is what a paper
    must mention (a term, or a group of alternatives credited by its best alternative); the key
    slots are the question's rarest ones that the collection contains.
    """

    dense: float = Field(0.0, description="cosine similarity of the paper's best chunk to the question")
    bm25: float = Field(0.0, description="BM25 score of its best chunk (0: no lexical hit)")
    dense_rank: int | None = Field(None, description="rank among dense hits (None: not a dense hit)")
    lexical_rank: int | None = Field(None, description="rank among BM25 hits (None: not a BM25 hit)")
    coverage: float = Field(0.0, description="share of the question's terms the paper mentions")
    key_coverage: float = Field(0.0, description="share of the key slots the paper mentions anywhere")
    phrase_coverage: float = Field(0.0, description="share of the question's two-term phrases it contains")
    sentence_key_coverage: float = Field(
        0.0, description="share of the key slots its best single sentence or its title mentions (concepts "
        "together, not scattered)")
    title_key_coverage: float = Field(0.0, description="share of the key slots its title mentions")
    absent_share: float = Field(0.0, description="share of the question no paper of the collection mentions "
                                                 "(the same for every paper of one question)")
    concepts_matched: list[str] = Field(default_factory=list)
    evidence: str = Field("", description="the title or sentence that mentions most of the key slots")


class RetrievedPaper(BaseModel):
    """A paper the retriever returned, with its best-matching passage."""

    id: str
    title: str
    year: int | None = None
    score: float = Field(description="fused relevance score; higher is better")
    rank: int = Field(description="1-based rank after fusion")
    passage: str = Field("", description="the best-matching chunk text")
    abstract: str = ""
    matches: bool = Field(False, description="judged to answer the question (list membership)")
    related: bool = Field(False, description=(
        "possibly related: some evidence, too weak to count it as a match; shown beneath the matches, "
        "outside the count and outside `citations`"))
    signals: Signals = Field(default_factory=Signals)
    probability: float | None = Field(None, description="the judge's probability that the paper matches")
    metadata: dict = Field(
        default_factory=dict, description="the paper's own fields: authors, url, sources, ...")


class Citation(BaseModel):
    """The paper behind a `[number]` marker in the answer text."""

    number: int
    id: str
    title: str
    year: int | None = None
    passage: str = Field("", description="the sentence or passage that supports the statement")


class Answer(BaseModel):
    """What a question gets back, whoever answered it."""

    question: str
    search_query: str = Field(description="the question as searched (after follow-up rewriting)")
    kind: QuestionKind = "single"
    text: str
    citations: list[Citation] = Field(default_factory=list)
    possibly_related: list[Citation] = Field(default_factory=list, description=(
        "papers with weak evidence for a list question: not in the count, not cited in `text`"))
    retrieved: list[RetrievedPaper] = Field(default_factory=list)
    abstained: bool = False
    answerer: str = "extractive"
    notice: str | None = Field(None, description="shown to the user, e.g. the LLM fell back to extractive")
    dropped_citations: int = 0
    timings_s: dict[str, float] = Field(default_factory=dict)
    provenance: dict = Field(default_factory=dict, description=(
        "what the answer was computed from: corpus hash, paper count, embedding model, answerer and "
        "model file, settings that changed the answer"))

    def to_json_dict(self) -> dict:
        """The `--json` shape: `answer`, `abstained`, `citations`, `retrieved`, and the rest."""
        data = self.model_dump()
        data["answer"] = data.pop("text")
        return data


def enforce_citations(text: str, retrieved: list[RetrievedPaper],
                      numbering: dict[int, str]) -> tuple[str, list[Citation], int]:
    """Keep only `[n]` markers whose number maps to a retrieved paper.

    `numbering` maps the numbers the answerer used to paper ids. Returns the cleaned text, the
    citations in order of first use, and how many markers were removed.

    >>> r = [RetrievedPaper(id="a", title="A", score=1, rank=1)]
    >>> enforce_citations("X [1]. Y [2]. Z [1, 2]. T : U", r, {1: "a", 2: "zz"})[0::2]
    ('X [1]. Y. Z [1]. T : U', 2)
    """
    by_id = {paper.id: paper for paper in retrieved}
    citations: dict[int, Citation] = {}
    dropped = 0

    def keep(match: re.Match) -> str:
        nonlocal dropped
        kept = []
        for raw in match.group(1).split(","):
            number = int(raw)
            paper = by_id.get(numbering.get(number, ""))
            if paper is None:
                dropped += 1
                continue
            kept.append(number)
            citations.setdefault(number, Citation(number=number, id=paper.id, title=paper.title,
                                                  year=paper.year, passage=paper.passage))
        return "[" + ", ".join(map(str, kept)) + "]" if kept else ""

    cleaned = CITATION_MARK.sub(lambda m: keep(m) or _REMOVED, text)
    # Close only the gaps that removed markers left; the rest of the text (titles!) is untouched.
    cleaned = re.sub(r"[ \t]*" + _REMOVED + r"(?=[.,;:!?])", "", cleaned)
    cleaned = re.sub(r"[ \t]*" + _REMOVED, "", cleaned)
    return cleaned, list(citations.values()), dropped


_REMOVED = "\x00"
