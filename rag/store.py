"""The index: a Chroma collection (dense) and the lexical index, kept in step.

This module is the one place that builds the Chroma client: embedded (`PersistentClient` in the
index folder) by default, a Chroma server when `store.chroma_host` is set — the same code path
after that. The index folder always holds the lexical index and a marker file naming the
embedding model, so an index is never searched with a model it was not built with.

Writes go paper-batch by paper-batch: journal the papers, replace their chunks in Chroma, then
write their lexical rows and clear the journal in one SQLite transaction. A process killed at
any point leaves journal entries that `recover()` rolls back on the next open, so the next ingest
reaches exactly the state of an uninterrupted one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
from langchain_core.embeddings import Embeddings

from rag.chunking import Chunk
from rag.lexical import LexicalIndex, LexicalIndexError
from rag.papers import PAPER_ID, YEAR, Paper
from rag.settings import Settings, StoreSettings

MARKER = "paperchat-index.json"
INDEX_FORMAT = 2  # 2: lexical FTS rows share their rowid with `chunks` rows


class IndexError_(RuntimeError):
    """Base for index problems; the message says what to run."""


class IndexNotFoundError(IndexError_):
    pass


class ForeignIndexError(IndexError_):
    pass


class IndexMismatchError(IndexError_):
    pass


class ChromaUnavailableError(IndexError_):
    pass


@dataclass(frozen=True)
class DenseHit:
    chunk_id: str
    paper_id: str
    similarity: float  # cosine similarity, 1 = same direction


@dataclass(frozen=True)
class ChunkVectors:
    """Stored chunk vectors: row i of `matrix` is chunk `chunk_ids[i]` of paper `paper_ids[i]`."""

    chunk_ids: list[str]
    paper_ids: list[str]
    matrix: np.ndarray  # float32, one row per chunk


def make_chroma_client(store: StoreSettings):
    """The Chroma client the settings ask for (embedded in `index_dir/chroma`, or a server)."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    if store.chroma_host:
        try:
            return chromadb.HttpClient(host=store.chroma_host, port=store.chroma_port, ssl=store.chroma_ssl,
                                       settings=chroma_settings)
        except Exception as error:  # noqa: BLE001 - connection errors come in many types
            raise ChromaUnavailableError(f"cannot reach the Chroma server at {store.chroma_host}:{store.chroma_port} "
                                         f"({error}); start it (`chroma run`) or unset store.chroma_host") from None
    return chromadb.PersistentClient(path=str(store.index_dir / "chroma"), settings=chroma_settings)


class PaperIndex:
    """Dense and lexical search over one collection of papers.

    Open with `PaperIndex.open(settings, embeddings)`; `create=True` makes a new index folder
    when there is none (ingest), otherwise a missing index raises `IndexNotFoundError`.
    """

    def __init__(self, settings: Settings, embeddings: Embeddings | None, lexical: LexicalIndex, client):
        from langchain_chroma import Chroma

        self.settings = settings
        self.embeddings = embeddings
        self.lexical = lexical
        self.client = client
        self.dir = settings.store.index_dir
        self.vectors = Chroma(client=client, collection_name=settings.store.collection,
                              embedding_function=embeddings, collection_metadata={"hnsw:space": "cosine"})

    @classmethod
    def open(cls, settings: Settings, embeddings: Embeddings | None = None, create: bool = False) -> PaperIndex:
        folder = settings.store.index_dir
        marker = folder / MARKER
        model = settings.embedding.model
        if not marker.exists():
            if folder.exists() and any(folder.iterdir()):
                raise ForeignIndexError(f"{folder} exists but is not a paperchat index (no {MARKER}); "
                                        "choose another --index folder or empty this one")
            if not create:
                raise IndexNotFoundError(f"no index at {folder}: run `paperchat ingest` first")
            folder.mkdir(parents=True, exist_ok=True)
            marker_data = {"format": INDEX_FORMAT, "embedding_model": model,
                           "collection": settings.store.collection}
        else:
            try:
                marker_data = json.loads(marker.read_text())
                built_with = marker_data["embedding_model"]
            except (ValueError, KeyError, OSError) as error:
                raise ForeignIndexError(f"{marker} is unreadable ({error}); run `paperchat ingest --rebuild`") from None
            if marker_data.get("format") != INDEX_FORMAT:
                raise IndexMismatchError(f"{folder} was built by another paperchat version; "
                                         "run `paperchat ingest --rebuild`")
            if built_with != model:
                raise IndexMismatchError(f"{folder} was built with embedding model {built_with!r}, not {model!r}: "
                                         f"set embedding.model = {built_with!r} or run `paperchat ingest --rebuild`")
        try:
            lexical = LexicalIndex(folder / "lexical.sqlite")
        except LexicalIndexError as error:
            raise ForeignIndexError(str(error)) from None
        try:
            client = make_chroma_client(settings.store)
            index = cls(settings, embeddings, lexical, client)
        except IndexError_:
            lexical.close()
            raise
        except Exception as error:  # noqa: BLE001 - chroma raises many kinds on a damaged folder
            lexical.close()
            raise ForeignIndexError(f"cannot open the Chroma data in {folder} ({type(error).__name__}: {error}); "
                                    "run `paperchat ingest --rebuild`") from None
        if not marker.exists():
            marker.write_text(json.dumps(marker_data, indent=1))
        index.recover()
        return index

    @staticmethod
    def wipe(settings: Settings) -> None:
        """Delete the index (`ingest --rebuild`): the folder's files and, on a server, the collection."""
        folder = settings.store.index_dir
        if folder.exists() and not (folder / MARKER).exists() and any(folder.iterdir()):
            raise ForeignIndexError(f"{folder} is not a paperchat index; refusing to delete it")
        if settings.store.chroma_host:
            client = make_chroma_client(settings.store)
            try:
                client.delete_collection(settings.store.collection)
            except Exception:  # noqa: BLE001 - absent collection
                pass
        shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        self.lexical.close()

    # --- writes ------------------------------------------------------------------------------
    def recover(self) -> int:
        """Roll back papers an interrupted ingest left half-written; returns how many."""
        pending = self.lexical.journal()
        if pending:
            self._delete_dense(pending)
            self.lexical.delete_papers(pending)
        return len(pending)

    def write(self, papers: Sequence[Paper], chunks: Sequence[Chunk]) -> None:
        """Add or replace these papers (all their chunks) in both indexes."""
        ids = [p.id for p in papers]
        self.lexical.journal_add(ids)
        self._delete_dense(ids)
        if chunks:
            self.vectors.add_texts(texts=[c.text for c in chunks], metadatas=[c.metadata for c in chunks],
                                   ids=[c.id for c in chunks])
        self.lexical.write_papers(papers, chunks)

    def delete(self, paper_ids: Sequence[str]) -> None:
        self.lexical.journal_add(paper_ids)
        self._delete_dense(paper_ids)
        self.lexical.delete_papers(paper_ids)

    def update_records(self, papers: Sequence[Paper]) -> None:
        """Refresh the stored records of papers whose indexed text is unchanged (a new source file)."""
        self.lexical.update_records(papers)

    def write_bulk(self, papers: Sequence[Paper], chunks: Sequence[Chunk], vectors: np.ndarray,
                   batch_size: int = 4000) -> None:
        """Add papers that are not in the index yet, with their chunk vectors already computed.

        For building large indexes (the benchmark's synthetic corpora): no embedding model, no
        delete-before-insert, so a build stays linear. The rows are those `write` writes.
        """
        collection = self.client.get_or_create_collection(self.settings.store.collection,
                                                          metadata={"hnsw:space": "cosine"})
        step = min(batch_size, self.client.get_max_batch_size())
        self.lexical.journal_add([p.id for p in papers])
        for start in range(0, len(chunks), step):
            part = chunks[start:start + step]
            collection.upsert(ids=[c.id for c in part], embeddings=vectors[start:start + step],
                           metadatas=[c.metadata for c in part], documents=[c.text for c in part])
        self.lexical.write_papers(papers, chunks, replace=False)

    def _delete_dense(self, paper_ids: Sequence[str]) -> None:
        for start in range(0, len(paper_ids), 500):
            self.vectors.delete(where={PAPER_ID: {"$in": list(paper_ids[start:start + 500])}})

    # --- reads -------------------------------------------------------------------------------
    def paper_count(self) -> int:
        return self.lexical.paper_count()

    def papers(self, paper_ids: Sequence[str]) -> dict[str, Paper]:
        """The stored records of these papers, by id (ids not in the index are left out)."""
        return self.lexical.papers(paper_ids)

    def passages(self, chunk_ids: Sequence[str]) -> dict[str, str]:
        """Chunk id → the chunk's passage (without the title), for these chunks."""
        return self.lexical.passages(chunk_ids)

    def titles(self) -> dict[str, str]:
        """Paper id → title, for every paper (question sets resolve gold titles with it)."""
        return self.lexical.all_titles()

    def years(self) -> list[int]:
        """The year of every paper that has one (the chat's year range and histogram)."""
        return self.lexical.years()

    def content_hashes(self) -> dict[str, str]:
        """Paper id → hash of its indexed text: what ingest compares to skip unchanged papers."""
        return self.lexical.content_hashes()

    def lexical_chunk_ids(self) -> set[str]:
        return self.lexical.chunk_ids()

    def pending_papers(self) -> list[str]:
        """Papers an interrupted write left in the journal (empty after `recover()`)."""
        return self.lexical.journal()

    def lexical_search(self, text: str, limit: int, year_min: int | None = None,
                       year_max: int | None = None, include_undated: bool = True) -> list[tuple[str, str, float]]:
        """BM25 hits for free text: (chunk id, paper id, score; higher is better), best first."""
        return self.lexical.search(text, limit, year_min, year_max, include_undated=include_undated)

    def document_frequency(self, match_expression: str) -> int:
        """How many papers match an FTS5 MATCH expression (`"a" OR "b c"`); cached per index state."""
        return self.lexical.document_frequency(match_expression)

    def vectors_of(self, paper_ids: Sequence[str]) -> ChunkVectors:
        """The stored vectors of every chunk of these papers (the dense similarity of lexical-only hits)."""
        if not paper_ids:
            return ChunkVectors([], [], np.zeros((0, 0), dtype=np.float32))
        found = self.vectors.get(where={PAPER_ID: {"$in": list(paper_ids)}}, include=["embeddings", "metadatas"])
        embeddings = found["embeddings"]
        if embeddings is None or len(embeddings) == 0:
            return ChunkVectors([], [], np.zeros((0, 0), dtype=np.float32))
        return ChunkVectors(list(found["ids"]), [meta[PAPER_ID] for meta in found["metadatas"]],
                            np.asarray(embeddings, dtype=np.float32))

    def dense_chunk_ids(self) -> set[str]:
        return set(self.vectors.get(include=[])["ids"])

    def dense_search(self, query_vector: list[float], limit: int, year_min: int | None = None,
                     year_max: int | None = None, include_undated: bool = True) -> list[DenseHit]:
        bounded = year_min is not None or year_max is not None
        where = _year_filter(year_min, year_max, include_undated,
                             set(self.years()) if include_undated and bounded else ())
        hits = self.vectors.similarity_search_by_vector_with_relevance_scores(query_vector, k=limit, filter=where)
        return [DenseHit(doc.id, doc.metadata[PAPER_ID], 1.0 - distance) for doc, distance in hits]


def _year_filter(year_min: int | None, year_max: int | None, include_undated: bool = True,
                 known_years: Collection[int] = ()) -> dict | None:
    """The Chroma `where` for a year range; undated chunks carry no year key at all.

    Chroma's `$nin` keeps a chunk that lacks the key, so "in the range, or undated" is "none of
    the collection's years outside the range":

    >>> _year_filter(2020, None, include_undated=True, known_years={2018, 2020, 2023})
    {'year': {'$nin': [2018]}}
    >>> _year_filter(2020, 2021, include_undated=False)
    {'$and': [{'year': {'$gte': 2020}}, {'year': {'$lte': 2021}}]}
    >>> _year_filter(None, None, include_undated=False)
    {'year': {'$gte': -1000000}}
    """
    if include_undated:
        outside = sorted(y for y in known_years if (year_min is not None and y < year_min)
                         or (year_max is not None and y > year_max))
        return {YEAR: {"$nin": outside}} if outside else None
    if year_min is None and year_max is None:
        return {YEAR: {"$gte": -10**6}}  # any year: only dated chunks have the key
    clauses = []
    if year_min is not None:
        clauses.append({YEAR: {"$gte": year_min}})
    if year_max is not None:
        clauses.append({YEAR: {"$lte": year_max}})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}
