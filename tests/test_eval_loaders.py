"""lit_gpt/eval_loaders.py on small files written here in each published layout (the real files: see
tests/test_decontaminate.py::test_eval_loaders_read_every_shared_set)."""

import json

import pytest

from lit_gpt.eval_loaders import DEFAULT_EVAL_SETS, EVAL_LOADERS, default_eval_sets
from lit_gpt.utils import UserError


def load(kind, path):
    return list(EVAL_LOADERS[kind](path))


def test_mmlu_reads_both_layouts_alike(tmp_path):
    (tmp_path / "orig").mkdir()
    (tmp_path / "mlilab").mkdir()
    (tmp_path / "orig/anatomy_dev.csv").write_text('What is it?,"one, two",b,c,d,B\nInflation,up,down,flat,none,D\n')
    (tmp_path / "mlilab/anatomy_dev.csv").write_text(
        'question,choice0,choice1,choice2,choice3,answer\nWhat is it?,"one, two",b,c,d,1\nInflation,up,down,flat,none,3\n')
    orig, mlilab = load("mmlu", tmp_path / "orig"), load("mmlu", tmp_path / "mlilab")
    assert [t for _, t in orig] == [t for _, t in mlilab]
    # the item first: the question with its options (a one-word question is no item on its own)
    assert orig[1][1] == ["Inflation\nup\ndown\nflat\nnone", "Inflation\nA. up\nB. down\nC. flat\nD. none", "Inflation"]
    (tmp_path / "orig/bad_test.csv").write_text("Q,a,b,c,d,7\n")
    with pytest.raises(UserError, match=r"bad_test.csv:1: answer '7' is not A-D"):
        load("mmlu", tmp_path / "orig")


def test_samsum_normalizes_line_ends(tmp_path):
    f = tmp_path / "test.csv"
    f.write_bytes(b'id,summary,dialogue\r\n13862856,"Hannah needs Betty\'s number.","Hannah: Hey\r\nAmanda: Lemme check"\r\n')
    assert load("samsum", tmp_path) == [("test.csv:13862856", ["Hannah: Hey\nAmanda: Lemme check", "Hannah needs Betty's number."])]
    (tmp_path / "test.csv").write_text("id,summary\n1,x\n")
    with pytest.raises(UserError, match="test.csv:1: a SAMSum CSV needs a 'dialogue' column"):
        load("samsum", tmp_path)


def test_ethics_reads_each_subset_layout(tmp_path):
    files = {
        "commonsense/cm_test.csv": "label,input,is_short,edited\n0,I told my baby I loved her.,True,False\n",
        "deontology/deontology_test_hard.csv": "label,scenario,excuse\n0,Aren't you painting?,No because it peeled.\n",
        "justice/justice_test.csv": "label,scenario\n1,I deserve a raise because I worked hard.\n",
        "virtue/virtue_test.csv": "label,scenario\n1,Martha was at ease with her. [SEP] trustful\n",
        "utilitarianism/util_test.csv": "I was approved.,I saw a car.\nI won.,I lost.\n",  # no header
        "justice/justice_train.csv": "label,scenario\n1,training data is not an evaluation set\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    got = dict(load("ethics", tmp_path))
    assert got == {
        "commonsense/cm_test.csv:2": ["I told my baby I loved her."],
        "deontology/deontology_test_hard.csv:2": ["Aren't you painting? No because it peeled.",
                                                  "Aren't you painting?\nExcuse: No because it peeled."],
        "justice/justice_test.csv:2": ["I deserve a raise because I worked hard."],
        "utilitarianism/util_test.csv:1": ["I was approved.\nI saw a car.", "I was approved.", "I saw a car."],
        "utilitarianism/util_test.csv:2": ["I won.\nI lost.", "I won.", "I lost."],
        "virtue/virtue_test.csv:2": ["Martha was at ease with her. [SEP] trustful", "Martha was at ease with her. "],
    }
    # a file given by name is read whatever it is called: the HELM fork's util.csv has a third column, label
    (tmp_path / "util.csv").write_text("scenario_1,scenario_2,label\nA good day.,A bad day.,0\n")
    assert [t for _, t in load("ethics", tmp_path / "util.csv")] == [["A good day.\nA bad day.", "A good day.", "A bad day."]]
    (tmp_path / "x_test.csv").write_text("foo,bar,baz,qux\n1,2,3,4\n")
    with pytest.raises(UserError, match=r"x_test.csv:1: not an ETHICS CSV layout"):
        load("ethics", tmp_path / "x_test.csv")
    (tmp_path / "justice/justice_test.csv").write_text("label,scenario\n1,fine\n0\n")
    with pytest.raises(UserError, match=r"justice_test.csv:3: expected 2 columns, got 1"):
        load("ethics", tmp_path / "justice")


def test_math_reads_jsonl_and_problem_files(tmp_path):
    rows = [{"problem": "Compute $\\dbinom{8}{4}$.", "level": "Level 1", "type": "Counting & Probability",
             "solution": "$\\boxed{70}$"},
            {"problem": "Solve $x+1=2$.", "level": "Level 3", "type": "Algebra", "solution": "$\\boxed{1}$"},
            {"problem": "Find $y$.", "level": "Level 5", "type": "Algebra", "solution": "$\\boxed{2}$"}]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "train/algebra").mkdir(parents=True)
    (tmp_path / "train/algebra/7.json").write_text(json.dumps(rows[0], indent=4))
    # the levels the challenge's MATH runs evaluate (1 and 5), the problem only
    assert load("math", tmp_path / "test.jsonl") == [("test.jsonl:1", ["Compute $\\dbinom{8}{4}$."]), ("test.jsonl:3", ["Find $y$."])]
    assert load("math", tmp_path / "train") == [("algebra/7.json", ["Compute $\\dbinom{8}{4}$."])]


def test_corr2cause_reads_its_published_schema(tmp_path):
    inputs = ["Premise: Suppose there is a closed system of 2 variables, A and B. All the statistical relations among "
              "these 2 variables are as follows: A correlates with B.\nHypothesis: A directly causes B.",
              "Premise: Suppose there is a closed system of 3 variables, A, B and C. A correlates with C. B correlates "
              "with C. However, A is independent of B.\nHypothesis: A directly causes C."]
    (tmp_path / "a.json").write_text(json.dumps([{"input": inputs[0], "label": 0}, {"input": inputs[1], "label": 1}]))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"input": t, "label": 0}) + "\n" for t in inputs))
    (tmp_path / "c.csv").write_text('label,input\n0,"' + inputs[0] + '"\n1,"' + inputs[1] + '"\n')
    for name in ("a.json", "b.jsonl", "c.csv"):
        assert [t for _, t in load("corr2cause", tmp_path / name)] == [[inputs[0]], [inputs[1]]], name
    (tmp_path / "d.jsonl").write_text('{"premise": "x"}\n')
    with pytest.raises(UserError, match=r"d.jsonl:1: a corr2cause record needs a string 'input'"):
        load("corr2cause", tmp_path / "d.jsonl")


def test_default_eval_sets_cover_the_ranking_and_skip_what_is_absent(tmp_path, capsys):
    assert set(DEFAULT_EVAL_SETS) == {"mmlu", "gsm8k", "truthfulqa", "bbq", "cnn_dailymail", "bigbench", "samsum",
                                      "ethics", "math", "corr2cause"}
    assert all(kind in EVAL_LOADERS for kind, _ in DEFAULT_EVAL_SETS.values())
    (tmp_path / "math").mkdir()
    (tmp_path / "math/test.jsonl").write_text('{"problem": "p", "solution": "s"}\n')
    found, missing = default_eval_sets(tmp_path)
    assert found == {"math": {"kind": "math", "paths": [tmp_path / "math/test.jsonl"]}}
    assert sorted(missing) == sorted(set(DEFAULT_EVAL_SETS) - {"math"})
    assert "evaluation set 'corr2cause' not found" in capsys.readouterr().err
