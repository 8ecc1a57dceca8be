"""The whole chain with an LLM in it: fallback, enforced citations, list completeness, follow-ups."""

from __future__ import annotations

import socket
import threading

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from pydantic import SecretStr

from paperchat.rag.chain import Done, Notice, PaperChat, Sources, Token
from paperchat.rag.llm import make_chat_model
from paperchat.rag.settings import LLMSettings


def fake(text: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage(content=text)] * 10))


@pytest.fixture(scope="module")
def settings(bundled_index):
    return bundled_index


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_llm_falls_back_to_extractive_with_a_notice(settings):
    model = make_chat_model(LLMSettings(backend="openai", base_url=f"http://127.0.0.1:{closed_port()}/v1",
                                        model="m", api_key=SecretStr("sk-secret-abcdef123456"), max_retries=0,
                                        timeout_s=5))
    chat = PaperChat.open(settings, chat_models={"openai": model})
    try:
        events = list(chat.stream("What top-1 accuracy does MEAL V2 reach on ImageNet?", answerer="openai"))
    finally:
        chat.close()
    answer = events[-1].answer
    assert any(isinstance(e, Notice) for e in events)
    assert answer.answerer == "extractive" and "unavailable" in answer.notice
    assert "sk-secret" not in answer.notice and "80.67%" in answer.text


def test_the_local_model_counts_as_loading_until_its_warm_up_request_ends(settings):
    asked, release = threading.Event(), threading.Event()

    class SlowToPrime:  # the local model's one-token warm-up request, held open by the test
        def invoke(self, messages, **kwargs):
            asked.set()
            release.wait(30)

    chat = PaperChat.open(settings, chat_models={"local": SlowToPrime()})
    warm_up = threading.Thread(target=chat.warm_up_chat_model, args=("local",))
    try:
        warm_up.start()
        assert asked.wait(30)
        # built but still reading the instructions: the chat keeps saying "loading the model"
        assert not chat.has_chat_model("local")
    finally:
        release.set()
        warm_up.join(30)
        chat.close()
    assert chat.has_chat_model("local")


def test_llm_citations_to_unretrieved_papers_are_removed(settings):
    model = fake("MEAL V2 reaches 80.67% top-1 [1]. Also see [42].")
    chat = PaperChat.open(settings, chat_models={"openai": model})
    try:
        events = list(chat.stream("What top-1 accuracy does MEAL V2 reach on ImageNet?", answerer="openai"))
    finally:
        chat.close()
    assert isinstance(events[0], Sources) and any(isinstance(e, Token) for e in events)
    answer = events[-1].answer
    assert "[42]" not in answer.text and answer.dropped_citations == 1
    assert {c.id for c in answer.citations} <= {p.id for p in answer.retrieved}
    assert answer.citations[0].title.startswith("MEAL V2")


def test_list_answer_keeps_every_match_whatever_the_llm_writes(settings):
    chat = PaperChat.open(settings, chat_models={"openai": fake("Two of them prune ResNet-50 [1].")})
    try:
        extractive = chat.ask("Which papers prune ResNet-50?", answerer="extractive")
        answer = chat.ask("Which papers prune ResNet-50?", answerer="openai")
    finally:
        chat.close()
    assert {c.id for c in answer.citations} == {c.id for c in extractive.citations}
    assert f"{len(extractive.citations)} papers match" in answer.text


def test_follow_up_is_rewritten_and_small_talk_searches_nothing(settings):
    chat = PaperChat.open(settings)
    try:
        history = [("Which papers prune ResNet-50?", "6 papers ...")]
        sources = next(e for e in chat.stream("and which of those use ImageNet?", history=history,
                                              answerer="extractive") if isinstance(e, Sources))
        assert "ResNet-50" in sources.search_query and "ImageNet" in sources.search_query
        assert sources.kind == "list"
        events = list(chat.stream("thanks!", history=history, answerer="extractive"))
        assert isinstance(events[-1], Done) and events[-1].answer.retrieved == []
        events = chat.stream("What top-1 accuracy does MEAL V2 reach on ImageNet?", history=history,
                             answerer="extractive")
        standalone = next(e for e in events if isinstance(e, Sources))
        assert standalone.search_query == "What top-1 accuracy does MEAL V2 reach on ImageNet?"
    finally:
        chat.close()
