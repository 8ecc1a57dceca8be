"""Feedback from the chat, kept as candidate eval questions: the one writer of the feedback file.

A thumbs-down or a "you missed X" note on an answer is appended to a JSONL file (`ui.feedback_file`,
default `feedback.jsonl` in the user data directory) as a question in the shape `eval/questions.py`
reads — `question`, `kind`, `gold_titles`, `must_mention` — plus `"status": "unconfirmed"` and what
the user said. `paperchat eval` refuses unconfirmed lines: a person checks the gold papers, then
sets `"status": "confirmed"`, and the question set grows from real use.

    >>> record = feedback_record("Which papers prune ResNet-50?", "2 papers match: ...", "list",
    ...                          ["Pruning A"], "extractive", "thumbs-down", "missed Pruning B",
    ...                          now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    >>> record["status"], record["gold_titles"], record["note"], record["timestamp"]
    ('unconfirmed', ['Pruning A'], 'missed Pruning B', '2026-01-02T03:04:05+00:00')
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

from platformdirs import user_data_dir

from paperchat.rag.settings import Settings

UNCONFIRMED = "unconfirmed"
_WRITE_LOCK = threading.Lock()  # sessions append from several worker threads


def feedback_file(settings: Settings) -> Path:
    """Where feedback goes: `ui.feedback_file`, or feedback.jsonl in the user data directory."""
    return settings.ui.feedback_file or Path(user_data_dir("paperchat", appauthor=False)) / "feedback.jsonl"


def feedback_record(
    question: str,
    answer: str,
    kind: str,
    cited_titles: list[str],
    answerer: str,
    verdict: str,
    note: str = "",
    now: datetime | None = None,
) -> dict:
    """One candidate eval question. The cited titles stand as the gold papers until a person corrects them."""
    now = now or datetime.now(UTC)
    return {
        "id": f"feedback-{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}",
        "question": question,
        "kind": kind,
        "gold_titles": list(cited_titles) if kind != "none" else [],
        "must_mention": [],
        "status": UNCONFIRMED,
        "verdict": verdict,
        "note": note.strip(),
        "answer": answer,
        "answerer": answerer,
        "timestamp": now.isoformat(timespec="seconds"),
    }


def save_feedback(path: Path, record: dict) -> None:
    """Append the record as one JSON line (the folder is created when missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, ensure_ascii=False) + "\n"
    with _WRITE_LOCK, path.open("a", encoding="utf-8") as out:
        out.write(line)
