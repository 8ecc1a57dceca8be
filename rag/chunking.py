"""Splitting abstracts into chunks that fit the embedding model's window.

Pure functions: text in, chunks out; the token counter is passed in (the embedding model's own
tokenizer in production, a word count in examples). The title travels with every chunk, so a
chunk from the middle of an abstract still says which paper it is from, and no text is dropped:
a sentence longer than the window is cut at word boundaries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from paperchat.rag.papers import CHUNK_COUNT, CHUNK_INDEX, CONTENT_HASH, PAPER_ID, TITLE, YEAR, Paper
from paperchat.rag.text import split_sentences


@dataclass(frozen=True)
class Chunk:
    id: str
    paper_id: str
    index: int
    text: str  # title + passage: what is embedded and indexed
    passage: str  # the abstract part only, for display
    metadata: dict


def _cut_long(sentence: str, budget: int, count: Callable[[str], int]) -> list[str]:
    words, pieces, current = sentence.split(), [], []
    for word in words:
        if current and count(" ".join(current + [word])) > budget:
            pieces.append(" ".join(current))
            current = []
        current.append(word)
    if current:
        pieces.append(" ".join(current))
    return pieces


def split_passages(title: str, abstract: str, max_tokens: int, count: Callable[[str], int],
                   overlap_sentences: int = 1) -> list[str]:
    """Passages of whole sentences, each fitting `max_tokens` together with the title.

    >>> words = lambda text: len(text.split())
    >>> split_passages("T", "A b c. D e f. G h i.", max_tokens=8, count=words)
    ['A b c. D e f.', 'D e f. G h i.']
    >>> split_passages("T", "Short.", max_tokens=8, count=words)
    ['Short.']
    """
    budget = max(8, max_tokens - count(title) - 2)
    sentences = []
    for sentence in split_sentences(abstract):
        sentences.extend(_cut_long(sentence, budget, count) if count(sentence) > budget else [sentence])
    passages: list[str] = []
    start = 0
    while start < len(sentences):
        end = start + 1
        while end < len(sentences) and count(" ".join(sentences[start:end + 1])) <= budget:
            end += 1
        passages.append(" ".join(sentences[start:end]))
        if end >= len(sentences):
            break
        start = max(start + 1, end - overlap_sentences)
    return passages or [abstract.strip()]


def chunk_paper(paper: Paper, max_tokens: int, count: Callable[[str], int], overlap_sentences: int = 1,
                max_title_chars: int = 300) -> list[Chunk]:
    """The chunks of one paper, with the metadata both indexes store.

    The title that travels with each chunk is clipped to `max_title_chars`, so that a giant
    title neither pushes the abstract out of the embedding window nor is stored once per chunk.

    >>> p = Paper("Pruning", "We prune ResNet-50. It stays accurate.", year=2021)
    >>> [c.id.endswith(f"#{c.index}") for c in chunk_paper(p, 256, lambda t: len(t.split()))]
    [True]
    >>> huge = Paper("word " * 20_000, "We prune ResNet-50. It stays accurate.")
    >>> [len(c.text) < 400 for c in chunk_paper(huge, 256, lambda t: len(t.split()))]
    [True]
    """
    title = paper.title if len(paper.title) <= max_title_chars else paper.title[:max_title_chars - 1] + "…"
    passages = split_passages(title, paper.abstract, max_tokens, count, overlap_sentences)
    chunks = []
    for index, passage in enumerate(passages):
        metadata = {PAPER_ID: paper.id, TITLE: title, CHUNK_INDEX: index, CHUNK_COUNT: len(passages),
                    CONTENT_HASH: paper.content_hash}
        if paper.year is not None:
            metadata[YEAR] = paper.year
        chunks.append(Chunk(id=f"{paper.id}#{index}", paper_id=paper.id, index=index,
                            text=f"{title}. {passage}", passage=passage, metadata=metadata))
    return chunks
