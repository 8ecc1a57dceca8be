"""Hybrid retrieval: dense hits from Chroma and BM25 hits from the lexical index, fused per paper.

Results are papers, not chunks: chunk hits are grouped by paper, which keeps its best passage.
Each paper carries the signals the answer step decides with (`dense`, `bm25`, `coverage`): the
fused rank orders papers, while membership of a list ("which papers ...?") and abstention
("nothing here covers that") are judged per paper on those signals; see `rag.judge`.

`HybridRetriever` is a LangChain `BaseRetriever`, so anything built on LangChain can use it.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from rag.answer import RetrievedPaper
from rag.lexical import STOPWORDS
from rag.papers import Paper
from rag.settings import RetrievalSettings
from rag.store import PaperIndex

_WORD = re.compile(r"\w+")
_COMPOUND = re.compile(r"\w+(?:[-./]\w+)+")


@dataclass
class Concept:
    """One thing the question asks about, with the spellings that count as mentioning it."""

    text: str
    spellings: list[str]  # FTS5 phrase queries, any of which counts
    idf: float = 1.0


def query_concepts(question: str) -> list[Concept]:
    """The content words and compound terms of a question (question framing removed).

    >>> [c.spellings for c in query_concepts("Which papers prune ResNet-50?")]
    [['prune'], ['resnet 50', 'resnet50']]
    """
    concepts: list[Concept] = []
    seen: set[str] = set()
    compounds = {m.group(0).lower(): m.span() for m in _COMPOUND.finditer(question)}
    covered = [span for span in compounds.values()]
    for match in _WORD.finditer(question):
        if any(start <= match.start() < end for start, end in covered):
            continue
        word = match.group(0).lower()
        if word in STOPWORDS or word in seen or (len(word) < 2 and not word.isdigit()):
            continue
        seen.add(word)
        concepts.append(Concept(word, [word]))
    for compound in compounds:
        parts = _WORD.findall(compound)
        phrase, joined = " ".join(parts), "".join(parts)
        if phrase in seen:
            continue
        seen.add(phrase)
        concepts.append(Concept(compound, list(dict.fromkeys([phrase, joined]))))
    return concepts


@dataclass
class Retrieval:
    """What retrieval found for one query, best first, and how long each step took."""

    query: str
    papers: list[RetrievedPaper]
    concepts: list[Concept] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)


class Retriever:
    """Dense + lexical search over a `PaperIndex`, fused with weighted reciprocal-rank fusion."""

    def __init__(self, index: PaperIndex, settings: RetrievalSettings, reranker=None):
        self.index = index
        self.settings = settings
        self.reranker = reranker
        self._idf_cache: dict[str, float] = {}

    def retrieve(self, query: str, depth: int | None = None, year_min: int | None = None,
                 year_max: int | None = None) -> Retrieval:
        """The papers for `query`, best first: up to `depth` (default `settings.top_k * 3`)."""
        s = self.settings
        depth = depth or max(s.top_k * 3, 30)
        year_min = s.year_min if year_min is None else year_min
        year_max = s.year_max if year_max is None else year_max
        timings: dict[str, float] = {}
        started = time.perf_counter()
        vector = self.index.embeddings.embed_query(query)
        timings["embed_query"] = time.perf_counter() - started

        mark = time.perf_counter()
        dense = self.index.dense_search(vector, s.candidates, year_min, year_max)
        timings["dense"] = time.perf_counter() - mark
        mark = time.perf_counter()
        lexical = self.index.lexical.search(query, s.candidates, year_min, year_max)
        timings["lexical"] = time.perf_counter() - mark

        mark = time.perf_counter()
        best_dense: dict[str, tuple[float, str]] = {}
        for hit in dense:
            if hit.paper_id not in best_dense or hit.similarity > best_dense[hit.paper_id][0]:
                best_dense[hit.paper_id] = (hit.similarity, hit.chunk_id)
        best_lexical: dict[str, tuple[float, str]] = {}
        for chunk_id, paper_id, score in lexical:
            if paper_id not in best_lexical or score > best_lexical[paper_id][0]:
                best_lexical[paper_id] = (score, chunk_id)
        dense_rank = {pid: r for r, pid in enumerate(sorted(best_dense, key=lambda p: -best_dense[p][0]), 1)}
        lexical_rank = {pid: r for r, pid in enumerate(sorted(best_lexical, key=lambda p: -best_lexical[p][0]), 1)}
        fused: dict[str, float] = {}
        for pid in set(dense_rank) | set(lexical_rank):
            score = 0.0
            if pid in dense_rank:
                score += s.dense_weight / (s.rrf_k + dense_rank[pid])
            if pid in lexical_rank:
                score += s.lexical_weight / (s.rrf_k + lexical_rank[pid])
            fused[pid] = score
        order = sorted(fused, key=lambda p: -fused[p])[:depth]
        timings["fuse"] = time.perf_counter() - mark

        mark = time.perf_counter()
        records = self.index.lexical.papers(order)
        best_chunk = {pid: _best_chunk(pid, best_dense, best_lexical) for pid in order}
        passages = self.index.lexical.passages(list(best_chunk.values()))
        concepts = query_concepts(query)
        mentions = self._mentions(concepts, order)
        papers = []
        for rank, pid in enumerate(order, 1):
            paper: Paper | None = records.get(pid)
            if paper is None:  # an interrupted ingest's leftovers; never show them
                continue
            covered = [c.text for c in concepts if pid in mentions.get(c.text, ())]
            total_idf = sum(c.idf for c in concepts) or 1.0
            coverage = sum(c.idf for c in concepts if c.text in covered) / total_idf
            papers.append(RetrievedPaper(
                id=pid, title=paper.title, year=paper.year, score=round(fused[pid], 6), rank=len(papers) + 1,
                passage=passages.get(best_chunk[pid], ""), abstract=paper.abstract,
                metadata={"dense": round(best_dense.get(pid, (0.0, ""))[0], 4),
                          "bm25": round(best_lexical.get(pid, (0.0, ""))[0], 4),
                          "dense_rank": dense_rank.get(pid), "lexical_rank": lexical_rank.get(pid),
                          "coverage": round(coverage, 4), "concepts_matched": covered,
                          "authors": list(paper.authors), "author_count": paper.author_count, "date": paper.date,
                          "url": paper.url, "upvotes": paper.upvotes, "categories": list(paper.categories),
                          "sources": list(paper.sources)}))
        timings["papers"] = time.perf_counter() - mark
        if self.reranker is not None and papers:
            mark = time.perf_counter()
            papers = self.reranker.rerank(query, papers)
            timings["rerank"] = time.perf_counter() - mark
        timings["total"] = time.perf_counter() - started
        return Retrieval(query=query, papers=papers, concepts=concepts, timings_s=timings)

    def _mentions(self, concepts: list[Concept], paper_ids: Sequence[str]) -> dict[str, set[str]]:
        """For each concept, which of these papers mention it (any spelling, stemmed); sets IDF."""
        if not paper_ids:
            return {}
        db = self.index.lexical.db
        total = max(1, self.index.lexical.paper_count())
        marks = ",".join("?" * len(paper_ids))
        out: dict[str, set[str]] = {}
        for concept in concepts:
            match = " OR ".join(f'"{spelling}"' for spelling in concept.spellings)
            if concept.text not in self._idf_cache:
                df = db.execute("SELECT count(DISTINCT paper_id) FROM chunks_fts WHERE chunks_fts MATCH ?",
                                (match,)).fetchone()[0]
                self._idf_cache[concept.text] = math.log(1 + (total - df + 0.5) / (df + 0.5))
            concept.idf = self._idf_cache[concept.text]
            rows = db.execute(f"SELECT DISTINCT paper_id FROM chunks_fts WHERE chunks_fts MATCH ? "
                              f"AND paper_id IN ({marks})", (match, *paper_ids))
            out[concept.text] = {row[0] for row in rows}
        return out


def _best_chunk(pid: str, dense: dict, lexical: dict) -> str:
    if pid in dense:
        return dense[pid][1]
    return lexical[pid][1]


class HybridRetriever(BaseRetriever):
    """LangChain face of `Retriever`: `invoke(question)` returns one `Document` per paper."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    retriever: Retriever
    k: int = 10

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        result = self.retriever.retrieve(query)
        return [Document(page_content=p.abstract or p.passage, id=p.id,
                         metadata={"paper_id": p.id, "title": p.title, "year": p.year, "score": p.score,
                                   "rank": p.rank, "passage": p.passage, **p.metadata})
                for p in result.papers[:self.k]]
