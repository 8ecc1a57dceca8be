"""What a paper is, how it is named, and the metadata keys every index shares.

A `Paper` is the unit users ask about; chunks and index rows point back to it by `paper_id`.
The id is the source's own where it has one (arXiv id, BEIR `_id`, a CSV `id` column), else it
is derived from the normalised title so that the same paper read from two files merges.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field, replace

# Metadata keys, shared by the dense index (Chroma), the lexical index and the retriever.
PAPER_ID = "paper_id"
TITLE = "title"
YEAR = "year"
CHUNK_INDEX = "chunk_index"
CHUNK_COUNT = "chunk_count"
CONTENT_HASH = "content_hash"


@dataclass(frozen=True)
class Paper:
    """One paper: the title and abstract, and what the source told about it.

    `sources` lists where it was read ("file.txt:12"); two records of one paper merge into one
    Paper whose sources name both.
    """

    title: str
    abstract: str
    id: str = ""
    authors: tuple[str, ...] = ()
    author_count: int | None = None
    date: str | None = None  # as the source wrote it, e.g. "Oct 13, 2018" or "2018-10-13"
    year: int | None = None
    upvotes: int | None = None
    url: str | None = None
    categories: tuple[str, ...] = ()
    sources: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", paper_id_from_title(self.title, self.abstract))

    @property
    def content_hash(self) -> str:
        """Changes when anything that is indexed changes (title, abstract, metadata)."""
        parts = [self.title, self.abstract, str(self.year), str(self.date), str(self.author_count),
                 ",".join(self.authors), str(self.upvotes), str(self.url), ",".join(self.categories)]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]

    def merged_with(self, other: Paper) -> Paper:
        """The same paper read twice: keep the fuller record, union the sources.

        >>> a = Paper("T", "abc", sources=("a.txt:1",), year=2020)
        >>> b = Paper("T", "abc", sources=("b.txt:9",), upvotes=3)
        >>> m = a.merged_with(b); (m.sources, m.year, m.upvotes)
        (('a.txt:1', 'b.txt:9'), 2020, 3)
        """
        filled = {name: getattr(other, name) for name in
                  ("author_count", "date", "year", "upvotes", "url")
                  if getattr(self, name) is None and getattr(other, name) is not None}
        if not self.authors and other.authors:
            filled["authors"] = other.authors
        if not self.categories and other.categories:
            filled["categories"] = other.categories
        if len(other.abstract) > len(self.abstract):
            filled["abstract"] = other.abstract
        sources = tuple(dict.fromkeys(self.sources + other.sources))
        return replace(self, sources=sources, **filled)


def normalize_title(title: str) -> str:
    """Case, accents, punctuation and spacing folded away, for matching titles.

    >>> normalize_title("  ResNet  Strikes Back: An Improved Training Procedure in timm ")
    'resnet strikes back an improved training procedure in timm'
    """
    text = unicodedata.normalize("NFKD", title)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = re.sub(r"[^\w]+", " ", text)
    return " ".join(text.split())


def paper_id_from_title(title: str, abstract: str = "") -> str:
    """A stable id for a paper whose source gives none: the same title, the same id.

    A title with nothing left after normalising ("???", emoji, zero-width spaces) does not tell
    papers apart, so its id comes from the title and abstract as written.

    >>> paper_id_from_title("ResNet strikes back!") == paper_id_from_title("resnet  STRIKES back")
    True
    >>> paper_id_from_title("???", "One abstract.") == paper_id_from_title("???", "Another abstract.")
    False
    """
    key = normalize_title(title) or "\x1f".join((" ".join(title.split()), " ".join(abstract.split())))
    # surrogatepass: text with a lone surrogate still gets an id; the reader rejects it by name.
    return "t-" + hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
