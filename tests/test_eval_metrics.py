"""Metrics: agree with ranx (the reference implementation) and with hand-checked cases."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from paperchat.eval.metrics import (
    METRIC_KEYS,
    citation_precision,
    citation_recall,
    mentions,
    percentile,
    ranking_scores,
    score_beir,
    score_results,
)

# Distinct scores everywhere, so every tie-breaking convention gives the same ranking.
RUN = {
    "q1": {"d1": 0.9, "d2": 0.8, "d3": 0.7, "d4": 0.6, "d5": 0.5},
    "q2": {"d6": 0.95, "d7": 0.85, "d1": 0.75, "d8": 0.65, "d9": 0.55, "d10": 0.45, "d11": 0.35,
           "d12": 0.25, "d13": 0.15, "d14": 0.12, "d15": 0.11, "d2": 0.05},
    # 12 relevant documents: the ideal DCG@10 must stop at 10, and recall@10 cannot reach 1.
    "q3": {f"r{i}": 1.0 - i / 100 for i in range(25)},
    "q4": {"x1": 0.3, "x2": 0.2},
}
QRELS = {
    "q1": {"d2": 1, "d4": 1, "d9": 1},
    "q2": {"d12": 1, "d2": 1},
    "q3": {f"r{i}": 1 for i in range(0, 24, 2)},
    "q4": {"x9": 1},
}


# Every metric eval reports, and a few more cut-offs.
ORACLE_METRICS = ["ndcg@10", "ndcg@3", "ndcg", "recall@1", "recall@5", "recall@10", "recall@20", "recall@100",
                  "mrr", "mrr@10"]


def random_cases(seed: int = 7, queries: int = 40) -> tuple[dict, dict]:
    """Random runs (distinct scores) and judgements, some queries with no hit and some with many."""
    rng = random.Random(seed)
    run, qrels = {}, {}
    for n in range(queries):
        docs = [f"d{i}" for i in range(rng.randint(1, 60))]
        run[f"r{n}"] = {doc: 1.0 - rank / 100 for rank, doc in enumerate(rng.sample(docs, len(docs)))}
        qrels[f"r{n}"] = {f"d{i}": 1 for i in rng.sample(range(80), rng.randint(1, 15))}
    return run, qrels


@pytest.fixture(scope="module")
def ranx_scores() -> dict[str, dict[str, float]]:
    """ranx's per-query scores for the hand-made and the random runs. ranx runs in a child process with
    numba's compiler off: the same code, interpreted, in seconds instead of a minute of compiling."""
    run, qrels = random_cases()
    script = """
import json, sys, warnings
import ranx
warnings.simplefilter("ignore")
run, qrels, metrics = json.load(sys.stdin)
scores = {}
for query_id, scored in run.items():
    result = ranx.evaluate(ranx.Qrels({query_id: qrels[query_id]}), ranx.Run({query_id: scored}), metrics)
    scores[query_id] = {metric: float(value) for metric, value in result.items()}
print(json.dumps(scores))
"""
    cases = json.dumps([{**RUN, **run}, {**QRELS, **qrels}, ORACLE_METRICS])
    child = subprocess.run([sys.executable, "-c", script], input=cases,
                           capture_output=True, text=True, env={**os.environ, "NUMBA_DISABLE_JIT": "1"},
                           timeout=300, check=True)
    return json.loads(child.stdout)


def ranked(scored: dict[str, float]) -> list[str]:
    return sorted(scored, key=scored.get, reverse=True)


@pytest.mark.parametrize("metric", ORACLE_METRICS)
def test_ranking_metrics_agree_with_ranx_query_by_query(metric, ranx_scores):
    run, qrels = random_cases()
    for query_id, scored in {**RUN, **run}.items():
        gold = {doc for doc, relevance in {**QRELS, **qrels}[query_id].items() if relevance > 0}
        ours = ranking_scores({query_id: ranked(scored)}, {query_id: gold}, [metric])[metric]
        assert ours == pytest.approx(ranx_scores[query_id][metric], abs=1e-9), (query_id, metric)


def test_score_beir_agrees_with_ranx_means(ranx_scores):
    result = score_beir(RUN, QRELS)
    for ours, theirs in (("ndcg_at_10", "ndcg@10"), ("recall_at_10", "recall@10"),
                         ("recall_at_100", "recall@100"), ("mrr_at_10", "mrr@10")):
        mean = np.mean([ranx_scores[query_id][theirs] for query_id in RUN])
        assert result[ours] == pytest.approx(mean, abs=1e-6), ours
    assert result["queries"] == 4


def test_score_beir_skips_queries_without_relevant_docs_and_zeroes_missing_runs():
    qrels = {"q1": {"a": 1, "b": 0}, "judged_irrelevant": {"a": 0}, "not_run": {"z": 2}}
    result = score_beir({"q1": {"b": 0.9, "a": 0.8}}, qrels)
    assert result["queries"] == 2
    assert result["queries_missing_from_run"] == 1
    assert result["mrr_at_10"] == pytest.approx((0.5 + 0.0) / 2)
    assert result["recall_at_10"] == pytest.approx(0.5)


def ndcg_at_10(ranking: list[str], relevant: set[str]) -> float:
    return ranking_scores({"q": ranking}, {"q": relevant}, ["ndcg@10"])["ndcg@10"]


def test_ndcg_uses_min_of_k_and_relevant_count():
    # Two relevant, one found at rank 1: ideal DCG has two terms, not ten.
    assert ndcg_at_10(["a", "x"], {"a", "b"}) == pytest.approx(1 / (1 + 1 / np.log2(3)))
    # Twelve relevant, first ten retrieved all relevant: a perfect nDCG@10.
    assert ndcg_at_10([f"r{i}" for i in range(10)], {f"r{i}" for i in range(12)}) == pytest.approx(1.0)


def test_a_repeated_id_keeps_its_first_rank():
    scores = ranking_scores({"q": ["x", "x", "a", "x"]}, {"q": {"a"}}, ["mrr", "recall@2"])
    assert scores == {"mrr": pytest.approx(0.5), "recall@2": 1.0}


def test_ranking_metrics_refuse_an_empty_gold_set():
    with pytest.raises(ValueError, match="no relevant ids"):
        ranking_scores({"q": ["a"]}, {"q": set()}, ["recall@5"])


def test_citation_precision_and_recall_by_hand():
    assert citation_precision(["a", "b", "x", "y"], {"a", "b", "c"}) == 0.5
    assert citation_recall(["a", "b", "x", "y"], {"a", "b", "c"}) == pytest.approx(2 / 3)
    assert citation_precision([], {"a"}) == 0.0


@pytest.mark.parametrize(("answer", "fact", "expected"), [
    ("Top-1 accuracy reaches 80.67 %.", "80.67%", True),
    ("Top-1 accuracy reaches 80.67%.", "80.67 %", True),
    ("accuracy of 80.67 percent", "80.67%", True),
    ("trained on 1,281,167 images", "1281167", True),
    ("trained on 1\u202f281\u202f167 images", "1,281,167", True),
    ("uses  RESNET-50\nbackbones", "ResNet-50 backbones", True),
    ("the Schölkopf kernel", "Scholkopf", True),
    ("ﬁne-tuning on GLUE", "fine-tuning", True),  # the "fi" ligature folds under NFKC
    ("an error rate of 3\u2212 4", "3- 4", True),
    ("reaches 80.67%", "80.6", False),
    ("reaches 80.67%", "80", False),
    ("RoBERTa improves on it", "BERT", False),
    ("1,2,3 and 4", "123", False),
])
def test_must_mention_normalisation(answer, fact, expected):
    assert mentions(answer, fact) is expected


def record(kind: str, gold: list[str], retrieved: list[str], cited: list[str], *, abstained: bool = False,
           answer: str = "", must_mention: list[str] | None = None, latency_s: float = 1.0,
           error: str | None = None) -> dict:
    return {"id": f"{kind}-{'-'.join(gold) or 'none'}", "question": "?", "kind": kind, "gold_ids": gold,
            "gold_titles": [g.upper() for g in gold], "must_mention": must_mention or [],
            "retrieved": [{"id": pid, "title": pid.upper(), "score": 1.0 / rank, "rank": rank}
                          for rank, pid in enumerate(retrieved, start=1)],
            "cited": [{"id": pid, "title": pid.upper()} for pid in cited], "answer": answer,
            "abstained": abstained, "latency_s": latency_s, "answerer": "test", "notice": None,
            "error": error}


def test_score_results_has_exactly_the_report_keys():
    metrics = score_results([record("single", ["a"], ["a"], ["a"])])
    assert set(metrics) == set(METRIC_KEYS) | {"counts"}


def test_list_precision_and_recall_are_macro_averaged():
    metrics = score_results([
        record("list", ["a", "b"], ["a", "x", "b"], ["a", "x"]),  # recall 0.5, precision 0.5
        record("list", ["c", "d", "e"], ["c", "d", "e"], ["c", "d", "e"]),  # 1.0, 1.0
        record("list", ["f", "g"], ["f"], ["f"]),  # recall 0.5, precision 1.0
    ])
    assert metrics["list_recall"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert metrics["list_precision"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert metrics["single_cited_gold"] is None
    assert metrics["counts"] == {"list": 3, "single": 0, "none": 0, "total": 3, "errors": 0}


def test_abstain_metrics_by_hand():
    metrics = score_results([
        record("none", [], ["x"], [], abstained=True),
        record("none", [], ["x"], ["x"]),  # answered an unanswerable question
        record("none", [], [], [], error="RuntimeError: boom"),  # a crash is not an abstention
        record("single", ["a"], ["a"], ["a"]),
        record("single", ["b"], ["b"], [], abstained=True),  # false abstention
        record("list", ["c", "d"], ["c", "d"], ["c", "d"]),
        record("list", ["e", "f"], ["e"], ["e"]),
    ])
    assert metrics["abstain_accuracy"] == pytest.approx(1 / 3)
    assert metrics["false_abstain_rate"] == pytest.approx(1 / 4)
    assert metrics["single_cited_gold"] == pytest.approx(1 / 2)
    assert metrics["counts"]["errors"] == 1


def test_retrieval_metrics_use_ranks_over_answerable_questions_only():
    retrieved_out_of_order = record("single", ["a"], ["x", "a"], ["a"])
    retrieved_out_of_order["retrieved"].reverse()  # ranks, not list order, decide
    metrics = score_results([retrieved_out_of_order, record("none", [], ["q"], [], abstained=True)])
    assert metrics["mrr"] == pytest.approx(0.5)
    assert metrics["recall_at_5"] == 1.0
    assert metrics["ndcg_at_10"] == pytest.approx(1 / np.log2(3))


def test_must_mention_pools_facts_over_questions_that_have_them():
    metrics = score_results([
        record("single", ["a"], ["a"], ["a"], answer="Accuracy 80.67 % on 1,000 images.",
               must_mention=["80.67%", "1000", "ImageNet"]),
        record("single", ["b"], ["b"], ["b"], answer="No facts needed."),
        record("none", [], [], [], error="boom 42", must_mention=["42"]),  # an error message is no answer
    ])
    assert metrics["must_mention"] == pytest.approx(2 / 4)


def test_citation_validity_counts_citations_outside_the_retrieved_set():
    metrics = score_results([record("list", ["a", "b"], ["a", "b"], ["a", "b"]),
                             record("list", ["c", "d"], ["c"], ["c", "d"])])
    assert metrics["citation_validity"] == pytest.approx(3 / 4)
    assert score_results([record("none", [], ["a"], [], abstained=True)])["citation_validity"] == 1.0


def test_latency_percentiles_match_numpy():
    latencies = [0.2, 1.5, 0.7, 3.1, 0.9, 0.4]
    metrics = score_results([record("single", ["a"], ["a"], ["a"], latency_s=value) for value in latencies])
    assert metrics["latency_p50_s"] == pytest.approx(np.percentile(latencies, 50))
    assert metrics["latency_p95_s"] == pytest.approx(np.percentile(latencies, 95))
    assert percentile([5.0], 95) == 5.0
