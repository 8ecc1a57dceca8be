"""The chat page's behaviour, through `ui.app.respond` on real indexes, and the served app under load."""

from __future__ import annotations

import csv
import io
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import make_settings

from rag.chain import PaperChat
from ui.app import (
    CHAT_CONCURRENCY,
    as_text,
    build_app,
    header_html,
    launch_options,
    new_chat,
    respond,
    serve,
)

XSS_PAPERS = Path(__file__).parent / "fixtures" / "ui" / "xss_papers.jsonl"
XSS_TITLE = "<img src=x onerror=alert(1)>"
XSS_ABSTRACT_PAYLOAD = "<script>alert(1)</script>"
PRUNE = "Which papers prune ResNet-50?"
OFF_TOPIC = "Which papers train deep reinforcement learning agents to play Atari games?"


@pytest.fixture(scope="module")
def chat(bundled_index):
    chat = PaperChat.open(bundled_index)
    yield chat
    chat.close()


@pytest.fixture(scope="module")
def xss_chat(tmp_path_factory):
    """Five papers, two of them about pruning ResNet-50 with markup in the title or abstract."""
    from ingest.pipeline import ingest

    settings = make_settings(tmp_path_factory.mktemp("xss") / "index")
    ingest([XSS_PAPERS], settings)
    chat = PaperChat.open(settings)
    yield chat
    chat.close()


def ask(chat, question, conversation=None, messages=None, answerer="extractive", top_k=10, year_min=None,
        year_max=None, export_dir=None):
    """Every update `respond` yields for one question."""
    export_dir = export_dir or Path.cwd() / "exports"
    return list(respond(chat, export_dir, question, messages or [], conversation, answerer, top_k, year_min,
                        year_max))


def last_message(updates) -> str:
    return updates[-1].messages[-1]["content"]


def test_list_question_streams_sources_then_a_cited_answer_with_a_count(chat):
    updates = ask(chat, PRUNE)
    final = updates[-1]
    expected = chat.ask(PRUNE, answerer="extractive")
    assert not expected.abstained and len(expected.citations) >= 2
    message = last_message(updates)
    count = len(expected.citations)
    assert f"{count} matching papers" in message
    for citation in expected.citations:
        assert as_text(citation.title) in message
        assert f"<b>[{citation.number}]</b>" in message
    assert message.count("<details><summary>Abstract</summary>") == count
    assert final.messages[-2] == {"role": "user", "content": as_text(PRUNE)}
    assert final.textbox == ""
    # The sources are on the page before the answer text is.
    first_with_sources = next(u for u in updates if "retrieved" in u.sources_html)
    assert "matching papers" not in first_with_sources.messages[-1]["content"]
    # Few bundled papers carry a year: the chart shows only when some matching paper does.
    assert final.histogram["visible"] is any(paper.year for paper in chat.search(PRUNE).matching)


def test_sources_panel_lists_every_retrieved_paper_with_rank_score_year_and_match(chat):
    sources = chat.search(PRUNE)
    html = ask(chat, PRUNE)[-1].sources_html
    assert f"{len(sources.retrieved)} retrieved · {len(sources.matching)} matching" in html
    for paper in sources.retrieved:
        assert as_text(paper.title) in html
        assert f'<td class="num">{paper.rank}</td><td class="num">{paper.score:.3f}</td>' in html
    assert html.count("<td>✓</td>") == len(sources.matching)
    assert html.count('class="pc-out"') == len(sources.retrieved) - len(sources.matching) > 0


def test_fact_question_cites_one_paper_and_hides_the_histogram(chat):
    final = ask(chat, "What top-1 accuracy does MEAL V2 reach on ImageNet?")[-1]
    message = final.messages[-1]["content"]
    assert "MEAL V2" in message and "80." in message
    assert "<b>[1]</b>" in message and "matching paper" not in message
    assert final.histogram["visible"] is False


def test_off_topic_question_abstains_plainly_without_citations_or_exports(chat):
    final = ask(chat, OFF_TOPIC)[-1]
    message = final.messages[-1]["content"]
    assert "No paper in this collection answers" in message
    assert "Cited papers" not in message
    assert final.bibtex_file["visible"] is False and final.csv_file["visible"] is False
    assert "no paper answers the question" in final.sources_html
    assert final.histogram["visible"] is False


@pytest.mark.parametrize("question", ["", "   \n"])
def test_empty_question_gets_a_message_not_an_exception(chat, question):
    updates = ask(chat, question)
    assert len(updates) == 1
    assert "Please type a question" in last_message(updates)
    assert updates[-1].conversation.turns == []


def test_inverted_year_range_gets_a_message(chat):
    assert "year range is empty" in last_message(ask(chat, PRUNE, year_min=2024, year_max=2019))


def test_year_range_limits_the_sources(chat):
    html = ask(chat, PRUNE, year_min=2021, year_max=2021)[-1].sources_html
    years = [int(y) for y in re.findall(r'<td class="num">(\d{4})</td>', html)]
    assert years and set(years) == {2021}


def test_engine_failure_becomes_a_chat_message_and_is_logged(tmp_path, caplog):
    from ingest.pipeline import ingest

    settings = make_settings(tmp_path / "index")
    ingest([XSS_PAPERS], settings)
    broken = PaperChat.open(settings)
    broken.close()  # a closed index fails on the first query, as a damaged one would
    updates = ask(broken, PRUNE)
    assert "Sorry, something went wrong while answering" in last_message(updates)
    assert "Traceback" not in last_message(updates)
    assert any(record.exc_info for record in caplog.records if record.name == "ui.app")


def test_untrusted_markup_in_titles_and_abstracts_renders_as_text(xss_chat):
    final = ask(xss_chat, PRUNE)[-1]
    message, panel = final.messages[-1]["content"], final.sources_html
    for html in (message, panel):
        assert as_text(XSS_TITLE) in html
        assert "<img" not in html and "<script" not in html and "onerror=alert(1)" not in html
    assert as_text(XSS_ABSTRACT_PAYLOAD) in message  # in the passage and the abstract
    assert "&lt;img src=x onerror=alert&#40;1&#41;&gt;" in message
    assert "<img" not in header_html(xss_chat, xss_chat.settings)


def test_list_question_with_dated_papers_shows_the_year_histogram(xss_chat):
    histogram = ask(xss_chat, PRUNE)[-1].histogram
    assert histogram["visible"] is True and histogram["value"] is not None
    assert histogram["label"] == "Matching papers by year (2 of 2 dated)"


def test_exports_hold_the_cited_papers_as_bibtex_and_csv(chat):
    final = ask(chat, PRUNE)[-1]
    citations = chat.ask(PRUNE, answerer="extractive").citations
    bib = Path(final.bibtex_file["value"]).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(Path(final.csv_file["value"]).read_text(encoding="utf-8"))))
    assert bib.count("@misc{") == len(citations) == len(rows)
    keys = [line.split("{", 1)[1].rstrip(",") for line in bib.splitlines() if line.startswith("@misc{")]
    assert len(set(keys)) == len(keys)
    for citation, row in zip(citations, rows):
        assert citation.title.replace("&", "\\&") in bib
        assert (row["number"], row["id"], row["title"]) == (str(citation.number), citation.id, citation.title)


def test_exports_keep_markup_and_formulas_inert(xss_chat):
    final = ask(xss_chat, PRUNE)[-1]
    rows = list(csv.DictReader(io.StringIO(Path(final.csv_file["value"]).read_text(encoding="utf-8"))))
    assert XSS_TITLE in [row["title"] for row in rows]  # a download is data, kept as written
    assert "title = {Pruning ResNet-50 Filters by Importance \\& \"Taylor\" Scores}" in \
        Path(final.bibtex_file["value"]).read_text(encoding="utf-8")


def test_follow_up_uses_the_conversation_and_new_chat_forgets_it(chat):
    first = ask(chat, PRUNE)[-1]
    follow_up = "Which of those use knowledge distillation?"
    second = ask(chat, follow_up, conversation=first.conversation, messages=first.messages)[-1]
    assert [q for q, _ in second.conversation.turns] == [PRUNE, follow_up]
    assert len(second.messages) == 4
    assert "searched as" in second.sources_html and "ResNet-50" in second.sources_html
    alone = ask(chat, follow_up)[-1]
    assert "searched as" not in alone.sources_html

    messages, conversation, panel, *_ = new_chat()
    assert messages == [] and conversation.turns == [] and "Ask a question" in panel


def test_serve_without_an_index_exits_with_a_message_naming_ingest(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        serve(make_settings(tmp_path / "no-index"))
    assert isinstance(exit_info.value.code, str)  # printed to stderr, exit status 1
    assert "paperchat ingest" in exit_info.value.code and str(tmp_path / "no-index") in exit_info.value.code


def test_launch_options_need_no_outside_host_and_use_the_password_when_set(tmp_path):
    settings = make_settings(tmp_path, ui={"port": 7123})
    options = launch_options(settings)
    assert options["share"] is False and options["auth"] is None and options["server_port"] == 7123
    protected = launch_options(make_settings(tmp_path, ui={"password": "s3cret", "username": "ann"}))
    assert protected["auth"] == ("ann", "s3cret")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_twenty_concurrent_sessions_each_get_an_answer(chat, bundled_index):
    from gradio_client import Client

    settings = bundled_index.model_copy(update={"ui": bundled_index.ui.model_copy(update={"port": free_port()})})
    app = build_app(chat, settings)
    app.queue(default_concurrency_limit=CHAT_CONCURRENCY)
    app.launch(prevent_thread_lock=True, **launch_options(settings))
    questions = [PRUNE, "What top-1 accuracy does MEAL V2 reach on ImageNet?", OFF_TOPIC,
                 "Which papers use knowledge distillation?"] * 5
    try:
        def session(question: str) -> str:
            client = Client(app.local_url, verbose=False)
            messages, *_ = client.predict(question, [], "extractive", 10, None, None, api_name="/ask")
            return messages[-1]["content"][0]["text"]

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(questions)) as pool:
            answers = list(pool.map(session, questions, timeout=120))
        took_s = time.perf_counter() - started
    finally:
        app.close()
    print(f"\n20 concurrent sessions answered in {took_s:.1f} s")
    assert took_s < 120
    for question, answer in zip(questions, answers):
        if question == OFF_TOPIC:
            assert "No paper in this collection answers" in answer
        else:
            assert "Cited papers" in answer, answer[:300]
