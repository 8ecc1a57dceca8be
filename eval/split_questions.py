"""Split the user-style question set once into `tune` and `validate`, before anything is tuned on it.

    python -m paperchat.eval.split_questions eval/questions/drafts/*.jsonl

Writes `eval/questions/tune.jsonl` and `eval/questions/validate.jsonl`. The split is fixed by the
question ids alone (a SHA-1 of the id orders each kind, and the halves alternate), stratified by
kind (list, single, none); a follow-up goes wherever the question it follows went, and questions
about the same single paper stay together, so no answer is seen on both sides. Tuning code reads
`tune.jsonl` only; reported figures quote `validate.jsonl`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

OUT = Path(__file__).with_name("questions")


def split(questions: list[dict]) -> dict[str, str]:
    """Question id -> "tune" or "validate".

    >>> qs = [{"id": f"q{i}", "kind": "list", "gold_titles": [str(i)]} for i in range(4)]
    >>> sorted(split(qs).values())
    ['tune', 'tune', 'validate', 'validate']
    >>> follow_up = {"id": "f", "kind": "list", "follow_up_of": "q1", "gold_titles": ["1"]}
    >>> split(qs + [follow_up])["f"] == split(qs)["q1"]
    True
    """
    side: dict[str, str] = {}
    groups: dict[tuple[str, str], list[str]] = {}  # (kind, group key) -> ids
    for q in questions:
        if q.get("follow_up_of"):
            continue
        key = "|".join(sorted(q["gold_titles"])) if q["kind"] == "single" else q["id"]
        groups.setdefault((q["kind"], key), []).append(q["id"])
    for kind in ("list", "single", "none"):
        keys = sorted((k for k in groups if k[0] == kind),
                      key=lambda k: hashlib.sha1(k[1].encode()).hexdigest())
        for n, key in enumerate(keys):
            for qid in groups[key]:
                side[qid] = "tune" if n % 2 == 0 else "validate"
    for q in questions:  # follow-ups of follow-ups resolve in file order
        if q.get("follow_up_of"):
            side[q["id"]] = side[q["follow_up_of"]]
    return side


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("drafts", nargs="+", type=Path)
    args = parser.parse_args(argv)
    questions = [json.loads(line) for path in args.drafts
                 for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    side = split(questions)
    for name in ("tune", "validate"):
        chosen = [q for q in questions if side[q["id"]] == name]
        (OUT / f"{name}.jsonl").write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in chosen),
                                           encoding="utf-8")
        kinds = {k: sum(q["kind"] == k and not q.get("follow_up_of") for q in chosen)
                 for k in ("list", "single", "none")}
        follow_ups = sum(bool(q.get("follow_up_of")) for q in chosen)
        print(f"{name}: {len(chosen)} questions {kinds}, follow-ups {follow_ups}")


if __name__ == "__main__":
    main()
