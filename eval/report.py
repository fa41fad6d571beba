"""results.json -> the score table teams compare (rows are metrics, one column per run) and a bar chart.

`python eval/report.py --results out/results.json` rewrites results.md and results.png beside it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

wd = Path(__file__).parent.parent.resolve()
sys.path.append(str(wd))

from lit_gpt.utils import UserError, atomic_path, cli  # noqa: E402

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
    if not path.is_file():
        raise UserError(f"{path}: no results.json (run eval/run.py first)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from e


def table_rows(results: dict) -> dict[str, Optional[float]]:
    fam = results.get("families", {})
    return {label: fam.get(f, {}).get(key) for label, f, key in ROWS if f in fam}


def markdown(columns: dict[str, dict]) -> str:
    """columns: run name -> results dict. Rows present in any run are shown; '-' where a run lacks one."""
    rows = {name: table_rows(r) for name, r in columns.items()}
    labels = [label for label, _, _ in ROWS if any(label in r for r in rows.values())]
    names = list(columns)
    width = max([len(label) for label in labels] + [len("Benchmarks")])
    lines = [f"|{'Benchmarks'.ljust(width)}|" + "|".join(names) + "|", f"|{'-' * width}|" + "|".join("-" * max(3, len(n)) for n in names) + "|"]
    for label in labels:
        cells = []
        for n in names:
            v = rows[n].get(label)
            cells.append(("-" if v is None else f"{v:.2f}").center(max(3, len(n))))
        lines.append(f"|{label.ljust(width)}|" + "|".join(cells) + "|")
    return "\n".join(lines + skipped_lines(columns)) + "\n"


def skipped_lines(columns: dict[str, dict]) -> list[str]:
    """The runs a suite could not evaluate here (results["skipped"]), each with its reason."""
    skipped = [(n, s) for n, r in columns.items() for s in r.get("skipped", [])]
    if not skipped:
        return []
    lines = ["", f"Skipped runs ({len(skipped)}), not in the rows above:"]
    for n, s in skipped:
        lines.append(f"- {n + ': ' if len(columns) > 1 else ''}{s['run']} ({s['family']}): {s['reason']}")
    return lines


def chart(columns: dict[str, dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {name: table_rows(r) for name, r in columns.items()}
    labels = [label for label, _, _ in ROWS if any(rows[n].get(label) is not None for n in rows)]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels) * max(1, len(rows)) ** 0.5 + 2), 4.5))
    width = 0.8 / max(1, len(rows))
    for k, name in enumerate(rows):
        xs = [i + k * width for i in range(len(labels))]
        ax.bar(xs, [rows[name].get(label) or 0.0 for label in labels], width, label=name)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))])
    ax.set_xticklabels(labels, rotation=40, ha="right", fontsize=8)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_ylabel("score")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)


def write_report(columns: dict[str, dict], out_dir: Path, stem: str = "results") -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    md_path = out_dir / f"{stem}.md"
    with atomic_path(md_path) as tmp:
        tmp.write_text(markdown(columns), encoding="utf-8")
    return md_path, chart(columns, out_dir / f"{stem}.png")


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
