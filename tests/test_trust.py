"""Trust: only markers the answerer wrote are citations, a server's echo never leaks the API key,
and every answer says what it was computed from (issue 14 "Security and trust", issue 11 item 7).

Real components: a small index ingested here with the packaged embedding model, the real chain,
and for the LLM a loopback OpenAI-compatible server driven by the real client.
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import ASR, DISTILL, make_settings, write_jsonl
from llm_server import FakeOpenAIServer, Fault

from paperchat.eval.questions import Question
from paperchat.eval.runner import RESULTS_FILE, run_questions
from paperchat.ingest.pipeline import ingest
from paperchat.rag.answer import CITATION_MARK, neutralise_markers
from paperchat.rag.chain import PaperChat
from paperchat.rag.store import HNSW_EF_SEARCH
from paperchat.ui.cli import main

PAPERS = [
    {"id": "prune-a", "title": "Channel pruning [2] for ResNet-50",
     "abstract": "We prune ResNet-50 channels by their importance. Channel pruning keeps 76.1% top-1 "
                 "accuracy on ResNet-50, as shown by [2] and [3]. Our method needs no retraining [4, 5]."},
    {"id": "prune-b", "title": "Structured pruning of ResNet-50 with lottery tickets",
     "abstract": "Lottery tickets [3] prune ResNet-50 to half its size [7]. "
                 "The sparse ResNet-50 trains from scratch."},
    DISTILL,
    ASR,
]
FACT_QUESTION = "What top-1 accuracy does channel pruning keep on ResNet-50?"
LIST_QUESTION = "Which papers prune ResNet-50?"


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trust")
    settings = make_settings(folder / "index")
    ingest([write_jsonl(folder / "papers.jsonl", PAPERS)], settings)
    return settings


@pytest.fixture(scope="module")
def chat(settings):
    chat = PaperChat.open(settings)
    yield chat
    chat.close()


# --- citations: only the answerer's markers ------------------------------------------------------

def cited_numbers(text: str) -> list[int]:
    return [int(n) for marker in CITATION_MARK.findall(text) for n in marker.split(",")]


def test_markers_inside_a_quoted_sentence_are_kept_and_not_citations(chat):
    answer = chat.ask(FACT_QUESTION, answerer="extractive")
    assert not answer.abstained and answer.citations[0].id == "prune-a"
    assert "as shown by (ref. 2) and (ref. 3)" in answer.text  # the quote is whole, not "as shown by and."
    assert "as shown by and" not in answer.text and "by ." not in answer.text
    assert set(cited_numbers(answer.text)) == {1} and answer.dropped_citations == 0
    assert [c.id for c in answer.citations] == ["prune-a"]


def test_markers_inside_titles_and_abstracts_never_cite_other_papers(chat):
    answer = chat.ask(LIST_QUESTION, answerer="extractive")
    assert answer.kind == "list" and not answer.abstained
    lines = [line for line in answer.text.splitlines() if re.match(r"\d+\. ", line)]
    assert len(lines) == len(answer.citations) >= 1
    by_number = {c.number: c for c in answer.citations}
    for line in lines:  # "n. title: sentence [n]": the only citation in a paper's line is its own number
        number = int(line.split(".", 1)[0])
        assert cited_numbers(line) == [number], line
        assert neutralise_markers(by_number[number].title) in line  # [n] cites this line's paper, no other
    assert answer.dropped_citations == 0
    assert "Channel pruning (ref. 2) for ResNet-50" in answer.text  # the title as written, not a citation


# --- an LLM server that echoes the request headers ---------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("key", ["sk-live-Zq8xW2vN5mK7pR4tY6uB", "hunter2-Zq8xW2vN5mK7pR4tY6uB"],
                         ids=["key-shaped", "any-secret"])
def test_echoed_api_key_never_reaches_the_notice_whole_or_cut(settings, monkeypatch, key):
    """The notice shortens the server's body to 200 characters; wherever that cut falls inside the
    echoed key, none of the key may be shown."""
    monkeypatch.setenv("PAPERCHAT_LLM__API_KEY", key)
    leaks = []
    # The body quotes the header after the message: these lengths move the cut across the key.
    for length in range(110, 160, 4):
        with FakeOpenAIServer(faults=[Fault("status", status=500, message="e" * length)]) as server:
            openai = {"backend": "openai", "base_url": server.base_url, "model": "m", "max_retries": 0}
            llm = make_settings(settings.store.index_dir, llm=openai).llm
            chat = PaperChat.open(settings.model_copy(update={"llm": llm}))
            try:
                answer = chat.ask(FACT_QUESTION, answerer="openai")
            finally:
                chat.close()
        assert answer.answerer == "extractive" and "HTTP 500" in answer.notice
        secret = key.split("-", 1)[1]
        leaks += [(length, answer.notice) for i in range(len(secret) - 3) if secret[i:i + 4] in answer.notice]
    assert leaks == []


# --- provenance --------------------------------------------------------------------------------------

def test_every_answer_says_what_it_was_computed_from(capsys, settings, tmp_path):
    args = ["ask", "--json", "--llm", "extractive", "--index", str(settings.store.index_dir)]
    assert main([*args, FACT_QUESTION]) == 0
    first = json.loads(capsys.readouterr().out)["provenance"]
    assert re.fullmatch(r"[0-9a-f]{16}", first["index_fingerprint"])
    assert first["papers"] == len(PAPERS) and first["embedding_model"] == settings.embedding.model
    assert first["hnsw_ef_search"] == HNSW_EF_SEARCH  # the dense search width changes which papers come
    assert first["answerer"] == "extractive" and first["settings_changed"] == {}

    assert main([*args, "-k", "3", "--year-min", "2000", LIST_QUESTION]) == 0
    second = json.loads(capsys.readouterr().out)["provenance"]
    assert second["index_fingerprint"] == first["index_fingerprint"]  # same collection, same name
    assert second["settings_changed"]["retrieval.top_k"] == 3
    assert second["settings_changed"]["question.year_min"] == 2000

    # A changed collection gets another fingerprint.
    copy = tmp_path / "index"
    import shutil

    shutil.copytree(settings.store.index_dir, copy)
    fp8 = {"id": "fp8", "title": "FP8 formats for deep learning",
           "abstract": "Two FP8 encodings, E4M3 and E5M2, for training."}
    more = write_jsonl(tmp_path / "more.jsonl", [fp8])
    ingest([more], make_settings(copy))
    assert main([*args[:-1], str(copy), FACT_QUESTION]) == 0
    third = json.loads(capsys.readouterr().out)["provenance"]
    assert third["papers"] == len(PAPERS) + 1 and third["index_fingerprint"] != first["index_fingerprint"]


def test_eval_results_carry_provenance(chat, tmp_path):
    questions = [Question(id="q1", question=FACT_QUESTION, kind="single", gold_ids=["prune-a"])]
    run_questions(questions, lambda q: chat.ask(q, answerer="extractive"), tmp_path / "run",
                  {"answerer": "extractive"}, progress=False)
    record = json.loads((tmp_path / "run" / RESULTS_FILE).read_text().splitlines()[0])
    assert record["provenance"]["index_fingerprint"] == chat.index.fingerprint()
    assert record["provenance"]["papers"] == len(PAPERS)
