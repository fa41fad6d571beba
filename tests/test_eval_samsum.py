"""sam_sum requests equal what the challenge's HELM fork builds (perlitz/private-helm: sam_sum_scenario.py @
cc8ae7d85f12bf12e7b0568f24f31258a97ff0c2, run_specs.py get_sam_sum_spec @ 12a854a42f2f95d7a4b6089abbbd545c6219f6b4),
worked out by hand; its ROUGE is rouge-score's."""

import pytest

from eval import samsum
from eval.helm import VALID, adapt, downsample_eval_instances, with_instance_ids

CSV = (
    'id,summary,dialogue\r\n'
    '1,"Amanda will bring Jerry cookies.","Amanda: I baked cookies. Do you want some?\r\nJerry: Sure!\r\nAmanda: I\'ll bring you tomorrow :-)"\r\n'
    '2,"Olivia and Olivier are voting for liberals.","Olivia: Who are you voting for?\r\nOlivier: Liberals as always.\r\nOlivia: Me too!!"\r\n'
)


@pytest.fixture
def data(tmp_path):
    (tmp_path / "samsum").mkdir()
    (tmp_path / "samsum" / "test.csv").write_bytes(CSV.encode())
    (tmp_path / "samsum" / "val.csv").write_bytes(CSV.replace("1,", "3,", 1).encode())
    return tmp_path


def test_request_equals_the_forks(data):
    (instances, spec), = samsum.scenarios(data).values()
    assert len(instances) == 4 and all(i.split == VALID for i in instances)  # every row an eval instance
    states = adapt(spec, downsample_eval_instances(with_instance_ids(instances), 1250))
    assert len(states) == 4
    first = next(s for s in states if s.instance.id == "id0")
    # No train split, so zero in-context examples (max_train_instances=5 notwithstanding); the dialogue's \r\n -> \n.
    assert first.request.prompt == (
        "###\nArticle: Amanda: I baked cookies. Do you want some?\nJerry: Sure!\nAmanda: I'll bring you tomorrow :-)\n"
        "\n"
        "Summarize the above article in 1 sentence."
    )
    assert first.num_train_instances == 0
    r = first.request
    assert (r.max_tokens, r.temperature, r.stop_sequences, r.num_completions) == (128, 0.3, ("###",), 1)
    assert first.instance.references == ("Amanda will bring Jerry cookies.",)


def test_long_dialogue_is_cut_to_the_window(data):
    """The fork's scenario truncates nothing; HELM's adapter cuts the prompt from the right to fit the window."""
    long = "Tom: " + " ".join(f"w{i}" for i in range(500))
    (data / "samsum" / "test.csv").write_text(f'id,summary,dialogue\n9,"Tom talks.","{long}"\n', encoding="utf-8")
    (instances, spec), = samsum.scenarios(data, files=("samsum/test.csv",)).values()
    count = lambda text: len(text.split())  # noqa: E731  (a whitespace "tokenizer")
    truncate = lambda text, n: " ".join(text.split()[:n])  # noqa: E731
    (state,) = adapt(spec, with_instance_ids(instances), count, context_window=300, truncate=truncate)
    assert count(state.request.prompt) == 300 - 128
    assert state.request.prompt.startswith("### Article: Tom: w0 w1")


def test_rouge_is_rouge_score(data):
    from rouge_score import rouge_scorer

    (instances, spec), = samsum.scenarios(data).values()
    state = next(s for s in adapt(spec, with_instance_ids(instances)) if "Olivia" in s.instance.references[0])
    gold = state.instance.references[0]
    state.completion = " {Olivia and Olivier vote liberal, as they always do.}"
    scores = samsum.score(state)
    ref = rouge_scorer.RougeScorer(["rouge2"], use_stemmer=True).score(gold, "Olivia and Olivier vote liberal, as they always do.")
    assert scores["rouge_2"] == pytest.approx(ref["rouge2"].fmeasure) and 0 < scores["rouge_2"] < 1
    assert set(scores) == {"rouge_1", "rouge_2", "rouge_l"}


def test_absent_or_bad_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="test.csv"):
        samsum.scenarios(tmp_path)
    (tmp_path / "samsum").mkdir()
    (tmp_path / "samsum" / "test.csv").write_text("id,text\n1,x\n")
    (tmp_path / "samsum" / "val.csv").write_text("id,text\n1,x\n")
    with pytest.raises(ValueError, match=r"test.csv:1: missing column\(s\) \['dialogue', 'summary'\]"):
        samsum.scenarios(tmp_path)


def test_shared_samsum(shared_data):
    (instances, _), = samsum.scenarios(shared_data).values()
    assert len(instances) == 819 + 818
    assert instances[0].input.startswith("Hannah: Hey, do you have Betty's number?\nAmanda: Lemme check\n")
    assert not any("\r" in i.input or "\r" in i.references[0] for i in instances)
