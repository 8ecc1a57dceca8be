"""From a question to an `Answer`: rewrite, retrieve, judge, answer (LLM or extractive).

`PaperChat` is what every front end uses. `stream()` yields events in order: `Sources` as soon as
retrieval has judged the papers (before any LLM token), then `Token`s as the answer is written,
then `Done` with the final `Answer`. `ask()` is the same without the streaming.

The LLM never decides which papers match or whether the collection answers at all: that comes
from retrieval (`rag.judge`), and the citations in its text are checked in code.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import get_args

from langchain_core.runnables import Runnable, RunnableLambda

from paperchat.rag.answer import Answer, Citation, QuestionKind, RetrievedPaper
from paperchat.rag.embeddings import make_embeddings
from paperchat.rag.extractive import extractive_answer
from paperchat.rag.judge import Judgement, judge, narrow, question_kind
from paperchat.rag.retrieval import Retriever
from paperchat.rag.settings import Answerer, Settings
from paperchat.rag.store import PaperIndex

ANSWERERS: tuple[Answerer, ...] = get_args(Answerer)
SMALL_TALK_REPLY = ("Hello! Ask me about the papers in this collection, for example "
                    "\"Which papers prune ResNet-50?\", and I will answer with citations.")


class EmptyQuestionError(ValueError):
    """An empty question: nothing to search for."""


@dataclass
class Sources:
    """Known before the first token: what was retrieved and what matches."""

    question: str
    search_query: str
    kind: QuestionKind
    abstained: bool
    retrieved: list[RetrievedPaper]
    matching: list[RetrievedPaper]
    timings_s: dict[str, float] = field(default_factory=dict)
    related: list[RetrievedPaper] = field(default_factory=list)  # possibly related: not counted, not cited
    narrowed_from: int | None = None  # a follow-up judged only the previous answer's papers (how many)


@dataclass
class Token:
    text: str


@dataclass
class Notice:
    text: str


@dataclass
class Done:
    answer: Answer


Event = Sources | Token | Notice | Done


class PaperChat:
    """Questions in, cited answers out, over one index.

    >>> chat = PaperChat.open(Settings.load())          # doctest: +SKIP
    >>> chat.ask("Which papers prune ResNet-50?").text  # doctest: +SKIP
    """

    def __init__(self, settings: Settings, index: PaperIndex, chat_models: dict | None = None):
        self.settings = settings
        self.index = index
        self.retriever = Retriever(index, settings.retrieval, reranker=_make_reranker(settings))
        self._chat_models: dict[str, object] = dict(chat_models or {})
        self._chat_models_lock = threading.Lock()
        self._warming: set[str] = set()  # back-ends whose warm-up request is still running

    @classmethod
    def open(cls, settings: Settings, chat_models: dict | None = None) -> PaperChat:
        """Open the index the settings name (`IndexNotFoundError` says to run ingest)."""
        index = PaperIndex.open(settings, make_embeddings(settings.embedding))
        if index.paper_count() == 0:
            index.close()
            from paperchat.rag.store import IndexNotFoundError

            raise IndexNotFoundError(f"the index at {settings.store.index_dir} is empty: "
                                     "run `paperchat ingest` first")
        return cls(settings, index, chat_models)

    def close(self) -> None:
        self.index.close()

    # --- the chat model, built on first use ------------------------------------------------------
    def chat_model(self, backend: str):
        """The chat model for `backend` (built once, whichever thread asks first).

        Raises `LLMUnavailableError`."""
        with self._chat_models_lock:
            return self._chat_model(backend)

    def warm_up_chat_model(self, backend: str) -> None:
        """Build `backend`'s chat model and, for the in-process `local` one, have it read the fixed
        instructions once (a one-token answer), so the first question starts from the prompt cache
        with the weights paged in. Hosted back-ends are only built: a request there costs money.

        Until it ends, `has_chat_model` says no (a question asked meanwhile waits for it).

        Raises `LLMUnavailableError`."""
        with self._chat_models_lock:
            self._warming.add(backend)
        try:
            model = self.chat_model(backend)
            if backend == "local":
                from paperchat.rag.generate import priming_messages

                model.invoke(priming_messages(), max_completion_tokens=1)
        finally:
            with self._chat_models_lock:
                self._warming.discard(backend)

    def has_chat_model(self, backend: str) -> bool:
        """Whether `backend`'s chat model is built and warmed up (the chat says "loading the model" until
        it is)."""
        return backend in self._chat_models and backend not in self._warming

    def _chat_model(self, backend: str):
        if backend not in self._chat_models:
            from paperchat.rag.llm import make_chat_model

            self._chat_models[backend] = make_chat_model(self.settings.llm, backend)
        return self._chat_models[backend]

    # --- answering -------------------------------------------------------------------------------
    def search(self, question: str, top_k: int | None = None, year_min: int | None = None,
               year_max: int | None = None, kind: QuestionKind | None = None,
               search_query: str | None = None, include_undated: bool | None = None,
               among: Sequence[str] | None = None) -> Sources:
        """Retrieve and judge, no answer text: what the sources panel shows.

        `among`: judge only these papers (a follow-up narrowing the previous answer's list).
        """
        started = time.perf_counter()
        query = search_query or question
        s = self.settings.retrieval
        top_k = top_k or s.top_k
        retrieval = self.retriever.retrieve(query, depth=max(s.depth, top_k), year_min=year_min,
                                            year_max=year_max, include_undated=include_undated,
                                            among=list(among) if among is not None else None)
        if among is not None:
            judgement: Judgement = narrow(retrieval.papers, s)
        else:
            judgement = judge(question if search_query is None else query, retrieval.papers, s, kind=kind)
        kept = {p.id for p in judgement.matching} | {p.id for p in judgement.related or []}
        shown = [p for p in judgement.papers if p.rank <= top_k or p.id in kept]
        timings = {f"retrieval_{k}": round(v, 4) for k, v in retrieval.timings_s.items()}
        timings["sources"] = round(time.perf_counter() - started, 4)
        return Sources(question=question, search_query=query, kind=judgement.kind,
                       abstained=judgement.abstained, retrieved=shown, matching=judgement.matching,
                       timings_s=timings, related=list(judgement.related or []),
                       narrowed_from=len(among) if among is not None else None)

    def stream(self, question: str, history: Sequence[tuple[str, str]] = (), answerer: str | None = None,
               top_k: int | None = None, year_min: int | None = None, year_max: int | None = None,
               include_undated: bool | None = None, previous_papers: Sequence[str] = ()) -> Iterator[Event]:
        """Answer `question`, yielding `Sources`, then `Token`s, then `Done`.

        `previous_papers`: the ids the previous answer listed. A follow-up that narrows them
        ("which of those use ImageNet?") is judged against those papers only: its list can only shrink.

        `include_undated` (default `retrieval.include_undated`): whether a year filter keeps papers
        without a year.
        """
        started = time.perf_counter()
        question = (question or "").strip()
        if not question:
            raise EmptyQuestionError("the question is empty: type a question about the papers")
        answerer = answerer or self.settings.llm.backend
        if answerer not in ANSWERERS:
            raise ValueError(f"unknown answerer {answerer!r}: use one of {', '.join(ANSWERERS)}")
        history = list(history)

        from paperchat.rag.rewrite import make_standalone_query

        rewriter = None
        criterion = narrowing_criterion(question) if history and previous_papers else None
        # The LLM rewrites a follow-up only once it is loaded: the papers must not wait for a model load,
        # and a follow-up that narrows the previous list needs no rewriting at all.
        if history and answerer != "extractive" and not criterion and self.has_chat_model(answerer):
            try:
                rewriter = self.chat_model(answerer)
            except Exception:  # noqa: BLE001 - without a model the heuristic rewrites
                rewriter = None
        query = make_standalone_query(question, history, rewriter)
        if not query:
            answer = Answer(question=question, search_query="", kind="single", text=SMALL_TALK_REPLY,
                            answerer="none", timings_s={"total": round(time.perf_counter() - started, 4)})
            answer.provenance = answer_provenance(self, answer, answerer, {})
            yield Sources(question, "", "single", False, [], [])
            yield Token(SMALL_TALK_REPLY)
            yield Done(answer)
            return
        kind = _follow_up_kind(question, query, history)
        if criterion:
            sources = self.search(criterion, top_k, year_min, year_max, kind="list",
                                  include_undated=include_undated, among=previous_papers)
            sources.question = question
        else:
            sources = self.search(question, top_k, year_min, year_max, kind=kind,
                                  search_query=query if query != question else None,
                                  include_undated=include_undated)
        yield sources
        judgement = Judgement(sources.kind, sources.abstained, sources.matching, 0.0, sources.related)

        answer: Answer | None = None
        notice = None
        if answerer != "extractive" and not sources.abstained:
            from paperchat.rag.generate import stream_llm_answer
            from paperchat.rag.llm import LLMUnavailableError

            llm = self.settings.llm
            try:
                model = self.chat_model(answerer)
                matching = sources.matching if sources.kind == "list" else sources.matching[:1]
                papers = _with_matching_first(sources.retrieved, sources.matching)
                for piece in stream_llm_answer(question, sources.search_query, sources.kind, papers, matching,
                                               model, context_tokens=llm.context_tokens,
                                               max_tokens=llm.max_tokens, max_papers=llm.max_papers):
                    if isinstance(piece, Answer):
                        answer = piece
                    else:
                        yield Token(piece)
            except LLMUnavailableError as error:
                notice = (f"The {answerer} LLM is unavailable ({error}); "
                          "this answer was composed from the abstracts.")
                yield Notice(notice)
        if answer is None:
            answer = extractive_answer(question, sources.search_query, judgement, sources.retrieved,
                                       notice=notice)
            yield Token(answer.text)
        if sources.narrowed_from is not None and answer.abstained:
            answer.text = (f"None of the {sources.narrowed_from} papers of the previous answer "
                           f"{_criterion_phrase(question)}.")
        elif sources.narrowed_from is not None:  # say what the count is out of
            answer.text = re.sub(r"^(\d+) (papers?) in this collection (match(?:es)?)",
                                 rf"\1 of the {sources.narrowed_from} papers of the previous answer \3",
                                 answer.text, count=1)
        answer.possibly_related = [] if answer.abstained else [
            Citation(number=n, id=p.id, title=p.title, year=p.year, passage=p.signals.evidence or p.passage)
            for n, p in enumerate(sources.related, len(sources.matching) + 1)]
        answer.timings_s = {**sources.timings_s, **answer.timings_s,
                            "total": round(time.perf_counter() - started, 4)}
        answer.provenance = answer_provenance(self, answer, answerer, {
            "top_k": top_k, "year_min": year_min, "year_max": year_max, "include_undated": include_undated})
        yield Done(answer)

    def as_runnable(self, **options) -> Runnable:
        """The chat as a LangChain `Runnable`: `invoke("question")`, or `invoke({"question": ...,
        "history": [...], "previous_papers": [...]})`, gives the `Answer`; `batch`, `stream` and `|`
        composition come with it.

        >>> runnable = chat.as_runnable(answerer="extractive")  # doctest: +SKIP
        >>> runnable.invoke("Which papers prune ResNet-50?").kind  # doctest: +SKIP
        'list'
        """
        def answer(request: str | dict) -> Answer:
            if isinstance(request, str):
                return self.ask(request, **options)
            fields = dict(request)
            return self.ask(fields.pop("question"), **{**options, **fields})

        return RunnableLambda(answer, name="paperchat")

    def ask(self, question: str, **options) -> Answer:
        """The final `Answer` of `stream()`."""
        for event in self.stream(question, **options):
            if isinstance(event, Done):
                return event.answer
        raise RuntimeError("the answer stream ended without an answer")


def _with_matching_first(retrieved: list[RetrievedPaper],
                         matching: list[RetrievedPaper]) -> list[RetrievedPaper]:
    ids = {p.id for p in matching}
    return list(matching) + [p for p in retrieved if p.id not in ids]


_LEAD = re.compile(r"^\s*(?:(?:and|but|so|now|ok|okay|then)\b[\s,]*)*", re.IGNORECASE)
_OF_THOSE = re.compile(
    r"^(?:which|what|any|did any|do any|does any|are any|is any|were any|how many)\s+"
    r"(?:ones?\s+)?(?:of|among)\s+"
    r"(?:those|these|them|the above|the papers above)\b(.*)", re.IGNORECASE)
_ONLY = re.compile(r"^(?:only|just)\s+(?:the\s+)?(.*?)\b(?:ones|papers|those)\b(.*)", re.IGNORECASE)
_WHICH_ONES = re.compile(r"^(?:which|what)\s+ones?\b(.*)", re.IGNORECASE)
_FILLER = re.compile(r"^(?:\s|,|papers\b|works\b|ones\b|methods\b)+|(?:[\s,]*\bplease\b)?[\s?.!,]*$",
                     re.IGNORECASE)


def narrowing_criterion(question: str) -> str | None:
    """What a follow-up that narrows the previous list asks of its papers, or None if it does not narrow.

    >>> narrowing_criterion("Which of those use ImageNet?")
    'use ImageNet'
    >>> narrowing_criterion("And which of them are surveys?")
    'are surveys'
    >>> narrowing_criterion("Only the medical imaging ones?")
    'medical imaging'
    >>> narrowing_criterion("Only the ones about ImageNet, please.")
    'about ImageNet'
    >>> narrowing_criterion("Did any of those papers turn out to be a survey?")
    'turn out to be a survey'
    >>> narrowing_criterion("Which papers prune BERT?") is None
    True
    """
    text = _LEAD.sub("", question).strip()
    for pattern in (_OF_THOSE, _ONLY, _WHICH_ONES):
        match = pattern.match(text)
        if match:
            rest = _FILLER.sub("", " ".join(part.strip() for part in match.groups() if part.strip()))
            return rest or None
    return None


def _criterion_phrase(question: str) -> str:
    """ "Which of those use ImageNet?" -> 'matches "use ImageNet"'."""
    return f"matches \"{narrowing_criterion(question) or question.strip()}\""


def _follow_up_kind(question: str, query: str, history: list[tuple[str, str]]) -> QuestionKind | None:
    """A follow-up like "and which of those use ImageNet?" keeps the list kind of the question before."""
    if question_kind(question) == "list":
        return "list"
    if query != question and history and question_kind(history[-1][0]) == "list" \
            and re.search(r"\b(which|those|these|them|they)\b", question, re.IGNORECASE):
        return "list"
    return None


def _make_reranker(settings: Settings):
    path = settings.retrieval.reranker_path
    if path is None:
        return None
    from paperchat.rag.rerank import CrossEncoderReranker

    return CrossEncoderReranker(path)


def answer_provenance(chat: PaperChat, answer: Answer, requested: str, overrides: dict) -> dict:
    """What an answer was computed from, so that it can be reproduced or compared later.

    The index (fingerprint of its papers' content, paper count, embedding model), the answerer that
    wrote the text (and the one asked for, when it fell back), its model and model file, and every
    setting that differs from its default, per-question options included. Secrets are never listed.
    """
    from importlib.metadata import PackageNotFoundError, version

    settings = chat.settings
    try:
        package = version("paperchat")
    except PackageNotFoundError:
        package = None
    provenance = {"paperchat": package, "index_fingerprint": chat.index.fingerprint(),
                  "papers": chat.index.paper_count(), "embedding_model": settings.embedding.model,
                  "hnsw_ef_search": chat.index.search_width(),
                  "answerer": answer.answerer, "answerer_requested": requested}
    if answer.answerer.startswith("llm:"):
        provenance["model"] = _model_provenance(settings, requested)
    changed = {}
    # LLM settings change only what an LLM wrote; the answerer itself is named above.
    for section in ("chunking", "retrieval", "llm") if "model" in provenance else ("chunking", "retrieval"):
        current = getattr(settings, section)
        defaults = type(current)().model_dump(mode="json")
        for key, value in current.model_dump(mode="json").items():
            if key not in ("api_key", "backend") and value != defaults.get(key):
                changed[f"{section}.{key}"] = value
    # the question's options that differ from the settings
    changed.update({f"question.{key}": value for key, value in overrides.items()
                    if value is not None and value != getattr(settings.retrieval, key, None)})
    provenance["settings_changed"] = changed
    return provenance


def _model_provenance(settings: Settings, backend: str) -> dict:
    llm = settings.llm
    if backend != "local":
        return {"backend": backend, "model": llm.model, "base_url": llm.base_url}
    if llm.model_path is None:
        from paperchat.rag.local_model import DEFAULT_MODEL_FILENAME, DEFAULT_MODEL_SHA256

        return {"backend": "local", "file": DEFAULT_MODEL_FILENAME, "sha256": DEFAULT_MODEL_SHA256}
    path = llm.model_path
    size = path.stat().st_size if path.is_file() else None  # hashing a GB per answer would cost seconds
    return {"backend": "local", "file": path.name, "size_bytes": size}
