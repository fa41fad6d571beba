"""corr2cause requests equal what the challenge's HELM fork builds (perlitz/private-helm, worked out by hand from
src/helm/benchmark/scenarios/corr2cause_scenario.py @ 526af9c30d4834a613976a39f529eb0def27197a and run_specs.py
get_corr2cause_spec @ 12a854a42f2f95d7a4b6089abbbd545c6219f6b4, with configs/run_specs_final_full_eval.conf's
max_train_instances=1), on items written here in the published schema (the real test set is not offline)."""

import random
from dataclasses import replace

import pytest

from eval import corr2cause
from eval.helm import TRAIN, VALID, adapt, downsample_eval_instances, with_instance_ids

PREMISE2 = ("Premise: Suppose there is a closed system of 2 variables, A and B. All the statistical relations among "
            "these 2 variables are as follows: ")
PREMISE3 = ("Premise: Suppose there is a closed system of 3 variables, A, B and C. All the statistical relations "
            "among these 3 variables are as follows: A correlates with C. B correlates with C. However, A is "
            "independent of B.")
ROWS = [  # (label, input) in file order
    (1, PREMISE2 + "A correlates with B.\nHypothesis: A directly causes B."),
    (0, PREMISE2 + "A is independent of B.\nHypothesis: A directly causes B."),
    (0, PREMISE3 + "\nHypothesis: A is a cause of B."),
    (1, PREMISE3 + "\nHypothesis: C is a collider of A and B."),
    (0, "  " + PREMISE2 + "A correlates with B.\nHypothesis: B is independent of A.  "),
]


def write_csv(tmp_path, rows=ROWS, header="label,input"):
    path = tmp_path / "corr2cause" / "corr2cause.csv"
    path.parent.mkdir()
    body = "".join(f'{label},"{text}"\n' for label, text in rows)
    path.write_text(f"{header}\n{body}", encoding="utf-8")
    return tmp_path


def test_split_is_the_forks_seeded_shuffle(tmp_path):
    (instances, _), = corr2cause.scenarios(write_csv(tmp_path)).values()
    # The fork: random.seed(0); random.shuffle(data); the first int(0.8 * 5) = 4 are train.
    order = list(range(5))
    random.seed(0)
    random.shuffle(order)
    assert order == [2, 1, 0, 4, 3]
    assert [i.input for i in instances] == [ROWS[k][1].strip() for k in order]
    assert [i.split for i in instances] == [TRAIN] * 4 + [VALID]
    assert all(i.references == ("0", "1") for i in instances)
    assert [i.correct for i in instances] == [(ROWS[k][0],) for k in order]


def test_request_equals_the_forks(tmp_path):
    (instances, spec), = corr2cause.scenarios(write_csv(tmp_path)).values()
    spec = replace(spec, max_train_instances=1)  # the final conf's max_train_instances=1
    (state,) = adapt(spec, downsample_eval_instances(with_instance_ids(instances), 1250))
    # One in-context example: train labels are "0" x3, "1" x1, so label "0" comes first (most frequent) and
    # random.seed(0); randrange(3) = 1 picks the second "0" instance in train order (file row 1).
    assert random.Random(0).randrange(3) == 1
    expected = (
        "\nGiven a scenario with a premise and a hypothesis, determine if the hypothesis can be inferred from the premise.\n"
        "\n"  # format_instructions' newline
        "\n"  # instance_prefix
        "Scenario\n: " + PREMISE2 + "A is independent of B.\nHypothesis: A directly causes B.\n"
        "A. 0\nB. 1\nAnswer: A\n"
        "\n"
        "Scenario\n: " + PREMISE3 + "\nHypothesis: C is a collider of A and B.\n"
        "A. 0\nB. 1\nAnswer:"
    )
    assert state.request.prompt == expected
    assert state.num_train_instances == 1 and state.instance.id == "id4"
    # multiple_choice_joint: one greedy token, the top 5 logprobs, no stop sequence sent
    r = state.request
    assert (r.max_tokens, r.temperature, r.top_k_per_token, r.stop_sequences) == (1, 0.0, 5, ())
    assert state.output_mapping == {"A": "0", "B": "1"}
    state.completion = " B"
    assert corr2cause.score(state)["exact_match"] == 1.0
    state.completion = " A"
    assert corr2cause.score(state)["exact_match"] == 0.0


def test_absent_or_bad_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="corr2cause.csv"):
        corr2cause.scenarios(tmp_path)
    write_csv(tmp_path, rows=[(1, "x"), (2, "y")])
    with pytest.raises(ValueError, match="corr2cause.csv:3: label must be 0 or 1"):
        corr2cause.scenarios(tmp_path)


def test_columns_read_by_name(tmp_path):
    path = tmp_path / "corr2cause" / "corr2cause.csv"
    path.parent.mkdir()
    path.write_text("input,label,num_variables\nA causes B.,1,2\n", encoding="utf-8")
    (instances, _), = corr2cause.scenarios(tmp_path).values()
    assert [(i.input, i.correct, i.split) for i in instances] == [("A causes B.", (1,), VALID)]
    path.write_text("text,label\nA causes B.,1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"corr2cause.csv:1: missing column\(s\) \['input'\]"):
        corr2cause.scenarios(tmp_path)
