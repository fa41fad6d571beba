from eval import bbq
from eval.helm import TEST


def test_letters_and_split(shared_data):
    instances, missing = bbq.load(shared_data)
    assert "Gender_identity" in missing
    assert sum(i.split == TEST for i in instances) == bbq.TEST_SIZE
    for inst in instances[:200]:
        negative, ambiguous, label, target, non_target, unknown, category = inst.tags
        assert unknown and label in "ABC" and "\nQuestion: " in inst.input
        if ambiguous:
            assert label == unknown


def test_answer_letters():
    row = {"answer_info": {"ans0": ["grandfather", "old"], "ans1": ["grandson", "nonOld"],
                           "ans2": ["Can't be determined", "unknown"]},
           "additional_metadata": {"stereotyped_groups": ["old"]}}
    assert bbq.answer_letters(row, "Age") == ("A", "B", "C")
