import pytest

from eval import mmlu
from eval.helm import TEST, TRAIN, adapt, downsample_eval_instances, with_instance_ids


def test_subject_instances_and_prompt(shared_data):
    runs = mmlu.scenarios(shared_data)
    assert len(runs) == 57
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


def test_mlilab_dev_layout_reads_as_the_original(shared_data, tmp_path):
    """dev_mlilab/ (header, answers 0-3) gives the instances the original layout (no header, letters) would."""
    mlilab = shared_data / "mmlu" / "dev_mlilab" / "anatomy_dev.csv"
    rows = mlilab.read_text(encoding="utf-8").splitlines()
    assert rows[0] == "question,choice0,choice1,choice2,choice3,answer"
    import csv

    original = tmp_path / "anatomy_dev.csv"
    with open(mlilab, encoding="utf-8") as f, open(original, "w", encoding="utf-8", newline="") as g:
        reader = csv.reader(f)
        next(reader)
        csv.writer(g).writerows(row[:-1] + ["ABCD"[int(row[-1])]] for row in reader)
    assert mmlu.read_csv(mlilab, TRAIN) == mmlu.read_csv(original, TRAIN)
    instances = mmlu.load_subject(shared_data, "anatomy")
    assert [i.split for i in instances].count(TRAIN) == 5 and len(instances) == 5 + 135
    # the first anatomy dev question's answer is 3 -> D
    assert instances[0].correct == (3,) and instances[0].references[3] == "The second and third pharyngeal arches"


def test_mlilab_bad_answer_names_the_line(tmp_path):
    path = tmp_path / "x_dev.csv"
    path.write_text("question,choice0,choice1,choice2,choice3,answer\nq,a,b,c,d,1\nq2,a,b,c,d,7\n")
    with pytest.raises(ValueError, match="x_dev.csv:3: .*answer 0-3"):
        mmlu.read_csv(path, TRAIN)
