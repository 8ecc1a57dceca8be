"""PaperIndex's own methods: what retrieval, the UI, ingest and the benchmark read and write through it."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from chromadb.api.shared_system_client import SharedSystemClient

from paperchat.rag.chunking import chunk_paper
from paperchat.rag.embeddings import make_embeddings
from paperchat.rag.lexical import LexicalIndex
from paperchat.rag.papers import Paper
from paperchat.rag.store import PaperIndex
from tests.conftest import SMALL_CORPUS, make_settings


def corpus() -> list[dict]:
    return [json.loads(line) for line in SMALL_CORPUS.read_text(encoding="utf-8").splitlines()]


def mentioning(pattern: str) -> set[str]:
    """Ids of the fixture papers whose title or abstract matches `pattern` (a regex, any case)."""
    return {p["id"] for p in corpus() if re.search(pattern, p["title"] + " " + p["abstract"], re.IGNORECASE)}


@pytest.fixture(scope="module")
def index(small_index):
    opened = PaperIndex.open(small_index, make_embeddings(small_index.embedding))
    yield opened
    opened.close()


def test_records_titles_and_years_are_those_ingested(index):
    papers = corpus()
    assert index.paper_count() == len(papers)
    assert index.titles() == {p["id"]: p["title"] for p in papers}
    assert sorted(index.years()) == sorted(p["year"] for p in papers if p["year"])
    first = papers[0]
    assert index.papers([first["id"], "no-such-paper"])[first["id"]].abstract == first["abstract"]


def test_document_frequency_counts_papers_not_chunks(index):
    # a paper with several chunks that all carry the term in their title still counts once
    assert index.document_frequency('"fp8"') == len(mentioning(r"\bfp8\b"))
    assert index.document_frequency('"resnet 50"') == len(mentioning(r"\bresnet[-\s]50\b"))
    either = mentioning(r"\bfp8\b") | mentioning(r"\bdistil")
    assert index.document_frequency('"fp8" OR "distillation" OR "distilled" OR "distill"') == len(either)
    assert index.document_frequency('"nonexistentterm"') == 0


def test_lexical_search_finds_the_papers_with_the_rare_terms_despite_common_words(index):
    # "neural", "network", "models" are in most chunks of this corpus: the hits come from the rare terms,
    # the same chunks in the same order as for the question without those words
    hits = index.lexical_search("Which deep neural network papers prune ResNet-50 models?", limit=5)
    assert hits and {paper_id for _, paper_id, _ in hits} <= mentioning(r"\bprun|\bresnet")
    without = index.lexical_search("Which deep papers prune ResNet-50?", limit=5)
    assert [chunk_id for chunk_id, _, _ in hits] == [chunk_id for chunk_id, _, _ in without]
    scores = [score for _, _, score in hits]
    assert scores == sorted(scores, reverse=True)
    assert index.lexical_search("which papers?", limit=5) == []


@pytest.mark.parametrize("limit", [3, 10, 150])
@pytest.mark.parametrize("years", [(None, None, True), (2020, 2022, True), (2019, None, False)])
def test_lexical_search_ranks_and_scores_as_fts5_bm25(index, limit, years):
    """The BM25 computed from the terms' occurrences gives FTS5's own scores and rows, filters included."""
    lexical = index.lexical
    year_min, year_max, include_undated = years
    questions = ["Which papers train deep neural network models with FP8 or 8-bit floating point formats?",
                 "Any papers on knowledge distillation of large language models into small student models?",
                 "What accuracy does a model reach on ImageNet with the proposed training method?",
                 "Which papers prune ResNet-50 networks?",
                 "Which papers report state-of-the-art results with vision transformers?"]
    for question in questions:
        match = " OR ".join(f'"{term}"' for term in lexical.discriminating_terms(question, limit))
        # phrases are scored too: from their words' places, or by FTS5 where a word is not searched
        assert '"resnet 50"' in match or "ResNet" not in question
        assert '"state of the art"' in match or "state-of" not in question
        undated = " OR year IS NULL" if include_undated else ""
        whole = lexical.db.execute(
            "SELECT c.id, c.paper_id, -bm25(chunks_fts, 2.0, 1.0) AS score FROM chunks_fts JOIN chunks AS c "
            "ON c.rowid = chunks_fts.rowid WHERE chunks_fts MATCH ? AND c.paper_id IN "
            f"(SELECT id FROM papers WHERE year BETWEEN ? AND ?{undated}) ORDER BY score DESC LIMIT ?",
            (match, year_min or -10**6, year_max or 10**6, limit)).fetchall()
        found = lexical.search(question, limit, year_min, year_max, include_undated=include_undated)
        assert whole
        assert [score for *_, score in found] == pytest.approx([score for *_, score in whole], abs=1e-12)
        last = whole[-1][2]  # rows tied with the last may be any of them
        above = [{row[:2] for row in rows if row[2] > last + 1e-9} for rows in (found, whole)]
        assert above[0] == above[1]


@pytest.mark.parametrize("cache_bytes", [256 * 2**20, 1])
def test_lexical_search_sees_papers_written_after_a_search(tmp_path, cache_bytes, monkeypatch):
    """Terms' score parts are kept between questions, but never past a change to the index."""
    monkeypatch.setattr("paperchat.rag.lexical.PARTS_CACHE_BYTES", cache_bytes)
    lexical = LexicalIndex(tmp_path / "lexical.sqlite")
    words = lambda p: len(p.split())
    first = [Paper(f"Pruning study {n}", f"We prune network {n} by magnitude pruning.", id=f"p{n}")
             for n in range(20)] + [Paper(f"Vision study {n}", f"We train network {n} on images.", id=f"v{n}")
                                    for n in range(30)]
    lexical.write_papers(first, [c for p in first for c in chunk_paper(p, 256, words)])
    question = "lottery tickets in magnitude pruning"
    before = lexical.search(question, 5)
    assert before and {paper for _, paper, _ in before} <= {f"p{n}" for n in range(20)}
    new = Paper("Lottery tickets", "Winning lottery tickets survive magnitude pruning.", id="new")
    lexical.write_papers([new], chunk_paper(new, 256, words))
    after = lexical.search(question, 5)
    assert after[0][1] == "new"
    expected = lexical.db.execute(
        "SELECT chunk_id, paper_id, -bm25(chunks_fts, 2.0, 1.0) AS score FROM chunks_fts WHERE chunks_fts "
        "MATCH ? ORDER BY score DESC LIMIT 5", (" OR ".join(f'"{t}"' for t in lexical.discriminating_terms(
            question, 5)),)).fetchall()
    assert [score for *_, score in after] == pytest.approx([score for *_, score in expected], abs=1e-12)
    assert after[1][2] != pytest.approx(before[0][2])  # "pruning" is in one more row: a lower IDF
    lexical.delete_papers(["new"])
    assert lexical.search(question, 5) == before
    lexical.close()


def test_vectors_of_returns_every_chunk_of_the_papers_asked_for(index):
    hits = index.lexical_search("FP8", limit=50)
    wanted = sorted({paper_id for _, paper_id, _ in hits})
    found = index.vectors_of(wanted + ["no-such-paper"])
    assert set(found.paper_ids) == set(wanted)
    assert set(found.chunk_ids) >= {chunk_id for chunk_id, _, _ in hits}
    assert found.matrix.shape == (len(found.chunk_ids), 384)
    assert index.vectors_of([]).chunk_ids == []


def test_dense_search_finds_the_exact_nearest_chunks_after_every_open(tmp_path):
    """The top 150 chunks are the true nearest ones, not an approximation that changes between launches.

    Below Chroma's sync threshold (1000 chunks) the HNSW graph is rebuilt at each open; with
    Chroma's default search width the 150 nearest of these 1200 chunks came back incomplete.
    """
    settings = make_settings(tmp_path / "index")
    rng = np.random.default_rng(7)
    papers = [Paper(f"Paper {n}", f"Abstract {n}.", id=f"p{n}") for n in range(1200)]
    chunks = [c for p in papers for c in chunk_paper(p, 256, lambda t: len(t.split()))]
    vectors = rng.normal(size=(len(chunks), 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = PaperIndex.open(settings, None, create=True)
    try:
        index.write_bulk(papers, chunks, vectors)
    finally:
        index.close()
    queries = rng.normal(size=(5, 384)).astype(np.float32)
    for _ in range(2):
        index = PaperIndex.open(settings, None)
        try:
            for query in queries:
                exact = [chunks[i].id for i in np.argsort(-(vectors @ query))[:150]]
                found = index.dense_search(query.tolist(), limit=150)
                assert [hit.chunk_id for hit in found] == exact
            assert not index.notes
            # an index built with Chroma's default search width is widened by the next ingest
            default_width = {"hnsw": {"ef_search": 100}}
            index.client.get_collection(settings.store.collection).modify(configuration=default_width)
        finally:
            index.close()
        SharedSystemClient.clear_system_cache()  # as a new process would, reload the graph with its settings
        older = PaperIndex.open(settings, None)
        assert any("approximately" in note and "paperchat ingest" in note for note in older.notes)
        older.close()
        PaperIndex.open(settings, None, create=True).close()
        SharedSystemClient.clear_system_cache()


def test_paper_counts_of_words_stay_exact_through_writes_replacements_and_deletes(tmp_path):
    """The paper-level word table behind `document_frequency` counts what the chunks hold.

    It is built by a writer's open for an index that has none (an older one), then kept in step
    with every write, replacement and delete; a stale row would change every question's IDFs.
    """
    from paperchat.rag.lexical import LexicalIndex

    rng = np.random.default_rng(3)
    vocabulary = ["pruning", "pruned", "prunes", "networks", "network", "model", "models", "distillation",
                  "distilled", "teacher", "student", "ResNet-50", "ResNet50", "quantization", "INT8",
                  "sparse", "sparsity", "transformer", "attention", "graph", "graphs", "kernel",
                  "benchmark", "accuracy"]

    def paper(n: int, version: int = 0) -> Paper:
        sentences = [" ".join(rng.choice(vocabulary, size=6)).capitalize() + "." for _ in range(5)]
        return Paper(f"Paper {n} on {rng.choice(vocabulary)}", " ".join(sentences), id=f"p{n}",
                     year=2000 + version)

    def chunks(papers):
        return [c for p in papers for c in chunk_paper(p, 14, lambda t: len(t.split()))]

    lexical = LexicalIndex(tmp_path / "lexical.sqlite")
    matches = [f'"{word.lower()}"' for word in vocabulary if "-" not in word] + [
        '"sparse" OR "graphs"', '"teacher student"', '"resnet 50" OR "resnet50"']

    def paper_counts(table_only: bool = False):
        if table_only:  # the paper-level table itself, single words only
            return {m: lexical.db.execute("SELECT count(*) FROM paper_terms WHERE paper_terms MATCH ?",
                                          (m,)).fetchone()[0] for m in matches if " " not in m.strip('"')}
        return {m: lexical.document_frequency(m) for m in matches}

    def chunk_counts(single_words_only: bool = False):
        distinct = "SELECT count(DISTINCT paper_id) FROM chunks_fts WHERE chunks_fts MATCH ?"
        return {m: lexical.db.execute(distinct, (m,)).fetchone()[0]
                for m in matches if not single_words_only or " " not in m.strip('"')}

    try:
        first = [paper(n) for n in range(20)]
        lexical.write_papers(first, chunks(first))
        assert len(chunks(first)) > 40  # several chunks per paper, sharing a title
        assert paper_counts() == chunk_counts()  # an index without the table counts from its chunks
        lexical.ensure_paper_terms()
        assert paper_counts(table_only=True) == chunk_counts(single_words_only=True)
        more = [paper(n) for n in range(20, 30)]
        lexical.write_papers(more, chunks(more))
        replaced = [paper(n, version=1) for n in range(5)]
        lexical.write_papers(replaced, chunks(replaced))
        lexical.delete_papers(["p6", "p7", "p25"])
        assert paper_counts(table_only=True) == chunk_counts(single_words_only=True)
        assert paper_counts() == chunk_counts()
    finally:
        lexical.close()


def test_bulk_write_is_searchable_and_term_statistics_follow_writes(tmp_path):
    settings = make_settings(tmp_path / "index")
    index = PaperIndex.open(settings, None, create=True)
    try:
        papers = [Paper(f"Paper {n} on quokkanetworks" if n == 3 else f"Paper {n}",
                        f"Abstract number {n}. It ends.", id=f"p{n}") for n in range(6)]
        chunks = [c for p in papers for c in chunk_paper(p, 256, lambda t: len(t.split()))]
        vectors = np.random.default_rng(0).normal(size=(len(chunks), 8)).astype(np.float32)
        assert index.document_frequency('"quokkanetworks"') == 0
        index.write_bulk(papers[:3], chunks[:3], vectors[:3])
        assert index.document_frequency('"quokkanetworks"') == 0
        index.write_bulk(papers[3:], chunks[3:], vectors[3:])
        assert index.document_frequency('"quokkanetworks"') == 1  # the cached 0 is not served after a write
        assert index.paper_count() == 6 and not index.pending_papers()
        nearest = index.dense_search(vectors[4].tolist(), limit=1)
        assert nearest[0].chunk_id == chunks[4].id
        index.delete(["p3"])
        assert index.document_frequency('"quokkanetworks"') == 0
    finally:
        index.close()


def test_bfloat16_documents_land_where_float32_ones_do():
    # embedding.precision: bf16 halves ingest time on a CPU with AMX or AVX512-BF16; the vectors must not move
    from paperchat.rag.embeddings import uses_bfloat16
    from paperchat.rag.settings import EmbeddingSettings

    texts = ["Channel pruning removes whole filters of ResNet-50 and keeps 75.8% top-1 on ImageNet.",
             "We distil a large teacher into a small student network for mobile devices.",
             "A survey of neural architecture search methods, search spaces and benchmarks."]
    assert uses_bfloat16(EmbeddingSettings(precision="bf16", device="cpu"))
    assert not uses_bfloat16(EmbeddingSettings(precision="fp32", device="cpu"))
    assert not uses_bfloat16(EmbeddingSettings(precision="bf16", backend="onnx"))
    low = np.array(make_embeddings(EmbeddingSettings(precision="bf16", device="cpu")).embed_documents(texts))
    full = np.array(make_embeddings(EmbeddingSettings(precision="fp32", device="cpu")).embed_documents(texts))
    assert low.dtype == full.dtype == np.float64 and not np.array_equal(low, full)  # bf16 really ran
    assert (low * full).sum(axis=1).min() > 0.999
