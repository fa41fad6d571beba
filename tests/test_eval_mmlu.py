import pytest

from eval import mmlu
from eval.helm import TEST, TRAIN, adapt, downsample_eval_instances, with_instance_ids


def test_subject_instances_and_prompt(shared_data):
    runs = mmlu.scenarios(shared_data)
    assert len(runs) == 17
    instances, spec = runs["mmlu:subject=philosophy"]
    assert [i.split for i in instances[:6]] == [TRAIN] * 5 + [TEST] and len(instances) == 5 + 311
    assert spec.max_tokens == 1 and spec.instructions.endswith("about philosophy.\n")
    state = adapt(spec, downsample_eval_instances(with_instance_ids(instances), 1))[0]
    assert state.request.prompt.startswith("The following are multiple choice questions (with answers) about philosophy.\n\nQuestion: ")
    assert state.request.prompt.endswith("\nAnswer:") and state.request.prompt.count("\nAnswer: ") == 5


def test_score_maps_letter_to_option(shared_data):
    instances, spec = mmlu.scenarios(shared_data, "philosophy")["mmlu:subject=philosophy"]
    state = adapt(spec, downsample_eval_instances(with_instance_ids(instances), 1))[0]
    right = "ABCD"[state.instance.correct[0]]
    state.completion = f" {right}"
    assert mmlu.score(state)["exact_match"] == 1
    state.completion = " E"
    assert mmlu.score(state)["exact_match"] == 0


def test_bad_csv_names_the_line(tmp_path):
    path = tmp_path / "x_test.csv"
    path.write_text('q,a,b,c,d,A\nq2,a,b,c,d,Z\n')
    with pytest.raises(ValueError, match="x_test.csv:2"):
        mmlu.read_csv(path, TEST)
