"""arXiv-scale ingest: reading an arXiv metadata snapshot of N records in flat memory, and what the
whole snapshot would take.

Each size is a file of arXiv-format JSON lines (the snapshot's fields: id, title, abstract, authors,
categories, update_date) made from the bundled papers' real titles and abstracts under new ids. A
child process per size runs `paperchat ingest --dry-run` on it (`ingest(..., dry_run=True)`): every
record is parsed, checked and merged by id in the on-disk scratch file, and compared with an empty
index, which is the part of an ingest whose memory could grow with N; embedding and writing go batch
by batch (`WRITE_BATCH_PAPERS`) whatever N is. Its peak RSS must stay flat from 10k to 1M records.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from paperchat.eval.bench.embedding import DEFAULT_VARIANT
from paperchat.eval.bench.harness import load_average, peak_rss_bytes, run_child, settings_for, spread

ARXIV_SNAPSHOT_PAPERS = 2_500_000  # the arXiv metadata snapshot, about
FLAT_RSS_RATIO = 1.25  # "flat": the largest size's peak RSS within this factor of the smallest's
_CATEGORIES = ("cs.LG", "cs.CV stat.ML", "cs.CL", "math.OC cs.LG", "cs.AI", "eess.IV cs.CV")


def write_records(path: Path, count: int) -> int:
    """`count` arXiv-format lines from the bundled papers' text under new ids; the file's bytes."""
    from paperchat.ingest.sources import bundled_corpus_dir, read_papers

    base = read_papers([bundled_corpus_dir()]).papers
    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            paper = base[i % len(base)]
            out.write(json.dumps({
                "id": f"{2001 + i // 100_000}.{i % 100_000:05d}",
                "title": paper.title,
                "abstract": paper.abstract,
                "authors": ", ".join(paper.authors) or "A. Author",
                "categories": _CATEGORIES[i % len(_CATEGORIES)],
                "update_date": f"{2015 + i % 10}-{1 + i % 12:02d}-15",
            }, ensure_ascii=False) + "\n")
    return path.stat().st_size


def child_read(payload: dict) -> dict:
    from paperchat.ingest.pipeline import ingest

    settings = settings_for(Path(payload["index_dir"]))
    started = time.perf_counter()
    summary = ingest([Path(payload["path"])], settings, fmt="arxiv", dry_run=True)
    return {
        "seconds": time.perf_counter() - started,
        "papers": summary.papers_added,
        "rejected": summary.records_rejected,
        "peak_rss_bytes": peak_rss_bytes(),
    }


def bench_arxiv(work: Path, sizes: list[int], runs: int, embedding: dict | None = None,
                ingest: dict | None = None) -> dict:
    """Peak RSS and records/s reading `sizes` arXiv records (a dry run each, fresh process per run),
    and an estimate for the whole snapshot from that rate and, where this run has them, the default
    embedding step's rate (a lower bound on the time) and the bundled ingest's end-to-end rate."""
    rows = []
    for size in sizes:
        path = work / f"arxiv-{size}.jsonl"
        file_bytes = write_records(path, size)
        measured = [run_child(child_read, {"path": str(path), "index_dir": str(work / "arxiv-no-index")})
                    for _ in range(runs)]
        path.unlink()
        rows.append({
            "records": size,
            "papers": measured[0]["papers"],
            "rejected": measured[0]["rejected"],
            "file_mib": round(file_bytes / 2**20, 1),
            "seconds": spread([m["seconds"] for m in measured], 1),
            "records_per_s": spread([size / m["seconds"] for m in measured], 0),
            "peak_rss_mib": spread([m["peak_rss_bytes"] / 2**20 for m in measured], 0),
            "load_average": load_average(),
        })
    out: dict = {
        "sizes": rows,
        "note": "`paperchat ingest --dry-run` (read, check, merge by id in the on-disk scratch file) of "
        "arXiv-format records made from the bundled papers' text, a fresh process per run; peak RSS "
        "includes Python and its imports. Embedding and writing run batch by batch after it, so they do "
        "not grow with the input; an interrupted ingest keeps its finished batches (the kill -9 test) "
        "and a re-run embeds nothing already indexed; the progress bar shows rate and time left",
    }
    if rows:
        rss = [row["peak_rss_mib"]["median"] for row in rows]
        out["flat_memory"] = max(rss) <= FLAT_RSS_RATIO * min(rss)
        out["snapshot_estimate"] = snapshot_estimate(out, embedding, ingest)
    return out


def snapshot_estimate(arxiv: dict, embedding: dict | None = None, ingest: dict | None = None) -> dict:
    """Hours for the whole snapshot on this machine: reading at the largest size's rate, the default
    embedding step alone (a lower bound), and end to end at the bundled ingest's rate, where measured."""
    hours = lambda rate: round(ARXIV_SNAPSHOT_PAPERS / rate / 3600, 1)
    reading = arxiv["sizes"][-1]["records_per_s"]["median"]
    estimate = {"papers": ARXIV_SNAPSHOT_PAPERS, "reading_min": round(ARXIV_SNAPSHOT_PAPERS / reading / 60)}
    default = next((v for v in (embedding or {}).get("variants", [])
                    if v.get("variant") == DEFAULT_VARIANT and "abstracts_per_s" in v), None)
    if default:
        rate = default["abstracts_per_s"]["median"]
        estimate |= {"embedding_abstracts_per_s": rate, "embedding_h": hours(rate)}
    if ingest and "papers_per_second" in ingest:
        rate = ingest["papers_per_second"]["median"]
        estimate |= {"ingest_papers_per_s": rate, "ingest_h": hours(rate)}
    return estimate
