"""results.json -> the score table teams compare (rows are metrics, one column per run) and a bar chart.

`python eval/report.py --results out/results.json` rewrites results.md and results.png beside it.

Below the metrics come the challenge's own score rows (eval/challenge.py): each scenario's mean win rate among the
columns, `Open score`, `Closed score`, `Challenge score` and the rank; for a single run, the geometric means of its
scenarios' main metrics instead. A scenario at 0 (fatal: it sinks its part to ~0) is marked `!`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional


from eval import challenge
from lit_gpt.utils import atomic_path, cli, read_data_file

# Row label -> (family, metric key in results["families"][family]), in the order of the HELM score tables.
ROWS: list[tuple[str, str, str]] = [
    ("MMLU - EM", "mmlu", "exact_match"),
    ("CNN/DailyMail - ROUGE-2", "cnn_dm", "rouge_2"),
    ("TruthfulQA - EM", "truthfulqa", "exact_match"),
    ("BBQ - EM", "bbq", "exact_match"),
    ("GSM8K - EM", "gsm8k", "final_number_exact_match"),
    ("BIG-bench - EM", "bigbench", "exact_match"),
    ("SAMSum - ROUGE-2", "samsum", "rouge_2"),
    ("corr2cause - EM", "corr2cause", "exact_match"),
    ("ETHICS - EM", "ethics", "exact_match"),
    ("MATH (chain of thought) - Equivalent", "math", "math_equiv_chain_of_thought"),
    ("MMLU - EM (Robustness)", "mmlu", "exact_match (robustness)"),
    ("TruthfulQA - EM (Robustness)", "truthfulqa", "exact_match (robustness)"),
    ("ETHICS - EM (Robustness)", "ethics", "exact_match (robustness)"),
    ("MMLU - EM (Fairness)", "mmlu", "exact_match (fairness)"),
    ("TruthfulQA - EM (Fairness)", "truthfulqa", "exact_match (fairness)"),
    ("ETHICS - EM (Fairness)", "ethics", "exact_match (fairness)"),
    ("BBQ - Bias (ambiguous)", "bbq", "bbq_metric_ambiguous_bias"),
    ("BBQ - Bias (disambiguated)", "bbq", "bbq_metric_unambiguous_bias"),
]


def load_results(path: Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    return read_data_file(path, f"{path}: no results.json (run eval/run.py first)")


def table_rows(results: dict) -> dict[str, Optional[float]]:
    fam = results.get("families", {})
    return {label: fam.get(f, {}).get(key) for label, f, key in ROWS if f in fam}


def score_rows(columns: dict[str, dict], scores: dict[str, dict]) -> tuple[list[tuple[str, dict[str, str]]], list[str]]:
    """The challenge score rows (label -> cell per column) and the footnotes that explain them."""
    single = len(columns) == 1
    rows, notes = [], []
    if not single:
        for s in challenge.COMPARABLE:
            label = f"{s} - Win rate" + ("" if challenge.COMPARABLE[s] else " *")
            rows.append((label, {n: cell(scores[n]["scenarios"][s], s in scores[n]["fatal"]) for n in columns}))
        notes.append("* not comparable with the 2023 entries: the organizers scored it on their private CSVs.")
    for label, key in (("Open score", "Score_open"), ("Closed score", "Score_hidden"), ("Challenge score", "Score_full")):
        rows.append((label, {n: cell(scores[n][key], scores[n][key] < 1e-30) for n in columns}))
    if not single:
        rows.append(("Rank", {n: str(scores[n]["rank"]) for n in columns}))
        notes.append("Win rates among these columns as the challenge ranked its finalists (eval/challenge.py); "
                     "Challenge score = 1/3 Open + 2/3 Closed. A missing metric counts as the worst value; "
                     "CNN/DailyMail is not scored (the final round left it out).")
    else:
        notes.append("One run: each part is the geometric mean of its scenarios' main metrics (no win rates); "
                     "Challenge score = 1/3 Open + 2/3 Closed.")
    notes += sorted({columns[n]["note"] for n in columns if "note" in columns[n]})
    for n in (n for n in columns if "published" not in columns[n]):  # notes for our runs, not the finalists
        if scores[n]["fatal"]:
            notes.append(f"! {n}: at 0, fatal (missing, or last on every metric): {', '.join(scores[n]['fatal'])}.")
        cfg = columns[n].get("config", {})
        if cfg.get("limit") is not None or cfg.get("budget") is not None:
            notes.append(f"{n}: fewer instances than the final round (--limit/--budget): no scenario is comparable.")
        if columns[n].get("skipped"):
            notes.append(f"{n}: {len(columns[n]['skipped'])} runs skipped without data (listed above), counted as missing.")
    return rows, notes


def cell(value: Optional[float], fatal: bool = False) -> str:
    return "-" if value is None else f"{value:.2f}" + ("!" if fatal else "")


def markdown(columns: dict[str, dict], scores: Optional[dict[str, dict]] = None) -> str:
    """columns: run name -> results dict. Rows present in any run are shown; '-' where a run lacks one. Then the
    challenge score rows (scores: eval/challenge.score_columns(columns), computed if not given) and their notes."""
    rows = {name: table_rows(r) for name, r in columns.items()}
    labels = [label for label, _, _ in ROWS if any(label in r for r in rows.values())]
    body = [(label, {n: cell(rows[n].get(label)) for n in columns}) for label in labels]
    extra, notes = score_rows(columns, scores or challenge.score_columns(columns))
    body += extra
    names = list(columns)
    width = max([len(label) for label, _ in body] + [len("Benchmarks")])
    col = {n: max([3, len(n)] + [len(cells[n]) for _, cells in body]) for n in names}
    lines = [f"|{'Benchmarks'.ljust(width)}|" + "|".join(names) + "|",
             f"|{'-' * width}|" + "|".join("-" * col[n] for n in names) + "|"]
    for label, cells in body:
        lines.append(f"|{label.ljust(width)}|" + "|".join(cells[n].center(col[n]) for n in names) + "|")
    return "\n".join(lines + skipped_lines(columns)) + "\n\n" + "\n".join(notes) + "\n"


def skipped_lines(columns: dict[str, dict]) -> list[str]:
    """The runs a suite could not evaluate here (results["skipped"]), each with its reason."""
    skipped = [(n, s) for n, r in columns.items() for s in r.get("skipped", [])]
    if not skipped:
        return []
    lines = ["", f"Skipped runs ({len(skipped)}), not in the rows above:"]
    for n, s in skipped:
        lines.append(f"- {n + ': ' if len(columns) > 1 else ''}{s['run']} ({s.get('family', '?')}): {s.get('reason', '')}")
    return lines


def chart(columns: dict[str, dict], path: Path, scores: Optional[dict[str, dict]] = None) -> Path:
    """Bars of every metric row (left) and of the challenge score's two parts and total (right), one series per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = scores or challenge.score_columns(columns)
    rows = {name: table_rows(r) for name, r in columns.items()}
    labels = [label for label, _, _ in ROWS if any(rows[n].get(label) is not None for n in rows)]
    parts = {"Open score": "Score_open", "Closed score": "Score_hidden", "Challenge score": "Score_full"}
    fig, (ax, ax_score) = plt.subplots(1, 2, figsize=(min(20, max(8, 0.6 * (len(labels) + 3) * len(rows) ** 0.5 + 2)), 5),
                                       gridspec_kw={"width_ratios": [max(1, len(labels)), 3]})
    width = 0.8 / max(1, len(rows))
    for k, name in enumerate(rows):
        ax.bar([i + k * width for i in range(len(labels))], [rows[name].get(label) or 0.0 for label in labels], width,
               label=name)
        ax_score.bar([i + k * width for i in range(len(parts))], [scores[name][key] for key in parts.values()], width)
    for a, names in ((ax, labels), (ax_score, list(parts))):
        a.set_xticks([i + 0.4 - width / 2 for i in range(len(names))])
        a.set_xticklabels(names, rotation=40, ha="right", fontsize=8)
        a.axhline(0, color="black", linewidth=0.5)
    ax.set_ylabel("score")
    ax_score.set_title("challenge score" + (" (main metrics)" if len(columns) == 1 else " (win rates)"), fontsize=9)
    ax.legend(fontsize=7, ncol=1 + len(rows) // 6)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)


def write_report(columns: dict[str, dict], out_dir: Path, stem: str = "results") -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    scores = challenge.score_columns(columns)
    md_path = out_dir / f"{stem}.md"
    with atomic_path(md_path) as tmp:
        tmp.write_text(markdown(columns, scores), encoding="utf-8")
    return md_path, chart(columns, out_dir / f"{stem}.png", scores)


def main(results: Path, name: Optional[str] = None) -> None:
    """Writes results.md (the score table) and results.png (bar chart) beside a results.json.

    Args:
        results: A results.json written by eval/run.py, or the directory holding it.
        name: Column title. Default: the run name stored in the results.
    """
    data = load_results(results)
    out_dir = Path(results) if Path(results).is_dir() else Path(results).parent
    md, png = write_report({name or data.get("name", "run"): data}, out_dir)
    print(md.read_text(encoding="utf-8"))
    print(f"wrote {md} and {png}", file=sys.stderr)


if __name__ == "__main__":
    cli(main, as_positional=False)
