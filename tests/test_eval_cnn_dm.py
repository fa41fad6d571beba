from eval import cnn_dm
from eval.helm import TEST, TRAIN, RequestState, Request, Instance


def test_truncation_and_filter(shared_data):
    [(instances, spec)] = cnn_dm.scenarios(shared_data).values()
    train = [i for i in instances if i.split == TRAIN]
    assert train and all(50 <= len(i.input.split()) <= 150 for i in train)
    assert all(len(i.input.split()) <= 512 and "\n" not in i.input for i in instances if i.split == TEST)
    assert spec.max_tokens == 128 and spec.stop_sequences == ("###",) and spec.temperature == 0.3
    assert cnn_dm.clean_and_truncate("a\nb  c d", 3) == "a b c"


def test_score_is_rouge():
    inst = Instance("art", ("the cat sat on the mat",), (0,), TEST)
    state = RequestState(inst, Request("p", 1, 0.0), completion=" {the cat sat on the mat} ")
    assert cnn_dm.score(state)["rouge_2"] == 1.0
