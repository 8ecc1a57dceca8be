"""Reading paper files: the shipped listing dumps, the user formats, and what bad input becomes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from paperchat.ingest.sources import (
    FORMATS,
    ReadResult,
    Rejection,
    UnknownFormatError,
    UnreadableFileError,
    bundled_corpus_dir,
    detect_format,
    iter_records,
    read_papers,
)
from paperchat.rag.papers import Paper, paper_id_from_title

INPUTS = Path(__file__).parent / "fixtures" / "inputs"
BLOCKS = "000_e86641094bd8f472.txt"  # blank-line separated blocks with authors and dates
PAIRS = "001_993bef3f8d9bd4d6.txt"  # title/abstract line pairs, header glued to the first title
BLOCKS_NO_YEAR = "002_39b67e228b59ac3d.txt"


@pytest.fixture(scope="module")
def corpus() -> ReadResult:
    return read_papers([bundled_corpus_dir()])


def records_of(path: Path, fmt: str | None = None) -> tuple[list[Paper], list[Rejection]]:
    items = list(iter_records(path, fmt))
    return ([i for i in items if isinstance(i, Paper)], [i for i in items if isinstance(i, Rejection)])


def by_title(papers: list[Paper], title: str) -> Paper:
    return next(p for p in papers if p.title == title)


# --- the bundled corpus ------------------------------------------------------------------------


def test_bundled_corpus_has_647_records_of_573_papers(corpus: ReadResult) -> None:
    assert corpus.records == 647
    assert len(corpus.papers) == 573
    assert corpus.duplicates_merged == 74
    assert corpus.rejected == []
    assert len({p.id for p in corpus.papers}) == 573


def test_every_bundled_file_is_detected_as_a_listing() -> None:
    files = sorted(bundled_corpus_dir().glob("*.txt"))
    assert len(files) == 5
    assert {detect_format(f) for f in files} == {"listing"}


def test_no_page_chrome_becomes_a_paper(corpus: ReadResult) -> None:
    chrome = {"new", "Subscribe", "Daily Papers", "byAK and the research community",
              "Get trending papers in your email inbox!",
              "Get trending papers in your email inbox once a day!"}
    titles = {p.title for p in corpus.papers}
    assert not titles & chrome
    assert not any(t.startswith(("Subscribe", "Get trending")) for t in titles)
    # Every abstract is a real paragraph, so no title was taken for an abstract or vice versa.
    assert min(len(p.abstract) for p in corpus.papers) > 200
    assert max(len(p.title) for p in corpus.papers) < 250


def test_block_layout_reads_authors_and_dates() -> None:
    papers, rejected = records_of(bundled_corpus_dir() / BLOCKS)
    assert rejected == []
    first = papers[0]
    assert first.title.startswith("Varifocal-Net: A Chromosome Classification")
    assert first.abstract.startswith("Chromosome classification is critical for karyotyping")
    # The page's own date ("Jan 30" under the header) is chrome, not this paper's date.
    assert (first.author_count, first.date, first.year, first.upvotes) == (9, "Oct 13, 2018", 2018, None)
    assert first.sources == (f"{BLOCKS}:13",)
    assert all(p.author_count and p.date for p in papers)


def test_date_with_upvotes_and_date_without_year() -> None:
    papers, _ = records_of(bundled_corpus_dir() / BLOCKS)
    dfn = by_title(papers, "Data Filtering Networks")
    assert (dfn.date, dfn.year, dfn.upvotes, dfn.author_count) == ("Sep 29, 2023", 2023, 1, 6)

    papers, _ = records_of(bundled_corpus_dir() / BLOCKS_NO_YEAR)
    bev = by_title(papers, "BEV-LIO(LC): BEV Image Assisted LiDAR-Inertial Odometry with Loop Closure")
    assert (bev.date, bev.year, bev.upvotes, bev.author_count) == ("Feb 26", None, None, 5)


def test_undated_date_line_with_upvotes() -> None:
    papers, _ = records_of(bundled_corpus_dir() / "004_d8018e71cb38a6d3.txt")
    plstm = by_title(papers, "pLSTM: parallelizable Linear Source Transition Mark networks")
    assert (plstm.date, plstm.year, plstm.upvotes) == ("Jun 13", None, 2)


def test_pair_layout_unglues_the_header_from_the_first_title() -> None:
    papers, rejected = records_of(bundled_corpus_dir() / PAIRS)
    assert rejected == []
    assert len(papers) == 235
    assert papers[0].title == "Equivariant Transformer Networks"
    assert papers[0].abstract.startswith("How can prior knowledge on the transformation invariances")
    assert papers[0].sources == (f"{PAIRS}:3",)
    assert papers[1].title.startswith("Strike (with) a Pose")
    assert papers[0].author_count is None and papers[0].date is None


def test_duplicates_merge_keeping_every_source_and_the_fuller_record(corpus: ReadResult) -> None:
    dfn = by_title(corpus.papers, "Data Filtering Networks")
    assert dfn.sources == (f"{BLOCKS}:253", "003_8468577a04ea8c38.txt:323")
    # The block copy knew the date; the line-pair copy did not; the merged paper keeps it.
    assert (dfn.year, dfn.author_count) == (2023, 6)
    assert dfn.id == paper_id_from_title("data filtering networks")
    assert sum(len(p.sources) for p in corpus.papers) == corpus.records


def test_papers_keep_order_of_first_appearance(corpus: ReadResult) -> None:
    assert corpus.papers[0].title.startswith("Varifocal-Net")
    assert corpus.papers[0].sources[0] == f"{BLOCKS}:13"


# --- the other formats -------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fmt"), [
    ("papers.jsonl", "jsonl"),
    ("papers.csv", "csv"),
    ("arxiv_snapshot.jsonl", "arxiv"),
    ("beir_corpus.jsonl", "beir"),
])
def test_detects_format_from_content_not_extension(name: str, fmt: str, tmp_path: Path) -> None:
    assert detect_format(INPUTS / name) == fmt
    disguised = tmp_path / "upload.txt"
    shutil.copy(INPUTS / name, disguised)
    assert detect_format(disguised) == fmt


def test_real_beir_corpus_is_detected() -> None:
    scifact = Path("/work/shared/benchmarks/scifact/corpus.jsonl")
    if not scifact.exists():
        pytest.skip("SciFact benchmark not present on this machine")
    assert detect_format(scifact) == "beir"
    first = next(iter_records(scifact))
    assert isinstance(first, Paper) and first.id == "4983" and first.abstract.startswith("Alterations")


def test_jsonl_fields_and_bad_lines() -> None:
    papers, rejected = records_of(INPUTS / "papers.jsonl")
    assert [p.title for p in papers] == ["Sparse Mixtures of Experts", "Tiny Retrievers", "Last Good One"]
    moe, tiny, _ = papers
    assert (moe.id, moe.authors, moe.author_count, moe.year, moe.url, moe.categories) == (
        "p1", ("Ada Lovelace", "Alan Turing"), 2, 2021, "https://example.org/p1", ("cs.LG", "cs.CL"))
    assert tiny.authors == ("Grace Hopper", "Edsger Dijkstra", "Barbara Liskov")
    assert (tiny.date, tiny.year, tiny.categories) == ("2019-08-19", 2019, ("cs.IR", "cs.CL"))
    assert tiny.id == paper_id_from_title("Tiny Retrievers")
    path = str(INPUTS / "papers.jsonl")
    assert [str(r) for r in rejected] == [
        f"{path}:4: invalid JSON (Expecting ',' delimiter)",
        f"{path}:5: missing field: abstract",
        f"{path}:6: empty abstract",
    ]


def test_csv_rows_including_quoted_newlines_and_bad_rows() -> None:
    papers, rejected = records_of(INPUTS / "papers.csv")
    multi_id = paper_id_from_title("Multi Line Abstract")  # no id cell: derived from the title
    assert [p.id for p in papers] == ["c1", multi_id, "c5"]
    graph, multi, quant = papers
    assert graph.authors == ("Petar V", "Yoshua B") and graph.categories == ("cs.LG", "stat.ML")
    assert (graph.year, graph.url) == (2018, "https://example.org/c1")
    assert multi.abstract == "First line of the abstract continues on a second line."
    assert multi.id == multi_id
    assert quant.authors == ("A. One", "B. Two")
    # Line numbers count physical lines, so the row after the two-line abstract is line 5.
    assert [(r.line, r.reason) for r in rejected] == [(5, "empty title"), (6, "empty abstract")]
    assert all(r.path == str(INPUTS / "papers.csv") for r in rejected)


def test_arxiv_snapshot_collapses_whitespace_and_links_the_abstract_page() -> None:
    papers, rejected = records_of(INPUTS / "arxiv_snapshot.jsonl")
    attention, old_style = papers
    assert attention.title == "Attention Is All You Need"
    assert attention.abstract == ("The dominant sequence transduction models are based on complex "
                                  "recurrent or convolutional neural networks.")
    assert (attention.id, attention.url) == ("1706.03762", "https://arxiv.org/abs/1706.03762")
    assert (attention.date, attention.year, attention.author_count) == ("2023-08-02", 2023, 3)
    assert attention.categories == ("cs.CL", "cs.LG")
    assert old_style.url == "https://arxiv.org/abs/math/0406129"
    assert old_style.authors == ("A. Person", "B. Person")
    assert [(r.line, r.reason) for r in rejected] == [(3, "empty abstract")]


def test_beir_corpus_uses_id_and_text() -> None:
    papers, rejected = records_of(INPUTS / "beir_corpus.jsonl")
    assert [p.id for p in papers] == ["4983", "5836"]
    assert papers[1].abstract == "Myelodysplastic syndromes are a heterogeneous group of disorders."
    assert [(r.line, r.reason) for r in rejected] == [(3, "empty text")]


def test_explicit_format_overrides_detection() -> None:
    # Read as generic JSON lines, the arXiv records keep their id but get no arXiv link or date.
    papers, _ = records_of(INPUTS / "arxiv_snapshot.jsonl", fmt="jsonl")
    assert papers[0].id == "1706.03762"
    assert papers[0].url is None and papers[0].date is None
    # Forced to BEIR, generic JSON lines lack `text`: every record is refused, by line.
    papers, rejected = records_of(INPUTS / "papers.jsonl", fmt="beir")
    assert papers == []
    assert [r.line for r in rejected] == [1, 2, 4, 5, 6, 7]
    assert rejected[0].reason == "missing field: text"


def test_unknown_format_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownFormatError) as err:
        iter_records(INPUTS / "papers.jsonl", fmt="xml")
    assert "'xml'" in str(err.value)
    assert all(name in str(err.value) for name in FORMATS)
    with pytest.raises(UnknownFormatError):
        read_papers([INPUTS], fmt="pdf")


# --- files that are not text -------------------------------------------------------------------


@pytest.mark.parametrize(("name", "why"), [
    ("binary.bin", "binary file"),
    ("empty.txt", "empty file"),
    ("latin1.txt", "not UTF-8"),
])
def test_unreadable_files_are_rejected_by_name(name: str, why: str) -> None:
    path = INPUTS / name
    with pytest.raises(UnreadableFileError) as err:
        detect_format(path)
    assert str(path) in str(err.value) and why in str(err.value)
    (only,) = list(iter_records(path))
    assert isinstance(only, Rejection)
    assert only.path == str(path) and only.line is None and why in only.reason
    assert str(only).startswith(f"{path}: ")


def test_a_directory_reads_every_visible_file_and_keeps_going_past_bad_ones(tmp_path: Path) -> None:
    for fixture in INPUTS.iterdir():
        shutil.copy(fixture, tmp_path / fixture.name)
    (tmp_path / ".hidden.jsonl").write_text('{"title": "Secret", "abstract": "Never read."}\n')
    result = read_papers([tmp_path])
    assert "Secret" not in {p.title for p in result.papers}
    # 3 jsonl + 3 csv + 2 arxiv + 2 beir good records, all distinct papers.
    assert (result.records, len(result.papers), result.duplicates_merged) == (10, 10, 0)
    unreadable = {Path(r.path).name for r in result.rejected if r.line is None}
    assert unreadable == {"binary.bin", "empty.txt", "latin1.txt"}
    assert len(result.rejected) == 3 + 3 + 2 + 1 + 1  # files, jsonl, csv, arxiv, beir


def test_same_file_twice_merges_every_record(tmp_path: Path) -> None:
    copy = tmp_path / "again.jsonl"
    shutil.copy(INPUTS / "papers.jsonl", copy)
    result = read_papers([INPUTS / "papers.jsonl", copy])
    assert (result.records, len(result.papers), result.duplicates_merged) == (6, 3, 3)
    assert result.papers[0].sources == ("papers.jsonl:1", "again.jsonl:1")


def test_listing_title_without_abstract_is_rejected(tmp_path: Path) -> None:
    page = tmp_path / "page.txt"
    page.write_text(
        "Daily Papers\n\nA Paper With Everything\n\nIts abstract.\n\n  • 2 authors\n·\nMar 3, 2021\n\n"
        "An Orphan Title\n\n  • 4 authors\n·\nMar 4, 2021\n\n"
        "A Paper Without Footer\n\nIts abstract, with no authors or date.\n",
        encoding="utf-8",
    )
    papers, rejected = records_of(page)
    assert [(p.title, p.year, p.author_count) for p in papers] == [
        ("A Paper With Everything", 2021, 2), ("A Paper Without Footer", None, None)]
    assert [str(r) for r in rejected] == [f"{page}:11: no abstract after title 'An Orphan Title'"]


def test_missing_path_raises_before_reading(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_papers([INPUTS / "papers.jsonl", tmp_path / "nope.jsonl"])


def test_iter_records_streams_without_reading_the_whole_file(tmp_path: Path) -> None:
    big = tmp_path / "snapshot.jsonl"
    line = ('{"id": "%d", "title": "Paper %d", "abstract": "Abstract.", "authors": "A", '
            '"categories": "cs.LG", "update_date": "2020-01-01"}\n')
    with big.open("w", encoding="utf-8") as out:
        out.writelines(line % (i, i) for i in range(5000))
    records = iter_records(big)
    first = next(records)
    assert isinstance(first, Paper) and first.url == "https://arxiv.org/abs/0"
    # Appending after the first record was read shows up: the file is being read lazily.
    with big.open("a", encoding="utf-8") as out:
        out.write(line % (99999, 99999))
    assert sum(1 for _ in records) == 5000
