"""An evaluation run end to end: question file -> run_questions -> results.jsonl, report.json/.md, plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib.image import imread

from paperchat.eval.metrics import METRIC_KEYS
from paperchat.eval.questions import QuestionSetError, load_questions
from paperchat.eval.report import compare_reports, write_beir_markdown
from paperchat.eval.runner import load_run, run_questions
from paperchat.rag.answer import Answer, RetrievedPaper, enforce_citations
from paperchat.rag.papers import normalize_title

PAPERS = {
    "p-lora": "LoRA: Low-Rank Adaptation of Large Language Models",
    "p-qlora": "QLoRA: Efficient Finetuning of Quantized LLMs",
    "p-resnet": "Deep Residual Learning for Image Recognition",
    "p-vit": "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale",
    "p-bert": "BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding",
}
TITLE_TO_ID = {normalize_title(title): paper_id for paper_id, title in PAPERS.items()}

QUESTIONS = [
    {"id": "lora", "question": "Which papers fine-tune LLMs with low-rank adapters?",
     "gold_titles": ["lora low rank adaptation of large language models",
                     "QLoRA:  Efficient Finetuning of Quantized LLMs"]},
    {"id": "resnet", "question": "Which paper introduced residual connections?", "gold_ids": ["p-resnet"],
     "must_mention": ["152 layers"]},
    {"id": "vit", "question": "What accuracy does ViT reach?", "kind": "single",
     "gold_titles": ["An image is worth 16x16 words: transformers for image recognition at scale"],
     "must_mention": ["88.55 %"]},
    {"id": "alphafold", "question": "How does AlphaFold predict protein structures?"},
    {"id": "bert", "question": "What does BERT pre-train on?", "gold_ids": ["p-bert"]},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def make_answer(question: str, retrieved_ids: list[str], text: str = "", *,
                abstained: bool = False) -> Answer:
    """A real Answer, its citations checked by the same `enforce_citations` every answerer uses."""
    retrieved = [RetrievedPaper(id=pid, title=PAPERS[pid], score=1.0 / rank, rank=rank)
                 for rank, pid in enumerate(retrieved_ids, start=1)]
    numbering = {rank: pid for rank, pid in enumerate(retrieved_ids, start=1)}
    cleaned, citations, dropped = enforce_citations(text, retrieved, numbering)
    return Answer(question=question, search_query=question, text=cleaned, citations=citations,
                  retrieved=retrieved, abstained=abstained, answerer="scripted", dropped_citations=dropped)


def scripted_ask(answers: dict[str, tuple[list[str], str, bool]]):
    """An answerer that replays fixed answers; a question scripted as None raises."""
    def ask(question: str) -> Answer:
        script = answers[question]
        if script is None:
            raise RuntimeError("llama.cpp server went away")
        retrieved_ids, text, abstained = script
        return make_answer(question, retrieved_ids, text, abstained=abstained)
    return ask


FLAWED = {  # lora misses QLoRA; vit misses its fact; bert's answerer crashes.
    QUESTIONS[0]["question"]: (["p-lora", "p-resnet", "p-qlora"], "LoRA adds low-rank adapters [1].", False),
    QUESTIONS[1]["question"]: (["p-resnet", "p-vit"], "Residual nets train 152 layers deep [1].", False),
    QUESTIONS[2]["question"]: (["p-vit"], "ViT matches CNNs [1].", False),
    QUESTIONS[3]["question"]: (["p-bert"], "The papers do not cover this.", True),
    QUESTIONS[4]["question"]: None,
}
PERFECT = {
    **FLAWED,
    QUESTIONS[0]["question"]: (["p-lora", "p-qlora"], "LoRA [1] and QLoRA [2].", False),
    QUESTIONS[2]["question"]: (["p-vit"], "ViT reaches 88.55% on ImageNet [1].", False),
    QUESTIONS[4]["question"]: (["p-bert"], "Masked language modelling [1].", False),
}


@pytest.fixture
def questions(tmp_path):
    return load_questions(write_jsonl(tmp_path / "dev.jsonl", QUESTIONS), TITLE_TO_ID, set(PAPERS))


@pytest.fixture
def flawed_run(tmp_path, questions):
    out_dir = tmp_path / "run-a"
    config = {"retrieval": {"k": 20}, "answerer": "x"}
    report = run_questions(questions, scripted_ask(FLAWED), out_dir, config, progress=False)
    return out_dir, report


def test_questions_resolve_titles_and_default_kinds(questions):
    by_id = {question.id: question for question in questions}
    assert by_id["lora"].gold_ids == ["p-lora", "p-qlora"]
    assert by_id["lora"].kind == "list"
    assert (by_id["resnet"].kind, by_id["vit"].kind, by_id["alphafold"].kind) == ("single", "single", "none")
    assert by_id["resnet"].gold_titles == [normalize_title(PAPERS["p-resnet"])]
    assert by_id["vit"].source == "dev.jsonl:3"


def test_csv_question_sets_split_lists_on_pipes(tmp_path):
    path = tmp_path / "dev.csv"
    path.write_text("id,question,gold_titles,must_mention\n"
                    f'q1,"Which, exactly, adapt LLMs?",{PAPERS["p-lora"]} | {PAPERS["p-qlora"]},rank|4-bit\n'
                    "q2,Is there a paper on protein folding?,,\n", encoding="utf-8")
    first, second = load_questions(path, TITLE_TO_ID)
    assert (first.kind, first.gold_ids) == ("list", ["p-lora", "p-qlora"])
    assert first.must_mention == ["rank", "4-bit"]
    assert (second.kind, second.gold_ids) == ("none", [])


@pytest.mark.parametrize(("line", "expected"), [
    ({"id": "x", "question": "?", "gold_titles": ["Foo"]},
     "dev.jsonl:2: gold title 'Foo' matches no paper in the index"),
    ({"id": "x", "question": "?", "gold_ids": ["p-nope"]},
     "dev.jsonl:2: gold id 'p-nope' is not in the index"),
    ({"id": "x", "gold_ids": ["p-bert"]}, "dev.jsonl:2: missing question"),
    ({"id": "first", "question": "again?"}, "dev.jsonl:2: duplicate id 'first'"),
    ({"id": "x", "question": "?", "kind": "lists", "gold_ids": ["p-bert"]}, "dev.jsonl:2: kind 'lists'"),
    ("{not json", "dev.jsonl:2: bad JSON"),
])
def test_question_set_errors_name_the_file_and_line(tmp_path, line, expected):
    path = tmp_path / "dev.jsonl"
    bad = line if isinstance(line, str) else json.dumps(line)
    path.write_text(json.dumps({"id": "first", "question": "ok?"}) + "\n" + bad + "\n", encoding="utf-8")
    with pytest.raises(QuestionSetError) as raised:
        load_questions(path, TITLE_TO_ID, set(PAPERS))
    assert expected in str(raised.value)
    assert raised.value.line == 2


def test_results_jsonl_has_one_record_per_question(flawed_run):
    out_dir, _ = flawed_run
    lines = (out_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == [q["id"] for q in QUESTIONS]
    schema = {"id", "question", "kind", "gold_ids", "gold_titles", "must_mention", "retrieved", "cited",
              "answer", "abstained", "latency_s", "answerer", "notice"}
    for r in records:
        assert schema <= set(r)
    lora = records[0]
    assert lora["retrieved"][2] == {"id": "p-qlora", "title": PAPERS["p-qlora"],
                                    "score": pytest.approx(1 / 3), "rank": 3}
    assert lora["cited"] == [{"id": "p-lora", "title": PAPERS["p-lora"]}]
    assert records[3]["abstained"] is True


def test_a_failing_answerer_is_recorded_and_the_run_goes_on(flawed_run):
    out_dir, report = flawed_run
    _, records = load_run(out_dir)
    bert = records[-1]
    assert bert["error"] == "RuntimeError: llama.cpp server went away"
    assert bert["answer"] == bert["error"]
    assert bert["cited"] == [] and bert["abstained"] is False
    assert report["metrics"]["counts"]["errors"] == 1
    # resnet and vit cite their gold paper; bert failed.
    assert report["metrics"]["single_cited_gold"] == pytest.approx(2 / 3)


def test_report_json_has_every_metric(flawed_run):
    out_dir, report = flawed_run
    saved = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    assert set(saved) == {"config", "metrics", "created"}
    assert set(saved["metrics"]) == set(METRIC_KEYS) | {"counts"}
    assert saved["config"] == {"retrieval": {"k": 20}, "answerer": "x"}
    metrics = saved["metrics"]
    assert metrics["list_recall"] == 0.5 and metrics["list_precision"] == 1.0
    assert metrics["must_mention"] == 0.5
    assert metrics["abstain_accuracy"] == 1.0 and metrics["false_abstain_rate"] == 0.0
    assert metrics["counts"] == {"list": 1, "single": 3, "none": 1, "total": 5, "errors": 1}
    assert saved["metrics"] == report["metrics"]


def test_report_md_shows_goals_and_the_worst_questions(flawed_run):
    out_dir, _ = flawed_run
    text = (out_dir / "report.md").read_text(encoding="utf-8")
    goal = "≥ 0.95 at precision ≥ 0.80"
    assert f"| List recall (cited vs gold) (`list_recall`) | 0.500 | {goal} | missed |" in text
    assert "| Citations among retrieved (`citation_validity`) | 1.000 | = 1.00 | met |" in text
    worst = text.split("## Worst questions")[1]
    assert "`bert`" in worst and "RuntimeError: llama.cpp server went away" in worst
    assert "missing gold: 'QLoRA: Efficient Finetuning of Quantized LLMs'" in worst
    assert "missing must_mention: '88.55 %'" in worst
    assert "`alphafold`" not in worst and "`resnet`" not in worst
    assert "`retrieval.k`" in text


def test_plots_are_valid_pngs(flawed_run):
    out_dir, _ = flawed_run
    pngs = sorted(out_dir.glob("*.png"))
    assert [p.name for p in pngs] == ["latency.png", "recall_at_k.png", "score_by_kind.png"]
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert imread(png).shape[0] > 100


def test_compare_reports_shows_the_difference(tmp_path, questions, flawed_run):
    _, report_a = flawed_run
    report_b = run_questions(questions, scripted_ask(PERFECT), tmp_path / "run-b",
                             {"retrieval": {"k": 40}, "answerer": "x"}, progress=False)
    table = compare_reports(report_a, report_b)
    assert "| List recall (cited vs gold) (`list_recall`) | 0.500 | 1.000 | +0.500 |" in table
    assert "| Must-mention facts present (`must_mention`) | 0.500 | 1.000 | +0.500 |" in table
    assert "| questions: errors | 1 | 0 | -1 |" in table
    assert "| `retrieval.k` | 20 | 40 |" in table


def test_beir_markdown(tmp_path):
    path = tmp_path / "beir.md"
    write_beir_markdown({"ndcg_at_10": 0.3456, "recall_at_10": 0.5, "recall_at_100": 0.9, "mrr_at_10": 0.4,
                         "queries": 300, "queries_missing_from_run": 0}, path, dataset="scifact")
    text = path.read_text(encoding="utf-8")
    assert "scifact" in text and "| nDCG@10 (`ndcg_at_10`) | 0.346 |" in text and "300 judged queries" in text
