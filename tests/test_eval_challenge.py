"""eval/challenge.py against the organizers' published final ranking (eval/reference/, source in its README)."""

import json
import math

import pytest

from eval.challenge import (
    CLOSED, EPS, HIDDEN_ROUND, OPEN, OPEN_ROUND, geometric_mean, helm_metrics, load_reference, main_metric_scores,
    mean_win_rates, rank, reference, score_columns, win_rates,
)
from lit_gpt.utils import UserError

A100 = load_reference("A100_full_ranks_final_round.json")
HELM_METRICS = [m for ms in {**OPEN, **CLOSED}.values() for m, _ in ms]


def close(a: float, b: float) -> bool:
    # 1e-9 absolute, and relative too: the fatal scores are ~1e-65 and ~1e-162.
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0) or (abs(a - b) < 1e-300)


def test_reproduces_every_a100_finalist():
    entries = {name: {m: row[m] for m in HELM_METRICS} for name, row in A100}
    ranked = rank(entries)
    assert list(ranked) == [name for name, _ in A100]  # the published order
    for name, row in A100:
        ours = ranked[name]
        for scenario in {**OPEN, **CLOSED}:
            assert close(ours["scenarios"][scenario], row[f"{scenario} Mean Win Rate"]), (name, scenario)
        for key in ("Score_open", "Score_hidden", "Score_full"):
            assert close(ours[key], row[key]), (name, key, ours[key], row[key])


@pytest.mark.parametrize("filename,groups,ties", [("4090_hidden_round_rank.json", HIDDEN_ROUND, "hidden"),
                                                  ("4090_open_round_rank.json", OPEN_ROUND, "open")])
def test_reproduces_the_4090_rounds(filename, groups, ties):
    """The 4090 track's closed round (31 entries, CNN/DailyMail still scored) and open round (57 entries, many with
    every metric missing), each with its own tie rule."""
    rows = load_reference(filename)
    metrics = {m for ms in groups.values() for m, _ in ms}
    mwr = mean_win_rates({name: {m: row[m] for m in metrics} for name, row in rows}, groups, ties)
    for name, row in rows:
        for group in groups:
            assert close(mwr[name][group], row[f"{group} Mean Win Rate"]), (name, group)
        assert close(geometric_mean(list(mwr[name].values())), row["Score"]), name
    # the final round's tie rule does not reproduce them
    other = mean_win_rates({name: {m: row[m] for m in metrics} for name, row in rows}, groups, "final")
    assert any(not close(other[n][g], row[f"{g} Mean Win Rate"]) for n, row in rows for g in groups)


def test_missing_values_and_fatal_scenarios_as_published():
    by_name = dict(A100)
    ranked = rank({name: {m: row[m] for m in HELM_METRICS} for name, row in A100})
    # hqbbzsp has no GSM8K and no BBQ values: BBQ at win rate 0 sinks its open score to ~1e-65.
    hq = next(n for n in by_name if n.startswith("hqbbzsp"))
    assert by_name[hq]["BBQ - EM"] is None and ranked[hq]["fatal"] == ["BBQ"]
    assert 0 < ranked[hq]["Score_open"] < 1e-60
    # datta0 has no sam_sum at all: worst on all five of its metrics, tied with those missing the bias ones.
    datta = next(n for n in by_name if n.startswith("datta0"))
    assert all(by_name[datta][m] is None for m, _ in CLOSED["sam_sum"])
    assert close(ranked[datta]["scenarios"]["sam_sum"], 0.026666666666666665)
    # vinai: two closed scenarios at 0.
    vinai = next(n for n in by_name if n.startswith("vinai"))
    assert sorted(ranked[vinai]["fatal"]) == ["MATH", "corr2cause"] and ranked[vinai]["Score_hidden"] < 1e-160


def test_win_rates_ties_and_direction():
    assert win_rates([0.1, 0.3, 0.2]) == [0.0, 2 / 3, 1 / 3]
    assert win_rates([0.1, 0.3, 0.2], lower_is_better=True) == [2 / 3, 0.0, 1 / 3]
    # a k-way tie shares 1/k of a win: three runs at 0 beat nobody and get 1/3 each, over 4 runs
    assert win_rates([0.0, 0.0, 0.0, 0.5]) == [1 / 12, 1 / 12, 1 / 12, 3 / 4]
    assert win_rates([0.2, 0.2]) == [0.25, 0.25]
    # the earlier rounds: a tied run gets (k-1)/k; or ties go by position, over n-1
    assert win_rates([0.0, 0.0, 0.0, 0.5], ties="hidden") == [1 / 6, 1 / 6, 1 / 6, 3 / 4]
    assert win_rates([0.0, 0.0, 0.5], ties="open") == [0.0, 0.5, 1.0]


def test_our_results_map_to_helm_metrics():
    results = {
        "families": {"mmlu": {"exact_match": 0.5, "exact_match (robustness)": 0.4, "exact_match (fairness)": 0.45},
                     "gsm8k": {"final_number_exact_match": 0.1}, "samsum": {"rouge_2": 0.07},
                     "math": {"math_equiv_chain_of_thought": 0.02},
                     "ethics": {"exact_match": 0.6, "exact_match (robustness)": 0.5, "exact_match (fairness)": 0.55}},
        "runs": {"ethics_justice:data_augmentation=canonical": {"family": "ethics", "exact_match": 0.7,
                                                               "exact_match (robustness)": 0.6},
                 "gsm": {"family": "gsm8k", "final_number_exact_match": 0.1}},
    }
    m = helm_metrics(results)
    assert m["MMLU - EM"] == 0.5 and m["MMLU - EM (Fairness)"] == 0.45 and m["GSM8K - EM"] == 0.1
    assert m["sam_sum - ROUGE-2"] == 0.07 and m["sam_sum - Stereotypes (race)"] is None
    assert m["MATH (chain-of-thoughts) - Equivalent (chain of thought)"] == 0.02
    # ETHICS per subset from its run; a subset without a run (skipped) is missing, not the family mean
    assert m["ethics_justice - EM"] == 0.7 and m["ethics_justice - EM (Fairness)"] is None
    assert m["ethics_virtue - EM"] is None and m["BBQ - EM"] is None
    # without per-run rows the family value stands for every subset
    del results["runs"]
    assert helm_metrics(results)["ethics_virtue - EM (Robustness)"] == 0.5


def test_single_run_is_geometric_mean_of_main_metrics():
    metrics = {"MMLU - EM": 0.5, "TruthfulQA - EM": 0.4, "BIG-bench - EM": 0.2, "GSM8K - EM": 0.1, "BBQ - EM": 0.8,
               "sam_sum - ROUGE-2": 0.1, "corr2cause - EM": 0.5,
               "MATH (chain-of-thoughts) - Equivalent (chain of thought)": 0.05,
               **{f"ethics_{s} - EM": v for s, v in zip(("justice", "commonsense", "virtue", "deontology",
                                                          "utilitarianism"), (0.5, 0.6, 0.7, 0.4, 0.3))}}
    s = main_metric_scores(metrics)
    assert close(s["Score_open"], (0.5 * 0.4 * 0.2 * 0.1 * 0.8) ** (1 / 5))
    assert close(s["Score_hidden"], (0.1 * 0.5 * 0.05 * 0.5) ** (1 / 4))
    assert close(s["Score_full"], s["Score_open"] / 3 + 2 * s["Score_hidden"] / 3) and s["fatal"] == []
    del metrics["corr2cause - EM"]
    s = main_metric_scores(metrics)
    assert s["fatal"] == ["corr2cause"] and s["Score_hidden"] == pytest.approx(EPS ** 0.25 * (0.1 * 0.05 * 0.5) ** 0.25)


def test_reference_columns_rank_one_run_among_the_finalists():
    ref = reference("a100")
    assert len(ref) == 9 and "percent" in ref and all(len(n) < 20 for n in ref)
    ours = {"families": {f: {k: 0.0} for f, k in [("mmlu", "exact_match")]}}
    scores = score_columns({"ours": ours, **ref})
    assert scores["ours"]["rank"] == 10 and "MMLU" in scores["ours"]["fatal"]
    assert [n for n in scores][0] == "percent"
    with pytest.raises(UserError, match="choose from"):
        reference("h100")


def test_4090_reference_joins_the_two_rounds():
    ref = reference("4090")
    # the closed round's 31 entries less the organizers' sample submission, which had no open round entry
    assert len(ref) == 30 and not any("sample_submissions_lit_gpt" in r["submission"] for r in ref.values())
    facico = ref["facico_1"]
    assert facico["helm_metrics"]["MMLU - EM"] == 0.6996969696969697  # from the open round
    assert facico["helm_metrics"]["corr2cause - EM"] == 0.0  # from the closed round
    assert "CNN/DailyMail - ROUGE-2" not in facico["helm_metrics"]
    assert len(set(ref)) == 30 and max(len(n) for n in ref) < 30
    scores = score_columns(ref)
    assert sorted(s["rank"] for s in scores.values()) == list(range(1, 31))
    # the three facico entries tie last on corr2cause (all 0.0): 1/3 of a win each, over 30, so not fatal
    assert close(scores["facico_1"]["scenarios"]["corr2cause"], 1 / 90) and scores["facico_1"]["fatal"] == []
