"""The challenge's own score: how the NeurIPS 2023 LLM efficiency challenge ranked its finalists.

Defined as in the organizers' HELM fork (perlitz/private-helm, neurIPS_eval_scripts/): `ranking_metrics.py` (which
metrics make up each scenario), `rank_submissions.py` (mean win rates and the geometric mean) and `combin_ranks.py`
(the 1/3 open + 2/3 closed weighting). This module is our own code; eval/reference/README.md cites the commits.

- Win rate of a run on one metric: the runs it beats, over the number of runs compared (the run itself included,
  so the best of n gets (n-1)/n). The k runs tied on a value share 1/k of a win among them (the fork's stated rule,
  "the repeated values will get the same win-rate, which is 1/(n_repeats) + count(lower_rank)").
- A missing metric (scenario not run, metric not computed) counts as 0.0, or as 1000.0 where lower is better:
  the worst value, tied with every other run missing it.
- Scenario mean win rate: the mean over its metrics' win rates. Score_open and Score_hidden: the geometric means of
  their scenarios' mean win rates, a 0 replaced by the smallest float (so one scenario at 0 sinks the score to
  ~1e-65: "fatal"). Score_full = 1/3 Score_open + 2/3 Score_hidden.
- CNN/DailyMail is in neither part: ranking_metrics.py comments it out of the closed set and leaves it out of the
  open one, and the published A100 final scores are reproduced only without it.

The earlier rounds counted ties differently (`TIES`); tests/test_eval_challenge.py reproduces all three published
files in eval/reference/ from their per-metric values, each under its own rule.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Optional

from lit_gpt.utils import UserError

# Scenario -> [(HELM metric, lower is better)], as in the fork's ranking_metrics.py.
_ETHICS = ("justice", "commonsense", "virtue", "deontology", "utilitarianism")
OPEN: dict[str, list[tuple[str, bool]]] = {
    "MMLU": [("MMLU - EM", False), ("MMLU - EM (Robustness)", False), ("MMLU - EM (Fairness)", False)],
    "TruthfulQA": [("TruthfulQA - EM", False), ("TruthfulQA - EM (Robustness)", False),
                   ("TruthfulQA - EM (Fairness)", False)],
    "BIG-bench": [("BIG-bench - EM", False)],
    "GSM8K": [("GSM8K - EM", False)],
    "BBQ": [("BBQ - EM", False)],
}
CLOSED: dict[str, list[tuple[str, bool]]] = {
    "sam_sum": [("sam_sum - ROUGE-2", False)] + [(f"sam_sum - {kind} ({group})", True)
                                                 for kind in ("Stereotypes", "Representation")
                                                 for group in ("race", "gender")],
    "corr2cause": [("corr2cause - EM", False)],
    "MATH": [("MATH (chain-of-thoughts) - Equivalent (chain of thought)", False)],
    "ethics": [(f"ethics_{s} - EM{suffix}", False) for s in _ETHICS for suffix in ("", " (Robustness)", " (Fairness)")],
}
SCORED = [m for ms in {**OPEN, **CLOSED}.values() for m in ms]
OPEN_WEIGHT, CLOSED_WEIGHT = 1 / 3, 2 / 3
MISSING, MISSING_LOWER_IS_BETTER = 0.0, 1000.0
EPS = math.nextafter(0.0, math.inf)

# HELM metric -> (our family, our metric key in results.json). An ethics_<subset> metric is read from that
# subset's run (results["runs"]); the sam_sum bias metrics have no counterpart in eval/ (so they count as missing).
_PERTURBED = {"": "exact_match", " (Robustness)": "exact_match (robustness)", " (Fairness)": "exact_match (fairness)"}
OURS: dict[str, tuple[str, str]] = {
    **{f"MMLU - EM{s}": ("mmlu", k) for s, k in _PERTURBED.items()},
    **{f"TruthfulQA - EM{s}": ("truthfulqa", k) for s, k in _PERTURBED.items()},
    "BIG-bench - EM": ("bigbench", "exact_match"),
    "GSM8K - EM": ("gsm8k", "final_number_exact_match"),
    "BBQ - EM": ("bbq", "exact_match"),
    "CNN/DailyMail - ROUGE-2": ("cnn_dm", "rouge_2"),
    "sam_sum - ROUGE-2": ("samsum", "rouge_2"),
    "corr2cause - EM": ("corr2cause", "exact_match"),
    "MATH (chain-of-thoughts) - Equivalent (chain of thought)": ("math", "math_equiv_chain_of_thought"),
    **{f"ethics_{sub} - EM{s}": ("ethics", k) for sub in _ETHICS for s, k in _PERTURBED.items()},
}
# Scenarios on the same data and instance selection as the 2023 runs (public sets, HELM's seeded sampling; MATH is
# upstream HELM's scenario). sam_sum, corr2cause and ethics were scored on the organizers' private CSVs: our numbers
# there are not comparable with the finalists'. A run with fewer instances (--limit, --budget) is comparable nowhere.
COMPARABLE = {**{s: True for s in OPEN}, "sam_sum": False, "corr2cause": False, "MATH": True, "ethics": False}

# How each published round counted ties; only "final" is the challenge's score.
#   final:  the A100 final round. The k runs tied on a value share 1/k of a win, over n runs.
#   hidden: the 4090 closed round (rank_submissions.py's calc_win_rate loop): each tied run gets (k-1)/k, over n.
#   open:   the 4090 open round (the older sorted() ranking): ties broken by submission id order, over n-1.
TIES = ("final", "hidden", "open")
# The earlier rounds' metric groups (eval_metrics.py): the 4090 open round ranked by metric kind, the 4090 closed
# round by dataset with CNN/DailyMail still in it.
OPEN_ROUND = {
    "Accuracy": [(m, False) for m in ("MMLU - EM", "TruthfulQA - EM", "BBQ - EM", "GSM8K - EM", "BIG-bench - EM")],
    "Robustness": [("MMLU - EM (Robustness)", False), ("TruthfulQA - EM (Robustness)", False)],
    "Fairness": [("MMLU - EM (Fairness)", False), ("TruthfulQA - EM (Fairness)", False)],
}
HIDDEN_ROUND = {"CNN/DailyMail": [("CNN/DailyMail - ROUGE-2", False)] + [
    (f"CNN/DailyMail - {kind} ({group})", True) for kind in ("Stereotypes", "Representation") for group in ("race", "gender")],
    **CLOSED}

REFERENCE_DIR = Path(__file__).parent / "reference"
# Track -> the published files its finalists' metrics come from (the 4090 track's final round is not published:
# its finalists are the closed round's entries, with their open round metrics).
REFERENCE_FILES = {"a100": ["A100_full_ranks_final_round.json"],
                   "4090": ["4090_open_round_rank.json", "4090_hidden_round_rank.json"]}
REFERENCE_NOTES = {
    "a100": "The A100 finalists: their final round metrics (eval/reference/), win rates recomputed among all columns.",
    "4090": "The 4090 finalists: no final round was published, so their open and closed round metrics "
            "(eval/reference/), scored by the final round's rule among all columns; not their final standings.",
}


def win_rates(values: list[float], lower_is_better: bool = False, ties: str = "final") -> list[float]:
    """Each value's win rate among `values`: the values it beats, plus its share of a tie (see TIES)."""
    n = len(values)
    if ties == "open":  # rank in a sort on (value, position): the earlier of two tied values ranks lower
        order = sorted(range(n), key=lambda j: (values[j], j), reverse=lower_is_better)
        rates = [0.0] * n
        for pos, j in enumerate(order):
            rates[j] = pos / (n - 1) if n > 1 else 1.0
        return rates
    counts = {v: values.count(v) for v in values}
    share = {"final": lambda k: 1 / k if k > 1 else 0.0, "hidden": lambda k: (k - 1) / k}[ties]
    return [(sum(1 for w in values if (w > v if lower_is_better else w < v)) + share(counts[v])) / n for v in values]


def mean_win_rates(entries: dict[str, dict[str, Optional[float]]], scenarios: dict,
                   ties: str = "final") -> dict[str, dict[str, float]]:
    """entries: name -> {HELM metric: value or None}. Returns name -> {scenario: mean win rate among the entries}."""
    names = sorted(entries) if ties == "open" else list(entries)  # the open round read its files in name order
    out: dict[str, dict[str, float]] = {n: {} for n in entries}
    for scenario, metrics in scenarios.items():
        per_entry: dict[str, list[float]] = {n: [] for n in names}
        for metric, lower in metrics:
            missing = MISSING_LOWER_IS_BETTER if lower else MISSING
            values = [entries[n].get(metric) for n in names]
            # (the open round's script also took a 0.0 where lower is better for a value never filled in)
            values = [missing if v is None or (lower and v == 0.0 and ties == "open") else v for v in values]
            for n, r in zip(names, win_rates(values, lower, ties)):
                per_entry[n].append(r)
        for n in names:
            out[n][scenario] = statistics.mean(per_entry[n])
    return out


def geometric_mean(values: list[float]) -> float:
    """The fork's score of one part: a 0 becomes the smallest float, so it drags the whole part to ~0."""
    return statistics.geometric_mean([v if v > 0.0 else EPS for v in values]) if values else 0.0


def full_score(open_score: float, closed_score: float) -> float:
    return OPEN_WEIGHT * open_score + CLOSED_WEIGHT * closed_score


def rank(entries: dict[str, dict[str, Optional[float]]]) -> dict[str, dict]:
    """The final round's ranking of `entries` (name -> HELM metrics), best first: per entry its scenarios' mean win
    rates, Score_open, Score_hidden, Score_full and the scenarios at win rate 0 (`fatal`)."""
    if len(entries) < 2:
        raise ValueError("win rates need at least two entries; use main_metric_scores for one run")
    mwr_open, mwr_closed = mean_win_rates(entries, OPEN), mean_win_rates(entries, CLOSED)
    table = {}
    for n in entries:
        so, sh = geometric_mean(list(mwr_open[n].values())), geometric_mean(list(mwr_closed[n].values()))
        scenarios = {**mwr_open[n], **mwr_closed[n]}
        table[n] = {"scenarios": scenarios, "Score_open": so, "Score_hidden": sh, "Score_full": full_score(so, sh),
                    "fatal": [s for s, v in scenarios.items() if v == 0.0]}
    return dict(sorted(table.items(), key=lambda kv: kv[1]["Score_full"], reverse=True))


def main_metric_scores(metrics: dict[str, Optional[float]]) -> dict:
    """One run alone has no win rates: each part is the geometric mean of its scenarios' main metrics (the first
    listed; for ETHICS the mean of the five subsets' EM), a missing or 0 one fatal, weighted 1/3-2/3 as the final."""
    def main(scenario: str, metric_list) -> Optional[float]:
        if scenario == "ethics":
            ems = [metrics.get(m) for m, _ in metric_list if m.endswith(" - EM")]
            return None if any(v is None for v in ems) else statistics.mean(ems)
        return metrics.get(metric_list[0][0])

    scenarios = {s: main(s, ms) for s, ms in {**OPEN, **CLOSED}.items()}
    so = geometric_mean([scenarios[s] or 0.0 for s in OPEN])
    sh = geometric_mean([scenarios[s] or 0.0 for s in CLOSED])
    return {"scenarios": scenarios, "Score_open": so, "Score_hidden": sh, "Score_full": full_score(so, sh),
            "fatal": [s for s, v in scenarios.items() if not v]}


def helm_metrics(results: dict) -> dict[str, Optional[float]]:
    """Our results.json (eval/run.py) as the fork's HELM metric names; a published entry's are stored as they are."""
    if "helm_metrics" in results:
        return dict(results["helm_metrics"])
    families, runs = results.get("families", {}), results.get("runs", {})
    out: dict[str, Optional[float]] = {}
    for metric, (family, key) in OURS.items():
        value = families.get(family, {}).get(key)
        if family == "ethics":
            subset = metric.split(" - ")[0].removeprefix("ethics_")
            ethics_runs = {n: r for n, r in runs.items() if r.get("family") == "ethics"}
            if ethics_runs:  # per subset when the runs are there; a skipped subset is then missing
                value = next((r.get(key) for n, r in ethics_runs.items() if subset in n), None)
        out[metric] = value
    for metric, _ in SCORED:  # the sam_sum bias metrics: not computed by eval/, so missing
        out.setdefault(metric, None)
    return out


def reference(track: str) -> dict[str, dict]:
    """The published finalists of a track as results-like columns: short name -> {"name", "submission",
    "helm_metrics", "families", "published": the fork's own rows for it}."""
    if track not in REFERENCE_FILES:
        raise UserError(f"--reference {track!r}: choose from {', '.join(REFERENCE_FILES)}")
    rounds = [{name.removesuffix("_hidden"): row for name, row in load_reference(f)} for f in REFERENCE_FILES[track]]
    finalists = [n for n in rounds[-1] if all(n in r for r in rounds)]  # those who reached the last round
    helm_names = {m for m, _ in SCORED}
    out = {}
    for name in finalists:
        metrics = {m: v for r in rounds for m, v in r[name].items() if m in helm_names}
        short = short_name(name, finalists)
        out[short] = {"name": short, "submission": name, "published": [r[name] for r in rounds],
                      "helm_metrics": metrics, "families": families(metrics), "note": REFERENCE_NOTES[track]}
    return out


def load_reference(filename: str) -> list:
    """One published ranking file: [[submission id, {metric or score: value}], ...], best first."""
    return json.loads((REFERENCE_DIR / filename).read_text(encoding="utf-8"))


def families(metrics: dict[str, Optional[float]]) -> dict[str, dict[str, float]]:
    """HELM metrics back to results.json's families (our table rows); ETHICS as the mean of its subsets."""
    grouped: dict[tuple[str, str], list[float]] = {}
    for metric, (family, key) in OURS.items():
        if metrics.get(metric) is not None:
            grouped.setdefault((family, key), []).append(metrics[metric])
    out: dict[str, dict[str, float]] = {}
    for (family, key), values in grouped.items():
        out.setdefault(family, {})[key] = statistics.mean(values)
    return out


def short_name(name: str, others: list[str]) -> str:
    """A column title for a submission id (they run to 80 characters): its owner, and where the owner has several
    entries, the first word where this one's id parts from the most similar of them."""
    parts = name.split("_")
    common = 0
    for other in others:
        o = other.split("_")
        if other != name and o[0] == parts[0]:
            common = max(common, next((i for i, (a, b) in enumerate(zip(parts, o)) if a != b), min(len(parts), len(o))))
    return parts[0] if common == 0 or common >= len(parts) else f"{parts[0]}_{parts[common]}"


def score_columns(columns: dict[str, dict]) -> dict[str, dict]:
    """name -> results dict (ours or reference()) to name -> challenge scores: win rates among all the columns, or
    the main-metric geometric means for a single column."""
    entries = {n: helm_metrics(r) for n, r in columns.items()}
    if len(entries) == 1:
        (n, m), = entries.items()
        return {n: {**main_metric_scores(m), "single": True}}
    ranked = rank(entries)
    for i, n in enumerate(ranked):
        ranked[n]["rank"] = i + 1
    return ranked
