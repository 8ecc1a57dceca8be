"""Follow-up questions become standalone search queries; small talk needs no search."""

from __future__ import annotations

import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from llm_server import FakeOpenAIServer, Fault
from pydantic import Field, SecretStr

from paperchat.rag.llm import make_chat_model
from paperchat.rag.rewrite import is_small_talk, make_standalone_query
from paperchat.rag.settings import LLMSettings

HISTORY = [("Which papers prune ResNet-50?", "Two papers do [1], [2].")]


class CountingFakeModel(GenericFakeChatModel):
    """GenericFakeChatModel that remembers the prompts it was sent."""

    prompts: list = Field(default_factory=list)

    def _generate(self, messages, *args, **kwargs):
        self.prompts.append(messages)
        return super()._generate(messages, *args, **kwargs)


def model_replying(*replies: str) -> CountingFakeModel:
    return CountingFakeModel(messages=iter([AIMessage(content=r) for r in replies]))


@pytest.mark.parametrize("question", [
    "Which papers prune ResNet-50?",
    "How do vision transformers scale with data?",
    "Is it possible to quantize BERT to 4 bits without retraining it?",
])
def test_self_contained_question_is_unchanged_and_no_model_is_called(question):
    model = model_replying("should not be used")
    assert make_standalone_query(question, HISTORY, model) == question
    assert model.prompts == []


@pytest.mark.parametrize("text", ["hi", "Hello!", "thanks!", "ok great", "thank you so much",
                                  "Got it, cheers"])
def test_small_talk_needs_no_search(text):
    model = model_replying("should not be used")
    assert is_small_talk(text)
    assert make_standalone_query(text, HISTORY, model) == ""
    assert model.prompts == []


def test_first_question_is_searched_as_asked_even_if_vague():
    assert make_standalone_query("what about them?", []) == "what about them?"


@pytest.mark.parametrize(("question", "expected"), [
    ("and which of those use ImageNet?", "prune ResNet-50 use ImageNet"),
    ("What about MobileNet?", "prune ResNet-50 MobileNet"),
    ("Are they recent?", "prune ResNet-50 recent"),
])
def test_follow_up_is_rewritten_without_a_model(question, expected):
    assert make_standalone_query(question, HISTORY) == expected


def test_follow_up_after_small_talk_uses_the_last_real_question():
    history = HISTORY + [("thanks!", "You're welcome.")]
    query = make_standalone_query("and which of those use ImageNet?", history)
    assert query == "prune ResNet-50 use ImageNet"


def test_chained_follow_ups_keep_the_original_topic():
    history = HISTORY + [("and which of those use ImageNet?", "One does [1].")]
    assert make_standalone_query("what about CIFAR-10?", history) == "prune ResNet-50 use ImageNet CIFAR-10"


def test_follow_up_is_rewritten_by_the_model():
    model = model_replying("ResNet-50 pruning papers evaluated on ImageNet")
    query = make_standalone_query("and which of those use ImageNet?", HISTORY, model)
    assert query == "ResNet-50 pruning papers evaluated on ImageNet"
    assert len(model.prompts) == 1
    sent = " ".join(str(m.content) for m in model.prompts[0])
    assert "Which papers prune ResNet-50?" in sent and "and which of those use ImageNet?" in sent


@pytest.mark.parametrize("bad_reply", [
    "Sure! Here is the query:\nResNet-50 pruning ImageNet",   # more than one line
    "I'm sorry, I cannot help with that request.",            # a refusal, not a query
    "Large language models for protein folding",              # a topic nobody mentioned
    "",
])
def test_bad_model_reply_falls_back_to_the_heuristic(bad_reply):
    model = model_replying(bad_reply)
    query = make_standalone_query("and which of those use ImageNet?", HISTORY, model)
    assert query == "prune ResNet-50 use ImageNet"


def test_unavailable_model_falls_back_to_the_heuristic():
    with FakeOpenAIServer(faults=[Fault("status", status=500)]) as server:
        chat = make_chat_model(LLMSettings(backend="openai", base_url=server.base_url, model="m",
                                           api_key=SecretStr("k"), max_retries=0))
        query = make_standalone_query("and which of those use ImageNet?", HISTORY, chat)
    assert query == "prune ResNet-50 use ImageNet"
    assert len(server.requests) == 1
