"""Hostile and careless input (issue 14): one bad record costs that record, with a one-line message
naming its file and line; never a traceback, never a good record lost, never a hang."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest
from conftest import REPO, make_settings, write_jsonl

from paperchat.ingest.sources import Limits, Notice, Rejection, iter_records, read_papers
from paperchat.rag.chunking import chunk_paper
from paperchat.rag.papers import Paper


def good(i: int, **extra) -> dict:
    return {"id": f"g{i}", "title": f"Good paper {i} on pruning",
            "abstract": f"We prune network {i}. It stays accurate.", **extra}


def jsonl_with(tmp_path: Path, bad_line: str, name: str = "mixed.jsonl") -> Path:
    """A file of a good record, the bad line (line 2), and another good record."""
    path = tmp_path / name
    path.write_text(f"{json.dumps(good(1))}\n{bad_line}\n{json.dumps(good(2))}\n", encoding="utf-8")
    return path


def assert_one_line_message(rejection: Rejection, path: Path, line: int | None) -> None:
    text = str(rejection)
    assert text.startswith(f"{path}:{line}: " if line else f"{path}: "), text
    assert "\n" not in text and len(text) < 500, text


# --- one bad JSON record among good ones ------------------------------------------------------

HOSTILE_JSON = {
    "nested 2,000 deep": ('{"title": "T", "abstract": ' + "[" * 2_000 + "]" * 2_000 + "}", "too deeply"),
    "nested 200,000 deep": ('{"title": "T", "abstract": ' + "[" * 200_000 + "]" * 200_000 + "}",
                            "too deeply"),
    "a 4,301-digit integer": ('{"title": "T", "abstract": "A.", "year": ' + "9" * 4_301 + "}", "4300 digits"),
    "year 10**30": (json.dumps({"title": "T", "abstract": "A.", "year": 10**30}), "outside 1000..2100"),
    "year -5": (json.dumps({"title": "T", "abstract": "A.", "year": -5}), "outside 1000..2100"),
    "a lone surrogate": ('{"title": "Broken \\ud800 title", "abstract": "A."}', "lone surrogate (\\ud800)"),
    "a surrogate in an author": ('{"title": "T", "abstract": "A.", "authors": ["X \\udfff"]}',
                                 "authors holds"),
    "authors nested 900 deep": ('{"title": "T", "abstract": "A.", "authors": ' + "[" * 900 + "]" * 900 + "}",
                                None),
}


@pytest.mark.parametrize("case", HOSTILE_JSON)
def test_a_hostile_json_record_is_rejected_by_line_and_the_others_read(tmp_path, case):
    bad_line, reason = HOSTILE_JSON[case]
    path = jsonl_with(tmp_path, bad_line)
    # The record bound is raised so that the JSON parser itself meets the 200,000-deep line.
    result = read_papers([path], limits=Limits(max_record_bytes=1_000_000))
    assert {p.id for p in result.papers} >= {"g1", "g2"}
    if reason is None:  # readable after all: kept, and storable
        assert len(result.papers) == 3 and not result.rejected
        return
    assert len(result.papers) == 2
    (rejection,) = result.rejected
    assert_one_line_message(rejection, path, 2)
    assert reason in rejection.reason


def test_dates_outside_the_year_range_give_no_year_but_keep_the_paper(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [good(1, date="2999-01-01"), good(2, date="1999-05-05")])
    result = read_papers([path])
    assert [(p.id, p.year, p.date) for p in result.papers] == [
        ("g1", None, "2999-01-01"), ("g2", 1999, "1999-05-05")]


def test_a_line_over_the_record_bound_is_refused_unread_and_quoted_clipped(tmp_path):
    path = tmp_path / "big.jsonl"
    huge = json.dumps({"id": "huge", "title": "Huge", "abstract": "word " * 60_000})  # ~300 kB
    path.write_text(f"{json.dumps(good(1))}\n{huge}\n{json.dumps(good(2))}\n", encoding="utf-8")
    result = read_papers([path], limits=Limits(max_record_bytes=100_000))
    assert [p.id for p in result.papers] == ["g1", "g2"]
    (rejection,) = result.rejected
    assert_one_line_message(rejection, path, 2)
    assert "300,0" in rejection.reason and "max_record_bytes" in rejection.reason
    # Under the default bound (200 kB) a 150 kB abstract is an ordinary record.
    path.write_text(json.dumps({"id": "long", "title": "Long", "abstract": "word " * 30_000}) + "\n")
    assert [p.id for p in read_papers([path]).papers] == ["long"]


def test_a_50_mb_line_costs_neither_memory_nor_the_file(tmp_path):
    path = tmp_path / "fifty.jsonl"
    with path.open("w", encoding="utf-8") as out:
        out.write(json.dumps(good(1)) + "\n")
        out.write('{"title": "Fifty megabytes", "abstract": "')
        block = "lorem ipsum " * 87_381  # ~1 MiB
        for _ in range(50):
            out.write(block)
        out.write('"}\n' + json.dumps(good(2)) + "\n")
    tracemalloc.start()
    try:
        result = read_papers([path])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [p.id for p in result.papers] == ["g1", "g2"]
    (rejection,) = result.rejected
    assert_one_line_message(rejection, path, 2)
    line_bytes = path.stat().st_size - 2 * len(json.dumps(good(1)) + "\n")
    assert f"line of {line_bytes:,} bytes" in rejection.reason  # the size is told, the line is not echoed
    assert peak < 10 * 2**20, f"reading held {peak / 2**20:.0f} MiB"


# --- CSV -------------------------------------------------------------------------------------


def csv_text(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def test_a_csv_field_over_128_kb_costs_nothing_and_one_over_the_bound_costs_its_row(tmp_path):
    rows = [["id", "title", "abstract"], ["c0", "First", "First abstract."],
            ["big", "Big", "word " * 30_000]]  # 150 kB: over the csv module's default field limit
    rows += [[f"c{i}", f"Later paper {i}", f"Abstract {i}."] for i in range(1, 11)]
    path = tmp_path / "big.csv"
    path.write_text(csv_text(rows), encoding="utf-8")
    assert len(read_papers([path]).papers) == 12
    result = read_papers([path], limits=Limits(max_record_bytes=100_000))
    assert [p.id for p in result.papers] == ["c0"] + [f"c{i}" for i in range(1, 11)]
    (rejection,) = result.rejected
    assert_one_line_message(rejection, path, 3)
    assert "record limit" in rejection.reason


def test_an_unclosed_quote_names_its_line_and_the_rows_after_it_are_read(tmp_path):
    lines = ["id,title,abstract", "c0,First,First abstract.", 'c1,"Unclosed title,Its abstract.']
    lines += [f"c{i},Later paper {i},Abstract {i}." for i in range(2, 7)]
    path = tmp_path / "quote.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = read_papers([path])
    assert [p.id for p in result.papers] == ["c0", "c2", "c3", "c4", "c5", "c6"]
    (rejection,) = result.rejected
    assert_one_line_message(rejection, path, 3)
    assert "never closes" in rejection.reason


def test_a_quote_closed_rows_later_does_not_glue_rows_together(tmp_path):
    lines = ["id,title,abstract", 'c1,"Unclosed title,Its abstract.', 'c2,"Quoted, title",Abstract two.',
             "c3,Plain title,Abstract three."]
    path = tmp_path / "glued.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = read_papers([path])
    assert [(p.id, p.title) for p in result.papers] == [("c2", "Quoted, title"), ("c3", "Plain title")]
    assert [r.line for r in result.rejected] == [2]


def test_a_multi_line_quoted_abstract_still_reads(tmp_path):
    path = tmp_path / "multi.csv"
    path.write_text('id,title,abstract\nm1,Multi,"Line one\nline two\nline three."\nm2,Next,Abstract.\n')
    result = read_papers([path])
    assert [(p.id, p.abstract) for p in result.papers] == [
        ("m1", "Line one line two line three."), ("m2", "Abstract.")]
    assert not result.rejected


# --- bad bytes -------------------------------------------------------------------------------


def test_a_bad_byte_or_nul_in_the_head_costs_only_those_lines(tmp_path):
    lines = [json.dumps(good(i)).encode() for i in range(30)]
    lines[4] = b'{"title": "Caf\xe9", "abstract": "Latin-1 byte."}'
    lines[8] = b'{"title": "Nul\x00", "abstract": "A NUL byte."}'
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = read_papers([path])
    assert len(result.papers) == 28
    assert [r.line for r in result.rejected] == [5, 9]
    assert "UTF-8" in result.rejected[0].reason and "NUL" in result.rejected[1].reason


# --- standard input and named pipes ----------------------------------------------------------


def big_jsonl(count: int = 150) -> bytes:
    filler = "Filler sentence about convolutional networks and their pruning. " * 8
    records = ({"id": f"s{i}", "title": f"Streamed paper {i}", "abstract": filler + f"Number {i}."}
               for i in range(count))
    return "".join(json.dumps(record) + "\n" for record in records).encode()


def test_standard_input_is_sniffed_from_a_buffer_and_nothing_is_lost(monkeypatch):
    data = big_jsonl()
    assert len(data) > 64 * 1024
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    result = read_papers(["-"])
    assert len(result.papers) == 150 and not result.rejected
    assert result.papers[0].sources == ("stdin:1",)


def test_a_named_pipe_is_read_once_without_hanging(tmp_path):
    fifo = tmp_path / "papers.pipe"
    os.mkfifo(fifo)
    data = big_jsonl()
    writer = threading.Thread(target=fifo.write_bytes, args=(data,), daemon=True)
    writer.start()
    found: list = []
    reader = threading.Thread(target=lambda: found.append(read_papers([fifo])), daemon=True)
    reader.start()
    reader.join(120)  # a hang guard, not a speed target: reading 100 kB takes milliseconds
    assert not reader.is_alive(), "reading a named pipe hung"
    writer.join(5)
    assert len(found[0].papers) == 150 and not found[0].rejected


# --- ids -------------------------------------------------------------------------------------


def test_titles_that_normalise_to_nothing_stay_distinct_papers(tmp_path):
    records = [{"title": "???", "abstract": "First."},
               {"title": "\U0001F600\U0001F680", "abstract": "Second."},
               {"title": "\u200b\u200b", "abstract": "Third."}, {"title": "???", "abstract": "Fourth."}]
    path = write_jsonl(tmp_path / "odd.jsonl", records + records[:1])
    result = read_papers([path])
    assert [p.abstract for p in result.papers] == ["First.", "Second.", "Third.", "Fourth."]
    assert len({p.id for p in result.papers}) == 4
    assert result.duplicates_merged == 1  # the same record twice is still one paper


@pytest.mark.parametrize("other", [
    {"id": "g1", "title": "A different paper", "abstract": "We prune network 1. It stays accurate."},
    {"id": "g1", "title": "Good paper 1 on pruning", "abstract": "Something else entirely."},
])
def test_same_id_different_content_is_a_conflict_naming_both_lines(tmp_path, other):
    path = write_jsonl(tmp_path / "ids.jsonl", [good(1), good(2), other])
    result = read_papers([path])
    assert [(p.id, p.title, p.abstract) for p in result.papers] == [
        ("g1", good(1)["title"], good(1)["abstract"]), ("g2", good(2)["title"], good(2)["abstract"])]
    (rejection,) = result.rejected
    assert_one_line_message(rejection, path, 3)
    assert "'g1'" in rejection.reason and "ids.jsonl:1" in rejection.reason


def test_same_id_with_a_truncated_abstract_is_the_same_paper(tmp_path):
    first = good(1, abstract="We prune network 1. It stays accurate and fast.")
    path = write_jsonl(tmp_path / "ids.jsonl", [good(1, abstract="We prune network 1. It stays"), first])
    result = read_papers([path])
    assert [p.abstract for p in result.papers] == [first["abstract"]] and not result.rejected


# --- folders and files -----------------------------------------------------------------------


def test_subfolders_are_read_and_counted(tmp_path):
    write_jsonl(tmp_path / "top.jsonl", [good(1)])
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    write_jsonl(tmp_path / "sub" / "a.jsonl", [good(i) for i in range(10, 30)])
    write_jsonl(tmp_path / "sub" / "deeper" / "b.jsonl", [good(2)])
    (tmp_path / ".git").mkdir()
    write_jsonl(tmp_path / ".git" / "hidden.jsonl", [good(99)])
    result = read_papers([tmp_path])
    assert result.files == 3 and len(result.papers) == 22
    assert "g99" not in {p.id for p in result.papers}


def test_a_file_that_cannot_be_opened_is_rejected_and_the_others_read(tmp_path):
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "a.sock"))  # opening a socket fails even for root
    try:
        path = write_jsonl(tmp_path / "ok.jsonl", [good(1)])
        result = read_papers([tmp_path / "a.sock", path])
    finally:
        sock.close()
    assert [p.id for p in result.papers] == ["g1"]
    (rejection,) = result.rejected
    assert_one_line_message(rejection, tmp_path / "a.sock", None)
    assert "cannot read" in rejection.reason


# --- giant titles ----------------------------------------------------------------------------


def test_a_20k_word_title_is_clipped_with_a_note_and_leaves_the_abstract_in_the_window(tmp_path):
    title = " ".join(f"word{i}" for i in range(20_000))
    record = {"id": "t1", "title": title, "abstract": "We prune ResNet-50 well."}
    path = write_jsonl(tmp_path / "t.jsonl", [record])
    items = list(iter_records(path))
    (note,) = [i for i in items if isinstance(i, Notice)]
    (paper,) = [i for i in items if isinstance(i, Paper)]
    assert str(note).startswith(f"{path}:1: title clipped to 300 of ") and len(str(note)) < 300
    assert len(paper.title) == 300 and paper.id == "t1"
    # Even a Paper made elsewhere with a giant title gets one chunk whose text holds the abstract.
    (chunk,) = chunk_paper(Paper(title, "We prune ResNet-50 well."), 230, lambda t: len(t.split()))
    assert chunk.text.endswith("We prune ResNet-50 well.") and len(chunk.text) < 400


# --- the whole command -----------------------------------------------------------------------


def index_consistency(index_dir: Path) -> Counter:
    """Chunks per paper, checked to agree between the lexical and the vector index."""
    from paperchat.rag.store import PaperIndex

    index = PaperIndex.open(make_settings(index_dir))
    try:
        lexical = Counter(chunk.rsplit("#", 1)[0] for chunk in index.lexical_chunk_ids())
        dense = Counter(chunk.rsplit("#", 1)[0] for chunk in index.dense_chunk_ids())
        papers = set(index.content_hashes())
    finally:
        index.close()
    assert lexical == dense, "the lexical and vector indexes disagree"
    assert set(lexical) == papers, "a paper without chunks, or chunks without a paper"
    return lexical


def run_ingest(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "paperchat.ui.cli", "ingest", *args]
    if os.geteuid() == 0 and shutil.which("setpriv"):
        # As root every file is readable: drop the capability that overrides permissions.
        drop = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}", *command]
    return subprocess.run(command, check=False, input=stdin, capture_output=True, cwd=REPO, timeout=900,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"})


@pytest.mark.slow
def test_hostile_inputs_end_to_end(tmp_path):
    """Every kind of fault in one run: exit 3, one line per rejection, every good record in a consistent
    index."""
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    bad = ["nested 2,000 deep", "nested 200,000 deep", "a 4,301-digit integer", "year 10**30",
           "a lone surrogate"]
    hostile = [json.dumps(good(1))] + [HOSTILE_JSON[case][0] for case in bad] + [json.dumps(good(2))]
    hostile.append(json.dumps({"title": "???", "abstract": "Unnamed one."}))
    hostile.append(json.dumps({"title": "\u200b", "abstract": "Unnamed two."}))
    hostile.append(json.dumps({"id": "g1", "title": "Not the first g1", "abstract": "Other text."}))
    hostile.append(json.dumps({"id": "giant", "title": "giant " * 20_000, "abstract": "A short abstract."}))
    (inputs / "hostile.jsonl").write_text("\n".join(hostile) + "\n", encoding="utf-8")
    rows = ["id,title,abstract", 'c1,"Unclosed,abstract']
    rows += [f"c{i},CSV paper {i},Abstract {i}." for i in range(2, 7)]
    (inputs / "sub" / "rows.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (inputs / "sub" / "bytes.jsonl").write_bytes(json.dumps(good(3)).encode() + b"\n\xff\xfe\n"
                                                 + json.dumps(good(4)).encode() + b"\n")
    locked_dir, locked_file = inputs / "locked", inputs / "locked.jsonl"
    locked_dir.mkdir()
    write_jsonl(locked_dir / "x.jsonl", [good(5)])
    write_jsonl(locked_file, [good(6)])
    locked_dir.chmod(0)
    locked_file.chmod(0)
    try:
        result = run_ingest(str(inputs), "-", "--index", str(tmp_path / "index"), stdin=big_jsonl(20))
    finally:
        locked_dir.chmod(0o755)
        locked_file.chmod(0o644)
    err = result.stderr.decode()
    assert result.returncode == 3, err
    assert "Traceback" not in err and "reading" in err  # no traceback; progress from the start
    rejected = [line for line in err.splitlines() if line.startswith("rejected: ")]
    expected = [f"{inputs / 'hostile.jsonl'}:{n}:" for n in (2, 3, 4, 5, 6, 10)] + [
        f"{inputs / 'sub' / 'rows.csv'}:2:", f"{inputs / 'sub' / 'bytes.jsonl'}:2:",
        f"{locked_dir}: cannot read", f"{locked_file}: cannot read"]
    for where in expected:
        assert any(line.startswith(f"rejected: {where}") for line in rejected), (where, err)
    assert len(rejected) == len(expected) and all(len(line) < 500 for line in rejected), err
    assert "note: " in err and "title clipped" in err
    assert "files read: 5" in result.stdout.decode()
    chunks = index_consistency(tmp_path / "index")
    # g1 g2 and two unnamed + giant (hostile.jsonl), c2..c6 (rows.csv), g3 g4 (bytes.jsonl), s0..s19 (stdin)
    assert len(chunks) == 5 + 5 + 2 + 20
    assert chunks["giant"] == 1


@pytest.mark.slow
def test_an_empty_folder_warns_and_fails(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_ingest(str(tmp_path / "empty"), "--index", str(tmp_path / "index"))
    assert result.returncode == 1
    assert "no files to read" in result.stderr.decode() and "Traceback" not in result.stderr.decode()
    assert not (tmp_path / "index").exists()


# --- streaming and filters (issue 12) ---------------------------------------------------------


def test_a_streamed_ingest_merges_and_refuses_across_batches_as_if_read_whole(tmp_path, monkeypatch):
    from paperchat.ingest import pipeline

    # Batches of 4: records 1 and 11, and 2 and 12, would meet in different batches.
    monkeypatch.setattr(pipeline, "WRITE_BATCH_PAPERS", 4)
    records = [good(i) for i in range(10)]
    records.append({**good(0), "year": 2021, "url": "https://example.org/g0"})  # the same paper, fuller
    records.append({**good(1), "abstract": "A different abstract under the same id."})
    path = write_jsonl(tmp_path / "stream.jsonl", records)
    settings = make_settings(tmp_path / "index")
    summary = pipeline.ingest([path], settings)
    assert (summary.papers_added, summary.duplicates_merged, summary.records_rejected) == (10, 1, 1)
    expected = (f"{path}:12: id 'g1' is already used by stream.jsonl:2 for a paper with a different "
                "abstract; this record is not indexed (give it its own id)")
    assert summary.rejections == [expected]
    from paperchat.rag.store import PaperIndex

    index = PaperIndex.open(settings)
    try:
        stored = index.papers(["g0", "g1"])
    finally:
        index.close()
    assert stored["g0"].sources == ("stream.jsonl:1", "stream.jsonl:11") and stored["g0"].year == 2021
    assert stored["g1"].abstract == good(1)["abstract"]
    assert len(index_consistency(tmp_path / "index")) == 10
    again = pipeline.ingest([path], settings)  # a re-run embeds nothing and counts each paper once
    counts = (again.papers_added, again.papers_unchanged, again.chunks, again.duplicates_merged)
    assert counts == (0, 10, 0, 1)


def arxiv_record(i: int, categories: str, date: str) -> dict:
    return {"id": f"2001.{i:05d}", "title": f"Paper {i}", "abstract": f"Abstract number {i} about learning.",
            "authors": "A. Author", "categories": categories, "update_date": date}


def test_categories_and_since_keep_only_the_papers_asked_for(tmp_path):
    from paperchat.ingest.pipeline import ingest

    records = [arxiv_record(0, "cs.LG stat.ML", "2021-03-01"), arxiv_record(1, "cs.CV", "2020-01-01"),
               arxiv_record(2, "cs.CL", "2022-01-01"), arxiv_record(3, "cs.LG", "2019-12-31"),
               arxiv_record(4, "math.OC cs.CV", "2023-05-05")]
    path = write_jsonl(tmp_path / "arxiv.jsonl", records)
    summary = ingest([path], make_settings(tmp_path / "index"), categories=["cs.LG", "cs.CV"], since=2020)
    assert (summary.papers_added, summary.papers_filtered_out, summary.records_rejected) == (3, 2, 0)
    assert set(index_consistency(tmp_path / "index")) == {"2001.00000", "2001.00001", "2001.00004"}


@pytest.mark.slow
def test_the_stream_holds_no_records_in_memory(tmp_path):
    from paperchat.ingest.sources import PaperStream, paper_filter

    path = write_jsonl(tmp_path / "arxiv.jsonl",
                       [arxiv_record(i, "cs.LG", "2021-01-01") for i in range(10_000)])
    tracemalloc.start()
    try:
        stream = PaperStream([path], keep=paper_filter(["cs.CV"]))  # nothing passes: only reading is measured
        assert sum(1 for _ in stream) == 0 and stream.filtered_out == 10_000
        streamed = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        assert len(read_papers([path]).papers) == 10_000
        whole = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert streamed * 5 < whole, (streamed, whole)


def test_a_dry_run_counts_what_an_ingest_would_do_and_changes_nothing(tmp_path):
    from paperchat.ingest.pipeline import ingest

    settings = make_settings(tmp_path / "index")
    ingest([write_jsonl(tmp_path / "first.jsonl", [good(1), good(2)])], settings)
    before = index_consistency(tmp_path / "index")
    changed = {**good(2), "abstract": "We prune network 2 differently. It stays accurate."}
    records = write_jsonl(tmp_path / "next.jsonl",
                          [good(1), changed, good(3), good(3), {"title": "No abstract"}])
    summary = ingest([records], settings, dry_run=True)
    counts = (summary.papers_added, summary.papers_updated, summary.papers_unchanged,
              summary.duplicates_merged, summary.records_rejected, summary.chunks)
    assert counts == (1, 1, 1, 1, 1, 0)
    assert index_consistency(tmp_path / "index") == before  # nothing written
    real = ingest([records], settings)  # the real run does what the dry run said, so nothing was written
    assert (real.papers_added, real.papers_updated, real.papers_unchanged, real.chunks > 0) == (1, 1, 1, True)
    empty = make_settings(tmp_path / "none")
    assert ingest([records], empty, dry_run=True).papers_added == 3
    assert not (tmp_path / "none").exists()  # no index is created for a dry run
