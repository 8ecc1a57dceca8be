"""Which of a paper's sentences a fact answer quotes: the one that answers, not the one that only
matches the question's description of the paper."""

from paperchat.rag.answer import RetrievedPaper
from paperchat.rag.generate import source_quote
from paperchat.rag.sentences import best_sentences

RICE = ("Rice phenotyping from images helps breeders manage fields. "
        "Annotated rice field images are scarce because labelling is slow. "
        "We gathered nearly 50,000 ground-based images of rice fields from five rice-growing countries. "
        "From these, 3,078 representative samples were selected and labelled with six classes. "
        "Segmentation baselines struggle at the reproductive stage.")

GYN = ("Accurate segmentation of clinical target volumes (CTV) is crucial for brachytherapy planning. "
       "We present a multi-stage network pretrained with self-supervision on CT scans. "
       "Models were compared by the Dice similarity coefficient (DSC). "
       "It yielded a DSC of 0.837 for CTV and 0.940 for the bladder. "
       "Self-supervised pretraining improved every structure.")


def test_the_sentence_that_answers_is_chosen_over_the_one_that_restates_the_question():
    question = "How many annotated images ended up in the rice field dataset gathered across five countries?"
    chosen = " ".join(best_sentences(question, RICE, limit=2))
    assert "3,078" in chosen  # the description's sentence (50,000 images, five countries) alone misses it


def test_an_abbreviation_the_abstract_defines_matches_its_long_form():
    question = ("What Dice similarity score did the self-supervised brachytherapy network get on the "
                "clinical target volume?")
    assert "0.837" in " ".join(best_sentences(question, GYN, limit=2))


def test_a_which_question_prefers_the_sentence_that_names_something_new():
    abstract = ("We verify image classifiers against scratches and lighting changes. "
                "The search over each neighbourhood is exhaustive and layer by layer. "
                "We implement the techniques using Z3 and evaluate them on deep networks.")
    question = "Which solver is the exhaustive verification framework for image classifiers implemented with?"
    assert best_sentences(question, abstract, limit=1) == [
        "We implement the techniques using Z3 and evaluate them on deep networks."]


def test_a_how_question_about_a_method_does_not_chase_numbers():
    abstract = ("We stack two language model calls as layers of a network. "
                "The first layer's output is a latent variable, and both prompts are learnt jointly by "
                "variational inference. "
                "The two-layer network reaches 91.2% on 8 tasks.")
    question = "How are the two prompts of the stacked layers learnt jointly?"
    assert "variational inference" in best_sentences(question, abstract, limit=1)[0]


def test_the_quote_under_a_wrong_fact_answer_holds_the_papers_answer():
    paper = RetrievedPaper(id="rice", title="RiceSEG", score=1.0, rank=1, abstract=RICE)
    answer = "The dataset contains nearly 50,000 images [1]."
    quote = source_quote(answer, "How many annotated images are in the rice segmentation dataset?", paper,
                         {"rice": 1})
    assert quote.startswith("In the paper's words [1]:") and "3,078" in quote


def test_sentence_pick_reports_the_share_of_fact_questions_whose_facts_are_picked():
    from paperchat.eval.questions import Question
    from paperchat.eval.sentence_pick import coverage

    questions = [
        Question(id="r", question="How many annotated images are in the rice dataset from five countries?",
                 kind="single", gold_ids=["rice"], must_mention=["3,078"]),
        Question(id="g", question="What did the brachytherapy network pretrain on?", kind="single",
                 gold_ids=["gyn"], must_mention=["0.940"]),  # not what it asks: missed at every depth but 4
        Question(id="l", question="Which papers segment rice?", kind="list", gold_ids=["rice", "gyn"]),
    ]
    report = coverage(questions, {"rice": RICE, "gyn": GYN})
    assert report["questions"] == 2  # list questions have no facts to pick
    # the first sentence of each restates its question; the second adds the rice count; the fourth the bladder
    assert (report["top1"], report["top2"], report["top4"], report["missed"]) == (0.0, 0.5, 1.0, [])


def test_a_fact_answer_that_lost_the_papers_name_for_it_gets_the_papers_words():
    abstract = ("ConvNets are thought to fall behind Vision Transformers at web scale. "
                "We pre-train NFNets on JFT-4B, a large labelled dataset. "
                "After fine-tuning on ImageNet, they match Vision Transformers.")
    paper = RetrievedPaper(id="nf", title="NFNets at scale", score=1.0, rank=1, abstract=abstract)
    question = "What data were the NFNets pre-trained on?"
    quote = source_quote("The NFNets were pre-trained on ImageNet [1].", question, paper, {"nf": 1})
    assert "JFT-4B" in quote
    said = "The NFNets were pre-trained on JFT-4B and fine-tuned on ImageNet [1]."
    assert source_quote(said, question, paper, {"nf": 1}) == ""  # nothing the quote names is missing


def test_a_fact_answer_that_only_restates_the_question_gets_the_papers_words():
    abstract = ("We propose sparsemax, a sparse alternative to softmax. "
                "It comes with a convex loss function, which is related to the Huber classification loss.")
    paper = RetrievedPaper(id="sm", title="From Softmax to Sparsemax", score=1.0, rank=1, abstract=abstract)
    question = "The sparse replacement for softmax has a convex loss: which older loss is it related to?"
    quote = source_quote("The sparse replacement for softmax has a convex loss [1].", question, paper,
                         {"sm": 1})
    assert "Huber" in quote


def test_a_fact_answer_without_an_llm_quotes_the_answer_even_when_it_is_only_the_third_best_sentence():
    from paperchat.rag.answer import RetrievedPaper
    from paperchat.rag.extractive import extractive_answer
    from paperchat.rag.judge import Judgement

    abstract = ("Explanation methods for satellite image classifiers are compared in this study of "
                "explanation methods. The models were trained on the BigEarthNet and SEN12MS collections. "
                "We compare Grad-CAM, LIME and occlusion explanation methods on multi-label satellite image "
                "classifiers. Occlusion and Grad-CAM explanation methods were the most reliable for "
                "satellite image classifiers. We discuss what the explanation methods reveal about "
                "multi-label satellite image classifiers.")
    question = ("Which datasets did the study of explanation methods for multi-label satellite image "
                "classifiers use?")
    paper = RetrievedPaper(id="x", title="Explaining satellite image classifiers", score=1.0, rank=1,
                           abstract=abstract, matches=True)
    answer = extractive_answer(question, question, Judgement(kind="single", abstained=False, matching=[paper],
                                                             best_score=0.9), [paper])
    assert "BigEarthNet and SEN12MS" in answer.text and "[1]" in answer.text
    assert "We discuss what" not in answer.text  # the best few sentences, not the whole abstract
