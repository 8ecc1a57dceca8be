"""Retrieval as the index grows: build rate, question → judged sources latency, RSS and disk.

Each size is a synthetic corpus (`eval.synthetic`) built in a child process through
`PaperIndex.write_bulk` (vectors written in bulk, no model), then queried in another child:
`PaperChat.search` (retrieval + judging, what the sources panel shows) over the tune questions.
Sizes whose build is predicted to take longer than the budget are extrapolated instead, and every
extrapolation that can be checked against a measured size is.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from paperchat.eval.bench.harness import (
    PrecomputedEmbeddings,
    dir_bytes,
    load_average,
    peak_rss_bytes,
    percentile,
    questions,
    rss_bytes,
    run_child,
    settings_for,
    spread,
)

TARGETS_P95_MS = {10_000: 50.0, 100_000: 150.0, 1_000_000: 400.0}  # issue 12
BUILD_RECORD = "build.json"  # in a synthetic index's folder: how it was built (for --reuse-indexes)
SYNTHETIC_DESCRIPTION = (
    "Synthetic papers recombine the real bundled papers (eval/synthetic.py): each takes a random real "
    "base paper, swaps one title word for a word of another real title, and replaces about a third of "
    "its abstract sentences with sentences of other real abstracts. Chunks come from the real "
    "chunk_paper (word-count token estimate); each chunk vector is the real all-MiniLM-L6-v2 embedding "
    "of the base paper's matching chunk plus gaussian noise (std 0.025 per component, cosine ~0.9 to "
    "the source), renormalised, so no model call is made per synthetic paper. They are written with "
    "PaperIndex.write_bulk (the rows PaperIndex.write writes, without its delete-before-insert); queries "
    "are the tune set's stand-alone questions, embedded by the real model on every call. Chroma's HNSW "
    "index: cosine space, M 16 and ef_construction 100 (Chroma's defaults), ef_search 800 (rag/store.py "
    "HNSW_EF_SEARCH; Chroma's default 100 returned the exact 150 nearest chunks for 59 of 238 questions "
    "on the bundled corpus, 800 for all 238)."
)


def base_vectors(index_dir: Path, base_papers: int = 0) -> tuple[list, list[np.ndarray]]:
    """The real papers and their chunks' real vectors, read back from an ingested bundled index."""
    from paperchat.rag.store import PaperIndex

    index = PaperIndex.open(settings_for(index_dir))
    try:
        ids = sorted(index.content_hashes())[: base_papers or None]
        papers = index.papers(ids)
        stored = index.vectors_of(ids)
    finally:
        index.close()
    by_paper: dict[str, list[tuple[int, np.ndarray]]] = {}
    for chunk_id, paper_id, vector in zip(stored.chunk_ids, stored.paper_ids, stored.matrix):
        by_paper.setdefault(paper_id, []).append((int(chunk_id.rsplit("#", 1)[1]), vector))
    base = [papers[i] for i in ids if i in by_paper]
    return base, [np.stack([v for _, v in sorted(by_paper[p.id], key=lambda x: x[0])]) for p in base]


class LookupEmbeddings(PrecomputedEmbeddings):
    """Stored vectors by text: lets `PaperIndex.write` re-write synthetic papers with no model."""

    def __init__(self):
        self.vectors: dict[str, np.ndarray] = {}
        super().__init__(lambda texts: np.stack([self.vectors[t] for t in texts]))


def child_build(payload: dict) -> dict:
    from paperchat.eval.synthetic import synthetic_batches
    from paperchat.rag.store import PaperIndex

    index_dir = Path(payload["index_dir"])
    shutil.rmtree(index_dir, ignore_errors=True)
    base, vectors = base_vectors(Path(payload["bundled_dir"]), payload["base_papers"])
    settings = settings_for(index_dir)
    lookup = LookupEmbeddings()
    index = PaperIndex.open(settings, lookup, create=True)
    started, cpu_started = time.perf_counter(), time.process_time()
    chunks_total, last = 0, None
    for batch in synthetic_batches(base, vectors, payload["papers"], seed=payload["papers"]):
        index.write_bulk(batch.papers, batch.chunks, batch.vectors)
        chunks_total += len(batch.chunks)
        last = batch
    build_s, build_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    # An incremental re-ingest of 64 changed papers through the real PaperIndex.write (delete + add).
    papers = last.papers[:64]
    wanted = {p.id for p in papers}
    picked = [(c, v) for c, v in zip(last.chunks, last.vectors) if c.paper_id in wanted]
    lookup.vectors.update({c.text: v for c, v in picked})
    started = time.perf_counter()
    index.write(papers, [c for c, _ in picked])
    update_s = time.perf_counter() - started
    count = index.paper_count()
    index.close()
    return {
        "papers": count,
        "chunks": chunks_total,
        "build_s": round(build_s, 2),
        "build_papers_per_s": round(payload["papers"] / build_s, 1),
        "build_cpu_s": round(build_cpu_s, 2),
        "build_papers_per_cpu_s": round(payload["papers"] / build_cpu_s, 1),
        "update_64_papers_s": round(update_s, 3),
        "peak_rss_bytes": peak_rss_bytes(),
    }


def child_query(payload: dict) -> dict:
    """p50/p95 of `PaperChat.search` per run, the index opened afresh for each run.

    A fresh `PaperIndex` per run starts its term statistics (document frequencies, cached per index
    state) cold, as for questions nobody asked before; before 2026-12-03 the index was shared, so
    runs after the first reused them and the median run was a warm one.
    """
    from paperchat.rag.chain import PaperChat
    from paperchat.rag.embeddings import make_embeddings
    from paperchat.rag.store import PaperIndex

    settings = settings_for(Path(payload["index_dir"]))
    embeddings = make_embeddings(settings.embedding)
    index = PaperIndex.open(settings, embeddings)
    asked = questions(payload.get("questions", 0))
    PaperChat(settings, index).search("warm-up: load the model and open the files")
    rss_open = rss_bytes()
    runs, profiler = [], None
    if payload.get("profile"):
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001)
    for run in range(payload["runs"]):
        index.close()
        index = PaperIndex.open(settings, embeddings)
        chat = PaperChat(settings, index)
        totals, stages = [], {}
        if profiler and run == 0:
            profiler.start()
        for question in asked:
            started = time.perf_counter()
            sources = chat.search(question)
            totals.append((time.perf_counter() - started) * 1000)
            for stage, seconds in sources.timings_s.items():
                stages.setdefault(stage.removeprefix("retrieval_"), []).append(seconds * 1000)
        if profiler and run == 0:
            profiler.stop()
        runs.append(
            {
                "p50": percentile(totals, 50),
                "p95": percentile(totals, 95),
                "max": max(totals),
                "stages_p50": {k: percentile(v, 50) for k, v in stages.items()},
                "stages_p95": {k: percentile(v, 95) for k, v in stages.items()},
            }
        )
    out = {
        "runs": runs,
        "rss_bytes": rss_bytes(),
        "rss_after_open_bytes": rss_open,
        "peak_rss_bytes": peak_rss_bytes(),
        "questions": len(asked),
        "papers": index.paper_count(),
    }
    if profiler:
        Path(payload["profile"]).write_text(profiler.output_text(unicode=False, color=False, show_all=False))
        out["profile_path"] = payload["profile"]
    index.close()
    return out


def power_fit(x1: float, y1: float, x2: float, y2: float):
    """y = a * x**b through two points, as a function of x; b >= 0, since time, disk and memory
    never shrink as the index grows (a smaller figure at the larger size is noise, read as flat).

    >>> round(power_fit(10, 1, 100, 10)(1000), 6)
    100.0
    >>> power_fit(10, 5, 100, 4)(1000)
    4.0
    """
    b = math.log(y2 / y1) / math.log(x2 / x1) if y1 > 0 and y2 > 0 else 1.0
    return lambda x: y2 * (x / x2) ** max(b, 0.0)


EXTRAPOLATED = {
    "build_s": "build_s",
    "build_cpu_s": "build_cpu_s",
    "disk_mib": "disk_mib",
    "rss_mib": "rss_mib",
    "p50_ms": ("latency_ms", "p50"),
    "p95_ms": ("latency_ms", "p95"),
}


def _value(row: dict, key) -> float:
    if isinstance(key, tuple):
        return row[key[0]][key[1]]["median"]
    return row[key]


def extrapolate(rows: list[dict], sizes: list[int]) -> dict:
    """Power-law fits through the two largest measured sizes, evaluated at `sizes`;
    and each fit through two smaller measured sizes checked against the next measured one."""
    ok = [r for r in rows if r.get("status") == "ok"]
    checks, predictions = [], []
    for a, b, c in zip(ok, ok[1:], ok[2:]):
        check = {"fit_from": [a["papers"], b["papers"]], "papers": c["papers"]}
        for name, key in EXTRAPOLATED.items():
            predicted = power_fit(a["papers"], _value(a, key), b["papers"], _value(b, key))(c["papers"])
            check[name] = {
                "predicted": round(predicted, 1),
                "measured": _value(c, key),
                "ratio": round(_value(c, key) / predicted, 2) if predicted else None,
            }
        checks.append(check)
    if len(ok) >= 2:
        a, b = ok[-2], ok[-1]
        for size in sizes:
            row = {"papers": size, "fit_from": [a["papers"], b["papers"]]}
            for name, key in EXTRAPOLATED.items():
                row[name] = round(
                    power_fit(a["papers"], _value(a, key), b["papers"], _value(b, key))(size), 1
                )
            predictions.append(row)
    return {
        "checks": checks,
        "predictions": predictions,
        "note": "y = a * papers^b through two measured sizes (b from their ratio); a check fits two sizes "
        "and compares with the next measured size (ratio = measured / predicted)",
    }


def bench_retrieval(
    work: Path,
    bundled_dir: Path,
    sizes: list[int],
    runs: int,
    out: Path,
    build_budget_s: float,
    base_papers: int = 0,
    question_limit: int = 0,
    extrapolate_to: tuple[int, ...] = (1_000_000, 2_500_000),
    keep: bool = False,
    reuse: bool = False,
    build_nice: int = 15,
    save: Callable[[dict], None] | None = None,
) -> dict:
    rows = []
    rate = None
    for size in sizes:
        row: dict = {"papers_requested": size}
        if rate is not None and size / rate > build_budget_s:
            row.update(
                status="not run",
                predicted_build_s=round(size / rate),
                reason=f"build predicted at {size / rate / 60:.0f} min from the "
                f"{rate:.0f} papers/s measured at the largest size built (budget "
                f"{build_budget_s / 60:.0f} min)",
            )
            rows.append(row)
            continue
        index_dir = work / f"scale-{size}"
        built = index_dir / BUILD_RECORD
        if reuse and built.exists() and json.loads(built.read_text()).get("base_papers") == base_papers:
            build = json.loads(built.read_text())
            build_load, build_nice = build["load_average"], build["nice"]
            note = f"[bench] reusing the {size}-paper index of {build['built_at']}"
            print(note, file=sys.stderr, flush=True)
        else:
            note = f"[bench] building {size} synthetic papers (nice {build_nice}) ..."
            print(note, file=sys.stderr, flush=True)
            build_load = load_average()
            build = run_child(
                child_build,
                {
                    "index_dir": str(index_dir),
                    "bundled_dir": str(bundled_dir),
                    "papers": size,
                    "base_papers": base_papers,
                },
                timeout_s=max(600, build_budget_s * 2),
                nice=build_nice,
            )
            build.update(built_at=time.strftime("%Y-%m-%d %H:%M"), load_average=build_load, nice=build_nice,
                         base_papers=base_papers)
            built.write_text(json.dumps(build))
        rate = build["build_papers_per_s"]
        print(f"[bench] built in {build['build_s']} s; querying ...", file=sys.stderr, flush=True)
        payload = {"index_dir": str(index_dir), "runs": runs, "questions": question_limit}
        query_load = load_average()
        query = run_child(child_query, payload)
        target = TARGETS_P95_MS.get(size)
        p95 = spread([r["p95"] for r in query["runs"]], 1)
        if target and p95["median"] > target:
            profile_path = out / f"profile-retrieval-{size}.txt"
            run_child(child_query, {**payload, "runs": 1, "profile": str(profile_path)})
            row["profile"] = profile_path.name
            row["profile_top"] = _profile_top(profile_path.read_text())
        stage_names = list(query["runs"][0]["stages_p50"])
        row.update(
            status="ok",
            papers=query["papers"],
            chunks=build["chunks"],
            build_s=build["build_s"],
            build_papers_per_s=build["build_papers_per_s"],
            build_cpu_s=build["build_cpu_s"],
            build_papers_per_cpu_s=build["build_papers_per_cpu_s"],
            build_nice=build_nice,
            built_at=build.get("built_at"),
            build_peak_rss_mib=round(build["peak_rss_bytes"] / 2**20),
            update_64_papers_s=build["update_64_papers_s"],
            questions=query["questions"],
            latency_ms={
                "p50": spread([r["p50"] for r in query["runs"]], 1),
                "p95": p95,
                "max": spread([r["max"] for r in query["runs"]], 1),
            },
            stages_ms_p50={k: spread([r["stages_p50"][k] for r in query["runs"]], 2) for k in stage_names},
            stages_ms_p95={k: spread([r["stages_p95"][k] for r in query["runs"]], 2) for k in stage_names},
            disk_mib=round(dir_bytes(index_dir) / 2**20, 1),
            rss_mib=round(query["rss_bytes"] / 2**20),
            query_peak_rss_mib=round(query["peak_rss_bytes"] / 2**20),
            load_average_build=build_load,
            load_average_query=query_load,
            load_average=load_average(),
        )
        rows.append(row)
        if save:
            save(growth_summary(rows, sizes, extrapolate_to, question_limit))
        if size >= 100_000 and not keep:
            shutil.rmtree(index_dir, ignore_errors=True)  # gigabytes; rebuilt on the next run
    return growth_summary(rows, sizes, extrapolate_to, question_limit)


def growth_summary(
    rows: list[dict], sizes: list[int], extrapolate_to: tuple[int, ...], question_limit: int = 0
) -> dict:
    """The retrieval section from its size rows: the rows, the extrapolation and its checks."""
    measured = {r["papers_requested"] for r in rows if r["status"] == "ok"}
    return {
        "synthetic": SYNTHETIC_DESCRIPTION,
        "sizes": rows,
        "questions": len(questions(question_limit)),
        "extrapolation": extrapolate(rows, [s for s in (*sizes, *extrapolate_to) if s not in measured]),
        "note": "PaperChat.search (question → judged sources: retrieval + judging, query embedding "
        "included); p50/p95 over the questions within a run, median (min-max) over runs; a fresh "
        "PaperChat and PaperIndex per run, so per-concept caches and term statistics start cold; "
        "build CPU-s = CPU time of all the build "
        "process's threads (Chroma's included)",
    }


def _profile_top(text: str, lines: int = 30) -> list[str]:
    body = [line for line in text.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(body) if "search" in line or "retrieve" in line), 0)
    return body[start : start + lines]
