"""Turn scored runs into things people read: report.md, PNG plots, a side-by-side comparison.

Plots are drawn on matplotlib's Agg canvas directly (no pyplot), so writing them never touches a
display or the global backend of whatever process imports this module.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from paperchat.eval.metrics import (
    METRIC_KEYS,
    cited_ids,
    is_answerable,
    must_mention_found,
    recall_curve,
    record_score,
)

KINDS = ("list", "single", "none")
WORST_SHOWN = 10
PLOT_FILES = ("recall_at_k.png", "score_by_kind.png", "latency.png")

METRIC_LABELS = {
    "recall_at_5": "Recall@5", "recall_at_10": "Recall@10", "recall_at_20": "Recall@20",
    "mrr": "MRR", "ndcg_at_10": "nDCG@10",
    "list_recall": "List recall (cited vs gold)", "list_precision": "List precision (cited vs gold)",
    "single_cited_gold": "Single: cites a gold paper", "must_mention": "Must-mention facts present",
    "abstain_accuracy": "Abstains on unanswerable", "false_abstain_rate": "False abstentions",
    "citation_validity": "Citations among retrieved", "latency_p50_s": "Latency p50",
    "latency_p95_s": "Latency p95",
    "recall_at_100": "Recall@100", "mrr_at_10": "MRR@10",
}


@dataclass(frozen=True)
class Goal:
    """A bar a metric must clear; `is_met` sees all metrics so a goal can involve two."""

    text: str
    is_met: Callable[[dict], bool]


def _at_least(key: str, bar: float) -> Callable[[dict], bool]:
    return lambda metrics: metrics[key] >= bar


GOALS: dict[str, Goal] = {
    "list_recall": Goal("≥ 0.95 at precision ≥ 0.80",
                        lambda m: m["list_recall"] >= 0.95 and (m["list_precision"] or 0) >= 0.80),
    "list_precision": Goal("≥ 0.80", _at_least("list_precision", 0.80)),
    "single_cited_gold": Goal("≥ 0.95", _at_least("single_cited_gold", 0.95)),
    "must_mention": Goal("≥ 0.90", _at_least("must_mention", 0.90)),
    "abstain_accuracy": Goal("≥ 0.90", _at_least("abstain_accuracy", 0.90)),
    "false_abstain_rate": Goal("≤ 0.05", lambda m: m["false_abstain_rate"] <= 0.05),
    "citation_validity": Goal("= 1.00", lambda m: m["citation_validity"] >= 1.0),
}


def format_value(key: str, value: float | None) -> str:
    """A metric as a table shows it.

    >>> format_value("mrr", 0.51234), format_value("latency_p95_s", 1.5), format_value("mrr", None)
    ('0.512', '1.500 s', 'n/a')
    """
    if value is None:
        return "n/a"
    return f"{value:.3f} s" if key.endswith("_s") else f"{value:.3f}"


def goal_status(key: str, metrics: dict) -> str:
    """'met', 'missed', '—' when the metric has no goal, or 'n/a' when it could not be measured.

    >>> goal_status("single_cited_gold", {"single_cited_gold": 0.9}), goal_status("mrr", {"mrr": 1})
    ('missed', '—')
    """
    goal = GOALS.get(key)
    if goal is None:
        return "—"
    if metrics.get(key) is None:
        return "n/a"
    return "met" if goal.is_met(metrics) else "missed"


def question_misses(record: dict) -> list[str]:
    """What went wrong with one question, in words for the worst-questions list.

    >>> question_misses({"kind": "list", "gold_ids": ["a", "b"], "gold_titles": ["A", "B"],
    ...                  "cited": [{"id": "a", "title": "A"}, {"id": "x", "title": "X"}], "answer": ""})
    ["missing gold: 'B'", "extra cited: 'X'"]
    """
    if record.get("error"):
        return [f"answerer failed: {record['error']}"]
    misses: list[str] = []
    kind, abstained = record.get("kind"), bool(record.get("abstained"))
    # The index's own title reads best; the question file's spelling (or the id) is the fallback.
    index_titles = {paper["id"]: paper["title"]
                    for paper in record.get("retrieved") or [] if paper.get("title")}
    given_titles = dict(zip(record.get("gold_ids") or [], record.get("gold_titles") or [], strict=False))
    gold = {gold_id: index_titles.get(gold_id) or given_titles.get(gold_id) or gold_id
            for gold_id in record.get("gold_ids") or []}
    cited = {paper["id"]: paper.get("title") or paper["id"] for paper in record.get("cited") or []}
    if kind == "none" and not abstained:
        misses.append("answered an unanswerable question instead of abstaining")
    if is_answerable(record) and abstained:
        misses.append("false abstention")
    elif is_answerable(record):
        cited_gold = set(cited_ids(record)) & set(gold)
        if kind == "list" or not cited_gold:
            missing = [title for gold_id, title in gold.items() if gold_id not in cited_gold]
            if missing:
                misses.append("missing gold: " + ", ".join(map(repr, missing)))
    extra = [title for paper_id, title in cited.items() if paper_id not in gold]
    if extra:
        misses.append("extra cited: " + ", ".join(map(repr, extra)))
    facts = record.get("must_mention") or []
    absent = [fact for fact, found in zip(facts, must_mention_found(record), strict=True) if not found]
    if absent:
        misses.append("missing must_mention: " + ", ".join(map(repr, absent)))
    return misses


def worst_questions(records: list[dict], limit: int = WORST_SHOWN) -> list[tuple[float, dict]]:
    """The lowest-scoring imperfect questions, worst first (file order among equals).

    >>> [r["id"] for _, r in worst_questions([{"id": "ok", "kind": "none", "abstained": True},
    ...                                       {"id": "bad", "kind": "none", "abstained": False}])]
    ['bad']
    """
    scored = [(record_score(record), record) for record in records]
    return sorted([item for item in scored if item[0] < 1.0], key=lambda item: item[0])[:limit]


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _flatten(config: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _kind_scores(records: list[dict]) -> dict[str, float | None]:
    return {kind: (fmean(record_score(r) for r in records if r.get("kind") == kind)
                   if any(r.get("kind") == kind for r in records) else None) for kind in KINDS}


def write_markdown(report: dict, records: list[dict], path: Path) -> None:
    """Write report.md: metrics against their goals, counts per kind, configuration, worst questions."""
    metrics = report["metrics"]
    lines = ["# paperchat evaluation", ""]
    if report.get("created"):
        lines += [f"Created {report['created']}.", ""]
    lines += ["## Metrics", "", "| Metric | Value | Goal | Status |", "|---|---:|---|---|"]
    for key in METRIC_KEYS:
        goal = GOALS.get(key)
        lines.append(f"| {METRIC_LABELS[key]} (`{key}`) | {format_value(key, metrics.get(key))} | "
                     f"{goal.text if goal else ''} | {goal_status(key, metrics)} |")

    counts = metrics.get("counts", {})
    kind_scores = _kind_scores(records)
    lines += ["", "## Questions per kind", "", "| Kind | Questions | Mean score |", "|---|---:|---:|"]
    for kind in KINDS:
        lines.append(f"| {kind} | {counts.get(kind, 0)} | {format_value(kind, kind_scores[kind])} |")
    lines.append(f"| **total** | {counts.get('total', len(records))} | |")
    if counts.get("errors"):
        lines += ["", f"**{counts['errors']} question(s) failed with an error** (scored as failures)."]

    lines += ["", "## Configuration", ""]
    flat = _flatten(report.get("config") or {})
    if flat:
        lines += ["| Setting | Value |", "|---|---|"]
        lines += [f"| `{key}` | {_cell(json.dumps(value, default=str))} |" for key, value in flat.items()]
    else:
        lines.append("(none recorded)")

    worst = worst_questions(records)
    lines += ["", f"## Worst questions ({len(worst)} shown)", ""]
    if not worst:
        lines.append("Every question met every check.")
    for score, record in worst:
        lines.append(f"### `{record['id']}` ({record.get('kind')}, score {score:.2f})")
        lines += ["", f"> {_cell(record.get('question', ''))}", ""]
        lines += [f"- {_cell(miss)}" for miss in question_misses(record)]
        lines.append("")
    lines += list_question_table(records)
    Path(path).write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")


def list_question_table(records: list[dict]) -> list[str]:
    """Markdown lines: every list question with what its answer missed and wrongly included.

    >>> print("\\n".join(list_question_table([{"id": "L1", "kind": "list", "gold_ids": ["a", "b"],
    ...     "gold_titles": ["A", "B"], "cited": [{"id": "a", "title": "A"}, {"id": "x", "title": "X"}]}])))
    <BLANKLINE>
    ## List questions (1): missed and wrongly included
    <BLANKLINE>
    | id | gold | cited | missed | wrongly included |
    |---|---:|---:|---|---|
    | `L1` | 2 | 2 | B | X |
    """
    rows = [r for r in records if r.get("kind") == "list"]
    lines = ["", f"## List questions ({len(rows)}): missed and wrongly included", "",
             "| id | gold | cited | missed | wrongly included |", "|---|---:|---:|---|---|"]
    for record in rows:
        gold = dict(zip(record.get("gold_ids") or [], record.get("gold_titles") or [], strict=False))
        cited = {c["id"]: c.get("title") or c["id"] for c in record.get("cited") or []}
        missed = "; ".join(title for gold_id, title in gold.items() if gold_id not in cited) or "—"
        extra = "; ".join(title for paper_id, title in cited.items() if paper_id not in gold) or "—"
        abstained = " (abstained)" if record.get("abstained") else ""
        lines.append(f"| `{record['id']}`{abstained} | {len(gold)} | {len(cited)} "
                     f"| {_cell(missed)} | {_cell(extra)} |")
    return lines


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def write_plots(report: dict, records: list[dict], out_dir: Path) -> list[Path]:
    """Write recall@k (k = 1..20), mean score per kind, and a latency histogram; return the paths."""
    out_dir = Path(out_dir)
    recall_path, kinds_path, latency_path = (out_dir / name for name in PLOT_FILES)

    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    curve = recall_curve(records, 20)
    if curve:
        axes.plot(range(1, len(curve) + 1), curve, marker="o")
        axes.set_xticks(range(1, len(curve) + 1, 2 if len(curve) > 10 else 1))
    else:
        axes.text(0.5, 0.5, "no answerable questions", ha="center", va="center", transform=axes.transAxes)
    axes.set(xlabel="k (retrieved papers)", ylabel="mean recall@k", ylim=(0, 1.05),
             title="Retrieval recall@k (answerable questions)")
    axes.grid(alpha=0.3)
    _save(figure, recall_path)

    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    scores = _kind_scores(records)
    counts = report["metrics"].get("counts", {})
    bars = axes.bar(KINDS, [scores[kind] or 0 for kind in KINDS], color=["#4c72b0", "#55a868", "#c44e52"])
    axes.bar_label(bars, labels=[f"{scores[k]:.2f} (n={counts.get(k, 0)})" if scores[k] is not None else "n/a"
                                 for k in KINDS])
    axes.set(ylabel="mean question score", ylim=(0, 1.15), title="Score by question kind")
    _save(figure, kinds_path)

    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    latencies = [record["latency_s"] for record in records if record.get("latency_s") is not None]
    if latencies:
        axes.hist(latencies, bins=min(20, max(1, len(latencies))), color="#4c72b0")
    for key, style in (("latency_p50_s", "--"), ("latency_p95_s", ":")):
        value = report["metrics"].get(key)
        if value is not None:
            axes.axvline(value, color="black", linestyle=style, label=f"{key[8:11]} {value:.3g} s")
    if latencies:
        axes.legend()
    axes.set(xlabel="seconds per question", ylabel="questions", title="Answer latency")
    _save(figure, latency_path)
    return [recall_path, kinds_path, latency_path]


def _delta(key: str, a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "n/a"
    diff = b - a
    return f"{diff:+.3f} s" if key.endswith("_s") else f"{diff:+.3f}"


def compare_reports(a: dict, b: dict) -> str:
    """Two runs' metrics side by side as a markdown table (metric | A | B | Δ, Δ = B − A),
    then the settings that differ. For `paperchat eval compare DIR_A DIR_B`.

    >>> print(compare_reports({"metrics": {"mrr": 0.5}}, {"metrics": {"mrr": 0.75}}).splitlines()[4])
    | MRR (`mrr`) | 0.500 | 0.750 | +0.250 |
    """
    metrics_a, metrics_b = a.get("metrics", {}), b.get("metrics", {})
    lines = [f"A: {a.get('created', '?')}   B: {b.get('created', '?')}", "",
             "| Metric | A | B | Δ |", "|---|---:|---:|---:|"]
    for key in METRIC_KEYS:
        if key not in metrics_a and key not in metrics_b:
            continue
        value_a, value_b = metrics_a.get(key), metrics_b.get(key)
        lines.append(f"| {METRIC_LABELS[key]} (`{key}`) | {format_value(key, value_a)} | "
                     f"{format_value(key, value_b)} | {_delta(key, value_a, value_b)} |")
    counts_a, counts_b = metrics_a.get("counts", {}), metrics_b.get("counts", {})
    for kind in (*KINDS, "total", "errors"):
        if kind in counts_a or kind in counts_b:
            count_a, count_b = counts_a.get(kind, 0), counts_b.get(kind, 0)
            lines.append(f"| questions: {kind} | {count_a} | {count_b} | {count_b - count_a:+d} |")

    config_a, config_b = _flatten(a.get("config") or {}), _flatten(b.get("config") or {})
    changed = [key for key in dict.fromkeys([*config_a, *config_b]) if config_a.get(key) != config_b.get(key)]
    if changed:
        lines += ["", "| Setting | A | B |", "|---|---|---|"]
        lines += [f"| `{key}` | {_cell(json.dumps(config_a.get(key), default=str))} | "
                  f"{_cell(json.dumps(config_b.get(key), default=str))} |" for key in changed]
    return "\n".join(lines) + "\n"


def write_beir_markdown(result: dict, path: Path, *, dataset: str = "", config: dict | None = None) -> None:
    """Write a BEIR result (from `eval.metrics.score_beir`) as a small markdown report."""
    lines = [f"# BEIR evaluation{f': {dataset}' if dataset else ''}", "",
             f"{result.get('queries', '?')} judged queries"
             + (f", {result['queries_missing_from_run']} missing from the run (scored 0)"
                if result.get("queries_missing_from_run") else "") + ".", "",
             "| Metric | Value |", "|---|---:|"]
    for key in ("ndcg_at_10", "recall_at_10", "recall_at_100", "mrr_at_10"):
        lines.append(f"| {METRIC_LABELS[key]} (`{key}`) | {format_value(key, result.get(key))} |")
    if config:
        lines += ["", "## Configuration", "", "| Setting | Value |", "|---|---|"]
        lines += [f"| `{key}` | {_cell(json.dumps(value, default=str))} |"
                  for key, value in _flatten(config).items()]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
