import json

import pytest

from eval.math_equiv import get_answer, is_equiv, is_equiv_chain_of_thought, last_boxed_only_string, strip_string

# (reference solution, model completion, HELM's math_equiv_chain_of_thought), each worked out by hand from HELM's
# math_scenario.py: last \boxed{...} of each, then _strip_string on both, then string equality.
CASES = [
    (r"So $a+b=\boxed{10}$.", r"The difference is $\boxed{10}$.", 1.0),
    (r"$\boxed{10}$", r"The answer is 10.", 0.0),  # unboxed completion: no answer
    (r"$\boxed{\frac{1}{2}}$", r"so $p = \boxed{\dfrac{1}{2}}$", 1.0),  # dfrac -> frac
    (r"$\boxed{\frac{1}{2}}$", r"$\boxed{1/2}$", 1.0),  # a/b -> \frac{a}{b}
    (r"$\boxed{\frac{1}{2}}$", r"$\boxed{0.5}$", 1.0),  # 0.5 is special-cased
    (r"$\boxed{\frac{1}{2}}$", r"$\boxed{.5}$", 1.0),  # leading "." -> "0.5" -> \frac{1}{2}
    (r"$\boxed{\frac{1}{2}}$", r"$\boxed{\frac12}$", 1.0),  # \frac12 -> \frac{1}{2}
    (r"$\boxed{\frac{3}{4}}$", r"$\boxed{\tfrac34}$", 1.0),
    (r"$\boxed{2\sqrt{3}}$", r"$\boxed{2\sqrt3}$", 1.0),  # \sqrt3 -> \sqrt{3}
    (r"$\boxed{5}$", r"$\boxed{5 \text{ cm}}$", 1.0),  # a unit after "\text{ " is dropped
    (r"$\boxed{5}$", r"$\boxed{5\text{cm}}$", 0.0),  # ... only with the space
    (r"$\boxed{30^\circ}$", r"$\boxed{30}$", 1.0),
    (r"$\boxed{30}$", r"$\boxed{30^{\circ}}$", 1.0),
    (r"$\boxed{\$18.90}$", r"$\boxed{18.90}$", 1.0),  # \$ is dropped
    (r"$\boxed{25\%}$", r"$\boxed{25}$", 1.0),  # \% is dropped
    (r"$\boxed{5}$", r"$\boxed{x = 5}$", 1.0),  # a left side of at most 2 characters is dropped
    (r"$\boxed{5}$", r"$\boxed{xy = 5}$", 0.0),  # "xy " is 3
    (r"$\boxed{5}$", r"$\boxed{5.0}$", 0.0),  # no numeric comparison: a trailing .0 differs
    (r"$\boxed{(1,2)}$", r"$\boxed{(1, 2)}$", 1.0),  # spaces removed
    (r"$\boxed{\left( 1, 2 \right)}$", r"$\boxed{(1,2)}$", 1.0),  # \left and \right removed
    (r"$\boxed{5}$", r"First $\boxed{5}$, then $\boxed{6}$.", 0.0),  # the last box counts
    (r"$\boxed{6}$", r"I guessed $\boxed{5}$, but correcting: $\boxed{6}$.", 1.0),
    (r"$\boxed{\frac{1}{2}}$", r"so it is $\boxed{\frac{1}{2}$", 0.0),  # never closed: no answer
    (r"$\boxed{5}$", r"$\fbox{5}$", 0.0),  # \fbox is found but not unboxed: no answer
    (r"The answer is 5.", r"5", 1.0),  # neither has an answer: HELM counts them equivalent
    (r"$\boxed{10}$", r"", 0.0),
    ("$\\boxed{1\n0}$", r"$\boxed{10}$", 1.0),  # line breaks removed
    # two "\text{ " fail HELM's assert: the raw answers are compared instead (they differ in spacing)
    (r"$\boxed{2 \text{ m by } 3 \text{ m}}$", r"$\boxed{2\text{ m by }3\text{ m}}$", 0.0),
    (r"$\boxed{\$5}$", r"$\boxed{5 dollars}$", 0.0),
    (r"$\boxed{-\frac{2}{3}}$", r"$\boxed{-2/3}$", 0.0),  # becomes \frac{-2}{3}
    (r"$\boxed{\frac{2}{3}}$", r"$\boxed{2/3}$", 1.0),
    (r"$\boxed{3}$", r"$\boxed{03}$", 0.0),
    (r"$\boxed{0.25}$", r"$\boxed{.25}$", 1.0),
    (r"$\boxed{\text{(A)}}$", r"$\boxed{(A)}$", 0.0),  # "\text{(" has no space: kept
    (r"$\boxed{\frac{\sqrt{3}}{2}}$", r"$\boxed{\dfrac{\sqrt3}{2}}$", 1.0),
    (r"$\boxed{1,000}$", r"$\boxed{1000}$", 0.0),  # commas kept
    (r"$\boxed{x^2+2x+1}$", r"$\boxed{x^2 + 2x + 1}$", 1.0),
    (r"$\boxed{5}$", "We have $2+3=5$, so the answer is $\\boxed{5}$.\nProblem: next", 1.0),
    (r"$\boxed{5}$", r"$\boxed{\!5}$", 1.0),  # \! removed
    (r"$\boxed{\frac{1}{2}}$", r"$\boxed{\\frac{1}{2}}$", 1.0),  # \\ -> \
    (r"$\boxed{k = 3}$", r"$\boxed{3}$", 1.0),
    (r"$\boxed{5}$", r"$\boxed{\boxed{5}}$", 1.0),  # rfind: the inner box
    (r"$\boxed{\sqrt{2}}$", r"$\boxed{\sqrt}$", 0.0),  # \sqrt with nothing after: raw comparison
]


def test_math_equiv_on_hand_checked_outputs():
    assert len(CASES) >= 30
    for gold, pred, expected in CASES:
        assert is_equiv_chain_of_thought(gold, pred) == expected, (gold, pred)


def test_extraction_and_normalization():
    assert last_boxed_only_string(r"a $\boxed{\frac{1}{2}}$ b") == r"\boxed{\frac{1}{2}}"
    assert last_boxed_only_string(r"\boxed 5") is None
    assert get_answer(r"$\boxed 5$ and $\boxed{}$") == ""
    assert get_answer(None) is None
    assert strip_string(r"\frac1{72}") == r"\frac{1}{72}"
    assert strip_string(r"\frac1") == r"\frac1"  # too short: left as it was
    assert strip_string(r"\\\%%") == ""  # HELM removes \% twice
    assert is_equiv(None, None) == 1.0 and is_equiv("1", None) == 0.0


def test_math_equiv_agrees_with_helm():
    """The same cases through crfm-helm's own functions (in the HELM venv)."""
    math_scenario = pytest.importorskip("helm.benchmark.scenarios.math_scenario")
    for gold, pred, expected in CASES:
        assert math_scenario.is_equiv_chain_of_thought(gold, pred) == expected, (gold, pred)


def variants(answer: str) -> list[str]:
    """Model-style rewrites of a boxed answer, to compare both implementations on."""
    return [answer, answer.replace("\\frac", "\\dfrac"), answer.replace("{", "").replace("}", ""),
            answer.replace(" ", ""), " " + answer + " \\text{ units}", "x = " + answer, answer + "\\%",
            answer.replace("\\", "\\\\"), answer[:-1], "." + answer, answer + "/2", "\\sqrt" + answer[:1]]


def test_math_equiv_agrees_with_helm_on_every_shared_answer(shared_data):
    """Every MATH test solution against rewrites of its own answer: HELM's function and ours agree on all."""
    math_scenario = pytest.importorskip("helm.benchmark.scenarios.math_scenario")
    path = shared_data / "math" / "test.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    checked = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            gold = json.loads(line)["solution"]
            answer = get_answer(gold) or ""
            for v in variants(answer):
                pred = f"Thus the answer is $\\boxed{{{v}}}$."
                assert is_equiv_chain_of_thought(gold, pred) == math_scenario.is_equiv_chain_of_thought(gold, pred), pred
                checked += 1
    assert checked == 5000 * len(variants("x"))
