import pytest

from eval.report import chart, markdown


def table(text: str) -> dict[str, list[str]]:
    lines = [l for l in text.splitlines() if l.startswith("|")]
    return {l.split("|")[1].strip(): [c.strip() for c in l.split("|")[2:-1]] for l in lines[2:]}


def test_markdown_rows_and_missing_cells():
    a = {"families": {"mmlu": {"exact_match": 0.5, "exact_match (robustness)": 0.25}, "gsm8k": {"final_number_exact_match": 0.1}}}
    b = {"families": {"mmlu": {"exact_match": 0.75}}}
    text = markdown({"a": a, "b": b})
    assert text.splitlines()[0].startswith("|Benchmarks") and text.splitlines()[0].endswith("|a|b|")
    rows = table(text)
    assert rows["MMLU - EM"] == ["0.50", "0.75"] and rows["GSM8K - EM"] == ["0.10", "-"]
    assert rows["MMLU - EM (Robustness)"] == ["0.25", "-"]


def test_challenge_score_rows_between_runs():
    a = {"families": {"mmlu": {"exact_match": 0.5, "exact_match (robustness)": 0.25}, "gsm8k": {"final_number_exact_match": 0.1}}}
    b = {"families": {"mmlu": {"exact_match": 0.75}}, "config": {"limit": 5}, "skipped": [{"run": "sam_sum"}]}
    text = markdown({"a": a, "b": b})
    rows = table(text)
    # MMLU over 2 runs: b wins EM (1/2), a wins Robustness (1/2), both miss Fairness (a 2-way tie: 1/4 each)
    assert rows["MMLU - Win rate"] == ["0.25", "0.25"]
    assert rows["GSM8K - Win rate"] == ["0.50", "0.00!"]  # b has no GSM8K: last, so fatal
    assert rows["sam_sum - Win rate *"] == ["0.25", "0.25"]  # tied (missing) on all five metrics
    assert rows["Open score"][1] == "0.00!" and rows["Rank"] == ["1", "2"]
    assert "b: fewer instances" in text and "b: 1 runs skipped" in text and "! b:" in text
    assert "* not comparable" in text


def test_single_run_score_rows_and_chart(tmp_path):
    a = {"families": {"mmlu": {"exact_match": 0.5}, "truthfulqa": {"exact_match": 0.5}, "bbq": {"exact_match": 0.5},
                      "gsm8k": {"final_number_exact_match": 0.5}, "bigbench": {"exact_match": 0.5}}}
    rows = table(markdown({"a": a}))
    assert rows["Open score"] == ["0.50"] and rows["Closed score"] == ["0.00!"]
    assert rows["Challenge score"] == ["0.17"] and "Rank" not in rows and "MMLU - Win rate" not in rows
    png = chart({"a": a, "b": a}, tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
