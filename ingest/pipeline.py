"""From files to the index: read, diff against what is stored, chunk, embed, write both indexes.

Idempotent and incremental: a paper whose content hash is already stored is not embedded again;
a changed paper replaces its old chunks in both indexes; `rebuild=True` starts from nothing.
Streamed batch by batch, so an arXiv snapshot of millions of records ingests in flat memory.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Self

from paperchat.ingest.sources import (
    Limits,
    PaperStream,
    bundled_corpus_dir,
    conflict_between,
    conflict_rejection,
    paper_filter,
)
from paperchat.rag.chunking import chunk_paper
from paperchat.rag.embeddings import make_embeddings
from paperchat.rag.papers import Paper
from paperchat.rag.settings import Settings
from paperchat.rag.store import PaperIndex

# Papers written per transaction: small enough that a kill loses little, big enough to batch embedding.
WRITE_BATCH_PAPERS = 64
# Rejections and notices kept for the summary (all are counted): a bad 2-million-line file costs no memory.
KEPT_MESSAGES = 1000


@dataclass
class IngestSummary:
    """What an ingest did; `paperchat ingest --json` prints these keys."""

    papers_added: int = 0
    papers_updated: int = 0
    papers_unchanged: int = 0
    duplicates_merged: int = 0
    records_rejected: int = 0
    chunks: int = 0
    papers_total: int = 0
    seconds: float = 0.0
    papers_per_second: float = 0.0
    recovered: int = 0
    files_read: int = 0
    papers_filtered_out: int = 0
    dry_run: bool = False  # the counts say what an ingest would do; nothing was embedded or written
    rejections: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def to_json_dict(self) -> dict:
        return asdict(self)


ProgressFactory = Callable[[int, str], Callable[[int], None]]


def tqdm_progress(total: int, label: str) -> Callable[[int], None]:
    """A `ProgressFactory` drawing a tqdm bar on stderr, closed when the total is reached.

    "reading" counts bytes, "indexing" papers, anything else chunks.
    """
    from tqdm import tqdm

    unit, scale = {"reading": ("B", True), "indexing": ("paper", False)}.get(label, ("chunk", False))
    bar = tqdm(total=total, desc=label, unit=unit, unit_scale=scale, file=sys.stderr, dynamic_ncols=True)

    def advance(n: int) -> None:
        bar.update(n)
        if bar.n >= bar.total:
            bar.close()
    return advance


def ingest(paths: Iterable[Path] | None, settings: Settings, fmt: str | None = None, rebuild: bool = False,
           progress: ProgressFactory | None = None, categories: Sequence[str] | None = None,
           since: int | None = None, dry_run: bool = False) -> IngestSummary:
    """Bring the index up to date with `paths` (the bundled corpus when None or empty).

    Streams: the records are read into a scratch file on disk (duplicates merged, conflicts
    refused), then compared with the index, chunked, embedded and written `WRITE_BATCH_PAPERS`
    at a time, so memory stays flat however many records the input holds (an arXiv snapshot),
    and an interrupted run keeps its finished batches. A path ``-`` is standard input.
    `categories` and `since` keep only papers in any of those categories and from that year on
    (`paper_filter`). `progress(total_bytes, "reading")` returns a callback advanced by the
    bytes read, then `progress(papers, "indexing")` one advanced by the papers written.
    `dry_run` reads and checks the input and counts what an ingest would add, update or leave,
    without loading the model or writing anything (before committing hours to an arXiv snapshot).
    """
    started = time.perf_counter()
    paths = list(paths or []) or [bundled_corpus_dir()]
    limits = Limits(max_record_bytes=settings.ingest.max_record_bytes,
                    max_title_chars=settings.ingest.max_title_chars)
    stream = PaperStream(paths, fmt, limits, progress, keep=paper_filter(categories, since),
                         max_kept=KEPT_MESSAGES)
    summary = IngestSummary(files_read=len(stream.files), dry_run=dry_run)
    with _Scratch() as scratch:
        _read_into(scratch, stream, summary)
        if dry_run:
            _count_changes(scratch, settings, rebuild, summary)
        elif stream.files or rebuild:  # else nothing to read (an empty folder): the index is left unopened
            if rebuild:
                PaperIndex.wipe(settings)
            index = PaperIndex.open(settings, make_embeddings(settings.embedding), create=True)
            try:
                summary.recovered = index.recover()
                advance = progress(scratch.count(), "indexing") if progress and scratch.count() else None
                for batch in scratch.batches(WRITE_BATCH_PAPERS):
                    _write_batch(index, batch, settings, summary)
                    if advance:
                        advance(len(batch))
                summary.papers_total = index.paper_count()
            finally:
                index.close()
    summary.records_rejected = stream.rejected_count
    summary.rejections = [str(r) for r in stream.rejected]
    summary.notices = [str(n) for n in stream.notices]
    summary.papers_filtered_out = stream.filtered_out
    summary.seconds = round(time.perf_counter() - started, 3)
    written = summary.papers_added + summary.papers_updated
    summary.papers_per_second = round(written / summary.seconds, 2) if summary.seconds else 0.0
    return summary


def _read_into(scratch: _Scratch, stream: PaperStream, summary: IngestSummary) -> None:
    """Every paper of `stream` into `scratch`, duplicates merged and id conflicts refused.

    Reading whole before writing means that a paper listed twice is merged before anything is
    compared or embedded (a re-run embeds nothing), and that writing knows its total (an ETA).
    """
    for paper in stream:
        earlier = scratch.get(paper.id)
        if earlier is None:
            scratch.put(paper)
        elif what := conflict_between(earlier, paper):
            stream.reject(conflict_rejection(stream.name, paper, earlier, what))
        else:
            summary.duplicates_merged += 1
            scratch.put(earlier.merged_with(paper))


def _count_changes(scratch: _Scratch, settings: Settings, rebuild: bool, summary: IngestSummary) -> None:
    """A dry run's counts: the papers read against the index as it stands (all new for a rebuild or
    where there is no index yet); the model is not loaded and nothing is written."""
    if rebuild or not PaperIndex.exists(settings):
        summary.papers_added = scratch.count()
        return
    index = PaperIndex.open(settings)
    try:
        for batch in scratch.batches(WRITE_BATCH_PAPERS):
            _sort_batch(index, batch, summary)
        summary.papers_total = index.paper_count()
    finally:
        index.close()


def _sort_batch(index: PaperIndex, papers: list[Paper],
                summary: IngestSummary) -> tuple[list[Paper], list[Paper]]:
    """(new or changed, unchanged) papers of a batch, by their content hash in the index; counted."""
    stored = index.papers([p.id for p in papers])
    changed: list[Paper] = []
    unchanged: list[Paper] = []
    for paper in papers:
        before = stored.get(paper.id)
        if before is None:
            summary.papers_added += 1
        elif before.content_hash == paper.content_hash:
            summary.papers_unchanged += 1
            unchanged.append(paper)
            continue
        else:
            summary.papers_updated += 1
        changed.append(paper)
    return changed, unchanged


def _write_batch(index: PaperIndex, papers: list[Paper], settings: Settings, summary: IngestSummary) -> None:
    """Write the new and changed papers of one batch; refresh the records of unchanged ones."""
    changed, unchanged = _sort_batch(index, papers, summary)
    if unchanged:
        index.update_records(unchanged)  # new sources for known papers; nothing to embed
    if changed:
        embeddings = index.embeddings
        max_tokens = min(settings.chunking.max_tokens, embeddings.max_seq_tokens - 2)
        chunks = [chunk for paper in changed for chunk in chunk_paper(
            paper, max_tokens, embeddings.count_tokens, settings.chunking.overlap_sentences,
            settings.ingest.max_title_chars)]
        index.write(changed, chunks)
        summary.chunks += len(chunks)


class _Scratch:
    """This run's papers, merged by id, in a scratch SQLite file: flat memory at millions of papers.

    SQLite's own temporary database (an empty file name): a file in the temporary folder that is
    unlinked as soon as it is opened, so even a killed ingest leaves nothing behind.
    """

    def __enter__(self) -> Self:
        self.db = sqlite3.connect("", isolation_level=None)
        self.db.execute("PRAGMA cache_size = -4096")  # KiB: the pages it keeps in memory, the rest on disk
        self.db.execute("CREATE TABLE papers (seq INTEGER PRIMARY KEY, id TEXT UNIQUE, record TEXT)")
        return self

    def __exit__(self, *exc) -> None:
        self.db.close()

    def get(self, paper_id: str) -> Paper | None:
        row = self.db.execute("SELECT record FROM papers WHERE id = ?", (paper_id,)).fetchone()
        return _paper_from_json(row[0]) if row else None

    def put(self, paper: Paper) -> None:
        """Add a paper, or replace the one with its id, keeping its place in the order."""
        record = json.dumps({name: getattr(paper, name) for name in _PAPER_FIELDS}, ensure_ascii=False)
        self.db.execute("INSERT INTO papers (id, record) VALUES (?, ?) "
                        "ON CONFLICT (id) DO UPDATE SET record = excluded.record", (paper.id, record))

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM papers").fetchone()[0]

    def batches(self, size: int) -> Iterator[list[Paper]]:
        after = 0
        while rows := self.db.execute("SELECT seq, record FROM papers WHERE seq > ? ORDER BY seq LIMIT ?",
                                      (after, size)).fetchall():
            after = rows[-1][0]
            yield [_paper_from_json(record) for _, record in rows]


_PAPER_FIELDS = tuple(f.name for f in fields(Paper))  # not `asdict`, which deep-copies: half the reading time


def _paper_from_json(record: str) -> Paper:
    data = json.loads(record)
    return Paper(**{**data, **{key: tuple(data[key]) for key in ("authors", "categories", "sources")}})
