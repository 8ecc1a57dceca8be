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
records of the same file are still returned. A record that is kept but changed (a clipped title)
comes with a `Notice`. Each file is opened once and streamed line by line, every line bounded by
`Limits.max_record_bytes`, so a multi-gigabyte arXiv snapshot, a 50 MB line, standard input
(``-``) or a named pipe are read in bounded memory and never twice.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import re
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import chain
from pathlib import Path
from typing import IO, Any

from paperchat.rag.papers import Paper, normalize_title

FORMATS = ("listing", "jsonl", "csv", "arxiv", "beir")

# The path that means standard input, as in `cat papers.jsonl | paperchat ingest -`.
STDIN = "-"
# How much of a file's head is looked at to tell its format and whether it is text at all.
_PEEK_BYTES = 64 * 1024
# JSON lines tried when the first ones are malformed, before settling on plain "jsonl".
_PEEK_JSON_LINES = 5
# Quoted input in a message is clipped to this many characters: a 50 MB bad line is not echoed.
QUOTE_CHARS = 200
# Years outside this range are not years (an explicit one rejects the record).
YEARS = range(1000, 2101)


class SourceError(Exception):
    """Base of the errors this module raises (bad arguments or files that are not text)."""


class UnknownFormatError(SourceError, ValueError):
    """A format name that is none of `FORMATS`."""

    def __init__(self, fmt: str) -> None:
        super().__init__(f"unknown input format {fmt!r}: use one of {', '.join(FORMATS)}")
        self.fmt = fmt


class UnreadableFileError(SourceError):
    """A file that holds no text to read: empty, binary, not UTF-8, or not readable at all."""

    def __init__(self, path: Path | str, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path = str(path)
        self.why = why


@dataclass(frozen=True)
class Limits:
    """Bounds on one record, so that a hostile record costs one rejection, not the run.

    `ingest.max_record_bytes` and `ingest.max_title_chars` in the settings.
    """

    max_record_bytes: int = 200_000
    max_title_chars: int = 300


@dataclass(frozen=True)
class Located:
    """A message about one place of an input file, as people read it there: "file:line: text", or
    "file: text" without a line.

    >>> str(Located("a.csv", 4, "unclosed quote")), str(Located("a.csv", None, "empty file"))
    ('a.csv:4: unclosed quote', 'a.csv: empty file')
    """

    path: str
    line: int | None
    text: str

    def __str__(self) -> str:
        return f"{self.path if self.line is None else f'{self.path}:{self.line}'}: {self.text}"


class Rejection(Located):
    """A record that could not be read, and where it is.

    >>> str(Rejection("data/x.jsonl", 7, "invalid JSON (Expecting ',' delimiter)"))
    "data/x.jsonl:7: invalid JSON (Expecting ',' delimiter)"
    >>> Rejection("blob.bin", None, "binary file (NUL bytes)").reason
    'binary file (NUL bytes)'
    """

    @property
    def reason(self) -> str:
        """Why the record was rejected (the message without its place)."""
        return self.text


class Notice(Located):
    """A record that was kept but changed on the way in, and how (e.g. its title clipped).

    >>> str(Notice("x.jsonl", 3, "title clipped to 300 of 9,000 characters"))
    'x.jsonl:3: title clipped to 300 of 9,000 characters'
    """


@dataclass
class ReadResult:
    """What `read_papers` found: unique papers, how many records made them, what was refused."""

    papers: list[Paper] = field(default_factory=list)
    records: int = 0
    duplicates_merged: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    files: int = 0


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


def clip(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text` cut to `limit` characters with an ellipsis, for quoting input in a message.

    >>> clip("abcdefgh", 5)
    'abcd…'
    >>> clip("abc", 5)
    'abc'
    """
    return text if len(text) <= limit else text[:limit - 1] + "…"


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
    """The four-digit year in a date as written, if it has one (1800 to 2100).

    >>> year_from_date("Oct 13, 2018"), year_from_date("2019-08-19"), year_from_date("Jan 30")
    (2018, 2019, None)
    >>> year_from_date("2999-01-01") is None
    True
    """
    match = re.search(r"\b(1[89]\d\d|2\d\d\d)\b", date or "")
    year = int(match.group(1)) if match else None
    return year if year in YEARS else None


def parse_year(value: Any) -> int | None:
    """A ``year`` field given as a number or a string; None when absent or not a year.

    Raises ValueError for a number outside `YEARS`: a record claiming the year 10**30 is refused
    rather than guessed at (and such a number would overflow the index's integer columns).

    >>> parse_year(2021), parse_year("2019-08-19"), parse_year(""), parse_year(True)
    (2021, 2019, None, None)
    >>> parse_year(10**30)
    Traceback (most recent call last):
    ValueError: year 1000000000000000000000000000000 is outside 1000..2100
    """
    if isinstance(value, bool) or value in (None, ""):
        return None
    if isinstance(value, int):
        if value not in YEARS:
            shown = str(value) if abs(value) < 10**60 else f"of {len(str(abs(value)))} digits"
            raise ValueError(f"year {shown} is outside {YEARS.start}..{YEARS.stop - 1}")
        return value
    return year_from_date(str(value))


def _bad_text(paper: Paper) -> str | None:
    """Why a Paper's text cannot be stored (a lone surrogate, from a JSON ``\\ud800`` escape), or None.

    >>> _bad_text(Paper("T\\ud800", "A"))
    'the title holds a lone surrogate (\\\\ud800), which is not Unicode text'
    """
    fields = {"title": paper.title, "abstract": paper.abstract, "id": paper.id, "date": paper.date or "",
              "url": paper.url or "", "authors": "".join(paper.authors),
              "categories": "".join(paper.categories)}
    for name, text in fields.items():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            bad = text[err.start:err.end].encode("unicode_escape", "backslashreplace").decode("ascii")
            return f"the {name} holds a lone surrogate ({clip(bad, 20)}), which is not Unicode text"
    return None


def _finish(paper: Paper, name: str, number: int, limits: Limits) -> Iterator[Paper | Rejection]:
    """A parsed Paper checked against what the index can store: it, with notices, or a Rejection."""
    if reason := _bad_text(paper):
        yield Rejection(name, number, reason)
        return
    if len(paper.title) > limits.max_title_chars:
        yield Notice(name, number, f"title clipped to {limits.max_title_chars} of {len(paper.title):,} "
                                   f"characters: {clip(paper.title, 60)!r}")
        paper = replace(paper, title=clip(paper.title, limits.max_title_chars))  # the id stays the same
    yield paper


# ---------------------------------------------------------------------------------------------
# Reading lines (the only place files are opened)


@dataclass(frozen=True)
class _Overlong:
    """Stands for a line longer than the record bound: its size and first bytes; the rest was skipped."""

    size: int
    head: bytes


def _bounded_lines(handle: IO[bytes], max_bytes: int,
                   advance: Callable[[int], None] | None = None) -> Iterator[bytes | _Overlong]:
    """The raw lines of a binary stream, each at most `max_bytes` long, else an `_Overlong`.

    A longer line is skipped in 1 MB steps without being held, so its size costs no memory.
    `advance(n)` is told of the bytes read, about every 256 KiB.
    """
    unreported = 0
    while True:
        line = handle.readline(max_bytes + 1)
        if not line:
            break
        unreported += len(line)
        if len(line) > max_bytes and not line.endswith(b"\n"):
            size, head = len(line), line[:QUOTE_CHARS * 4]
            while line and not line.endswith(b"\n"):
                line = handle.readline(1 << 20)
                size += len(line)
                unreported += len(line)
            line = _Overlong(size, head)
        if advance is not None and unreported >= 1 << 18:
            advance(unreported)
            unreported = 0
        yield line
    if advance is not None and unreported:
        advance(unreported)


def _peek(raw: Iterator[bytes | _Overlong]) -> list[bytes | _Overlong]:
    """The first lines of a stream, about `_PEEK_BYTES` of them, taken off the iterator."""
    head: list[bytes | _Overlong] = []
    size = 0
    for line in raw:
        head.append(line)
        size += line.size if isinstance(line, _Overlong) else len(line)
        if size >= _PEEK_BYTES:
            break
    return head


def _decoded(raw: Iterable[bytes | _Overlong], name: str,
             max_bytes: int) -> Iterator[tuple[int, str | Rejection]]:
    """(1-based line number, line without its newline) for each raw line, in order.

    A line that is over the record bound, holds NUL bytes or is not UTF-8 comes as a Rejection
    instead of its text: it costs that line, never the file.
    """
    for number, line in enumerate(raw, start=1):
        if isinstance(line, _Overlong):
            quoted = clip(line.head.decode("utf-8", "replace"))
            yield number, Rejection(name, number, f"line of {line.size:,} bytes is over the record limit "
                                                  f"of {max_bytes:,} (ingest.max_record_bytes), not read: "
                                                  f"{quoted!r}")
            continue
        if number == 1 and line.startswith(codecs.BOM_UTF8):
            line = line[len(codecs.BOM_UTF8):]
        if b"\x00" in line:
            yield number, Rejection(name, number, "NUL bytes in the line: binary data, not text")
            continue
        try:
            yield number, line.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as err:
            why = f"not UTF-8 text ({err.reason} at byte {err.start + 1} of the line)"
            yield number, Rejection(name, number, why)


def _format_of_head(head: list[bytes | _Overlong], name: str) -> str:
    """The format shown by a file's first lines; UnreadableFileError when they are not text.

    A file is refused whole only when it looks binary or non-UTF-8 throughout its head (at least
    half of its non-blank lines there are bad); a few bad lines among good ones cost only those.
    """
    good: list[str] = []
    bad: list[str] = []
    for number, line in enumerate(head, start=1):
        if isinstance(line, _Overlong):  # too long to read, but its start still shows the format
            good.append(line.head.decode("utf-8", "ignore"))
            continue
        if number == 1 and line.startswith(codecs.BOM_UTF8):
            line = line[len(codecs.BOM_UTF8):]
        if not line.strip():
            continue
        if b"\x00" in line:
            bad.append("binary file (NUL bytes), not text")
            continue
        try:
            good.append(line.decode("utf-8"))
        except UnicodeDecodeError as err:
            bad.append(f"not UTF-8 text ({err.reason} on line {number})")
    if not good and not bad:
        raise UnreadableFileError(name, "file holds only whitespace" if head else "empty file")
    if len(bad) * 2 >= len(good) + len(bad):
        raise UnreadableFileError(name, bad[0])
    return _format_of_text("\n".join(good))


def _display_name(path: Path) -> tuple[str, str]:
    """How a file is named in messages, and in `Paper.sources` ("file.jsonl:12")."""
    return ("<stdin>", "stdin") if str(path) == STDIN else (str(path), path.name)


# ---------------------------------------------------------------------------------------------
# Format detection


def _format_of_json_object(obj: dict[str, Any]) -> str:
    """Which JSON-lines flavour one object belongs to.

    >>> _format_of_json_object({"_id": "4983", "title": "T", "text": "A"})
    'beir'
    >>> _format_of_json_object({"id": "0704.0001", "title": "T", "update_date": "2008-11-13"})
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
            except (ValueError, RecursionError):
                continue
            if isinstance(obj, dict):
                return _format_of_json_object(obj)
        return "jsonl"
    try:
        header = next(csv.reader([lines[0][:_PEEK_BYTES]]))
    except csv.Error:
        return "listing"
    if len(header) > 1 and {"title", "abstract"} <= {name.strip().lower() for name in header}:
        return "csv"
    return "listing"


def detect_format(path: Path) -> str:
    """The format of a file, one of `FORMATS`, told from its first non-empty lines.

    Raises UnreadableFileError (its message names the file) for files that are empty, binary,
    not UTF-8, or cannot be opened. Reads only the head; standard input cannot be peeked twice,
    so `iter_records` detects its format from the same single read.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return _format_of_head(_peek(_bounded_lines(handle, Limits().max_record_bytes)), str(path))
    except OSError as err:
        raise UnreadableFileError(path, f"cannot read it ({err.strerror or err})") from None


# ---------------------------------------------------------------------------------------------
# Building a Paper from one record's fields


def _paper_from_fields(
    fields: dict[str, Any], where: str, *, abstract_key: str = "abstract", id_key: str = "id",
) -> Paper | str:
    """A Paper from a JSON/CSV record, or the reason it cannot be one.

    >>> fields = {"title": "T", "abstract": "A", "authors": "X and Y", "date": "2020-01-02"}
    >>> p = _paper_from_fields(fields, "f:1")
    >>> p.authors, p.author_count, p.year, p.sources
    (('X', 'Y'), 2, 2020, ('f:1',))
    >>> _paper_from_fields({"title": "T", "abstract": " "}, "f:1")
    'empty abstract'
    >>> _paper_from_fields({"title": "T", "abstract": "A", "year": 10**30}, "f:1")
    'year 1000000000000000000000000000000 is outside 1000..2100'
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
    try:
        year = parse_year(fields.get("year"))
    except ValueError as err:
        return str(err)
    authors = split_authors(fields.get("authors"))
    date = fields.get("date") or None
    date = str(date).strip() if date is not None else None
    return Paper(
        title=title,
        abstract=abstract,
        id=str(fields.get(id_key) or "").strip(),
        authors=authors,
        author_count=len(authors) or None,
        date=date,
        year=year or year_from_date(date),
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


def _paper_from_arxiv(obj: dict[str, Any], where: str) -> Paper | str:
    return _paper_from_fields(_arxiv_fields(obj), where)


# Errors that building one record from parsed input may raise (deep nesting, huge numbers, odd
# types): each costs that record, never the run.
_RECORD_ERRORS = (ValueError, TypeError, RecursionError, OverflowError, UnicodeError)


def _record_from(build: Callable[[], Paper | str], name: str, number: int,
                 limits: Limits) -> Iterator[Paper | Rejection | Notice]:
    """`build()`'s Paper, checked, or a Rejection naming the line; never an exception."""
    try:
        result = build()
    except _RECORD_ERRORS as err:
        result = f"unusable record ({type(err).__name__}: {clip(str(err), 120)})"
    if isinstance(result, str):
        yield Rejection(name, number, result)
    else:
        yield from _finish(result, name, number, limits)


# ---------------------------------------------------------------------------------------------
# Readers, one per format; each yields Papers, Rejections and Notices in file order

Lines = Iterator[tuple[int, "str | Rejection"]]


def _read_json_lines(fmt: str, name: str, short: str, lines: Lines,
                     limits: Limits) -> Iterator[Paper | Rejection | Notice]:
    """jsonl, arxiv and beir: one JSON object per line, blank lines ignored."""
    for number, line in lines:
        if isinstance(line, Rejection):
            yield line
            continue
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            yield Rejection(name, number, f"invalid JSON ({err.msg})")
            continue
        except RecursionError:
            yield Rejection(name, number, "invalid JSON (nested too deeply to read)")
            continue
        except ValueError as err:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion: ..."
            yield Rejection(name, number, f"invalid JSON ({clip(str(err).partition(':')[0], 120)})")
            continue
        if not isinstance(obj, dict):
            yield Rejection(name, number, f"expected a JSON object, got {type(obj).__name__}")
            continue
        where = f"{short}:{number}"
        if fmt == "beir":
            build = partial(_paper_from_fields, obj, where, abstract_key="text", id_key="_id")
        elif fmt == "arxiv":
            build = partial(_paper_from_arxiv, obj, where)
        else:
            build = partial(_paper_from_fields, obj, where)
        yield from _record_from(build, name, number, limits)


class _RowTooLong(Exception):
    """Raised through the csv module when a row grows past the record bound."""


class _CsvFeed:
    """The csv module's line source: numbered lines, and lines that can be handed out again.

    It remembers the lines of the row being read, so that a row whose quote never closes (or
    that grows past the record bound) is rejected by the line it started on and the lines after
    that one are read again as rows of their own: an unclosed quote costs one row, not the rest
    of the file. Every line ends with a newline, so the csv module only asks for another line
    within a row while a quoted field is open; `at_end` then tells that the quote never closed.
    """

    def __init__(self, lines: Lines, max_chars: int) -> None:
        self.lines = lines
        self.max_chars = max_chars
        self.again: deque[tuple[int, str]] = deque()
        self.taken: list[tuple[int, str]] = []
        self.rejections: list[Rejection] = []
        self.size = 0
        self.at_end = False

    def start_row(self) -> None:
        self.taken, self.size, self.at_end = [], 0, False

    def read_again(self, lines: list[tuple[int, str]]) -> None:
        self.again.extendleft(reversed(lines))

    def __iter__(self) -> _CsvFeed:
        return self

    def __next__(self) -> str:
        while not self.again:
            number, line = next(self.lines, (0, None))
            if line is None:
                self.at_end = True
                raise StopIteration
            if isinstance(line, Rejection):
                self.rejections.append(line)
                continue
            break
        else:
            number, line = self.again.popleft()
        self.taken.append((number, line))
        self.size += len(line) + 1
        if self.size > self.max_chars:
            raise _RowTooLong
        return line + "\n"


def _read_csv(name: str, short: str, lines: Lines, limits: Limits) -> Iterator[Paper | Rejection | Notice]:
    """A header row naming the columns (case-insensitive), then one row per paper."""
    # The module-wide default (128 KiB) would end the file at the first big field; rows are
    # bounded by `_CsvFeed` instead.
    csv.field_size_limit(max(csv.field_size_limit(), limits.max_record_bytes + 1))
    feed = _CsvFeed(lines, limits.max_record_bytes)
    reader = csv.reader(feed)
    header: list[str] | None = None
    while True:
        feed.start_row()
        problem = None
        try:
            row = next(reader)
            if feed.at_end:
                problem = "a quoted field opened on this line never closes (unclosed \")"
        except StopIteration:
            break
        except _RowTooLong:
            problem = (f"row over the record limit of {limits.max_record_bytes:,} characters "
                       "(ingest.max_record_bytes); an unclosed quote here would explain it")
        except csv.Error as err:
            problem = f"malformed CSV ({err})"
        yield from feed.rejections
        feed.rejections.clear()
        if not feed.taken:
            continue
        number = feed.taken[0][0]
        retry = problem is not None
        if problem is None:
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip().lower() for cell in row]
                continue
            if len(row) > len(header):
                problem = f"{len(row)} cells but the header names {len(header)}"
                retry = True  # a quote that closed too late glues rows together
            else:
                fields = dict(zip(header, row))
                build = partial(_paper_from_fields, fields, f"{short}:{number}")
                yield from _record_from(build, name, number, limits)
                continue
        if retry and len(feed.taken) > 1:
            last = feed.taken[-1][0]
            problem += f"; lines {number + 1}-{last} are read again as rows of their own"
            feed.read_again(feed.taken[1:])
        yield Rejection(name, number, problem)


# Lines of the listing page that are page furniture, not papers.
_LISTING_CHROME = frozenset({
    "new",
    "Subscribe",
    "Daily Papers",
    "byAK and the research community",
    "Get trending papers in your email inbox!",
    "Get trending papers in your email inbox once a day!",
})
# Counts are bounded in length: a 5,000-digit "upvote count" is text, not a number to convert.
_AUTHORS_LINE = re.compile(r"^\s*•\s*(\d{1,6})\s+authors?\s*$")
_DATE_LINE = re.compile(
    r"^(?P<date>(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{1,2}(?:, \d{4})?)"
    r"(?: (?P<up>\d{1,9}))?$"
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


def _finish_listing_record(record: _ListingRecord, name: str, short: str,
                           limits: Limits) -> Iterator[Paper | Rejection | Notice]:
    if not record.abstract:
        yield Rejection(name, record.line, f"no abstract after title {clip(record.title)!r}")
        return
    yield from _finish(Paper(
        title=record.title,
        abstract=record.abstract,
        author_count=record.author_count,
        date=record.date,
        year=year_from_date(record.date),
        upvotes=record.upvotes,
        sources=(f"{short}:{record.line}",),
    ), name, record.line, limits)


def _read_listing(name: str, short: str, lines: Lines,
                  limits: Limits) -> Iterator[Paper | Rejection | Notice]:
    """Both listing layouts with one state machine over the non-blank lines.

    A text line is a title when no record is open, else the open record's abstract; a third
    text line closes the record (the line-pair layout has no author or date lines). Author and
    date lines belong to the open record and a date line closes it. A date line with no record
    open is the page's own date (chrome), and so are the `_LISTING_CHROME` lines.
    """
    record: _ListingRecord | None = None
    seen_content = False
    for number, line in lines:
        if isinstance(line, Rejection):
            yield line
            continue
        text = line.strip()
        if not text or text in _LISTING_CHROME or text == "·":
            continue
        if authors := _AUTHORS_LINE.match(text):
            if record is None:
                yield Rejection(name, number, "author count with no paper before it")
            else:
                record.author_count = int(authors.group(1))
            continue
        if date := _DATE_LINE.match(text):
            if record is not None:
                record.date = date.group("date")
                record.upvotes = int(date.group("up")) if date.group("up") else None
                yield from _finish_listing_record(record, name, short, limits)
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
            yield from _finish_listing_record(record, name, short, limits)
            record = _ListingRecord(title=text, line=number)
    if record is not None:
        yield from _finish_listing_record(record, name, short, limits)


_READERS: dict[str, Callable[[str, str, Lines, Limits], Iterator[Paper | Rejection | Notice]]] = {
    "listing": _read_listing,
    "csv": _read_csv,
    "jsonl": lambda *args: _read_json_lines("jsonl", *args),
    "arxiv": lambda *args: _read_json_lines("arxiv", *args),
    "beir": lambda *args: _read_json_lines("beir", *args),
}


def iter_records(path: Path | str, fmt: str | None = None, limits: Limits = Limits(),
                 advance: Callable[[int], None] | None = None) -> Iterator[Paper | Rejection | Notice]:
    """Every record of one file, in order, as a Paper, a Rejection or a Notice; streamed.

    `path` ``-`` is standard input. The file is opened once, when the first record is asked
    for, and its format is told from a buffered head that is then read on, so a pipe loses
    nothing and is never waited on twice. `fmt` overrides detection; an unknown name raises
    UnknownFormatError at once. A file that cannot be read, is empty, binary or not UTF-8
    yields a single Rejection naming it. `advance(n)` is told of the bytes read.
    """
    if fmt is not None and fmt not in FORMATS:
        raise UnknownFormatError(fmt)
    return _iter_records(Path(path), fmt, limits, advance)


def _iter_records(path: Path, fmt: str | None, limits: Limits,
                  advance: Callable[[int], None] | None) -> Iterator[Paper | Rejection | Notice]:
    name, short = _display_name(path)
    try:
        handle = sys.stdin.buffer if str(path) == STDIN else path.open("rb")
    except OSError as err:
        yield Rejection(name, None, f"cannot read it ({err.strerror or err})")
        return
    try:
        raw = _bounded_lines(handle, limits.max_record_bytes, advance)
        head = _peek(raw)
        detected = _format_of_head(head, name)
        lines = _decoded(chain(head, raw), name, limits.max_record_bytes)
        yield from _READERS[fmt or detected](name, short, lines, limits)
    except UnreadableFileError as err:
        yield Rejection(name, None, err.why)
    except OSError as err:  # a read error in mid-file: what was read is kept
        yield Rejection(name, None, f"reading stopped ({err.strerror or err})")
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()


# ---------------------------------------------------------------------------------------------
# Many files


def find_files(paths: Iterable[Path | str]) -> tuple[list[Path], list[Rejection]]:
    """The files named, each folder replaced by its visible files and those of its subfolders.

    Files are in the order named, a folder's sorted by path; names starting with "." are
    skipped, and so is anything in a folder that is not a regular file (a pipe or socket there
    would block or fail; name one explicitly to read it). ``-`` is standard input. A folder
    that cannot be listed becomes a Rejection and the others are still read. Raises
    FileNotFoundError for a path that does not exist, before anything is read.
    """
    files: list[Path] = []
    refused: list[Rejection] = []

    def unlistable(err: OSError) -> None:
        refused.append(Rejection(str(err.filename), None, f"cannot read this folder ({err.strerror or err})"))

    for path in map(Path, paths):
        if str(path) == STDIN:
            files.append(path)
            continue
        try:
            is_dir, exists = path.is_dir(), path.exists()
        except OSError as err:
            unlistable(err)
            continue
        if is_dir:
            for folder, subfolders, names in os.walk(path, onerror=unlistable):
                subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
                visible = (Path(folder, name) for name in sorted(names) if not name.startswith("."))
                files.extend(p for p in visible if p.is_file())
        elif exists:
            files.append(path)
        else:
            raise FileNotFoundError(f"no such file or directory: {path}")
    return files, refused


def expand_paths(paths: Iterable[Path | str]) -> list[Path]:
    """The files `find_files` finds, without the folders it could not read."""
    return find_files(paths)[0]


def _fold(text: str) -> str:
    return " ".join(text.lower().split())


def conflict_between(kept: Paper, other: Paper) -> str | None:
    """What differs between two records with the same id, or None when they are the same paper.

    The same paper read twice may differ in metadata, and one abstract may be a truncated copy
    of the other; a different title or abstract means two papers under one id.

    >>> conflict_between(Paper("T", "A b.", id="x"), Paper("t", "A b. C d.", id="x")) is None
    True
    >>> conflict_between(Paper("T", "A b.", id="x"), Paper("U", "A b.", id="x"))
    'title'
    """
    if normalize_title(kept.title) != normalize_title(other.title):
        return "title"
    mine, theirs = _fold(kept.abstract), _fold(other.abstract)
    shorter, longer = sorted((mine.rstrip(" .…"), theirs.rstrip(" .…")), key=len)
    return None if longer.startswith(shorter) else "abstract"


def conflict_rejection(name: str, paper: Paper, kept: Paper, what: str) -> Rejection:
    """The rejection of `paper`, read from file `name`, whose id `kept` (read earlier) already has."""
    line = int(paper.sources[0].rpartition(":")[2]) if paper.sources else None
    first = kept.sources[0] if kept.sources else "an earlier record"
    return Rejection(name, line, f"id {clip(paper.id, 60)!r} is already used by {first} for a paper with a "
                                 f"different {what}; this record is not indexed (give it its own id)")


def paper_filter(categories: Iterable[str] | None = None,
                 since: int | None = None) -> Callable[[Paper], bool] | None:
    """A test for the papers to keep: any of `categories` (``cs`` means every ``cs.*``), from year `since` on.

    None when there is nothing to filter. A paper without a year does not pass `since`.

    >>> keep = paper_filter(["cs.LG", "stat"], since=2020)
    >>> paper = lambda categories, year: Paper("T", "A", categories=categories, year=year)
    >>> keep(paper(("cs.LG", "math.OC"), 2021)), keep(paper(("stat.ML",), 2020))
    (True, True)
    >>> keep(paper(("cs.CV",), 2021)), keep(paper(("cs.LG",), 2019)), keep(paper(("cs.LG",), None))
    (False, False, False)
    """
    wanted = tuple(c.strip() for c in categories or () if c.strip())
    if not wanted and since is None:
        return None

    def keep(paper: Paper) -> bool:
        if since is not None and (paper.year is None or paper.year < since):
            return False
        return not wanted or any(c == w or c.startswith(w + ".") for c in paper.categories for w in wanted)
    return keep


class PaperStream:
    """The records of many files as one stream of Papers, in file order; nothing else is held.

    Iterating reads the files one line at a time (an arXiv snapshot of millions of records takes
    the memory of one); rejections and notices collect on the side as they are met, the first
    `max_kept` of each kept (all when None) and every one counted. `keep` drops the papers it
    says no to (see `paper_filter`). `name` is the file the last Paper came from.
    Raises FileNotFoundError for a path that does not exist, before anything is read.
    """

    def __init__(self, paths: Iterable[Path | str], fmt: str | None = None, limits: Limits = Limits(),
                 progress: Callable[[int, str], Callable[[int], None]] | None = None,
                 keep: Callable[[Paper], bool] | None = None, max_kept: int | None = None) -> None:
        if fmt is not None and fmt not in FORMATS:
            raise UnknownFormatError(fmt)
        self.fmt, self.limits, self.progress, self.keep, self.max_kept = fmt, limits, progress, keep, max_kept
        self.files, refused = find_files(paths)
        self.rejected: list[Rejection] = []
        self.notices: list[Notice] = []
        self.rejected_count = self.notices_count = self.records = self.filtered_out = 0
        self.name = ""
        for rejection in refused:
            self.reject(rejection)

    def reject(self, rejection: Rejection) -> None:
        self.rejected_count += 1
        if self.max_kept is None or len(self.rejected) < self.max_kept:
            self.rejected.append(rejection)

    def _note(self, notice: Notice) -> None:
        self.notices_count += 1
        if self.max_kept is None or len(self.notices) < self.max_kept:
            self.notices.append(notice)

    def __iter__(self) -> Iterator[Paper]:
        regular = {path for path in self.files if str(path) != STDIN and path.is_file()}
        total = sum(path.stat().st_size for path in regular)
        advance = self.progress(total, "reading") if self.progress and total else None
        done = 0

        def counted(n: int) -> None:
            nonlocal done
            done += n
            advance(n)

        for path in self.files:
            self.name = _display_name(path)[0]
            told = counted if advance and path in regular else None
            for item in iter_records(path, self.fmt, self.limits, told):
                if isinstance(item, Notice):
                    self._note(item)
                elif isinstance(item, Rejection):
                    self.reject(item)
                elif self.keep is not None and not self.keep(item):
                    self.filtered_out += 1
                else:
                    self.records += 1
                    yield item
        if advance and done < total:
            advance(total - done)  # files that shrank while read: the bar still ends


def read_papers(paths: Iterable[Path | str], fmt: str | None = None, limits: Limits = Limits(),
                progress: Callable[[int, str], Callable[[int], None]] | None = None) -> ReadResult:
    """All papers of the given files and folders, one per paper id, in order of first sight, in memory.

    Records of the same paper (same `Paper.id`: the source's id, else the normalised title) are
    merged with `Paper.merged_with`, keeping every source. A record whose id is taken by a
    different paper (`conflict_between`) is rejected, naming both lines; the first is kept.
    `progress(total_bytes, "reading")` returns a callback advanced by the bytes read. The ingest
    itself streams (`PaperStream`); this is for a collection that fits in memory.
    """
    stream = PaperStream(paths, fmt, limits, progress)
    result = ReadResult(files=len(stream.files))
    by_id: dict[str, Paper] = {}
    for paper in stream:
        seen = by_id.get(paper.id)
        if seen is not None and (what := conflict_between(seen, paper)):
            stream.reject(conflict_rejection(stream.name, paper, seen, what))
            continue
        result.records += 1
        by_id[paper.id] = paper if seen is None else seen.merged_with(paper)
    result.papers = list(by_id.values())
    result.duplicates_merged = result.records - len(result.papers)
    result.rejected, result.notices = stream.rejected, stream.notices
    return result
