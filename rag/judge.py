"""Deciding what the retrieved papers mean for a question: its kind, which papers match, or none.

Retrieval ranks papers and measures, per paper, `Signals` that mean the same thing for every
question (`rag.answer.Signals`): the dense similarity of its best chunk, how much of the
question's key concepts it mentions anywhere, in its title, and together in one sentence, its
BM25 score. The judge turns them into one probability per paper with a logistic model whose
weights are fitted on `eval/questions/tune.jsonl` only (`eval/tune_judge.py` writes
`rag/judge_model.json`); features are taken relative to the question's best paper where that is
what carries meaning ("far behind the best paper" generalises; a raw cosine of 0.41 does not).

- list questions: every paper with probability >= `match_threshold` matches; papers between
  `related_threshold` and it are "possibly related", shown apart, outside the count;
- single questions: the most probable paper;
- abstention, only when the collection lacks the question's subject: the best probability is below
  `abstain_threshold` (single-fact questions: `abstain_threshold_single`) and no top paper names
  all the question's key concepts together.

`judge()` is pure: it returns copies of the papers with `matches`, `related` and `probability` set.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from paperchat.rag.answer import QuestionKind, RetrievedPaper, Signals
from paperchat.rag.settings import RetrievalSettings

MODEL_FILE = Path(__file__).with_name("judge_model.json")

_LIST_PATTERNS = re.compile(
    r"^\s*(which|what|list|name|show|find|give|are there|is there|any)\b(?:\W+[\w-]+){0,3}?\W+"
    r"(papers|works|articles|studies|publications|approaches|methods|models|surveys|overviews)\b"
    r"|^\s*(what|which)(?: \w+)? (work|research|literature)\b"
    r"|^\s*which (?:ones )?of (those|them|these)\b|^\s*which ones\b"
    r"|^\s*(list|name|show|find)\b"
    r"|^\s*(are|is) there\b"
    r"|^\s*(any|anything|anyone|anybody)\b"
    r"|^\s*(has|have|did|does|do) (anyone|anybody|someone|any)\b"
    r"|^\s*(has|have) \S+(?: \S+)? been\b"
    r"|^\s*what(?:'s| is| has been| have people) (?:out |in )?(?:there|here|done)\b"
    r"|^\s*what has been (?:done|written|published|proposed)\b"
    r"|\b(papers|works|studies) (on|about|that|which|using|proposing)\b",
    re.IGNORECASE)
# A question that starts with none of these words names a topic ("Recommender systems papers?").
# A hedge may come first: "Roughly how much compute ...?" asks for one figure, not for papers.
_QUESTION_OPENER = re.compile(r"^\s*(?:(?:roughly|approximately|about|around|exactly|precisely)\s+)?"
                              r"(what|which|who|whom|whose|when|where|why|how|"
                              r"is|are|was|were|do|does|did|can|could|should|would|will|has|have|had|"
                              r"in|on|at|for|from|by|with|over|under|during|across|through|"
                              r"after|before|using|to|of|up|according|"
                              r"tell|give|name|list|show|find|explain|describe)\b", re.IGNORECASE)

# Where a question's own clause may start: "The line-graph GNN for atomistic models: which dataset …?",
# "There's a paper that … . Which datasets did it use?", "Apart from ResNets, which architecture …?",
# "Training a ResNet-50 with multi-labels gives what top-1 accuracy?" ("which" inside a question is
# more often a relative pronoun: "work which prunes BERT").
_CLAUSE_BREAK = re.compile(r"[:;,]\s+|\s[—–]\s|\s--?\s|(?<=[.!?])\s+|\s(?=(?:what|how many|how much)\s)")


def question_kind(question: str) -> QuestionKind:
    """"list" when the question asks for papers in the plural, else "single".

    >>> question_kind("Which papers prune ResNet-50?")
    'list'
    >>> question_kind("What top-1 accuracy does MEAL V2 reach?")
    'single'
    >>> question_kind("What work is there on dataset distillation?"), question_kind("Has anyone pruned BERT?")
    ('list', 'list')
    >>> question_kind("Recommender systems papers?"), question_kind("Which paper first proposed dropout?")
    ('list', 'single')
    >>> question_kind("Roughly how much compute went into meta-training VeLO?")
    'single'
    >>> question_kind("What's in here on federated learning?")
    'list'

    A question may open with what it is about and ask after a colon, a semicolon, a dash, a comma or
    a full stop:
    >>> question_kind("The converting-autoencoder framework: what board did it run on?")
    'single'
    >>> question_kind("Dataset distillation: which papers scale it to ImageNet?")
    'list'
    >>> question_kind("There's a study of XAI on satellite images. Which datasets did it use?")
    'single'
    >>> question_kind("Apart from ResNets, which lightweight architecture was the method tested on?")
    'single'
    >>> question_kind("Each image becomes how many tokens in the token-based ImageNet classifier?")
    'single'

    A plural names what is asked for only near the question word ("which of the papers", not "what
    share of ImageNet trains vision models"):
    >>> question_kind("What share of ImageNet is enough to train vision models?")
    'single'
    """
    clauses = [question] + [question[m.end():] for m in _CLAUSE_BREAK.finditer(question)]
    if any(map(_LIST_PATTERNS.search, clauses)) or not any(map(_QUESTION_OPENER.search, clauses)):
        return "list"
    return "single"


FEATURES = ("dense", "dense_gap", "dense_z", "fused_z", "fused_gap", "key_coverage", "key_gap",
            "sentence_key_coverage", "title_key_coverage", "phrase_coverage", "coverage", "bm25_relative",
            "rank_score", "absent_share", "bias")


@dataclass(frozen=True)
class QuestionStats:
    """What a paper is compared with: the best and the spread of its question's candidates."""

    best_dense: float = 0.0
    mean_dense: float = 0.0
    spread_dense: float = 1.0
    best_fused: float = 0.0
    mean_fused: float = 0.0
    spread_fused: float = 1.0
    best_key_coverage: float = 0.0
    top_bm25: float = 0.0


def features(paper: Signals, fused: float, stats: QuestionStats, rank: int) -> list[float]:
    """The judge's inputs for one paper: its signals, several relative to its question's other papers.

    >>> stats = QuestionStats(best_dense=0.6, best_fused=2.0)
    >>> f = dict(zip(FEATURES, features(Signals(dense=0.5), 1.0, stats, 1)))
    >>> f["dense_gap"], f["fused_gap"], f["rank_score"]
    (0.1, 1.0, 1.0)
    """
    return [paper.dense, round(stats.best_dense - paper.dense, 6),
            (paper.dense - stats.mean_dense) / stats.spread_dense,
            (fused - stats.mean_fused) / stats.spread_fused,
            stats.best_fused - fused, paper.key_coverage,
            round(stats.best_key_coverage - paper.key_coverage, 6), paper.sentence_key_coverage,
            paper.title_key_coverage, paper.phrase_coverage, paper.coverage,
            paper.bm25 / stats.top_bm25 if stats.top_bm25 > 0 else 0.0, 1.0 / math.sqrt(rank),
            paper.absent_share, 1.0]


@dataclass(frozen=True)
class JudgeModel:
    """Logistic-regression weights over `FEATURES`, and where they came from."""

    weights: tuple[float, ...]
    fitted_on: str = ""

    def probability(self, x: list[float]) -> float:
        """P(match) for one feature vector.

        >>> JudgeModel(weights=(0,) * (len(FEATURES) - 1) + (0.0,)).probability([0.0] * len(FEATURES))
        0.5
        """
        z = sum(w * v for w, v in zip(self.weights, x))
        return 1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, z))))

    @classmethod
    def from_dict(cls, data: dict) -> JudgeModel:
        if list(data["features"]) != list(FEATURES):
            raise ValueError(f"judge model features {data['features']} differ from {list(FEATURES)}: "
                             "re-run eval/tune_judge.py")
        return cls(weights=tuple(float(w) for w in data["weights"]), fitted_on=data.get("fitted_on", ""))

    def to_dict(self) -> dict:
        return {"features": list(FEATURES), "weights": [round(w, 6) for w in self.weights],
                "fitted_on": self.fitted_on}


@lru_cache(maxsize=1)
def shipped_model() -> JudgeModel:
    """The model fitted on the tune questions, shipped beside this module."""
    return JudgeModel.from_dict(json.loads(MODEL_FILE.read_text(encoding="utf-8")))


@dataclass
class Judgement:
    kind: QuestionKind
    abstained: bool
    matching: list[RetrievedPaper]  # the papers that answer it, most probable first (list: all of them)
    best_score: float  # the best probability
    related: list[RetrievedPaper] | None = None  # possibly related (list questions), most probable first
    papers: list[RetrievedPaper] | None = None  # every judged paper, in retrieval order, verdicts set


def question_features(papers: list[RetrievedPaper]) -> list[list[float]]:
    """`features` for each of a question's papers (in the given order)."""
    if not papers:
        return []
    dense = [p.signals.dense for p in papers]
    fused = [p.score for p in papers]
    stats = QuestionStats(best_dense=max(dense), mean_dense=statistics.fmean(dense),
                          spread_dense=statistics.pstdev(dense) or 1.0, best_fused=max(fused),
                          mean_fused=statistics.fmean(fused), spread_fused=statistics.pstdev(fused) or 1.0,
                          best_key_coverage=max(p.signals.key_coverage for p in papers),
                          top_bm25=max(p.signals.bm25 for p in papers))
    return [features(p.signals, p.score, stats, rank) for rank, p in enumerate(papers, 1)]


def question_inputs(papers: list[RetrievedPaper], model: JudgeModel) -> tuple[list[float], bool]:
    """What `decide` needs besides the settings: each paper's probability, and whether a top paper
    names all the question's key concepts together."""
    probabilities = [model.probability(x) for x in question_features(papers)]
    return probabilities, any(carries_key_concepts(p) for p in papers[:3])


def carries_key_concepts(paper: RetrievedPaper) -> bool:
    """Whether the paper names every key concept of the question together (a sentence or its title),
    and the collection lacks none of the question's concepts.
    """
    s = paper.signals
    return s.sentence_key_coverage >= 0.999 and s.absent_share == 0.0 and len(s.concepts_matched) >= 2


@dataclass(frozen=True)
class Verdict:
    """The decision alone, by paper id: what `judge` applies to the papers."""

    abstained: bool
    matching: tuple[str, ...]  # most probable first
    related: tuple[str, ...]
    best: float


def decide(ids: list[str], probabilities: list[float], kind: QuestionKind, settings: RetrievalSettings,
           key_concepts_together: bool = False) -> Verdict:
    """The judge's rules over one question's papers (`ids` in retrieval order, with their probabilities).

    `key_concepts_together`: a top paper names all the question's key concepts in one sentence or
    its title, so the collection has the subject and the judge does not abstain.

    >>> s = RetrievalSettings(match_threshold=0.5, related_threshold=0.2, abstain_threshold=0.3,
    ...                       abstain_threshold_single=0.8)
    >>> decide(["a", "b", "c"], [0.9, 0.3, 0.1], "list", s)
    Verdict(abstained=False, matching=('a',), related=('b',), best=0.9)
    >>> decide(["a", "b"], [0.2, 0.1], "list", s).abstained
    True
    >>> decide(["a", "b"], [0.2, 0.1], "list", s, True).matching
    ('a',)
    """
    order = sorted(range(len(ids)), key=lambda i: -probabilities[i])
    best = probabilities[order[0]] if ids else 0.0
    threshold = settings.abstain_threshold if kind == "list" else settings.abstain_threshold_single
    if not ids or (best < threshold and not key_concepts_together):
        return Verdict(True, (), (), best)
    if kind != "list":
        return Verdict(False, (ids[order[0]],), (), best)
    matching = [ids[i] for i in order if probabilities[i] >= settings.match_threshold] or [ids[order[0]]]
    related = [ids[i] for i in order if ids[i] not in matching
               and probabilities[i] >= settings.related_threshold][:settings.related_max]
    return Verdict(False, tuple(matching), tuple(related), best)


def judge(question: str, papers: list[RetrievedPaper], settings: RetrievalSettings,
          kind: QuestionKind | None = None, model: JudgeModel | None = None) -> Judgement:
    """Which of `papers` (retrieval order) answer `question`, or that none does. Leaves `papers` alone."""
    kind = kind or question_kind(question)
    model = model or shipped_model()
    probabilities, together = question_inputs(papers, model)
    verdict = decide([p.id for p in papers], probabilities, kind, settings, together)
    matched, near = set(verdict.matching), set(verdict.related)
    judged = [p.model_copy(update={"probability": round(pr, 4), "matches": p.id in matched,
                                   "related": p.id in near})
              for p, pr in zip(papers, probabilities)]
    by_id = {p.id: p for p in judged}
    return Judgement(kind, verdict.abstained, [by_id[i] for i in verdict.matching], verdict.best,
                     [by_id[i] for i in verdict.related], judged)


def narrow(papers: list[RetrievedPaper], settings: RetrievalSettings) -> Judgement:
    """Which of the previous answer's `papers` satisfy a follow-up's narrowing ("which of those use
    ImageNet?"): those that name the narrowing's key concepts nearly as fully as the best of them.

    The probabilities of `judge` are calibrated on whole-collection candidate lists; among a handful
    of papers the concept mentions decide (fitted on the tune set's follow-ups). Nothing naming them
    means none of those papers does ("abstained"). Leaves `papers` alone.

    >>> s = RetrievalSettings(narrow_min_coverage=0.2, narrow_relative=0.6)
    >>> ps = [RetrievedPaper(id=i, title=i, score=0, rank=1, signals=Signals(key_coverage=k))
    ...       for i, k in (("a", 1.0), ("b", 0.7), ("c", 0.3))]
    >>> [p.id for p in narrow(ps, s).matching]
    ['a', 'b']
    >>> narrow(ps[2:], s.model_copy(update={"narrow_min_coverage": 0.5})).abstained
    True
    """
    best = max((p.signals.key_coverage for p in papers), default=0.0)
    floor = max(settings.narrow_min_coverage, settings.narrow_relative * best)
    matched = {p.id for p in papers
               if best >= settings.narrow_min_coverage and p.signals.key_coverage >= floor}
    judged = [p.model_copy(update={"matches": p.id in matched, "related": False}) for p in papers]
    matching = sorted((p for p in judged if p.matches), key=lambda p: -p.signals.key_coverage)
    return Judgement("list", not matching, matching, best, [], judged)
