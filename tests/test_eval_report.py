from eval.report import markdown


def test_markdown_rows_and_missing_cells():
    a = {"families": {"mmlu": {"exact_match": 0.5, "exact_match (robustness)": 0.25}, "gsm8k": {"final_number_exact_match": 0.1}}}
    b = {"families": {"mmlu": {"exact_match": 0.75}}}
    lines = markdown({"a": a, "b": b}).splitlines()
    assert lines[0].startswith("|Benchmarks") and lines[0].endswith("|a|b|")
    rows = {l.split("|")[1].strip(): [c.strip() for c in l.split("|")[2:-1]] for l in lines[2:]}
    assert rows["MMLU - EM"] == ["0.50", "0.75"] and rows["GSM8K - EM"] == ["0.10", "-"]
    assert rows["MMLU - EM (Robustness)"] == ["0.25", "-"]
