"""Retrieval and cited answers through the real chain: real Chroma, real packaged model."""

from __future__ import annotations

import json

import pytest
from conftest import make_settings, write_jsonl

from paperchat.ingest.pipeline import ingest
from paperchat.rag.chain import EmptyQuestionError, PaperChat
from paperchat.rag.store import IndexNotFoundError
from paperchat.ui.cli import main as cli


@pytest.fixture(scope="module")
def chat(bundled_index):
    chat = PaperChat.open(bundled_index)
    yield chat
    chat.close()


@pytest.mark.parametrize("query, title_part", [
    ("NAS-Bench-201", "NAS-Bench-201: Extending the Scope"),
    ("FP8", "FP8 Formats for Deep Learning"),
    ("MEAL V2", "MEAL V2"),
])
def test_exact_terms_find_their_papers(chat, query, title_part):
    titles = [p.title for p in chat.retriever.retrieve(query).papers[:5]]
    assert any(title_part in t for t in titles), titles


def test_lexical_index_finds_what_dense_ranks_low(chat):
    """ "Robust NAS under adversarial training" names NAS-Bench-201 but the dense model misses it."""
    result = chat.retriever.retrieve("Which papers use the NAS-Bench-201 benchmark?", depth=30)
    robust = [p for p in result.papers if p.title.startswith("Robust NAS under adversarial training")]
    assert robust and robust[0].signals.lexical_rank is not None


def test_results_are_papers_each_once_with_its_best_passage(tmp_path):
    settings = make_settings(tmp_path / "index", chunking={"max_tokens": 40, "overlap_sentences": 0})
    long = " ".join(f"Part {i}: we prune filters of ResNet-50 with criterion {i}." for i in range(10))
    ingest([write_jsonl(tmp_path / "p.jsonl", [
        {"id": "long", "title": "Filter pruning in many parts", "abstract": long, "year": 2020},
        {"id": "other", "title": "Weather forecasting", "abstract": "We forecast rain with radar images.",
         "year": 2015},
    ])], settings)
    chat = PaperChat.open(settings)
    try:
        papers = chat.retriever.retrieve("pruning ResNet-50 filters").papers
        assert [p.id for p in papers].count("long") == 1
        assert "prune filters of ResNet-50" in papers[0].passage
        assert papers[0].id == "long" and papers[0].rank == 1
        filtered = chat.retriever.retrieve("pruning ResNet-50 filters", year_max=2016).papers
        assert [p.id for p in filtered] == ["other"]
        answer = chat.ask("pruning ResNet-50 filters", answerer="extractive", year_min=2016)
        assert all(p.year >= 2016 for p in answer.retrieved)
    finally:
        chat.close()


def test_every_citation_maps_to_a_retrieved_paper(chat):
    for question in ("Which papers prune ResNet-50?", "What top-1 accuracy does MEAL V2 reach on ImageNet?",
                     "Which papers study dataset distillation?"):
        answer = chat.ask(question, answerer="extractive")
        retrieved = {p.id for p in answer.retrieved}
        assert answer.citations and all(c.id in retrieved for c in answer.citations)
        for number in {int(n) for n in __import__("re").findall(r"\[(\d+)\]", answer.text)}:
            assert number in {c.number for c in answer.citations}


def test_fact_question_states_the_fact_and_cites_its_paper(chat):
    answer = chat.ask("What top-1 accuracy does MEAL V2 reach on ImageNet?", answerer="extractive")
    assert "80.67%" in answer.text
    assert answer.citations[0].title.startswith("MEAL V2")


def test_list_answer_counts_and_names_every_match(chat):
    answer = chat.ask("Which papers prune ResNet-50?", answerer="extractive")
    assert answer.kind == "list" and not answer.abstained
    assert answer.text.startswith(f"{len(answer.citations)} papers")
    for citation in answer.citations:
        assert citation.title in answer.text


def test_empty_question_is_refused(chat):
    with pytest.raises(EmptyQuestionError):
        chat.ask("   ")


def test_ask_json_prints_the_answer_schema(bundled_index, capsys):
    code = cli(["ask", "--json", "--llm", "extractive", "--index", str(bundled_index.store.index_dir),
                "Which papers prune ResNet-50?"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert {"answer", "abstained", "citations", "retrieved"} <= set(data)
    assert data["citations"] and {"id", "title"} <= set(data["citations"][0])
    assert data["retrieved"] and {"id", "title", "score"} <= set(data["retrieved"][0])
    assert {c["id"] for c in data["citations"]} <= {r["id"] for r in data["retrieved"]}


def test_ask_prints_answer_and_cited_titles(bundled_index, capsys):
    assert cli(["ask", "--llm", "extractive", "--index", str(bundled_index.store.index_dir),
                "What top-1 accuracy does MEAL V2 reach on ImageNet?"]) == 0
    out = capsys.readouterr().out
    assert "80.67%" in out and "The paper that answers it:" in out and "[1] MEAL V2" in out


def test_ask_without_index_or_question_says_what_to_do(tmp_path, capsys):
    assert cli(["ask", "--index", str(tmp_path / "none"), "hello there"]) == 1
    assert "run `paperchat ingest` first" in capsys.readouterr().err
    assert cli(["ask", "--index", str(tmp_path / "none"), "  "]) == 1
    assert "question is empty" in capsys.readouterr().err
    with pytest.raises(IndexNotFoundError):
        PaperChat.open(make_settings(tmp_path / "none"))


def test_langchain_retriever_returns_one_document_per_paper(chat):
    from paperchat.rag.retrieval import HybridRetriever

    documents = HybridRetriever(retriever=chat.retriever, k=5).invoke("FP8 formats for deep learning")
    assert 0 < len(documents) <= 5
    assert len({d.metadata["paper_id"] for d in documents}) == len(documents)
    assert documents[0].metadata["title"].startswith("FP8")
