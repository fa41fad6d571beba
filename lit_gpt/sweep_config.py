"""A sweep's config (scripts/sweep.py): the base model, shared finetune and eval settings, which steps to score, and
the arms. Every error names its key and is raised before any work starts.

    name: mixes-vs-steps              # optional; default: the config file's stem
    base: checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct
    out_dir: out/sweep/mixes-vs-steps # optional
    finetune: {micro_batch_size: 4, global_batch_size: 4, learning_rate: 2e-3, max_steps: 40}   # finetune/lora.py flags
    eval: {suite: full, budget: 100}  # eval/run.py flags
    score: {every: 20, last: true}    # or {steps: [10, 40]}
    arms:
      - {name: gsm8k, mix: examples/mix_gsm8k.yaml}
      - {name: oasst-long, mix: examples/mix_oasst.yaml, finetune: {max_steps: 80}}
      - {name: prepared, data_dir: data/my_mix}
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional


from lit_gpt.utils import UserError, config_path, read_yaml_config

ROOT = Path(__file__).resolve().parents[1]
TOP_KEYS = {"name", "base", "out_dir", "finetune", "eval", "score", "arms"}
ARM_KEYS = {"name", "mix", "data_dir", "finetune"}
SCORE_KEYS = {"every", "steps", "last"}
# Flags the sweep sets itself, per stage.
FINETUNE_RESERVED = {"checkpoint_dir", "data_dir", "out_dir", "resume", "save_interval"}
EVAL_RESERVED = {"checkpoint_dir", "server_url", "lora_path", "out", "name"}


@lru_cache(maxsize=None)
def script_flags(script: str, function: str) -> frozenset[str]:
    """The parameters of a script's entry function, read from its source (importing it would load torch); a
    `**kwargs` handed on as `f(**kwargs)` adds f's parameters (as jsonargparse resolves them), f in the script or
    imported from the project (`from lit_gpt import trainer` ... `trainer.run_flags(**kwargs)`)."""
    tree = ast.parse((ROOT / script).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            flags = {a.arg for a in node.args.args + node.args.kwonlyargs}
            if node.args.kwarg:
                for callee in _kwargs_callees(node, node.args.kwarg.arg):
                    flags |= script_flags(*_resolve(tree, script, callee))
            return frozenset(flags)
    raise RuntimeError(f"{script}: no function {function}()")


def _kwargs_callees(fn: ast.FunctionDef, kwarg: str) -> list[list[str]]:
    """The dotted names of the calls in `fn` that take `**kwarg`."""
    found = []
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and any(k.arg is None and isinstance(k.value, ast.Name) and k.value.id == kwarg
                                              for k in node.keywords):
            parts, f = [], node.func
            while isinstance(f, ast.Attribute):
                parts.insert(0, f.attr)
                f = f.value
            if isinstance(f, ast.Name):
                found.append([f.id, *parts])
    return found


def _resolve(tree: ast.Module, script: str, dotted: list[str]) -> tuple[str, str]:
    """(file, function) of a call's dotted name in `script` (parsed as `tree`), through its `from X import Y`s."""
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                if (a.asname or a.name) == dotted[0]:
                    if len(dotted) == 1:  # from pkg.mod import f; f(**kwargs)
                        return node.module.replace(".", "/") + ".py", a.name
                    return f"{node.module}.{a.name}".replace(".", "/") + ".py", dotted[1]  # from pkg import mod
    return script, dotted[0]  # defined in the script itself


def _check_flags(where: str, values: Any, script: str, function: str, reserved: set[str]) -> dict:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"{where}: must be a mapping of {script} flags")
    known = script_flags(script, function)
    for k in values:
        if k in reserved:
            raise UserError(f"{where}.{k}: set by the sweep itself, leave it out")
        if k not in known:
            raise UserError(f"{where}.{k}: not a flag of {script} (see python {script} --help)")
    return dict(values)


@dataclass
class Arm:
    name: str
    mix: Optional[Path] = None
    data_dir: Optional[Path] = None
    finetune: dict = field(default_factory=dict)

    def max_steps(self, cfg: "SweepConfig") -> int:
        return int({**cfg.finetune, **self.finetune}["max_steps"])

    def score_steps(self, cfg: "SweepConfig") -> list[int]:
        last = self.max_steps(cfg)
        if cfg.score["steps"] is not None:
            steps = set(cfg.score["steps"])
        elif cfg.score["every"] is not None:
            steps = set(range(cfg.score["every"], last + 1, cfg.score["every"]))
        else:
            steps = set()
        if cfg.score["last"]:
            steps.add(last)
        return sorted(s for s in steps if s <= last)

    def save_interval(self, cfg: "SweepConfig") -> int:
        """Checkpoints at every scored step (the run's last step is always saved)."""
        last = self.max_steps(cfg)
        inner = [s for s in self.score_steps(cfg) if s != last]
        return math.gcd(*inner) if inner else last

    def finetune_flags(self, cfg: "SweepConfig") -> dict:
        flags = {**cfg.finetune, **self.finetune, "save_interval": self.save_interval(cfg)}
        flags.setdefault("eval_interval", flags["save_interval"])  # a validation loss at each scored step
        return dict(sorted(flags.items()))


@dataclass
class SweepConfig:
    name: str
    base: Path
    out_dir: Path
    finetune: dict
    eval: dict
    score: dict
    arms: list[Arm]


def _positive_int(where: str, v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise UserError(f"{where}: must be a positive integer, got {v!r}")
    return v


def load_sweep_config(path: Path, out_dir: Optional[Path] = None) -> SweepConfig:
    raw = read_yaml_config(path, "sweep config")
    if not isinstance(raw, dict):
        raise UserError(f"{path}: must be a mapping with base, arms, ...")
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise UserError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(sorted(TOP_KEYS))})")
    d = path.parent
    if "base" not in raw:
        raise UserError(f"{path}: base: missing (the checkpoint dir every arm finetunes)")
    base = config_path(raw["base"], d)
    if not (base / "lit_model.pth").is_file():
        raise UserError(f"{path}: base: {str(base)!r} has no lit_model.pth")
    finetune = _check_flags(f"{path}: finetune", raw.get("finetune"), "finetune/lora.py", "setup", FINETUNE_RESERVED)
    eval_flags = _check_flags(f"{path}: eval", raw.get("eval"), "eval/run.py", "main", EVAL_RESERVED)
    for k in ("data_dir",):  # paths in the eval flags resolve like every other path in the config
        if k in eval_flags:
            eval_flags[k] = str(config_path(eval_flags[k], d))

    score = raw.get("score") if raw.get("score") is not None else {}
    if not isinstance(score, dict):
        raise UserError(f"{path}: score: must be a mapping (every, steps, last)")
    unknown = sorted(set(score) - SCORE_KEYS)
    if unknown:
        raise UserError(f"{path}: score.{unknown[0]}: unknown key (known: every, steps, last)")
    score = {"every": score.get("every"), "steps": score.get("steps"), "last": score.get("last", True)}
    if score["every"] is not None and score["steps"] is not None:
        raise UserError(f"{path}: score: give every (N) or steps ([N, ...]), not both")
    if score["every"] is not None:
        _positive_int(f"{path}: score.every", score["every"])
    if score["steps"] is not None:
        if not isinstance(score["steps"], list) or not score["steps"]:
            raise UserError(f"{path}: score.steps: must be a non-empty list of steps")
        for i, s in enumerate(score["steps"]):
            _positive_int(f"{path}: score.steps[{i}]", s)
    if not isinstance(score["last"], bool):
        raise UserError(f"{path}: score.last: must be true or false")
    if score["every"] is None and score["steps"] is None and not score["last"]:
        raise UserError(f"{path}: score: nothing to score (give every, steps or last: true)")

    arms_raw = raw.get("arms")
    if not isinstance(arms_raw, list) or not arms_raw:
        raise UserError(f"{path}: arms: must be a non-empty list")
    cfg = SweepConfig(
        name=str(raw.get("name") or path.stem), base=base, finetune=finetune, eval=eval_flags, score=score, arms=[],
        out_dir=Path(out_dir) if out_dir else config_path(raw.get("out_dir") or f"out/sweep/{raw.get('name') or path.stem}", d),
    )
    names = set()
    for i, a in enumerate(arms_raw):
        where = f"{path}: arms[{i}]"
        if not isinstance(a, dict):
            raise UserError(f"{where}: must be a mapping (name, mix or data_dir, finetune)")
        unknown = sorted(set(a) - ARM_KEYS)
        if unknown:
            raise UserError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(sorted(ARM_KEYS))})")
        name = a.get("name")
        if not isinstance(name, str) or not name or "/" in name or "@" in name:
            raise UserError(f"{where}.name: must be a non-empty name without '/' or '@'")
        where = f"{path}: arms[{i}] ({name})"
        if name in names:
            raise UserError(f"{where}.name: two arms are named {name!r}")
        names.add(name)
        if ("mix" in a) == ("data_dir" in a):
            raise UserError(f"{where}: give either mix (a prepare_mix.py config) or data_dir (a prepared dataset)")
        arm = Arm(name=name, finetune=_check_flags(f"{where}.finetune", a.get("finetune"), "finetune/lora.py",
                                                   "setup", FINETUNE_RESERVED))
        if "mix" in a:
            arm.mix = config_path(a["mix"], d)
            if not arm.mix.is_file():
                raise UserError(f"{where}.mix: {str(arm.mix)!r} does not exist")
        else:
            arm.data_dir = config_path(a["data_dir"], d)
            if not any(arm.data_dir.glob("train-*.pt")):
                raise UserError(f"{where}.data_dir: {str(arm.data_dir)!r} has no train-*.pt shards")
        merged = {**finetune, **arm.finetune}
        if "max_steps" not in merged:
            raise UserError(f"{where}.finetune.max_steps: missing (here or in finetune:); the sweep scores its steps")
        last = _positive_int(f"{where}.finetune.max_steps", merged["max_steps"])
        for s in score.get("steps") or []:
            if s > last:
                raise UserError(f"{where}: score.steps has step {s}, but this arm stops at max_steps {last}: "
                                "it will never be saved")
        if score["every"] and score["every"] > last and not score["last"]:
            raise UserError(f"{where}: score.every {score['every']} > max_steps {last} and last: false: "
                            "no step of this arm would be scored")
        cfg.arms.append(arm)
    return cfg
