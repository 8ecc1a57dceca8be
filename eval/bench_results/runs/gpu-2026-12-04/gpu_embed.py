"""Embedding throughput on the GPU: the bundled corpus's chunk texts (as ingest chunks them), repeated,
through SentenceTransformer.encode as rag/embeddings.py calls it; quality against CPU float32 vectors."""
import gzip, json, os, statistics, sys, time
import numpy as np, torch
from sentence_transformers import SentenceTransformer

os.environ["HF_HUB_OFFLINE"] = "1"
out = sys.argv[1]
data = json.load(gzip.open(".gpu/texts.json.gz", "rt"))
ref = np.load(".gpu/ref.npz")
texts, qs, n_papers = data["chunks"], data["questions"], data["papers"]
chunk_paper = np.asarray(data["chunk_paper"])
DEV = os.environ.get("DEV", "cuda")
ref = dict(ref)
if DEV == "cpu":
    texts = texts[:100]; qs = qs[:5]; chunk_paper = chunk_paper[:100]
    ref = {"doc32": ref["doc32"][:100], "doc16w": ref["doc16w"][:100], "q32": ref["q32"][:5], "q16w": ref["q16w"][:5]}
print("torch", torch.__version__, (torch.cuda.get_device_name(0) if DEV == "cuda" else "cpu"), "chunks", len(texts), "papers", n_papers, flush=True)
import sentence_transformers; print("sentence-transformers", sentence_transformers.__version__, flush=True)
REPS = int(os.environ.get("REPS", 20))
sync = torch.cuda.synchronize if DEV == "cuda" else (lambda: None)
big = texts * REPS
results = {"device": (torch.cuda.get_device_name(0) if DEV == "cuda" else "cpu"), "torch": torch.__version__,
           "sentence_transformers": sentence_transformers.__version__, "chunks": len(texts), "papers": n_papers,
           "reps": REPS, "note": "weights rounded to float16 to fit the 64 MiB transfer; doc16w/q16w are CPU float32 on the same rounded weights",
           "variants": []}

def top10(d, q):
    sims = q @ d.T
    out = []
    for row in sims:
        order = np.argsort(-row)
        seen = []
        for i in order:
            p = chunk_paper[i]
            if p not in seen:
                seen.append(p)
            if len(seen) == 10: break
        out.append(set(seen))
    return out

ref_top = top10(ref["doc32"], ref["q32"])
ref16_top = top10(ref["doc16w"], ref["q16w"])
cos_w = (ref["doc32"] * ref["doc16w"]).sum(1)
results["cpu_fp16_weights_vs_fp32"] = {"cos_min": float(cos_w.min()), "cos_mean": float(cos_w.mean()),
    "top10_overlap": float(np.mean([len(a & b) / 10 for a, b in zip(ref_top, ref16_top)]))}
print("cpu weights fp16 vs fp32", results["cpu_fp16_weights_vs_fp32"], flush=True)

def run(name, dtype, batch, autocast=None):
    model = SentenceTransformer(".gpu/model", device=DEV)
    if dtype is not None:
        model = model.to(dtype)
    def enc(x):
        ctx = torch.autocast(DEV, dtype=autocast) if autocast else torch.no_grad()
        with ctx:
            return model.encode(x, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True,
                                show_progress_bar=False)
    enc(texts[:256])  # warm-up
    d = np.asarray(enc(texts), np.float32); d /= np.linalg.norm(d, axis=1, keepdims=True)
    q = np.asarray(np.stack([enc([s])[0] for s in qs]), np.float32); q /= np.linalg.norm(q, axis=1, keepdims=True)
    times = []
    for _ in range(3):
        sync(); t = time.perf_counter()
        enc(big)
        sync(); times.append(time.perf_counter() - t)
    tq = []
    for s in qs[:50]:
        sync(); t = time.perf_counter(); enc([s]); sync(); tq.append(time.perf_counter() - t)
    cos = (d * ref["doc16w"]).sum(1); cos32 = (d * ref["doc32"]).sum(1)
    top = top10(d, q)
    row = {"name": name, "batch": batch, "seconds": [round(x, 3) for x in times],
           "abstracts_per_s": round(n_papers * REPS / statistics.median(times), 1),
           "chunks_per_s": round(len(big) / statistics.median(times), 1),
           "query_ms_p50": round(1000 * statistics.median(tq), 2),
           "cos_vs_cpu_same_weights_min": round(float(cos.min()), 6), "cos_vs_cpu_same_weights_mean": round(float(cos.mean()), 6),
           "cos_vs_cpu_fp32_weights_mean": round(float(cos32.mean()), 6),
           "top10_overlap_vs_cpu_same_weights": round(float(np.mean([len(a & b) / 10 for a, b in zip(top, ref16_top)])), 4),
           "top10_overlap_vs_cpu_fp32": round(float(np.mean([len(a & b) / 10 for a, b in zip(top, ref_top)])), 4),
           "peak_gpu_mib": round((torch.cuda.max_memory_allocated() if DEV == "cuda" else 0) / 2**20)}
    print(json.dumps(row), flush=True)
    results["variants"].append(row)
    del model
    if DEV == "cuda":
        torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()

for name, dtype, batch, ac in [
    ("cuda fp32", torch.float32, 32, None), ("cuda fp32", torch.float32, 256, None),
    ("cuda fp16", torch.float16, 32, None), ("cuda fp16", torch.float16, 256, None), ("cuda fp16", torch.float16, 1024, None),
    ("cuda bf16", torch.bfloat16, 256, None), ("cuda fp32 autocast fp16", torch.float32, 256, torch.float16)]:
    try:
        run(name, dtype, batch, ac)
    except Exception as e:
        print("FAILED", name, batch, repr(e), flush=True)
        results["variants"].append({"name": name, "batch": batch, "error": repr(e)[:300]})
    json.dump(results, open(os.path.join(out, "gpu_embedding.json"), "w"), indent=1)
# the same machine's 16 CPU cores, fp32, one pass over the corpus (context for the GPU figures)
try:
    model = SentenceTransformer(".gpu/model", device="cpu")
    t = time.perf_counter(); model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    el = time.perf_counter() - t
    results["cpu_16_cores_fp32"] = {"threads": torch.get_num_threads(), "abstracts_per_s": round(n_papers / el, 1)}
    print("cpu", results["cpu_16_cores_fp32"], flush=True)
except Exception as e:
    print("cpu failed", e)
json.dump(results, open(os.path.join(out, "gpu_embedding.json"), "w"), indent=1)
print("done")
