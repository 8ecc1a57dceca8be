"""Speed and memory benchmarks: `python -m eval.bench` writes `bench.json` and `BENCHMARKS.md`.

Sections (each figure is the median of `--runs` runs, with min and max):

- ``ingest``: the bundled corpus into a fresh index, end to end, in a child process (papers/s,
  peak RSS), and the embedding step alone for several inference variants (texts/s, abstracts/s),
  each variant checked against the fp32 torch model (cosine agreement, overlap@10 of retrieval).
- ``retrieval``: `Retriever.retrieve` p50/p95 latency and per-stage timings over the dev questions
  on synthetic corpora of `--sizes` papers (see `eval.synthetic`), with index size on disk and the
  query process's RSS. A size whose build is predicted to exceed `--build-budget-s` is not built;
  its build time is extrapolated instead.
- ``answer``: `PaperChat.search` (question to sources) and extractive `ask` latency, bundled corpus.
- ``llm``: time to first token and stream pieces/s of the local model (`--skip-llm` to leave out).
- ``startup``: `python -m ui.cli serve` launched to the page answering HTTP 200.

Timings are wall-clock on a shared machine: the load average is recorded next to each section.

    python -m eval.bench --quick                      # 1k and 10k papers, 3 runs
    python -m eval.bench --sizes 1000,100000 --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings

REPO = Path(__file__).resolve().parent.parent
DEV_QUESTIONS = REPO / "eval" / "questions" / "dev.jsonl"
DEFAULT_OUT = REPO / "eval" / "bench_results"
SECTIONS = ("ingest", "embedding", "retrieval", "answer", "llm", "startup")
RESNET_QUESTIONS = ("Which papers prune ResNet-50?", "Which papers improve the training of ResNet-50 on ImageNet?",
                    "What accuracy does ResNet-50 reach after pruning?")
TARGETS_MS = {10_000: 50.0, 1_000_000: 150.0}  # retrieval p95 targets
TARGET_ABSTRACTS_PER_S = 30.0
CHROMA_WRITE_BATCH = 4000
SYNTHETIC_DESCRIPTION = (
    "Synthetic papers recombine the real bundled papers (eval/synthetic.py): each takes a random real "
    "base paper, swaps one title word for a word of another real title, and replaces about a third of "
    "its abstract sentences with sentences of other real abstracts. Chunks come from the real "
    "chunk_paper (word-count token estimate); each chunk vector is the real all-MiniLM-L6-v2 embedding "
    "of the base paper's matching chunk plus gaussian noise (std 0.025 per component, cosine ~0.9 to "
    "the source), renormalised, so no model call is made per synthetic paper. Ids, metadata, documents "
    "and lexical rows are written exactly as PaperIndex.write writes them; queries are the 46 real dev "
    "questions, embedded by the real model on every call.")


# --- small helpers ---------------------------------------------------------------------------------
def spread(values: Sequence[float], digits: int = 2) -> dict:
    """Median, min and max of repeated measurements.

    >>> spread([3.0, 1.0, 2.0])
    {'median': 2.0, 'min': 1.0, 'max': 3.0, 'n': 3}
    """
    values = [float(v) for v in values]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "n": len(values)}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation.

    >>> percentile([1, 2, 3, 4], 50)
    2.5
    """
    return float(np.percentile(np.asarray(values, dtype=float), q))


def rss_bytes() -> int:
    """This process's resident set size now (Linux /proc; peak RSS elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return peak_rss_bytes()


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = None
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        pass
    import chromadb
    import sentence_transformers

    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(ram / 2**30, 1) if ram else None,
            "os": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "sentence_transformers": sentence_transformers.__version__,
            "chromadb": chromadb.__version__, "load_average_at_start": load_average(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def settings_for(index_dir: Path, **sections):
    from rag.settings import Settings

    tree = {"store": {"index_dir": str(index_dir)}, "llm": {"backend": "extractive"}}
    for section, values in sections.items():
        tree.setdefault(section, {}).update(values)
    return Settings.load(overrides=tree)


def dev_questions() -> list[str]:
    return [json.loads(line)["question"] for line in DEV_QUESTIONS.read_text().splitlines() if line.strip()]


def run_child(kind: str, payload: dict, timeout_s: float = 3600) -> dict:
    """Run `_child_<kind>(payload)` in a fresh interpreter: clean memory figures, no shared caches."""
    command = [sys.executable, "-m", "eval.bench", "--child", kind, json.dumps(payload)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark child {kind!r} failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1])


class PrecomputedEmbeddings(Embeddings):
    """Embeddings from a function over a batch of texts (an inference variant, or stored vectors)."""

    def __init__(self, encode: Callable[[list[str]], np.ndarray]):
        self.encode = encode

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encode([text])[0].tolist()


# --- writing an index from vectors ------------------------------------------------------------------
def write_index_rows(index, papers, chunks, vectors: np.ndarray) -> None:
    """Write papers into a fresh index as `PaperIndex.write` does, with the vectors given.

    Same Chroma ids, metadata and documents, same lexical rows; the delete-before-insert of an
    update is skipped (the index is fresh), which keeps a million-paper build linear.
    """
    collection = index.vectors._collection
    step = min(CHROMA_WRITE_BATCH, index.client.get_max_batch_size())
    for start in range(0, len(chunks), step):
        part = chunks[start:start + step]
        collection.upsert(ids=[c.id for c in part], embeddings=vectors[start:start + step],
                          metadatas=[c.metadata for c in part], documents=[c.text for c in part])
    index.lexical.write_papers(papers, chunks, replace=False)


def bundled_chunks(embeddings):
    """The bundled papers and their chunks, chunked exactly as ingest does."""
    from ingest.sources import bundled_corpus_dir, read_papers
    from rag.chunking import chunk_paper
    from rag.settings import ChunkSettings

    chunking = ChunkSettings()
    papers = read_papers([bundled_corpus_dir()]).papers
    chunked = [(p, chunk_paper(p, min(chunking.max_tokens, embeddings.max_seq_tokens - 2), embeddings.count_tokens,
                               chunking.overlap_sentences)) for p in papers]
    return chunked


# --- section: ingest --------------------------------------------------------------------------------
def _child_ingest(payload: dict) -> dict:
    from ingest.pipeline import ingest

    settings = settings_for(Path(payload["index_dir"]))
    summary = ingest(None, settings)
    return {"seconds": summary.seconds, "papers": summary.papers_added, "chunks": summary.chunks,
            "papers_per_second": summary.papers_per_second, "peak_rss_bytes": peak_rss_bytes(),
            "disk_bytes": dir_bytes(Path(payload["index_dir"]))}


def bench_ingest(work: Path, runs: int) -> dict:
    """`ingest(None, ...)` into a fresh index, in a fresh process each run (model load included)."""
    results = []
    for run in range(runs):
        index_dir = work / f"ingest-{run}"
        shutil.rmtree(index_dir, ignore_errors=True)
        results.append(run_child("ingest", {"index_dir": str(index_dir)}))
        if run < runs - 1:
            shutil.rmtree(index_dir, ignore_errors=True)
    return {"papers": results[0]["papers"], "chunks": results[0]["chunks"],
            "seconds": spread([r["seconds"] for r in results]),
            "papers_per_second": spread([r["papers_per_second"] for r in results]),
            "peak_rss_mib": spread([r["peak_rss_bytes"] / 2**20 for r in results], 0),
            "disk_mib": round(results[-1]["disk_bytes"] / 2**20, 1), "index_dir": str(work / f"ingest-{runs - 1}"),
            "load_average_after": load_average(),
            "note": "fresh process per run; includes reading, chunking, model load, embedding, Chroma + FTS5 writes"}


# --- section: embedding variants --------------------------------------------------------------------
def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    mask = mask[..., None].astype(np.float32)
    pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def _sorted_batches(texts: list[str], batch_size: int):
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def _array_encoder(run_batch, tokenizer, max_len: int, batch_size: int = 32):
    """encode(texts) for a runtime that maps (ids, mask, type ids) to the last hidden state."""
    def encode(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 0), dtype=np.float32)
        for idx in _sorted_batches(texts, batch_size):
            enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_len,
                            return_tensors="np")
            pooled = _mean_pool(run_batch(enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64),
                                          enc["token_type_ids"].astype(np.int64)), enc["attention_mask"])
            if out.shape[1] == 0:
                out = np.zeros((len(texts), pooled.shape[1]), dtype=np.float32)
            out[idx] = pooled
        return out
    return encode


def export_onnx(model, folder: Path) -> Path:
    """The model's transformer as ONNX (fp32), exported with torch; no optimum needed."""
    import torch

    path = folder / "model.onnx"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    transformer = model[0].auto_model

    class Hidden(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    sample = model.tokenizer(["a sample sentence", "another one, longer than the first"], padding=True,
                             return_tensors="pt")
    axes = {0: "batch", 1: "tokens"}
    with torch.no_grad():
        torch.onnx.export(Hidden(transformer).eval(),
                          (sample["input_ids"], sample["attention_mask"], sample["token_type_ids"]), str(path),
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                                        "last_hidden_state": axes})
    return path


def quantize_onnx(fp32: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = fp32.with_name("model_qint8.onnx")
    if not path.exists():
        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, per_channel=True)
    return path


def onnxruntime_encoder(path: Path, tokenizer, max_len: int, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run_batch(ids, mask, types):
        return session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
    return _array_encoder(run_batch, tokenizer, max_len)


def openvino_encoder(path: Path, tokenizer, max_len: int, threads: int, precision: str | None = None):
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()

    def run_batch(ids, mask, types):
        return request.infer({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0].copy()
    return _array_encoder(run_batch, tokenizer, max_len)


def embedding_variants(model, work: Path, quick: bool) -> dict[str, Callable[[list[str]], np.ndarray]]:
    """name -> encode(texts) for each inference variant that can run here (fp32 torch first)."""
    import torch

    threads = os.cpu_count() or 1
    max_len = int(model.max_seq_length)
    variants: dict[str, Callable] = {}
    variants["torch fp32, batch 32 (current ingest path)"] = None  # filled by the caller (the real Embeddings)

    def torch_sorted(batch_size):
        return lambda texts: model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                          convert_to_numpy=True, show_progress_bar=False)
    if not quick:
        variants["torch fp32, whole corpus length-sorted, batch 64"] = torch_sorted(64)

    def torch_bf16(texts):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.encode(texts, batch_size=64, normalize_embeddings=False, convert_to_tensor=True,
                               show_progress_bar=False)
        out = out.float().cpu().numpy()
        return out / np.linalg.norm(out, axis=1, keepdims=True)
    if not quick:
        variants["torch bf16 autocast, batch 64"] = torch_bf16
    try:
        fp32 = export_onnx(model, work / "onnx")
        variants["onnxruntime fp32"] = onnxruntime_encoder(fp32, model.tokenizer, max_len, threads)
        int8 = quantize_onnx(fp32)
        variants["onnxruntime int8 (dynamic, per-channel)"] = onnxruntime_encoder(int8, model.tokenizer, max_len,
                                                                                   threads)
    except Exception as error:  # noqa: BLE001 - optional runtimes: report, carry on
        variants[f"onnxruntime: not available ({type(error).__name__}: {error})"[:160]] = None
        return variants
    try:
        variants["openvino fp32 (from ONNX)"] = openvino_encoder(fp32, model.tokenizer, max_len, threads, "f32")
        if not quick:
            variants["openvino bf16 hint (from ONNX)"] = openvino_encoder(fp32, model.tokenizer, max_len, threads,
                                                                          "bf16")
        variants["openvino int8 (from int8 ONNX)"] = openvino_encoder(int8, model.tokenizer, max_len, threads)
    except Exception as error:  # noqa: BLE001
        variants[f"openvino: not available ({type(error).__name__}: {error})"[:160]] = None
    return variants


def _retrieved_ids(index_dir: Path, papers, chunks, vectors, encode, questions: list[str]) -> list[list[str]]:
    from rag.retrieval import Retriever
    from rag.store import PaperIndex

    # A fresh folder each time: chromadb caches its client per path, so a reused path would point at
    # a deleted database.
    settings = settings_for(index_dir)
    index = PaperIndex.open(settings, PrecomputedEmbeddings(encode), create=True)
    try:
        write_index_rows(index, papers, chunks, vectors)
        retriever = Retriever(index, settings.retrieval)
        return [[p.id for p in retriever.retrieve(q).papers[:10]] for q in questions]
    finally:
        index.close()
        shutil.rmtree(index_dir, ignore_errors=True)


def bench_embedding(work: Path, runs: int, quick: bool) -> dict:
    """Embedding of the bundled chunks alone, per variant, with quality against fp32 torch."""
    from rag.embeddings import make_embeddings
    from rag.settings import EmbeddingSettings

    embeddings = make_embeddings(EmbeddingSettings())
    model = embeddings.model
    chunked = bundled_chunks(embeddings)
    papers = [p for p, _ in chunked]
    chunks = [c for _, cs in chunked for c in cs]
    texts = [c.text for c in chunks]
    questions = dev_questions()
    variants = embedding_variants(model, work, quick)
    baseline_name = next(iter(variants))
    variants[baseline_name] = lambda batch: np.asarray(embeddings.embed_documents(batch), dtype=np.float32)
    baseline_query = lambda batch: np.asarray([embeddings.embed_query(t) for t in batch], dtype=np.float32)
    rows, reference, reference_ids = [], None, None
    for name, encode in variants.items():
        if encode is None:
            rows.append({"variant": name, "status": "not measured"})
            continue
        encode(texts[:64])  # warm-up: lazy init, kernels
        seconds, vectors = [], None
        for _ in range(runs):
            started = time.perf_counter()
            vectors = np.asarray(encode(texts), dtype=np.float32)
            seconds.append(time.perf_counter() - started)
        row = {"variant": name, "seconds": spread(seconds),
               "texts_per_s": spread([len(texts) / s for s in seconds], 1),
               "abstracts_per_s": spread([len(papers) / s for s in seconds], 1), "load_average": load_average()}
        query_encode = baseline_query if reference is None else encode
        try:
            ids = _retrieved_ids(work / f"variant-index-{len(rows)}-{os.getpid()}", papers, chunks, vectors,
                             lambda batch, q=query_encode, v=vectors: q(batch), questions)
        except Exception as error:  # noqa: BLE001 - retrieval is another module's: keep the speed figures
            ids = None
            row["quality_error"] = f"{type(error).__name__}: {error}"[:300]
        if reference is None:
            reference, reference_ids = vectors, ids
        cosine = (vectors * reference).sum(axis=1)
        row["cosine_to_fp32"] = {"mean": round(float(cosine.mean()), 5), "min": round(float(cosine.min()), 5)}
        row["overlap_at_10"] = row["identical_top10_questions"] = None
        if ids is not None and reference_ids is not None:
            row["overlap_at_10"] = round(float(np.mean([len(set(a) & set(b)) / max(1, len(b))
                                                        for a, b in zip(ids, reference_ids)])), 4)
            row["identical_top10_questions"] = sum(a == b for a, b in zip(ids, reference_ids))
        rows.append(row)
    return {"texts": len(texts), "abstracts": len(papers), "questions": len(questions), "variants": rows,
            "torch_threads": __import__("torch").get_num_threads(),
            "note": "embedding step alone, model loaded, warm; quality vs the fp32 torch ingest path "
                    "(overlap@10 of Retriever.retrieve top-10 ids over the dev questions, queries embedded by "
                    "the same variant)"}


# --- section: retrieval at scale ----------------------------------------------------------------------
def _base_vectors(index_dir: Path, base_papers: int) -> tuple[list, list[np.ndarray]]:
    """The real papers and their chunks' real vectors, read back from an ingested bundled index."""
    from rag.lexical import LexicalIndex
    from rag.store import make_chroma_client

    settings = settings_for(index_dir)
    lexical = LexicalIndex(index_dir / "lexical.sqlite")
    ids = sorted(lexical.content_hashes())
    if base_papers:
        ids = ids[:base_papers]
    papers = lexical.papers(ids)
    lexical.close()
    collection = make_chroma_client(settings.store).get_collection(settings.store.collection)
    stored = collection.get(include=["embeddings", "metadatas"])
    by_paper: dict[str, list[tuple[int, np.ndarray]]] = {}
    for meta, vector in zip(stored["metadatas"], stored["embeddings"]):
        by_paper.setdefault(meta["paper_id"], []).append((meta["chunk_index"], np.asarray(vector, dtype=np.float32)))
    base = [papers[i] for i in ids if i in by_paper]
    vectors = [np.stack([v for _, v in sorted(by_paper[p.id], key=lambda x: x[0])]) for p in base]
    return base, vectors


def _child_build(payload: dict) -> dict:
    from eval.synthetic import synthetic_batches
    from rag.store import PaperIndex

    index_dir = Path(payload["index_dir"])
    shutil.rmtree(index_dir, ignore_errors=True)
    base, vectors = _base_vectors(Path(payload["bundled_dir"]), payload["base_papers"])
    settings = settings_for(index_dir)
    index = PaperIndex.open(settings, None, create=True)
    started = time.perf_counter()
    chunks_total, last = 0, None
    for batch in synthetic_batches(base, vectors, payload["papers"], seed=payload["papers"]):
        write_index_rows(index, batch.papers, batch.chunks, batch.vectors)
        chunks_total += len(batch.chunks)
        last = batch
    build_s = time.perf_counter() - started
    # An incremental re-ingest of 64 changed papers through the real PaperIndex.write (delete + add).
    papers = last.papers[:64]
    wanted = {p.id for p in papers}
    picked = [(c, v) for c, v in zip(last.chunks, last.vectors) if c.paper_id in wanted]
    lookup = {c.text: v for c, v in picked}
    index.embeddings = PrecomputedEmbeddings(lambda texts: np.stack([lookup[t] for t in texts]))
    index.vectors._embedding_function = index.embeddings
    started = time.perf_counter()
    index.write(papers, [c for c, _ in picked])
    update_s = time.perf_counter() - started
    count = index.paper_count()
    index.close()
    return {"papers": count, "chunks": chunks_total, "build_s": round(build_s, 2),
            "build_papers_per_s": round(payload["papers"] / build_s, 1), "update_64_papers_s": round(update_s, 3),
            "peak_rss_bytes": peak_rss_bytes()}


def _child_query(payload: dict) -> dict:
    from rag.embeddings import make_embeddings
    from rag.retrieval import Retriever
    from rag.store import PaperIndex

    settings = settings_for(Path(payload["index_dir"]))
    index = PaperIndex.open(settings, make_embeddings(settings.embedding))
    questions = dev_questions()[:payload.get("questions") or None]
    Retriever(index, settings.retrieval).retrieve("warm-up: load the model and open the files")
    rss_open = rss_bytes()
    runs = []
    profiler = None
    if payload.get("profile"):
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001)
    for run in range(payload["runs"]):
        retriever = Retriever(index, settings.retrieval)  # fresh concept-IDF cache: every run pays it
        totals, stages = [], {}
        if profiler and run == 0:
            profiler.start()
        for question in questions:
            started = time.perf_counter()
            result = retriever.retrieve(question)
            totals.append((time.perf_counter() - started) * 1000)
            for stage, seconds in result.timings_s.items():
                stages.setdefault(stage, []).append(seconds * 1000)
        if profiler and run == 0:
            profiler.stop()
        runs.append({"p50": percentile(totals, 50), "p95": percentile(totals, 95), "max": max(totals),
                     "stages_p50": {k: percentile(v, 50) for k, v in stages.items()},
                     "stages_p95": {k: percentile(v, 95) for k, v in stages.items()}})
    out = {"runs": runs, "rss_bytes": rss_bytes(), "rss_after_open_bytes": rss_open, "peak_rss_bytes": peak_rss_bytes(),
           "questions": len(questions), "papers": index.paper_count()}
    if profiler:
        text = profiler.output_text(unicode=False, color=False, show_all=False)
        Path(payload["profile"]).write_text(text)
        out["profile_path"] = payload["profile"]
    index.close()
    return out


def bench_retrieval(work: Path, bundled_dir: Path, sizes: list[int], runs: int, out: Path,
                    build_budget_s: float, base_papers: int = 0, questions: int = 0) -> dict:
    rows = []
    rate = None
    for size in sizes:
        row: dict = {"papers_requested": size}
        if rate is not None and size / rate > build_budget_s:
            row.update(status="not run", predicted_build_s=round(size / rate),
                       reason=f"build predicted at {size / rate / 60:.0f} min from the "
                              f"{rate:.0f} papers/s measured at the largest size built (budget "
                              f"{build_budget_s / 60:.0f} min)")
            rows.append(row)
            continue
        index_dir = work / f"scale-{size}"
        print(f"[bench] building {size} synthetic papers ...", file=sys.stderr, flush=True)
        build = run_child("build", {"index_dir": str(index_dir), "bundled_dir": str(bundled_dir), "papers": size,
                                    "base_papers": base_papers}, timeout_s=max(600, build_budget_s * 2))
        rate = build["build_papers_per_s"]
        print(f"[bench] built in {build['build_s']} s; querying ...", file=sys.stderr, flush=True)
        payload = {"index_dir": str(index_dir), "runs": runs, "questions": questions}
        query = run_child("query", payload)
        target = TARGETS_MS.get(size)
        p95 = spread([r["p95"] for r in query["runs"]], 1)
        if target and p95["median"] > target:
            profile_path = out / f"profile-retrieval-{size}.txt"
            run_child("query", {**payload, "runs": 1, "profile": str(profile_path)})
            row["profile"] = profile_path.name
            row["profile_top"] = _profile_top(profile_path.read_text())
        stage_names = list(query["runs"][0]["stages_p50"])
        row.update(status="ok", papers=query["papers"], chunks=build["chunks"], build_s=build["build_s"],
                   build_papers_per_s=build["build_papers_per_s"], build_peak_rss_mib=round(build["peak_rss_bytes"] / 2**20),
                   update_64_papers_s=build["update_64_papers_s"],
                   latency_ms={"p50": spread([r["p50"] for r in query["runs"]], 1), "p95": p95,
                               "max": spread([r["max"] for r in query["runs"]], 1)},
                   stages_ms_p50={k: spread([r["stages_p50"][k] for r in query["runs"]], 2) for k in stage_names},
                   stages_ms_p95={k: spread([r["stages_p95"][k] for r in query["runs"]], 2) for k in stage_names},
                   disk_mib=round(dir_bytes(index_dir) / 2**20, 1), rss_mib=round(query["rss_bytes"] / 2**20),
                   query_peak_rss_mib=round(query["peak_rss_bytes"] / 2**20), load_average=load_average())
        rows.append(row)
        if size >= 100_000:
            shutil.rmtree(index_dir, ignore_errors=True)  # gigabytes; rebuilt on the next run
    return {"synthetic": SYNTHETIC_DESCRIPTION, "sizes": rows, "questions": len(dev_questions()[:questions or None]),
            "note": "p50/p95 over the dev questions within a run; median (min-max) over runs; a fresh Retriever "
                    "per run, so the per-concept IDF cache starts cold; query embedding included"}


def _profile_top(text: str, lines: int = 30) -> list[str]:
    body = [line for line in text.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(body) if "retrieve" in line), 0)
    return body[start:start + lines]


# --- section: answer --------------------------------------------------------------------------------
def bench_answer(bundled_dir: Path, runs: int) -> dict:
    from rag.chain import PaperChat

    chat = PaperChat.open(settings_for(bundled_dir))
    questions = dev_questions()
    chat.search("warm-up")
    per_run = []
    try:
        for _ in range(runs):
            sources_ms, answer_ms = [], []
            for question in questions:
                started = time.perf_counter()
                chat.search(question)
                sources_ms.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                chat.ask(question, answerer="extractive")
                answer_ms.append((time.perf_counter() - started) * 1000)
            per_run.append((sources_ms, answer_ms))
    finally:
        chat.close()
    return {"questions": len(questions),
            "sources_ms": {"p50": spread([percentile(s, 50) for s, _ in per_run], 1),
                           "p95": spread([percentile(s, 95) for s, _ in per_run], 1)},
            "extractive_answer_ms": {"p50": spread([percentile(a, 50) for _, a in per_run], 1),
                                     "p95": spread([percentile(a, 95) for _, a in per_run], 1)},
            "load_average": load_average(),
            "note": "PaperChat.search = retrieval + judging (question to sources); extractive = the whole "
                    "ask(answerer='extractive'), retrieval included"}


# --- section: local LLM -----------------------------------------------------------------------------
def _child_llm(payload: dict) -> dict:
    from rag.chain import PaperChat, Token
    from rag.llm import make_chat_model

    settings = settings_for(Path(payload["index_dir"]), llm={"backend": "local"})
    started = time.perf_counter()
    model = make_chat_model(settings.llm)
    load_s = time.perf_counter() - started
    chat = PaperChat.open(settings, chat_models={"local": model})
    results = []
    for question in RESNET_QUESTIONS:
        started = time.perf_counter()
        first, pieces, chars = None, 0, 0
        for event in chat.stream(question, answerer="local"):
            if isinstance(event, Token):
                now = time.perf_counter()
                if first is None:
                    first = now
                pieces += 1
                chars += len(event.text)
        ended = time.perf_counter()
        results.append({"ttft_s": (first or ended) - started, "pieces": pieces, "chars": chars,
                        "pieces_per_s": (pieces - 1) / (ended - first) if first and pieces > 1 and ended > first else None})
    chat.close()
    return {"load_s": load_s, "questions": results}


def bench_llm(bundled_dir: Path) -> dict:
    try:
        out = run_child("llm", {"index_dir": str(bundled_dir)}, timeout_s=900)
    except Exception as error:  # noqa: BLE001 - owned by another module; report, do not fail the bench
        return {"status": "not measured", "reason": str(error)[-500:]}
    rates = [q["pieces_per_s"] for q in out["questions"] if q["pieces_per_s"]]
    return {"status": "ok", "model_load_s": round(out["load_s"], 2),
            "ttft_s": spread([q["ttft_s"] for q in out["questions"]], 2),
            "pieces_per_s": spread(rates, 1), "questions": list(RESNET_QUESTIONS), "raw": out["questions"],
            "load_average": load_average(),
            "note": "TTFT = PaperChat.stream() call to the first Token event (retrieval + prompt prefill "
                    "included); rate = Token events per second after the first (one event is about one token)"}


# --- section: start-up ------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_startup(bundled_dir: Path, runs: int, timeout_s: float = 240) -> dict:
    if not (REPO / "ui" / "app.py").exists():
        return {"status": "not measured", "reason": "ui/app.py does not exist yet"}
    seconds = []
    for _ in range(runs):
        port = _free_port()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "ui.cli", "serve", "--index", str(bundled_dir),
                                    "--port", str(port), "--llm", "extractive"], cwd=REPO, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            while True:
                if process.poll() is not None:
                    error = process.stderr.read().decode(errors="replace")[-800:]
                    return {"status": "not measured", "reason": f"serve exited with {process.returncode}: {error}"}
                if time.perf_counter() - started > timeout_s:
                    return {"status": "not measured", "reason": f"no HTTP 200 within {timeout_s} s"}
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                        if response.status == 200:
                            seconds.append(time.perf_counter() - started)
                            break
                except OSError:
                    pass
                time.sleep(0.1)
        finally:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(process.pid, signal.SIGKILL)
    return {"status": "ok", "seconds": spread(seconds), "load_average": load_average(),
            "note": "launch of `python -m ui.cli serve --llm extractive` to HTTP 200 on / (polled every 0.1 s)"}


# --- report -----------------------------------------------------------------------------------------
def fmt(s: dict | None, unit: str = "") -> str:
    """'median (min-max)'.

    >>> fmt({'median': 2.0, 'min': 1.0, 'max': 3.0, 'n': 3}, ' ms')
    '2.0 ms (1.0-3.0, n=3)'
    """
    if not s or s.get("median") is None:
        return "n/a"
    return f"{s['median']}{unit} ({s['min']}-{s['max']}, n={s['n']})"


def targets(results: dict) -> list[dict]:
    out = []
    variants = [v for v in results.get("embedding", {}).get("variants", []) if "abstracts_per_s" in v]
    if variants:
        best = max(variants, key=lambda v: v["abstracts_per_s"]["median"])
        base = variants[0]
        out.append({"target": f"embedding >= {TARGET_ABSTRACTS_PER_S:.0f} abstracts/s (default fp32 path)",
                    "figure": fmt(base["abstracts_per_s"]),
                    "met": base["abstracts_per_s"]["median"] >= TARGET_ABSTRACTS_PER_S})
        out.append({"target": f"embedding >= {TARGET_ABSTRACTS_PER_S:.0f} abstracts/s (best variant: {best['variant']})",
                    "figure": f"{fmt(best['abstracts_per_s'])}; overlap@10 {best['overlap_at_10']}",
                    "met": best["abstracts_per_s"]["median"] >= TARGET_ABSTRACTS_PER_S})
    for row in results.get("retrieval", {}).get("sizes", []):
        target = TARGETS_MS.get(row["papers_requested"])
        if target is None:
            continue
        if row["status"] != "ok":
            out.append({"target": f"retrieval p95 < {target:.0f} ms at {row['papers_requested']:,} papers",
                        "figure": "not run: " + row.get("reason", ""), "met": None})
            continue
        out.append({"target": f"retrieval p95 < {target:.0f} ms at {row['papers_requested']:,} papers",
                    "figure": fmt(row["latency_ms"]["p95"], " ms"), "met": row["latency_ms"]["p95"]["median"] < target})
    return out


def write_markdown(results: dict, path: Path) -> None:
    m = results["machine"]
    lines = ["# paperchat benchmarks", "",
             f"Generated by `python -m eval.bench {' '.join(results['argv'])}` on {m['date']}.", "",
             (f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['os']}; Python {m['python']}, "
             f"torch {m['torch']} ({m['torch_threads']} threads), sentence-transformers {m['sentence_transformers']}, "
             f"chromadb {m['chromadb']}. Load average at start: {m['load_average_at_start']} (a shared machine: "
             "other jobs ran alongside, so figures are noisy)."), "",
             f"Each figure: median (min-max, n = runs) over {results['runs']} runs unless noted.", ""]
    if results.get("merged_from_previous_run"):
        lines += [f"Sections kept from an earlier run (`--merge`): {', '.join(results['merged_from_previous_run'])}.", ""]
    if results.get("targets"):
        lines += ["## Targets", "", "| target | figure | met |", "|---|---|---|"]
        for t in results["targets"]:
            met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
            lines.append(f"| {t['target']} | {t['figure']} | {met} |")
        lines.append("")
    ingest = results.get("ingest")
    if ingest:
        lines += ["## Ingest (bundled corpus, fresh index)", ""]
        if ingest.get("status") == "not measured":
            lines += [f"Not measured: {ingest.get('reason')}", ""]
        else:
            lines += ["| papers | chunks | seconds | papers/s | peak RSS (MiB) | index on disk |", "|---|---|---|---|---|---|",
                      (f"| {ingest['papers']} | {ingest['chunks']} | {fmt(ingest['seconds'], ' s')} | "
                      f"{fmt(ingest['papers_per_second'])} | {fmt(ingest['peak_rss_mib'])} | {ingest['disk_mib']} MiB |"),
                      "", ingest["note"] + ".", ""]
    for name in ("embedding", "answer"):
        if results.get(name, {}).get("status") == "not measured":
            lines += [f"## {name.capitalize()}", "", f"Not measured: {results[name]['reason']}", ""]
    emb = results.get("embedding")
    if emb and emb.get("status") != "not measured":
        lines += [f"## Embedding step alone ({emb['texts']} chunk texts of {emb['abstracts']} abstracts)", "",
                  "| variant | texts/s | abstracts/s | cosine to fp32 (mean / min) | overlap@10 | identical top-10 |",
                  "|---|---|---|---|---|---|"]
        for v in emb["variants"]:
            if "texts_per_s" not in v:
                lines.append(f"| {v['variant']} | not measured | | | | |")
                continue
            lines.append(f"| {v['variant']} | {fmt(v['texts_per_s'])} | {fmt(v['abstracts_per_s'])} | "
                         f"{v['cosine_to_fp32']['mean']} / {v['cosine_to_fp32']['min']} | {v['overlap_at_10']} | "
                         f"{v['identical_top10_questions']}/{emb['questions']} |")
        lines += ["", emb["note"] + ".", ""]
    retrieval = results.get("retrieval")
    if retrieval:
        lines += ["## Retrieval at scale (no LLM)", "", retrieval["synthetic"], "",
                  "| papers | chunks | p50 ms | p95 ms | disk MiB | RSS MiB | build papers/s | re-ingest 64 papers |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in retrieval["sizes"]:
            if row["status"] != "ok":
                lines.append(f"| {row['papers_requested']:,} | | not run | | | | | {row.get('reason', '')} |")
                continue
            lines.append(f"| {row['papers']:,} | {row['chunks']:,} | {fmt(row['latency_ms']['p50'])} | "
                         f"{fmt(row['latency_ms']['p95'])} | {row['disk_mib']} | {row['rss_mib']} | "
                         f"{row['build_papers_per_s']} | {row['update_64_papers_s']} s |")
        ok = [r for r in retrieval["sizes"] if r["status"] == "ok"]
        if ok:
            stages = list(ok[0]["stages_ms_p50"])
            lines += ["", "Per-stage p50 / p95 (ms, median over runs):", "",
                      "| papers | " + " | ".join(stages) + " |", "|---|" + "---|" * len(stages)]
            for row in ok:
                lines.append(f"| {row['papers']:,} | " + " | ".join(
                    f"{row['stages_ms_p50'][s]['median']} / {row['stages_ms_p95'][s]['median']}" for s in stages) + " |")
        lines += ["", retrieval["note"] + ".", ""]
        for row in ok:
            if row.get("profile_top"):
                lines += [(f"Profile at {row['papers']:,} papers (pyinstrument, one pass over the questions; "
                          f"full text in {row['profile']}):"), "", "```", *row["profile_top"], "```", ""]
        if results.get("plot"):
            lines += [f"![growth curve]({results['plot']})", ""]
    answer = results.get("answer")
    if answer and answer.get("status") != "not measured":
        lines += ["## Answer latency (bundled corpus, dev questions)", "", "| step | p50 ms | p95 ms |", "|---|---|---|",
                  (f"| question to sources (PaperChat.search) | {fmt(answer['sources_ms']['p50'])} | "
                  f"{fmt(answer['sources_ms']['p95'])} |"),
                  (f"| extractive answer (ask) | {fmt(answer['extractive_answer_ms']['p50'])} | "
                  f"{fmt(answer['extractive_answer_ms']['p95'])} |"), "", answer["note"] + ".", ""]
    llm = results.get("llm")
    if llm:
        lines += ["## Local LLM", ""]
        if llm.get("status") != "ok":
            lines += [f"Not measured: {llm.get('reason')}", ""]
        else:
            lines += ["| model load | TTFT | stream pieces/s |", "|---|---|---|",
                      f"| {llm['model_load_s']} s | {fmt(llm['ttft_s'], ' s')} | {fmt(llm['pieces_per_s'])} |", "",
                      llm["note"] + f"; over {len(llm['questions'])} ResNet-50 questions.", ""]
    startup = results.get("startup")
    if startup:
        lines += ["## Start-up", ""]
        lines += ([f"Not measured: {startup.get('reason')}", ""] if startup.get("status") != "ok" else
                  [f"`serve` to HTTP 200: {fmt(startup['seconds'], ' s')}. {startup['note']}.", ""])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def plot_growth(retrieval: dict, path: Path) -> bool:
    rows = [r for r in retrieval["sizes"] if r["status"] == "ok"]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["papers"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, style in (("p50", "o-"), ("p95", "s-")):
        med = [r["latency_ms"][key]["median"] for r in rows]
        low = [m - r["latency_ms"][key]["min"] for m, r in zip(med, rows)]
        high = [r["latency_ms"][key]["max"] - m for m, r in zip(med, rows)]
        left.errorbar(x, med, yerr=[low, high], fmt=style, capsize=3, label=f"{key} latency")
    for size, target in TARGETS_MS.items():
        left.axhline(target, color="grey", linestyle=":", linewidth=1)
        left.annotate(f"target {target:.0f} ms @ {size:,}", (x[0], target), fontsize=7, va="bottom")
    left.set(xscale="log", xlabel="papers (synthetic)", ylabel="Retriever.retrieve, ms", title="Retrieval latency")
    left.legend()
    right.plot(x, [r["disk_mib"] for r in rows], "o-", label="index on disk")
    right.plot(x, [r["rss_mib"] for r in rows], "s-", label="query process RSS")
    right.set(xscale="log", yscale="log", xlabel="papers (synthetic)", ylabel="MiB", title="Disk and memory")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --- entry point ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paperchat bench", description="Speed and memory benchmarks; writes "
                                     "bench.json and BENCHMARKS.md.")
    parser.add_argument("--sizes", default="1000,10000,100000,1000000", help="synthetic corpus sizes, comma-separated")
    parser.add_argument("--runs", type=int, default=5, help="repetitions of each measurement (median, min, max)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for bench.json, BENCHMARKS.md, plots")
    parser.add_argument("--skip-llm", action="store_true", help="do not load the local LLM")
    parser.add_argument("--quick", action="store_true", help="sizes 1000,10000 and 3 runs unless given; "
                        "no bf16 or length-sorted torch variants")
    parser.add_argument("--skip", default="", help=f"sections to leave out, comma-separated: {','.join(SECTIONS)}")
    parser.add_argument("--work-dir", type=Path, help="scratch folder for indexes (default: a temporary folder)")
    parser.add_argument("--build-budget-s", type=float, default=1800,
                        help="do not build a synthetic size predicted to take longer than this")
    parser.add_argument("--base-papers", type=int, default=0, help="real papers the synthetic ones derive from (0 = all)")
    parser.add_argument("--questions", type=int, default=0, help="dev questions per retrieval run (0 = all)")
    parser.add_argument("--ingest-runs", type=int, help="runs of the bundled ingest (default: --runs)")
    parser.add_argument("--embedding-runs", type=int, help="runs of each embedding variant (default: --runs)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the sections of an existing OUT/bench.json that this run skips")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    if args.child:
        kind, payload = args.child
        print(json.dumps(globals()[f"_child_{kind}"](json.loads(payload))))
        return 0
    if args.quick:
        if args.sizes == build_parser().get_default("sizes"):
            args.sizes = "1000,10000"
        if args.runs == build_parser().get_default("runs"):
            args.runs = 3
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.skip_llm:
        skip.add("llm")
    unknown = skip - set(SECTIONS)
    if unknown:
        print(f"paperchat bench: unknown section(s) {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="paperchat-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"argv": list(argv if argv is not None else sys.argv[1:]), "machine": machine_info(),
                     "runs": args.runs, "sizes": sizes, "skipped": sorted(skip)}
    if args.merge and (out / "bench.json").exists():
        previous = json.loads((out / "bench.json").read_text(encoding="utf-8"))
        for name in skip & set(previous):
            results[name] = previous[name]
        results["merged_from_previous_run"] = sorted(skip & set(previous))

    def save() -> None:
        results["targets"] = targets(results)
        (out / "bench.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
        write_markdown(results, out / "BENCHMARKS.md")

    def section(name: str, work_fn: Callable[[], dict]) -> None:
        if name in skip:
            return
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        results[name] = work_fn()
        results[name]["section_s"] = round(time.perf_counter() - started, 1)
        save()

    section("ingest", lambda: bench_ingest(work, args.ingest_runs or args.runs))
    bundled_dir = Path(results["ingest"]["index_dir"]) if "ingest" in results else work / "bundled"
    if not (bundled_dir / "paperchat-index.json").exists():
        run_child("ingest", {"index_dir": str(bundled_dir)})
    section("embedding", lambda: bench_embedding(work, args.embedding_runs or args.runs, args.quick))
    section("answer", lambda: bench_answer(bundled_dir, args.runs))
    section("llm", lambda: bench_llm(bundled_dir))
    section("startup", lambda: bench_startup(bundled_dir, min(args.runs, 3)))

    def retrieval() -> dict:
        data = bench_retrieval(work, bundled_dir, sizes, args.runs, out, args.build_budget_s, args.base_papers,
                               args.questions)
        if plot_growth(data, out / "growth.png"):
            results["plot"] = "growth.png"
        return data
    section("retrieval", retrieval)
    save()
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"[bench] wrote {out / 'bench.json'} and {out / 'BENCHMARKS.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
