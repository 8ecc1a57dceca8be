"""Optional second-stage reranking with a sentence-transformers CrossEncoder from a local folder.

No cross-encoder ships offline, so this is off by default (`retrieval.reranker_path` unset) and
the default pipeline meets its bars without it. When configured, the top papers are re-scored
on (question, title + best passage) pairs and re-ordered; each score is kept in
`metadata["rerank"]` (the order is what changes: neither the judge nor the UI reads the score).
"""

from __future__ import annotations

from pathlib import Path

from paperchat.rag.answer import RetrievedPaper


class RerankerError(RuntimeError):
    """The configured reranker folder cannot be loaded."""


class CrossEncoderReranker:
    """Re-orders the first `top_n` papers by a CrossEncoder's score; the rest keep their order."""

    def __init__(self, path: Path, top_n: int = 30):
        from sentence_transformers import CrossEncoder

        if not Path(path).exists():
            raise RerankerError(f"reranker folder {path} does not exist: set retrieval.reranker_path to a "
                                "sentence-transformers CrossEncoder folder, or unset it")
        try:
            self.model = CrossEncoder(str(path), device="cpu")
        except Exception as error:
            raise RerankerError(f"cannot load the reranker from {path}: {error}") from error
        self.top_n = top_n

    def rerank(self, query: str, papers: list[RetrievedPaper]) -> list[RetrievedPaper]:
        head, tail = papers[:self.top_n], papers[self.top_n:]
        scores = self.model.predict([(query, f"{p.title}. {p.passage}") for p in head])
        for paper, score in zip(head, scores):
            paper.metadata["rerank"] = float(score)
        head.sort(key=lambda p: -p.metadata["rerank"])
        reordered = head + tail
        for rank, paper in enumerate(reordered, 1):
            paper.rank = rank
        return reordered
