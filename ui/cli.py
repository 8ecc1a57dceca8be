"""The `paperchat` command: the entry point that turns library errors into messages for people.

    paperchat ingest [PATH ...]       index papers (the bundled corpus when no path is given)
    paperchat ask "QUESTION"          answer from the index, citing papers
    paperchat serve                   the chat in a browser
    paperchat eval QUESTIONS --out D  measure answers on a question set (also: eval compare, eval beir)
    paperchat bench                   measure speed (ingest, retrieval at scale, answers)

Exit codes: 0 done, 1 error (message on stderr), 2 bad usage, 3 ingest done but some records
were rejected.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import textwrap
import time
from pathlib import Path
from typing import get_args

from paperchat.rag.settings import Answerer

EXIT_ERROR, EXIT_USAGE, EXIT_REJECTED = 1, 2, 3


class UserError(Exception):
    """Something the user can fix; printed without a traceback."""


def _settings(args, **overrides):
    from paperchat.rag.settings import Settings

    tree = {"store": {"index_dir": args.index}}
    for section, values in overrides.items():
        tree.setdefault(section, {}).update(values)
    return Settings.load(config_file=args.config, overrides=tree)


def cmd_ingest(args) -> int:
    from paperchat.ingest.pipeline import ingest, tqdm_progress

    settings = _settings(args, embedding={"batch_size": args.batch_size})
    paths = [Path(p) for p in args.paths]
    for path in paths:
        if str(path) != "-" and not (path.exists() or path.is_symlink()):
            raise UserError(f"{path}: no such file or folder")
    if not args.json:
        what = ", ".join(map(str, paths)) if paths else "the bundled corpus"
        print(f"Reading {what} (dry run: the index at {settings.store.index_dir} is left as it is) ..."
              if args.dry_run else f"Ingesting {what} into {settings.store.index_dir} ...", file=sys.stderr)
    categories = [c for c in (args.categories or "").split(",") if c.strip()]
    summary = ingest(paths, settings, fmt=args.format, rebuild=args.rebuild,
                     progress=None if args.quiet else tqdm_progress, categories=categories, since=args.since,
                     dry_run=args.dry_run)
    for rejection in summary.rejections[:50]:
        print(f"rejected: {rejection}", file=sys.stderr)
    if len(summary.rejections) > 50:
        print(f"... and {len(summary.rejections) - 50} more rejected records", file=sys.stderr)
    for notice in summary.notices[:50]:
        print(f"note: {notice}", file=sys.stderr)
    if len(summary.notices) > 50:
        print(f"... and {len(summary.notices) - 50} more notes", file=sys.stderr)
    if summary.files_read == 0 and not summary.rejections:
        print(f"paperchat: warning: no files to read in {', '.join(map(str, paths))} "
              "(names starting with '.' are skipped); nothing was ingested", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        data = summary.to_json_dict()
        data.pop("rejections")
        data["rejected"] = summary.rejections
        print(json.dumps(data))
    elif summary.dry_run:
        print(f"dry run, nothing embedded or written: files read: {summary.files_read}"
              + (f"; {summary.papers_filtered_out} papers left out by --categories/--since"
                 if summary.papers_filtered_out else "") + "\n"
              f"papers: {summary.papers_added} to add, {summary.papers_updated} to update, "
              f"{summary.papers_unchanged} unchanged, {summary.duplicates_merged} duplicates merged, "
              f"{summary.records_rejected} records rejected; papers in the index: {summary.papers_total}\n"
              f"reading took {summary.seconds:.1f} s")
    else:
        repaired = (f"; repaired {summary.recovered} paper{'s' if summary.recovered != 1 else ''} "
                    "(half-written by an interrupted ingest, or missing from the vector store)"
                    if summary.recovered else "")
        print(f"files read: {summary.files_read}"
              + (f"; {summary.papers_filtered_out} papers left out by --categories/--since"
                 if summary.papers_filtered_out else "") + "\n"
              f"papers: {summary.papers_added} added, {summary.papers_updated} updated, "
              f"{summary.papers_unchanged} unchanged, {summary.duplicates_merged} duplicates merged, "
              f"{summary.records_rejected} records rejected\n"
              f"chunks embedded: {summary.chunks}; papers in the index: {summary.papers_total}\n"
              f"took {summary.seconds:.1f} s ({summary.papers_per_second:.1f} papers/s)" + repaired)
    return EXIT_REJECTED if summary.records_rejected else 0


def _print_papers(sources, numbers) -> None:
    """The useful answer first, from retrieval: the matching papers with their evidence sentence."""
    from paperchat.rag.extractive import FACT_SENTENCES
    from paperchat.ui.render import evidence_of, related_papers, untex

    def entry(paper, sentences: int = 1) -> None:
        year = f" ({paper.year})" if paper.year else ""
        print(f"  [{numbers[paper.id]}] {untex(paper.title)}{year}")
        evidence = evidence_of(paper, sources.search_query, sentences)
        if evidence:
            print(textwrap.fill(f"“{untex(evidence)}”", width=100, initial_indent="      ",
                                subsequent_indent="      "))

    if sources.abstained or not sources.matching:
        print(f"No paper in this collection answers “{sources.question}”.")
        if sources.retrieved:
            print("The nearest papers, which do not answer it:")
            for paper in sources.retrieved[:3]:
                year = f" ({paper.year})" if paper.year else ""
                print(f"  [{numbers[paper.id]}] {untex(paper.title)}{year}")
        return
    if sources.kind == "list":
        count = len(sources.matching)
        print(f"{count} matching paper{'s' if count != 1 else ''}:")
        for paper in sources.matching:
            entry(paper)
    else:
        print("The paper that answers it:")
        entry(sources.matching[0], sentences=FACT_SENTENCES)
    related = related_papers(sources)
    if related:
        print("Possibly related (some evidence, not counted):")
        for paper in related:
            entry(paper)


def _print_summary(answer, numbers, answerer: str) -> None:
    """An LLM's summary in the list's numbering once it is checked against the papers, or why none.

    The model's text streams in unchecked: `rag.generate` then moves a sentence to the shown paper
    that states it, or marks it "(unsupported)"; only that checked text reaches the terminal (the
    chat page streams the draft and replaces it). Stderr says the model is writing meanwhile.
    """
    from paperchat.ui.render import answer_in_numbers, model_words, summary_left_out, untex

    words = untex(model_words(answer_in_numbers(answer, numbers))).strip()
    if words:
        print("\nSummary:\n" + words, flush=True)
    else:
        print(f"note: {summary_left_out(answerer)}", file=sys.stderr)


def _answer_one(chat, question: str, args, history, previous_papers=()) -> object:
    """Answer one question: what it is doing on stderr, the matching papers at once, then the summary."""
    from paperchat.rag.chain import Done, Notice, Sources
    from paperchat.ui.render import paper_numbers

    answer = None
    notices: set[str] = set()  # a fallback notice comes as an event and again on the answer: say it once
    answerer = args.llm or chat.settings.llm.backend
    summary_numbers = None  # the list's numbering, while an LLM summary is to follow it
    started = time.perf_counter()
    if not args.json:
        print(f"searching {chat.index.paper_count()} papers…", file=sys.stderr, flush=True)
    for event in chat.stream(question, history=history, answerer=args.llm, top_k=args.top_k,
                             year_min=args.year_min, year_max=args.year_max,
                             include_undated=not args.exclude_undated, previous_papers=previous_papers):
        if args.json:
            if isinstance(event, Done):
                answer = event.answer
            continue
        if isinstance(event, Sources):
            if event.search_query and event.search_query != question:
                print(f"(searching for: {event.search_query})", file=sys.stderr)
            if not event.retrieved:
                continue
            numbers = paper_numbers(event)
            print(f"found {len(event.matching)} matching of {len(event.retrieved)} retrieved papers in "
                  f"{time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
            _print_papers(event, numbers)
            if answerer != "extractive" and not event.abstained:
                summary_numbers = numbers
                doing = ("the {} model is writing a summary…" if chat.has_chat_model(answerer)
                         else "loading the {} model, then writing a summary…")
                print(doing.format(answerer), file=sys.stderr, flush=True)
        elif isinstance(event, Notice):
            notices.add(event.text)
            summary_numbers = None  # the answer is composed from the abstracts: the list above is it
            print(f"note: {event.text}", file=sys.stderr)
        elif isinstance(event, Done):
            answer = event.answer
            if summary_numbers is not None:
                _print_summary(answer, summary_numbers, answerer)
            elif not event.answer.retrieved:  # small talk: no search, the reply is the answer
                print(event.answer.text)
            if answer.notice and answer.notice not in notices:
                print(f"note: {answer.notice}", file=sys.stderr)
            print(f"done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if args.json:
        print(json.dumps(answer.to_json_dict(), ensure_ascii=False))
    return answer


def cmd_ask(args) -> int:
    from paperchat.rag.chain import EmptyQuestionError, PaperChat

    if args.question is not None and not args.question.strip():
        raise UserError("the question is empty: ask something about the papers, e.g. "
                        "paperchat ask \"Which papers prune ResNet-50?\"")
    if args.year_min is not None and args.year_max is not None and args.year_min > args.year_max:
        raise UserError(f"the year range is empty: --year-min {args.year_min} is after --year-max "
                        f"{args.year_max}; swap them or leave one out")
    settings = _settings(args, retrieval={"top_k": args.top_k}, llm={"backend": args.llm})
    chat = PaperChat.open(settings)
    if not args.json:
        for note in chat.index.notes:
            print(f"note: {note}", file=sys.stderr)
    try:
        if args.question is not None:
            _answer_one(chat, args.question, args, [])
            return 0
        return _interactive(chat, args)
    except EmptyQuestionError as error:
        raise UserError(str(error)) from None
    finally:
        chat.close()


def _interactive(chat, args) -> int:
    print(f"paperchat: {chat.index.paper_count()} papers. Ask a question; follow-ups use the conversation. "
          "Empty line or Ctrl-D to quit, /new for a new chat.", file=sys.stderr)
    history: list[tuple[str, str]] = []
    listed: list[str] = []  # the papers the last answer listed: "which of those ...?" narrows them
    while True:
        try:
            question = input("\n> ").strip()
        except EOFError:
            print(file=sys.stderr)
            return 0
        if not question:
            return 0
        if question == "/new":
            history.clear()
            listed = []
            continue
        answer = _answer_one(chat, question, args, history, listed)
        history.append((question, answer.text))
        listed = [paper.id for paper in answer.retrieved if paper.matches]


def cmd_eval(args) -> int:
    if args.questions == "compare":
        return _eval_compare(args)
    if args.questions == "beir":
        return _eval_beir(args)
    from paperchat.eval.questions import load_questions
    from paperchat.eval.runner import run_questions
    from paperchat.rag.chain import PaperChat
    from paperchat.rag.papers import normalize_title

    settings = _settings(args, retrieval={"top_k": args.top_k}, llm={"backend": args.llm})
    chat = PaperChat.open(settings)
    try:
        titles = chat.index.titles()
        questions = load_questions(Path(args.questions), {normalize_title(t): i for i, t in titles.items()},
                                   known_ids=set(titles))
        answerer = settings.llm.backend
        config = {"answerer": answerer, "questions": str(args.questions), "papers": len(titles),
                  "corpus_hash": _corpus_hash(titles), **settings.redacted()}
        out = Path(args.out)
        report = run_questions(questions, lambda q, **context: chat.ask(q, answerer=answerer, **context), out,
                               config, progress=not args.quiet)
    finally:
        chat.close()
    _print_metrics(report["metrics"])
    print(f"\nwrote {out}/results.jsonl, report.json, report.md and plots", file=sys.stderr)
    return 0


def _corpus_hash(titles: dict[str, str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(sorted(titles)).encode()).hexdigest()[:16]


def _print_metrics(metrics: dict) -> None:
    for key, value in metrics.items():
        if isinstance(value, float):
            print(f"{key:22s} {value:.3f}")
        elif value is None or isinstance(value, int):
            print(f"{key:22s} {value if value is not None else 'n/a'}")
        else:
            print(f"{key:22s} {json.dumps(value)}")


def _eval_compare(args) -> int:
    from paperchat.eval.report import compare_reports
    from paperchat.eval.runner import load_run

    if len(args.rest) != 2:
        raise UserError("usage: paperchat eval compare DIR_A DIR_B")
    try:
        a, b = (load_run(Path(d))[0] for d in args.rest)
    except (OSError, ValueError) as error:  # a missing folder, an unreadable or non-JSON report
        raise UserError(f"cannot compare: {error}") from None
    print(compare_reports(a, b))
    return 0


def _eval_beir(args) -> int:
    from paperchat.eval.beir import BeirError, run_beir

    if len(args.rest) != 1:
        raise UserError("usage: paperchat eval beir DATASET_DIR [--split train|test] [--out DIR]")
    settings = _settings(args)
    try:  # without --index, BEIR keeps its own cached index, never the user's chat index
        result = run_beir(Path(args.rest[0]), settings, Path(args.out) if args.out else None,
                          index_dir=args.index, split=args.split, progress=not args.quiet)
    except BeirError as error:
        raise UserError(str(error)) from None
    print(f"{result['dataset']}: {result['queries']} queries over {result['corpus_papers']} papers")
    _print_metrics(result["metrics"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paperchat", description="Chat with research-paper abstracts; "
                                     "every answer cites the papers it used.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--index", type=Path, metavar="DIR",
                        help="index folder (default: store.index_dir, i.e. the user data directory)")
    common.add_argument("--config", type=Path, metavar="FILE",
                        help="settings file (default: ./paperchat.toml)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("ingest", parents=[common], help="index papers (the bundled corpus by default)",
                            description="Index papers from files or folders: the bundled listing pages, "
                            "JSONL/CSV with title and abstract, an arXiv metadata snapshot, "
                            "or a BEIR corpus.")
    p.add_argument("paths", nargs="*", help="files or folders, read with their subfolders; "
                   "- for standard input (default: the bundled corpus)")
    p.add_argument("--format", choices=["listing", "jsonl", "csv", "arxiv", "beir"],
                   help="input format (default: detected from each file's content)")
    p.add_argument("--rebuild", action="store_true", help="delete the index and start over")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--batch-size", type=int, help="texts per embedding batch")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--categories", metavar="LIST", help="only papers in any of these comma-separated "
                   "categories (cs.LG,cs.CV; 'cs' means every cs.*)")
    p.add_argument("--since", type=int, metavar="YEAR", help="only papers from this year on "
                   "(arXiv: the year of update_date; papers without a year are left out)")
    p.add_argument("--dry-run", action="store_true", help="read and check the input and say what an ingest "
                   "would add, update or reject; nothing is embedded or written")
    p.set_defaults(handler=cmd_ingest)
    def answer_options(p):
        p.add_argument("--llm", choices=get_args(Answerer),
                       help="who writes the answer (default: llm.backend)")
        p.add_argument("-k", "--top-k", type=int,
                       help="papers to retrieve and show (default: retrieval.top_k)")
        p.add_argument("--year-min", type=int, help="only papers from this year on")
        p.add_argument("--year-max", type=int, help="only papers up to this year")

    p = commands.add_parser("ask", parents=[common], help="answer a question (no question: interactive chat)",
                            description="Answer a question from the index, citing the papers used. "
                            "Without a question, start an interactive chat that keeps the conversation.")
    p.add_argument("question", nargs="?", help="the question (quote it)")
    p.add_argument("--json", action="store_true", help="print the Answer as one JSON object")
    answer_options(p)
    p.add_argument("--exclude-undated", action="store_true", help="leave out papers without a year "
                   "(by default a year filter keeps them, since their year is unknown)")
    p.set_defaults(handler=cmd_ask)

    p = commands.add_parser("eval", parents=[common], help="measure answers on a question set, or on BEIR",
                            description="paperchat eval QUESTIONS.jsonl --out DIR | "
                            "paperchat eval compare DIR_A DIR_B | paperchat eval beir DATASET_DIR")
    p.add_argument("questions", help="question set (JSONL/CSV), or 'compare', or 'beir'")
    p.add_argument("rest", nargs="*", help="for compare: two run folders; for beir: the dataset folder")
    p.add_argument("--split", default="test",
                   help="beir: the qrels split to score (tune on 'train', report 'test'; default test)")
    p.add_argument("--out", help="folder for results.jsonl, report.json, report.md and plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    answer_options(p)
    p.set_defaults(handler=cmd_eval)

    p = commands.add_parser("bench", help="measure ingest, retrieval and answer speed (eval/bench/)",
                            description="Benchmarks; options are passed to paperchat.eval.bench "
                            "(see paperchat bench -- --help).")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="options for paperchat.eval.bench")
    p.set_defaults(handler=cmd_bench)

    p = commands.add_parser("serve", parents=[common], help="start the chat in the browser",
                            description="Serve the Gradio chat (default http://127.0.0.1:7860).")
    p.add_argument("--host", help="address to listen on (default: ui.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: ui.port, 7860)")
    p.add_argument("--llm", choices=get_args(Answerer), help="answerer (default: llm.backend)")
    p.add_argument("--ingest-if-empty", action="store_true",
                   help="ingest the bundled corpus first when there is no index")
    p.set_defaults(handler=cmd_serve)
    return parser


def cmd_bench(args) -> int:
    from paperchat.eval.bench import main as bench_main

    return bench_main([a for a in args.bench_args if a != "--"])


def cmd_serve(args) -> int:
    from paperchat.ui.app import serve

    settings = _settings(args, ui={"host": args.host, "port": args.port}, llm={"backend": args.llm})
    _require_free_port(settings.ui.host, settings.ui.port)  # before a minute of loading, not after
    if args.ingest_if_empty:
        _ingest_bundled_if_missing(settings)
    serve(settings)
    return 0


def _require_free_port(host: str, port: int) -> None:
    """Raise `UserError` when nothing could listen on host:port (taken, or an address not on this machine)."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            # as the server will: a port in TIME_WAIT is no conflict
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        raise UserError(f"cannot listen on {host}:{port} ({error.strerror or error}): "
                        "another program uses it; choose another port with --port") from None


def _ingest_bundled_if_missing(settings) -> None:
    from paperchat.ingest.pipeline import ingest, tqdm_progress
    from paperchat.rag.store import MARKER

    if (settings.store.index_dir / MARKER).exists():
        return
    print(f"No index at {settings.store.index_dir} yet: ingesting the bundled corpus (20-40 s on 2 cores)",
          file=sys.stderr)
    summary = ingest(None, settings, progress=tqdm_progress)
    print(f"{summary.papers_total} papers indexed in {summary.seconds:.0f} s.", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and getattr(args, "handler", None) is not cmd_bench:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if unknown:  # `paperchat bench --skip llm`: the options are the benchmark's own
        args.bench_args = unknown + args.bench_args
    from paperchat.eval.questions import QuestionSetError
    from paperchat.ingest.sources import SourceError
    from paperchat.rag.chain import EmptyQuestionError
    from paperchat.rag.errors import USER_ERRORS

    try:
        return args.handler(args)
    except (UserError, SourceError, QuestionSetError, EmptyQuestionError, *USER_ERRORS) as error:
        print(f"paperchat: {error}", file=sys.stderr)
        return EXIT_ERROR
    except sqlite3.DatabaseError as error:  # damage a query reached after the open-time check
        detail = " ".join(str(error).split())[:160]
        print(f"paperchat: the index is damaged ({type(error).__name__}: {detail}); your input files are "
              "untouched: rebuild it from them with `paperchat ingest --rebuild [PATH ...]`", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
