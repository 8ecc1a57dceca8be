"""Run a question set through an answerer: the one writer (and reader) of an eval run directory.

A run directory holds ``results.jsonl`` (one record per question, written and flushed as it goes,
so an interrupted run keeps what it did), ``report.json`` (``{"config", "metrics", "created"}``),
``report.md`` and the PNG plots. The answerer is any ``ask(question) -> Answer`` callable, so the
same runner measures the extractive answerer, an LLM, or a test double built from real `Answer`s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from paperchat.eval.metrics import score_results
from paperchat.eval.questions import Question
from paperchat.eval.report import write_markdown, write_plots
from paperchat.rag.answer import Answer

RESULTS_FILE = "results.jsonl"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"


def result_record(question: Question, answer: Answer | None, latency_s: float,
                  error: str | None = None) -> dict:
    """One line of results.jsonl: the question, its gold, and what the answerer did.

    `answer` is None when the answerer raised; then `error` holds the message, which also stands
    as the answer text.

    >>> q = Question(id="q1", question="Who?", kind="none")
    >>> r = result_record(q, None, 0.25, error="RuntimeError: boom")
    >>> r["answer"], r["abstained"], r["cited"], r["latency_s"]
    ('RuntimeError: boom', False, [], 0.25)
    """
    record = {
        "id": question.id, "question": question.question, "kind": question.kind,
        "follow_up_of": question.follow_up_of,
        "gold_ids": question.gold_ids, "gold_titles": question.gold_titles,
        "must_mention": question.must_mention,
        "retrieved": [], "cited": [], "answer": error or "", "abstained": False,
        "latency_s": latency_s, "answerer": None, "notice": None, "error": error, "provenance": {},
    }
    if answer is not None:
        record.update(
            retrieved=[{"id": paper.id, "title": paper.title, "score": paper.score, "rank": paper.rank}
                       for paper in answer.retrieved],
            cited=[{"id": citation.id, "title": citation.title} for citation in answer.citations],
            possibly_related=[{"id": c.id, "title": c.title} for c in answer.possibly_related],
            answer=answer.text, abstained=answer.abstained, answerer=answer.answerer,
            notice=answer.notice, dropped_citations=answer.dropped_citations,
            # index fingerprint, models, changed settings: what to compare runs by
            provenance=answer.provenance,
        )
    return record


def run_questions(questions: Sequence[Question], ask: Callable[..., Answer], out_dir: Path,
                  config: dict, progress: bool = True) -> dict:
    """Ask every question, write the run directory, and return the report dict.

    An exception from `ask` is recorded for that question (answer text = the error, scored as a
    failure) and the run goes on; one flaky call should not cost a whole evaluation. A follow-up
    (`Question.follow_up_of`) is asked as in a chat: `ask(text, history=[(question, answer)],
    previous_papers=[ids the earlier answer listed])`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    answers: dict[str, Answer] = {}  # by question id, for the follow-ups that come after
    with (out_dir / RESULTS_FILE).open("w", encoding="utf-8") as results:
        for question in tqdm(questions, desc="eval", unit="q", disable=not progress):
            started = time.perf_counter()
            answer: Answer | None = None
            error: str | None = None
            try:
                parent = answers.get(question.follow_up_of) if question.follow_up_of else None
                if parent is not None:  # asked in the same chat, right after the question it follows
                    answer = ask(question.question, history=[(parent.question, parent.text)],
                                 previous_papers=[p.id for p in parent.retrieved if p.matches])
                else:
                    answer = ask(question.question)
                if not isinstance(answer, Answer):
                    raise TypeError(f"ask() returned {type(answer).__name__}, "
                                    "expected paperchat.rag.answer.Answer")
            except Exception as exc:  # noqa: BLE001 - any answerer failure is data for the report
                answer, error = None, f"{type(exc).__name__}: {exc}"
            latency_s = time.perf_counter() - started
            if answer is not None:
                answers[question.id] = answer
            record = result_record(question, answer, latency_s, error)
            records.append(record)
            results.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            results.flush()

    report = {"config": config, "metrics": score_results(records),
              "created": datetime.now(UTC).isoformat(timespec="seconds")}
    (out_dir / REPORT_JSON).write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n",
                                       encoding="utf-8")
    write_markdown(report, records, out_dir / REPORT_MD)
    write_plots(report, records, out_dir)
    return report


def load_run(run_dir: Path) -> tuple[dict, list[dict]]:
    """The report and records of a finished run, e.g. for `paperchat eval compare`."""
    run_dir = Path(run_dir)
    report_path = run_dir / REPORT_JSON
    if not report_path.is_file():
        raise FileNotFoundError(f"no {REPORT_JSON} in {run_dir}: "
                                "run `paperchat eval` with this output directory first")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    results_path = run_dir / RESULTS_FILE
    lines = results_path.read_text(encoding="utf-8").splitlines() if results_path.is_file() else []
    records = [json.loads(line) for line in lines if line.strip()]
    return report, records
