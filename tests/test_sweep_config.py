"""The sweep's config: every error names its key before any work starts; scored steps and save intervals."""

from pathlib import Path

import pytest
import yaml

from lit_gpt.sweep_config import load_sweep_config
from lit_gpt.utils import UserError


@pytest.fixture
def layout(tmp_path) -> Path:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "lit_model.pth").write_bytes(b"")
    (tmp_path / "mix_a.yaml").write_text("sources: [{prepare: jsonl, source: a.jsonl}]\n")
    (tmp_path / "mix_b.yaml").write_text("sources: [{prepare: jsonl, source: b.jsonl}]\n")
    return tmp_path


def write(layout: Path, **overrides) -> Path:
    cfg = {
        "base": str(layout / "base"),
        "finetune": {"max_steps": 40, "learning_rate": 1e-3},
        "eval": {"tasks": "mmlu", "limit": 2},
        "score": {"every": 20},
        "arms": [{"name": "a", "mix": "mix_a.yaml"}, {"name": "b", "mix": "mix_b.yaml", "finetune": {"max_steps": 60}}],
    }
    cfg.update(overrides)
    path = layout / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_steps_and_intervals(layout):
    cfg = load_sweep_config(write(layout))
    a, b = cfg.arms
    assert a.score_steps(cfg) == [20, 40] and b.score_steps(cfg) == [20, 40, 60]
    assert a.finetune_flags(cfg)["save_interval"] == 20 and a.finetune_flags(cfg)["eval_interval"] == 20
    assert b.finetune_flags(cfg)["max_steps"] == 60 and b.finetune_flags(cfg)["learning_rate"] == 1e-3
    assert cfg.name == "sweep" and cfg.out_dir == Path("out/sweep/sweep")
    assert a.mix == layout / "mix_a.yaml"  # relative to the config's dir

    cfg = load_sweep_config(write(layout, score={"steps": [12, 30]}))
    a, b = cfg.arms
    assert a.score_steps(cfg) == [12, 30, 40] and a.save_interval(cfg) == 6  # every scored step is saved
    cfg = load_sweep_config(write(layout, score={"steps": [30], "last": False}))
    assert cfg.arms[0].score_steps(cfg) == [30] and cfg.arms[0].save_interval(cfg) == 30
    cfg = load_sweep_config(write(layout, score=None))  # only the last step
    assert cfg.arms[1].score_steps(cfg) == [60]


@pytest.mark.parametrize("overrides, message", [
    ({"epochs": 3}, r"unknown key 'epochs'"),
    ({"finetune": {"max_steps": 40, "learning_rat": 1}}, r"finetune\.learning_rat: not a flag of finetune/lora\.py"),
    ({"finetune": {"max_steps": 40, "out_dir": "x"}}, r"finetune\.out_dir: set by the sweep itself"),
    ({"eval": {"suite": "full", "budgett": 3}}, r"eval\.budgett: not a flag of eval/run\.py"),
    ({"eval": {"lora_path": "x"}}, r"eval\.lora_path: set by the sweep itself"),
    ({"arms": [{"name": "a", "mix": "missing.yaml", "finetune": {"max_steps": 4}}]}, r"arms\[0\] \(a\)\.mix: .*does not exist"),
    ({"arms": [{"name": "a", "mix": "mix_a.yaml"}, {"name": "a", "mix": "mix_b.yaml"}]}, r"arms\[1\] \(a\)\.name: two arms are named 'a'"),
    ({"arms": [{"name": "a", "mix": "mix_a.yaml", "data_dir": "d"}]}, r"arms\[0\] \(a\): give either mix"),
    ({"arms": [{"name": "a", "mix": "mix_a.yaml", "lr": 1}]}, r"arms\[0\]\.lr: unknown key"),
    ({"arms": [{"name": "a", "mix": "mix_a.yaml", "finetune": {"max_steps": 30}}], "score": {"steps": [20, 35]}},
     r"score\.steps has step 35, but this arm stops at max_steps 30: it will never be saved"),
    ({"finetune": {}}, r"arms\[0\] \(a\)\.finetune\.max_steps: missing"),
    ({"score": {"every": 0}}, r"score\.every: must be a positive integer"),
    ({"score": {"every": 10, "steps": [10]}}, r"score: give every \(N\) or steps"),
    ({"score": {"evry": 10}}, r"score\.evry: unknown key"),
    ({"base": "nowhere"}, r"base: 'nowhere' has no lit_model\.pth"),
    ({"arms": []}, r"arms: must be a non-empty list"),
])
def test_config_errors_name_the_key(layout, overrides, message):
    with pytest.raises(UserError, match=message):
        load_sweep_config(write(layout, **overrides))


@pytest.mark.parametrize("script", ["finetune/lora.py", "finetune/dpo.py"])
def test_script_flags_read_from_source_are_the_cli_flags(script):
    """The flags the sweep accepts (read from the source, `**kwargs` followed into lit_gpt.trainer.run_flags) are
    exactly those jsonargparse gives the script."""
    import importlib

    from jsonargparse import ArgumentParser

    from lit_gpt.sweep_config import script_flags

    parser = ArgumentParser()
    parser.add_function_arguments(importlib.import_module(script[:-3].replace("/", ".")).setup)
    cli_flags = {a.dest for a in parser._actions if a.dest not in ("help", "config", "print_config")}
    assert script_flags(script, "setup") == cli_flags
    assert {"num_nodes", "max_time", "lora_r", "micro_batch_size"} <= cli_flags
