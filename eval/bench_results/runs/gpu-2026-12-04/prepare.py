"""Prepare .gpu/: fp16 model copy, bundled chunk texts, CPU reference vectors, tune questions."""
import json, shutil, gzip
from pathlib import Path
import numpy as np, torch
from safetensors.torch import load_file, save_file
from paperchat.rag.embeddings import make_embeddings
from paperchat.rag.settings import EmbeddingSettings
from paperchat.eval.bench.embedding import bundled_chunks
from paperchat.eval.bench.harness import questions

out = Path(".gpu"); out.mkdir(exist_ok=True)
emb = make_embeddings(EmbeddingSettings(device="cpu", precision="fp32"))
src = Path(emb.model.model_card_data and __import__("paperchat.rag.embeddings", fromlist=["x"]).resolve_model_path(emb.name))
mdir = out / "model"
if mdir.exists(): shutil.rmtree(mdir)
shutil.copytree(src, mdir, ignore=shutil.ignore_patterns("model.safetensors", "*.onnx", "onnx", "openvino", "README.md", ".git*"))
weights = load_file(str(src / "model.safetensors"))
half = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
save_file(half, str(mdir / "model.safetensors"), metadata={"format": "pt"})
papers = bundled_chunks(emb)
texts = [c.text for p, chunks in papers for c in chunks]
print("papers", len(papers), "chunks", len(texts))
qs = questions()
print("questions", len(qs))
ref32 = emb.embed_documents(texts); q32 = [emb.embed_query(q) for q in qs]
# same computation with the fp16-rounded weights, on the CPU in fp32
model = emb.model
with torch.no_grad():
    sd = model[0].auto_model.state_dict()
    for k, v in sd.items():
        if v.is_floating_point(): v.copy_(v.half().float())
ref16 = emb.embed_documents(texts); q16 = [emb.embed_query(q) for q in qs]
np.savez_compressed(out / "ref.npz", doc32=np.asarray(ref32, np.float32), q32=np.asarray(q32, np.float32),
                    doc16w=np.asarray(ref16, np.float32), q16w=np.asarray(q16, np.float32))
with gzip.open(out / "texts.json.gz", "wt") as f:
    json.dump({"papers": len(papers), "chunks": texts, "chunk_paper": [i for i, (p, ch) in enumerate(papers) for _ in ch], "questions": qs}, f)
