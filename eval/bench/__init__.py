"""Speed and memory benchmarks: `paperchat bench` (or `python -m paperchat.eval.bench`) writes
`eval/bench_results/bench.json`, `BENCHMARKS.md` and `growth.png`.

One harness (`harness`: median/min/max over repeats, child processes, RSS, load average) and one
module per measure:

- `ingest`: the bundled corpus into a fresh index, end to end (papers/s, peak RSS, disk);
- `embedding`: the embedding step per inference back-end (torch, ONNX Runtime, OpenVINO), each
  with the top-10 overlap of its answers against the default, and the effect of chunk overlap;
- `retrieval`: synthetic corpora from 1k papers up (build rate, question → judged sources p50/p95,
  RSS, disk), with sizes too slow to build extrapolated and the extrapolation checked;
- `answer`: question → sources and the extractive answer on the bundled corpus, the local LLM;
- `startup`: `paperchat serve` to a page answering HTTP 200.

`report` turns the results into the Markdown table and the growth plot. Every timing carries the
load average it was taken at: on a shared machine, figures are noisy.

    python -m paperchat.eval.bench --quick                              # 1k and 10k papers, 3 runs
    python -m paperchat.eval.bench --sizes 1000,10000,100000 --runs 3 --skip llm
"""

from paperchat.eval.bench.cli import SECTIONS, build_parser, main

__all__ = ["SECTIONS", "build_parser", "main"]
