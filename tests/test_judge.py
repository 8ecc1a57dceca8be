"""The judge on the real bundled corpus: complete list answers, abstention, exact-term retrieval.

Real components throughout: the session's bundled index (573 papers, the packaged embedding
model) opened through `PaperChat`, the way every front end uses it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paperchat.rag.chain import PaperChat
from paperchat.rag.judge import question_kind
from paperchat.rag.query import query_concepts, question_slots

DEV = Path(__file__).resolve().parent.parent / "eval" / "questions" / "dev.jsonl"
TUNE_FACTS = DEV.with_name("tune_facts.jsonl")


def dev_question(qid: str) -> dict:
    for line in DEV.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["id"] == qid:
            return record
    raise KeyError(qid)


@pytest.fixture(scope="module")
def chat(bundled_index):
    chat = PaperChat.open(bundled_index)
    yield chat
    chat.close()


@pytest.mark.parametrize(
    "qid",
    [
        "L01",  # "Which papers prune ResNet-50?"
        "L17",  # "... crowd counting?"
    ],
)
def test_a_list_question_names_every_gold_paper(chat, qid):
    record = dev_question(qid)
    sources = chat.search(record["question"])
    assert sources.kind == "list" and not sources.abstained
    named = {p.title for p in sources.matching}
    assert set(record["gold_titles"]) <= named
    assert len(named) <= 2 * len(record["gold_titles"])  # complete, not everything


def test_every_gold_paper_of_a_list_question_is_shown_as_a_match_or_possibly_related(chat):
    record = dev_question("L01")
    answer = chat.ask(record["question"], answerer="extractive")
    assert not answer.abstained
    shown = {c.title for c in answer.citations} | {c.title for c in answer.possibly_related}
    assert set(record["gold_titles"]) <= shown
    assert len(answer.citations) <= 2 * len(record["gold_titles"])


def test_the_answer_to_a_list_question_cites_every_gold_paper(chat):
    record = dev_question("L01")
    answer = chat.ask(record["question"], answerer="extractive")
    assert not answer.abstained
    assert set(record["gold_titles"]) <= {c.title for c in answer.citations}


@pytest.mark.parametrize(
    "question",
    [
        "What is a good recipe for sourdough bread?",  # off-topic
        "Which papers detect face-swap deepfake videos?",  # near miss: no abstract says deepfake
        pytest.param(
            "Which papers train deep reinforcement learning agents to play Atari games?",  # no "Atari"
            marks=pytest.mark.xfail(
                strict=True,
                reason="near misses are often answered: 36 % of the "
                "validate set's no-answer questions abstain (issue 10)",
            ),
        ),
    ],
)
def test_abstains_when_the_collection_does_not_cover_the_question(chat, question):
    answer = chat.ask(question, answerer="extractive")
    assert answer.abstained
    assert answer.citations == []


@pytest.mark.parametrize(
    "question",
    [
        "Which papers address traffic sign recognition?",
        "Are there papers about novel class discovery?",
        "What top-1 accuracy does MEAL V2 reach on ImageNet with a vanilla ResNet-50?",
    ],
)
def test_does_not_abstain_on_an_on_topic_question(chat, question):
    answer = chat.ask(question, answerer="extractive")
    assert not answer.abstained
    assert answer.citations


def test_a_single_fact_question_cites_its_paper_first(chat):
    record = dev_question("S01")
    sources = chat.search(record["question"])
    assert question_kind(record["question"]) == "single"
    assert [p.title for p in sources.matching] == record["gold_titles"]


def test_a_fact_question_that_first_describes_its_paper_is_answered_with_the_fact(chat):
    # "A blind-docking method combines … . Which state-of-the-art method …?" (eval/questions/tune_facts.jsonl)
    record = next(r for r in map(json.loads, TUNE_FACTS.read_text(encoding="utf-8").splitlines())
                  if r["id"] == "TI06")
    answer = chat.ask(record["question"], answerer="extractive")
    assert answer.kind == "single" and not answer.abstained  # not a list of every docking paper
    assert [c.title for c in answer.citations] == record["gold_titles"]
    assert all(fact in answer.text for fact in record["must_mention"])


@pytest.mark.parametrize(
    "term, qid",
    [
        ("NAS-Bench-201", "L02"),
        ("FP8", "L03"),
    ],
)
def test_an_exact_term_finds_the_papers_that_name_it(chat, term, qid):
    gold = set(dev_question(qid)["gold_titles"])
    sources = chat.search(f"Which papers use {term}?")
    assert gold <= {p.title for p in sources.retrieved}
    naming = {p.title for p in sources.retrieved if term.lower() in f"{p.title} {p.abstract}".lower()}
    assert len(naming & gold) >= 2  # the gold papers that spell it out (one L02 paper says only "NB201")
    assert naming <= {p.title for p in sources.matching}


def test_an_abbreviation_also_finds_the_papers_that_spell_it_out(chat):
    # "KD" is defined as "knowledge distillation (KD)" by papers of the collection; most KD papers
    # never write the abbreviation, and a question that uses it must still list them
    sources = chat.search("Which papers are about KD?")
    spelled_out = [p.title for p in sources.matching if "KD" not in f"{p.title} {p.abstract}"
                   and "knowledge distillation" in f"{p.title} {p.abstract}".lower()]
    assert len(spelled_out) >= 3, spelled_out


def test_the_quote_under_a_listed_paper_names_what_the_question_asks_for(chat):
    # the chat quotes the sentence that names the question's key concepts (here "KD" spelled out),
    # not the one that shares most words with the question ("In recent years, deep networks ...")
    from paperchat.ui.render import evidence_of

    sources = chat.search("Which papers are about KD?")
    spelled = [p for p in sources.matching if "knowledge distillation" in p.abstract.lower()]
    assert len(spelled) >= 3
    for paper in spelled:
        assert "knowledge distillation" in evidence_of(paper, sources.search_query).lower(), paper.title


def test_the_quote_under_a_listed_paper_adds_what_its_title_does_not_say(chat):
    # "Is Complexity Required for Neural Network Pruning?" says pruning; its quote should say ResNet-50,
    # not "Pruning neural networks has become popular …"
    from paperchat.ui.render import evidence_of

    sources = chat.search("Which papers prune ResNet-50?")
    titled = [p for p in sources.matching if "prun" in p.title.lower() and "resnet-50" not in p.title.lower()
              and "ResNet-50" in p.abstract]
    assert titled
    for paper in titled:
        assert "ResNet-50" in evidence_of(paper, sources.search_query), paper.title


def test_framing_words_are_not_concepts_and_compounds_keep_their_spellings():
    concepts = {
        c.text: c
        for c in query_concepts("Which papers report results on ResNet50 or ResNet-50 as their main subject?")
    }
    assert not {"report", "results", "main", "subject"} & set(concepts)
    assert "resnet50" in concepts["resnet-50"].spellings


def test_either_of_two_alternatives_is_enough_to_be_named(chat):
    crowd, traffic = dev_question("L17"), dev_question("L18")  # crowd counting; traffic sign recognition
    sources = chat.search("Which papers are about crowd counting or traffic sign recognition?")
    assert not sources.abstained
    named = {p.title for p in sources.matching}
    assert set(crowd["gold_titles"]) | set(traffic["gold_titles"]) <= named
    assert len(named) <= 2 * 4


def test_a_paper_that_spells_out_an_acronym_the_question_abbreviates_is_named(chat):
    gold = set(dev_question("L10")["gold_titles"])  # "sparse autoencoders (SAEs)"
    sources = chat.search("Which papers work with sparse autoencoders (SAEs) for interpretability?")
    spelled_out = {
        p.title
        for p in sources.retrieved
        if p.title in gold and "sae" not in p.abstract.lower() and "interpretab" in p.abstract.lower()
    }
    assert spelled_out  # the case this test is about exists in the corpus
    assert spelled_out <= {p.title for p in sources.matching}


@pytest.mark.parametrize(
    "question, slot",
    [
        ("Which papers study attacks on image classifiers or detectors?", "image classifiers | detectors"),
        (
            "Which papers study retrievers, rerankers or embedding models?",
            "retrievers | rerankers | embedding models",
        ),
        ("Are there papers on Kolmogorov-Arnold networks (KANs)?", "kolmogorov-arnold networks | kans"),
        (
            "Which papers use hypernetworks, i.e. networks that generate weights?",
            "hypernetworks | networks generate weights",
        ),
        ("Which papers study classification/detection?", "classification | detection"),
    ],
)
def test_alternatives_and_aliases_are_one_slot(question, slot):
    slots = [c.text for c in question_slots(query_concepts(question))]
    assert slot in slots
    assert not set(slot.replace("|", " ").split()) & set(slots)  # their terms are not demanded one by one
