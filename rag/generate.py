"""An LLM's answer over papers already retrieved, with citations enforced in code.

The model sees the papers numbered [1]..[k] — the numbers are the papers' positions in
`Answer.retrieved` — and is asked to cite them as [n]. What it writes is then checked, not
trusted: markers to papers it was not shown are removed (`enforce_citations`), a sentence it left
uncited gets the shown paper whose text best supports it or is marked "(unsupported)", and for a
list question the list and its count come from the retriever's judgement, never from the model.

`stream_llm_answer` yields the raw text as it streams (for a live display), then one `Answer`
whose `text` is the checked version: a front end replaces what it streamed with `Answer.text`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from rag.answer import CITATION_MARK, Answer, QuestionKind, RetrievedPaper, enforce_citations
from rag.extractive import best_sentences
from rag.llm import LLMUnavailableError, translate_llm_error

CHARS_PER_TOKEN = 3.5  # a rough, tokenizer-free estimate for English prose (errs towards less text)
MAX_PROMPT_PAPERS = 5
LIST_PROMPT_PAPERS = 8  # list questions show each matching paper's two best sentences
MIN_PROMPT_PAPERS = 3
MIN_CHARS_PER_PAPER = 400  # below this an abstract says too little; show fewer papers instead
PROMPT_OVERHEAD_TOKENS = 160  # system prompt, chat template and paper headers
UNSUPPORTED = "(unsupported)"

SYSTEM_PROMPT = (
    "You answer questions about research papers using only the numbered paper abstracts given. "
    "After every statement, cite the paper it comes from by its number in square brackets, like [2]. "
    "Cite only the numbers given. If the abstracts do not answer the question, say so. "
    "Answer in at most {sentences} sentences, without a preamble."
)
LIST_INSTRUCTION = (
    "The question asks for a list. {count} papers match it; the key sentences of the most relevant are "
    "shown below. In two or three sentences of your own words, summarise how these papers address the "
    "question, citing them as [n]. Do not copy the sentences and do not list the papers one by one: "
    "the complete list is added after your text."
)


def estimate_tokens(text: str) -> int:
    """Tokens `text` will take, estimated from its length (no tokenizer needed).

    >>> estimate_tokens("x" * 35)
    10
    """
    return round(len(text) / CHARS_PER_TOKEN)


def trim_to_chars(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters at a word boundary, marked with an ellipsis.

    >>> trim_to_chars("Pruning removes whole channels from ResNet-50.", 30)
    'Pruning removes whole…'
    >>> trim_to_chars("short", 30)
    'short'
    """
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 1, 0)]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:") + "…"


def fit_papers(papers: list[RetrievedPaper], budget_chars: int, *, max_papers: int = MAX_PROMPT_PAPERS,
               min_papers: int = MIN_PROMPT_PAPERS, min_chars: int = MIN_CHARS_PER_PAPER) -> list[str]:
    """The abstracts of the first papers, trimmed so that together they fit `budget_chars`.

    Shows up to `max_papers`, fewer (down to `min_papers`) when each would get under `min_chars`.
    Space a short abstract leaves unused goes to the longer ones.

    >>> p = [RetrievedPaper(id=str(i), title="T", score=1, rank=i, abstract="word " * 100) for i in range(1, 7)]
    >>> [len(t) for t in fit_papers(p, 1500)]
    [499, 499, 499]
    >>> len(fit_papers(p, 100_000))
    5
    """
    count = min(max_papers, len(papers))
    while count > min_papers and budget_chars / count < min_chars:
        count -= 1
    texts = [" ".join((paper.abstract or paper.passage).split()) for paper in papers[:count]]
    # Water-filling: the shortest texts keep their length, the rest share what is left equally.
    shares = [0] * count
    left, open_slots = budget_chars, count
    for index in sorted(range(count), key=lambda i: len(texts[i])):
        share = left // open_slots
        shares[index] = min(len(texts[index]), share)
        left -= shares[index]
        open_slots -= 1
    return [trim_to_chars(text, share) for text, share in zip(texts, shares)]


def build_messages(question: str, kind: QuestionKind, numbered: list[tuple[int, RetrievedPaper, str]],
                   matching_count: int) -> list[BaseMessage]:
    """The chat messages: instructions, the papers as `[n] title (year)` + text, the question."""
    blocks = []
    for number, paper, text in numbered:
        year = f" ({paper.year})" if paper.year else ""
        blocks.append(f"[{number}] {paper.title}{year}\n{text}")
    task = LIST_INSTRUCTION.format(count=matching_count) + "\n\n" if kind == "list" else ""
    user = task + "Papers:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}"
    sentences = 2 if kind == "list" else 4
    return [SystemMessage(SYSTEM_PROMPT.format(sentences=sentences)), HumanMessage(user)]


def stream_llm_answer(question: str, search_query: str, kind: QuestionKind, papers: list[RetrievedPaper],
                      matching: list[RetrievedPaper], chat_model: BaseChatModel, context_tokens: int = 2048,
                      max_tokens: int = 512, max_papers: int = MAX_PROMPT_PAPERS) -> Iterator[str | Answer]:
    """Yield the model's text as it streams, then the checked `Answer` (answerer ``llm:<model>``).

    `papers` become `Answer.retrieved` and `[n]` means `papers[n-1]`; for ``kind == "list"``
    every paper in `matching` is listed and counted whatever the model wrote (a matching paper
    missing from `papers` is appended to `retrieved` so that it can be cited). Raises
    `LLMUnavailableError` — also in the middle of the stream — when the model fails or says nothing.
    """
    started = time.perf_counter()
    retrieved = list(papers) + [m for m in matching if m.id not in {p.id for p in papers}]
    budget_tokens = context_tokens - max_tokens - PROMPT_OVERHEAD_TOKENS - estimate_tokens(question)
    number_of = {paper.id: number for number, paper in enumerate(retrieved, start=1)}
    candidates = _matching_first(retrieved, matching) if kind == "list" else retrieved
    budget_chars = max(int(budget_tokens * CHARS_PER_TOKEN), 0)
    if kind == "list":
        # A synthesis over many papers needs their gist, not whole abstracts: the sentences that
        # make each one match. A shorter prompt also means an earlier first token on a laptop CPU.
        matching_ids = {paper.id for paper in matching}
        candidates = [paper for paper in candidates if paper.id in matching_ids][:LIST_PROMPT_PAPERS]
        gists = [paper.model_copy(update={"abstract": " ".join(best_sentences(search_query, paper.abstract
                                                                              or paper.passage, limit=2))})
                 for paper in candidates]
        texts = fit_papers(gists, budget_chars, max_papers=LIST_PROMPT_PAPERS)
    else:
        texts = fit_papers(candidates, budget_chars, max_papers=max_papers, min_papers=min(MIN_PROMPT_PAPERS, max_papers))
    # The prompt numbers each paper by its place in `retrieved` (so [n] in the stream already
    # means retrieved[n-1]), even when a list question shows them out of order.
    shown = {number_of[paper.id]: paper for paper in candidates[: len(texts)]}
    messages = build_messages(question, kind, list(zip(shown, shown.values(), texts)), len(matching))

    name = chat_model_name(chat_model)
    pieces: list[str] = []
    first_token_s = None
    try:
        for chunk in chat_model.stream(messages):
            text = str(chunk.text)
            if not text:
                continue
            if first_token_s is None:
                first_token_s = time.perf_counter() - started
            pieces.append(text)
            yield text
    except LLMUnavailableError:
        raise
    except Exception as exc:
        translated = translate_llm_error(exc, where=f"model {name}")
        if translated is None:
            raise
        raise translated from None

    raw = strip_reasoning("".join(pieces)).strip()
    cleaned, _, dropped = enforce_citations(raw, retrieved, {n: paper.id for n, paper in shown.items()})
    cleaned = attach_citations(cleaned, shown)

    if kind == "list":
        listing = format_match_list(matching, number_of)
        yield ("\n\n" if raw else "") + listing
        cleaned = f"{cleaned}\n\n{listing}" if cleaned else listing
    elif not cleaned:
        raise LLMUnavailableError(f"model {name} returned an empty answer; try again or use another model")

    numbering = {number: paper.id for number, paper in enumerate(retrieved, start=1)}
    text, citations, _ = enforce_citations(cleaned, retrieved, numbering)
    for citation in citations:  # a paper found by title or metadata has no passage: show its abstract
        if not citation.passage:
            citation.passage = trim_to_chars(retrieved[citation.number - 1].abstract, 300)
    total_s = time.perf_counter() - started
    timings = {"llm_total": round(total_s, 3)}
    if first_token_s is not None:
        timings["llm_first_token"] = round(first_token_s, 3)
    yield Answer(question=question, search_query=search_query, kind=kind, text=text, citations=citations,
                 retrieved=retrieved, answerer=f"llm:{name}", dropped_citations=dropped, timings_s=timings)


def chat_model_name(chat_model: BaseChatModel) -> str:
    """A short name for the model behind `chat_model`, for `Answer.answerer`."""
    for attribute in ("model_name", "model"):
        value = getattr(chat_model, attribute, None)
        if isinstance(value, str) and value:
            return value
    return chat_model._llm_type


def strip_reasoning(text: str) -> str:
    """Drop a reasoning model's ``<think>…</think>`` block.

    >>> strip_reasoning("<think>hmm</think>Answer [1].")
    'Answer [1].'
    """
    return re.sub(r"<think>.*?(</think>|$)", "", text, flags=re.DOTALL)


def format_match_list(matching: list[RetrievedPaper], position: dict[str, int]) -> str:
    """The complete numbered list of matching papers, each cited by its number in `retrieved`.

    >>> m = [RetrievedPaper(id="a", title="Pruning", year=2019, score=1, rank=1)]
    >>> print(format_match_list(m, {"a": 3}))
    1 paper matches:
    1. Pruning (2019) [3]
    """
    head = "1 paper matches:" if len(matching) == 1 else f"{len(matching)} papers match:"
    lines = [head]
    for index, paper in enumerate(matching, start=1):
        year = f" ({paper.year})" if paper.year else ""
        lines.append(f"{index}. {paper.title}{year} [{position[paper.id]}]")
    return "\n".join(lines)


_STOPWORDS = frozenset(["a", "an", "and", "are", "as", "at", "be", "been", "by", "can", "do", "does", "for", "from", "has", "have", "how", "in", "into", "is", "it", "its", "of", "on", "or", "our", "that", "the", "their", "them", "these", "they", "this", "those", "to", "using", "was", "we", "were", "which", "while", "with", "what", "when", "where", "who", "why", "will", "paper", "papers", "study", "method", "methods", "approach", "results", "show", "shows", "propose", "proposes", "proposed"])
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


def content_words(text: str) -> set[str]:
    """Lower-cased words that carry meaning (no stopwords, no citation numbers).

    >>> sorted(content_words("We prune ResNet-50 on ImageNet [2]."))
    ['imagenet', 'prune', 'resnet-50']
    """
    text = CITATION_MARK.sub(" ", text)
    words = re.findall(r"[a-z0-9][a-z0-9\-]*[a-z0-9]|[a-z]", text.lower())
    return {word for word in words if word not in _STOPWORDS and not word.isdigit()}


def best_supporting_paper(sentence: str, candidates: dict[int, RetrievedPaper], *, min_shared: int = 2,
                          min_fraction: float = 0.3) -> int | None:
    """The number of the candidate whose title/abstract/passage shares most words with `sentence`.

    None when no candidate shares at least `min_shared` words and `min_fraction` of them.

    >>> c = {1: RetrievedPaper(id="a", title="Channel pruning for ResNet-50", score=1, rank=1),
    ...      2: RetrievedPaper(id="b", title="Vision transformers", score=1, rank=2)}
    >>> best_supporting_paper("Channel pruning shrinks ResNet-50.", c)
    1
    >>> best_supporting_paper("Cats are nice.", c) is None
    True
    """
    words = content_words(sentence)
    if not words:
        return None
    best, best_shared = None, 0
    for number, paper in candidates.items():
        shared = len(words & content_words(f"{paper.title} {paper.abstract} {paper.passage}"))
        if shared > best_shared:
            best, best_shared = number, shared
    if best_shared >= min_shared and best_shared / len(words) >= min_fraction:
        return best
    return None


def attach_citations(text: str, candidates: dict[int, RetrievedPaper]) -> str:
    """Give each uncited statement in `text` the best-supporting paper's `[n]`, or "(unsupported)".

    Sentences with fewer than three content words ("Yes.", "In summary:") are left alone.

    >>> c = {2: RetrievedPaper(id="a", title="Channel pruning of ResNet-50", score=1, rank=1)}
    >>> attach_citations("Channel pruning shrinks ResNet-50 models. Quantum gravity explains dark energy.", c)
    'Channel pruning shrinks ResNet-50 models [2]. Quantum gravity explains dark energy (unsupported).'
    """
    out_lines = []
    for line in text.split("\n"):
        sentences = _SENTENCE_END.split(line)
        out_lines.append(" ".join(_cite_sentence(sentence, candidates) for sentence in sentences))
    return "\n".join(out_lines)


def _cite_sentence(sentence: str, candidates: dict[int, RetrievedPaper]) -> str:
    if not sentence.strip() or CITATION_MARK.search(sentence) or len(content_words(sentence)) < 3:
        return sentence
    number = best_supporting_paper(sentence, candidates)
    mark = f"[{number}]" if number is not None else UNSUPPORTED
    body = sentence.rstrip()
    trailing = sentence[len(body):]
    stripped = body.rstrip(".!?:;")
    return f"{stripped} {mark}{body[len(stripped):]}{trailing}"


def _matching_first(retrieved: list[RetrievedPaper], matching: list[RetrievedPaper]) -> list[RetrievedPaper]:
    """For a list question the prompt shows matching papers before the rest."""
    ids = {paper.id for paper in matching}
    return [p for p in retrieved if p.id in ids] + [p for p in retrieved if p.id not in ids]
