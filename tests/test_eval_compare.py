"""eval/compare.py on hand-written results.json files: columns, the challenge score rows, --reference."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from eval.compare import main as compare
from lit_gpt.utils import UserError

ROOT = Path(__file__).resolve().parents[1]


def results(tmp_path: Path, name: str, mmlu: float) -> Path:
    out = tmp_path / name
    out.mkdir()
    fam = {"mmlu": {"exact_match": mmlu, "exact_match (robustness)": mmlu, "exact_match (fairness)": mmlu},
           "gsm8k": {"final_number_exact_match": 0.3}}
    (out / "results.json").write_text(json.dumps({"name": name, "families": fam, "runs": {}}))
    return out


def rows(text: str) -> dict[str, list[str]]:
    lines = [l for l in text.splitlines() if l.startswith("|")]
    return {l.split("|")[1].strip(): [c.strip() for c in l.split("|")[2:-1]] for l in lines[2:]}


def test_two_runs_ranked_by_win_rates(tmp_path):
    base, tuned = results(tmp_path, "base", 0.3), results(tmp_path, "tuned", 0.6)
    text = compare(runs=f"{base},{tuned / 'results.json'}", out=tmp_path / "cmp")
    r = rows(text)
    assert text.splitlines()[0].endswith("|base|tuned|")
    assert r["MMLU - Win rate"] == ["0.00!", "0.50"] and r["GSM8K - Win rate"] == ["0.25", "0.25"]
    assert r["Rank"] == ["2", "1"] and r["Challenge score"][1] != "-"
    assert (tmp_path / "cmp" / "compare.png").is_file() and (tmp_path / "cmp" / "compare.md").read_text() == text


def test_reference_ranks_one_run_among_the_a100_finalists(tmp_path):
    run = results(tmp_path, "mine", 0.7)
    r = rows(compare(runs=str(run), out=tmp_path / "cmp", reference="a100"))
    assert len(r["Rank"]) == 10 and r["MMLU - Win rate"][0] == "0.90"  # best MMLU of the ten
    assert r["Rank"] == ["10"] + [str(i) for i in range(1, 10)]  # ours (fatal 4 times) last; the finalists in order
    assert r["MMLU - EM"][1] == "0.68"  # the finalists' metric values fill the rows


def test_reference_4090(tmp_path):
    run = results(tmp_path, "mine", 0.7)
    text = compare(runs=str(run), out=tmp_path / "cmp", reference="4090")
    r = rows(text)
    assert len(r["Rank"]) == 31 and r["MMLU - Win rate"][0] == "0.97"  # 0.7 beats all 30 on all three: 30/31
    assert "not their final standings" in text


def test_cli_errors(tmp_path):
    run = results(tmp_path, "percent", 0.7)
    with pytest.raises(UserError, match="clash"):
        compare(runs=str(run), out=tmp_path / "cmp", reference="a100")
    p = subprocess.run([sys.executable, str(ROOT / "eval" / "compare.py"), "--runs", str(run), "--reference", "h100",
                        "--out", str(tmp_path / "cmp")], capture_output=True, text=True)
    assert p.returncode == 2 and "choose from a100" in p.stderr and "Traceback" not in p.stderr
