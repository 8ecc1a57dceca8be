"""Answer latency on the bundled corpus: question → sources, the extractive answer, the local LLM."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from paperchat.eval.bench.harness import load_average, percentile, questions, run_child, settings_for, spread


def bench_answer(bundled_dir: Path, runs: int) -> dict:
    from paperchat.rag.chain import PaperChat

    chat = PaperChat.open(settings_for(bundled_dir))
    asked = questions()
    chat.search("warm-up")
    per_run = []
    try:
        for _ in range(runs):
            sources_ms, answer_ms = [], []
            for question in asked:
                started = time.perf_counter()
                chat.search(question)
                sources_ms.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                chat.ask(question, answerer="extractive")
                answer_ms.append((time.perf_counter() - started) * 1000)
            per_run.append((sources_ms, answer_ms))
    finally:
        chat.close()
    return {
        "questions": len(asked),
        "sources_ms": {
            "p50": spread([percentile(s, 50) for s, _ in per_run], 1),
            "p95": spread([percentile(s, 95) for s, _ in per_run], 1),
        },
        "extractive_answer_ms": {
            "p50": spread([percentile(a, 50) for _, a in per_run], 1),
            "p95": spread([percentile(a, 95) for _, a in per_run], 1),
        },
        "load_average": load_average(),
        "note": "PaperChat.search = retrieval + judging (question to sources); extractive = the whole "
        "ask(answerer='extractive'), retrieval included; tune set's stand-alone questions",
    }


def child_llm(payload: dict) -> dict:
    """Time to first token for each thread count, the variants taking turns on each question (ABBA),
    so that a change in the machine's load falls on all of them alike. The first question warms up."""
    from paperchat.rag.chain import PaperChat, Token
    from paperchat.rag.llm import make_chat_model

    chats, load_s = {}, {}
    for threads in payload["threads"]:
        settings = settings_for(Path(payload["index_dir"]), llm={"backend": "local", "threads": threads})
        started = time.perf_counter()
        model = make_chat_model(settings.llm)
        load_s[_label(threads)] = time.perf_counter() - started
        chats[_label(threads)] = PaperChat.open(settings, chat_models={"local": model})
    first_chat = next(iter(chats.values()))
    # an abstention never reaches the model: only questions that are answered time it
    asked = [q for q in payload["questions"] if not first_chat.search(q).abstained][: payload["count"] + 1]
    results = []
    for turn, question in enumerate(asked):
        order = list(chats) if turn % 2 == 0 else list(reversed(chats))
        for label in order:
            started, first, pieces = time.perf_counter(), None, 0
            for event in chats[label].stream(question, answerer="local"):
                if isinstance(event, Token):
                    first = first or time.perf_counter()
                    pieces += 1
            ended = time.perf_counter()
            results.append({
                "threads": label,
                "warm_up": turn == 0,
                "question": question,
                "ttft_s": round((first or ended) - started, 2),
                "pieces_per_s": round((pieces - 1) / (ended - first), 2) if first and pieces > 1 else None,
                "load_average": load_average(),
            })
    for chat in chats.values():
        chat.close()
    return {"load_s": load_s, "questions": results}


def _label(threads: int | None) -> str:
    return "default" if threads is None else str(threads)


def bench_llm(bundled_dir: Path, threads: tuple[int | None, ...] = (None,), count: int = 5,
              busy: int = 0) -> dict:
    """The default local model's time to first token over `count` tune questions, per thread count.

    `busy` > 0 runs that many busy-loop processes alongside: the figure under load, reproducibly.
    """
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        if hogs:
            time.sleep(30)  # let the load settle before the model loads
        out = run_child(child_llm, {"index_dir": str(bundled_dir), "threads": list(threads),
                                    "questions": questions(), "count": count}, timeout_s=3600)
    except Exception as error:  # noqa: BLE001 - owned by another module; report, do not fail the bench
        return {"status": "not measured", "reason": str(error)[-500:]}
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    from paperchat.rag.llm import default_thread_count

    variants = {}
    for label, seconds in out["load_s"].items():
        timed = [q for q in out["questions"] if q["threads"] == label and not q["warm_up"]]
        rates = [q["pieces_per_s"] for q in timed if q["pieces_per_s"]]
        variants[label] = {
            "model_load_s": round(seconds, 2),
            "ttft_s": spread([q["ttft_s"] for q in timed], 2),
            "ttft_p95_s": round(percentile([q["ttft_s"] for q in timed], 95), 2) if timed else None,
            "pieces_per_s": spread(rates, 1),
        }
    return {
        "status": "ok",
        "variants": variants,
        "busy_processes": busy,
        "default_threads": default_thread_count(),
        "raw": out["questions"],
        "load_average": load_average(),
        "note": "TTFT = PaperChat.stream() call to the first Token event (retrieval + prompt prefill "
        "included), over the tune set's first answered stand-alone questions after one warm-up, the "
        "thread counts taking turns (ABBA); rate = Token events per second after the first",
    }
