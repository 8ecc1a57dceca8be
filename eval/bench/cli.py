"""`paperchat bench` / `python -m paperchat.eval.bench`: run the sections, write bench.json, BENCHMARKS.md and
growth.png."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from paperchat.eval.bench.harness import DEFAULT_OUT, child_main, machine_info

SECTIONS = ("ingest", "embedding", "arxiv", "retrieval", "answer", "llm", "startup")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paperchat bench",
        description="Speed and memory benchmarks; writes bench.json and BENCHMARKS.md.",
    )
    parser.add_argument(
        "--sizes", default="1000,10000,100000,1000000", help="synthetic corpus sizes, comma-separated"
    )
    parser.add_argument(
        "--extrapolate",
        default="1000000,2500000",
        help="sizes to extrapolate to when not built, comma-separated",
    )
    parser.add_argument(
        "--runs", type=int, default=5, help="repetitions of each measurement (median, min, max)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="folder for bench.json, BENCHMARKS.md, plots"
    )
    parser.add_argument("--skip-llm", action="store_true", help="do not load the local LLM")
    parser.add_argument(
        "--llm-threads",
        default="",
        help="local-model thread counts to compare, comma-separated (default: the default count only)",
    )
    parser.add_argument(
        "--llm-questions", type=int, default=5, help="questions timed per thread count (after one warm-up)"
    )
    parser.add_argument(
        "--llm-busy",
        type=int,
        default=0,
        help="busy-loop processes run beside the local model: its time to first token under load",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="sizes 1000,10000 and 3 runs unless given; no bf16 or batch-64 torch variants",
    )
    parser.add_argument(
        "--skip", default="", help=f"sections to leave out, comma-separated: {','.join(SECTIONS)}"
    )
    parser.add_argument(
        "--work-dir", type=Path, help="scratch folder for indexes (default: a temporary folder)"
    )
    parser.add_argument(
        "--keep-indexes", action="store_true", help="keep the large synthetic indexes in --work-dir"
    )
    parser.add_argument(
        "--reuse-indexes",
        action="store_true",
        help="query a synthetic index a kept run built in --work-dir (same size and base papers) instead "
        "of building it again; its build figures are that run's",
    )
    parser.add_argument(
        "--build-budget-s",
        type=float,
        default=1800,
        help="do not build a synthetic size predicted to take longer than this",
    )
    parser.add_argument(
        "--bundled-index",
        type=Path,
        help="an ingested bundled corpus to read instead of ingesting one (it is not written)",
    )
    parser.add_argument(
        "--build-nice",
        type=int,
        default=15,
        help="niceness of the synthetic index builds (a shared machine's other jobs come first)",
    )
    parser.add_argument(
        "--base-papers", type=int, default=0, help="real papers the synthetic ones derive from (0 = all)"
    )
    parser.add_argument("--questions", type=int, default=0, help="tune questions per retrieval run (0 = all)")
    parser.add_argument("--ingest-runs", type=int, help="runs of the bundled ingest (default: --runs)")
    parser.add_argument("--embedding-runs", type=int, help="runs of each embedding variant (default: --runs)")
    parser.add_argument(
        "--embedding-variants",
        default="",
        help="only the embedding variants whose name contains one of these, comma-separated "
        "(the default torch path always runs)",
    )
    parser.add_argument(
        "--arxiv-sizes",
        default="10000,100000,1000000",
        help="arXiv-format records read by the arxiv section's dry runs, comma-separated "
        "(--quick: 10000,100000)",
    )
    parser.add_argument("--arxiv-runs", type=int, default=1, help="runs of each arxiv size")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the sections of an existing OUT/bench.json that this run skips",
    )
    parser.add_argument("--child", nargs=2, metavar=("MODULE:FUNCTION", "PAYLOAD"), help=argparse.SUPPRESS)
    return parser


def _ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.child:
        return child_main(*args.child)
    if args.quick:
        if args.sizes == parser.get_default("sizes"):
            args.sizes = "1000,10000"
        if args.runs == parser.get_default("runs"):
            args.runs = 3
        if args.arxiv_sizes == parser.get_default("arxiv_sizes"):
            args.arxiv_sizes = "10000,100000"
    sizes = _ints(args.sizes)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.skip_llm:
        skip.add("llm")
    unknown = skip - set(SECTIONS)
    if unknown:
        print(f"paperchat bench: unknown section(s) {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="paperchat-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "argv": list(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(),
        "runs": args.runs,
        "sizes": sizes,
        "skipped": sorted(skip),
    }
    # The local model idle and under load (--llm-busy) are kept apart, so that a run can add one to the other.
    llm_section = "llm_under_load" if args.llm_busy else "llm"
    if args.merge and (out / "bench.json").exists():
        previous = json.loads((out / "bench.json").read_text(encoding="utf-8"))
        produced = {llm_section if name == "llm" else name for name in set(SECTIONS) - skip}
        kept = (set(SECTIONS) | {"llm_under_load"}) - produced
        for name in kept & set(previous):
            results[name] = previous[name]
        if "plot" in previous and "retrieval" in skip:
            results["plot"] = previous["plot"]
        results["merged_from_previous_run"] = sorted(kept & set(previous))

    from paperchat.eval.bench.report import targets, write_markdown

    def save() -> None:
        results["targets"] = targets(results)
        (out / "bench.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
        write_markdown(results, out / "BENCHMARKS.md")

    def partial(name: str) -> Callable[[dict], None]:
        """Saves a section's results so far: a run stopped half-way keeps what it measured."""

        def keep(data: dict) -> None:
            results[name] = {**data, "partial": True}
            save()

        return keep

    def section(name: str, work_fn: Callable[[], dict]) -> None:
        if name in skip:
            return
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        results[name] = work_fn()
        results[name]["section_s"] = round(time.perf_counter() - started, 1)
        save()

    from paperchat.eval.bench.answer import bench_answer, bench_llm
    from paperchat.eval.bench.arxiv import bench_arxiv
    from paperchat.eval.bench.embedding import bench_embedding
    from paperchat.eval.bench.ingest import bench_ingest, ingest_bundled
    from paperchat.eval.bench.report import plot_growth
    from paperchat.eval.bench.retrieval import bench_retrieval
    from paperchat.eval.bench.startup import bench_startup

    section("ingest", lambda: bench_ingest(work, args.ingest_runs or args.runs))
    fresh_ingest = "ingest" in results and "ingest" not in skip
    bundled_dir = (
        Path(results["ingest"]["index_dir"]) if fresh_ingest else args.bundled_index or work / "bundled"
    )
    if not (bundled_dir / "paperchat-index.json").exists():
        ingest_bundled(bundled_dir)
    section(
        "embedding",
        lambda: bench_embedding(
            work,
            args.embedding_runs or args.runs,
            args.quick,
            tuple(p.strip() for p in args.embedding_variants.split(",") if p.strip()),
            save=partial("embedding"),
        ),
    )
    section("arxiv", lambda: bench_arxiv(work, _ints(args.arxiv_sizes), args.arxiv_runs,
                                         results.get("embedding"), results.get("ingest")))
    section("answer", lambda: bench_answer(bundled_dir, args.runs))
    threads = tuple(_ints(args.llm_threads)) or (None,)
    if "llm" not in skip:
        section(llm_section, lambda: bench_llm(bundled_dir, threads, args.llm_questions, args.llm_busy))
    section("startup", lambda: bench_startup(bundled_dir, min(args.runs, 3)))

    def retrieval() -> dict:
        data = bench_retrieval(
            work,
            bundled_dir,
            sizes,
            args.runs,
            out,
            args.build_budget_s,
            args.base_papers,
            args.questions,
            tuple(_ints(args.extrapolate)),
            keep=args.keep_indexes or args.reuse_indexes,
            reuse=args.reuse_indexes,
            build_nice=args.build_nice,
            save=partial("retrieval"),
        )
        if plot_growth(data, out / "growth.png"):
            results["plot"] = "growth.png"
        return data

    section("retrieval", retrieval)
    save()
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"[bench] wrote {out / 'bench.json'} and {out / 'BENCHMARKS.md'}", file=sys.stderr)
    return 0
