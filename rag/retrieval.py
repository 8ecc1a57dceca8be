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
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from rag.answer import RetrievedPaper
from rag.lexical import STOPWORDS
from rag.papers import PAPER_ID, Paper
from rag.settings import RetrievalSettings
from rag.store import PaperIndex

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
    "another", "other", "others", "whose"
])
# Prefixes that only modify the word they are hyphenated to ("re-collected", "non-linear").
_PREFIXES = frozenset([
    "re", "pre", "non", "un", "co", "multi", "self", "semi", "sub", "super", "anti", "de", "post", "over",
    "under", "cross", "inter", "intra", "counter", "mis", "out"
])


@dataclass
class Concept:
    """One thing the question asks about, with the spellings that count as mentioning it.

    `kind` is "term" (a word or a hyphenated/compound term like ResNet-50) or "phrase" (two
    adjacent content terms of the question, like "sign language"). `df` is how many papers of
    the whole collection mention it; `idf` follows from it.
    """

    text: str
    spellings: list[str]  # FTS5 phrase queries, any of which counts
    idf: float = 1.0
    kind: str = "term"
    df: int = -1


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

    >>> [w for w in "which papers report results on sign language as their main subject".split() if is_content_word(w)]
    ['sign', 'language']
    """
    return not (word in STOPWORDS or word in FRAMING_WORDS or (len(word) < 2 and not word.isdigit()))


def query_concepts(question: str) -> list[Concept]:
    """The content terms, compound terms and two-term phrases of a question, framing removed.

    >>> [c.spellings for c in query_concepts("Which papers prune ResNet-50?")]
    [['prune'], ['resnet 50', 'resnet50'], ['prune resnet 50', 'prune resnet50']]
    >>> [c.text for c in query_concepts("Are there papers on recognising sign language from video?")]
    ['recognising', 'sign', 'language', 'video', 'recognising sign', 'sign language']
    """
    terms: list[Concept] = []
    phrases: list[Concept] = []
    seen: set[str] = set()
    previous: Concept | None = None
    for match in _UNIT.finditer(question):
        unit = match.group(0)
        parts = [p.lower() for p in _WORD.findall(unit)]
        if not parts:  # punctuation ends a phrase
            previous = None
            continue
        if len(parts) == 1:
            word = parts[0]
            if not is_content_word(word):
                previous = None
                continue
            concept = Concept(word, spelling_variants(word))
        elif not any(is_content_word(p) for p in parts) or "".join(parts) in FRAMING_WORDS:  # "i.e."
            previous = None
            continue
        else:
            phrase, joined = " ".join(parts), "".join(parts)
            spellings = [phrase, joined]
            if parts[0] in _PREFIXES:  # "re-collected" also counts as "collected"
                spellings.append(" ".join(parts[1:]))
            concept = Concept(unit.lower(), list(dict.fromkeys(spellings)))
        if concept.text not in seen:
            seen.add(concept.text)
            terms.append(concept)
        if previous is not None:
            text = f"{previous.text} {concept.text}"
            if text not in seen:
                seen.add(text)
                phrases.append(Concept(text, [f"{a} {b}" for a in previous.spellings[:2] for b in concept.spellings[:2]],
                                       kind="phrase"))
        previous = concept
    # compound terms last, as before, so that single words lead
    words = [c for c in terms if " " not in c.spellings[0]]
    compounds = [c for c in terms if " " in c.spellings[0]]
    return words + compounds + phrases


@dataclass
class Retrieval:
    """What retrieval found for one query, best first, and how long each step took."""

    query: str
    papers: list[RetrievedPaper]
    concepts: list[Concept] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)


class Retriever:
    """Dense + lexical search over a `PaperIndex`, fused with weighted reciprocal-rank fusion.

    Besides the fused rank, each paper gets the per-paper signals `rag.judge` decides with:
    `dense` (cosine of its best chunk, computed for lexical-only hits too), `coverage` (IDF-weighted
    share of the question's terms it mentions), `key_coverage` (the same over the question's rarest
    terms), `phrase_coverage` (over the question's two-term phrases that the collection contains)
    and `absent_share` (the question's IDF mass that no paper of the collection mentions at all).
    Mentions are matched in a scratch in-memory FTS5 table holding only the candidates (same
    stemming tokenizer as the index), so that work stays bounded however large the collection is;
    document frequencies come from the index once per concept and are cached.
    """

    IDF_CACHE_SIZE = 50_000

    def __init__(self, index: PaperIndex, settings: RetrievalSettings, reranker=None):
        self.index = index
        self.settings = settings
        self.reranker = reranker
        self._df_cache: dict[str, int] = {}
        self._scratch = sqlite3.connect(":memory:", check_same_thread=False)
        self._scratch.execute("CREATE VIRTUAL TABLE candidates USING fts5(title, abstract, paper_id UNINDEXED, "
                              "tokenize = 'porter unicode61')")
        self._scratch_lock = threading.Lock()

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
        # lexical-only hits get their dense similarity too, so that every paper is judged alike
        best_dense.update(self._dense_of([pid for pid in order if pid not in best_dense], vector))
        timings["dense_fill"] = time.perf_counter() - mark

        mark = time.perf_counter()
        records = self.index.lexical.papers(order)
        best_chunk = {pid: _best_chunk(pid, best_dense, best_lexical) for pid in order}
        passages = self.index.lexical.passages(list(best_chunk.values()))
        concepts = query_concepts(query)
        mentions = self._mentions(concepts, records)
        terms = [c for c in concepts if c.kind == "term"]
        present_phrases = [c for c in concepts if c.kind == "phrase" and c.df > 0]
        key_terms = sorted((c for c in terms if c.df > 0), key=lambda c: -c.idf)[:s.key_terms]
        term_idf = sum(c.idf for c in terms) or 1.0
        absent_share = sum(c.idf for c in terms if c.df == 0) / term_idf
        timings["concepts"] = time.perf_counter() - mark

        papers = []
        for pid in order:
            paper: Paper | None = records.get(pid)
            if paper is None:  # an interrupted ingest's leftovers; never show them
                continue
            mentioned = {c.text for c in concepts if pid in mentions.get(c.text, ())}
            papers.append(RetrievedPaper(
                id=pid, title=paper.title, year=paper.year, score=round(fused[pid], 6), rank=len(papers) + 1,
                passage=passages.get(best_chunk[pid], ""), abstract=paper.abstract,
                metadata={"dense": round(best_dense.get(pid, (0.0, ""))[0], 4),
                          "bm25": round(best_lexical.get(pid, (0.0, ""))[0], 4),
                          "dense_rank": dense_rank.get(pid), "lexical_rank": lexical_rank.get(pid),
                          "coverage": round(idf_share(terms, mentioned), 4),
                          "key_coverage": round(idf_share(key_terms, mentioned), 4),
                          "phrase_coverage": round(idf_share(present_phrases, mentioned), 4),
                          "absent_share": round(absent_share, 4),
                          "concepts_matched": [c.text for c in concepts if c.text in mentioned],
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

    def _dense_of(self, paper_ids: list[str], vector: list[float]) -> dict[str, tuple[float, str]]:
        """Best-chunk cosine similarity to `vector` for papers the dense search did not return."""
        if not paper_ids:
            return {}
        found = self.index.vectors.get(where={PAPER_ID: {"$in": paper_ids}}, include=["embeddings", "metadatas"])
        if found["embeddings"] is None or len(found["embeddings"]) == 0:
            return {}
        matrix = np.asarray(found["embeddings"], dtype=np.float32)
        query = np.asarray(vector, dtype=np.float32)
        sims = matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query) + 1e-12)
        out: dict[str, tuple[float, str]] = {}
        for chunk_id, meta, sim in zip(found["ids"], found["metadatas"], sims.tolist()):
            pid = meta[PAPER_ID]
            if pid not in out or sim > out[pid][0]:
                out[pid] = (sim, chunk_id)
        return out

    def _mentions(self, concepts: list[Concept], records: dict[str, Paper]) -> dict[str, set[str]]:
        """For each concept, which of these papers mention it (title or abstract, any spelling, stemmed).

        Sets each concept's `df` and `idf` (cached) from the whole index.
        """
        total = max(1, self.index.lexical.paper_count())
        for concept in concepts:
            concept.df = self._document_frequency(concept)
            concept.idf = math.log(1 + (total - concept.df + 0.5) / (concept.df + 0.5))
        out: dict[str, set[str]] = {c.text: set() for c in concepts}
        if not records:
            return out
        with self._scratch_lock:
            db = self._scratch
            db.execute("DELETE FROM candidates")
            db.executemany("INSERT INTO candidates VALUES (?, ?, ?)",
                           [(p.title, p.abstract, pid) for pid, p in records.items()])
            for concept in concepts:
                if concept.df == 0:
                    continue
                rows = db.execute("SELECT paper_id FROM candidates WHERE candidates MATCH ?", (_match(concept),))
                out[concept.text] = {row[0] for row in rows}
        return out

    def _document_frequency(self, concept: Concept) -> int:
        """How many papers of the index mention `concept` (cached; the cache is bounded)."""
        key = _match(concept)
        if key not in self._df_cache:
            if len(self._df_cache) >= self.IDF_CACHE_SIZE:
                self._df_cache.clear()
            self._df_cache[key] = self.index.lexical.db.execute(
                "SELECT count(DISTINCT paper_id) FROM chunks_fts WHERE chunks_fts MATCH ?", (key,)).fetchone()[0]
        return self._df_cache[key]


def _match(concept: Concept) -> str:
    return " OR ".join(f'"{spelling}"' for spelling in concept.spellings)


def idf_share(concepts: Sequence[Concept], mentioned: set[str]) -> float:
    """The IDF-weighted share of `concepts` whose text is in `mentioned` (0 when there are none).

    >>> idf_share([Concept("sign", ["sign"], idf=5.0), Concept("video", ["video"], idf=3.0)], {"sign"})
    0.625
    """
    total = sum(c.idf for c in concepts)
    return sum(c.idf for c in concepts if c.text in mentioned) / total if total else 0.0


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
