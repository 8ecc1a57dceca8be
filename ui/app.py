"""The chat page: a Gradio app over one `PaperChat`, and `serve()`, which opens the index and starts it.

What a person sees, in the order it arrives: the matching papers with their evidence sentence as
soon as retrieval has judged them (well under a second), then, beneath them, the LLM's summary as
it is written; while it works, a state line (searching / loading the model / writing, elapsed
seconds) and a Stop button. Beside the chat: every retrieved paper under the same numbers, marked
match / possibly related / retrieved; the answer settings (answerer, year range with undated
papers in or out); a year chart that says what share of the matches it covers; BibTeX/CSV
downloads; and feedback (thumbs-down, "you missed ...") saved as candidate eval questions.

Behaviour (`respond`, a plain generator that tests call directly) is apart from layout
(`build_app`); HTML comes from `ui.render`, downloads from `ui.export`, feedback from `ui.feedback`.
The components a step updates, and their order, are `ChatUpdate`'s fields — defined once.

    >>> from paperchat.rag.settings import Settings          # doctest: +SKIP
    >>> serve(Settings.load())                      # doctest: +SKIP
"""

from __future__ import annotations

import os

# Before gradio is imported: it reads this at import time (usage statistics, version check).
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import atexit
import importlib
import logging
import queue
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr

from paperchat.rag.answer import Answer, Citation
from paperchat.rag.chain import ANSWERERS, Done, EmptyQuestionError, Notice, PaperChat, Sources, Token
from paperchat.rag.errors import USER_ERRORS
from paperchat.rag.settings import Settings
from paperchat.ui.export import write_exports
from paperchat.ui.feedback import feedback_file, feedback_record, save_feedback
from paperchat.ui.render import (
    CSS,
    HEAD_JS,
    answer_in_numbers,
    answerer_numbers,
    as_text,
    evidence_of,
    paper_numbers,
    render_message,
    render_papers,
    render_sources,
    render_status,
    render_synthesis,
    renumber,
    summary_left_out,
    year_histogram,
)

log = logging.getLogger(__name__)

EXAMPLE_QUESTIONS = (
    "Which papers prune ResNet-50?",
    "What top-1 accuracy does MEAL V2 reach on ImageNet?",
    "Which papers use knowledge distillation?",
    "Which papers train deep reinforcement learning agents to play Atari games?",  # none here does
)
TOP_K_MAX = 50
CHAT_CONCURRENCY = 4
"""Questions answered at once. Retrieval is quick and thread-safe; a hosted LLM gains from overlap,
and a local llama.cpp model shares the CPU whatever this says."""
POLL_S = 0.25
"""How often a waiting answer checks for Stop and refreshes its elapsed seconds."""
DEFAULT_LOCAL_MODEL = "Qwen2.5-Coder-1.5B"

THEME = gr.themes.Soft(
    primary_hue="indigo",
    neutral_hue="slate",
    # System fonts: the page must not fetch anything from outside (it runs offline).
    font=["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
)


# --- per-session state and what one step shows -------------------------------------------------
@dataclass
class StopFlag:
    """Set by the Stop button; read by the answer it belongs to (each answer gets its own)."""

    requested: bool = False


@dataclass
class Conversation:
    """Per-browser-session state: the turns as the engine sees them (plain text, not the page's HTML),
    the answers that feedback can refer to, and the running answer's stop flag."""

    turns: list[tuple[str, str]] = field(default_factory=list)
    answers: dict[int, dict] = field(default_factory=dict)  # assistant message index -> what feedback saves
    listed: list[str] = field(default_factory=list)  # ids the last answer listed: a follow-up may narrow them
    stop: StopFlag = field(default_factory=StopFlag)


class ChatUpdate(NamedTuple):
    """What one step of `respond` shows: the components `build_app` updates, in this order."""

    messages: list[dict]
    conversation: Conversation
    sources_html: str
    histogram: dict
    bibtex_file: dict
    csv_file: dict
    textbox: str
    stop_button: dict


def _hidden() -> dict:
    return gr.update(value=None, visible=False)


# --- the handler ------------------------------------------------------------------------------
def parse_year(value: object) -> int | None:
    """A year box's content: empty means no bound; anything but a whole number is a `ValueError`.

    >>> parse_year(""), parse_year(" 2021 "), parse_year(2020.0), parse_year(None)
    (None, 2021, 2020, None)
    """
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"“{text}” is not a year: type a year like 2021, or leave the box empty") from None
    if not number.is_integer():
        raise ValueError(f"“{text}” is not a year: type a year like 2021, or leave the box empty")
    return int(number)


def year_range_problem(year_min: int | None, year_max: int | None) -> str | None:
    """The message for an inverted range (said before searching), or None.

    >>> year_range_problem(2024, 2019)
    'The year range is empty: “from 2024” is after “to 2019”. Swap the years or clear one of them.'
    """
    if year_min is not None and year_max is not None and year_min > year_max:
        return (
            f"The year range is empty: “from {year_min}” is after “to {year_max}”. "
            "Swap the years or clear one of them."
        )
    return None


@dataclass
class _Turn:
    """What the assistant message of one question shows so far."""

    answerer: str
    started: float = field(default_factory=time.perf_counter)
    sources: Sources | None = None
    numbers: dict[str, int] = field(default_factory=dict)
    written: str = ""
    notice: str | None = None
    answer: Answer | None = None

    def status(self, chat: PaperChat) -> str:
        elapsed = time.perf_counter() - self.started
        if self.sources is None:
            return render_status("Searching the papers…", elapsed)
        if self.written:
            return render_status(f"The {self.answerer} model is writing a summary…", elapsed)
        if not chat.has_chat_model(self.answerer):
            return render_status(
                f"Loading the {self.answerer} model (the papers below are the answer already)…", elapsed
            )
        return render_status(f"The {self.answerer} model is reading the papers…", elapsed)

    def waits_for_llm(self) -> bool:
        s = self.sources
        return (
            self.answerer != "extractive"
            and s is not None
            and bool(s.retrieved)
            and not s.abstained
            and self.notice is None
        )

    def render(self, chat: PaperChat, working: bool) -> str:
        s = self.sources
        papers = render_papers(s, self.numbers) if s is not None and s.retrieved else ""
        status = self.status(chat) if working and (s is None or self.waits_for_llm()) else ""
        synthesis = ""
        if self.answer is not None:
            if not s or not s.retrieved:  # small talk: no search, the reply is the answer
                synthesis = f"<div>{as_text(self.answer.text)}</div>"
            elif self.answer.answerer not in ("extractive", "none") and not self.answer.abstained:
                synthesis = render_synthesis(
                    f"Summary by the {self.answerer} model", answer_in_numbers(self.answer, self.numbers),
                    empty=summary_left_out(self.answerer),
                )
        elif self.written and s is not None:
            synthesis = render_synthesis(
                f"Summary by the {self.answerer} model (writing…)",
                renumber(self.written, answerer_numbers(s), self.numbers),
            )
        return render_message(papers, status, self.notice, synthesis)


def respond(
    chat: PaperChat,
    export_dir: Path,
    message: str,
    messages: list[dict] | None,
    conversation: Conversation | None,
    answerer: str,
    top_k: float | None,
    year_min: object = None,
    year_max: object = None,
    include_undated: bool = True,
) -> Iterator[ChatUpdate]:
    """Answer `message`, yielding the page's new state as the answer comes in.

    The engine runs in a worker thread, so that the state line can count seconds while a model
    loads and Stop is noticed within `POLL_S`. Never raises: an empty question on an empty page, a
    bad year or an engine failure becomes a message in the chat (a failure is logged with its
    traceback here); an empty question after the first changes nothing.
    """
    messages = list(messages or [])
    conversation = conversation or Conversation()
    question = (message or "").strip()
    if not question and messages:
        # Enter in an empty box once the chat has begun changes nothing. (Enter pressed twice on one
        # question reaches here too: the second press waits for the answer, and then finds the box empty.)
        yield ChatUpdate(messages, conversation, gr.update(), gr.update(), gr.update(), gr.update(), "",
                         gr.update())
        return
    stop = conversation.stop = StopFlag()
    messages.append({"role": "user", "content": as_text(question) if question else "(empty message)"})
    messages.append({"role": "assistant", "content": render_status("Searching the papers…")})
    turn = _Turn(answerer=answerer)
    # The chart goes out with the next update only: Gradio draws a figure to PNG each time it is sent
    # (a tenth of a second or more on a busy core), and updates come with every streamed word.
    histogram: dict = _hidden()
    # The question box is emptied by the first update only: a follow-up typed while this answer
    # streams must not be wiped by the next word (Enter then asks it once this answer ends).
    question_box: object = ""

    def update(content: str, files: tuple[str, str] | None = None, working: bool = False) -> ChatUpdate:
        nonlocal histogram, question_box
        messages[-1] = {"role": "assistant", "content": content}
        bib, table = files or (None, None)
        chart, histogram = histogram, gr.update()
        box, question_box = question_box, gr.update()
        return ChatUpdate(
            list(messages),
            conversation,
            render_sources(turn.sources, turn.numbers or None),
            chart,
            gr.update(value=bib, visible=bib is not None),
            gr.update(value=table, visible=table is not None),
            box,
            gr.update(visible=working),
        )

    if not question:
        yield update(f"Please type a question about the papers, for example “{EXAMPLE_QUESTIONS[0]}”.")
        return
    try:
        low, high = parse_year(year_min), parse_year(year_max)
    except ValueError as error:
        yield update(as_text(str(error)) + ".")
        return
    problem = year_range_problem(low, high)
    if problem:
        yield update(as_text(problem))
        return
    yield update(turn.render(chat, working=True), working=True)

    events: queue.Queue = queue.Queue()
    options = {
        "history": list(conversation.turns),
        "answerer": answerer,
        "top_k": int(top_k) if top_k else None,
        "year_min": low,
        "year_max": high,
        "include_undated": bool(include_undated),
        "previous_papers": list(conversation.listed),
    }
    threading.Thread(
        target=_produce, args=(chat, question, options, events, stop), daemon=True, name="answer"
    ).start()
    shown = ""
    try:
        while True:
            try:
                event = events.get(timeout=POLL_S)
            except queue.Empty:
                if stop.requested:
                    yield _stopped(turn, chat, update)
                    return
                content = turn.render(chat, working=True)
                if content != shown:  # the elapsed seconds moved on
                    shown = content
                    yield update(content, working=True)
                continue
            if isinstance(event, Sources):
                turn.sources, turn.numbers = event, paper_numbers(event)
                if event.kind == "list" and event.matching:
                    shown = turn.render(chat, working=True)
                    yield update(shown, working=True)  # the papers first, their chart just after
                    histogram = _histogram_update(event)
            elif isinstance(event, Notice):
                turn.notice = event.text
            elif isinstance(event, Token):
                if turn.waits_for_llm():
                    turn.written += event.text
            elif isinstance(event, Done):
                turn.answer = event.answer
                conversation.turns.append((question, event.answer.text))
                conversation.listed = [c.id for c in _listed_citations(turn)]
                yield update(turn.render(chat, working=False), _exports(chat, turn, export_dir))
                conversation.answers[len(messages) - 1] = _feedback_context(turn)
                return
            elif isinstance(event, BaseException):
                raise event
            if stop.requested:
                yield _stopped(turn, chat, update)
                return
            shown = turn.render(chat, working=True)
            yield update(shown, working=True)
    except EmptyQuestionError as error:
        yield update(as_text(str(error).capitalize() + "."))
    except USER_ERRORS as error:
        log.warning("question %r failed: %s", question, error)
        yield update(f"Sorry, I could not answer that: {as_text(error)}")
    except Exception as error:  # the page must show a message, never hang or trace back
        log.error("question %r failed", question, exc_info=error)
        yield update(
            f"Sorry, something went wrong while answering ({as_text(type(error).__name__)}: "
            f"{as_text(error)}). The details are in the server log."
        )
    finally:
        stop.requested = True  # the worker, if still running, stops at its next step


def _produce(chat: PaperChat, question: str, options: dict, events: queue.Queue, stop: StopFlag) -> None:
    """The worker: the engine's events into `events`; stops (closing the LLM stream) when asked to."""
    stream = chat.stream(question, **options)
    try:
        for event in stream:
            if stop.requested:
                break
            events.put(event)
    except BaseException as error:  # noqa: BLE001 - handed to `respond`, which shows it
        events.put(error)
    finally:
        stream.close()


def _stopped(turn: _Turn, chat: PaperChat, update) -> ChatUpdate:
    elapsed = time.perf_counter() - turn.started
    turn.notice = None
    written, turn.written = turn.written, ""  # shown once, as stopped, not also as "(writing…)"
    content = turn.render(chat, working=False)
    if written:
        content += render_synthesis(
            f"Summary by the {turn.answerer} model (stopped)",
            renumber(written, answerer_numbers(turn.sources), turn.numbers),
        )
    return update(content + f'<div class="pc-status pc-stopped">Stopped after {elapsed:.0f} s.</div>')


def _histogram_update(sources: Sources) -> dict:
    figure = year_histogram(sources.matching)
    if figure is None:
        return _hidden()
    return gr.update(value=figure, visible=True, label="Matching papers by year")


def _listed_citations(turn: _Turn) -> list[Citation]:
    """The papers the answer shows (the matches; for a fact question, the one) and any other it cites,
    numbered as shown."""
    s, answer = turn.sources, turn.answer
    if s is None or answer is None or s.abstained or not s.matching:
        return []
    ids = [p.id for p in (s.matching if s.kind == "list" else s.matching[:1])]
    ids += [c.id for c in answer.citations if c.id not in ids and c.id in turn.numbers]
    by_id = {p.id: p for p in s.retrieved + s.matching}
    citations = [
        Citation(
            number=turn.numbers[i],
            id=i,
            title=by_id[i].title,
            year=by_id[i].year,
            passage=evidence_of(by_id[i], s.search_query),
        )
        for i in ids
        if i in by_id
    ]
    return sorted(citations, key=lambda c: c.number)


def _exports(chat: PaperChat, turn: _Turn, export_dir: Path) -> tuple[str, str] | None:
    citations = _listed_citations(turn)
    if not citations:
        return None
    return write_exports(citations, chat.index.papers([c.id for c in citations]), export_dir)


def _feedback_context(turn: _Turn) -> dict:
    answer = turn.answer
    return {
        "question": answer.question,
        "answer": answer.text,
        "kind": answer.kind,
        "titles": [c.title for c in _listed_citations(turn)],
        "answerer": answer.answerer,
    }


def stop_answer(conversation: Conversation | None) -> dict:
    """The Stop button: the running answer stops at its next step and keeps what it has."""
    if conversation is not None:
        conversation.stop.requested = True
    return gr.update(visible=False)


def new_chat() -> ChatUpdate:
    """The "New chat" button: an empty conversation and panels."""
    return ChatUpdate(
        [],
        Conversation(),
        render_sources(None),
        _hidden(),
        _hidden(),
        _hidden(),
        "",
        gr.update(visible=False),
    )


def save_answer_feedback(
    settings: Settings,
    conversation: Conversation | None,
    message_index: int | None,
    verdict: str,
    note: str = "",
) -> str:
    """Save feedback on one answer (the last one when `message_index` is None); says what happened."""
    answers = (conversation.answers if conversation else {}) or {}
    if not answers:
        return "Ask a question first: feedback is saved with the answer it is about."
    context = answers.get(message_index if message_index is not None else max(answers))
    if context is None:
        return "That message is not an answer with papers; feedback was not saved."
    path = feedback_file(settings)
    record = feedback_record(
        context["question"],
        context["answer"],
        context["kind"],
        context["titles"],
        context["answerer"],
        verdict,
        note,
    )
    try:
        save_feedback(path, record)
    except OSError as error:
        log.warning("cannot save feedback to %s: %s", path, error)
        return f"Sorry, the feedback could not be saved ({as_text(error)})."
    return (
        "Thank you. Saved as a candidate test question (unconfirmed): a maintainer checks it, then "
        "`paperchat eval` can use it."
    )


# --- layout -----------------------------------------------------------------------------------
def header_html(chat: PaperChat, settings: Settings, answerer: str | None = None) -> str:
    """One line on what is being served: papers (how many undated), embedding model, the selected answerer."""
    llm = settings.llm
    answerer = answerer or llm.backend
    model = {
        "local": llm.model_path.name if llm.model_path else DEFAULT_LOCAL_MODEL,
        "openai": llm.model,
        "ollama": llm.model,
    }.get(answerer)
    total, dated = chat.index.paper_count(), len(chat.index.years())
    undated = f" ({total - dated} undated)" if total > dated else ""
    return (
        f'<div class="pc-header"><h1>paperchat</h1>{total} papers{undated} · '
        f"embeddings {as_text(settings.embedding.model)} · answerer <b>{as_text(answerer)}</b>"
        f"{f' ({as_text(model)})' if model else ''}</div>"
    )


def undated_info(chat: PaperChat) -> str:
    """What the "include undated papers" box does, with the collection's own figures."""
    total, dated = chat.index.paper_count(), len(chat.index.years())
    return (
        f"{total - dated} of the {total} papers have no year. Checked: a year filter keeps them (their "
        "year is unknown). Unchecked: only dated papers are searched, with or without a year range."
    )


def _year_box(label: str, year: int | None, example: int | None, elem_id: str) -> gr.Textbox:
    """A year bound of the answer settings; its placeholder is the collection's own first or last year."""
    return gr.Textbox(
        value=str(year or ""),
        label=label,
        max_lines=1,
        placeholder=f"e.g. {example}" if example else "",
        min_width=100,
        elem_id=elem_id,
    )


def build_app(chat: PaperChat, settings: Settings) -> gr.Blocks:
    """The page, wired to `respond`. Launch it with `launch_options(settings)` (theme, no share, ...)."""
    export_dir = Path(tempfile.mkdtemp(prefix="paperchat-export-"))
    atexit.register(shutil.rmtree, export_dir, ignore_errors=True)
    retrieval = settings.retrieval
    years = chat.index.years()
    first_year, last_year = (min(years), max(years)) if years else (None, None)

    with gr.Blocks(title="paperchat", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        conversation = gr.State(Conversation())  # deep-copied for each session
        header = gr.HTML(header_html(chat, settings))
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=300):
                chatbot = gr.Chatbot(
                    label="Chat",
                    show_label=False,
                    elem_id="pc-chat",
                    autoscroll=False,
                    height="calc(100dvh - 270px)",
                    max_height=640,
                    min_height=320,
                    sanitize_html=True,
                    allow_tags=False,
                    latex_delimiters=[],
                    feedback_options=("Like", "Dislike"),
                    buttons=["copy"],
                    placeholder="Ask about the papers in this collection. The matching papers "
                    "come first, each with its evidence; a summary follows.",
                )
                with gr.Row(elem_id="pc-ask-row"):
                    textbox = gr.Textbox(
                        label="Question",
                        show_label=False,
                        scale=6,
                        min_width=120,
                        placeholder="Ask a question and press Enter",
                        autofocus=True,
                        elem_id="pc-question",
                        submit_btn="Ask",
                    )
                    stop = gr.Button(
                        "Stop", scale=0, min_width=64, variant="stop", visible=False, elem_id="pc-stop"
                    )
                    clear = gr.Button(
                        "New chat", scale=0, min_width=90, variant="secondary", elem_id="pc-new"
                    )
                examples = gr.Dataset(
                    label="Examples",
                    components=["textbox"],
                    samples=[[q] for q in EXAMPLE_QUESTIONS],
                    type="index",
                    samples_per_page=10,
                )
                with gr.Accordion("Missed a paper, or something wrong?", open=False, elem_id="pc-feedback"):
                    note = gr.Textbox(
                        label="What did the last answer miss or get wrong?",
                        lines=2,
                        placeholder="e.g. it missed “Methods for Pruning Deep Neural Networks”",
                        elem_id="pc-feedback-note",
                    )
                    send_note = gr.Button("Send feedback", size="sm", elem_id="pc-feedback-send")
                feedback_result = gr.Markdown("", elem_id="pc-feedback-result")
            with gr.Column(scale=2, min_width=300):
                with gr.Accordion("Answer settings", open=False, elem_id="pc-settings"):
                    answerer = gr.Radio(
                        list(ANSWERERS),
                        value=settings.llm.backend,
                        label="Answerer",
                        info="extractive needs no LLM; the others fall back to it when unreachable",
                    )
                    top_k = gr.Slider(
                        1,
                        TOP_K_MAX,
                        value=min(retrieval.top_k, TOP_K_MAX),
                        step=1,
                        label="Papers to retrieve",
                    )
                    with gr.Row():
                        year_min = _year_box("From year", retrieval.year_min, first_year, "pc-year-min")
                        year_max = _year_box("To year", retrieval.year_max, last_year, "pc-year-max")
                    include_undated = gr.Checkbox(
                        value=retrieval.include_undated,
                        label="Include undated papers",
                        info=undated_info(chat),
                        elem_id="pc-undated",
                    )
                gr.Markdown("**Sources for the last question**")
                sources = gr.HTML(
                    render_sources(None), label="Sources", show_label=False, elem_id="pc-sources"
                )
                histogram = gr.Plot(
                    label="Matching papers by year", show_label=False, visible=False, elem_id="pc-years"
                )
                with gr.Row():
                    bibtex_file = gr.DownloadButton(
                        "Download BibTeX", visible=False, size="sm", elem_id="pc-bibtex"
                    )
                    csv_file = gr.DownloadButton("Download CSV", visible=False, size="sm", elem_id="pc-csv")

        components = {
            "messages": chatbot,
            "conversation": conversation,
            "sources_html": sources,
            "histogram": histogram,
            "bibtex_file": bibtex_file,
            "csv_file": csv_file,
            "textbox": textbox,
            "stop_button": stop,
        }
        outputs = [components[name] for name in ChatUpdate._fields]

        def ask_question(
            message, messages, conversation, answerer, top_k, year_min, year_max, include_undated
        ):
            yield from respond(chat, export_dir, message, messages, conversation, answerer, top_k,
                               year_min, year_max, include_undated)

        inputs = [textbox, chatbot, conversation, answerer, top_k, year_min, year_max, include_undated]
        ask = {
            "fn": ask_question,
            "inputs": inputs,
            "outputs": outputs,
            "api_name": "ask",
            "show_progress": "hidden",
            "concurrency_limit": CHAT_CONCURRENCY,
            # Enter while an answer is still coming asks once it ends (Gradio's default drops it).
            "trigger_mode": "always_last",
        }
        textbox.submit(**ask)
        examples.click(
            lambda index: EXAMPLE_QUESTIONS[index], examples, textbox, api_visibility="private", queue=False
        ).then(**{**ask, "api_name": False})
        stop.click(stop_answer, conversation, stop, api_name="stop", queue=False)
        clear.click(new_chat, None, outputs, api_name="new_chat", queue=False)
        # The chat's own trash icon must forget the conversation too, or follow-ups would use it.
        chatbot.clear(new_chat, None, outputs, api_visibility="private", queue=False)
        answerer.change(
            lambda chosen: header_html(chat, settings, chosen),
            answerer,
            header,
            api_visibility="private",
            queue=False,
        )

        def on_like(conversation, data: gr.LikeData):
            if data.liked is True or data.liked == "Like":
                return ""
            return save_answer_feedback(
                settings,
                conversation,
                data.index if isinstance(data.index, int) else data.index[0],
                "thumbs-down",
            )

        chatbot.like(on_like, conversation, feedback_result, api_visibility="private", queue=False)
        send_note.click(
            lambda conversation, text: (
                save_answer_feedback(settings, conversation, None, "missed", text),
                "",
            ),
            [conversation, note],
            [feedback_result, note],
            api_name="feedback",
            queue=False,
        )
    return app


def launch_options(settings: Settings) -> dict[str, Any]:
    """Options for `Blocks.launch`: nothing that needs an outside host, a password when one is set."""
    ui = settings.ui
    auth = (ui.username, ui.password.get_secret_value()) if ui.password else None
    return {
        "server_name": ui.host,
        "server_port": ui.port,
        "auth": auth,
        "share": False,
        "show_error": False,
        "quiet": True,
        "ssr_mode": False,
        "mcp_server": False,
        "pwa": False,
        "enable_monitoring": False,
        "footer_links": [],
        "theme": THEME,
        "css": CSS,
        "head": HEAD_JS,
    }


def _warm_up(chat: PaperChat) -> None:
    """Answer one question before the URL is shown, so that the first person to ask does not wait
    for the embedding model, the engine's lazy imports and matplotlib to load."""
    started = time.perf_counter()
    chat.ask(EXAMPLE_QUESTIONS[0], answerer="extractive")
    importlib.import_module("matplotlib.figure")
    log.info("warmed up in %.1f s", time.perf_counter() - started)
    backend = chat.settings.llm.backend
    if backend != "extractive":
        # Loading an LLM (for `local`: assembling and loading a 1.1 GB model, then reading the fixed
        # instructions once into its prompt cache) takes a while; do it now in the background rather
        # than on the first question (first-question TTFT, 2 cores: 24.2 s -> 18.1-18.8 s). Failures
        # show up, with the extractive fallback, when someone asks.
        threading.Thread(target=_load_llm, args=(chat, backend), daemon=True, name="load-llm").start()


def _load_llm(chat: PaperChat, backend: str) -> None:
    started = time.perf_counter()
    try:
        chat.warm_up_chat_model(backend)
        log.info("LLM %s ready in %.1f s", backend, time.perf_counter() - started)
    except Exception as error:  # noqa: BLE001 - reported to the user when they ask
        log.warning("LLM %s not available: %s", backend, error)


def serve(settings: Settings) -> None:
    """Open the index, build the page and serve it until interrupted (`paperchat serve`)."""
    try:
        chat = PaperChat.open(settings)
    except USER_ERRORS as error:
        from paperchat.rag.store import IndexNotFoundError

        hint = (
            "\nIndex the bundled papers with `paperchat ingest` (or your own files with "
            "`paperchat ingest PATH`), then run `paperchat serve` again."
        )
        raise SystemExit(
            f"paperchat: cannot start the chat: {error}"
            + (hint if isinstance(error, IndexNotFoundError) else "")
        ) from None
    for note in chat.index.notes:
        print(f"paperchat: note: {note}", file=sys.stderr, flush=True)
    _warm_up(chat)
    app = build_app(chat, settings)
    app.queue(default_concurrency_limit=CHAT_CONCURRENCY)
    try:
        app.launch(prevent_thread_lock=True, **launch_options(settings))
    except OSError as error:
        chat.close()
        raise SystemExit(
            f"paperchat: cannot listen on {settings.ui.host}:{settings.ui.port} ({error}); "
            "choose another port with --port"
        ) from None
    print(
        f"paperchat: {chat.index.paper_count()} papers, chat at {app.local_url}"
        + (" (password protected)" if settings.ui.password else "")
        + " — Ctrl+C to stop",
        flush=True,
    )
    try:
        app.block_thread()
    finally:
        chat.close()
