"""Which sentences of a paper answer a question about it.

The paper is already chosen, so the question's words that describe it ("the low-latency
segmentation network for mobile apps") match many of its sentences and tell little about which one
holds the answer; the words of what it asks ("which *datasets* was it evaluated on?") and the kind
of answer it wants (a number, a name it does not give) tell more. `best_sentences` scores each
sentence by

- the question's words it shares (Snowball stems; an abbreviation the abstract defines, "CTV",
  also matches its long form, "clinical target volume"), each weighted by how few of the abstract's
  sentences use it (inverse sentence frequency), plus `ASK_WEIGHT` for a word of the question's ask
  (the words after "which", "what", "how", …);
- `NUMBER_BONUS` when the question asks for a quantity and the sentence gives a number the question
  does not; `NAME_BONUS` when it asks "which/what X" and the sentence names something the question
  does not (two capitals, or a capital and a digit: "CamVid", "JFT-4B", "Z3");
- up to `POSITION_WEIGHT` for coming later (results follow the motivation),

and picks greedily: after the first sentence, the question's words it covered count no more, so
the second is the one that adds what the first lacks: typically the description's sentence and
then the answer's.

The weights were chosen on the tune questions (`eval/questions/tune.jsonl`, the first round's
dev and holdout sets and `eval/questions/tune_facts.jsonl`), by whether the chosen sentences hold
each question's required facts (`python -m paperchat.eval.sentence_pick`); never on the validate,
fresh or sealed sets.
"""

from __future__ import annotations

import math
import re

from paperchat.rag.query import abbreviations_in, find_abbreviations
from paperchat.rag.text import content_stems, split_sentences

ASK_WEIGHT = 3.0
NUMBER_BONUS = 5.0
NAME_BONUS = 4.0
POSITION_WEIGHT = 2.0

# What a question asks: the words after its question word, up to a verb, a preposition or the end
# of the clause ("which *mobile network* does …", "what's *the best COCO score* reported for …").
_ASK = re.compile(r"\b(which|what(?:'s| is| was| are| were)?|how|whose|who|where|when)\s+"
                  r"((?:[\w-]+\s+){0,4}?[\w-]+?)"
                  r"(?=\s+(?:does|did|do|was|is|are|were|has|have|had|can|could|would|will|they|it|of"
                  r"|for|in|on|with|by|from|to|that|when|after|under)\b|[?,:;]|$)", re.IGNORECASE)
# An ask that wants a quantity rather than a name.
_QUANTITY = re.compile(r"\b(many|much|often|fast|faster|accurate|long|large|big|well|deep|high|low|small"
                       r"|top-\d|accuracy|error|speed|speed-?up|score|percentage|share|number|size|fraction"
                       r"|proportion|rate|ratio|gain|overhead|improvement|drop|result|reduction|times|auc|ap"
                       r"|map|bleu|f1|dice|latency|throughput|cost|count)\b", re.IGNORECASE)
_ASKS_FOR_NUMBER = re.compile(r"\b(accuracy|error|percent|speed|bandwidth|fraction|share"
                              r"|proportion|score|rate|ratio|speed-?up|size|number of)\b", re.IGNORECASE)
# "Which papers …" asks for papers, not for a name inside one.
_ASKS_FOR_PAPERS = re.compile(r"^(?:the\s+)?(?:papers?|works?|stud(?:y|ies)|articles?)\b", re.IGNORECASE)
_NUMBER = re.compile(r"\d[\d,.]*")
_TOKEN = re.compile(r"\b[A-Za-z0-9][\w-]*\b")


def best_sentences(question: str, abstract: str, limit: int = 2, max_chars: int = 0) -> list[str]:
    """Up to `limit` sentences of `abstract` that together best answer `question`, in abstract order;
    with `max_chars`, the next best ones too while all fit in that many characters (joined by spaces).

    >>> abstract = ("ENet is a network for real-time segmentation on mobile devices. "
    ...             "It is 18 times faster than prior models. "
    ...             "We have tested it on CamVid, Cityscapes and SUN datasets.")
    >>> best_sentences("Which datasets was the fast mobile segmentation network evaluated on?", abstract)
    ['ENet is a network for real-time segmentation on mobile devices.', 'We have tested it on CamVid, \
Cityscapes and SUN datasets.']
    >>> best_sentences("What top-1 accuracy does MEAL V2 reach?",
    ...     "We boost ResNet-50. MEAL V2 reaches 80.67% top-1 accuracy. Code is public.", limit=1)
    ['MEAL V2 reaches 80.67% top-1 accuracy.']
    """
    sentences = split_sentences(abstract)
    if not sentences:
        return []
    defined = find_abbreviations([abstract])
    wanted = _stems(question, defined)
    stems = [_stems(sentence, defined) for sentence in sentences]
    count = len(sentences)
    weight = {w: math.log((count + 1) / (sum(w in s for s in stems) + 0.5)) for w in wanted}
    asked = _ASK.findall(question)
    asks = [ask for _, ask in asked]
    for ask in asks:
        for w in _stems(ask, defined) & wanted:
            weight[w] += ASK_WEIGHT
    wants_number = bool(_ASKS_FOR_NUMBER.search(question)) or any(_QUANTITY.search(a) for a in asks)
    # "How are they trained?" asks for a manner, "which solver?" for a name
    wants_name = any(word.lower() != "how" and not _QUANTITY.search(ask) and not _ASKS_FOR_PAPERS.match(ask)
                     for word, ask in asked)
    given_numbers, given_names = set(_NUMBER.findall(question)), _names(question)

    def bonus(position: int, sentence: str) -> float:
        points = POSITION_WEIGHT * position / count
        if wants_number and set(_NUMBER.findall(sentence)) - given_numbers:
            points += NUMBER_BONUS
        if wants_name and _names(sentence) - given_names:
            points += NAME_BONUS
        return points

    bonuses = [bonus(position, sentence) for position, sentence in enumerate(sentences)]
    chosen: list[int] = []
    covered: set[str] = set()
    length = -1  # of the chosen sentences joined by spaces
    while len(chosen) < (count if max_chars else min(limit, count)):
        best = max((p for p in range(count) if p not in chosen),
                   key=lambda p, covered=covered: (sum(weight[w] for w in (wanted & stems[p]) - covered)
                                                   + bonuses[p], -p))
        length += len(sentences[best]) + 1
        if len(chosen) >= limit and length > max_chars:
            break
        chosen.append(best)
        covered = covered | stems[best]
    return [sentences[p] for p in sorted(chosen)]


def _stems(text: str, defined: dict[str, set[str]]) -> set[str]:
    """`content_stems` of `text`, with the long form of each abbreviation in `defined` it uses."""
    stems = content_stems(text)
    for short in abbreviations_in(text):
        for long in defined.get(short, ()):
            stems |= content_stems(long)
    return stems


def _names(text: str) -> set[str]:
    """The names `text` gives, lower-case: words with two capitals, or a capital and a digit."""
    return {token.lower() for token in _TOKEN.findall(text)
            if sum(c.isupper() for c in token) >= 2
            or (token[0].isupper() and any(c.isdigit() for c in token))}
