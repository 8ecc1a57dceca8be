"""Question sets for evaluation: the one reader of question files (JSONL or CSV).

A question names its gold papers by title, by id, or both. Titles are matched to index ids after
`rag.papers.normalize_title`, so case, spacing and punctuation do not matter. Anything that would
otherwise be scored as a silent miss (a gold title no paper has, an unknown id, a malformed line)
is a `QuestionSetError` whose message starts with ``file:line:``.

JSONL, one question a line::

    {"id": "q1", "question": "Which papers use LoRA?", "kind": "list",
     "gold_titles": ["LoRA: Low-Rank Adaptation of Large Language Models"], "must_mention": ["rank"]}

CSV has the same columns; `gold_titles`, `gold_ids` and `must_mention` cells hold ``|``-separated lists.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

from pydantic import BaseModel, Field

from paperchat.rag.answer import QuestionKind
from paperchat.rag.papers import normalize_title

KINDS: tuple[str, ...] = ("list", "single", "none")
LIST_SEPARATOR = "|"


class QuestionSetError(ValueError):
    """A question file that cannot be scored honestly; the message names the file and line."""

    def __init__(self, path: Path, line: int | None, problem: str) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


class Question(BaseModel):
    """One evaluation question with its gold papers resolved to index ids."""

    id: str
    question: str
    kind: QuestionKind
    gold_ids: list[str] = Field(default_factory=list, description="resolved ids of the gold papers")
    gold_titles: list[str] = Field(default_factory=list, description=(
        "one per gold id: the title as the file wrote it, or for a gold given by id the index's "
        "normalised title (the id itself when the index has no title for it)"))
    must_mention: list[str] = Field(default_factory=list, description="facts the answer text must contain")
    source: str = Field("", description="where it was read, 'file:line'")
    follow_up_of: str | None = Field(None, description=(
        "id of the question asked just before this one in the same chat; its answer is the history"))


def default_kind(gold_count: int) -> QuestionKind:
    """The kind a question has when its file does not say.

    >>> [default_kind(n) for n in (0, 1, 3)]
    ['none', 'single', 'list']
    """
    if gold_count == 0:
        return "none"
    return "single" if gold_count == 1 else "list"


def split_cell(cell: str | None) -> list[str]:
    """A ``|``-separated CSV cell as a list, blanks dropped.

    >>> split_cell(" A | B||")
    ['A', 'B']
    """
    return [part.strip() for part in (cell or "").split(LIST_SEPARATOR) if part.strip()]


def load_questions(path: Path, title_to_id: Mapping[str, str],
                   known_ids: set[str] | None = None) -> list[Question]:
    """Read a question set and resolve its gold papers.

    `title_to_id` maps normalised titles (see `normalize_title`) to index ids; keys are normalised
    again here, so a map keyed by raw titles works too. `known_ids` is the set of ids in the
    index; gold ids outside it are errors. With `known_ids=None` ids are trusted as given.
    A file ending in ``.csv`` is read as CSV, anything else as JSONL.
    """
    path = Path(path)
    if not path.is_file():
        raise QuestionSetError(path, None, "no such question file")
    titles = {normalize_title(title): paper_id for title, paper_id in title_to_id.items()}
    titles_by_id = {paper_id: title for title, paper_id in titles.items()}
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _jsonl_rows(path)
    questions: list[Question] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        question = _question_from_row(path, line, row, titles, titles_by_id, known_ids)
        if question.id in seen:
            raise QuestionSetError(path, line,
                                   f"duplicate id {question.id!r} (first on line {seen[question.id]})")
        if question.follow_up_of is not None and question.follow_up_of not in seen:
            raise QuestionSetError(path, line,
                                   f"follow_up_of {question.follow_up_of!r} names no earlier question")
        seen[question.id] = line
        questions.append(question)
    if not questions:
        raise QuestionSetError(path, None, "no questions in the file")
    return questions


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open(encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise QuestionSetError(path, line_number, f"bad JSON: {exc.msg}") from exc
            if not isinstance(row, dict):
                raise QuestionSetError(path, line_number, "expected a JSON object per line")
            yield line_number, row


def _csv_rows(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "question" not in reader.fieldnames:
            raise QuestionSetError(path, 1, "CSV header must have a 'question' column")
        start = reader.line_num + 1
        for row in reader:
            if not any((value or "").strip() for value in row.values() if isinstance(value, str)):
                start = reader.line_num + 1
                continue
            parsed: dict = {key: value for key, value in row.items() if key is not None}
            for column in ("gold_titles", "gold_ids", "must_mention"):
                parsed[column] = split_cell(parsed.get(column))
            for column in ("id", "kind"):
                if not (parsed.get(column) or "").strip():
                    parsed.pop(column, None)
            # A quoted cell may span lines; name the line the record starts on.
            yield start, parsed
            start = reader.line_num + 1


def _string_list(path: Path, line: int, row: dict, key: str) -> list[str]:
    value = row.get(key) or []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise QuestionSetError(path, line, f"{key!r} must be a list of strings")
    return [item.strip() for item in value if item.strip()]


def _question_from_row(path: Path, line: int, row: dict, titles: Mapping[str, str],
                       titles_by_id: Mapping[str, str], known_ids: set[str] | None) -> Question:
    text = row.get("question")
    if not isinstance(text, str) or not text.strip():
        raise QuestionSetError(path, line, "missing question")
    if row.get("status") == "unconfirmed":  # saved from the chat's feedback; its gold papers are a guess
        raise QuestionSetError(path, line, "an unconfirmed question from chat feedback: check its "
                                           "gold_titles and must_mention, then set \"status\": \"confirmed\"")
    gold_titles = _string_list(path, line, row, "gold_titles")
    listed_ids = _string_list(path, line, row, "gold_ids")
    must_mention = _string_list(path, line, row, "must_mention")

    gold: dict[str, str] = {}  # id -> title, in the order the file gave them
    for title in gold_titles:
        paper_id = titles.get(normalize_title(title))
        if paper_id is None:
            raise QuestionSetError(path, line, f"gold title {title!r} matches no paper in the index "
                                               "(check the spelling, or give its id in gold_ids)")
        gold.setdefault(paper_id, title)
    for paper_id in listed_ids:
        if known_ids is not None and paper_id not in known_ids:
            raise QuestionSetError(path, line, f"gold id {paper_id!r} is not in the index")
        gold.setdefault(paper_id, titles_by_id.get(paper_id, paper_id))
    gold_ids = list(gold)

    kind = row.get("kind") or default_kind(len(gold_ids))
    if kind not in KINDS:
        raise QuestionSetError(path, line, f"kind {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "none" and gold_ids:
        raise QuestionSetError(path, line, "kind 'none' (unanswerable) cannot have gold papers")
    if kind != "none" and not gold_ids:
        raise QuestionSetError(path, line, f"kind {kind!r} needs gold_titles or gold_ids")

    question_id = row.get("id", f"{path.stem}-{line}")
    if not isinstance(question_id, (str, int)) or not str(question_id).strip():
        raise QuestionSetError(path, line, "id must be a non-empty string")
    follow_up_of = row.get("follow_up_of")
    names_nothing = not isinstance(follow_up_of, (str, int)) or not str(follow_up_of).strip()
    if follow_up_of is not None and names_nothing:
        raise QuestionSetError(path, line, "follow_up_of must be the id of an earlier question")
    return Question(id=str(question_id).strip(), question=text.strip(), kind=kind, gold_ids=gold_ids,
                    gold_titles=list(gold.values()), must_mention=must_mention, source=f"{path.name}:{line}",
                    follow_up_of=str(follow_up_of).strip() if follow_up_of is not None else None)
