from eval import truthfulqa
from eval.helm import TRAIN, VALID


def test_instances_follow_helm(shared_data):
    [(name, (instances, spec))] = truthfulqa.scenarios(shared_data).items()
    assert name == "truthful_qa:task=mc_single" and spec.instructions == ""
    assert sum(i.split == TRAIN for i in instances) == 163 and sum(i.split == VALID for i in instances) == 654


def test_rotation_and_periods():
    row = {"question": " Q? ", "best_answer": "Best", "incorrect_answers": "x; y ;z."}
    inst = truthfulqa.instance(row, VALID)
    # refs = [x., y., z., Best.], rotated left by ord("B") % 4 = 2
    assert inst.references == ("z.", "Best.", "x.", "y.") and inst.correct == (1,) and inst.input == "Q?"
