"""Several eval runs side by side: one table column and one chart series per run, ranked by the challenge's score.

    python eval/compare.py --runs out/eval/base,out/eval/finetuned --out out/eval/compare
    python eval/compare.py --runs out/eval/finetuned --reference a100   # among the 2023 A100 finalists (or 4090)

The score rows below the metrics are the challenge's own (eval/challenge.py): each scenario's mean win rate among
the columns, the open and closed geometric means and 1/3 open + 2/3 closed, as the organizers ranked the finalists.
`--reference` adds a track's published finalists as columns, so even one run gets win rates and a rank.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional


from eval import challenge
from eval.report import load_results, write_report
from lit_gpt.utils import UserError, cli


def main(runs: str, out: Path = Path("out/eval/compare"), names: Optional[str] = None,
         reference: Optional[str] = None) -> str:
    """Writes compare.md and compare.png with one column per run.

    Args:
        runs: Comma-separated results.json files or the directories holding them (eval/run.py --out).
        out: Output directory.
        names: Comma-separated column titles, one per run. Default: each run's stored name (made unique).
        reference: "a100" or "4090": also the published finalists of that 2023 track (eval/reference/), as columns
            after ours; the win rates and ranks are then among all of them.
    """
    paths = [Path(p.strip()) for p in runs.split(",") if p.strip()]
    if not paths:
        raise UserError("--runs needs at least one results.json or directory")
    titles = [n.strip() for n in names.split(",")] if names else []
    if titles and len(titles) != len(paths):
        raise UserError(f"--names has {len(titles)} titles for {len(paths)} runs")
    columns: dict[str, dict] = {}
    for i, path in enumerate(paths):
        data = load_results(path)
        title = titles[i] if titles else data.get("name") or path.name
        while title in columns:  # two runs of the same checkpoint
            title = f"{title} ({path.name if path.is_dir() else path.parent.name})" if title == data.get("name") else f"{title}'"
        columns[title] = data
    if reference:
        finalists = challenge.reference(reference.lower())
        clash = sorted(set(finalists) & set(columns))
        if clash:
            raise UserError(f"--names {clash} clash with the {reference} finalists' columns: choose other titles")
        columns.update(finalists)
    md, png = write_report(columns, Path(out), stem="compare")
    text = md.read_text(encoding="utf-8")
    print(text)
    print(f"wrote {md} and {png}", file=sys.stderr)
    return text


if __name__ == "__main__":
    cli(main, as_positional=False)
