"""The one benchmark harness: repeats, child processes, memory, machine and load figures.

Every measure module (`ingest`, `embedding`, `retrieval`, `answer`, `startup`) times its work with
`spread` over repeats and runs anything whose memory it reports in a fresh interpreter through
`run_child`, so a figure never includes another section's caches or model loads.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings

from paperchat.eval.metrics import percentile  # noqa: F401 - the one percentile; the sections import it from here

REPO = Path(__file__).resolve().parents[2]
QUESTIONS = REPO / "eval" / "questions" / "tune.jsonl"  # never validate.jsonl: that set stays unseen
DEFAULT_OUT = REPO / "eval" / "bench_results"


def spread(values: Sequence[float], digits: int = 2) -> dict:
    """Median, min and max of repeated measurements.

    >>> spread([3.0, 1.0, 2.0])
    {'median': 2.0, 'min': 1.0, 'max': 3.0, 'n': 3}
    """
    values = [float(v) for v in values]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "n": len(values),
    }


def repeat(work: Callable[[], object], runs: int) -> tuple[list[float], list[float], object]:
    """Run `work` `runs` times: wall-clock and CPU seconds of each run, and the last run's result.

    CPU seconds (all of this process's threads) are what a busy machine distorts least: on 2 cores
    shared with other jobs the wall clock measures the neighbours as much as the code.
    """
    seconds, cpu_seconds, result = [], [], None
    for _ in range(runs):
        started, cpu_started = time.perf_counter(), time.process_time()
        result = work()
        seconds.append(time.perf_counter() - started)
        cpu_seconds.append(time.process_time() - cpu_started)
    return seconds, cpu_seconds, result


def rss_bytes() -> int:
    """This process's resident set size now (Linux /proc; peak RSS elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return peak_rss_bytes()


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: every timing is reported next to one."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict:
    import chromadb
    import sentence_transformers
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = None
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(ram / 2**30, 1) if ram else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "sentence_transformers": sentence_transformers.__version__,
        "chromadb": chromadb.__version__,
        "load_average_at_start": load_average(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def settings_for(index_dir: Path, **sections):
    """Default settings on `index_dir`, extractive answers, plus any per-section overrides."""
    from paperchat.rag.settings import Settings

    tree = {"store": {"index_dir": str(index_dir)}, "llm": {"backend": "extractive"}}
    for section, values in sections.items():
        tree.setdefault(section, {}).update(values)
    return Settings.load(overrides=tree)


def questions(limit: int = 0) -> list[str]:
    """The tune set's stand-alone questions (follow-ups need their conversation), first `limit` (0 = all)."""
    rows = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    texts = [row["question"] for row in rows if not row.get("follow_up_of")]
    return texts[: limit or None]


def run_child(
    function: Callable[[dict], dict], payload: dict, timeout_s: float = 3600, nice: int = 0
) -> dict:
    """`function(payload)` in a fresh interpreter: clean memory figures, no shared caches.

    `function` must be a module-level function of an importable module; its dict result comes
    back through stdout as JSON. `nice` lowers the child's priority (long builds on a shared machine).
    """
    target = f"{function.__module__}:{function.__name__}"
    command = [sys.executable, "-m", "paperchat.eval.bench", "--child", target, json.dumps(payload)]
    if nice:
        command = ["nice", "-n", str(nice), *command]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark child {target} failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1])


def child_main(target: str, payload: str) -> int:
    """The child side of `run_child`: import `module:function`, run it, print its JSON."""
    module, name = target.split(":")
    if not module.startswith("paperchat.eval.bench."):
        raise SystemExit(f"not a benchmark child: {target}")
    print(json.dumps(getattr(importlib.import_module(module), name)(json.loads(payload))))
    return 0


class PrecomputedEmbeddings(Embeddings):
    """Embeddings from a function over a batch of texts (an inference variant, or stored vectors)."""

    def __init__(self, encode: Callable[[list[str]], np.ndarray]):
        self.encode = encode

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encode([text])[0].tolist()
