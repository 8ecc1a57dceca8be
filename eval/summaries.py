"""The local model's list summaries: recorded once, then replayed through the answer checks.

    python -m paperchat.eval.summaries record QUESTIONS.jsonl N RECORD.jsonl --index DIR
    python -m paperchat.eval.summaries replay RECORD.jsonl --index DIR [--show]

A summary costs the local model about 30 s a question on 2 cores, while everything `rag.generate`
does with its text is deterministic. `record` asks the first N stand-alone list questions with the
configured local model and keeps each one's raw text (the streamed pieces before the list);
`replay` feeds that text back through `PaperChat` with a fake model that returns it, so the code at
hand decides what a reader sees, and prints per set:

- summaries shown: answers whose summary survived the checks (else the page says it added nothing);
- papers described: distinct papers its specific sentences cite, of the papers quoted to the model (the first
  `LIST_PROMPT_PAPERS` matches);
- specific sentences: with a content word that is neither the question's nor a topic word, that is
  more than "these papers are about <the question>";
- unsupported: sentences marked "(unsupported)" by the support check;
- copied: sentences that repeat `COPIED_WORDS` consecutive words of a retrieved paper's abstract (the
  model's job is to say what the paper does, not to paste its abstract).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from paperchat.rag import generate
from paperchat.rag.chain import Done, PaperChat, Token
from paperchat.rag.settings import Settings
from paperchat.rag.text import split_sentences

COPIED_WORDS = 8


def copies_abstract(sentence: str, abstracts: list[str], run: int = COPIED_WORDS) -> bool:
    """Whether `sentence` repeats `run` consecutive words of one of `abstracts` (markers and case aside).

    >>> copies_abstract("[1] We prune whole channels of ResNet-50 using a learned score.",
    ...                 ["We prune whole channels of ResNet-50 using a learned importance score."])
    True
    >>> copies_abstract("[1] removes channels of ResNet-50 by a learned score.",
    ...                 ["We prune whole channels of ResNet-50 using a learned importance score."])
    False
    """
    def runs(text: str) -> set[tuple[str, ...]]:
        tokens = re.findall(r"\w+", re.sub(r"\[\d+(?:,\s*\d+)*\]", " ", text).lower())
        return {tuple(tokens[i:i + run]) for i in range(len(tokens) - run + 1)}

    said = runs(sentence)
    return any(said & runs(abstract) for abstract in abstracts)


def open_chat(index: Path, chat_models: dict | None = None) -> PaperChat:
    return PaperChat.open(Settings.load(overrides={"store": {"index_dir": str(index)}}), chat_models)


def record(questions: Path, count: int, out: Path, index: Path) -> None:
    rows = [json.loads(line) for line in questions.read_text().splitlines() if line.strip()]
    asked = [row for row in rows if row.get("kind") == "list" and not row.get("follow_up_of")][:count]
    chat = open_chat(index)
    with out.open("w") as file:
        for question in asked:
            started = time.perf_counter()
            pieces, answer = [], None
            for event in chat.stream(question["question"], answerer="local"):
                if isinstance(event, Token):
                    pieces.append(event.text)
                elif isinstance(event, Done):
                    answer = event.answer
            llm = answer is not None and answer.answerer.startswith("llm:")
            raw = "".join(pieces[:-1]) if llm else None  # the last piece is the list the code adds
            seconds = round(time.perf_counter() - started, 1)
            file.write(json.dumps({"id": question["id"], "question": question["question"], "raw": raw,
                                   "seconds": seconds}) + "\n")
            file.flush()
            print(f"{question['id']} {seconds} s", flush=True)
    chat.close()


def summary_of(text: str) -> str:
    """The model's part of a list answer: what comes before "N papers match:"."""
    first = text.split("\n\n")[0]
    return "" if first.endswith(("papers match:", "paper matches:")) or "\n1. " in first else first


def replay(records: Path, index: Path, show: bool = False) -> dict:
    rows = [json.loads(line) for line in records.read_text().splitlines() if line.strip()]
    model = GenericFakeChatModel(messages=iter([]))  # the local model's place; it says each record's text
    chat = open_chat(index, {"local": model})
    figures = {"questions": 0, "summaries shown": 0, "papers described": 0, "papers quoted": 0,
               "sentences": 0, "specific sentences": 0, "unsupported": 0, "copied": 0}
    for row in rows:
        if row["raw"] is None:  # abstained: no model text to judge
            continue
        model.messages = iter([AIMessage(content=row["raw"])])
        answer = chat.ask(row["question"], answerer="local")
        summary = summary_of(answer.text)
        sentences = split_sentences(summary.replace("\n", " "))
        asked = generate.content_words(row["question"])
        figures["questions"] += 1
        figures["summaries shown"] += bool(summary)
        matching = re.search(r"(\d+) papers? match", answer.text)
        matches = int(matching.group(1)) if matching else 0
        figures["papers quoted"] += min(generate.LIST_PROMPT_PAPERS, matches)
        figures["sentences"] += len(sentences)
        specific = [s for s in sentences if generate.content_words(s) - generate.TOPIC_WORDS - asked]
        figures["specific sentences"] += len(specific)
        figures["papers described"] += len(set().union(*map(generate.cited_numbers, specific)))
        figures["unsupported"] += sum(generate.UNSUPPORTED in s for s in sentences)
        abstracts = [paper.abstract for paper in answer.retrieved]
        figures["copied"] += sum(copies_abstract(s, abstracts) for s in sentences)
        if show:
            print(f"{row['id']}: {summary or '(no summary)'}\n")
    chat.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paperchat.eval.summaries",
                                     description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record")
    rec.add_argument("questions", type=Path)
    rec.add_argument("count", type=int)
    rec.add_argument("out", type=Path)
    rep = commands.add_parser("replay")
    rep.add_argument("records", type=Path)
    rep.add_argument("--show", action="store_true")
    for sub in (rec, rep):
        sub.add_argument("--index", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "record":
        record(args.questions, args.count, args.out, args.index)
    else:
        print(json.dumps(replay(args.records, args.index, args.show)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
