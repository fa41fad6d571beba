from eval import gsm8k
from eval.helm import RequestState, Request, Instance, TEST


def test_reference_and_spec(shared_data):
    [(instances, spec)] = gsm8k.scenarios(shared_data).values()
    assert len(instances) == 7473 + 1319
    assert instances[0].references[0].endswith("The answer is 72.") and "\n" not in instances[0].references[0]
    assert spec.input_prefix == "Q: " and spec.output_prefix == "A: " and spec.stop_sequences == ("\n\n",)
    assert spec.max_tokens == 400


def test_score():
    state = RequestState(Instance("q", ("x = 5. The answer is 5.",), (0,), TEST), Request("p", 1, 0.0),
                         completion=" So 2+3=5. The answer is 5.")
    assert gsm8k.score(state) == {"final_number_exact_match": 1, "exact_match_indicator": 1, "exact_match": 0}
