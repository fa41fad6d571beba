from eval import bigbench
from eval.helm import MULTIPLE_CHOICE_JOINT, TEST, TRAIN, VALID


def test_splits_and_spec(shared_data):
    runs = bigbench.scenarios(shared_data)
    assert len(runs) == 35  # every task.json with examples in the shared data (MANIFEST)
    instances, spec = runs["big_bench:task=snarks"]
    n = len(instances)
    m = max(int(0.2 * n), 16)
    assert [sum(i.split == s for i in instances) for s in (TRAIN, TEST, VALID)] == [n - 2 * m, m, m]
    assert spec.method == MULTIPLE_CHOICE_JOINT and spec.max_tokens == 64 and spec.input_prefix == "Question: "
    assert all(len(i.correct) >= 1 for i in instances)
