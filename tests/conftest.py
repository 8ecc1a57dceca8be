"""Shared fixtures: isolation of global state, and real components loaded once per session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from paperchat.rag.settings import Settings

REPO = Path(__file__).resolve().parent.parent
# 40 papers of the bundled corpus (the ResNet-50 pruning, FP8 and distillation papers, the rest picked at
# random): small enough to ingest in seconds, so `make test-fast` needs no bundled ingest.
SMALL_CORPUS = REPO / "tests" / "fixtures" / "papers-40.jsonl"
# Papers that several tests index beside their own cases, defined once.
DISTILL = {"id": "distill", "title": "Knowledge distillation for compact students",
           "abstract": "A large teacher network trains a small student. Students match the teacher closely."}
FP8 = {"id": "fp8", "title": "FP8 formats for deep learning",
       "abstract": "We propose two FP8 encodings, E4M3 and E5M2, for training and inference."}
ASR = {"id": "asr", "title": "Streaming speech recognition with transducers",
       "abstract": "A transducer model recognises speech as it streams, with 300 ms latency."}


def pytest_collection_modifyitems(items):
    """Tests that use the bundled index are marked `bundled`: `make test-fast` leaves them out."""
    for item in items:
        if "bundled_index" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.bundled)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """cwd in tmp_path, no PAPERCHAT_* from the caller, offline model loading, a private data dir."""
    for name in list(os.environ):
        if name.startswith("PAPERCHAT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.chdir(tmp_path)


def make_settings(index_dir: Path, **sections) -> Settings:
    tree = {"store": {"index_dir": str(index_dir)}, "llm": {"backend": "extractive"}}
    for section, values in sections.items():
        tree.setdefault(section, {}).update(values)
    return Settings.load(overrides=tree)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def bundled_index(tmp_path_factory) -> Settings:
    """The bundled corpus (573 papers) ingested once, with the real packaged model. Read-only."""
    from paperchat.ingest.pipeline import ingest

    index_dir = tmp_path_factory.mktemp("bundled") / "index"
    settings = make_settings(index_dir)
    summary = ingest(None, settings)
    assert summary.papers_total == 573
    return settings


@pytest.fixture(scope="session")
def small_index(tmp_path_factory) -> Settings:
    """The 40-paper fixture corpus ingested once, with the real packaged model. Read-only."""
    from paperchat.ingest.pipeline import ingest

    settings = make_settings(tmp_path_factory.mktemp("small") / "index")
    assert ingest([SMALL_CORPUS], settings).papers_total == 40
    return settings
