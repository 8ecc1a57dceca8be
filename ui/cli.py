"""The `paperchat` command: the entry point that turns library errors into messages for people.

    paperchat ingest [PATH ...]       index papers (the bundled corpus when no path is given)
    paperchat ask "QUESTION"          answer from the index, citing papers
    paperchat serve                   the chat in a browser
    paperchat eval QUESTIONS --out D  measure answers on a question set

Exit codes: 0 done, 1 error (message on stderr), 2 bad usage, 3 ingest done but some records
were rejected.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_ERROR, EXIT_USAGE, EXIT_REJECTED = 1, 2, 3


class UserError(Exception):
    """Something the user can fix; printed without a traceback."""


def _settings(args, **overrides):
    from rag.settings import Settings

    tree = {"store": {"index_dir": args.index}}
    for section, values in overrides.items():
        tree.setdefault(section, {}).update(values)
    return Settings.load(config_file=args.config, overrides=tree)


def _progress_factory(enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    def factory(total: int, label: str):
        bar = tqdm(total=total, desc=label, unit="chunk", file=sys.stderr, dynamic_ncols=True)

        def advance(n: int) -> None:
            bar.update(n)
            if bar.n >= bar.total:
                bar.close()
        return advance
    return factory


def cmd_ingest(args) -> int:
    from ingest.pipeline import ingest

    settings = _settings(args, embedding={"batch_size": args.batch_size})
    paths = [Path(p) for p in args.paths]
    for path in paths:
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
    if not args.json:
        what = ", ".join(map(str, paths)) if paths else "the bundled corpus"
        print(f"Ingesting {what} into {settings.store.index_dir} ...", file=sys.stderr)
    summary = ingest(paths, settings, fmt=args.format, rebuild=args.rebuild,
                     progress=_progress_factory(not args.quiet))
    for rejection in summary.rejections[:50]:
        print(f"rejected: {rejection}", file=sys.stderr)
    if len(summary.rejections) > 50:
        print(f"... and {len(summary.rejections) - 50} more rejected records", file=sys.stderr)
    if args.json:
        data = summary.to_json_dict()
        data.pop("rejections")
        data["rejected"] = summary.rejections
        print(json.dumps(data))
    else:
        print(f"papers: {summary.papers_added} added, {summary.papers_updated} updated, "
              f"{summary.papers_unchanged} unchanged, {summary.duplicates_merged} duplicates merged, "
              f"{summary.records_rejected} records rejected\n"
              f"chunks embedded: {summary.chunks}; papers in the index: {summary.papers_total}\n"
              f"took {summary.seconds:.1f} s ({summary.papers_per_second:.1f} papers/s)"
              + (f"; recovered {summary.recovered} papers from an interrupted ingest" if summary.recovered else ""))
    return EXIT_REJECTED if summary.records_rejected else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paperchat", description="Chat with research-paper abstracts; "
                                     "every answer cites the papers it used.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--index", type=Path, metavar="DIR",
                        help="index folder (default: store.index_dir, i.e. the user data directory)")
    common.add_argument("--config", type=Path, metavar="FILE", help="settings file (default: ./paperchat.toml)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("ingest", parents=[common], help="index papers (the bundled corpus by default)",
                            description="Index papers from files or folders: the bundled listing pages, "
                            "JSONL/CSV with title and abstract, an arXiv metadata snapshot, or a BEIR corpus.")
    p.add_argument("paths", nargs="*", help="files or folders (default: the bundled corpus)")
    p.add_argument("--format", choices=["listing", "jsonl", "csv", "arxiv", "beir"],
                   help="input format (default: detected from each file's content)")
    p.add_argument("--rebuild", action="store_true", help="delete the index and start over")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--batch-size", type=int, help="texts per embedding batch")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_ingest)
    p = commands.add_parser("serve", parents=[common], help="start the chat in the browser",
                            description="Serve the Gradio chat (default http://127.0.0.1:7860).")
    p.add_argument("--host", help="address to listen on (default: ui.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: ui.port, 7860)")
    p.add_argument("--llm", choices=["local", "openai", "ollama", "extractive"], help="answerer (default: llm.backend)")
    p.add_argument("--ingest-if-empty", action="store_true", help="ingest the bundled corpus first when there is no index")
    p.set_defaults(handler=cmd_serve)
    return parser


def cmd_serve(args) -> int:
    from ui.app import serve

    settings = _settings(args, ui={"host": args.host, "port": args.port}, llm={"backend": args.llm})
    if args.ingest_if_empty:
        _ingest_bundled_if_missing(settings)
    serve(settings)
    return 0


def _ingest_bundled_if_missing(settings) -> None:
    from ingest.pipeline import ingest
    from rag.store import MARKER

    if (settings.store.index_dir / MARKER).exists():
        return
    print(f"No index at {settings.store.index_dir} yet: ingesting the bundled corpus (about a minute) ...",
          file=sys.stderr)
    summary = ingest(None, settings, progress=_progress_factory(True))
    print(f"{summary.papers_total} papers indexed in {summary.seconds:.0f} s.", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from rag.errors import USER_ERRORS

    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (UserError, *USER_ERRORS) as error:
        print(f"paperchat: {error}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
