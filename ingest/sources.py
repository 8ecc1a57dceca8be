"""Reading input files into `Paper`s: the one owner of parsing user and bundled paper files.

Five formats are understood, detected from a file's content (the extension is not trusted):

- ``listing``: the text dump of a daily-papers listing page shipped in ``data/corpus``, either
  as blank-line separated blocks (title, abstract, ``• N authors``, ``·``, date) or as bare
  title/abstract line pairs;
- ``jsonl``: one JSON object per line with ``title`` and ``abstract``;
- ``csv``: the same columns under a header row;
- ``arxiv``: the arXiv metadata snapshot (JSON lines with ``id``, ``update_date``, ...);
- ``beir``: a BEIR ``corpus.jsonl`` (``_id``, ``title``, ``text``).

Bad records never raise: each becomes a `Rejection` naming the file and line, and the good
records of the same file are still returned. Files are streamed line by line, so a
multi-gigabyte arXiv snapshot is never held in memory by `iter_records`.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.papers import Paper

FORMATS = ("listing", "jsonl", "csv", "arxiv", "beir")

# How much of a file's head is read to tell its format and whether it is text at all.
_PEEK_BYTES = 64 * 1024
# JSON lines tried when the first ones are malformed, before settling on plain "jsonl".
_PEEK_JSON_LINES = 5


class SourceError(Exception):
    """Base of the errors this module raises (bad arguments or files that are not text)."""


class UnknownFormatError(SourceError, ValueError):
    """A format name that is none of `FORMATS`."""

    def __init__(self, fmt: str) -> None:
        super().__init__(f"unknown input format {fmt!r}: use one of {', '.join(FORMATS)}")
        self.fmt = fmt


class UnreadableFileError(SourceError):
    """A file that holds no text to read: empty, binary, or not UTF-8."""

    def __init__(self, path: Path | str, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path = str(path)
        self.why = why


@dataclass(frozen=True)
class Rejection:
    """A record that could not be read, and where it is.

    >>> str(Rejection("data/x.jsonl", 7, "invalid JSON (Expecting ',' delimiter)"))
    "data/x.jsonl:7: invalid JSON (Expecting ',' delimiter)"
    >>> str(Rejection("blob.bin", None, "binary file (NUL bytes)"))
    'blob.bin: binary file (NUL bytes)'
    """

    path: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.reason}"


@dataclass
class ReadResult:
    """What `read_papers` found: unique papers, how many records made them, what was refused."""

    papers: list[Paper] = field(default_factory=list)
    records: int = 0
    duplicates_merged: int = 0
    rejected: list[Rejection] = field(default_factory=list)


def bundled_corpus_dir() -> Path:
    """The ``data/corpus`` folder shipped with the repository."""
    return Path(__file__).resolve().parent.parent / "data" / "corpus"


# ---------------------------------------------------------------------------------------------
# Small pure helpers shared by the format readers


def collapse_spaces(text: str) -> str:
    """Newlines and runs of whitespace folded to single spaces (arXiv titles wrap lines).

    >>> collapse_spaces("  Attention is\\n  all you   need ")
    'Attention is all you need'
    """
    return " ".join(text.split())


def split_authors(authors: str | list[Any] | None) -> tuple[str, ...]:
    """Author names from a list, or a string separated by commas and/or "and".

    >>> split_authors("A. Smith, B. Jones and C. Lee")
    ('A. Smith', 'B. Jones', 'C. Lee')
    >>> split_authors(["Ada Lovelace", " "])
    ('Ada Lovelace',)
    """
    if not authors:
        return ()
    parts = authors if isinstance(authors, list) else re.split(r",|\band\b", str(authors))
    return tuple(name for name in (collapse_spaces(str(p)) for p in parts) if name)


def split_categories(categories: str | list[Any] | None) -> tuple[str, ...]:
    """Categories from a list or a space-separated string.

    >>> split_categories("cs.LG stat.ML")
    ('cs.LG', 'stat.ML')
    """
    if not categories:
        return ()
    parts = categories if isinstance(categories, list) else str(categories).split()
    return tuple(c for c in (str(p).strip() for p in parts) if c)


def year_from_date(date: str | None) -> int | None:
    """The four-digit year in a date as written, if it has one.

    >>> year_from_date("Oct 13, 2018"), year_from_date("2019-08-19"), year_from_date("Jan 30")
    (2018, 2019, None)
    """
    match = re.search(r"\b(1[89]\d\d|2\d\d\d)\b", date or "")
    return int(match.group(1)) if match else None


def _parse_year(value: Any) -> int | None:
    """A ``year`` field given as a number or a string; None when it is not a year."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    return year_from_date(str(value)) if value not in (None, "") else None


# ---------------------------------------------------------------------------------------------
# Reading lines (the only place files are opened)


def _peek_text(path: Path) -> str:
    """The decoded head of a file; UnreadableFileError if it is empty, binary or not UTF-8."""
    with path.open("rb") as handle:
        head = handle.read(_PEEK_BYTES)
    if not head.strip():
        raise UnreadableFileError(path, "empty file" if not head else "file holds only whitespace")
    if b"\x00" in head:
        raise UnreadableFileError(path, "binary file (NUL bytes), not text")
    try:
        # final=False: a multi-byte character cut by the peek is not an error.
        return codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    except UnicodeDecodeError as err:
        raise UnreadableFileError(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from None


def _numbered_lines(path: Path) -> Iterator[tuple[int, str | Rejection]]:
    """(1-based line number, line without its newline) for each line, streamed.

    A line that is not UTF-8 comes as a Rejection instead of its text.
    """
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                yield number, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                yield number, Rejection(str(path), number, f"not UTF-8 text ({err.reason})")


# ---------------------------------------------------------------------------------------------
# Format detection


def _format_of_json_object(obj: dict[str, Any]) -> str:
    """Which JSON-lines flavour one object belongs to.

    >>> _format_of_json_object({"_id": "4983", "title": "T", "text": "A"})
    'beir'
    >>> _format_of_json_object({"id": "0704.0001", "title": "T", "abstract": "A", "update_date": "2008-11-13"})
    'arxiv'
    >>> _format_of_json_object({"title": "T", "abstract": "A", "authors": ["X"]})
    'jsonl'
    """
    if "_id" in obj and "text" in obj:
        return "beir"
    if "update_date" in obj or (
        {"id", "abstract", "categories"} <= obj.keys() and isinstance(obj.get("authors"), str)
    ):
        return "arxiv"
    return "jsonl"


def _format_of_text(head: str) -> str:
    """The format a file's decoded head shows.

    >>> _format_of_text('{"_id": "1", "title": "T", "text": "A"}\\n')
    'beir'
    >>> _format_of_text("id,title,abstract\\n1,T,A\\n")
    'csv'
    >>> _format_of_text("new\\n\\nDaily Papers\\n")
    'listing'
    """
    lines = [line.strip() for line in head.splitlines() if line.strip()]
    if lines[0].startswith("{"):
        for line in lines[:_PEEK_JSON_LINES]:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                return _format_of_json_object(obj)
        return "jsonl"
    header = next(csv.reader([lines[0]]))
    if len(header) > 1 and {"title", "abstract"} <= {name.strip().lower() for name in header}:
        return "csv"
    return "listing"


def detect_format(path: Path) -> str:
    """The format of a file, one of `FORMATS`, told from its first non-empty lines.

    Raises UnreadableFileError (its message names the file) for empty, binary or non-UTF-8 files.
    """
    return _format_of_text(_peek_text(Path(path)))


# ---------------------------------------------------------------------------------------------
# Building a Paper from one record's fields


def _paper_from_fields(
    fields: dict[str, Any], where: str, *, abstract_key: str = "abstract", id_key: str = "id",
) -> Paper | str:
    """A Paper from a JSON/CSV record, or the reason it cannot be one.

    >>> p = _paper_from_fields({"title": "T", "abstract": "A", "authors": "X and Y", "date": "2020-01-02"}, "f:1")
    >>> p.authors, p.author_count, p.year, p.sources
    (('X', 'Y'), 2, 2020, ('f:1',))
    >>> _paper_from_fields({"title": "T", "abstract": " "}, "f:1")
    'empty abstract'
    """
    missing = [key for key in ("title", abstract_key) if key not in fields or fields[key] is None]
    if missing:
        return f"missing field{'s' if len(missing) > 1 else ''}: {', '.join(missing)}"
    if not isinstance(fields["title"], str) or not isinstance(fields[abstract_key], str):
        return f"title and {abstract_key} must be text"
    title = collapse_spaces(fields["title"])
    abstract = collapse_spaces(fields[abstract_key])
    if not title:
        return "empty title"
    if not abstract:
        return f"empty {abstract_key}"
    authors = split_authors(fields.get("authors"))
    date = fields.get("date") or None
    date = str(date).strip() if date is not None else None
    year = _parse_year(fields.get("year")) or year_from_date(date)
    return Paper(
        title=title,
        abstract=abstract,
        id=str(fields.get(id_key) or "").strip(),
        authors=authors,
        author_count=len(authors) or None,
        date=date,
        year=year,
        url=(str(fields["url"]).strip() or None) if fields.get("url") else None,
        categories=split_categories(fields.get("categories")),
        sources=(where,),
    )


def _arxiv_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """An arXiv snapshot record renamed to the generic fields.

    >>> f = _arxiv_fields({"id": "1706.03762", "title": "T", "abstract": "A", "update_date": "2017-06-12"})
    >>> f["url"], f["date"]
    ('https://arxiv.org/abs/1706.03762', '2017-06-12')
    """
    arxiv_id = str(obj.get("id") or "").strip()
    return {
        "id": arxiv_id,
        "title": obj.get("title"),
        "abstract": obj.get("abstract"),
        "authors": obj.get("authors"),
        "date": obj.get("update_date"),
        "url": f"https://arxiv.org/abs/{arxiv_id}" if arxiv_id else None,
        "categories": obj.get("categories"),
    }


# ---------------------------------------------------------------------------------------------
# Readers, one per format; each yields Papers and Rejections in file order


def _read_json_lines(path: Path, fmt: str) -> Iterator[Paper | Rejection]:
    """jsonl, arxiv and beir: one JSON object per line, blank lines ignored."""
    for number, line in _numbered_lines(path):
        if isinstance(line, Rejection):
            yield line
            continue
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            yield Rejection(str(path), number, f"invalid JSON ({err.msg})")
            continue
        if not isinstance(obj, dict):
            yield Rejection(str(path), number, f"expected a JSON object, got {type(obj).__name__}")
            continue
        where = f"{path.name}:{number}"
        if fmt == "beir":
            result = _paper_from_fields(obj, where, abstract_key="text", id_key="_id")
        elif fmt == "arxiv":
            result = _paper_from_fields(_arxiv_fields(obj), where)
        else:
            result = _paper_from_fields(obj, where)
        yield Rejection(str(path), number, result) if isinstance(result, str) else result


def _read_csv(path: Path) -> Iterator[Paper | Rejection]:
    """A header row naming the columns (case-insensitive), then one row per paper."""
    pending: list[Rejection] = []

    def text_lines() -> Iterator[str]:
        # Undecodable lines are set aside as rejections and left out of the CSV stream.
        for _, line in _numbered_lines(path):
            if isinstance(line, Rejection):
                pending.append(line)
            else:
                yield line + "\n"

    reader = csv.reader(text_lines())
    header: list[str] | None = None
    row_start = 1
    try:
        for row in reader:
            yield from pending
            pending.clear()
            # Rows may span lines (quoted newlines): a row starts after the previous one ended.
            number, row_start = row_start, reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [name.strip().lower() for name in row]
                continue
            if len(row) > len(header):
                yield Rejection(str(path), number, f"{len(row)} cells but the header names {len(header)}")
                continue
            fields = dict(zip(header, row))
            result = _paper_from_fields(fields, f"{path.name}:{number}")
            yield Rejection(str(path), number, result) if isinstance(result, str) else result
    except csv.Error as err:
        yield Rejection(str(path), row_start, f"malformed CSV ({err})")
    yield from pending


# Lines of the listing page that are page furniture, not papers.
_LISTING_CHROME = frozenset({
    "new",
    "Subscribe",
    "Daily Papers",
    "byAK and the research community",
    "Get trending papers in your email inbox!",
    "Get trending papers in your email inbox once a day!",
})
_AUTHORS_LINE = re.compile(r"^\s*•\s*(\d+)\s+authors?\s*$")
_DATE_LINE = re.compile(
    r"^(?P<date>(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{1,2}(?:, \d{4})?)(?: (?P<up>\d+))?$"
)


def strip_glued_header(line: str) -> str:
    """A title with the page's "Subscribe" button text glued in front of it, unglued.

    >>> strip_glued_header("SubscribeEquivariant Transformer Networks")
    'Equivariant Transformer Networks'
    >>> strip_glued_header("Subscribers Matter")
    'Subscribers Matter'
    """
    rest = line[len("Subscribe"):]
    if line.startswith("Subscribe") and rest[:1] and not rest[0].islower() and not rest[0].isspace():
        return rest
    return line


@dataclass
class _ListingRecord:
    """A listing record being assembled line by line."""

    title: str
    line: int
    abstract: str | None = None
    author_count: int | None = None
    date: str | None = None
    upvotes: int | None = None


def _finish_listing_record(record: _ListingRecord, path: Path) -> Paper | Rejection:
    if not record.abstract:
        return Rejection(str(path), record.line, f"no abstract after title {record.title!r}")
    return Paper(
        title=record.title,
        abstract=record.abstract,
        author_count=record.author_count,
        date=record.date,
        year=year_from_date(record.date),
        upvotes=record.upvotes,
        sources=(f"{path.name}:{record.line}",),
    )


def _read_listing(path: Path) -> Iterator[Paper | Rejection]:
    """Both listing layouts with one state machine over the non-blank lines.

    A text line is a title when no record is open, else the open record's abstract; a third
    text line closes the record (the line-pair layout has no author or date lines). Author and
    date lines belong to the open record and a date line closes it. A date line with no record
    open is the page's own date (chrome), and so are the `_LISTING_CHROME` lines.
    """
    record: _ListingRecord | None = None
    seen_content = False
    for number, line in _numbered_lines(path):
        if isinstance(line, Rejection):
            yield line
            continue
        text = line.strip()
        if not text or text in _LISTING_CHROME or text == "·":
            continue
        if authors := _AUTHORS_LINE.match(text):
            if record is None:
                yield Rejection(str(path), number, "author count with no paper before it")
            else:
                record.author_count = int(authors.group(1))
            continue
        if date := _DATE_LINE.match(text):
            if record is not None:
                record.date = date.group("date")
                record.upvotes = int(date.group("up")) if date.group("up") else None
                yield _finish_listing_record(record, path)
                record = None
            continue
        if not seen_content:
            text = strip_glued_header(text)
            seen_content = True
        if record is None:
            record = _ListingRecord(title=text, line=number)
        elif record.abstract is None and record.author_count is None:
            record.abstract = text
        else:
            yield _finish_listing_record(record, path)
            record = _ListingRecord(title=text, line=number)
    if record is not None:
        yield _finish_listing_record(record, path)


_READERS = {
    "listing": _read_listing,
    "csv": _read_csv,
    "jsonl": lambda path: _read_json_lines(path, "jsonl"),
    "arxiv": lambda path: _read_json_lines(path, "arxiv"),
    "beir": lambda path: _read_json_lines(path, "beir"),
}


def iter_records(path: Path, fmt: str | None = None) -> Iterator[Paper | Rejection]:
    """Every record of one file, in order, as a Paper or a Rejection; streamed.

    `fmt` overrides detection; an unknown name raises UnknownFormatError at once. A file that is
    empty, binary or not UTF-8 yields a single Rejection naming it.
    """
    if fmt is not None and fmt not in FORMATS:
        raise UnknownFormatError(fmt)
    return _iter_records(Path(path), fmt)


def _iter_records(path: Path, fmt: str | None) -> Iterator[Paper | Rejection]:
    try:
        detected = detect_format(path)
    except UnreadableFileError as err:
        yield Rejection(str(path), None, err.why)
        return
    yield from _READERS[fmt or detected](path)


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files named, with each directory replaced by its visible files, sorted by name.

    Raises FileNotFoundError for a path that does not exist, before anything is read.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(
                p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
            ))
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(f"no such file or directory: {path}")
    return files


def read_papers(paths: Iterable[Path], fmt: str | None = None) -> ReadResult:
    """All papers of the given files and directories, one per paper id, in order of first sight.

    Records of the same paper (same `Paper.id`: the source's id, else the normalised title) are
    merged with `Paper.merged_with`, keeping every source.
    """
    if fmt is not None and fmt not in FORMATS:
        raise UnknownFormatError(fmt)
    result = ReadResult()
    by_id: dict[str, Paper] = {}
    for path in expand_paths(paths):
        for item in iter_records(path, fmt):
            if isinstance(item, Rejection):
                result.rejected.append(item)
                continue
            result.records += 1
            seen = by_id.get(item.id)
            by_id[item.id] = item if seen is None else seen.merged_with(item)
    result.papers = list(by_id.values())
    result.duplicates_merged = result.records - len(result.papers)
    return result
