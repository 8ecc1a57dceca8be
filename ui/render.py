"""What the chat page shows, as HTML: pure functions from engine objects to strings (and one chart).

Every title, abstract, passage and answer is untrusted text. It reaches HTML only through
`as_text()`, which writes each character HTML or Markdown would act on as a numeric entity, in
one pass (so an apostrophe is `&#39;` on the wire and `'` on the screen, never `&#x27;`), and
which keeps URLs from being turned into links. Gradio's own sanitizer stays on as a second line
of defence, not the first.

One numbering per question (`paper_numbers`) is used by the answer text, the list of matching
papers and the sources panel: the matching papers first, in the judge's order, then the possibly
related ones, then the rest of what was retrieved.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence

from paperchat.rag.answer import CITATION_MARK, QUOTE_LEAD, Answer, RetrievedPaper
from paperchat.rag.chain import Sources
from paperchat.rag.extractive import FACT_SENTENCES, evidence_sentence
from paperchat.rag.sentences import best_sentences

CSS = """
.pc-header { font-size: 0.92rem; color: var(--body-text-color-subdued); }
.pc-header h1 { font-size: 1.45rem; margin: 0 0 0.2rem 0; color: var(--body-text-color); }
.pc-status { color: var(--body-text-color-subdued); font-size: 0.9em; margin-bottom: 0.4rem; }
.pc-muted { color: var(--body-text-color-subdued); }
.pc-status .pc-spin { display: inline-block; width: 0.55em; height: 0.55em; border-radius: 50%;
                      margin-right: 0.3em;
                      background: var(--color-accent); animation: pc-pulse 1.2s ease-in-out infinite; }
@keyframes pc-pulse { 50% { opacity: 0.35; } }
.pc-notice { border-left: 3px solid #d97706; background: rgba(217, 119, 6, 0.08); padding: 0.35rem 0.6rem;
             margin-bottom: 0.5rem; border-radius: 4px; }
.pc-abstain { border-left: 3px solid #64748b; padding-left: 0.6rem; }
.pc-papers h4, .pc-synthesis h4 { margin: 0 0 0.35rem 0; font-size: 0.98em; }
.pc-papers h5 { margin: 0.6rem 0 0.3rem 0; font-size: 0.92em; color: var(--body-text-color-subdued); }
.pc-searched { color: var(--body-text-color-subdued); font-size: 0.88em; margin: -0.2rem 0 0.35rem 0; }
.pc-cite { margin: 0 0 0.45rem 0; }
.pc-cite .pc-passage { color: var(--body-text-color-subdued); margin: 0.1rem 0 0 1.6rem; }
.pc-cite details { margin-left: 1.6rem; }
.pc-cite summary { cursor: pointer; color: var(--link-text-color); font-size: 0.92em; }
.pc-related .pc-cite { opacity: 0.85; }
.pc-synthesis { margin-top: 0.7rem; border-top: 1px solid var(--border-color-primary); padding-top: 0.45rem; }
.pc-sources { font-size: 0.86rem; }
#pc-sources .pc-sources table { width: 100%; border-collapse: collapse; border: none !important; margin: 0; }
#pc-sources .pc-sources tr { border: none !important; }
#pc-sources .pc-sources th, #pc-sources .pc-sources td { border: none !important; padding: 0.3rem 0.4rem;
                 vertical-align: top; background: transparent; }
#pc-sources .pc-sources th { text-align: left; font-weight: 600; white-space: nowrap;
                 border-bottom: 1px solid var(--border-color-primary) !important; }
#pc-sources .pc-sources td { border-bottom: 1px solid var(--border-color-primary) !important; }
.pc-sources td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.pc-sources td.pc-verdict { white-space: nowrap; }
.pc-sources tr.pc-related td { color: var(--body-text-color-subdued); }
.pc-sources tr.pc-out td { color: var(--body-text-color-subdued); opacity: 0.8; }
.pc-sources .pc-meta { color: var(--body-text-color-subdued); margin-bottom: 0.35rem; }
.pc-empty { color: var(--body-text-color-subdued); font-size: 0.9rem; }
.pc-years-note { color: var(--body-text-color-subdued); font-size: 0.85rem; }
#pc-new, #pc-stop { white-space: nowrap; flex: none !important; width: auto !important;
                    min-width: max-content !important; }
#pc-chat { height: min(620px, calc(100dvh - 260px)) !important; min-height: 320px; }
@media (max-width: 640px) {
  .pc-header { font-size: 0.8rem; }
  .pc-header h1 { font-size: 1.15rem; }
  #pc-chat { height: calc(100dvh - 250px) !important; }
  #pc-ask-row { flex-wrap: nowrap !important; }
  #pc-new, #pc-stop { padding: 0 0.6rem; }
  /* While an answer is written, Stop takes New chat's place: both would squeeze the question box. */
  #pc-ask-row:has(#pc-stop) #pc-new { display: none !important; }
}
footer { display: none !important; }
"""

# The chat keeps the newest question in view: when a question is added, and again when its papers
# arrive, it is scrolled to the top of the chat; the answer grows beneath it (autoscroll is off).
HEAD_JS = """
<script>
(() => {
  let questions = 0, answers = 0;
  const scroller = (node) => {
    for (let p = node.parentElement; p; p = p.parentElement) {
      const overflow = getComputedStyle(p).overflowY;
      if ((overflow === 'auto' || overflow === 'scroll') && p.scrollHeight > p.clientHeight) return p;
    }
    return null;
  };
  const toTop = (question) => {
    const box = scroller(question);
    if (box) box.scrollTop += question.getBoundingClientRect().top - box.getBoundingClientRect().top - 8;
  };
  const watch = () => {
    const chat = document.querySelector('#pc-chat');
    if (!chat) { setTimeout(watch, 300); return; }
    new MutationObserver(() => {
      const asked = chat.querySelectorAll('.message-row.user-row');
      const answered = chat.querySelectorAll('.pc-papers').length;
      if (asked.length !== questions || answered !== answers) {
        const grew = asked.length > questions || answered > answers;
        questions = asked.length;
        answers = answered;
        if (grew && asked.length) toTop(asked[asked.length - 1]);
      }
    }).observe(chat, {childList: true, subtree: true});
  };
  watch();  // Gradio adds this script after the page's load event
})();
</script>
"""

# The characters HTML or Markdown would act on, each written as a numeric entity in a single
# pass. ':' and '@' too: a URL or address in an abstract must stay text, not become a link.
# The digits and '.' of "1." are left alone so that numbered answers stay lists.
_ENTITIES = str.maketrans({c: f"&#{ord(c)};" for c in "&<>\"'\\`*_{}[]()#+|~$!:@"})
_WWW = re.compile(r"\bwww\.", re.IGNORECASE)

# TeX that abstracts carry from their LaTeX source, shown as a reader expects.
_TEX_ESCAPED = re.compile(r"\\([%&_#$'])")
_TEX_WORDS = {"\\eg": "e.g.", "\\ie": "i.e.", "\\etal": "et al.", "\\etc": "etc."}
_TEX_WORD = re.compile(r"\\(eg|ie|etal|etc)\b\.?")
_TEX_MATH = {
    r"$\sim$": "~",
    r"$\times$": "×",
    r"$\pm$": "±",
    r"$\approx$": "≈",
    r"$\geq$": "≥",
    r"$\leq$": "≤",
}


def untex(text: str) -> str:
    """The TeX escapes of an abstract as the characters they stand for.

    >>> untex(r"Top-1 rises by 1.2\\% on COCO \\& LVIS ($\\sim$3x faster), \\eg for ViT")
    'Top-1 rises by 1.2% on COCO & LVIS (~3x faster), e.g. for ViT'
    """
    for tex, plain in _TEX_MATH.items():
        text = text.replace(tex, plain)
    text = _TEX_WORD.sub(lambda m: _TEX_WORDS["\\" + m.group(1)], text)
    return _TEX_ESCAPED.sub(r"\1", text)


def as_text(value: object) -> str:
    """Untrusted text made safe to put into HTML or Markdown: it displays exactly as written.

    >>> as_text("<img src=x onerror=alert(1)> **bold** [1] FFCV's")
    '&#60;img src=x onerror=alert&#40;1&#41;&#62; &#42;&#42;bold&#42;&#42; &#91;1&#93; FFCV&#39;s'
    >>> as_text("code at https://github.com/x or www.x.org")
    'code at https&#58;//github.com/x or www&#46;x.org'
    """
    return _WWW.sub(lambda m: m.group(0)[:3] + "&#46;", str(value).translate(_ENTITIES))


def as_paper_text(value: object) -> str:
    """Paper text (title, passage, abstract) for display: TeX escapes resolved, then `as_text`.

    >>> as_paper_text("ConvNet's 75\\\\% <b>")
    'ConvNet&#39;s 75% &#60;b&#62;'
    """
    return as_text(untex(str(value)))


# --- one numbering ----------------------------------------------------------------------------
def paper_numbers(sources: Sources) -> dict[str, int]:
    """Paper id → its number everywhere on the page: matches, then possibly related, then the rest.

    >>> p = lambda i, **kw: RetrievedPaper(id=i, title=i, score=0, rank=1, **kw)
    >>> s = Sources("q", "q", "list", False, [p("a"), p("b", related=True), p("c")], [p("c")])
    >>> paper_numbers(s)
    {'c': 1, 'b': 2, 'a': 3}
    """
    matching = [paper.id for paper in sources.matching]
    related = [paper.id for paper in related_papers(sources)]
    rest = [p.id for p in sources.retrieved if p.id not in matching and p.id not in related]
    return {paper_id: number for number, paper_id in enumerate(matching + related + rest, start=1)}


def related_papers(sources: Sources) -> list[RetrievedPaper]:
    """The possibly related papers: some evidence, too weak to count (most probable first)."""
    matching = {paper.id for paper in sources.matching}
    papers = getattr(sources, "related", None) or [p for p in sources.retrieved if p.related]
    return [paper for paper in papers if paper.id not in matching]


def answerer_numbers(sources: Sources) -> dict[int, str]:
    """The numbers an answerer gives papers (its prompt lists the matches first, then the rest as
    retrieved), for showing a streamed answer in `paper_numbers` before its citations are known."""
    matching = [paper.id for paper in sources.matching]
    order = matching + [p.id for p in sources.retrieved if p.id not in matching]
    return {number: paper_id for number, paper_id in enumerate(order, start=1)}


def answer_in_numbers(answer: Answer, numbers: Mapping[str, int]) -> str:
    """A finished answer's text with its `[n]` (its citations' numbers) in the page's numbering."""
    return renumber(answer.text, {citation.number: citation.id for citation in answer.citations}, numbers)


def renumber(text: str, ids_by_number: Mapping[int, str], numbers: Mapping[str, int]) -> str:
    """`[n]` markers of an answer rewritten into the page's numbering; unknown numbers are dropped.

    >>> renumber("A [1]. B [2, 3]. C [9].", {1: "x", 2: "y", 3: "x"}, {"x": 4, "y": 1})
    'A [4]. B [1, 4]. C .'
    """

    def new_marker(match: re.Match) -> str:
        shown = []
        for raw in match.group(1).split(","):
            number = numbers.get(ids_by_number.get(int(raw), ""))
            if number is not None and number not in shown:
                shown.append(number)
        return "[" + ", ".join(map(str, sorted(shown))) + "]" if shown else ""

    return CITATION_MARK.sub(new_marker, text)


# --- the assistant message --------------------------------------------------------------------
def render_status(text: str, elapsed_s: float | None = None) -> str:
    """The state line while an answer is in the works: what is happening, and for how long."""
    seconds = f" · {elapsed_s:.0f} s" if elapsed_s is not None else ""
    return f'<div class="pc-status"><span class="pc-spin"></span>{as_text(text)}{seconds}</div>'


def render_notice(notice: str) -> str:
    return f'<div class="pc-notice">⚠️ {as_text(notice)}</div>'


def _paper_entry(paper: RetrievedPaper, number: int, evidence: str) -> str:
    year = f" ({paper.year})" if paper.year else ""
    passage = f'<div class="pc-passage">“{as_paper_text(evidence)}”</div>' if evidence else ""
    abstract = paper.abstract or paper.passage
    details = (
        f"<details><summary>Abstract</summary><p>{as_paper_text(abstract)}</p></details>" if abstract else ""
    )
    return (
        f'<div class="pc-cite" data-paper="{number}"><b>[{number}]</b> {as_paper_text(paper.title)}{year}'
        f"{passage}{details}</div>"
    )


def evidence_of(paper: RetrievedPaper, query: str, sentences: int = 1) -> str:
    """What is quoted under a paper: for one sentence, the one naming the question's key concepts
    together (as the extractive answer quotes it); for more, those that best answer the query (a
    fact and its number); the paper's best passage otherwise."""
    if sentences == 1:
        return evidence_sentence(paper, query) or paper.passage
    return " ".join(best_sentences(query, paper.abstract or paper.passage, limit=sentences)) or paper.passage


def render_papers(sources: Sources, numbers: Mapping[str, int]) -> str:
    """The useful answer, known as soon as retrieval has judged: the matching papers with their evidence,
    possibly related papers beneath them (outside the count), or a plain "nothing here answers it"."""
    searched = (
        f'<div class="pc-searched">searched as “{as_text(sources.search_query)}”</div>'
        if sources.search_query and sources.search_query != sources.question
        else ""
    )
    if sources.abstained or not sources.matching:
        nearest = sources.retrieved[:3]
        listing = "; ".join(
            f"[{numbers[p.id]}] {as_paper_text(p.title)}" + (f" ({p.year})" if p.year else "")
            for p in nearest
        )
        return (
            f'<div class="pc-papers pc-abstain"><h4>No paper in this collection answers '
            f"“{as_text(sources.question)}”</h4>{searched}"
            + (f"<div>The nearest papers, which do not answer it: {listing}.</div>" if nearest else "")
            + "</div>"
        )
    count = len(sources.matching)
    if sources.kind == "list":
        heading = f"{count} matching paper{'s' if count != 1 else ''}"
    else:
        heading = "The paper that answers it"
    shown = sources.matching if sources.kind == "list" else sources.matching[:1]
    per_paper = 1 if sources.kind == "list" else FACT_SENTENCES
    entries = "".join(
        _paper_entry(p, numbers[p.id], evidence_of(p, sources.search_query, per_paper)) for p in shown
    )
    related = related_papers(sources)
    related_html = ""
    if related:
        related_html = (
            '<div class="pc-related"><h5>Possibly related (some evidence, not counted above)</h5>'
            + "".join(_paper_entry(p, numbers[p.id], evidence_of(p, sources.search_query)) for p in related)
            + "</div>"
        )
    return f'<div class="pc-papers"><h4>{heading}</h4>{searched}{entries}{related_html}</div>'


# What an LLM answer appends to the model's words, which the page and the terminal show above them:
# the numbered list of a list answer's matches, and a fact answer's quote of its paper.
_APPENDED = re.compile(r"(?:^|\n\s*\n)(?:\d+ papers? match(?:es)?:(?:\n\d+\. [^\n]*)*"
                       rf"|{re.escape(QUOTE_LEAD)} \[\d+\]: \"[^\n]*\")\s*$")


def model_words(text: str) -> str:
    r"""An LLM answer without what it appends for the record (the numbered list of matches, the
    quote of a fact's paper): the page and the terminal already show those papers and sentences above.

    >>> model_words("Both prune filters [1], [2].\n\n2 papers match:\n1. A [1]\n2. B (2020) [2]")
    'Both prune filters [1], [2].'
    >>> model_words('It reaches 80.67% [1].\n\nIn the paper\'s words [1]: "It reaches 80.67% on ImageNet."')
    'It reaches 80.67% [1].'
    """
    return _APPENDED.sub("", text)


def summary_left_out(answerer: str) -> str:
    """Why a finished LLM answer shows no summary: what the model wrote only repeated the list
    (titles, bare `[n]`), the question or the instructions' example, which `rag.generate` drops."""
    return (f"The {answerer} model's summary added nothing beyond the list of papers, so it is left out: "
            "the papers above, with their evidence, are the answer.")


def render_synthesis(label: str, text: str, empty: str = "") -> str:
    """The LLM's own words beneath the papers (its `[n]` already in the page's numbering);
    `empty` says why there are none, where a finished answer kept none of them."""
    body = as_paper_text(model_words(text).strip()).replace("\n", "<br>")  # it quotes the papers' TeX
    if not body and empty:
        body = f'<span class="pc-muted">{as_text(empty)}</span>'
    return (
        f'<div class="pc-synthesis"><h4>{as_text(label)}</h4>'
        f'<div class="pc-synthesis-text">{body}</div></div>'
    )


def render_message(
    papers_html: str = "", status: str = "", notice: str | None = None, synthesis: str = ""
) -> str:
    """The assistant message in its fixed order: state, papers, notice, synthesis.

    The parts are joined without blank lines, so that Markdown sees one HTML block and leaves it be.
    """
    return "".join([status, papers_html, render_notice(notice) if notice else "", synthesis])


# --- the sources panel ------------------------------------------------------------------------
VERDICTS = {"match": "match", "related": "possibly related", "retrieved": "retrieved"}


def render_sources(sources: Sources | None, numbers: Mapping[str, int] | None = None) -> str:
    """Every retrieved paper under its number, with what the judge made of it (no raw scores)."""
    if sources is None:
        return '<div class="pc-sources pc-empty">Ask a question to see the papers it was answered from.</div>'
    if not sources.retrieved:
        return '<div class="pc-sources pc-empty">No search for this message.</div>'
    numbers = numbers or paper_numbers(sources)
    matching = {paper.id for paper in sources.matching}
    related_ids = {paper.id for paper in related_papers(sources)}
    related = len(related_ids)
    verdict = (
        "no paper answers the question"
        if sources.abstained
        else f"{len(sources.matching)} matching" + (f" · {related} possibly related" if related else "")
    )
    searched = (
        f" · searched as “{as_text(sources.search_query)}”"
        if sources.search_query and sources.search_query != sources.question
        else ""
    )
    rows = []
    for paper in sorted(sources.retrieved, key=lambda p: numbers[p.id]):
        kind = "match" if paper.id in matching else "related" if paper.id in related_ids else "retrieved"
        css = {"match": "pc-in", "related": "pc-related", "retrieved": "pc-out"}[kind]
        rows.append(
            f'<tr class="{css}"><td class="num">{numbers[paper.id]}</td>'
            f'<td class="num">{paper.year or "–"}</td><td class="pc-verdict">{VERDICTS[kind]}</td>'
            f"<td>{as_paper_text(paper.title)}</td></tr>"
        )
    return (
        f'<div class="pc-sources"><div class="pc-meta">{len(sources.retrieved)} retrieved · {verdict}'
        f'{searched}</div><table><thead><tr><th>#</th><th>Year</th><th title="what the judge made of the '
        f'paper: it answers the question, it has some evidence, or it was only retrieved">Judged</th>'
        f"<th>Title</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


# --- the year chart ---------------------------------------------------------------------------
def year_histogram(papers: Sequence[RetrievedPaper]):
    """A small bar chart of the dated papers' years, titled with the share of `papers` it covers
    (matplotlib's object API: safe from worker threads); None when no paper has a year."""
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
    axes.set_title(histogram_label(papers), fontsize=8, loc="left", wrap=True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    return figure


def histogram_label(papers: Sequence[RetrievedPaper]) -> str:
    """What share of the matching papers the chart covers (undated papers have no bar).

    >>> p = lambda y: RetrievedPaper(id=str(y), title="t", year=y, score=0, rank=1)
    >>> histogram_label([p(2020), p(None), p(None), p(2021)])
    '2 of 4 matching papers are dated (50%); 2 undated are not shown'
    """
    dated = sum(1 for paper in papers if paper.year)
    undated = len(papers) - dated
    share = round(100 * dated / len(papers)) if papers else 0
    return f"{dated} of {len(papers)} matching papers are dated ({share}%)" + (
        f"; {undated} undated are not shown" if undated else ""
    )
