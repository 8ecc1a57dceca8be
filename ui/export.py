"""Downloads of an answer's papers: BibTeX and CSV, written as data (kept as written, made inert).

`write_exports` is the one writer of these files: one fresh folder per answer, so that sessions
never overwrite each other's downloads.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from paperchat.rag.answer import Citation
from paperchat.rag.papers import Paper

BIBTEX_NAME = "paperchat-citations.bib"
CSV_NAME = "paperchat-citations.csv"


def bibtex(citations: Sequence[Citation], papers: dict[str, Paper]) -> str:
    """BibTeX entries for the cited papers, keys like `smith2021pruning`.

    >>> paper = Paper("Pruning {Nets} & 50%", "a", id="2101.00001", authors=("Ann Smith",))
    >>> print(bibtex([Citation(number=1, id="2101.00001", title="Pruning {Nets} & 50%", year=2021)],
    ...              {"2101.00001": paper}))
    @misc{smith2021pruning,
      title = {Pruning \\{Nets\\} \\& 50\\%},
      author = {Ann Smith},
      year = {2021},
      eprint = {2101.00001},
      archivePrefix = {arXiv},
    }
    <BLANKLINE>
    """
    entries, used = [], Counter()
    for citation in citations:
        paper = papers.get(citation.id)
        authors = paper.authors if paper else ()
        surname = (
            re.sub(r"[^a-z]", "", authors[0].split()[-1].lower()) if authors and authors[0].split() else ""
        )
        word = next((w for w in re.findall(r"[a-z]+", citation.title.lower()) if len(w) > 3), "paper")
        key = f"{surname or 'paper'}{citation.year or ''}{word}"
        used[key] += 1
        if used[key] > 1:
            key += chr(ord("a") + used[key] - 2)
        fields = [("title", citation.title)]
        if authors:
            fields.append(("author", " and ".join(authors)))
        if citation.year:
            fields.append(("year", str(citation.year)))
        if re.fullmatch(r"\d{4}\.\d{4,5}(v\d+)?", citation.id):
            fields += [("eprint", citation.id), ("archivePrefix", "arXiv")]
        if paper and paper.url:
            fields.append(("url", paper.url))
        body = "".join(f"  {name} = {{{_bibtex_escape(value)}}},\n" for name, value in fields)
        entries.append(f"@misc{{{key},\n{body}}}\n")
    return "\n".join(entries)


def _bibtex_escape(text: str) -> str:
    r"""Special characters escaped once: TeX the text already carries (`75\%`) is not escaped again.

    >>> _bibtex_escape(r"75\% of {a} & 50%")
    '75\\% of \\{a\\} \\& 50\\%'
    """
    text = re.sub(r"\\([%&_#$])", r"\1", " ".join(text.split()))
    return re.sub(r"([\\{}&%$#_])", r"\\\1", text)


def citations_csv(citations: Sequence[Citation], papers: dict[str, Paper]) -> str:
    """One row per cited paper: number, id, title, year, authors, url, passage."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["number", "id", "title", "year", "authors", "url", "passage"])
    for citation in citations:
        paper = papers.get(citation.id)
        row = [
            citation.number,
            citation.id,
            citation.title,
            citation.year or "",
            "; ".join(paper.authors) if paper else "",
            (paper.url if paper else None) or "",
            citation.passage,
        ]
        writer.writerow([_inert_cell(value) for value in row])
    return out.getvalue()


def _inert_cell(value: object) -> object:
    """A text cell a spreadsheet would run as a formula (`=HYPERLINK(...)`) gets a leading quote.

    >>> _inert_cell("=HYPERLINK(1)"), _inert_cell("fine")
    ("'=HYPERLINK(1)", 'fine')
    """
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def write_exports(
    citations: Sequence[Citation], papers: dict[str, Paper], export_dir: Path
) -> tuple[str, str]:
    """Write the BibTeX and CSV files of these papers into a new folder; their paths."""
    folder = export_dir / uuid.uuid4().hex
    folder.mkdir(parents=True)
    bib_path, csv_path = folder / BIBTEX_NAME, folder / CSV_NAME
    bib_path.write_text(bibtex(citations, papers), encoding="utf-8")
    csv_path.write_text(citations_csv(citations, papers), encoding="utf-8", newline="")
    return str(bib_path), str(csv_path)
