"""The one text toolkit: words, stopwords, stems, sentences and shortening, for every module.

Retrieval, judging, follow-up rewriting and extractive answers all decide whether two pieces of
text talk about the same thing; they agree only if they cut and normalise text the same way, so
those rules live here and nowhere else. Stemming is the Snowball (Porter 2) English stemmer, the
same algorithm family as SQLite FTS5's `porter` tokenizer that the lexical index uses.
"""

from __future__ import annotations

import re
import textwrap
from functools import lru_cache

import snowballstemmer

WORD = re.compile(r"\w+", re.UNICODE)

# Words that say what kind of question it is, not what it is about.
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had has
have having he her here hers how i if in into is it its itself just me more most my no nor not of off
on once only or other our out over own same she should so some such than that the their them then
there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your paper papers work works study studies research article
articles publication publications list show find give tell any there exist existing propose proposed
use uses using used approach approaches method methods
""".split())  # noqa: SIM905 - a word list reads best as text

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[\"'])")
_ABBREVIATION = re.compile(r"(\b(e\.g|i\.e|et al|vs|cf|Fig|Eq|Sec|resp|approx|incl)\.|\b[A-Z]\.)$")
_STEMMER = snowballstemmer.stemmer("english")


def fold_spaces(text: str) -> str:
    """Runs of whitespace (newlines included) as one space, ends trimmed.

    >>> fold_spaces("  a\\n b\\t\\tc ")
    'a b c'
    """
    return " ".join(text.split())


def shorten(text: str, width: int) -> str:
    """`text` folded and cut at a word boundary to at most `width` characters, marked with "…".

    >>> shorten("Deep residual learning for image recognition", 24)
    'Deep residual learning…'
    """
    return textwrap.shorten(fold_spaces(text), width=width, placeholder="…")


def words(text: str) -> list[str]:
    """Lower-case word tokens.

    >>> words("Pruning ResNet-50, fast!")
    ['pruning', 'resnet', '50', 'fast']
    """
    return [w.lower() for w in WORD.findall(text)]


@lru_cache(maxsize=100_000)
def stem(word: str) -> str:
    """The Snowball English stem of one lower-case word.

    >>> [stem(w) for w in ("pruning", "pruned", "prunes", "distillation", "distilling")]
    ['prune', 'prune', 'prune', 'distil', 'distil']
    """
    return _STEMMER.stemWord(word)


def content_stems(text: str) -> set[str]:
    """The stems of the words of `text` that name something (stopwords and single letters out).

    >>> sorted(content_stems("Which papers prune the ResNets?"))
    ['prune', 'resnet']
    """
    return {stem(w) for w in words(text) if w not in STOPWORDS and (len(w) > 1 or w.isdigit())}


def split_sentences(text: str) -> list[str]:
    """Sentences of an abstract (a simple rule that keeps "e.g. 3.5%" together well enough).

    >>> split_sentences("We prune ResNet-50. It keeps 76.1% top-1! Done")
    ['We prune ResNet-50.', 'It keeps 76.1% top-1!', 'Done']
    >>> split_sentences("Models (e.g. ResNet50) work. See J. Smith et al. 2020 for more.")
    ['Models (e.g. ResNet50) work.', 'See J. Smith et al. 2020 for more.']
    """
    sentences: list[str] = []
    for part in _SENTENCE_END.split(fold_spaces(text)):
        # only the last characters can end in an abbreviation (the search still sees the word start)
        if sentences and _ABBREVIATION.search(sentences[-1], max(0, len(sentences[-1]) - 12)):
            sentences[-1] += " " + part  # "e.g. ResNet" is not a sentence end
        elif part.strip():
            sentences.append(part.strip())
    return sentences
