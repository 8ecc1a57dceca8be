"""Answer latency on the bundled corpus: question → sources, the extractive answer, the local LLM."""

from __future__ import annotations

import time
from pathlib import Path

from paperchat.eval.bench.harness import load_average, percentile, questions, run_child, settings_for, spread

RESNET_QUESTIONS = (
    "Which papers prune ResNet-50?",
    "Which papers improve the training of ResNet-50 on ImageNet?",
    "What accuracy does ResNet-50 reach after pruning?",
)


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
    from paperchat.rag.chain import PaperChat, Token
    from paperchat.rag.llm import make_chat_model

    settings = settings_for(Path(payload["index_dir"]), llm={"backend": "local"})
    started = time.perf_counter()
    model = make_chat_model(settings.llm)
    load_s = time.perf_counter() - started
    chat = PaperChat.open(settings, chat_models={"local": model})
    results = []
    for question in RESNET_QUESTIONS:
        started = time.perf_counter()
        first, pieces, chars = None, 0, 0
        for event in chat.stream(question, answerer="local"):
            if isinstance(event, Token):
                now = time.perf_counter()
                if first is None:
                    first = now
                pieces += 1
                chars += len(event.text)
        ended = time.perf_counter()
        results.append(
            {
                "ttft_s": (first or ended) - started,
                "pieces": pieces,
                "chars": chars,
                "pieces_per_s": (pieces - 1) / (ended - first)
                if first and pieces > 1 and ended > first
                else None,
            }
        )
    chat.close()
    return {"load_s": load_s, "questions": results}


def bench_llm(bundled_dir: Path) -> dict:
    try:
        out = run_child(child_llm, {"index_dir": str(bundled_dir)}, timeout_s=900)
    except Exception as error:  # noqa: BLE001 - owned by another module; report, do not fail the bench
        return {"status": "not measured", "reason": str(error)[-500:]}
    rates = [q["pieces_per_s"] for q in out["questions"] if q["pieces_per_s"]]
    return {
        "status": "ok",
        "model_load_s": round(out["load_s"], 2),
        "ttft_s": spread([q["ttft_s"] for q in out["questions"]], 2),
        "pieces_per_s": spread(rates, 1),
        "questions": list(RESNET_QUESTIONS),
        "raw": out["questions"],
        "load_average": load_average(),
        "note": "TTFT = PaperChat.stream() call to the first Token event (retrieval + prompt prefill "
        "included); rate = Token events per second after the first (one event is about one token)",
    }
