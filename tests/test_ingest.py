"""Ingest into real indexes: idempotence, updates, bad input, crashes, a Chroma server."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DISTILL, FP8, REPO, make_settings, write_jsonl

from paperchat.ingest.pipeline import ingest
from paperchat.rag.embeddings import make_embeddings
from paperchat.rag.store import ForeignIndexError, IndexNotFoundError, PaperIndex

PAPERS = [
    {"id": "p1", "title": "Pruning ResNet-50 with magnitude criteria",
     "abstract": "We prune ResNet-50 on ImageNet. The pruned network keeps 75.9% top-1 accuracy.",
     "year": 2021},
    {**DISTILL, "id": "p2", "year": 2019},
    {**FP8, "id": "p3", "year": 2022},
]


def state(settings) -> dict:
    """Everything a user could observe in the index: papers, hashes, chunk ids in both indexes."""
    index = PaperIndex.open(settings, make_embeddings(settings.embedding))
    try:
        return {"hashes": index.content_hashes(), "lexical": index.lexical_chunk_ids(),
                "dense": index.dense_chunk_ids(), "journal": index.pending_papers()}
    finally:
        index.close()


def run_cli(*args, env=None, check_rc=None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "paperchat.ui.cli", *args], capture_output=True, text=True,
                            env={**os.environ, **(env or {})}, cwd=REPO, timeout=600, check=False)
    if check_rc is not None:
        assert result.returncode == check_rc, result.stderr
    return result


def test_ingest_is_idempotent_and_indexes_agree(tmp_path):
    settings = make_settings(tmp_path / "index")
    source = write_jsonl(tmp_path / "papers.jsonl", PAPERS)
    first = ingest([source], settings)
    assert (first.papers_added, first.papers_total) == (3, 3)
    second = ingest([source], settings)
    assert (second.papers_added, second.papers_updated, second.papers_unchanged) == (0, 0, 3)
    assert second.chunks == 0
    observed = state(settings)
    assert observed["lexical"] == observed["dense"] == {"p1#0", "p2#0", "p3#0"}


def test_changed_abstract_replaces_its_chunks_in_both_indexes(tmp_path):
    settings = make_settings(tmp_path / "index", chunking={"max_tokens": 40, "overlap_sentences": 0})
    long_abstract = " ".join(f"Sentence number {i} talks about pruning convolutional filters."
                             for i in range(12))
    source = write_jsonl(tmp_path / "papers.jsonl", [{**PAPERS[0], "abstract": long_abstract}, PAPERS[1]])
    ingest([source], settings)
    before = state(settings)
    assert len([c for c in before["dense"] if c.startswith("p1#")]) > 2

    write_jsonl(source, [PAPERS[0], PAPERS[1]])  # p1's abstract shrinks to one chunk
    summary = ingest([source], settings)
    assert (summary.papers_updated, summary.papers_unchanged) == (1, 1)
    after = state(settings)
    assert after["dense"] == after["lexical"] == {"p1#0", "p2#0"}
    index = PaperIndex.open(settings)
    assert "75.9%" in index.papers(["p1"])["p1"].abstract
    index.close()


@pytest.mark.slow
def test_bad_records_are_rejected_by_line_and_the_rest_ingested(tmp_path):
    settings = make_settings(tmp_path / "index")
    ingest([write_jsonl(tmp_path / "good.jsonl", PAPERS[:1])], settings)
    bad = tmp_path / "mixed.jsonl"
    no_abstract = json.dumps({"title": "No abstract", "abstract": ""})
    bad.write_text("\n".join([json.dumps(PAPERS[1]), "{not json", no_abstract, json.dumps(PAPERS[2])]) + "\n")
    result = run_cli("ingest", str(bad), "--index", str(tmp_path / "index"), "--json", "--quiet", check_rc=3)
    summary = json.loads(result.stdout)
    assert summary["papers_added"] == 2 and summary["records_rejected"] == 2
    assert any("mixed.jsonl:2" in line for line in summary["rejected"])
    assert any("mixed.jsonl:3" in line for line in summary["rejected"])
    assert "Traceback" not in result.stderr
    assert set(state(settings)["hashes"]) == {"p1", "p2", "p3"}  # what was stored before is still there


@pytest.mark.slow
@pytest.mark.parametrize("content", [b"", b"\x00\x01\x02binary\xff"])
def test_empty_or_binary_file_is_rejected_with_its_name(tmp_path, content):
    path = tmp_path / "weird.jsonl"
    path.write_bytes(content)
    result = run_cli("ingest", str(path), "--index", str(tmp_path / "index"), "--quiet", check_rc=3)
    assert "weird.jsonl" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_corrupt_or_foreign_index_gives_a_clear_error(tmp_path):
    settings = make_settings(tmp_path / "index")
    ingest([write_jsonl(tmp_path / "p.jsonl", PAPERS)], settings)
    (tmp_path / "index" / "lexical.sqlite").write_bytes(b"this is not sqlite" * 100)
    for name in ("lexical.sqlite-wal", "lexical.sqlite-shm"):
        (tmp_path / "index" / name).unlink(missing_ok=True)
    with pytest.raises(ForeignIndexError, match="rebuild"):
        PaperIndex.open(settings)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8")
    result = run_cli("ingest", "--index", str(foreign), "--quiet", check_rc=1)
    assert "not a paperchat index" in result.stderr and "Traceback" not in result.stderr
    assert (foreign / "cat.jpg").exists()
    with pytest.raises(IndexNotFoundError, match="paperchat ingest"):
        PaperIndex.open(make_settings(tmp_path / "nothing-here"))


@pytest.mark.slow
def test_kill_9_mid_ingest_then_rerun_matches_an_uninterrupted_ingest(tmp_path):
    """A kill -9 after some batches were written; the next run must reach the clean state."""
    from paperchat.ingest.sources import bundled_corpus_dir, iter_records
    from paperchat.rag.papers import Paper

    # 150 papers of a bundled dump: three write batches (64, 64, 22), so a kill can land between them
    dump = sorted(bundled_corpus_dir().glob("*.txt"))[1]
    papers = [record for record in iter_records(dump) if isinstance(record, Paper)][:150]
    assert len(papers) == 150
    fields = ("id", "title", "abstract", "year")
    source = write_jsonl(tmp_path / "papers.jsonl", [{f: getattr(p, f) for f in fields} for p in papers])
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    process = subprocess.Popen([sys.executable, "-m", "paperchat.ui.cli", "ingest", str(source),
                                "--index", str(killed_dir), "--quiet"],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:  # wait until the first batch is committed, then kill mid-way
            database = killed_dir / "lexical.sqlite"
            if database.exists():
                try:
                    with sqlite3.connect(database, timeout=1) as db:
                        if db.execute("SELECT count(*) FROM papers").fetchone()[0] > 0:
                            break
                except sqlite3.Error:
                    pass
            time.sleep(0.2)
        time.sleep(1.0)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL, "ingest finished before it could be killed"
    killed = make_settings(killed_dir)
    half = state(killed)
    assert 0 < len(half["hashes"]) < 150

    run_cli("ingest", str(source), "--index", str(killed_dir), "--quiet", check_rc=0)
    ingest([source], make_settings(clean_dir))
    recovered, clean = state(killed), state(make_settings(clean_dir))
    assert recovered["hashes"] == clean["hashes"]
    assert recovered["dense"] == recovered["lexical"] == clean["dense"] == clean["lexical"]
    assert recovered["journal"] == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def chroma_server(tmp_path):
    port = free_port()
    chroma = Path(sys.executable).parent / "chroma"
    process = subprocess.Popen([str(chroma), "run", "--path", str(tmp_path / "server-data"),
                                "--host", "127.0.0.1", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail("chroma server did not start")
    yield port
    process.terminate()
    process.wait(timeout=20)


@pytest.mark.slow
def test_ingest_into_a_chroma_server(tmp_path, chroma_server):
    server = {"chroma_host": "127.0.0.1", "chroma_port": chroma_server, "collection": "server-test"}
    settings = make_settings(tmp_path / "index", store=server)
    source = write_jsonl(tmp_path / "papers.jsonl", PAPERS)
    assert ingest([source], settings).papers_added == 3
    assert ingest([source], settings).papers_added == 0
    assert not (tmp_path / "index" / "chroma").exists()  # dense vectors live on the server
    import chromadb

    collection = chromadb.HttpClient(host="127.0.0.1", port=chroma_server).get_collection("server-test")
    assert set(collection.get(include=[])["ids"]) == {"p1#0", "p2#0", "p3#0"} == state(settings)["lexical"]
