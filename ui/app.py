"""The chat page: a Gradio app over one `PaperChat`, and `serve()`, which opens the index and starts it.

What a person sees: a header naming the collection, the chat (answers stream in; each answer lists
the papers it cites, with the supporting passage and the abstract one click away), a sources panel
with every retrieved paper for the last question, a year histogram for list questions, the answer
settings, example questions, and BibTeX/CSV downloads of the last answer's papers.

Layout (`build_app`) and behaviour (`respond`) are separate: `respond` is a plain generator that
tests call directly, and `build_app` only wires it to components.

Every title, abstract and answer shown here is untrusted text: it reaches HTML and Markdown only
through `as_text()`, which escapes HTML and the characters Markdown would interpret. Gradio's own
sanitizer stays on as a second line of defence, not the first.

    >>> from rag.settings import Settings          # doctest: +SKIP
    >>> serve(Settings.load())                      # doctest: +SKIP
"""

from __future__ import annotations

import os

# Before gradio is imported: it reads this at import time (usage statistics, version check).
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import atexit
import csv
import html
import importlib
import io
import logging
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr

from rag.answer import Answer, Citation, RetrievedPaper
from rag.chain import ANSWERERS, Done, EmptyQuestionError, Notice, PaperChat, Sources, Token
from rag.errors import USER_ERRORS
from rag.papers import Paper
from rag.settings import Settings

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

THEME = gr.themes.Soft(primary_hue="indigo", neutral_hue="slate",
                       # System fonts: the page must not fetch anything from outside (it runs offline).
                       font=["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "sans-serif"],
                       font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"])
CSS = """
.pc-header { font-size: 0.92rem; color: var(--body-text-color-subdued); }
.pc-header h1 { font-size: 1.45rem; margin: 0 0 0.2rem 0; color: var(--body-text-color); }
.pc-notice { border-left: 3px solid #d97706; background: rgba(217, 119, 6, 0.08); padding: 0.35rem 0.6rem;
             margin-bottom: 0.5rem; border-radius: 4px; }
.pc-abstain { border-left: 3px solid #64748b; padding-left: 0.6rem; }
.pc-cites { margin-top: 0.7rem; border-top: 1px solid var(--border-color-primary); padding-top: 0.45rem;
            font-size: 0.9em; }
.pc-cites h4 { margin: 0 0 0.3rem 0; font-size: 0.95em; }
.pc-cite { margin: 0 0 0.45rem 0; }
.pc-cite .pc-passage { color: var(--body-text-color-subdued); margin: 0.1rem 0 0 1.6rem; }
.pc-cite details { margin-left: 1.6rem; }
.pc-cite summary { cursor: pointer; color: var(--link-text-color); font-size: 0.92em; }
.pc-sources { font-size: 0.86rem; }
#pc-sources .pc-sources table { width: 100%; border-collapse: collapse; border: none !important; margin: 0; }
#pc-sources .pc-sources tr { border: none !important; }
#pc-sources .pc-sources th, #pc-sources .pc-sources td { border: none !important; padding: 0.3rem 0.4rem;
                 vertical-align: top; background: transparent; }
#pc-sources .pc-sources th { text-align: left; font-weight: 600; white-space: nowrap;
                 border-bottom: 1px solid var(--border-color-primary) !important; }
#pc-sources .pc-sources td { border-bottom: 1px solid var(--border-color-primary) !important; }
.pc-sources td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.pc-sources tr.pc-out td { color: var(--body-text-color-subdued); }
.pc-sources .pc-meta { color: var(--body-text-color-subdued); margin-bottom: 0.35rem; }
.pc-empty { color: var(--body-text-color-subdued); font-size: 0.9rem; }
footer { display: none !important; }
"""

# Characters Markdown (and KaTeX) would act on, written as entities so text stays text. `&<>"'`
# are html.escape's; the digits and '.' of "1." are left alone so numbered answers stay lists.
_MARKDOWN_ENTITIES = str.maketrans({c: f"&#{ord(c)};" for c in "\\`*_{}[]()#+|~$!"})


def as_text(value: object) -> str:
    """Untrusted text made safe to put into HTML or Markdown: it displays exactly as written.

    >>> as_text('<img src=x onerror=alert(1)> **bold** [1]')
    '&lt;img src=x onerror=alert&#40;1&#41;&gt; &#42;&#42;bold&#42;&#42; &#91;1&#93;'
    """
    return html.escape(str(value), quote=True).translate(_MARKDOWN_ENTITIES)


# --- rendering: pure functions from engine objects to HTML -------------------------------------------
def render_answer(answer: Answer, matching_count: int | None = None) -> str:
    """The assistant message: notice, answer text, then the cited papers (abstract behind a click)."""
    parts = []
    if answer.notice:
        parts.append(render_notice(answer.notice))
    body = as_text(answer.text)
    parts.append(f'<div class="pc-abstain">\n\n{body}\n\n</div>' if answer.abstained else body)
    if answer.citations:
        parts.append(render_citations(answer.citations, answer.retrieved,
                                      matching_count if answer.kind == "list" else None))
    return "\n\n".join(parts)


def render_notice(notice: str) -> str:
    return f'<div class="pc-notice">⚠️ {as_text(notice)}</div>'


def render_citations(citations: Sequence[Citation], retrieved: Sequence[RetrievedPaper],
                     matching_count: int | None = None) -> str:
    """Each cited paper: [n] title (year), the supporting passage, and the abstract in <details>.

    >>> c = Citation(number=1, id="a", title="<b>T</b>", year=2020, passage="P.")
    >>> "&lt;b&gt;T&lt;/b&gt;" in render_citations([c], [], matching_count=7)
    True
    """
    abstracts = {paper.id: paper.abstract or paper.passage for paper in retrieved}
    heading = "Cited papers"
    if matching_count is not None:
        heading += f" · {matching_count} matching paper{'s' if matching_count != 1 else ''}"
    items = []
    for citation in citations:
        year = f" ({citation.year})" if citation.year else ""
        abstract = abstracts.get(citation.id, "")
        details = (f"<details><summary>Abstract</summary><p>{as_text(abstract)}</p></details>"
                   if abstract else "")
        passage = f'<div class="pc-passage">“{as_text(citation.passage)}”</div>' if citation.passage else ""
        items.append(f'<div class="pc-cite"><b>[{citation.number}]</b> {as_text(citation.title)}{year}'
                     f"{passage}{details}</div>")
    return f'<div class="pc-cites"><h4>{heading}</h4>{"".join(items)}</div>'


SEARCHING_HTML = '<div class="pc-sources pc-empty">Searching…</div>'


def render_sources(sources: Sources | None) -> str:
    """The sources panel: every retrieved paper with rank, score, year and whether it matched."""
    if sources is None:
        return '<div class="pc-sources pc-empty">Ask a question to see the papers it was answered from.</div>'
    if not sources.retrieved:
        return '<div class="pc-sources pc-empty">No search for this message.</div>'
    matching = {paper.id for paper in sources.matching}
    verdict = ("no paper answers the question" if sources.abstained
               else f"{len(sources.matching)} matching")
    searched = (f' · searched as “{as_text(sources.search_query)}”'
                if sources.search_query and sources.search_query != sources.question else "")
    rows = []
    for paper in sources.retrieved:
        matched = paper.id in matching
        rows.append(f'<tr class="{"pc-in" if matched else "pc-out"}"><td class="num">{paper.rank}</td>'
                    f'<td class="num">{paper.score:.3f}</td><td class="num">{paper.year or "–"}</td>'
                    f'<td>{"✓" if matched else ""}</td><td>{as_text(paper.title)}</td></tr>')
    return (f'<div class="pc-sources"><div class="pc-meta">{len(sources.retrieved)} retrieved · {verdict}'
            f'{searched}</div><table><thead><tr><th>#</th><th>Score</th><th>Year</th><th title="matches the '
            f'question">Match</th><th>Title</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def year_histogram(papers: Sequence[RetrievedPaper]):
    """A small bar chart of the papers' years (matplotlib's object API: safe from worker threads)."""
    from matplotlib.figure import Figure

    counts = Counter(paper.year for paper in papers if paper.year)
    if not counts:
        return None
    years = list(range(min(counts), max(counts) + 1))
    figure = Figure(figsize=(4.2, 1.9), dpi=110, layout="constrained")
    axes = figure.add_subplot()
    axes.bar(years, [counts.get(year, 0) for year in years], color="#6366f1", width=0.7)
    axes.set_xticks(years, [str(year) for year in years], fontsize=8, rotation=45 if len(years) > 6 else 0)
    axes.yaxis.get_major_locator().set_params(integer=True)
    axes.tick_params(axis="y", labelsize=8)
    axes.set_ylabel("papers", fontsize=8)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    return figure


def histogram_update(matching: Sequence[RetrievedPaper]) -> dict:
    """Show the year chart when some matching paper has a year; say how many do."""
    dated = sum(1 for paper in matching if paper.year)
    if not dated:
        return gr.update(value=None, visible=False)
    return gr.update(value=year_histogram(matching), visible=True,
                     label=f"Matching papers by year ({dated} of {len(matching)} dated)")


# --- export: the papers in the last answer ---------------------------------------------------------
def bibtex(citations: Sequence[Citation], papers: dict[str, Paper]) -> str:
    """BibTeX entries for the cited papers, keys like `smith2021pruning`.

    >>> print(bibtex([Citation(number=1, id="2101.00001", title="Pruning {Nets} & 50%", year=2021)],
    ...              {"2101.00001": Paper("Pruning {Nets} & 50%", "a", id="2101.00001", authors=("Ann Smith",))}))
    @misc{smith2021pruning,
      title = {Pruning \\{Nets\\} \\& 50\\%},
      author = {Ann Smith},
      year = {2021},
      eprint = {2101.00001},
      archivePrefix = {arXiv},
    }
    <BLANKLINE>
    """
    entries, used = [], Counter()
    for citation in citations:
        paper = papers.get(citation.id)
        authors = paper.authors if paper else ()
        surname = re.sub(r"[^a-z]", "", authors[0].split()[-1].lower()) if authors and authors[0].split() else ""
        word = next((w for w in re.findall(r"[a-z]+", citation.title.lower()) if len(w) > 3), "paper")
        key = f"{surname or 'paper'}{citation.year or ''}{word}"
        used[key] += 1
        if used[key] > 1:
            key += chr(ord("a") + used[key] - 2)
        fields = [("title", citation.title)]
        if authors:
            fields.append(("author", " and ".join(authors)))
        if citation.year:
            fields.append(("year", str(citation.year)))
        if re.fullmatch(r"\d{4}\.\d{4,5}(v\d+)?", citation.id):
            fields += [("eprint", citation.id), ("archivePrefix", "arXiv")]
        if paper and paper.url:
            fields.append(("url", paper.url))
        body = "".join(f"  {name} = {{{_bibtex_escape(value)}}},\n" for name, value in fields)
        entries.append(f"@misc{{{key},\n{body}}}\n")
    return "\n".join(entries)


def _bibtex_escape(text: str) -> str:
    return re.sub(r"([\\{}&%$#_])", r"\\\1", " ".join(text.split()))


def citations_csv(citations: Sequence[Citation], papers: dict[str, Paper]) -> str:
    """One row per cited paper: number, id, title, year, authors, url, passage."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["number", "id", "title", "year", "authors", "url", "passage"])
    for citation in citations:
        paper = papers.get(citation.id)
        row = [citation.number, citation.id, citation.title, citation.year or "",
               "; ".join(paper.authors) if paper else "", (paper.url if paper else None) or "", citation.passage]
        writer.writerow([_inert_cell(value) for value in row])
    return out.getvalue()


def _inert_cell(value: object) -> object:
    """A text cell a spreadsheet would run as a formula (`=HYPERLINK(...)`) gets a leading quote."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


# --- the conversation and the handler --------------------------------------------------------------
@dataclass
class Conversation:
    """Per-browser-session state: the turns as the engine sees them (plain text, not the page's HTML)."""

    turns: list[tuple[str, str]] = field(default_factory=list)


class ChatUpdate(NamedTuple):
    """What one step of `respond` shows; a tuple in the order of `build_app`'s outputs."""

    messages: list[dict]
    conversation: Conversation
    sources_html: str
    histogram: dict
    bibtex_file: dict
    csv_file: dict
    textbox: str


def respond(chat: PaperChat, export_dir: Path, message: str, messages: list[dict] | None,
            conversation: Conversation | None, answerer: str, top_k: float | None,
            year_min: float | None, year_max: float | None) -> Iterator[ChatUpdate]:
    """Answer `message`, yielding the page's new state as the answer streams in.

    Never raises: an empty question or an engine failure becomes a message in the chat (and a
    failure is logged with its traceback here, on the server).
    """
    messages = list(messages or [])
    conversation = conversation or Conversation()
    question = (message or "").strip()
    messages.append({"role": "user", "content": as_text(question) if question else "(empty message)"})
    messages.append({"role": "assistant", "content": "_Searching the papers…_"})
    sources: Sources | None = None
    no_plot = gr.update(value=None, visible=False)
    no_file = gr.update(value=None, visible=False)

    def update(content: str, histogram=None, files: tuple[str, str] | None = None) -> ChatUpdate:
        messages[-1] = {"role": "assistant", "content": content}
        bib, table = files or (None, None)
        return ChatUpdate(list(messages), conversation, render_sources(sources), histogram or no_plot,
                          gr.update(value=bib, visible=bib is not None),
                          gr.update(value=table, visible=table is not None), "")

    if not question:
        yield update("Please type a question about the papers, for example "
                     f"“{EXAMPLE_QUESTIONS[0]}”.")
        return
    problem = _check_years(year_min, year_max)
    if problem:
        yield update(problem)
        return
    yield ChatUpdate(list(messages), conversation, SEARCHING_HTML, no_plot, no_file, no_file, "")

    text, notice, histogram = "", None, None
    try:
        for event in chat.stream(question, history=conversation.turns, answerer=answerer,
                                 top_k=int(top_k) if top_k else None, year_min=_year(year_min),
                                 year_max=_year(year_max)):
            if isinstance(event, Sources):
                sources = event
                if event.kind == "list" and event.matching:
                    histogram = histogram_update(event.matching)
                yield update("_Writing the answer…_", histogram)
            elif isinstance(event, Notice):
                notice = event.text
                yield update(render_notice(notice) + "\n\n" + as_text(text), histogram)
            elif isinstance(event, Token):
                text += event.text
                yield update((render_notice(notice) + "\n\n" if notice else "") + as_text(text), histogram)
            elif isinstance(event, Done):
                answer = event.answer
                conversation.turns.append((question, answer.text))
                files = _write_exports(chat, answer.citations, export_dir) if answer.citations else None
                matching = len(sources.matching) if sources else None
                yield update(render_answer(answer, matching), histogram, files)
    except EmptyQuestionError as error:
        yield update(as_text(str(error).capitalize() + "."))
    except USER_ERRORS as error:
        log.warning("question %r failed: %s", question, error)
        yield update(f"Sorry, I could not answer that: {as_text(error)}")
    except Exception as error:  # the page must show a message, never hang or trace back
        log.exception("question %r failed", question)
        yield update(f"Sorry, something went wrong while answering ({as_text(type(error).__name__)}: "
                     f"{as_text(error)}). The details are in the server log.")


def _year(value: float | None) -> int | None:
    return None if value is None or value == "" else int(value)


def _check_years(year_min: float | None, year_max: float | None) -> str | None:
    low, high = _year(year_min), _year(year_max)
    if low is not None and high is not None and low > high:
        return f"The year range is empty: “from {low}” is after “to {high}”. Widen it in the settings."
    return None


def _write_exports(chat: PaperChat, citations: Sequence[Citation], export_dir: Path) -> tuple[str, str]:
    papers = chat.index.lexical.papers([c.id for c in citations])
    folder = export_dir / uuid.uuid4().hex  # one folder per answer: sessions never overwrite each other
    folder.mkdir(parents=True)
    bib_path, csv_path = folder / "paperchat-citations.bib", folder / "paperchat-citations.csv"
    bib_path.write_text(bibtex(citations, papers), encoding="utf-8")
    csv_path.write_text(citations_csv(citations, papers), encoding="utf-8", newline="")
    return str(bib_path), str(csv_path)


def new_chat() -> tuple[list, Conversation, str, dict, dict, dict, str]:
    """The "New chat" button: an empty conversation and panels."""
    hidden = gr.update(value=None, visible=False)
    return [], Conversation(), render_sources(None), hidden, hidden, hidden, ""


# --- layout -----------------------------------------------------------------------------------------
def header_html(chat: PaperChat, settings: Settings) -> str:
    """One line on what is being served: papers, embedding model, answerer, index folder."""
    llm = settings.llm
    model = llm.model or (llm.model_path.name if llm.model_path else None)
    answerer = llm.backend + (f" ({model})" if model and llm.backend != "extractive" else "")
    return (f'<div class="pc-header"><h1>paperchat</h1>{chat.index.paper_count()} papers · '
            f"embeddings {as_text(settings.embedding.model)} · answerer {as_text(answerer)} · "
            f"index {as_text(settings.store.index_dir)}</div>")


def build_app(chat: PaperChat, settings: Settings) -> gr.Blocks:
    """The page, wired to `respond`. Launch it with `launch_options(settings)` (theme, no share, ...)."""
    export_dir = Path(tempfile.mkdtemp(prefix="paperchat-export-"))
    atexit.register(shutil.rmtree, export_dir, ignore_errors=True)
    retrieval = settings.retrieval
    years = chat.index.lexical.years()
    first_year, last_year = (min(years), max(years)) if years else (None, None)

    with gr.Blocks(title="paperchat", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        conversation = gr.State(Conversation())
        gr.HTML(header_html(chat, settings))
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=420):
                chatbot = gr.Chatbot(label="Chat", height=620, show_label=False, elem_id="pc-chat",
                                     sanitize_html=True, allow_tags=False, latex_delimiters=[],
                                     feedback_options=None, buttons=["copy"],
                                     placeholder="Ask about the papers in this collection. Every answer "
                                                 "cites the papers it used.")
                with gr.Row():
                    textbox = gr.Textbox(label="Question", show_label=False, placeholder="Ask a question and press Enter",
                                         scale=6, autofocus=True, elem_id="pc-question", submit_btn="Ask")
                    clear = gr.Button("New chat", scale=1, min_width=100, variant="secondary")
                examples = gr.Dataset(label="Examples", components=["textbox"],
                                      samples=[[q] for q in EXAMPLE_QUESTIONS], type="index", samples_per_page=10)
            with gr.Column(scale=2, min_width=320):
                with gr.Accordion("Answer settings", open=False):
                    answerer = gr.Radio(list(ANSWERERS), value=settings.llm.backend, label="Answerer",
                                        info="extractive needs no LLM; the others fall back to it when unreachable")
                    top_k = gr.Slider(1, TOP_K_MAX, value=min(retrieval.top_k, TOP_K_MAX), step=1,
                                      label="Papers to retrieve")
                    with gr.Row():
                        year_min = gr.Number(value=retrieval.year_min, precision=0, label="From year",
                                             placeholder=str(first_year or ""))
                        year_max = gr.Number(value=retrieval.year_max, precision=0, label="To year",
                                             placeholder=str(last_year or ""))
                gr.Markdown("**Sources for the last question**")
                sources = gr.HTML(render_sources(None), label="Sources", show_label=False, elem_id="pc-sources")
                histogram = gr.Plot(label="Matching papers by year", visible=False, elem_id="pc-years")
                with gr.Row():
                    bibtex_file = gr.DownloadButton("Download BibTeX", visible=False, size="sm", elem_id="pc-bibtex")
                    csv_file = gr.DownloadButton("Download CSV", visible=False, size="sm", elem_id="pc-csv")

        def ask_question(message, messages, conversation, answerer, top_k, year_min, year_max):
            yield from respond(chat, export_dir, message, messages, conversation, answerer, top_k, year_min,
                               year_max)

        inputs = [textbox, chatbot, conversation, answerer, top_k, year_min, year_max]
        outputs = [chatbot, conversation, sources, histogram, bibtex_file, csv_file, textbox]
        ask = {"fn": ask_question, "inputs": inputs, "outputs": outputs, "api_name": "ask",
               "show_progress": "hidden", "concurrency_limit": CHAT_CONCURRENCY}
        textbox.submit(**ask)
        examples.click(lambda index: EXAMPLE_QUESTIONS[index], examples, textbox, api_visibility="private",
                       queue=False).then(**{**ask, "api_name": False})
        clear.click(new_chat, None, outputs, api_name="new_chat", queue=False)
        # The chat's own trash icon must forget the conversation too, or follow-ups would use it.
        chatbot.clear(new_chat, None, outputs, api_visibility="private", queue=False)
    return app


def launch_options(settings: Settings) -> dict[str, Any]:
    """Options for `Blocks.launch`: nothing that needs an outside host, a password when one is set."""
    ui = settings.ui
    auth = (ui.username, ui.password.get_secret_value()) if ui.password else None
    return {"server_name": ui.host, "server_port": ui.port, "auth": auth, "share": False, "show_error": False,
            "quiet": True, "ssr_mode": False, "mcp_server": False, "pwa": False, "enable_monitoring": False,
            "footer_links": [], "theme": THEME, "css": CSS}


def _warm_up(chat: PaperChat) -> None:
    """Answer one question before the URL is shown, so that the first person to ask does not wait
    for the embedding model, the engine's lazy imports and matplotlib to load."""
    started = time.perf_counter()
    chat.ask(EXAMPLE_QUESTIONS[0], answerer="extractive")
    importlib.import_module("matplotlib.figure")
    log.info("warmed up in %.1f s", time.perf_counter() - started)
    backend = chat.settings.llm.backend
    if backend != "extractive":
        # Loading an LLM (for `local`: assembling and loading a 1.1 GB model) takes a while; do it
        # now in the background rather than on the first question. Failures show up, with the
        # extractive fallback, when someone asks.
        threading.Thread(target=_load_llm, args=(chat, backend), daemon=True, name="load-llm").start()


def _load_llm(chat: PaperChat, backend: str) -> None:
    started = time.perf_counter()
    try:
        chat.chat_model(backend)
        log.info("LLM %s ready in %.1f s", backend, time.perf_counter() - started)
    except Exception as error:  # noqa: BLE001 - reported to the user when they ask
        log.warning("LLM %s not available: %s", backend, error)


def serve(settings: Settings) -> None:
    """Open the index, build the page and serve it until interrupted (`paperchat serve`)."""
    try:
        chat = PaperChat.open(settings)
    except USER_ERRORS as error:
        from rag.store import IndexNotFoundError

        hint = ("\nIndex the bundled papers with `paperchat ingest` (or your own files with "
                "`paperchat ingest PATH`), then run `paperchat serve` again.")
        raise SystemExit(f"paperchat: cannot start the chat: {error}"
                         + (hint if isinstance(error, IndexNotFoundError) else "")) from None
    _warm_up(chat)
    app = build_app(chat, settings)
    app.queue(default_concurrency_limit=CHAT_CONCURRENCY)
    try:
        app.launch(prevent_thread_lock=True, **launch_options(settings))
    except OSError as error:
        chat.close()
        raise SystemExit(f"paperchat: cannot listen on {settings.ui.host}:{settings.ui.port} ({error}); "
                         "choose another port with --port") from None
    print(f"paperchat: {chat.index.paper_count()} papers, chat at {app.local_url}"
          + (" (password protected)" if settings.ui.password else "") + " — Ctrl+C to stop", flush=True)
    try:
        app.block_thread()
    finally:
        chat.close()

