"""Ingest of the bundled corpus into a fresh index, end to end, one fresh process per run."""

from __future__ import annotations

import shutil
from pathlib import Path

from paperchat.eval.bench.harness import (
    dir_bytes,
    load_average,
    peak_rss_bytes,
    run_child,
    settings_for,
    spread,
)


def child_ingest(payload: dict) -> dict:
    from paperchat.ingest.pipeline import ingest

    settings = settings_for(Path(payload["index_dir"]), **payload.get("settings", {}))
    summary = ingest(None, settings)
    return {
        "seconds": summary.seconds,
        "papers": summary.papers_added,
        "chunks": summary.chunks,
        "papers_per_second": summary.papers_per_second,
        "peak_rss_bytes": peak_rss_bytes(),
        "disk_bytes": dir_bytes(Path(payload["index_dir"])),
    }


def ingest_bundled(index_dir: Path) -> dict:
    """Build the bundled index other sections read (once, when a run skips this section)."""
    return run_child(child_ingest, {"index_dir": str(index_dir)})


def bench_ingest(work: Path, runs: int) -> dict:
    """`ingest(None, ...)` into a fresh index, in a fresh process each run (model load included)."""
    results = []
    for run in range(runs):
        index_dir = work / f"ingest-{run}"
        shutil.rmtree(index_dir, ignore_errors=True)
        results.append(ingest_bundled(index_dir))
        if run < runs - 1:
            shutil.rmtree(index_dir, ignore_errors=True)
    return {
        "papers": results[0]["papers"],
        "chunks": results[0]["chunks"],
        "seconds": spread([r["seconds"] for r in results]),
        "papers_per_second": spread([r["papers_per_second"] for r in results]),
        "peak_rss_mib": spread([r["peak_rss_bytes"] / 2**20 for r in results], 0),
        "disk_mib": round(results[-1]["disk_bytes"] / 2**20, 1),
        "index_dir": str(work / f"ingest-{runs - 1}"),
        "load_average_after": load_average(),
        "note": "fresh process per run; includes reading, chunking, model load, embedding, "
        "Chroma + FTS5 writes",
    }
