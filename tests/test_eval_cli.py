"""`paperchat eval` end to end: the dev question set over the bundled index, and BEIR mode."""

from __future__ import annotations

import json
import re

from conftest import REPO, write_jsonl

from paperchat.ui.cli import main as cli


def test_eval_dev_set_writes_results_report_and_plots(bundled_index, tmp_path, capsys):
    out = tmp_path / "run"
    code = cli(["eval", str(REPO / "eval/questions/dev.jsonl"), "--out", str(out), "--llm", "extractive",
                "--index", str(bundled_index.store.index_dir), "--quiet"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    metrics = report["metrics"]
    for key in ("recall_at_5", "recall_at_10", "recall_at_20", "mrr", "ndcg_at_10", "list_recall",
                "list_precision", "single_cited_gold", "must_mention", "abstain_accuracy",
                "false_abstain_rate", "citation_validity", "latency_p50_s", "latency_p95_s"):
        assert key in metrics
    assert metrics["citation_validity"] == 1.0
    assert report["config"]["papers"] == 573 and report["config"]["corpus_hash"]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 46 and {"retrieved", "cited", "abstained", "latency_s"} <= set(records[0])
    assert re.search(r"\(`list_recall`\) \| [0-9.]+ \|", (out / "report.md").read_text())
    assert list(out.glob("*.png"))

    second = tmp_path / "run2"
    assert cli(["eval", str(REPO / "eval/questions/dev.jsonl"), "--out", str(second), "--llm", "extractive",
                "--index", str(bundled_index.store.index_dir), "--quiet", "-k", "3"]) == 0
    capsys.readouterr()
    assert cli(["eval", "compare", str(out), str(second)]) == 0
    assert "list_recall" in capsys.readouterr().out


def test_eval_refuses_a_gold_title_that_is_not_in_the_index(bundled_index, tmp_path, capsys):
    questions = write_jsonl(tmp_path / "q.jsonl", [
        {"id": "a", "question": "Which papers prune ResNet-50?",
         "gold_titles": ["Methods for Pruning Deep Neural Networks"]},
        {"id": "b", "question": "What about cats?", "gold_titles": ["A Paper That Does Not Exist"]},
    ])
    assert cli(["eval", str(questions), "--out", str(tmp_path / "o"), "--index",
                str(bundled_index.store.index_dir), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "q.jsonl:2" in err and "A Paper That Does Not Exist" in err


def test_eval_beir_scores_a_small_beir_folder(tmp_path, capsys):
    folder = tmp_path / "tiny-beir"
    (folder / "qrels").mkdir(parents=True)
    write_jsonl(folder / "corpus.jsonl", [
        {"_id": "d1", "title": "Aspirin and heart attacks",
         "text": "Daily aspirin lowers the risk of heart attack."},
        {"_id": "d2", "title": "Vitamin D and bones",
         "text": "Vitamin D supplements increase bone density in adults."},
        {"_id": "d3", "title": "Sleep and memory", "text": "Sleep deprivation impairs memory consolidation."},
    ])
    write_jsonl(folder / "queries.jsonl", [{"_id": "q1", "text": "aspirin prevents heart attacks"},
                                           {"_id": "q2", "text": "lack of sleep harms memory"},
                                           {"_id": "q3", "text": "unjudged query"}])
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\n")
    assert cli(["eval", "beir", str(folder), "--out", str(tmp_path / "beir-out"), "--quiet",
                "--index", str(tmp_path / "beir-index")]) == 0
    result = json.loads((tmp_path / "beir-out" / "beir.json").read_text())
    assert result["queries"] == 2 and result["corpus_papers"] == 3
    assert result["metrics"]["ndcg_at_10"] == 1.0 and result["metrics"]["recall_at_10"] == 1.0
    assert "ndcg_at_10" in capsys.readouterr().out
    assert "| nDCG@10 (`ndcg_at_10`) | 1.000 |" in (tmp_path / "beir-out" / "beir.md").read_text()


def test_bench_takes_its_options_as_written_with_or_without_a_double_dash(monkeypatch):
    from paperchat.eval import bench

    seen = []
    monkeypatch.setattr(bench, "main", lambda argv: seen.append(argv) or 0)
    assert cli(["bench", "--skip", "llm,answer", "--runs", "3"]) == 0
    assert cli(["bench", "--", "--quick"]) == 0
    assert seen == [["--skip", "llm,answer", "--runs", "3"], ["--quick"]]


def test_replayed_list_summaries_count_what_a_reader_would_see(bundled_index, tmp_path):
    # `python -m paperchat.eval.summaries replay`: recorded model text goes through today's checks
    from paperchat.eval.summaries import replay

    question = "Which papers prune ResNet-50?"
    records = write_jsonl(tmp_path / "record.jsonl", [
        {"id": "restated", "question": question, "raw": "The papers [1, 2, 3] prune ResNet-50.",
         "seconds": 1},
        {"id": "specific", "question": question, "raw": "[1] removes whole filters by their norm and keeps "
         "ImageNet accuracy.\n[2] measures how sleep length changes reaction times in 40 volunteers.",
         "seconds": 1},
        {"id": "abstained", "question": question, "raw": None, "seconds": 1}])
    figures = replay(records, bundled_index.store.index_dir)
    assert figures["questions"] == 2 and figures["summaries shown"] == 1
    assert figures["sentences"] == figures["specific sentences"] == figures["papers described"] == 1
    assert figures["copied"] == 0
