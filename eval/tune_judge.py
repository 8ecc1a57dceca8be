"""Fit the judge (`rag/judge_model.json`) and its thresholds on the tune questions only.

    python -m paperchat.eval.tune_judge --index DIR [--questions eval/questions/tune.jsonl] \
        [--check FILE ...] [--write]

1. Every tune question is retrieved once (follow-ups are skipped: they are judged against their
   parent's papers, not the collection); each candidate paper's `rag.judge.features` and whether it
   is gold make one training pair.
2. A logistic regression (L2-regularised, Newton's method) gives P(match) per paper.
3. The thresholds are chosen by running the real `rag.judge.judge` over the same retrievals with
   each candidate setting and scoring the eval's headline figures: list recall and precision up to
   their goals (0.92 / 0.80), abstention on no-answer questions, and above all few false abstentions.
`--check` prints the chosen model's figures on other question sets without fitting on them: the
honest figure is that of `eval/questions/validate.jsonl`, which nothing here reads unless told to.
`--write` stores the model in `rag/judge_model.json`; the thresholds are printed for `rag/settings.py`.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from paperchat.eval.questions import Question, load_questions
from paperchat.rag.answer import RetrievedPaper
from paperchat.rag.embeddings import make_embeddings
from paperchat.rag.judge import (
    FEATURES,
    MODEL_FILE,
    JudgeModel,
    decide,
    question_features,
    question_inputs,
    question_kind,
)
from paperchat.rag.retrieval import Retriever
from paperchat.rag.settings import RetrievalSettings, Settings
from paperchat.rag.store import PaperIndex

GOAL_RECALL, GOAL_PRECISION = 0.92, 0.80


def retrieve_all(questions: list[Question], retriever: Retriever, depth: int,
                 cache: Path | None = None) -> list[tuple[Question, list]]:
    """Each question (follow-ups excluded) with its retrieved papers; `cache` keeps them between runs."""
    stored: dict[str, list] = {}
    if cache is not None and cache.is_file():
        stored = {key: [RetrievedPaper.model_validate(p) for p in papers]
                  for key, papers in json.loads(cache.read_text(encoding="utf-8")).items()}
    out = []
    for q in questions:
        if q.follow_up_of:
            continue
        if q.question not in stored:
            stored[q.question] = retriever.retrieve(q.question, depth=depth).papers
        out.append((q, stored[q.question]))
    if cache is not None:
        cache.write_text(json.dumps({k: [p.model_dump() for p in v] for k, v in stored.items()}),
                         encoding="utf-8")
    return out


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 50) -> np.ndarray:
    """Weights of an L2-regularised logistic regression (the last column of `x` is the bias).

    >>> x = np.array([[0.0, 1], [1.0, 1], [0.2, 1], [0.9, 1]]); y = np.array([0, 1, 0, 1])
    >>> w = fit_logistic(x, y, l2=0.01); bool(w[0] > 0)
    True
    """
    w = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], l2)
    penalty[-1] = 0.0  # the bias is not shrunk
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -40, 40)))
        gradient = x.T @ (p - y) + penalty * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty) + 1e-9 * np.eye(x.shape[1])
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def training_pairs(data: list[tuple[Question, list[RetrievedPaper]]]) -> tuple[np.ndarray, np.ndarray]:
    rows, labels = [], []
    for question, papers in data:
        gold = set(question.gold_ids)
        rows += question_features(papers)
        labels += [paper.id in gold for paper in papers]
    return np.asarray(rows, dtype=float).reshape(-1, len(FEATURES)), np.asarray(labels, dtype=float)


def prepared(data: list[tuple[Question, list[RetrievedPaper]]], model: JudgeModel) -> list[tuple]:
    """Per question what `rag.judge.decide` needs, computed once: ids, probabilities, kind, override."""
    out = []
    for question, papers in data:
        probabilities, together = question_inputs(papers, model)
        kind = question_kind(question.question)
        out.append((question, [p.id for p in papers], probabilities, kind, together))
    return out


def figures(data: list[tuple], settings: RetrievalSettings) -> dict[str, float]:
    """The eval's headline judgement figures, from the real judge's rules (`prepared` data)."""
    recall, precision, none_abstain, false_abstain, single = [], [], [], [], []
    for question, ids, probabilities, kind, together in data:
        j = decide(ids, probabilities, kind, settings, together)
        if question.kind == "none":
            none_abstain.append(j.abstained)
            continue
        false_abstain.append(j.abstained)
        chosen = set(j.matching)
        gold = set(question.gold_ids)
        if question.kind == "single":
            single.append(not j.abstained and bool(chosen & gold))
            continue
        recall.append(len(chosen & gold) / len(gold))
        precision.append(len(chosen & gold) / len(chosen) if chosen else 0.0)

    def mean(xs: list) -> float:
        return float(np.mean(xs)) if xs else float("nan")

    return {"list_recall": mean(recall), "list_precision": mean(precision),
            "none_abstain": mean(none_abstain), "false_abstain": mean(false_abstain),
            "single_cited_gold": mean(single)}


def choose_thresholds(data: list[tuple], base: RetrievalSettings) -> tuple[RetrievalSettings, dict]:
    """The thresholds that best meet the goals on `data` (false abstentions weigh most)."""
    best = None
    for match, abstain, single in itertools.product(np.round(np.arange(0.05, 0.81, 0.05), 3),
                                                    np.round(np.arange(0.02, 0.61, 0.04), 3),
                                                    np.round(np.arange(0.30, 0.96, 0.05), 3)):
        settings = base.model_copy(update={"match_threshold": float(match),
                                           "abstain_threshold": float(abstain),
                                           "abstain_threshold_single": float(single),
                                           "related_threshold": round(float(match) / 2, 3)})
        m = figures(data, settings)
        goal = (min(m["list_recall"], GOAL_RECALL) + min(m["list_precision"], GOAL_PRECISION)
                + 0.5 * m["none_abstain"] - 2.0 * m["false_abstain"] + 0.5 * m["single_cited_gold"]
                + 0.01 * (m["list_recall"] + m["list_precision"]))
        if best is None or goal > best[0] + 1e-9:
            best = (goal, settings, m)
    return best[1], best[2]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--questions", type=Path, default=Path("eval/questions/tune.jsonl"))
    parser.add_argument("--check", type=Path, action="append", default=[],
                        help="report the fitted judge on this set too (never fitted on)")
    parser.add_argument("--l2", type=float, default=1.0)
    parser.add_argument("--write", action="store_true", help=f"write the model to {MODEL_FILE}")
    parser.add_argument("--cache", type=Path, help="keep retrievals in this JSON file between runs")
    args = parser.parse_args(argv)
    settings = Settings.load(overrides={"store": {"index_dir": str(args.index)}})
    index = PaperIndex.open(settings, make_embeddings(settings.embedding))
    retriever = Retriever(index, settings.retrieval)
    titles = index.titles()
    title_to_id = {title: pid for pid, title in titles.items()}
    depth = settings.retrieval.depth
    questions = load_questions(args.questions, title_to_id, set(titles))
    data = retrieve_all(questions, retriever, depth, args.cache)
    x, y = training_pairs(data)
    weights = fit_logistic(x, y, l2=args.l2)
    model = JudgeModel(tuple(float(w) for w in weights), fitted_on=f"{args.questions.name}: {len(data)} "
                       f"questions, {len(y)} pairs, {int(y.sum())} gold")
    print("weights:", json.dumps(dict(zip(FEATURES, np.round(weights, 3).tolist()))))
    chosen, m = choose_thresholds(prepared(data, model), settings.retrieval)
    print("thresholds:", json.dumps({k: getattr(chosen, k) for k in
                                     ("match_threshold", "related_threshold", "abstain_threshold",
                                      "abstain_threshold_single")}))
    print(f"{args.questions} (fitted on):", json.dumps({k: round(v, 3) for k, v in m.items()}))
    for path in args.check:
        check = retrieve_all(load_questions(path, title_to_id, set(titles)), retriever, depth, args.cache)
        result = figures(prepared(check, model), chosen)
        print(f"{path} (not fitted on):", json.dumps({k: round(v, 3) for k, v in result.items()}))
    if args.write:
        MODEL_FILE.write_text(json.dumps(model.to_dict(), indent=1) + "\n", encoding="utf-8")
        print("wrote", MODEL_FILE)


if __name__ == "__main__":
    main()
