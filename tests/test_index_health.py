"""Index health: a damaged, foreign, misplaced or read-only index gets one clear line, never a traceback,
and nothing stored is lost (issue 14 "Index health"); the CLI's small faults of issue 11 item 8.

Every case builds its input here, runs the real `paperchat` entry point (in-process, so the real
embedding model and Chroma do the work), and checks the message, the exit code and the stored data.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sqlite3
import subprocess
import sys

import pytest
from conftest import ASR, DISTILL, FP8, REPO, make_settings, write_jsonl

from paperchat.rag.embeddings import make_embeddings
from paperchat.rag.store import PaperIndex
from paperchat.ui.cli import main

PAPERS = [
    {"id": "prune", "title": "Channel pruning for ResNet-50",
     "abstract": "We prune ResNet-50 channels by their importance. "
                 "The pruned network keeps 75.1% top-1 accuracy."},
    DISTILL,
    FP8,
    {"id": "nas", "title": "Searching architectures on NAS-Bench-201",
     "abstract": "A differentiable search finds cells on NAS-Bench-201 in four GPU hours."},
    ASR,
    {"id": "graph", "title": "Message passing on molecular graphs",
     "abstract": "Graph neural networks predict molecular properties from atoms and bonds."},
]
QUESTION = "Which papers prune ResNet-50?"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A small real index of PAPERS (built once), and the input file it came from."""
    folder = tmp_path_factory.mktemp("health")
    source = write_jsonl(folder / "papers.jsonl", PAPERS)
    assert main(["ingest", str(source), "--index", str(folder / "index"), "--quiet"]) == 0
    return folder / "index", source


@pytest.fixture
def index_dir(built, tmp_path):
    """A private copy of the built index, to damage."""
    copy = tmp_path / "index"
    shutil.copytree(built[0], copy)
    return copy


@pytest.fixture
def source(built):
    return built[1]


def fresh_process_view() -> None:
    """Chroma keeps one client per folder per process; each command here must see the files as a new
    process would (these tests damage them in between)."""
    from chromadb.api.shared_system_client import SharedSystemClient

    SharedSystemClient.clear_system_cache()


def run(capsys, *args) -> tuple[int, str, str]:
    """`paperchat ARGS` in-process: (exit code, stdout, stderr). Any traceback fails the test."""
    fresh_process_view()
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:  # `serve` reports a failed start this way
        code = 1 if isinstance(exit_.code, str) else exit_.code
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("Ingesting ")]
    assert len(lines) == 1, f"expected one message line, got: {err!r}"
    assert "Traceback" not in err
    return lines[0]


def snapshot(folder) -> dict[str, str]:
    """Every file under `folder` with its content hash: 'nothing was lost or changed'."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stored(index_dir) -> dict:
    """What the index holds, read with the library: records, and whether both halves agree per paper."""
    fresh_process_view()
    settings = make_settings(index_dir)
    index = PaperIndex.open(settings)
    try:
        return {"hashes": index.content_hashes(), "disagreements": index.disagreements(),
                "lexical": index.lexical_chunk_ids(), "dense": index.dense_chunk_ids()}
    finally:
        index.close()


def all_commands(index_dir, source):
    """The three entry points that open an index."""
    return [("ask", "--llm", "extractive", "--index", index_dir, QUESTION),
            ("ingest", source, "--index", index_dir, "--quiet"),
            ("serve", "--llm", "extractive", "--port", free_port(), "--index", index_dir)]


# --- the vector store disagrees with the lexical index -------------------------------------------

def test_deleted_chroma_is_refused_for_questions_then_repaired_by_the_next_ingest(capsys, index_dir, source):
    before = stored(index_dir)
    shutil.rmtree(index_dir / "chroma")

    code, out, err = run(capsys, "ask", "--llm", "extractive", "--index", index_dir, QUESTION)
    message = one_line(err)
    assert code == 1 and out == ""
    assert "6 of 6 papers" in message and "chroma/ deleted" in message and "paperchat ingest" in message
    assert "--rebuild" not in message  # the stored papers are good: rebuilding would throw them away

    code, out, err = run(capsys, "ingest", source, "--index", index_dir, "--quiet")
    assert code == 0
    assert "6 unchanged" in out and "repaired 6 papers" in out  # told, with the real count
    after = stored(index_dir)
    assert after["hashes"] == before["hashes"] and after["disagreements"] == {}
    assert after["dense"] == after["lexical"] == before["dense"]

    code, out, _ = run(capsys, "ask", "--llm", "extractive", "--index", index_dir, QUESTION)
    assert code == 0 and "Channel pruning for ResNet-50" in out


def test_missing_vectors_of_one_paper_are_detected_per_paper_and_repaired(capsys, index_dir, source):
    settings = make_settings(index_dir)
    index = PaperIndex.open(settings)
    try:
        index.delete_vectors(["fp8"])
    finally:
        index.close()

    code, _, err = run(capsys, "ask", "--llm", "extractive", "--index", index_dir, QUESTION)
    assert code == 1 and "1 of 6 papers" in one_line(err)

    code, out, _ = run(capsys, "ingest", source, "--index", index_dir, "--quiet")
    assert code == 0 and "repaired 1 paper " in out
    assert stored(index_dir)["disagreements"] == {}


def test_an_interrupted_ingest_is_reported_with_the_real_count(capsys, index_dir, source):
    """A kill between the vector write and the lexical commit leaves a journal entry: the next
    ingest rolls it back, re-adds the paper, and says so (it used to say "recovered 0")."""
    settings = make_settings(index_dir)
    index = PaperIndex.open(settings, make_embeddings(settings.embedding), create=True)
    try:
        index.start_rewrite(["nas"])  # the state a kill -9 inside `write` leaves behind
    finally:
        index.close()

    code, out, _ = run(capsys, "ingest", source, "--index", index_dir, "--quiet")
    assert code == 0
    assert "1 added" in out and "5 unchanged" in out and "repaired 1 paper " in out
    after = stored(index_dir)
    assert len(after["hashes"]) == 6 and after["disagreements"] == {}


def test_deleted_lexical_index_is_refused_then_rebuilt_from_the_input_by_the_next_ingest(capsys, index_dir,
                                                                                         source):
    before = stored(index_dir)
    for path in index_dir.glob("lexical.sqlite*"):
        path.unlink()

    code, out, err = run(capsys, "ask", "--llm", "extractive", "--index", index_dir, QUESTION)
    assert code == 1 and out == ""
    assert "lost its lexical index" in one_line(err)
    assert not (index_dir / "lexical.sqlite").exists()  # a question writes nothing, not even an empty file

    code, out, _ = run(capsys, "ingest", source, "--index", index_dir, "--quiet")
    assert code == 0 and "6 added" in out
    after = stored(index_dir)
    assert after["hashes"] == before["hashes"] and after["disagreements"] == {}
    assert after["dense"] == before["dense"]  # the orphaned vectors were replaced, not duplicated


# --- a read-only index ---------------------------------------------------------------------------

def _as_unprivileged() -> list[str] | None:
    """A command prefix under which file permissions apply (root ignores them), or None."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("unshare"):
        return None
    if subprocess.run(["unshare", "-U", "true"], capture_output=True, check=False).returncode == 0:
        return ["unshare", "-U"]  # a user namespace with no mapping: the owner's bits apply, not root's
    return None


@pytest.mark.slow
def test_read_only_index_answers_questions_and_is_never_told_to_rebuild(index_dir, source):
    prefix = _as_unprivileged()
    if prefix is None:
        pytest.skip("cannot drop root's permission override here")
    subprocess.run(["chmod", "-R", "a-w", str(index_dir)], check=True)
    before = snapshot(index_dir)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    try:
        cli = [*prefix, sys.executable, "-m", "paperchat.ui.cli"]
        asked = subprocess.run([*cli, "ask", "--llm", "extractive", "--index", str(index_dir), QUESTION],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
        ingested = subprocess.run([*cli, "ingest", str(source), "--index", str(index_dir), "--quiet"],
                                  cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(index_dir)], check=True)
    assert asked.returncode == 0, asked.stderr
    assert "Channel pruning for ResNet-50" in asked.stdout
    assert "read-only" in asked.stderr and "--rebuild" not in asked.stderr and "Traceback" not in asked.stderr

    assert ingested.returncode == 1
    message = one_line(ingested.stderr)
    assert "read-only" in message and "write access" in message and "--rebuild" not in message
    assert snapshot(index_dir) == before  # nothing written, nothing lost


# --- the wrong thing where the index should be ------------------------------------------------------

def test_index_pointing_at_a_regular_file(capsys, tmp_path, source):
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("my notes\n")
    rebuild = ("ingest", source, "--index", not_a_folder, "--rebuild", "--quiet")
    for command in [*all_commands(not_a_folder, source), rebuild]:
        code, _, err = run(capsys, *command)
        assert code == 1, command
        assert "is a file, not an index folder" in one_line(err), command
    assert not_a_folder.read_text() == "my notes\n"


@pytest.mark.parametrize("damage", ["garbage pages", "garbage header", "foreign database"])
def test_damaged_or_foreign_lexical_index(capsys, index_dir, source, damage):
    database = index_dir / "lexical.sqlite"
    _checkpoint(database)
    if damage == "foreign database":
        database.unlink()
        with sqlite3.connect(database) as db:
            db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
            db.execute("INSERT INTO customers VALUES (1, 'Ada')")
        db.close()
    else:
        data = bytearray(database.read_bytes())
        page = 4096
        assert len(data) > 6 * page
        start = 0 if damage == "garbage header" else 2 * page
        noise = hashlib.sha256(damage.encode()).digest() * (3 * page // 32)
        data[start:start + len(noise)] = noise
        database.write_bytes(bytes(data))
    before = snapshot(index_dir)

    expected = "another program's SQLite database" if damage == "foreign database" else "is damaged"
    for command in all_commands(index_dir, source):
        code, _, err = run(capsys, *command)
        message = one_line(err)
        assert code == 1, command
        assert expected in message and "lexical.sqlite" in message, (command, message)
        if damage == "foreign database":
            assert "--rebuild" not in message  # would delete someone else's database
    assert snapshot(index_dir) == before  # refused before writing anything
    if damage != "foreign database":  # the advice given works
        code, out, _ = run(capsys, "ingest", source, "--index", index_dir, "--rebuild", "--quiet")
        assert code == 0 and "papers in the index: 6" in out
        assert stored(index_dir)["disagreements"] == {}


def _checkpoint(database) -> None:
    """Fold the WAL into the main file, so that damaging the file damages the data."""
    with sqlite3.connect(database) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("PRAGMA journal_mode=DELETE")
    db.close()


# --- issue 11 item 8: small CLI faults ------------------------------------------------------------

def test_serve_reports_a_taken_port_before_loading_anything(capsys, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # No index here: had serve loaded first, this would say "no index" instead.
        code, _, err = run(capsys, "serve", "--port", port, "--index", tmp_path / "no-index")
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in one_line(err) and "--port" in err


def test_eval_compare_of_missing_folders_is_a_message(capsys, tmp_path):
    code, out, err = run(capsys, "eval", "compare", tmp_path / "run-a", tmp_path / "run-b")
    assert code == 1 and out == ""
    assert "no report.json in" in one_line(err) and "run-a" in err
    assert not (tmp_path / "run-a").exists()


def test_llm_fallback_notice_is_printed_once(capsys, index_dir, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("PAPERCHAT_LLM__BASE_URL", f"http://127.0.0.1:{closed}")
    code, out, err = run(capsys, "ask", "--llm", "ollama", "--index", index_dir, QUESTION)
    assert code == 0 and "Channel pruning for ResNet-50" in out
    notes = [line for line in err.splitlines() if line.strip().startswith("note:")]
    assert len(notes) == 1 and "unavailable" in notes[0], err
