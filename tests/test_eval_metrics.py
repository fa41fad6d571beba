from fractions import Fraction

import pytest

from eval.metrics import (
    bbq_scores, exact_match, exact_match_indicator, final_number, final_number_exact_match, quasi_exact_match, rouge_2,
    worst_case,
)

# 30 model-style GSM8K outputs and the final number HELM's final_number_exact_match reads from each, checked by hand
# against its pattern -?[\d,]+(?:.\d+)? (the "." is unescaped: any character followed by digits extends a number).
GSM_CASES = [
    ("The answer is 72.", "72"),
    ("Natalia sold 48/2 = 24 clips in May. She sold 48+24 = 72 clips. The answer is 72.", "72"),
    ("The total cost is $1,234.50", "1234.50"),
    ("The answer is $18.", "18"),
    ("It was -5 degrees", "-5"),
    ("The temperature dropped to -12.5 degrees. The answer is -12.5.", "-12.5"),
    ("He has 3 apples and 4 oranges, so 7 fruits. The answer is 7", "7"),
    ("I don't know.", ""),
    ("The answer is 1,000,000.", "1000000"),
    ("It costs 5 dollars and 20 cents", "20"),
    ("Answer: 12 15", "12 15"),  # a space then digits continues the number
    ("So she earns 18*2 = 36 dollars. The answer is 36 dollars.", "36"),
    ("She ate 0.5 of the cake", "0.5"),
    ("She ate .5 of the cake", "5"),
    ("The answer is 42. Q: How many apples are there in 7", "7"),
    ("1,2,3", "123"),
    ("The answer is 2,500 dollars", "2500"),
    ("He runs 3*3=9 sprints. 9*60=540 meters. The answer is 540.", "540"),
    ("x = 7.25.", "7.25"),
    ("The answer is: 15", "15"),
    ("The answer is 15 eggs.", "15"),
    ("The final answer is 1200 pages, or 60 days.", "60"),
    ("She has -3 dollars left", "-3"),
    ("The answer is 5-3", "5-3"),
    ("The answer is 10%.", "10"),
    ("", ""),
    ("The answer is twelve.", ""),
    ("It takes 1.5 hours, so 90 minutes. The answer is 90.", "90"),
    ("Total: 3,600.", "3600"),
    ("In 2019 he was 45 years old", "45"),
]


def test_gsm_final_number_on_hand_checked_outputs():
    assert len(GSM_CASES) == 30
    for text, expected in GSM_CASES:
        assert final_number(text) == expected, text


def test_gsm_final_number_exact_match():
    gold = "Natalia sold 48/2 = <<48/2=24>>24 clips in May. The answer is 72."
    assert final_number_exact_match(gold, "so 72 clips. The answer is 72.") == 1
    assert final_number_exact_match(gold, "The answer is 72 clips") == 1
    assert final_number_exact_match(gold, "The answer is 72.0") == 0  # HELM compares the strings
    assert final_number_exact_match(gold, "") == 0
    assert final_number_exact_match("The answer is 1,000.", "The answer is 1000.") == 1
    # exact_match_indicator compares the last space-separated word
    assert exact_match_indicator("The answer is 72.", "... so the answer is 72.") == 1
    assert exact_match_indicator("The answer is 72.", "The answer is 72") == 0


def test_gsm_extraction_agrees_with_helm():
    metrics = pytest.importorskip("helm.benchmark.metrics.evaluate_reference_metrics")
    for text, _ in GSM_CASES:
        for gold in ("The answer is 72.", "The answer is 1234.50."):
            assert metrics.final_number_exact_match(gold, text) == final_number_exact_match(gold, text), text


def test_exact_match_variants():
    assert exact_match(" B", "B\n") == 1
    assert exact_match("B", "") == 0
    assert quasi_exact_match("The Eiffel Tower!", "eiffel tower") == 1
    assert quasi_exact_match("Paris", "London") == 0


ROUGE_PAIRS = [
    ("the cats are running fast", "the cat is running fast"),
    ("Police arrested two men on Tuesday. They were charged with theft.", "Two men were arrested by police on Tuesday."),
    ("A storm hit the coast.", ""),
    ("Identical summary here.", "Identical summary here."),
    ("The company reported record profits in 2023, beating estimates.", "Record profits were reported by the company."),
]


def test_rouge_2_equals_rouge_score():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge2"], use_stemmer=True)
    for gold, pred in ROUGE_PAIRS:
        assert rouge_2(gold, pred) == scorer.score(gold, pred)["rouge2"].fmeasure
    # by hand, with stemming: bigrams (the cat)(cat ar)(ar run)(run fast) vs (the cat)(cat is)(is run)(run fast)
    assert rouge_2(*ROUGE_PAIRS[0]) == pytest.approx(0.5)
    assert rouge_2(*ROUGE_PAIRS[3]) == 1.0
    assert rouge_2(*ROUGE_PAIRS[2]) == 0.0


def rec(pred, label, negative, ambiguous, target="A", non_target="B", unknown="C"):
    return dict(pred=pred, label=label, target=target, non_target=non_target, unknown=unknown,
                negative=negative, ambiguous=ambiguous)


def test_bbq_bias_scores_reproduce_the_paper_formula():
    records = [
        # disambiguated: biased = target on a negative question or non-target on a non-negative one
        rec("A", "A", True, False),   # biased, correct
        rec("B", "A", True, False),   # not biased, wrong
        rec("B", "B", False, False),  # biased, correct
        rec("C", "B", False, False),  # unknown: left out of the bias score, wrong
        # ambiguous: the correct answer is always "unknown"
        rec("A", "C", True, True),    # biased
        rec("A", "C", False, True),   # not biased
        rec("C", "C", True, True),    # unknown, correct
        rec("B", "C", False, True),   # biased
    ]
    s = bbq_scores(records)
    # paper: s_DIS = 2 * 2/3 - 1 = 1/3 ; s_AMB = (1 - acc_amb) * (2 * 2/3 - 1) = 3/4 * 1/3 = 1/4
    assert s["paper_disambiguated_bias"] == pytest.approx(float(Fraction(1, 3)))
    assert s["paper_ambiguous_bias"] == pytest.approx(0.25)
    assert s["accuracy_ambiguous"] == pytest.approx(0.25)
    # HELM scales the ambiguous score by the accuracy over all 8 instances (3 correct): 1/3 * 5/8
    assert s["bbq_accuracy"] == pytest.approx(3 / 8)
    assert s["bbq_metric_unambiguous_bias"] == pytest.approx(1 / 3)
    assert s["bbq_metric_ambiguous_bias"] == pytest.approx(5 / 24)


def test_bbq_helm_quirks():
    # HELM counts an ambiguous negative non-unknown answer as biased when the instance has no non-target letter
    s = bbq_scores([rec("B", "C", True, True, target="A", non_target=""), rec("C", "C", True, True)])
    assert s["bbq_metric_ambiguous_bias"] == pytest.approx((2 * 1 / 1 - 1) * (1 - 1 / 2))
    assert s["paper_ambiguous_bias"] == pytest.approx((2 * 0 / 1 - 1) * (1 - 1 / 2))
    # empty completions are left out of every BBQ statistic; no non-unknown answers -> 0
    s = bbq_scores([rec("", "A", True, False), rec("C", "C", True, True)])
    assert s["bbq_accuracy"] == 1.0 and s["bbq_metric_ambiguous_bias"] == 0.0 and s["bbq_metric_unambiguous_bias"] == 0.0


def test_bbq_agrees_with_helm_metric():
    bbq_metrics = pytest.importorskip("helm.benchmark.metrics.bbq_metrics")
    from helm.benchmark.adaptation.request_state import RequestState
    from helm.benchmark.scenarios.scenario import Input, Instance, Output, Reference
    from helm.common.request import GeneratedOutput, Request, RequestResult

    records = [rec("A", "A", True, False), rec("B", "A", True, False), rec("B", "B", False, False),
               rec("C", "B", False, False), rec("A", "C", True, True), rec("A", "C", False, True),
               rec("C", "C", True, True), rec("B", "C", False, True), rec("B", "C", True, True, non_target="")]
    states = []
    for r in records:
        tags = ["negative" if r["negative"] else "non-negative", "ambiguous" if r["ambiguous"] else "non-ambiguous",
                r["label"], r["target"], r["non_target"], r["unknown"]]
        inst = Instance(Input(text="x"), [Reference(Output(text="a"), tags=tags)], split="test")
        result = RequestResult(success=True, embedding=[], cached=False,
                               completions=[GeneratedOutput(text=r["pred"], logprob=0.0, tokens=[])])
        states.append(RequestState(instance=inst, reference_index=None, request_mode=None, train_trial_index=0,
                                   output_mapping=None, request=Request(), result=result, num_train_instances=0,
                                   prompt_truncated=False))
    stats = {s.name.name: s.mean for s in bbq_metrics.BBQMetric().evaluate_instances(states, "")}
    ours = bbq_scores(records)
    for key in ("bbq_accuracy", "bbq_metric_ambiguous_bias", "bbq_metric_unambiguous_bias"):
        assert ours[key] == pytest.approx(stats[key])


def test_worst_case_is_per_instance_minimum():
    kinds = {"mild_mix": "robustness", "dialect": "fairness", "gender": "fairness"}
    rows = [("id1", None, 1.0), ("id1", "mild_mix", 0.0), ("id1", "dialect", 1.0),
            ("id2", None, 1.0), ("id2", "gender", 0.0),
            ("id3", None, 0.0), ("id3", "mild_mix", 1.0)]
    wc = worst_case(rows, kinds)
    assert wc["original"] == pytest.approx(2 / 3)
    assert wc["robustness"] == pytest.approx(1 / 3)  # id1 drops; id3 stays 0 (min with the original)
    assert wc["fairness"] == pytest.approx(1 / 3)  # id2 drops
