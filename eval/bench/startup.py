"""Start-up: `paperchat serve` launched to its page answering HTTP 200."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from paperchat.eval.bench.harness import REPO, load_average, spread


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _time_to_page(bundled_dir: Path, timeout_s: float) -> float | str:
    """Seconds from launch to HTTP 200 on /, or why there was none."""
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "paperchat.ui.cli",
            "serve",
            "--index",
            str(bundled_dir),
            "--port",
            str(port),
            "--llm",
            "extractive",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        while True:
            if process.poll() is not None:
                error = process.stderr.read().decode(errors="replace")[-800:]
                return f"serve exited with {process.returncode}: {error}"
            if time.perf_counter() - started > timeout_s:
                return f"no HTTP 200 within {timeout_s} s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except OSError:
                pass
            time.sleep(0.1)
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)


def bench_startup(bundled_dir: Path, runs: int, timeout_s: float = 240) -> dict:
    seconds = []
    for _ in range(runs):
        result = _time_to_page(bundled_dir, timeout_s)
        if isinstance(result, str):
            return {"status": "not measured", "reason": result}
        seconds.append(result)
    return {
        "status": "ok",
        "seconds": spread(seconds),
        "load_average": load_average(),
        "note": "launch of `python -m paperchat.ui.cli serve --llm extractive` to HTTP 200 on / "
                "(polled every 0.1 s)",
    }
