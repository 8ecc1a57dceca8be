"""The benchmark runs end to end at a tiny size and writes its JSON and Markdown (no timing asserted)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from paperchat.eval import bench
from paperchat.eval.bench.report import targets
from paperchat.eval.bench.retrieval import extrapolate
from paperchat.eval.synthetic import synthetic_batches
from paperchat.rag.papers import Paper
from paperchat.rag.store import PaperIndex
from tests.conftest import make_settings


def test_synthetic_papers_keep_the_real_chunk_metadata_and_unit_vectors():
    base = [
        Paper("Pruning ResNet-50", "We prune ResNet-50. It keeps 76% top-1. Code is public.", year=2021),
        Paper("LoRA for vision", "Low-rank adapters tune ViTs. They save memory.", year=2023),
    ]
    vectors = [np.eye(1, 8, 0, dtype=np.float32), np.eye(1, 8, 1, dtype=np.float32)]
    batches = list(synthetic_batches(base, vectors, total=5, batch_papers=2, seed=1))
    papers = [p for b in batches for p in b.papers]
    assert [p.id for p in papers] == [f"syn-{i:07d}" for i in range(5)]
    for batch in batches:
        assert len(batch.chunks) == len(batch.vectors)
        assert np.allclose(np.linalg.norm(batch.vectors, axis=1), 1.0, atol=1e-5)
        assert {c.metadata["paper_id"] for c in batch.chunks} == {p.id for p in batch.papers}
        assert all(c.metadata["year"] in (2021, 2023) for c in batch.chunks)


def _measured(papers: int, build_s: float, p95_ms: float) -> dict:
    latency = {key: {"median": p95_ms, "min": p95_ms, "max": p95_ms, "n": 1} for key in ("p50", "p95")}
    return {
        "status": "ok",
        "papers": papers,
        "papers_requested": papers,
        "build_s": build_s,
        "build_cpu_s": build_s,
        "disk_mib": papers / 100,
        "rss_mib": 500.0,
        "latency_ms": latency,
        "load_average_query": [1.0],
    }


def test_extrapolation_follows_the_measured_growth_and_is_checked_against_a_measured_size():
    # Build time linear in papers, latency growing as the square root of papers.
    rows = [_measured(n, n / 100, 2 * n**0.5) for n in (1_000, 10_000, 100_000)]
    result = extrapolate(rows, [1_000_000])
    predicted = result["predictions"][0]
    assert predicted["fit_from"] == [10_000, 100_000]
    assert predicted["build_s"] == pytest.approx(10_000, rel=1e-3)
    assert predicted["p95_ms"] == pytest.approx(2000, rel=1e-3)
    [check] = result["checks"]
    assert check["papers"] == 100_000 and check["p95_ms"]["ratio"] == pytest.approx(1.0, abs=0.01)


def test_targets_mark_extrapolated_cells_and_never_pick_a_faster_backend_that_changes_answers():
    variant = {"load_average": [1.0]}
    results = {
        "embedding": {
            "variants": [
                {
                    **variant,
                    "variant": "default",
                    "abstracts_per_s": {"median": 20.0, "min": 20.0, "max": 20.0, "n": 1},
                    "overlap_at_10": 1.0,
                },
                {
                    **variant,
                    "variant": "int8",
                    "abstracts_per_s": {"median": 40.0, "min": 40.0, "max": 40.0, "n": 1},
                    "overlap_at_10": 0.95,
                },
                {
                    **variant,
                    "variant": "fused fp32",
                    "abstracts_per_s": {"median": 25.0, "min": 25.0, "max": 25.0, "n": 1},
                    "overlap_at_10": 0.995,
                },
            ]
        },
        "retrieval": {
            "sizes": [_measured(10_000, 30, 80.0), _measured(100_000, 300, 120.0)],
            "extrapolation": extrapolate(
                [_measured(10_000, 30, 80.0), _measured(100_000, 300, 120.0)], [1_000_000]
            ),
        },
    }
    rows = {row["target"]: row for row in targets(results)}
    same_answers = next(row for name, row in rows.items() if "same answers" in name)
    assert "fused fp32" in same_answers["target"] and same_answers["met"] is False
    at_1m = next(row for name, row in rows.items() if "1,000,000 papers" in name)
    assert at_1m["how"] == "extrapolated" and at_1m["met"] is None
    at_100k = next(row for name, row in rows.items() if "100,000 papers" in name)
    assert at_100k["how"] == "measured" and at_100k["met"] is True


@pytest.mark.slow
def test_bench_writes_json_and_markdown_at_a_tiny_size(tmp_path, bundled_index):
    out, work = tmp_path / "results", tmp_path / "work"
    code = bench.main(
        [
            "--sizes",
            "100,200",
            "--extrapolate",
            "1000",
            "--runs",
            "1",
            "--questions",
            "3",
            "--skip",
            "ingest,embedding,answer,llm,startup",
            "--base-papers",
            "40",
            "--arxiv-sizes",
            "300,600",
            "--bundled-index",
            str(bundled_index.store.index_dir),
            "--keep-indexes",
            "--work-dir",
            str(work),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    data = json.loads((out / "bench.json").read_text())
    assert {"machine", "runs", "sizes", "retrieval", "targets"} <= set(data)
    assert {"cpu", "cores", "ram_gib", "python", "torch", "load_average_at_start"} <= set(data["machine"])
    row = data["retrieval"]["sizes"][1]
    assert row["status"] == "ok" and row["papers"] == 200
    assert {"p50", "p95"} <= set(row["latency_ms"])
    assert {"embed_query", "dense", "lexical", "sources"} <= set(row["stages_ms_p50"])
    assert row["disk_mib"] > 0 and row["rss_mib"] > 0 and len(row["load_average_query"]) == 3
    assert data["retrieval"]["extrapolation"]["predictions"][0]["papers"] == 1000
    markdown = (out / "BENCHMARKS.md").read_text()
    assert "| papers | chunks | how | p50 ms | p95 ms |" in markdown
    assert "| 200 |" in markdown and "| 1,000 | | extrapolated from 100 and 200 |" in markdown
    assert (out / "growth.png").stat().st_size > 0
    # The arXiv section read both sizes in a dry run: every record a paper, none written anywhere.
    arxiv = data["arxiv"]
    read = [(r["records"], r["papers"], r["rejected"]) for r in arxiv["sizes"]]
    assert read == [(300, 300, 0), (600, 600, 0)] and not (work / "arxiv-no-index").exists()
    assert all(r["peak_rss_mib"]["median"] > 0 for r in arxiv["sizes"])
    assert "## arXiv-scale ingest (reading, dry run)" in markdown and "| 600 |" in markdown
    # The bulk-written index is one a question can be asked of: both halves agree, nothing pending.
    index = PaperIndex.open(make_settings(work / "scale-200"))
    try:
        assert index.paper_count() == 200 and index.disagreements() == {} and index.pending_papers() == []
    finally:
        index.close()
    # --reuse-indexes queries the kept indexes without building them again: the first run's build figures
    again = tmp_path / "again"
    args = ["--sizes", "100,200", "--extrapolate", "1000", "--runs", "1", "--questions", "3", "--skip",
            "ingest,embedding,answer,llm,startup,arxiv", "--base-papers", "40", "--bundled-index",
            str(bundled_index.store.index_dir), "--work-dir", str(work), "--out", str(again),
            "--reuse-indexes"]
    assert bench.main(args) == 0
    reused = json.loads((again / "bench.json").read_text())["retrieval"]["sizes"][1]
    assert reused["built_at"] == row["built_at"] and reused["build_s"] == row["build_s"]
    assert reused["status"] == "ok" and reused["papers"] == 200


def test_targets_of_a_run_without_the_default_embedding_have_no_embedding_row():
    row = {
        "variant": "openvino fp32",
        "abstracts_per_s": {"median": 9.0, "min": 9.0, "max": 9.0, "n": 1},
        "load_average": [1.0],
        "overlap_at_10": None,
    }
    assert targets({"embedding": {"variants": [row]}}) == []


def test_unknown_section_is_a_usage_error(tmp_path):
    assert bench.main(["--skip", "nonsense", "--out", str(tmp_path)]) == 2


def test_a_faster_backend_without_its_packages_names_what_to_install():
    import importlib.util

    from paperchat.rag.embeddings import EmbeddingModelError, make_embeddings
    from paperchat.rag.settings import EmbeddingSettings

    if importlib.util.find_spec("optimum") is not None:
        pytest.skip("optimum is installed here: the ONNX back-end loads")
    with pytest.raises(EmbeddingModelError, match=r"sentence-transformers\[onnx\]"):
        make_embeddings(EmbeddingSettings(backend="onnx")).model  # noqa: B018 - loading is the point


def test_the_local_model_report_gives_each_thread_count_idle_and_under_load(tmp_path):
    from paperchat.eval.bench.report import write_markdown

    def llm(busy: int, ttft: dict[str, float]) -> dict:
        return {
            "status": "ok",
            "busy_processes": busy,
            "default_threads": 2,
            "load_average": [1.0, 1.0, 1.0],
            "note": "TTFT = call to first token",
            "variants": {
                threads: {
                    "model_load_s": 5.0,
                    "ttft_s": {"median": seconds, "min": seconds, "max": seconds, "n": 1},
                    "ttft_p95_s": seconds,
                    "pieces_per_s": {"median": 6.0, "min": 6.0, "max": 6.0, "n": 1},
                }
                for threads, seconds in ttft.items()
            },
        }

    machine = {"cpu": "cpu", "cores": 2, "ram_gib": 1, "os": "os", "python": "3", "torch": "t",
               "torch_threads": 2, "sentence_transformers": "s", "chromadb": "c",
               "load_average_at_start": [1.0], "date": "today"}
    results = {"machine": machine, "argv": [], "runs": 1,
               "llm": llm(0, {"1": 31.5, "2": 23.0}), "llm_under_load": llm(2, {"1": 58.3, "2": 42.9})}
    write_markdown(results, tmp_path / "BENCHMARKS.md")
    idle, loaded = (tmp_path / "BENCHMARKS.md").read_text().split("## Local LLM under load")
    assert "## Local LLM\n" in idle and "No busy-loop processes" in idle
    assert "| 1 | 5.0 s | 31.5 s (31.5-31.5, n=1) |" in idle and "| 2 | 5.0 s | 23.0 s" in idle
    assert "2 busy-loop processes ran alongside" in loaded
    assert "| 1 | 5.0 s | 58.3 s" in loaded and "| 2 | 5.0 s | 42.9 s" in loaded


def test_the_report_shows_a_gpu_run_row_by_row_and_a_failed_variant_as_failed(tmp_path):
    from paperchat.eval.bench.report import write_markdown

    machine = {"cpu": "cpu", "cores": 2, "ram_gib": 1, "os": "os", "python": "3", "torch": "t",
               "torch_threads": 2, "sentence_transformers": "s", "chromadb": "c",
               "load_average_at_start": [1.0], "date": "today"}
    row = {"name": "cuda fp32", "batch": 32, "seconds": [11.4, 10.7, 10.9], "abstracts_per_s": 1002.1,
           "chunks_per_s": 1726.2, "query_ms_p50": 7.58, "cos_vs_cpu_same_weights_mean": 1.0,
           "cos_vs_cpu_same_weights_min": 0.999999, "top10_overlap_vs_cpu_same_weights": 1.0,
           "peak_gpu_mib": 254}
    gpu = {"device": "NVIDIA H200", "note": "one run on a lent machine",
           "variants": [row, {"name": "cuda bf16", "batch": 256, "error": "RuntimeError('no bf16')"}]}
    write_markdown({"machine": machine, "argv": [], "runs": 1, "gpu_embedding": gpu}, tmp_path / "B.md")
    text = (tmp_path / "B.md").read_text()
    assert "## Embedding step on a GPU (NVIDIA H200)" in text
    assert ("| cuda fp32 | 32 | 1002.1 (11.40, 10.70, 10.90 s per run) | 1726.2 | 7.58 | 1.0 / 0.999999 |"
            in text)
    assert "| cuda bf16 | 256 | failed: RuntimeError('no bf16') |" in text
    assert "one run on a lent machine" in text
