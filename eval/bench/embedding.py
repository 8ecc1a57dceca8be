"""Embedding throughput per inference back-end, with the answers each one gives.

Every variant embeds the bundled corpus's chunk texts (chunked exactly as ingest does); its
quality is the top-10 paper overlap of `Retriever.retrieve` against the model in float32 (torch, batch
32) over the tune questions, each variant embedding its own queries. The default ingest path is
float32 or, on a CPU with AMX, bfloat16 (`embedding.precision = "auto"`): its row says which.
ONNX Runtime and OpenVINO run the model's transformer exported to ONNX by torch
(sentence-transformers' own `backend="onnx"` / `"openvino"` needs `optimum`, which is not installed by
default: that row says so when it cannot load).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from paperchat.eval.bench.harness import (
    PrecomputedEmbeddings,
    load_average,
    questions,
    repeat,
    settings_for,
    spread,
)


def bundled_chunks(embeddings, overlap_sentences: int | None = None):
    """The bundled papers and their chunks, chunked exactly as ingest does (optionally another overlap)."""
    from paperchat.ingest.sources import bundled_corpus_dir, read_papers
    from paperchat.rag.chunking import chunk_paper
    from paperchat.rag.settings import ChunkSettings

    chunking = ChunkSettings()
    overlap = chunking.overlap_sentences if overlap_sentences is None else overlap_sentences
    window = min(chunking.max_tokens, embeddings.max_seq_tokens - 2)
    papers = read_papers([bundled_corpus_dir()]).papers
    return [(p, chunk_paper(p, window, embeddings.count_tokens, overlap)) for p in papers]


# --- runtimes over an exported ONNX graph -----------------------------------------------------------
def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    mask = mask[..., None].astype(np.float32)
    pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def _sorted_batches(texts: list[str], batch_size: int):
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def _array_encoder(run_batch, tokenizer, max_len: int, batch_size: int = 32):
    """encode(texts) for a runtime that maps (ids, mask, type ids) to the last hidden state."""

    def encode(texts: list[str]) -> np.ndarray:
        out = None
        for idx in _sorted_batches(texts, batch_size):
            enc = tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_len,
                return_tensors="np",
            )
            pooled = _mean_pool(
                run_batch(
                    enc["input_ids"].astype(np.int64),
                    enc["attention_mask"].astype(np.int64),
                    enc["token_type_ids"].astype(np.int64),
                ),
                enc["attention_mask"],
            )
            if out is None:
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
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    sample = model.tokenizer(
        ["a sample sentence", "another one, longer than the first"], padding=True, return_tensors="pt"
    )
    axes = {0: "batch", 1: "tokens"}
    with torch.no_grad():
        torch.onnx.export(
            Hidden(transformer).eval(),
            (sample["input_ids"], sample["attention_mask"], sample["token_type_ids"]),
            str(path),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={
                "input_ids": axes,
                "attention_mask": axes,
                "token_type_ids": axes,
                "last_hidden_state": axes,
            },
        )
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


def _not_available(name: str, error: BaseException) -> str:
    return f"{name}: not available ({type(error).__name__}: {error})"[:200]


def sentence_transformers_backend(backend: str):
    """encode(texts) through `SentenceTransformer(..., backend=backend)`, the path ingest would take."""
    from paperchat.rag.embeddings import make_embeddings
    from paperchat.rag.settings import EmbeddingSettings

    embeddings = make_embeddings(EmbeddingSettings(backend=backend))
    embeddings.model  # noqa: B018 - load now, so a missing runtime is reported here
    return lambda texts: np.asarray(embeddings.embed_documents(texts), dtype=np.float32)


def embedding_variants(model, work: Path, quick: bool) -> dict[str, Callable | None]:
    """name -> encode(texts) for each inference variant; None where it cannot run here (name says why)."""
    import torch

    threads = os.cpu_count() or 1
    max_len = int(model.max_seq_length)
    variants: dict[str, Callable | None] = {}

    def torch_sorted(batch_size):
        return lambda texts: model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    variants["torch fp32, whole corpus length-sorted, batch 32"] = torch_sorted(32)
    if not quick:
        variants["torch fp32, whole corpus length-sorted, batch 64"] = torch_sorted(64)

        def torch_bf16(texts):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model.encode(
                    texts,
                    batch_size=64,
                    normalize_embeddings=False,
                    convert_to_tensor=True,
                    show_progress_bar=False,
                )
            out = out.float().cpu().numpy()
            return out / np.linalg.norm(out, axis=1, keepdims=True)

        variants["torch bf16 autocast, batch 64"] = torch_bf16
    for backend in ("onnx", "openvino"):
        try:
            variants[f"sentence-transformers backend={backend!r}"] = sentence_transformers_backend(backend)
        except Exception as error:  # noqa: BLE001 - optional runtimes: report, carry on
            variants[_not_available(f"sentence-transformers backend={backend!r}", error)] = None
    try:
        fp32 = export_onnx(model, work / "onnx")
        variants["onnxruntime fp32 (torch-exported ONNX)"] = onnxruntime_encoder(
            fp32, model.tokenizer, max_len, threads
        )
        int8 = quantize_onnx(fp32)
        variants["onnxruntime int8 (dynamic, per-channel)"] = onnxruntime_encoder(
            int8, model.tokenizer, max_len, threads
        )
    except Exception as error:  # noqa: BLE001
        variants[_not_available("onnxruntime", error)] = None
        return variants
    try:
        variants["openvino fp32 (torch-exported ONNX)"] = openvino_encoder(
            fp32, model.tokenizer, max_len, threads, "f32"
        )
        if not quick:
            variants["openvino int8 (from int8 ONNX)"] = openvino_encoder(
                int8, model.tokenizer, max_len, threads
            )
    except Exception as error:  # noqa: BLE001
        variants[_not_available("openvino", error)] = None
    return variants


def retrieved_ids(index_dir: Path, papers, chunks, vectors, encode, texts: list[str]) -> list[list[str]]:
    """Top-10 paper ids per question from an index holding these vectors, queries embedded by `encode`."""
    from paperchat.rag.retrieval import Retriever
    from paperchat.rag.store import PaperIndex

    # A fresh folder each time: chromadb caches its client per path, so a reused path would point at
    # a deleted database.
    settings = settings_for(index_dir)
    index = PaperIndex.open(settings, PrecomputedEmbeddings(encode), create=True)
    try:
        index.write_bulk(papers, chunks, np.asarray(vectors, dtype=np.float32))
        retriever = Retriever(index, settings.retrieval)
        return [[p.id for p in retriever.retrieve(q).papers[:10]] for q in texts]
    finally:
        index.close()
        shutil.rmtree(index_dir, ignore_errors=True)


def overlap_at_10(ids: list[list[str]], reference: list[list[str]]) -> float:
    """Mean share of the reference top-10 found in the other top-10.

    >>> overlap_at_10([["a", "b"], ["c"]], [["a", "x"], ["c"]])
    0.75
    """
    return round(float(np.mean([len(set(a) & set(b)) / max(1, len(b)) for a, b in zip(ids, reference)])), 4)


DEFAULT_VARIANT = "default ingest path, batch 32"
# The model's own arithmetic: what "same answers" is measured against (and the default where no AMX).
FP32_VARIANT = "torch fp32, batch 32 (embedding.precision = fp32)"


def _reference(rows: list[dict]) -> dict | None:
    """The float32 row when measured, else the default's; only a row whose answers are known."""
    for name in (FP32_VARIANT, DEFAULT_VARIANT):
        row = next((r for r in rows if r["variant"] == name and r.get("top10_ids")), None)
        if row:
            return row
    return None


def bench_embedding(
    work: Path, runs: int, quick: bool, only: tuple[str, ...] = (), save: Callable[[dict], None] | None = None
) -> dict:
    """Embedding of the bundled chunks alone, per variant, with its answers against the default.

    `only` keeps the variants whose name contains one of its strings ("default" names the default);
    several processes can each measure some variants and `merge_embedding` joins them. `save` is
    called with the partial result after each variant, so an interrupted run keeps what it measured.
    """
    from paperchat.rag.embeddings import make_embeddings
    from paperchat.rag.settings import EmbeddingSettings

    embeddings = make_embeddings(EmbeddingSettings())
    fp32 = make_embeddings(EmbeddingSettings(precision="fp32"))
    chunked = bundled_chunks(embeddings)
    papers = [p for p, _ in chunked]
    chunks = [c for _, cs in chunked for c in cs]
    texts = [c.text for c in chunks]
    asked = questions()
    variants: dict[str, Callable | None] = {
        DEFAULT_VARIANT: lambda batch: np.asarray(embeddings.embed_documents(batch), dtype=np.float32),
        FP32_VARIANT: lambda batch: np.asarray(fp32.embed_documents(batch), dtype=np.float32),
    }
    variants.update(embedding_variants(embeddings.model, work, quick))
    if only:
        variants = {
            name: encode
            for name, encode in variants.items()
            if any(part in name for part in only) or ("default" in only and name == DEFAULT_VARIANT)
        }
    default_query = lambda batch: np.asarray([embeddings.embed_query(t) for t in batch], dtype=np.float32)
    vector_dir = work / "embedding-vectors"
    vector_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "texts": len(texts),
        "abstracts": len(papers),
        "questions": len(asked),
        "variants": [],
        "torch_threads": __import__("torch").get_num_threads(),
        "default_precision": "bf16" if embeddings.bfloat16 else "fp32",
        "note": "embedding step alone, model loaded, warm; abstracts per CPU-second = abstracts / CPU "
        "time of all the process's threads (what a loaded machine distorts least); answers vs the model "
        "in float32, torch, batch 32 (overlap@10 of Retriever.retrieve top-10 paper ids over the tune set's "
        "stand-alone questions, queries embedded by the same variant)",
    }
    rows = result["variants"]
    for name, encode in variants.items():
        if encode is None:
            rows.append({"variant": name, "status": "not measured"})
            continue
        print(f"[bench]   embedding: {name}", flush=True, file=sys.stderr)
        encode(texts[:64])  # warm-up: lazy init, kernels
        seconds, cpu_seconds, vectors = repeat(
            lambda encode=encode: np.asarray(encode(texts), dtype=np.float32), runs
        )
        row = {
            "variant": name,
            "precision": result["default_precision"] if name == DEFAULT_VARIANT else None,
            "seconds": spread(seconds),
            "cpu_seconds": spread(cpu_seconds),
            "abstracts_per_cpu_s": spread([len(papers) / s for s in cpu_seconds], 2),
            "texts_per_s": spread([len(texts) / s for s in seconds], 1),
            "abstracts_per_s": spread([len(papers) / s for s in seconds], 1),
            "load_average": load_average(),
            "vectors_file": str(vector_dir / f"{os.getpid()}-{len(rows)}.npy"),
        }
        np.save(row["vectors_file"], vectors)
        query_encode = default_query if name in (DEFAULT_VARIANT, FP32_VARIANT) else encode
        try:
            row["top10_ids"] = retrieved_ids(
                work / f"variant-index-{len(rows)}-{os.getpid()}",
                papers,
                chunks,
                vectors,
                query_encode,
                asked,
            )
        except Exception as error:  # noqa: BLE001 - retrieval is another module's: keep the speed figures
            row["quality_error"] = f"{type(error).__name__}: {error}"[:300]
        rows.append(row)
        compare_to_fp32(rows)
        if save:
            save(result)
    reference = next((r for r in rows if r["variant"] == DEFAULT_VARIANT and r.get("top10_ids")), None)
    if reference:
        result["chunk_overlap"] = chunk_overlap_effect(embeddings, reference["top10_ids"], asked, work)
    return result


def compare_to_fp32(rows: list[dict]) -> None:
    """Cosine to the float32 vectors and top-10 overlap with their answers, for every measured row."""
    reference = _reference(rows)
    if reference is None:
        return
    base = np.load(reference["vectors_file"])
    for row in rows:
        if "vectors_file" not in row:
            continue
        cosine = (np.load(row["vectors_file"]) * base).sum(axis=1)
        row["cosine_to_fp32"] = {"mean": round(float(cosine.mean()), 5), "min": round(float(cosine.min()), 5)}
        ids = row.get("top10_ids")
        row["overlap_at_10"] = overlap_at_10(ids, reference["top10_ids"]) if ids else None
        row["identical_top10_questions"] = (
            sum(a == b for a, b in zip(ids, reference["top10_ids"])) if ids else None
        )


def merge_embedding(parts: list[dict]) -> dict:
    """One embedding section from runs that each measured some variants (default first)."""
    merged = {**parts[0], "variants": [row for part in parts for row in part["variants"]]}
    merged["variants"].sort(key=lambda row: (row["variant"] != DEFAULT_VARIANT,
                                             row["variant"] != FP32_VARIANT))
    for part in parts:
        if "chunk_overlap" in part:
            merged["chunk_overlap"] = part["chunk_overlap"]
    compare_to_fp32(merged["variants"])
    return merged


def chunk_overlap_effect(embeddings, reference_ids, asked: list[str], work: Path) -> list[dict]:
    """Chunks per abstract for 0 and 1 overlapping sentences, and the answers without overlap."""
    rows = []
    for overlap in (1, 0):
        chunked = bundled_chunks(embeddings, overlap)
        papers = [p for p, _ in chunked]
        chunks = [c for _, cs in chunked for c in cs]
        tokens = sum(embeddings.count_tokens(c.text) for c in chunks)
        row = {
            "overlap_sentences": overlap,
            "abstracts": len(papers),
            "chunks": len(chunks),
            "chunks_per_abstract": round(len(chunks) / len(papers), 3),
            "multi_chunk_abstracts": sum(len(cs) > 1 for _, cs in chunked),
            "tokens": tokens,
        }
        if overlap == 0 and reference_ids is not None:
            texts = [c.text for c in chunks]
            seconds, _, vectors = repeat(
                lambda texts=texts: np.asarray(embeddings.embed_documents(texts), dtype=np.float32), 1
            )
            row["embed_s"] = round(seconds[0], 1)
            query = lambda batch: np.asarray([embeddings.embed_query(t) for t in batch], dtype=np.float32)
            ids = retrieved_ids(work / f"overlap-index-{os.getpid()}", papers, chunks, vectors, query, asked)
            row["overlap_at_10_vs_default"] = overlap_at_10(ids, reference_ids)
            row["load_average"] = load_average()
        rows.append(row)
    return rows
