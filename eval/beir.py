"""BEIR mode: the external yardstick. Ingest a BEIR corpus into its own index, retrieve for every
test query, and score nDCG@10, recall@10, recall@100 and MRR@10 against the qrels.

The index is cached between runs (under the user cache directory, keyed by the corpus file's
size and modification time and the embedding model), so a second run only retrieves.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from platformdirs import user_cache_dir
from tqdm import tqdm

from paperchat.eval.metrics import score_beir
from paperchat.eval.report import write_beir_markdown
from paperchat.ingest.pipeline import ingest, tqdm_progress
from paperchat.rag.embeddings import make_embeddings
from paperchat.rag.retrieval import Retriever
from paperchat.rag.settings import Settings
from paperchat.rag.store import PaperIndex


class BeirError(ValueError):
    """The folder is not a BEIR dataset."""


def load_queries(folder: Path, split: str = "test") -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Queries that have judgements in `qrels/<split>.tsv`, and those judgements."""
    qrels_path = folder / "qrels" / f"{split}.tsv"
    queries_path = folder / "queries.jsonl"
    for path in (folder / "corpus.jsonl", queries_path, qrels_path):
        if not path.exists():
            raise BeirError(f"{folder} is not a BEIR dataset: {path.name} is missing")
    qrels: dict[str, dict[str, int]] = {}
    for number, line in enumerate(qrels_path.read_text().splitlines(), 1):
        parts = line.split("\t")
        if number == 1 and not parts[-1].strip().lstrip("-").isdigit():
            continue  # header
        if len(parts) < 3:
            raise BeirError(f"{qrels_path}:{number}: expected query-id, corpus-id, score")
        qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    queries = {}
    for line in queries_path.read_text().splitlines():
        if line.strip():
            item = json.loads(line)
            if str(item["_id"]) in qrels:
                queries[str(item["_id"])] = item["text"]
    return queries, qrels


def cached_index_dir(folder: Path, settings: Settings) -> Path:
    corpus = folder / "corpus.jsonl"
    stat = corpus.stat()
    identity = (f"{corpus.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{settings.embedding.model}|"
                f"{settings.chunking.max_tokens}|{settings.chunking.overlap_sentences}")
    key = hashlib.sha1(identity.encode()).hexdigest()[:12]
    return Path(user_cache_dir("paperchat", appauthor=False)) / "beir" / f"{folder.name}-{key}"


def run_beir(folder: Path, settings: Settings, out_dir: Path | None = None, index_dir: Path | None = None,
             split: str = "test", depth: int = 100, progress: bool = True) -> dict:
    """Ingest (cached), retrieve for every judged query, score, and write `out_dir` files.

    `index_dir` None means the cache folder for this corpus, never the user's chat index.
    """
    queries, qrels = load_queries(folder, split)
    index_dir = index_dir or cached_index_dir(folder, settings)
    store = settings.store.model_copy(update={"index_dir": index_dir})
    settings = settings.model_copy(update={"store": store})
    started = time.perf_counter()
    summary = ingest([folder / "corpus.jsonl"], settings, fmt="beir",
                     progress=tqdm_progress if progress else None)
    ingest_s = time.perf_counter() - started
    index = PaperIndex.open(settings, make_embeddings(settings.embedding))
    retriever = Retriever(index, settings.retrieval)
    run: dict[str, dict[str, float]] = {}
    latencies = []
    try:
        for qid, text in tqdm(queries.items(), desc="queries", disable=not progress):
            result = retriever.retrieve(text, depth=depth)
            latencies.append(result.timings_s["total"])
            # Scores strictly decreasing by rank, so ties never reorder what the retriever ranked.
            run[qid] = {p.id: float(depth - p.rank + 1) for p in result.papers}
    finally:
        index.close()
    metrics = score_beir(run, qrels)
    latencies.sort()
    result = {"dataset": folder.name, "split": split, "queries": len(queries),
              "corpus_papers": summary.papers_total, "metrics": metrics, "ingest_s": round(ingest_s, 1),
              "latency_p50_s": round(latencies[len(latencies) // 2], 4) if latencies else None,
              "config": {"embedding": settings.embedding.model,
                         "retrieval": settings.retrieval.model_dump(mode="json"),
                         "chunking": settings.chunking.model_dump(mode="json")}}
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "beir.json").write_text(json.dumps(result, indent=1))
        (out_dir / "run.json").write_text(json.dumps(run))
        config = {**result["config"], "corpus_papers": result["corpus_papers"],
                  "ingest_s": result["ingest_s"], "latency_p50_s": result["latency_p50_s"]}
        write_beir_markdown(result["metrics"], out_dir / "beir.md", dataset=folder.name, config=config)
    return result

