"""Deciding what the retrieved papers mean for a question: its kind, which papers match, or none.

Retrieval ranks papers; this module judges them, per paper, on signals that mean the same thing
for every question (see `rag.retrieval.Retriever`): the dense similarity of the best chunk, the
IDF-weighted share of the question's terms the paper mentions (`coverage`), the same share over
the question's few rarest slots (`key_coverage`: a paper that answers "which papers recognise sign
language?" must say "sign", not just "recognition"; alternatives such as "X or Y", "X (Y)" and
"X, i.e. Y" form one slot that either satisfies), and its BM25 score relative to the best.

Abstention is decided on the best paper's relevance, lowered by `absent_share`, the part of the
question (IDF-weighted) that no paper in the collection mentions at all: a question about "Atari
games" where no abstract says "Atari" is about something the collection lacks, however close the
embeddings of other reinforcement-learning papers are. The weights and thresholds are settings
(`retrieval.*`), measured on `eval/questions/dev.jsonl` only; `eval/tune_judge.py` reproduces them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rag.answer import QuestionKind, RetrievedPaper
from rag.settings import RetrievalSettings

_LIST_PATTERNS = re.compile(
    r"^\s*(which|what|list|name|show|find|give|are there|is there|any)\b.*\b(papers|works|articles|studies|"
    r"publications|approaches|methods)\b"
    r"|^\s*(what|which) (work|research|literature)\b"
    r"|^\s*(list|name|show|find)\b"
    r"|^\s*(are|is) there (any )?(papers?|work|research)\b"
    r"|\b(papers|works|studies) (on|about|that|which|using|proposing)\b",
    re.IGNORECASE)


def question_kind(question: str) -> QuestionKind:
    """"list" when the question asks for papers in the plural, else "single".

    >>> question_kind("Which papers prune ResNet-50?"), question_kind("What top-1 accuracy does MEAL V2 reach?")
    ('list', 'single')
    >>> question_kind("What work is there on dataset distillation?")
    'list'
    """
    return "list" if _LIST_PATTERNS.search(question) else "single"


@dataclass
class Judgement:
    kind: QuestionKind
    abstained: bool
    matching: list[RetrievedPaper]  # the papers that answer it, best first (list: all of them)
    best_score: float


def relevance(paper: RetrievedPaper, top_bm25: float, settings: RetrievalSettings) -> float:
    """One calibrated number per paper: a weighted sum of its signals (0..~1).

    >>> p = RetrievedPaper(id="x", title="t", score=0, rank=1,
    ...                    metadata={"dense": 0.6, "coverage": 0.5, "key_coverage": 1.0, "bm25": 10.0})
    >>> round(relevance(p, 20.0, RetrievalSettings(dense_coef=0.5, coverage_coef=0.1, key_coef=0.4, bm25_coef=0)), 3)
    0.75
    """
    m = paper.metadata
    bm25_rel = (m.get("bm25", 0.0) / top_bm25) if top_bm25 > 0 else 0.0
    return (settings.dense_coef * m.get("dense", 0.0) + settings.coverage_coef * m.get("coverage", 0.0)
            + settings.key_coef * m.get("key_coverage", 0.0) + settings.bm25_coef * bm25_rel)


def is_answerable(best_relevance: float, absent_share: float, settings: RetrievalSettings) -> bool:
    """Whether the collection answers the question at all, from its best paper and its absent terms.

    >>> s = RetrievalSettings(abstain_threshold=0.48, absent_coef=0.4)
    >>> is_answerable(0.60, 0.0, s), is_answerable(0.60, 0.5, s), is_answerable(0.40, 0.0, s)
    (True, False, False)
    """
    return best_relevance - settings.absent_coef * absent_share >= settings.abstain_threshold


def judge(question: str, papers: list[RetrievedPaper], settings: RetrievalSettings,
          kind: QuestionKind | None = None) -> Judgement:
    """Which of `papers` answer `question`, or that none does.

    Each paper's `matches` flag is set, and its relevance stored in `metadata["relevance"]`.
    """
    kind = kind or question_kind(question)
    top_bm25 = max((p.metadata.get("bm25", 0.0) for p in papers), default=0.0)
    for paper in papers:
        paper.metadata["relevance"] = round(relevance(paper, top_bm25, settings), 4)
    best = max((p.metadata["relevance"] for p in papers), default=0.0)
    absent_share = papers[0].metadata.get("absent_share", 0.0) if papers else 1.0
    if not is_answerable(best, absent_share, settings):
        for paper in papers:
            paper.matches = False
        return Judgement(kind, True, [], best)
    if kind == "list":
        floor = max(settings.list_threshold, settings.list_relative * best)
        matching = [p for p in papers if p.metadata["relevance"] >= floor]
    else:
        matching = [max(papers, key=lambda p: p.metadata["relevance"])]
    matching.sort(key=lambda p: -p.metadata["relevance"])
    chosen = {p.id for p in matching}
    for paper in papers:
        paper.matches = paper.id in chosen
    return Judgement(kind, False, matching, best)
