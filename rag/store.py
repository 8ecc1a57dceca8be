"""The index: a Chroma collection (dense) and the lexical index, kept in step.

This module is the one place that builds the Chroma client: embedded (`PersistentClient` in the
index folder) by default, a Chroma server when `store.chroma_host` is set — the same code path
after that. The index folder always holds the lexical index and a marker file naming the
embedding model, so an index is never searched with a model it was not built with.

Writes go paper-batch by paper-batch: journal the papers, replace their chunks in Chroma, then
write their lexical rows and clear the journal in one SQLite transaction. A process killed at
any point leaves journal entries that `recover()` rolls back on the next open, so the next ingest
reaches exactly the state of an uninterrupted one.

Health: the two halves must hold the same chunks per paper. A writer's open (ingest) repairs a
paper whose vectors are missing or stale by re-embedding it from its stored record; a reader's
open (questions) writes nothing, refuses a damaged index with a message saying how to repair it,
and opens a folder it may not write to read-only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import weakref
from collections import Counter
from collections.abc import Collection, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings

from paperchat.rag.chunking import Chunk, chunk_paper
from paperchat.rag.lexical import LexicalIndex, LexicalIndexError
from paperchat.rag.papers import PAPER_ID, YEAR, Paper
from paperchat.rag.settings import Settings, StoreSettings

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


class IndexDamagedError(IndexError_):
    """The vector store and the lexical index disagree (e.g. `chroma/` was deleted)."""


class IndexReadOnlyError(IndexError_):
    """An ingest into a folder this user may not write to."""


# Chroma's HNSW graph, cosine distance. ef_search is the size of the search's candidate queue:
# at Chroma's default (100) the top 150 chunks a question asks for came back exact for 59 of the
# 238 tune+validate questions on the bundled corpus, and differed between two launches (the graph
# of a collection under Chroma's sync threshold of 1000 chunks is rebuilt at each open), so 10 of
# 238 matching lists changed from one launch to the next; at 800 all 238 are exact, at 1.7-2.4 ms
# (10k chunks: 5.9 ms; 164k: 4.4 ms, measured against brute force, eval/bench_results/BENCHMARKS.md).
HNSW_EF_SEARCH = 800
HNSW_CONFIG = {"hnsw:space": "cosine", "hnsw:search_ef": HNSW_EF_SEARCH}

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


def make_chroma_client(store: StoreSettings, chroma_dir: Path | None = None):
    """The Chroma client the settings ask for (embedded in `index_dir/chroma`, or a server).

    `chroma_dir` replaces the embedded folder (a read-only index searches a copy of it).
    """
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    if store.chroma_host:
        try:
            return chromadb.HttpClient(host=store.chroma_host, port=store.chroma_port, ssl=store.chroma_ssl,
                                       settings=chroma_settings)
        except Exception as error:  # noqa: BLE001 - connection errors come in many types
            raise ChromaUnavailableError(f"cannot reach the Chroma server at {store.chroma_host}:"
                                         f"{store.chroma_port} ({error}); start it (`chroma run`) "
                                         "or unset store.chroma_host") from None
    return chromadb.PersistentClient(path=str(chroma_dir or store.index_dir / "chroma"),
                                     settings=chroma_settings)


class PaperIndex:
    """Dense and lexical search over one collection of papers.

    Open with `PaperIndex.open(settings, embeddings)`; `create=True` makes a new index folder
    when there is none (ingest), otherwise a missing index raises `IndexNotFoundError`.
    `notes` says what opening did that a person should know (a repair, a read-only copy).
    """

    read_only = False
    notes: tuple[str, ...] = ()
    _remove_copy = staticmethod(lambda: None)  # deletes a read-only index's temporary vector copy

    def __init__(self, settings: Settings, embeddings: Embeddings | None, lexical: LexicalIndex, client):
        from langchain_chroma import Chroma

        self.settings = settings
        self.embeddings = embeddings
        self.lexical = lexical
        self.client = client
        self.dir = settings.store.index_dir
        self.vectors = Chroma(client=client, collection_name=settings.store.collection,
                              embedding_function=embeddings, collection_metadata=HNSW_CONFIG)
        self._chunk_collection = None

    @staticmethod
    def exists(settings: Settings) -> bool:
        """Whether `store.index_dir` holds a paperchat index (its marker file), without opening it."""
        return (settings.store.index_dir / MARKER).exists()

    @classmethod
    def open(cls, settings: Settings, embeddings: Embeddings | None = None,
             create: bool = False) -> PaperIndex:
        """Open the index; `create=True` is a writer's open (ingest): it may create, recover and repair.

        A reader's open writes nothing: a folder it may not write to is opened read-only, and an
        index whose two halves disagree raises `IndexDamagedError` naming the repair.
        """
        folder = settings.store.index_dir
        marker = folder / MARKER
        model = settings.embedding.model
        if folder.exists() and not folder.is_dir():
            raise ForeignIndexError(f"{folder} is a file, not an index folder: point --index at a folder "
                                    "(`paperchat ingest --index DIR` creates one)")
        read_only = marker.exists() and not _is_writable(folder)
        if read_only and create:
            raise IndexReadOnlyError(f"{folder} is read-only for this user: `paperchat ingest` needs write "
                                     "access to it (questions can still be asked of it as it is)")
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
                raise ForeignIndexError(f"{marker} is unreadable ({error}); "
                                        "run `paperchat ingest --rebuild`") from None
            if marker_data.get("format") != INDEX_FORMAT:
                raise IndexMismatchError(f"{folder} was built by another paperchat version; "
                                         "run `paperchat ingest --rebuild`")
            if built_with != model:
                raise IndexMismatchError(f"{folder} was built with embedding model {built_with!r}, "
                                         f"not {model!r}: set embedding.model = {built_with!r} "
                                         "or run `paperchat ingest --rebuild`")
        lexical_path = folder / "lexical.sqlite"
        if marker.exists() and not create and not lexical_path.exists():
            raise IndexDamagedError(f"the index at {folder} has lost its lexical index (lexical.sqlite, "
                                    "which also holds the paper records): rebuild it with "
                                    "`paperchat ingest --rebuild [PATH ...]`")
        try:
            lexical = LexicalIndex(lexical_path, read_only=read_only)
        except LexicalIndexError as error:
            raise ForeignIndexError(str(error)) from None
        notes = []
        copy_dir = None
        try:
            if read_only and not settings.store.chroma_host:
                # Embedded Chroma cannot open a folder it may not write to; it searches a private copy.
                copy_dir = Path(tempfile.mkdtemp(prefix="paperchat-readonly-"))
                shutil.copytree(folder / "chroma", copy_dir / "chroma", copy_function=shutil.copyfile)
                _make_writable(copy_dir)
                notes.append(f"{folder} is read-only: questions are answered from it as it is "
                             "(vectors from a temporary copy)")
            client = make_chroma_client(settings.store, copy_dir / "chroma" if copy_dir else None)
            index = cls(settings, embeddings, lexical, client)
        except IndexError_:
            lexical.close()
            _remove(copy_dir)
            raise
        except Exception as error:  # noqa: BLE001 - chroma raises many kinds on a damaged folder
            lexical.close()
            _remove(copy_dir)
            raise ForeignIndexError(f"cannot open the Chroma data in {folder} "
                                    f"({type(error).__name__}: {error}); "
                                    "run `paperchat ingest --rebuild`") from None
        index.read_only = read_only
        if copy_dir is not None:
            index._remove_copy = weakref.finalize(index, _remove, copy_dir)
        try:
            if create:
                if not marker.exists():
                    marker.write_text(json.dumps(marker_data, indent=1))
                index._configure_search()
                lexical.ensure_paper_terms()
                index.recover(repair=True)
                if index.recovered:
                    notes.append(f"repaired {index.recovered} paper{'s' if index.recovered != 1 else ''} "
                                 "(half-written by an interrupted ingest, or missing from the vector store)")
            else:
                index._refuse_if_damaged()
                if (width := index.search_width()) != HNSW_EF_SEARCH:
                    notes.append(f"this index searches its vectors approximately (HNSW ef_search "
                                 f"{width}, built before paperchat searched them exactly): "
                                 "`paperchat ingest` widens it without re-embedding anything")
        except BaseException:
            index.close()
            raise
        index.notes = tuple(notes)
        return index

    @staticmethod
    def wipe(settings: Settings) -> None:
        """Delete the index (`ingest --rebuild`): the folder's files and, on a server, the collection."""
        folder = settings.store.index_dir
        if folder.exists() and not folder.is_dir():
            raise ForeignIndexError(f"{folder} is a file, not an index folder; refusing to delete it")
        if folder.exists() and not (folder / MARKER).exists() and any(folder.iterdir()):
            raise ForeignIndexError(f"{folder} is not a paperchat index; refusing to delete it")
        if settings.store.chroma_host:
            client = make_chroma_client(settings.store)
            with contextlib.suppress(Exception):  # an absent collection
                client.delete_collection(settings.store.collection)
        shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        self.lexical.close()
        self._remove_copy()

    # --- health ------------------------------------------------------------------------------
    recovered = 0  # papers this open rolled back or re-embedded

    def recover(self, repair: bool = True) -> int:
        """Roll back papers an interrupted ingest left half-written and, with `repair`, re-embed
        papers whose vectors are missing or stale (from their stored records).

        Returns how many papers this index has recovered since it was opened, the writer's open
        included, so an ingest can report the real count.
        """
        pending = self.lexical.journal()
        if pending:
            self.delete_vectors(pending)
            self.lexical.delete_papers(pending)
            self.recovered += len(pending)
        if repair:
            self.recovered += self._repair_dense()
        return self.recovered

    def disagreements(self) -> dict[str, tuple[int, int]]:
        """Paper id → (lexical chunks, dense chunks) for every paper whose two halves disagree.

        Papers in the journal (a write in progress, or one a kill interrupted) are left out. The
        per-paper count runs only when the totals differ, so a healthy open costs two counts.
        """
        dense_total = self.client.get_or_create_collection(self.settings.store.collection).count()
        if dense_total == self.lexical.chunk_count() and not self.lexical.journal():
            return {}
        dense = Counter(meta[PAPER_ID] for meta in self.vectors.get(include=["metadatas"])["metadatas"])
        pending = set(self.lexical.journal())
        lexical = self.lexical.chunk_counts()
        return {pid: (lexical.get(pid, 0), dense.get(pid, 0)) for pid in set(lexical) | set(dense)
                if pid not in pending and lexical.get(pid, 0) != dense.get(pid, 0)}

    def _refuse_if_damaged(self) -> None:
        wrong = self.disagreements()
        if wrong:  # a write committing between the two reads looks the same for an instant: look again
            time.sleep(0.2)
            wrong = self.disagreements()
        if wrong:
            papers = self.lexical.paper_count()
            missing = sum(1 for lexical, dense in wrong.values() if lexical and not dense)
            raise IndexDamagedError(
                f"the index at {self.dir} is damaged: the vector store disagrees with the lexical index for "
                f"{len(wrong)} of {papers} papers ({missing} have no vectors at all; was chroma/ deleted?). "
                "Re-run `paperchat ingest` with the files you indexed: it re-embeds those papers from the "
                "stored records and loses nothing")

    def _repair_dense(self) -> int:
        wrong = self.disagreements()
        if not wrong:
            return 0
        stored = self.lexical.papers(sorted(wrong))
        orphans = [pid for pid in wrong if pid not in stored]  # vectors of papers the index does not hold
        if orphans:
            self.delete_vectors(orphans)
        if stored:
            if self.embeddings is None:
                raise IndexDamagedError(f"the index at {self.dir} needs {len(stored)} papers re-embedded: "
                                        "run `paperchat ingest`")
            papers = list(stored.values())
            for start in range(0, len(papers), 64):
                batch = papers[start:start + 64]
                self.write(batch, [chunk for paper in batch for chunk in self._chunks(paper)])
        return len(wrong)

    def _chunks(self, paper: Paper) -> list[Chunk]:
        """The chunks ingest makes of a paper (same window and overlap)."""
        count = self.embeddings.count_tokens
        window = min(self.settings.chunking.max_tokens, self.embeddings.max_seq_tokens - 2)
        return chunk_paper(paper, window, count, self.settings.chunking.overlap_sentences)

    # --- writes ------------------------------------------------------------------------------

    def write(self, papers: Sequence[Paper], chunks: Sequence[Chunk]) -> None:
        """Add or replace these papers (all their chunks) in both indexes."""
        self._fingerprint = None
        self.start_rewrite([p.id for p in papers])
        if chunks:
            self.vectors.add_texts(texts=[c.text for c in chunks], metadatas=[c.metadata for c in chunks],
                                   ids=[c.id for c in chunks])
        self.lexical.write_papers(papers, chunks)

    def delete(self, paper_ids: Sequence[str]) -> None:
        self.start_rewrite(paper_ids)
        self.lexical.delete_papers(paper_ids)

    def start_rewrite(self, paper_ids: Sequence[str]) -> None:
        """The first half of `write` and `delete`: journal the papers, then drop their vectors.

        Until the lexical commit that ends the write they are pending: a crash in between is
        rolled back by the next `recover`.
        """
        self.lexical.journal_add(paper_ids)
        self.delete_vectors(paper_ids)

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
                                                          metadata=HNSW_CONFIG)
        step = min(batch_size, self.client.get_max_batch_size())
        self.lexical.journal_add([p.id for p in papers])
        for start in range(0, len(chunks), step):
            part = chunks[start:start + step]
            collection.upsert(ids=[c.id for c in part], embeddings=vectors[start:start + step],
                           metadatas=[c.metadata for c in part], documents=[c.text for c in part])
        self.lexical.write_papers(papers, chunks, replace=False)

    def delete_vectors(self, paper_ids: Sequence[str]) -> None:
        """Drop these papers' chunk vectors only; alone, it leaves the two indexes disagreeing,
        which `disagreements` reports and `recover` repairs."""
        for start in range(0, len(paper_ids), 500):
            self.vectors.delete(where={PAPER_ID: {"$in": list(paper_ids[start:start + 500])}})

    # --- reads -------------------------------------------------------------------------------
    def paper_count(self) -> int:
        return self.lexical.paper_count()

    _fingerprint: tuple[int, str] | None = None  # (SQLite data_version it was computed at, fingerprint)

    def fingerprint(self) -> str:
        """16 hex digits naming what the index holds: every paper's id and content hash, and the
        embedding model. Two answers with one fingerprint were computed from the same collection.

        Recomputed only when another process has written to the index since (SQLite's data_version);
        this object's own writes forget it.
        """
        version = self.lexical.db.execute("PRAGMA data_version").fetchone()[0]
        if self._fingerprint is None or self._fingerprint[0] != version:
            digest = hashlib.sha256(self.settings.embedding.model.encode())
            for paper_id, content_hash in sorted(self.lexical.content_hashes().items()):
                digest.update(f"\n{paper_id}\t{content_hash}".encode())
            self._fingerprint = (version, digest.hexdigest()[:16])
        return self._fingerprint[1]

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

    def lexical_search(self, text: str, limit: int, year_min: int | None = None, year_max: int | None = None,
                       include_undated: bool = True) -> list[tuple[str, str, float]]:
        """BM25 hits for free text: (chunk id, paper id, score; higher is better), best first."""
        return self.lexical.search(text, limit, year_min, year_max, include_undated=include_undated)

    def document_frequency(self, match_expression: str) -> int:
        """How many papers match an FTS5 MATCH expression (`"a" OR "b c"`); cached per index state."""
        return self.lexical.document_frequency(match_expression)

    def count_papers_soon(self, match_expressions: Sequence[str]) -> Future:
        """Start counting these expressions' papers in another thread (`LexicalIndex.count_papers_soon`)."""
        return self.lexical.count_papers_soon(match_expressions)

    def vectors_of(self, paper_ids: Sequence[str]) -> ChunkVectors:
        """The stored vectors of every chunk of these papers (the dense similarity of lexical-only hits).

        The chunk ids come from the lexical index and Chroma is asked by id: a lookup, where a
        `where` filter on the paper id made Chroma scan its metadata (25 papers: 23-32 ms at 100k
        papers, 2 ms by id; 210 ms at 1M).
        """
        chunk_papers = self.lexical.chunks_of(list(dict.fromkeys(paper_ids)))
        found = self.vectors.get(ids=list(chunk_papers), include=["embeddings"]) if chunk_papers else {}
        embeddings = found.get("embeddings")
        if embeddings is None or len(embeddings) == 0:
            return ChunkVectors([], [], np.zeros((0, 0), dtype=np.float32))
        return ChunkVectors(list(found["ids"]), [chunk_papers[chunk_id] for chunk_id in found["ids"]],
                            np.asarray(embeddings, dtype=np.float32))

    def dense_chunk_ids(self) -> set[str]:
        return set(self.vectors.get(include=[])["ids"])

    def dense_search(self, query_vector: list[float], limit: int, year_min: int | None = None,
                     year_max: int | None = None, include_undated: bool = True) -> list[DenseHit]:
        bounded = year_min is not None or year_max is not None
        where = _year_filter(year_min, year_max, include_undated,
                             set(self.years()) if include_undated and bounded else ())
        # distances only: fetching each hit's metadata and text from Chroma cost 30 of 40 ms at 10k
        # papers; the chunks' papers come from the lexical index, which holds the same chunks
        found = self._collection().query(query_embeddings=[list(query_vector)], n_results=limit, where=where,
                                         include=["distances"])
        ids, distances = found["ids"][0], found["distances"][0]
        papers = self.lexical.papers_of_chunks(ids)
        return [DenseHit(chunk_id, papers[chunk_id], 1.0 - distance)
                for chunk_id, distance in zip(ids, distances) if chunk_id in papers]

    def search_width(self) -> int | None:
        """The HNSW ef_search the vectors are searched with (HNSW_EF_SEARCH unless built before it)."""
        return (self._collection().configuration_json or {}).get("hnsw", {}).get("ef_search")

    def _configure_search(self) -> None:
        """A writer brings an index built before HNSW_EF_SEARCH up to it (Chroma applies it at open)."""
        if self.search_width() != HNSW_EF_SEARCH:
            self._collection().modify(configuration={"hnsw": {"ef_search": HNSW_EF_SEARCH}})
            self._chunk_collection = None

    def _collection(self):
        """The chunk vectors' Chroma collection (the one `self.vectors` writes), looked up once."""
        if self._chunk_collection is None:
            self._chunk_collection = self.client.get_collection(self.settings.store.collection)
        return self._chunk_collection


def _is_writable(folder: Path) -> bool:
    """Whether this user may write the index's files (checked before anything tries to)."""
    paths = [folder, folder / "lexical.sqlite", folder / "chroma", folder / "chroma" / "chroma.sqlite3"]
    return all(os.access(path, os.W_OK) for path in paths if path.exists())


def _make_writable(folder: Path) -> None:
    """The copy of a read-only folder inherits its modes; Chroma must be able to write the copy."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o700 if path.is_dir() else path.stat().st_mode | 0o600)


def _remove(folder: Path | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


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
