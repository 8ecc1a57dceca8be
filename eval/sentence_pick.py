"""How often the sentences `rag.sentences.best_sentences` picks from the gold paper hold a fact question's
required facts: of the first one, the first two (the quote under a fact answer, the extractive answer)
and the first four (what the local model is shown of the answering paper).

    python -m paperchat.eval.sentence_pick --index DIR eval/questions/tune.jsonl \
        eval/questions/tune_facts.jsonl

This measures the sentence choice alone, with the right paper given: no retrieval, no judge, no model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from paperchat.eval.metrics import mentions
from paperchat.eval.questions import QuestionSetError, load_questions
from paperchat.rag.sentences import best_sentences
from paperchat.rag.settings import Settings
from paperchat.rag.store import PaperIndex

DEPTHS = (1, 2, 4)


def coverage(questions, abstracts: dict[str, str], depths=DEPTHS) -> dict:
    """For the fact questions among `questions`: the share whose facts all lie in the first k
    picked sentences of the gold paper, for each k in `depths`, and the ids missed at the last k."""
    facts = [q for q in questions if q.kind == "single" and q.must_mention and q.gold_ids]
    held = {k: 0 for k in depths}
    missed = []
    for question in facts:
        abstract = abstracts[question.gold_ids[0]]
        for k in depths:
            picked = " ".join(best_sentences(question.question, abstract, limit=k))
            found = all(mentions(picked, fact) for fact in question.must_mention)
            held[k] += found
            if not found and k == depths[-1]:
                missed.append(question.id)
    return {"questions": len(facts),
            **{f"top{k}": round(held[k] / len(facts), 3) if facts else None for k in depths},
            "missed": missed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="question sets (JSONL or CSV)")
    parser.add_argument("--index", type=Path, required=True, help="an index holding the questions' papers")
    args = parser.parse_args(argv)
    index = PaperIndex.open(Settings.load(overrides={"store": {"index_dir": str(args.index)}}))
    titles = index.titles()
    title_to_id = {title: paper_id for paper_id, title in titles.items()}
    papers = index.papers(list(titles))
    abstracts = {paper_id: paper.abstract for paper_id, paper in papers.items()}
    for path in args.files:
        try:
            questions = load_questions(path, title_to_id, set(titles))
        except QuestionSetError as exc:
            parser.exit(2, f"paperchat: {exc}\n")
        print(json.dumps({"file": str(path), **coverage(questions, abstracts)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
