"""The benchmark runs end to end at a tiny size and writes its JSON and Markdown (no timing asserted)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval import bench
from eval.synthetic import synthetic_batches
from rag.papers import Paper


def test_synthetic_papers_keep_the_real_chunk_metadata_and_unit_vectors():
    base = [Paper("Pruning ResNet-50", "We prune ResNet-50. It keeps 76% top-1. Code is public.", year=2021),
            Paper("LoRA for vision", "Low-rank adapters tune ViTs. They save memory.", year=2023)]
    vectors = [np.eye(1, 8, 0, dtype=np.float32), np.eye(1, 8, 1, dtype=np.float32)]
    batches = list(synthetic_batches(base, vectors, total=5, batch_papers=2, seed=1))
    papers = [p for b in batches for p in b.papers]
    assert [p.id for p in papers] == [f"syn-{i:07d}" for i in range(5)]
    for batch in batches:
        assert len(batch.chunks) == len(batch.vectors)
        assert np.allclose(np.linalg.norm(batch.vectors, axis=1), 1.0, atol=1e-5)
        assert {c.metadata["paper_id"] for c in batch.chunks} == {p.id for p in batch.papers}
        assert all(c.metadata["year"] in (2021, 2023) for c in batch.chunks)


@pytest.mark.slow
def test_bench_writes_json_and_markdown_at_a_tiny_size(tmp_path):
    out = tmp_path / "results"
    code = bench.main(["--sizes", "200", "--runs", "1", "--skip", "ingest,embedding,answer,llm,startup",
                       "--base-papers", "40", "--questions", "3", "--work-dir", str(tmp_path / "work"),
                       "--out", str(out)])
    assert code == 0
    data = json.loads((out / "bench.json").read_text())
    assert {"machine", "runs", "sizes", "retrieval", "targets"} <= set(data)
    assert {"cpu", "cores", "ram_gib", "python", "torch"} <= set(data["machine"])
    row = data["retrieval"]["sizes"][0]
    assert row["status"] == "ok" and row["papers"] == 200
    assert {"p50", "p95"} <= set(row["latency_ms"])
    assert {"embed_query", "dense", "lexical", "total"} <= set(row["stages_ms_p50"])
    assert row["disk_mib"] > 0 and row["rss_mib"] > 0
    markdown = (out / "BENCHMARKS.md").read_text()
    assert "| papers | chunks | p50 ms | p95 ms |" in markdown
    assert "| 200 |" in markdown
    assert (out / "growth.png").stat().st_size > 0


def test_unknown_section_is_a_usage_error(tmp_path):
    assert bench.main(["--skip", "nonsense", "--out", str(tmp_path)]) == 2
