"""From files to the index: read, diff against what is stored, chunk, embed, write both indexes.

Idempotent and incremental: a paper whose content hash is already stored is not embedded again;
a changed paper replaces its old chunks in both indexes; `rebuild=True` starts from nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ingest.sources import Limits, ReadResult, bundled_corpus_dir, read_papers
from rag.chunking import chunk_paper
from rag.embeddings import make_embeddings
from rag.papers import Paper
from rag.settings import Settings
from rag.store import PaperIndex

# Papers written per transaction: small enough that a kill loses little, big enough to batch embedding.
WRITE_BATCH_PAPERS = 64


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
    rejections: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def to_json_dict(self) -> dict:
        return asdict(self)


ProgressFactory = Callable[[int, str], Callable[[int], None]]


def tqdm_progress(total: int, label: str) -> Callable[[int], None]:
    """A `ProgressFactory` drawing a tqdm bar on stderr, closed when the total is reached.

    The "reading" stage counts bytes, the others chunks.
    """
    from tqdm import tqdm

    unit, scale = ("B", True) if label == "reading" else ("chunk", False)
    bar = tqdm(total=total, desc=label, unit=unit, unit_scale=scale, file=sys.stderr, dynamic_ncols=True)

    def advance(n: int) -> None:
        bar.update(n)
        if bar.n >= bar.total:
            bar.close()
    return advance


def ingest(paths: Iterable[Path] | None, settings: Settings, fmt: str | None = None, rebuild: bool = False,
           progress: ProgressFactory | None = None) -> IngestSummary:
    """Bring the index up to date with `paths` (the bundled corpus when None or empty).

    `progress(total, label)` returns a callback advanced by the bytes read ("reading"), then by
    the number of chunks embedded ("embedding"). A path ``-`` is standard input.
    """
    started = time.perf_counter()
    paths = list(paths or []) or [bundled_corpus_dir()]
    limits = Limits(max_record_bytes=settings.ingest.max_record_bytes, max_title_chars=settings.ingest.max_title_chars)
    read: ReadResult = read_papers(paths, fmt, limits, progress)
    summary = IngestSummary(duplicates_merged=read.duplicates_merged, records_rejected=len(read.rejected),
                            files_read=read.files, rejections=[str(r) for r in read.rejected],
                            notices=[str(n) for n in read.notices])
    if not read.files and not rebuild:
        return summary  # nothing to read (an empty folder): the index is left as it is, unopened
    if rebuild:
        PaperIndex.wipe(settings)
    embeddings = make_embeddings(settings.embedding)
    index = PaperIndex.open(settings, embeddings, create=True)
    try:
        summary.recovered = index.recover()
        stored = index.lexical.content_hashes()
        changed: list[Paper] = []
        unchanged: list[Paper] = []
        for paper in read.papers:
            previous = stored.get(paper.id)
            if previous == paper.content_hash:
                unchanged.append(paper)
            else:
                changed.append(paper)
                if previous is None:
                    summary.papers_added += 1
                else:
                    summary.papers_updated += 1
        summary.papers_unchanged = len(unchanged)
        if unchanged:
            index.lexical.update_records(unchanged)  # new sources for known papers; nothing to embed
        if changed:
            summary.chunks = _write(index, changed, settings, progress)
        summary.papers_total = index.paper_count()
    finally:
        index.close()
    summary.seconds = round(time.perf_counter() - started, 3)
    summary.papers_per_second = round(len(changed) / summary.seconds, 2) if summary.seconds else 0.0
    return summary


def _write(index: PaperIndex, papers: list[Paper], settings: Settings, progress: ProgressFactory | None) -> int:
    embeddings = index.embeddings
    count = embeddings.count_tokens
    chunking = settings.chunking
    chunked = [(paper, chunk_paper(paper, min(chunking.max_tokens, embeddings.max_seq_tokens - 2), count,
                                   chunking.overlap_sentences, settings.ingest.max_title_chars))
               for paper in papers]
    total = sum(len(chunks) for _, chunks in chunked)
    embeddings.progress = progress(total, "embedding") if progress else None
    try:
        for start in range(0, len(chunked), WRITE_BATCH_PAPERS):
            batch = chunked[start:start + WRITE_BATCH_PAPERS]
            index.write([paper for paper, _ in batch], [chunk for _, chunks in batch for chunk in chunks])
    finally:
        embeddings.progress = None
    return total
