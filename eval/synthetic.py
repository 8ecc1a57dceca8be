"""Synthetic corpora for scale benchmarks, built from the real bundled papers without a model call.

A synthetic paper takes a real "base" paper and recombines it: its title is the base title with
one word swapped in from another real title, its abstract keeps the base's sentence count with
about a third of the sentences replaced by sentences of other real abstracts. Its chunks are made
by the real `rag.chunking.chunk_paper` (with an approximate token count, so no tokenizer call),
and each chunk's vector is the real embedding of the base paper's matching chunk plus small
gaussian noise, renormalised. So the lexical index sees realistic text statistics, the dense index
sees realistic clusters, and building a million papers costs no embedding time.

    >>> import numpy as np
    >>> from paperchat.rag.papers import Paper
    >>> base = [Paper("Pruning nets", "We prune. It works. Done here.", year=2020)]
    >>> vecs = [np.ones((1, 4), dtype=np.float32) / 2]
    >>> batch = next(synthetic_batches(base, vecs, total=3, batch_papers=2, seed=0))
    >>> len(batch.papers), batch.vectors.shape[1], batch.papers[0].id
    (2, 4, 'syn-0000000')
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from paperchat.rag.chunking import Chunk, chunk_paper, split_sentences
from paperchat.rag.papers import Paper

# Default noise on each vector component; with 384 dimensions this keeps a synthetic chunk at a
# cosine of about 0.9 to its source, close to its source's neighbours and not identical to it.
NOISE_STD = 0.025
REPLACED_SENTENCE_SHARE = 0.34


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate of WordPiece tokens (about 1.3 per English word).

    >>> approx_tokens("one two three")
    4
    """
    return int(len(text.split()) * 1.3 + 0.5)


@dataclass
class SyntheticBatch:
    papers: list[Paper]
    chunks: list[Chunk]
    vectors: np.ndarray  # one unit-norm row per chunk, float32


def synthetic_batches(base_papers: Sequence[Paper], base_vectors: Sequence[np.ndarray], total: int,
                      batch_papers: int = 2000, seed: int = 0, noise_std: float = NOISE_STD,
                      max_tokens: int = 230) -> Iterator[SyntheticBatch]:
    """`total` synthetic papers in batches; `base_vectors[i]` holds the chunk vectors of `base_papers[i]`.

    Deterministic for a given seed; ids are ``syn-NNNNNNN`` so they never collide with real ids.
    """
    rng = np.random.default_rng(seed)
    sentences = [split_sentences(p.abstract) or [p.abstract] for p in base_papers]
    pool = [s for group in sentences for s in group]
    title_words = [p.title.split() for p in base_papers]
    years = [p.year for p in base_papers]
    n_base = len(base_papers)
    for start in range(0, total, batch_papers):
        count = min(batch_papers, total - start)
        papers, chunks, rows = [], [], []
        bases = rng.integers(0, n_base, size=count)
        for offset, b in enumerate(bases):
            b = int(b)
            words = list(title_words[b])
            donor = title_words[int(rng.integers(0, n_base))]
            if words and donor:
                words[int(rng.integers(0, len(words)))] = donor[int(rng.integers(0, len(donor)))]
            own = list(sentences[b])
            for i in range(len(own)):
                if rng.random() < REPLACED_SENTENCE_SHARE:
                    own[i] = pool[int(rng.integers(0, len(pool)))]
            paper = Paper(" ".join(words) or base_papers[b].title, " ".join(own),
                          id=f"syn-{start + offset:07d}", year=years[b])
            paper_chunks = chunk_paper(paper, max_tokens, approx_tokens)
            source = base_vectors[b]
            for chunk in paper_chunks:
                rows.append(source[min(chunk.index, len(source) - 1)])
            papers.append(paper)
            chunks.extend(paper_chunks)
        vectors = np.asarray(rows, dtype=np.float32)
        vectors = vectors + rng.normal(0.0, noise_std, size=vectors.shape).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        yield SyntheticBatch(papers, chunks, vectors)
