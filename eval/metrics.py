"""Retrieval and answer metrics: pure functions over ids, texts and result records.

Ranking metrics (recall@k, MRR, nDCG) use binary relevance and the conventions of BEIR / trec_eval,
so numbers here agree with `ranx` (tests/test_eval_metrics.py checks) and published BEIR tables:
nDCG uses the log2 discount and an ideal DCG over ``min(k, |relevant|)`` documents. A metric whose
denominator is empty for a run (no unanswerable questions, say) is ``None`` in `score_results`, never
a made-up 0 or 1. (Written here rather than imported from ranx: ranx costs 14 s to import and over a
minute of numba compiling on first use, on every `paperchat eval`.)
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Collection, Iterable, Sequence
from statistics import fmean

ANSWERABLE_KINDS = ("list", "single")
# The ranking metrics of `score_results`: our key, the metric's name (MRR over all ranks).
RANKING_METRICS = {"recall_at_5": "recall@5", "recall_at_10": "recall@10", "recall_at_20": "recall@20",
                   "mrr": "mrr", "ndcg_at_10": "ndcg@10"}
# The keys of `score_results`, in report order (plus "counts", a dict of questions per kind).
METRIC_KEYS = ("recall_at_5", "recall_at_10", "recall_at_20", "mrr", "ndcg_at_10", "list_recall",
               "list_precision", "single_cited_gold", "must_mention", "abstain_accuracy",
               "false_abstain_rate", "citation_validity", "latency_p50_s", "latency_p95_s")


def _require_relevant(relevant: Collection[str]) -> None:
    if not relevant:
        raise ValueError("no relevant ids: ranking metrics are undefined; skip this query")


def _metric_score(metric: str, ranking: list[str], relevant: set[str]) -> float:
    """One query's score on one metric ("recall@10", "ndcg@10", "mrr", "mrr@10")."""
    name, _, cut = metric.partition("@")
    if cut and (not cut.isdigit() or int(cut) < 1):
        raise ValueError(f"unknown metric {metric!r}: the cut-off after @ must be a whole number ≥ 1")
    top = ranking[:int(cut)] if cut else ranking
    if name == "recall":
        if not cut:
            raise ValueError(f"unknown metric {metric!r}: recall needs a cut-off, like recall@10")
        return sum(doc in relevant for doc in top) / len(relevant)
    if name == "mrr":
        return next((1.0 / rank for rank, doc in enumerate(top, start=1) if doc in relevant), 0.0)
    if name == "ndcg":
        k = int(cut) if cut else len(ranking)  # no cut-off: ranx's convention, k = the ranking's length
        dcg = sum(1.0 / math.log2(rank + 1) for rank, doc in enumerate(top, start=1) if doc in relevant)
        ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(k, len(relevant)) + 1))
        return dcg / ideal
    raise ValueError(f"unknown metric {metric!r}: use recall@k, ndcg@k, mrr or mrr@k")


def ranking_scores(rankings: dict[str, Sequence[str]], relevant: dict[str, Collection[str]],
                   metrics: Sequence[str]) -> dict[str, float]:
    """Ranking metrics ("recall@10", "ndcg@10", "mrr", "mrr@10", ranx's names), each the mean over the
    queries of `relevant`; a query missing from `rankings` scores 0.

    Relevance is binary; a repeated id keeps its first rank.

    >>> ranking_scores({"q1": ["x", "a", "b"], "q2": ["c"]}, {"q1": {"a", "b"}, "q2": {"c"}},
    ...                ["recall@1", "mrr"])
    {'recall@1': 0.5, 'mrr': 0.75}
    >>> round(ranking_scores({"q": ["x", "a"]}, {"q": {"a"}}, ["ndcg@10"])["ndcg@10"], 4)
    0.6309
    """
    for ids in relevant.values():
        _require_relevant(ids)
    per_query = {metric: [] for metric in metrics}
    for query, ids in relevant.items():
        ranking, gold = list(dict.fromkeys(rankings.get(query, ()))), set(ids)
        for metric in metrics:
            per_query[metric].append(_metric_score(metric, ranking, gold))
    return {metric: fmean(scores) if scores else 0.0 for metric, scores in per_query.items()}


def citation_precision(cited_ids: Iterable[str], gold_ids: Collection[str]) -> float:
    """Share of the cited papers that are gold; citing nothing scores 0.

    >>> citation_precision(["a", "b", "x", "a"], {"a", "b", "c"})
    0.6666666666666666
    """
    cited = set(cited_ids)
    return len(cited & set(gold_ids)) / len(cited) if cited else 0.0


def citation_recall(cited_ids: Iterable[str], gold_ids: Collection[str]) -> float:
    """Share of the gold papers that were cited.

    >>> citation_recall(["a", "x"], {"a", "b"})
    0.5
    """
    _require_relevant(gold_ids)
    gold = set(gold_ids)
    return len(set(cited_ids) & gold) / len(gold)


_DIGIT_GROUP_SPACES = "\u00a0\u2009\u202f\u2007"  # no-break, thin, narrow no-break, figure space
_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2212"
_QUOTES = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'}


def normalize_fact(text: str) -> str:
    """Fold what differs between two ways of writing one fact: case, accents, unicode forms,
    thousands separators, spacing before ``%`` (and the word "percent"), dashes, quotes, spaces,
    and a hyphen between a number and its unit ("128-bytes" is "128 bytes"; "top-1" stays). TeX's
    escapes of abstracts ("96.98\\%") are read as the chat and `ask` show them ("96.98%").

    >>> normalize_fact("Top-1 accuracy of 80.67 % on 1,281,167\u202fimages")
    'top-1 accuracy of 80.67% on 1281167 images'
    >>> normalize_fact("12\u2009000 GPU\u2013hours, 3 percent, 128-bytes")
    '12000 gpu-hours, 3%, 128 bytes'
    >>> normalize_fact(r"a test accuracy of 96.98\\%, R\\&D, EfficientNet\\_B0")
    'a test accuracy of 96.98%, r&d, efficientnet b0'

    A number glued to a word ("up to 1.72times faster") is read as two words; units stay ("48k", "7GB"):
    >>> normalize_fact("up to 1.72times faster, 48k articles, 7GB")
    'up to 1.72 times faster, 48k articles, 7gb'
    """
    text = re.sub(r"\\([%&#$_])", r"\1", text).replace("_", " ")
    text = re.sub(rf"(?<=\d)[{_DIGIT_GROUP_SPACES}](?=\d{{3}}(?!\d))", "", text)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = re.sub(f"[{_DASHES}]", "-", text)
    text = text.translate(str.maketrans(_QUOTES))
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)
    text = re.sub(r"(?<=\d)\s*(?:%|percent\b|per cent\b)", "%", text)
    text = re.sub(r"(?<=\d)-(?=[a-z])", " ", text)
    text = re.sub(r"(?<=\d)(?=[a-z]{4,})", " ", text)
    return " ".join(text.split())


# A hyphen beside a letter: "mlp-mixer", "resnet-50", "3-layer".
_WORD_HYPHEN = re.compile(r"(?<=[a-z])-(?=[a-z0-9])|(?<=[0-9])-(?=[a-z])")


def mentions(answer: str, fact: str) -> bool:
    """Whether the answer states the fact, after `normalize_fact` on both.

    The fact must stand on its own: "80.6" is not found in "80.67", nor "BERT" in "RoBERTa"; a word
    may take a plural ending ("cross-encoders" states "cross-encoder").

    >>> mentions("It reaches 80.67% top-1.", "80.67 %"), mentions("It reaches 80.67%.", "80.6")
    (True, False)
    >>> mentions("Cross-encoders do best.", "cross-encoder"), mentions("It uses eigenvalues.", "eigenvalue")
    (True, True)
    >>> mentions("It uses eigenvalues.", "eigen"), mentions("Batch size 64s.", "64")
    (False, False)

    A hyphen beside a letter is a spelling, not a difference ("MLP-Mixer" states "MLPMixer"; "ResNet50"
    states "ResNet-50"); between two digits it is not ("2-3" does not state "23"):
    >>> mentions("It beats MLP-Mixer.", "MLPMixer"), mentions("ResNet50 wins", "ResNet-50")
    (True, True)
    >>> mentions("2-3 layers", "23")
    False
    """
    needle = normalize_fact(fact)
    if not needle:
        raise ValueError("an empty must_mention fact matches everything; remove it")
    answer = normalize_fact(answer)
    if re.search(_standing_alone(needle), answer):
        return True
    return re.search(_standing_alone(_WORD_HYPHEN.sub("", needle)), _WORD_HYPHEN.sub("", answer)) is not None


def _standing_alone(needle: str) -> str:
    """A pattern for `needle` as a whole fact: not inside a longer word or number; a word may be plural."""
    pattern = re.escape(needle)
    if needle[0].isalnum():
        pattern = r"(?<![\w])" + (r"(?<!\d[.,])" if needle[0].isdigit() else "") + pattern
    if needle[-1].isalpha():
        pattern += r"(?:e?s)?(?!\w)"
    elif needle[-1].isalnum():
        pattern += r"(?!\w)" + (r"(?![.,]\d)" if needle[-1].isdigit() else "")
    return pattern


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0..100) with linear interpolation, as numpy's default.

    >>> percentile([1, 2, 3, 4], 50), round(percentile([1, 2, 3, 4], 95), 6)
    (2.5, 3.85)
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0..100, got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# ---- result records ---------------------------------------------------------------------------

def ranked_ids(record: dict) -> list[str]:
    """A record's retrieved paper ids in rank order.

    >>> ranked_ids({"retrieved": [{"id": "b", "rank": 2}, {"id": "a", "rank": 1}]})
    ['a', 'b']
    """
    return [paper["id"] for paper in sorted(record.get("retrieved") or [], key=lambda paper: paper["rank"])]


def cited_ids(record: dict) -> list[str]:
    """A record's cited paper ids, each once, in order of citation.

    >>> cited_ids({"cited": [{"id": "b"}, {"id": "a"}, {"id": "b"}]})
    ['b', 'a']
    """
    return list(dict.fromkeys(paper["id"] for paper in record.get("cited") or []))


def is_answerable(record: dict) -> bool:
    """Whether the question has gold papers to find (kind list or single, with gold ids).

    >>> is_answerable({"kind": "single", "gold_ids": ["a"]}), is_answerable({"kind": "none"})
    (True, False)
    """
    return record.get("kind") in ANSWERABLE_KINDS and bool(record.get("gold_ids"))


def must_mention_found(record: dict) -> list[bool]:
    """For each required fact, whether the answer text states it.

    >>> must_mention_found({"answer": "About 1,000 images.", "must_mention": ["1000", "GPU"]})
    [True, False]
    """
    answer = "" if record.get("error") else record.get("answer") or ""
    return [mentions(answer, fact) for fact in record.get("must_mention") or []]


def record_score(record: dict) -> float:
    """How well one question went, 0..1: the mean of the checks that apply to its kind
    (list: cited recall and precision; single: cited a gold paper; none: abstained) and the
    share of its must_mention facts. A question whose answerer failed scores 0.

    >>> record_score({"kind": "none", "abstained": True, "gold_ids": []})
    1.0
    >>> record_score({"kind": "list", "gold_ids": ["a", "b"], "cited": [{"id": "a"}], "answer": ""})
    0.75
    """
    if record.get("error"):
        return 0.0
    kind, gold = record.get("kind"), record.get("gold_ids") or []
    abstained = bool(record.get("abstained"))
    cited = [] if abstained else cited_ids(record)
    checks: list[float] = []
    if kind == "none":
        checks.append(float(abstained))
    elif kind == "list":
        checks += [citation_recall(cited, gold), citation_precision(cited, gold)]
    elif kind == "single":
        checks.append(float(not abstained and bool(set(cited) & set(gold))))
    found = must_mention_found(record)
    if found:
        checks.append(sum(found) / len(found))
    return fmean(checks) if checks else 0.0


def recall_curve(records: list[dict], max_k: int = 20) -> list[float]:
    """Mean recall@k over answerable questions for k = 1..max_k (empty without any).

    >>> recall_curve([{"kind": "list", "gold_ids": ["a", "b"],
    ...                "retrieved": [{"id": "a", "rank": 1}, {"id": "b", "rank": 2}]}], 3)
    [0.5, 1.0, 1.0]
    """
    answerable = [record for record in records if is_answerable(record)]
    if not answerable:
        return []
    scores = ranking_scores(*_rankings_and_gold(answerable), [f"recall@{k}" for k in range(1, max_k + 1)])
    return list(scores.values())


def _rankings_and_gold(records: list[dict]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Per question (keyed by position: ids may repeat across runs) its ranking and its gold ids."""
    return ({str(n): ranked_ids(record) for n, record in enumerate(records)},
            {str(n): record["gold_ids"] for n, record in enumerate(records)})


def _mean_or_none(values: list[float]) -> float | None:
    return fmean(values) if values else None


def score_results(records: list[dict]) -> dict:
    """The report metrics for one run, from its results.jsonl records.

    Retrieval metrics and `false_abstain_rate` are over answerable questions (kind list or
    single); `list_*` over list questions, macro-averaged; `single_cited_gold` over single
    questions; `must_mention` pools every required fact of every question that has some;
    `abstain_accuracy` is over kind none. A question whose answerer raised counts as a failure
    everywhere (it neither cites nor abstains). Empty denominators give None.

    >>> m = score_results([{"kind": "none", "gold_ids": [], "abstained": True, "latency_s": 0.5}])
    >>> m["abstain_accuracy"], m["recall_at_10"], m["citation_validity"], m["counts"]["none"]
    (1.0, None, 1.0, 1)
    """
    answerable = [record for record in records if is_answerable(record)]
    lists = [record for record in records if record.get("kind") == "list" and record.get("gold_ids")]
    singles = [record for record in records if record.get("kind") == "single" and record.get("gold_ids")]
    nones = [record for record in records if record.get("kind") == "none"]

    def answered_ok(record: dict) -> bool:
        return not record.get("error") and not record.get("abstained")

    found = [hit for record in records for hit in must_mention_found(record)]
    valid = total_cited = 0
    for record in records:
        retrieved = set(ranked_ids(record))
        cited = cited_ids(record)
        total_cited += len(cited)
        valid += sum(paper_id in retrieved for paper_id in cited)
    latencies = [float(record["latency_s"]) for record in records if record.get("latency_s") is not None]
    retrieval: dict[str, float | None] = dict.fromkeys(RANKING_METRICS)
    if answerable:
        scores = ranking_scores(*_rankings_and_gold(answerable), list(RANKING_METRICS.values()))
        retrieval = {ours: scores[theirs] for ours, theirs in RANKING_METRICS.items()}

    return {
        **retrieval,
        "list_recall": _mean_or_none([citation_recall(cited_ids(r) if answered_ok(r) else [], r["gold_ids"])
                                      for r in lists]),
        "list_precision": _mean_or_none([citation_precision(cited_ids(r) if answered_ok(r) else [],
                                                            r["gold_ids"]) for r in lists]),
        "single_cited_gold": _mean_or_none([
            float(answered_ok(r) and bool(set(cited_ids(r)) & set(r["gold_ids"]))) for r in singles]),
        "must_mention": sum(found) / len(found) if found else None,
        "abstain_accuracy": _mean_or_none([float(bool(r.get("abstained")) and not r.get("error"))
                                           for r in nones]),
        "false_abstain_rate": _mean_or_none([float(bool(r.get("abstained")) and not r.get("error"))
                                             for r in answerable]),
        "citation_validity": valid / total_cited if total_cited else 1.0,
        "latency_p50_s": percentile(latencies, 50) if latencies else None,
        "latency_p95_s": percentile(latencies, 95) if latencies else None,
        "counts": {"list": sum(r.get("kind") == "list" for r in records),
                   "single": sum(r.get("kind") == "single" for r in records),
                   "none": len(nones),
                   "total": len(records),
                   "errors": sum(bool(r.get("error")) for r in records)},
    }


# The metrics of `score_beir`: our key, the metric's name.
BEIR_METRICS = {"ndcg_at_10": "ndcg@10", "recall_at_10": "recall@10", "recall_at_100": "recall@100",
                "mrr_at_10": "mrr@10"}


def _ranking(scores: dict[str, float]) -> list[str]:
    # trec_eval order: score descending, then doc id descending, so ties rank as in BEIR tables.
    return [doc for doc, _ in sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)]


def score_beir(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict:
    """BEIR metrics, averaged over queries with at least one relevant (relevance > 0) document.

    A judged query missing from `run` scores 0 rather than being dropped, so a retriever that
    fails on some queries cannot look better for it.

    >>> r = score_beir({"q1": {"a": 0.9, "x": 0.5}, "q2": {"b": 0.1}}, {"q1": {"a": 1}, "q2": {"b": 0}})
    >>> r["ndcg_at_10"], r["mrr_at_10"], r["queries"]
    (1.0, 1.0, 1)
    """
    relevant = {query_id: [doc for doc, relevance in judged.items() if relevance > 0]
                for query_id, judged in qrels.items()}
    relevant = {query_id: docs for query_id, docs in relevant.items() if docs}
    if not relevant:
        raise ValueError("no query in qrels has a relevant document (relevance > 0)")
    scores = ranking_scores({query_id: _ranking(scored) for query_id, scored in run.items()}, relevant,
                            list(BEIR_METRICS.values()))
    return {**{ours: scores[theirs] for ours, theirs in BEIR_METRICS.items()}, "queries": len(relevant),
            "queries_missing_from_run": sum(query_id not in run for query_id in relevant)}
