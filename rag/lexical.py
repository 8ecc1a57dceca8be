"""The lexical index: SQLite FTS5 with BM25 ranking, beside Chroma, over the same chunk ids.

This module is the one owner of `lexical.sqlite` in an index folder. It also keeps the paper
records (title, abstract, metadata, content hash) and the ingest journal that makes an
interrupted ingest recoverable: papers are written to the journal before Chroma is touched and
leave it in the same transaction that writes their lexical rows.

Chroma 1.5 in local mode has no sparse index, hence this one; FTS5 ships inside Python's sqlite3,
updates in place (an ingest of one changed paper does not rebuild anything) and is transactional.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

import numpy as np

from paperchat.rag.chunking import Chunk
from paperchat.rag.papers import Paper
from paperchat.rag.text import STOPWORDS

SCHEMA = """
CREATE TABLE IF NOT EXISTS papers (
    id TEXT PRIMARY KEY, content_hash TEXT NOT NULL, title TEXT NOT NULL, year INTEGER, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id TEXT PRIMARY KEY, paper_id TEXT NOT NULL, chunk_index INTEGER NOT NULL, passage TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_paper ON chunks(paper_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    title, passage, chunk_id UNINDEXED, paper_id UNINDEXED, tokenize = 'porter unicode61');
CREATE TABLE IF NOT EXISTS journal (paper_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Per-term row counts that FTS5 keeps anyway; a temp table, so opening an index writes nothing to it.
VOCAB = "CREATE VIRTUAL TABLE IF NOT EXISTS temp.chunks_vocab USING fts5vocab(main, chunks_fts, row)"
TOKENIZER = "porter unicode61"
# One row per paper (rowid = the paper's `papers` rowid): every word of its title and chunks, without
# positions or text (detail=none, contentless), so a word's paper count is one short document list
# (100k papers: 13 -> 3.6 ms per question, +2 % on disk). Built by a writer's open when missing;
# `meta` says when it is complete, and only then is it read or kept up to date.
PAPER_TERMS = f"""CREATE VIRTUAL TABLE IF NOT EXISTS paper_terms USING fts5(
    text, content = '', detail = none, tokenize = '{TOKENIZER}')"""
PAPER_TERMS_READY = "paper_terms"
# Papers' indexed words, for `paper_terms` (a contentless row is deleted by giving its words again).
_ALL_PAPER_WORDS = ("SELECT p.rowid, p.title || ' ' || group_concat(c.passage, ' ') FROM papers p "
                    "JOIN chunks c ON c.paper_id = p.id {} GROUP BY p.id")
_PAPER_WORDS = _ALL_PAPER_WORDS.format("WHERE p.id = ?")
_SINGLE_WORDS = re.compile(r'"[^" ]+"(?: OR "[^" ]+")*')
# A query term whose BM25 IDF is under this share of the rarest term's adds little to any score but
# makes FTS5 score a large part of the index (its IDF falls as its chunks grow); the lexical search
# leaves it out. 0.25 drops, in a 10k-paper index, terms in more than about a fifth of the chunks.
COMMON_TERM_IDF_SHARE = 0.25
# At most this many of a question's terms, the rarest, go into the FTS5 query.
MAX_QUERY_TERMS = 12
# Every occurrence of a term, from FTS5's own index, as one comma-joined string.
INSTANCES = ("CREATE VIRTUAL TABLE IF NOT EXISTS temp.chunks_instances "
             "USING fts5vocab(main, chunks_fts, instance)")
# An occurrence is one int: its row, then 1 bit for the passage (0: the title); `_POSITIONED` adds its
# place in the column below that (the words of a phrase stand at consecutive places).
_OCCURRENCES = "SELECT group_concat(doc * 2 + (col = 'passage')) FROM temp.chunks_instances WHERE term = ?"
PLACE_BITS = 20  # a column holds a few hundred tokens
_POSITIONED = (f"SELECT group_concat((doc * 2 + (col = 'passage')) << {PLACE_BITS} | offset) "
               "FROM temp.chunks_instances WHERE term = ?")
# A phrase's rows and their bm25() for it alone (an auxiliary function cannot sit in an aggregate:
# the subquery, kept apart by its LIMIT, computes it first).
_PHRASE_PARTS = ("SELECT group_concat(rowid), group_concat(part) FROM (SELECT rowid, "
                 "-bm25(chunks_fts, ?, 1.0) AS part FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT -1)")
# FTS5's bm25() constants, which `LexicalIndex.bm25` reproduces.
BM25_K1, BM25_B = 1.2, 0.75
# Each term's rows and score parts are kept while the index is unchanged, up to this many bytes
# (least recently used first out): questions share terms ("ImageNet", "top-1"), and at 1M papers
# such a term's part takes 40-90 ms to compute.
PARTS_CACHE_BYTES = 256 * 2**20
# Threads beside the caller's: one counts the concepts' papers while the other shares the lexical
# search's terms with the caller (two cores busy; one more thread where that counting runs long).
ASIDE_THREADS = 2
PHRASE_ROW_COST = 4  # FTS5's bm25() of a phrase, per row, against a word's occurrences read by `_part`

_TOKEN = re.compile(r"\w+", re.UNICODE)


class LexicalIndexError(RuntimeError):
    """The lexical index file is unreadable or not paperchat's."""


def query_terms(text: str) -> list[str]:
    """The content words of free text, then its hyphenated compounds as phrases (words space-joined).

    >>> query_terms("Which papers prune ResNet-50?")
    ['prune', 'resnet', '50', 'resnet 50']
    """
    terms = [t.lower() for t in _TOKEN.findall(text)]
    words = list(dict.fromkeys(t for t in terms if t not in STOPWORDS))
    phrases = []
    for compound in re.findall(r"\w+(?:[-./]\w+)+", text):
        parts = [p.lower() for p in _TOKEN.findall(compound)]
        if len(parts) > 1:
            phrases.append(" ".join(parts))
    return words + list(dict.fromkeys(phrases))


def fts_query(text: str) -> str:
    """An FTS5 MATCH expression for free text: every content word, any of them, rarer ones win by BM25.

    Hyphenated terms also count as a phrase, so "ResNet-50" prefers "ResNet-50" over a lone "50".

    >>> fts_query("Which papers prune ResNet-50?")
    '"prune" OR "resnet" OR "50" OR "resnet 50"'
    >>> fts_query("which papers?")
    ''
    """
    return _or(query_terms(text))


def _or(terms: Iterable[str]) -> str:
    return " OR ".join(f'"{term}"' for term in terms)


_tokenizer_lock = threading.Lock()
_tokenizer_db: sqlite3.Connection | None = None


@lru_cache(maxsize=65_536)
def index_terms(text: str) -> tuple[str, ...]:
    """The terms the index's tokenizer makes of `text` (what `fts5vocab` lists), in order.

    >>> index_terms("Pruning ResNet-50 networks")
    ('prune', 'resnet', '50', 'network')
    """
    global _tokenizer_db
    with _tokenizer_lock:
        if _tokenizer_db is None:
            _tokenizer_db = sqlite3.connect(":memory:", check_same_thread=False)
            _tokenizer_db.executescript(f"""
                CREATE VIRTUAL TABLE scratch USING fts5(text, tokenize = '{TOKENIZER}');
                CREATE VIRTUAL TABLE scratch_terms USING fts5vocab(scratch, instance);""")
        db = _tokenizer_db
        db.execute("INSERT INTO scratch (rowid, text) VALUES (1, ?)", (text,))
        try:
            return tuple(row[0] for row in db.execute("SELECT term FROM scratch_terms ORDER BY offset"))
        finally:
            db.execute("DELETE FROM scratch WHERE rowid = 1")


class LexicalIndex:
    """BM25 over chunk text, plus paper records and the ingest journal, in one SQLite file."""

    def __init__(self, path: Path, read_only: bool = False):
        """Open (or create) the index at `path`; `read_only` opens an existing file without writing to it.

        Raises `LexicalIndexError` for a file that is not SQLite, is damaged, or is another
        program's database (which is never written to).
        """
        self.path = path
        self.read_only = read_only
        try:
            # Shared across threads (the chat page answers from a pool of them); SQLite serialises
            # access itself when built thread-safe, which `_require_serialized` checks.
            _require_serialized()
            self.db = _connect(path, read_only)
            _check_is_ours(self.db, path)
            if not read_only:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.executescript(SCHEMA)
            self.db.execute(VOCAB)
            self.db.execute(INSTANCES)
        except sqlite3.DatabaseError as error:
            raise LexicalIndexError(damaged_message(path, error)) from None
        # Term statistics, valid while the file is unchanged: `PRAGMA data_version` moves when another
        # connection commits, and this one's own writes clear them.
        self._stats: dict[str, int] = {}
        self._data_version = -1
        self._row_papers: np.ndarray | None = None  # FTS rowid → paper ordinal, for counting papers
        self._row_sizes: tuple[np.ndarray, int, float] | None = None  # see `_sizes`
        self._parts: OrderedDict[tuple[str, float], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._parts_bytes = 0
        self._parts_lock = threading.Lock()
        self._ordinals_lock = threading.Lock()
        self._state = 0  # moves whenever the cached statistics are forgotten
        self._aside: ThreadPoolExecutor | None = None  # threads for `count_papers_soon` and `bm25`
        self._side = threading.local()  # each of those threads' connection
        self._side_dbs: list[sqlite3.Connection] = []
        self._paper_terms = self.get_meta(PAPER_TERMS_READY) == "1"

    def close(self) -> None:
        if self._aside is not None:
            self._aside.shutdown(wait=True)
        for db in self._side_dbs:
            db.close()
        self.db.close()

    # --- journal: what an interrupted ingest left half-written ------------------------------
    def journal_add(self, paper_ids: Iterable[str]) -> None:
        with self.db:
            self.db.executemany("INSERT OR IGNORE INTO journal VALUES (?)", [(i,) for i in paper_ids])

    def journal(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT paper_id FROM journal")]

    # --- writes ------------------------------------------------------------------------------
    def write_papers(self, papers: Sequence[Paper], chunks: Sequence[Chunk], replace: bool = True) -> None:
        """Replace these papers' rows and chunks, and clear them from the journal, atomically.

        `replace=False` skips removing earlier rows: only for papers known to be absent (a fresh build).
        """
        ids = [(p.id,) for p in papers]
        self.db.execute("BEGIN")
        try:
            if replace:
                self._delete(ids)
            self.db.executemany("INSERT INTO papers VALUES (?, ?, ?, ?, ?)",
                                [(p.id, p.content_hash, p.title, p.year, _record_json(p)) for p in papers])
            self.db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?)",
                                [(c.id, c.paper_id, c.index, c.passage) for c in chunks])
            # An FTS row shares its rowid with its `chunks` row, so deleting a paper's rows is an index
            # lookup, not a scan (paper_id is UNINDEXED in the FTS table).
            titles = {p.id: p.title for p in papers}
            self.db.executemany("INSERT INTO chunks_fts (rowid, title, passage, chunk_id, paper_id) "
                                "SELECT rowid, ?, passage, id, paper_id FROM chunks WHERE id = ?",
                                [(titles[c.paper_id], c.id) for c in chunks])
            if self._paper_terms:
                self.db.executemany(f"INSERT INTO paper_terms (rowid, text) {_PAPER_WORDS}", ids)
            self.db.executemany("DELETE FROM journal WHERE paper_id = ?", ids)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        finally:
            self._forget_stats()

    def update_records(self, papers: Sequence[Paper]) -> None:
        """Refresh stored records whose indexed content is unchanged (e.g. a new source file)."""
        with self.db:
            self.db.executemany("UPDATE papers SET record = ? WHERE id = ?",
                                [(_record_json(p), p.id) for p in papers])

    def delete_papers(self, paper_ids: Iterable[str]) -> None:
        ids = [(i,) for i in paper_ids]
        with self.db:
            self._delete(ids)
            self.db.executemany("DELETE FROM journal WHERE paper_id = ?", ids)
        self._forget_stats()

    def _delete(self, ids: list[tuple[str]]) -> None:
        if self._paper_terms:
            self.db.executemany(f"INSERT INTO paper_terms (paper_terms, rowid, text) "
                                f"SELECT 'delete', * FROM ({_PAPER_WORDS})", ids)
        self.db.executemany("DELETE FROM chunks_fts WHERE rowid IN "
                            "(SELECT rowid FROM chunks WHERE paper_id = ?)", ids)
        self.db.executemany("DELETE FROM chunks WHERE paper_id = ?", ids)
        self.db.executemany("DELETE FROM papers WHERE id = ?", ids)

    def ensure_paper_terms(self) -> None:
        """Build `paper_terms` from the stored chunks if this index has none yet (a writer's open)."""
        if self._paper_terms:
            return
        with self.db:
            self.db.execute(PAPER_TERMS)
            self.db.execute("INSERT INTO paper_terms (paper_terms) VALUES ('delete-all')")
            self.db.execute(f"INSERT INTO paper_terms (rowid, text) {_ALL_PAPER_WORDS.format('')}")
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, '1')", (PAPER_TERMS_READY,))
        self._paper_terms = True
        self._forget_stats()

    def set_meta(self, key: str, value: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    # --- reads -------------------------------------------------------------------------------
    def content_hashes(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT id, content_hash FROM papers"))

    def paper_count(self) -> int:
        """Papers in the index, cached while it is unchanged (a count of 1M rows takes ~5 ms)."""
        stats = self._valid_stats()
        if "\0papers" not in stats:
            stats["\0papers"] = self.db.execute("SELECT count(*) FROM papers").fetchone()[0]
        return stats["\0papers"]

    def chunk_ids(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT id FROM chunks")}

    def chunk_counts(self) -> dict[str, int]:
        """Paper id → its number of chunks (the index health check compares these with Chroma's)."""
        return dict(self.db.execute("SELECT paper_id, count(*) FROM chunks GROUP BY paper_id"))

    def papers(self, paper_ids: Sequence[str]) -> dict[str, Paper]:
        return {pid: _paper_from_json(record)
                for pid, record in self._rows_where_in("SELECT id, record FROM papers WHERE id", paper_ids)}

    def all_titles(self) -> dict[str, str]:
        """Paper id → title, for every paper (question sets resolve gold titles with it)."""
        return dict(self.db.execute("SELECT id, title FROM papers"))

    def years(self) -> list[int]:
        return [row[0] for row in self.db.execute("SELECT year FROM papers WHERE year IS NOT NULL")]

    def chunks_of(self, paper_ids: Sequence[str]) -> dict[str, str]:
        """Chunk id → paper id for every chunk of these papers (an index lookup, any index size)."""
        return dict(self._rows_where_in("SELECT id, paper_id FROM chunks WHERE paper_id", paper_ids))

    def papers_of_chunks(self, chunk_ids: Sequence[str]) -> dict[str, str]:
        """Chunk id → paper id for these chunks (those the index holds)."""
        return dict(self._rows_where_in("SELECT id, paper_id FROM chunks WHERE id", chunk_ids))

    def passages(self, chunk_ids: Sequence[str]) -> dict[str, str]:
        return dict(self._rows_where_in("SELECT id, passage FROM chunks WHERE id", chunk_ids))

    def _rows_where_in(self, select: str, keys: Sequence, params: Sequence = ()) -> Iterator[tuple]:
        """The rows of `select` + " IN (keys)", asked 500 keys at a time (SQLite's bound on parameters)."""
        for start in range(0, len(keys), 500):
            batch = list(keys[start:start + 500])
            yield from self.db.execute(f"{select} IN ({','.join('?' * len(batch))})", [*params, *batch])

    # --- term statistics ---------------------------------------------------------------------
    def _forget_stats(self) -> None:
        self._state += 1
        self._stats.clear()
        self._row_papers = None
        self._row_sizes = None
        with self._parts_lock:
            self._parts.clear()
            self._parts_bytes = 0

    def _valid_stats(self) -> dict[str, int]:
        version = self.db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version or len(self._stats) > 50_000:
            self._forget_stats()
            self._data_version = version
        return self._stats

    def _paper_ordinals(self, db: sqlite3.Connection) -> np.ndarray:
        """FTS rowid → a number per paper (-1: no row), read once per index state from `chunks_paper`."""
        with self._ordinals_lock:  # built once, whichever thread asks first
            if self._row_papers is None:
                rowids, ordinals, previous, ordinal = [], [], None, -1
                by_paper = "SELECT rowid, paper_id FROM chunks INDEXED BY chunks_paper ORDER BY paper_id"
                for rowid, paper_id in db.execute(by_paper):
                    if paper_id != previous:
                        previous, ordinal = paper_id, ordinal + 1
                    rowids.append(rowid)
                    ordinals.append(ordinal)
                table = np.full(max(rowids, default=0) + 1, -1, dtype=np.int32)
                table[np.asarray(rowids, dtype=np.int64)] = ordinals
                self._row_papers = table
            return self._row_papers

    def chunk_count(self) -> int:
        """Rows of the full-text table (one per chunk), cached while the index is unchanged."""
        stats = self._valid_stats()
        if "\0rows" not in stats:
            stats["\0rows"] = self.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        return stats["\0rows"]

    def term_rows(self, terms: Iterable[str]) -> dict[str, int]:
        """Chunks containing each index term (already tokenized: see `index_terms`), from `fts5vocab`.

        fts5vocab counts by reading the term's document list (5-20 ms for a common word at 1M papers),
        so counts are cached per index state, and half of those not yet known are counted in another
        thread (`_in_aside`).
        """
        stats = self._valid_stats()
        missing = sorted({term for term in terms if "\0t" + term not in stats})
        aside = self._in_aside(self._rows_of, missing[1::2], None) if len(missing) > 1 else None
        counts = self._rows_of(missing[::2], self.db)
        counts.update(aside.result() if aside else {})
        stats.update(("\0t" + term, count) for term, count in counts.items())
        return {term: stats["\0t" + term] for term in set(terms)}

    def _rows_of(self, terms: list[str], db: sqlite3.Connection | None) -> dict[str, int]:
        db = db or self._side_db()
        counts = {}
        for term in terms:
            row = db.execute("SELECT doc FROM temp.chunks_vocab WHERE term = ?", (term,)).fetchone()
            counts[term] = row[0] if row else 0
        return counts

    def phrase_rows(self, phrase: str) -> int:
        """An upper bound on the chunks containing `phrase`: those of its rarest term (0: none can match)."""
        terms = index_terms(phrase)
        return min(self.term_rows(terms).values()) if terms else 0

    def document_frequency(self, match: str) -> int:
        """How many papers match an FTS5 MATCH expression (e.g. `"sign language" OR "asl"`), cached
        per index state (`count_papers_soon` fills the cache ahead)."""
        stats = self._valid_stats()
        if match not in stats:
            stats[match] = self._count_papers(match, self.db)
        return stats[match]

    def count_papers_soon(self, matches: Sequence[str]) -> Future:
        """Count the papers of each match expression not yet counted, in another thread through a second
        connection, into the cache `document_frequency` reads; done when the future is.

        Retrieval starts it once the question is embedded, so the counts (phrases of common words take
        50-100 ms each at 1M papers) are made on the second core while the searches run.
        """
        return self._in_aside(self._count_aside, list(matches), self._state)

    def _in_aside(self, function: Callable, *args) -> Future:
        """Run `function(*args)` in one of this index's two other threads (`ASIDE_THREADS`)."""
        if self._aside is None:
            self._aside = ThreadPoolExecutor(ASIDE_THREADS, thread_name_prefix="paperchat-lexical")
        return self._aside.submit(function, *args)

    def _side_db(self) -> sqlite3.Connection:
        """The calling thread's own read connection: SQLite serves one statement at a time per connection."""
        db = getattr(self._side, "db", None)
        if db is None:
            db = self._side.db = _connect(self.path, read_only=True)
            db.execute(VOCAB)
            db.execute(INSTANCES)
            with self._parts_lock:
                self._side_dbs.append(db)
        return db

    def _count_aside(self, matches: list[str], state: int) -> None:
        for match in matches:
            if match not in self._stats:
                count = self._count_papers(match, self._side_db())
                if state != self._state:  # the index changed meanwhile: these counts may be stale
                    return
                self._stats[match] = count

    def _count_papers(self, match: str, db: sqlite3.Connection) -> int:
        """Single words (or alternatives of them) are counted in the paper-level table. Anything else is
        matched against the chunks: only rowids leave FTS5 (no content-table lookups), as one
        comma-joined string rather than a Python row each (3x faster at 100k papers), and they are
        mapped to papers in memory.
        """
        if self._paper_terms and _SINGLE_WORDS.fullmatch(match) \
                and all(len(index_terms(word.strip('"'))) == 1 for word in match.split(" OR ")):
            return db.execute("SELECT count(*) FROM paper_terms WHERE paper_terms MATCH ?",
                              (match,)).fetchone()[0]
        ordinals = self._paper_ordinals(db)
        joined = db.execute("SELECT group_concat(rowid) FROM chunks_fts WHERE chunks_fts MATCH ?",
                            (match,)).fetchone()[0]
        rows = np.fromstring(joined or "", dtype=np.int64, sep=",")
        papers = ordinals[rows[rows < len(ordinals)]]
        seen = np.zeros(len(ordinals), dtype=bool)  # ordinals < rows: every paper has a row
        seen[papers[papers >= 0]] = True
        return int(seen.sum())

    def discriminating_terms(self, text: str, hits: int = 0) -> list[str]:
        """The query terms of `text` worth an FTS5 search: present in the index, not too common.

        Terms whose BM25 IDF is under `COMMON_TERM_IDF_SHARE` of the rarest term's are left out, and
        at most `MAX_QUERY_TERMS` of the rarest are kept, but only where a kept term alone matches at
        least `hits` chunks: the best `hits` are then chunks that mention a rare term, as with every term.
        """
        self.term_rows([word for term in query_terms(text) for word in index_terms(term)])  # all at once
        rows = {term: self.phrase_rows(term) for term in query_terms(text)}
        present = sorted((term for term in rows if rows[term] > 0), key=lambda term: rows[term])
        if not present:
            return []
        total = self.chunk_count()
        floor = COMMON_TERM_IDF_SHARE * bm25_idf(rows[present[0]], total)
        kept = [term for term in present if bm25_idf(rows[term], total) >= floor][:MAX_QUERY_TERMS]
        if max(rows[term] for term in kept) < hits:
            return present
        return kept

    def search(self, text: str, limit: int, year_min: int | None = None, year_max: int | None = None,
               title_weight: float = 2.0, include_undated: bool = True) -> list[tuple[str, str, float]]:
        """(chunk id, paper id, BM25 score; higher is better) for the best `limit` chunks.

        The scores are FTS5's `-bm25(chunks_fts, title_weight, 1.0)` for the OR of the
        `discriminating_terms`, computed by `bm25`. Only the best rows are looked up in `chunks`,
        and a year filter is applied to them, best first, until `limit` pass it.
        """
        terms = self.discriminating_terms(text, limit)
        if not terms:
            return []
        scores = self.bm25(terms, title_weight)
        rows = np.flatnonzero(scores)
        select, params = "SELECT c.rowid, c.id, c.paper_id FROM chunks c WHERE", []
        if year_min is not None or year_max is not None or not include_undated:
            undated = " OR p.year IS NULL" if include_undated else ""
            select = ("SELECT c.rowid, c.id, c.paper_id FROM chunks c JOIN papers p ON p.id = c.paper_id "
                      f"WHERE (p.year BETWEEN ? AND ?{undated}) AND")
            params = [-10**6 if year_min is None else year_min, 10**6 if year_max is None else year_max]
        found: dict[int, tuple[str, str]] = {}
        asked: set[int] = set()
        best, wanted = [], limit
        while len(found) < limit and len(best) < len(rows):
            wanted = min(wanted, len(rows))
            top = rows[np.argpartition(-scores[rows], wanted - 1)[:wanted]] if wanted < len(rows) else rows
            best = top[np.lexsort((top, -scores[top]))].tolist()  # best first; ties by row
            new = [rowid for rowid in best if rowid not in asked]  # (ties at the edge may differ)
            asked.update(new)
            found.update((rowid, (chunk_id, paper_id)) for rowid, chunk_id, paper_id in self._rows_where_in(
                f"{select} c.rowid", new, params))
            wanted *= 4
        return [(*found[rowid], float(scores[rowid])) for rowid in best if rowid in found][:limit]

    def bm25(self, terms: Sequence[str], title_weight: float = 2.0) -> np.ndarray:
        """Row id → FTS5's `-bm25(chunks_fts, title_weight, 1.0)` for the OR of `terms` (0: no term).

        The sum of each term's part (`_part`), in the order FTS5 adds them. A phrase whose words are
        all searched too ("resnet 50" beside "resnet" and "50") is found from their occurrences,
        read with their places. The parts are shared between this thread and the others
        (`_in_aside`), the costliest first to the less loaded (a phrase's row costs FTS5 about
        `PHRASE_ROW_COST` times a word's occurrences).
        """
        sizes, state = self._sizes(), self._state
        parts = {}
        with self._parts_lock:
            for key in ((term, title_weight) for term in terms if (term, title_weight) in self._parts):
                self._parts.move_to_end(key)
                parts[key[0]] = self._parts[key]
        words = {index_terms(term)[0]: term for term in terms if len(index_terms(term)) == 1}
        joined = [term for term in terms if term not in parts and len(index_terms(term)) > 1
                  and all(word in words for word in index_terms(term))]
        placed = {words[word] for term in joined for word in index_terms(term)}
        cost = {term: self.phrase_rows(term) * (PHRASE_ROW_COST if len(index_terms(term)) > 1 else 1)
                for term in terms if (term not in parts and term not in joined) or term in placed}
        load, aside, own = [0, 0], {}, []
        for term in sorted(cost, key=lambda t: -cost[t]):
            thread = load.index(min(load))
            load[thread] += cost[term]
            if thread:
                aside[term] = self._in_aside(self._part, term, title_weight, sizes, state, term in placed,
                                             True)
            else:
                own.append(term)
        found = {term: self._part(term, title_weight, sizes, state, term in placed) for term in own}
        found.update((term, future.result()) for term, future in aside.items())
        parts.update((term, found[term][:2]) for term in found)
        for term in joined:  # where each next word stands one place after the one before
            keys = found[words[index_terms(term)[0]]][2]
            for shift, word in enumerate(index_terms(term)[1:], 1):
                following = found[words[word]][2] - shift
                at = np.minimum(np.searchsorted(following, keys), max(len(following) - 1, 0))
                keys = keys[following[at] == keys] if len(following) else following
            found_rows = self._scored(keys >> PLACE_BITS, title_weight, sizes)
            parts[term] = self._keep(term, title_weight, state, *found_rows)
        scores = np.zeros(len(sizes[0]))
        for term in terms:
            rows, part = parts[term]
            scores[rows] += part
        return scores

    def _part(self, term: str, title_weight: float, sizes: tuple[np.ndarray, int, float], state: int,
              placed: bool = False, aside: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The rows holding `term`, what it adds to their bm25() score and, for a word `placed`, its
        occurrences with their places; kept while the index is unchanged (`state`; `sizes` as
        `_sizes` gives them; `aside`: read through the calling thread's own connection).

        A word's part comes from its occurrences (fts5vocab) and the row lengths, by the same
        formula and statistics as FTS5's bm25() (`_scored`): about half the time of FTS5's, which
        reads each matching row's size and positions one row at a time. A phrase's part is FTS5's
        bm25() of the phrase alone, over the rows holding it (reading the occurrences of its words,
        "state of the art", would cost far more).
        """
        db = self._side_db() if aside else self.db
        words = index_terms(term)
        if len(words) > 1:
            rows, parts = db.execute(_PHRASE_PARTS, (title_weight, f'"{term}"')).fetchone()
            found = (np.fromstring(rows or "", dtype=np.int64, sep=","),
                     np.fromstring(parts or "", dtype=np.float64, sep=","))
            return (*self._keep(term, title_weight, state, *found), None)
        joined = db.execute(_POSITIONED if placed else _OCCURRENCES, (words[0],)).fetchone()[0]
        keys = np.fromstring(joined or "", dtype=np.int64, sep=",")
        if len(keys) > 1 and (keys[1:] < keys[:-1]).any():  # in order from fts5vocab; never relied on
            keys.sort()
        found = self._scored(keys >> PLACE_BITS if placed else keys, title_weight, sizes)
        return (*self._keep(term, title_weight, state, *found), keys if placed else None)

    @staticmethod
    def _scored(occurrences: np.ndarray, title_weight: float,
                sizes: tuple[np.ndarray, int, float]) -> tuple[np.ndarray, np.ndarray]:
        """The rows of ascending occurrences (row * 2 + 1 in the passage) and a term's part of their score:
        FTS5's bm25() (k1 1.2, b 0.75; IDF from the rows holding the term, never under 1e-6; the
        row's length over all columns against the average), over the column-weighted counts."""
        rows = occurrences >> 1
        if not len(rows):
            return rows, np.zeros(0)
        size, rows_total, average = sizes
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        frequency = np.add.reduceat(np.where(occurrences & 1, 1.0, title_weight), starts)
        rows = rows[starts]
        norm = BM25_K1 * (1 - BM25_B + BM25_B * size[rows] / average)
        return rows, bm25_idf(len(rows), rows_total) * ((frequency * (BM25_K1 + 1.0)) / (frequency + norm))

    def _keep(self, term: str, title_weight: float, state: int, rows: np.ndarray,
              part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cache a term's part while the index is unchanged (`state`), the least recently used out first."""
        with self._parts_lock:
            if state == self._state and (term, title_weight) not in self._parts:
                self._parts[(term, title_weight)] = (rows, part)
                self._parts_bytes += rows.nbytes + part.nbytes
            while self._parts_bytes > PARTS_CACHE_BYTES and len(self._parts) > 1:
                old_rows, old_part = self._parts.popitem(last=False)[1]
                self._parts_bytes -= old_rows.nbytes + old_part.nbytes
        return rows, part

    def _sizes(self) -> tuple[np.ndarray, int, float]:
        """Row id → tokens in the row (all columns), the row count and the average, as FTS5 keeps them.

        Read once per index state from FTS5's `chunks_fts_docsize` (one varint per column, decoded
        together: 49 ms for 164k rows).
        """
        self._valid_stats()
        if self._row_sizes is None:
            ids, blobs = self.db.execute(
                "SELECT group_concat(id), group_concat(hex(sz), '') FROM chunks_fts_docsize").fetchone()
            ids = np.fromstring(ids or "", dtype=np.int64, sep=",")
            raw = np.frombuffer(bytes.fromhex(blobs or ""), dtype=np.uint8)
            last = (raw & 0x80) == 0  # a varint's last byte; big-endian, 7 bits a byte
            varint = np.cumsum(last) - last
            place = np.flatnonzero(last)[varint] - np.arange(len(raw))
            values = np.bincount(varint, weights=(raw & 0x7F) * 128.0 ** place)
            columns = len(values) // max(len(ids), 1)
            totals = values.reshape(len(ids), columns).sum(axis=1) if len(ids) else values
            table = np.zeros(int(ids.max(initial=0)) + 1)
            table[ids] = totals
            self._row_sizes = (table, len(ids), float(totals.sum()) / max(len(ids), 1))
        return self._row_sizes


class ForeignDatabaseError(LexicalIndexError):
    """The file is another program's SQLite database: paperchat neither writes to it nor deletes it."""


def damaged_message(path: Path, error: BaseException) -> str:
    """One line for a lexical index SQLite cannot read: what is wrong and how to get a good index back."""
    detail = " ".join(str(error).replace("*** in database main ***", "").split())[:160]
    return (f"{path} is damaged or not a paperchat index ({type(error).__name__}: {detail}); "
            "your input files are untouched: rebuild the index from them with "
            "`paperchat ingest --rebuild [PATH ...]`")


# Files below this size get SQLite's structural check on open (a few ms per MB); above it,
# damage shows when a query reaches it, and the entry points turn that into a message.
QUICK_CHECK_MAX_BYTES = 512 * 2**20


def _connect(path: Path, read_only: bool) -> sqlite3.Connection:
    if not read_only:
        db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    else:
        # `mode=ro` still needs the WAL's shared-memory file; in a folder nobody may write to (and
        # after a clean close there is none) only `immutable` opens it, which is safe: no writer can be there.
        uri = path.resolve().as_uri()
        try:
            db = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            db = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None,
                                 check_same_thread=False)
    if path.exists() and path.stat().st_size <= QUICK_CHECK_MAX_BYTES:
        problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            db.close()
            raise sqlite3.DatabaseError("; ".join(problems))
    return db


def _check_is_ours(db: sqlite3.Connection, path: Path) -> None:
    """Refuse another program's database before anything is written to it."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return  # a new, empty file
    columns = [row[1] for row in db.execute("PRAGMA table_info(papers)")]
    if columns != ["id", "content_hash", "title", "year", "record"] or "chunks" not in tables:
        others = ", ".join(sorted(t for t in tables if not t.startswith("sqlite_"))[:5])
        db.close()
        raise ForeignDatabaseError(f"{path} is another program's SQLite database (tables: {others}), not a "
                                   "paperchat lexical index; paperchat leaves it alone: point --index at "
                                   "another folder, or move the file away")


def bm25_idf(rows: int, total: int) -> float:
    """The IDF FTS5's bm25() gives a term found in `rows` of `total` rows (never below 1e-6).

    >>> round(bm25_idf(10, 10_000), 2), bm25_idf(6_000, 10_000)
    (6.86, 1e-06)
    """
    return max(1e-6, math.log((total - rows + 0.5) / (rows + 0.5)))


def _require_serialized() -> None:
    if sqlite3.threadsafety != 3:
        raise LexicalIndexError("this Python's sqlite3 is not built thread-safe (serialized); "
                                "paperchat needs it")


def _record_json(paper: Paper) -> str:
    return json.dumps(asdict(paper), ensure_ascii=False)


def _paper_from_json(record: str) -> Paper:
    data = json.loads(record)
    for key in ("authors", "categories", "sources"):
        data[key] = tuple(data.get(key) or ())
    return Paper(**data)
