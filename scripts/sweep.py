"""The experiment loop: sweep data mixes and training lengths, score every chosen checkpoint on the challenge's
suites, and name the winner.

    python scripts/sweep.py --config examples/sweep_demo.yaml              # run (or continue) the sweep
    python scripts/sweep.py --config examples/sweep_demo.yaml --dry_run    # the plan and a time estimate

Each arm is a data mix (a `prepare_mix.py` config, or a prepared data dir) plus finetune overrides. For each arm the
sweep prepares the mix, trains with `finetune/lora.py`, and scores the chosen steps' LoRA checkpoints with
`eval/run.py --lora_path` (merged in memory: no merged copy on disk per checkpoint); the base model is scored once.
Every stage runs as its own process, its output appended to `OUT/logs/<arm>.log`.

Results are keyed by the exact settings that produced them (a digest of the config values, the files they name,
and the keys of the stages they build on), so a changed mix or flag reruns exactly what it affects, and a killed
sweep continues where it stopped when the same command runs again: a prepared mix and a score are published by a
rename once complete, and training resumes from its last checkpoint (`--resume auto`).

Writes `OUT/table.md` (rows: every metric of the suite plus the open, closed and challenge scores; columns: base and
each arm@step), `OUT/scores.png` (challenge score against steps, one line per arm, open and closed apart) and
`OUT/sweep.json`, and names the winner by the challenge score, beside the checkpoints that the open score alone and
the validation loss would have picked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import yaml

from lit_gpt.sweep_config import Arm, SweepConfig, load_sweep_config
from lit_gpt.utils import UserError, alias_config_flag, atomic_path, cli, write_json


wd = Path(__file__).parent.parent.resolve()
LORA_FILENAME = "lit_model.pth.lora"


# ---------------------------------------------------------------------------------------------------- cache keys
def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_identity(path: Path) -> list:
    """What a file or a dir's files are, as far as the cache cares: each file's path, size and modification time."""
    path = Path(path).resolve()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file())
    else:
        return [str(path), None]
    out = []
    for f in files:
        st = f.stat()
        out.append([str(f), st.st_size, st.st_mtime_ns])
    return out


def _paths_in(value: Any, base_dirs: tuple[Path, ...]) -> list[Path]:
    """Every string in a config that names an existing file or dir (relative to the working dir or the config's)."""
    if isinstance(value, dict):
        return [p for v in value.values() for p in _paths_in(v, base_dirs)]
    if isinstance(value, list):
        return [p for v in value for p in _paths_in(v, base_dirs)]
    if isinstance(value, str) and value and len(value) < 4096 and "\n" not in value:
        for d in base_dirs:
            p = d / value
            if p.exists():
                return [p]
    return []


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "qwen.tiktoken", "tokenizer_config.json")


def base_identity(base: Path) -> list:
    return [file_identity(base / name) for name in ("lit_model.pth", "model_config.yaml", *TOKENIZER_FILES)
            if (base / name).exists()]


def mix_key(arm: Arm, base: Path) -> str:
    """A mix's shards depend on its config, the data files it names and the base's tokenizer."""
    if arm.data_dir is not None:
        return digest("data_dir", file_identity(arm.data_dir))
    config = yaml.safe_load(arm.mix.read_text(encoding="utf-8"))
    files = _paths_in(config, (Path.cwd(), arm.mix.parent))
    return digest("mix", config, [file_identity(p) for p in files],
                  [file_identity(base / n) for n in TOKENIZER_FILES if (base / n).exists()])


def train_key(cfg: SweepConfig, arm: Arm, mkey: str) -> str:
    return digest("train", base_identity(cfg.base), mkey, arm.finetune_flags(cfg))


def score_key(cfg: SweepConfig, what: str) -> str:
    return digest("score", what, cfg.eval)


# ---------------------------------------------------------------------------------------------------- stages
def _flags(values: dict) -> list[str]:
    out = []
    for k, v in values.items():
        if v is None:
            continue
        out += [f"--{k}", ("true" if v else "false") if isinstance(v, bool) else str(v)]
    return out


def run_stage(title: str, script: str, flags: dict, log: Path) -> None:
    """One stage as its own process, its output appended to the arm's log; a failure names the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(wd / script), *_flags(flags)]
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {title}\n$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=Path.cwd(),
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
    if rc != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
        raise UserError(f"{title} failed (exit {rc}): {tail[0] if tail else ''} (full output in {log})")


class Sweep:
    """Where each stage's result lives, and whether it is already there."""

    def __init__(self, cfg: SweepConfig) -> None:
        self.cfg = cfg
        self.out = cfg.out_dir
        self.keys: dict[str, dict] = {}
        for arm in cfg.arms:
            mk = mix_key(arm, cfg.base)
            tk = train_key(cfg, arm, mk)
            self.keys[arm.name] = {"mix": mk, "train": tk}

    def data_dir(self, arm: Arm) -> Path:
        return arm.data_dir if arm.data_dir is not None else self.out / "mixes" / self.keys[arm.name]["mix"]

    def run_dir(self, arm: Arm) -> Path:
        return self.out / "runs" / f"{arm.name}-{self.keys[arm.name]['train']}"

    def lora_file(self, arm: Arm, step: int) -> Path:
        return self.run_dir(arm) / f"step-{step:06d}" / LORA_FILENAME

    def score_dir(self, label: str, key: str) -> Path:
        return self.out / "scores" / f"{label.replace('/', '_').replace('@', '-')}-{key}"

    def base_score(self) -> tuple[str, Path]:
        key = score_key(self.cfg, ["base", base_identity(self.cfg.base)])
        return key, self.score_dir("base", key)

    def arm_score(self, arm: Arm, step: int) -> tuple[str, Path]:
        key = score_key(self.cfg, ["arm", self.keys[arm.name]["train"], step])
        return key, self.score_dir(f"{arm.name}@{step}", key)

    def log(self, name: str) -> Path:
        return self.out / "logs" / f"{name}.log"

    # -- what is done
    def mix_done(self, arm: Arm) -> bool:
        return arm.data_dir is not None or (self.data_dir(arm) / "stats.json").is_file()

    def train_done(self, arm: Arm) -> bool:
        return (self.run_dir(arm) / "final" / LORA_FILENAME).is_file()

    def trained_steps(self, arm: Arm) -> int:
        steps = [int(p.name[5:]) for p in self.run_dir(arm).glob("step-*") if p.name[5:].isdigit()
                 and (p / LORA_FILENAME).is_file()]
        return max(steps, default=0)

    @staticmethod
    def score_done(path: Path) -> bool:
        return (path / "results.json").is_file()

    # -- doing it
    def prepare(self, arm: Arm) -> None:
        final = self.data_dir(arm)
        tmp = final.with_name(final.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)  # a killed run's half-written shards
        run_stage(f"{arm.name}: prepare_mix {arm.mix}", "scripts/prepare_mix.py",
                  {"config": arm.mix, "checkpoint_dir": self.cfg.base, "out_dir": tmp}, self.log(arm.name))
        os.replace(tmp, final)

    def train(self, arm: Arm) -> None:
        flags = {"checkpoint_dir": self.cfg.base, "data_dir": self.data_dir(arm), "out_dir": self.run_dir(arm),
                 **arm.finetune_flags(self.cfg), "resume": "auto"}
        run_stage(f"{arm.name}: finetune", "finetune/lora.py", flags, self.log(arm.name))

    def score(self, label: str, out: Path, log: Path, lora_path: Optional[Path] = None) -> None:
        tmp = out.with_name(out.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        flags = {"checkpoint_dir": self.cfg.base, "lora_path": lora_path, **self.cfg.eval, "name": label, "out": tmp}
        run_stage(f"{label}: eval", "eval/run.py", flags, log)
        os.replace(tmp, out)


# ---------------------------------------------------------------------------------------------------- reading back
def val_losses(run_dir: Path) -> dict[int, float]:
    """step -> validation loss from the finetune run's CSV logs (a resumed run adds a version dir; the last wins)."""
    import csv

    out: dict[int, float] = {}
    for f in sorted(run_dir.glob("logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1])):
        with open(f, encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if row.get("val_loss"):
                    out[int(float(row["step"]))] = float(row["val_loss"])
    return out


def load_throughput(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def record_throughput(path: Path, kind: str, units: float, seconds: float) -> None:
    """Measured seconds per training step and per eval request, for --dry_run's estimate."""
    if units <= 0:
        return
    data = load_throughput(path)
    prev = data.get(kind, {"units": 0.0, "seconds": 0.0})
    data[kind] = {"units": prev["units"] + units, "seconds": prev["seconds"] + seconds}
    write_json(data, path)


def _rate(data: dict, kind: str) -> Optional[float]:
    d = data.get(kind)
    return d["seconds"] / d["units"] if d and d["units"] else None


# ---------------------------------------------------------------------------------------------------- the sweep
def plan(sweep: Sweep) -> dict:
    """What is left to do, stage by stage, with the eval requests per scored checkpoint."""
    import contextlib
    import io

    from eval.run import main as eval_main

    cfg = sweep.cfg
    with contextlib.redirect_stdout(io.StringIO()):  # eval's own per-run listing
        requests = eval_main(checkpoint_dir=cfg.base, dry_run=True, **cfg.eval)["num_requests"]
    arms = []
    for arm in cfg.arms:
        steps = arm.score_steps(cfg)
        done_steps = sweep.trained_steps(arm) if not sweep.train_done(arm) else arm.max_steps(cfg)
        arms.append({
            "name": arm.name, "mix": str(arm.mix or arm.data_dir), "mix_cached": sweep.mix_done(arm),
            "max_steps": arm.max_steps(cfg), "steps_done": done_steps, "score_steps": steps,
            "scores_left": [s for s in steps if not sweep.score_done(sweep.arm_score(arm, s)[1])],
        })
    base_left = not sweep.score_done(sweep.base_score()[1])
    return {"arms": arms, "base_score_left": base_left, "requests_per_checkpoint": requests}


def print_plan(sweep: Sweep, p: dict) -> None:
    rates = load_throughput(sweep.out / "throughput.json")
    step_s, req_s = _rate(rates, "train_step"), _rate(rates, "eval_request")
    print(f"sweep {sweep.cfg.name}: base {sweep.cfg.base}, eval {json.dumps(sweep.cfg.eval)}")
    print(f"  {p['requests_per_checkpoint']} eval requests per scored checkpoint"
          f"{'; base not scored yet' if p['base_score_left'] else '; base scored'}")
    steps_left = reqs_left = 0
    for a in p["arms"]:
        left = a["max_steps"] - a["steps_done"]
        steps_left += left
        reqs_left += len(a["scores_left"]) * p["requests_per_checkpoint"]
        print(f"  arm {a['name']}: mix {a['mix']} ({'cached' if a['mix_cached'] else 'to prepare'}); "
              f"{a['max_steps']} steps ({left} to train); score steps {a['score_steps']} "
              f"({len(a['scores_left'])} to score)")
    reqs_left += p["requests_per_checkpoint"] if p["base_score_left"] else 0
    if step_s is None or req_s is None:
        print(f"  left: {steps_left} training steps, {reqs_left} eval requests; no time estimate until this sweep "
              "has measured a training step and an eval request")
    else:
        est = steps_left * step_s + reqs_left * req_s
        print(f"  left: {steps_left} training steps x {step_s:.2f}s + {reqs_left} eval requests x {req_s:.2f}s "
              f"~ {est / 3600:.1f} h (mix preparation not counted)")


def run(sweep: Sweep) -> dict:
    from tqdm import tqdm

    cfg = sweep.cfg
    p = plan(sweep)
    throughput = sweep.out / "throughput.json"
    units = 1 + sum(2 + len(a["score_steps"]) for a in p["arms"])
    columns: dict[str, Path] = {}
    with tqdm(total=units, desc="sweep", unit="stage", file=sys.stderr) as bar:
        key, path = sweep.base_score()
        if not sweep.score_done(path):
            bar.set_postfix_str("base: eval")
            t = time.perf_counter()
            sweep.score("base", path, sweep.log("base"))
            record_throughput(throughput, "eval_request", _num_requests(path), time.perf_counter() - t)
        columns["base"] = path
        bar.update(1)
        for arm in cfg.arms:
            if not sweep.mix_done(arm):
                bar.set_postfix_str(f"{arm.name}: prepare")
                sweep.prepare(arm)
            bar.update(1)
            if not sweep.train_done(arm):
                bar.set_postfix_str(f"{arm.name}: train")
                before, t = sweep.trained_steps(arm), time.perf_counter()
                sweep.train(arm)
                record_throughput(throughput, "train_step", sweep.trained_steps(arm) - before, time.perf_counter() - t)
            bar.update(1)
            for step in arm.score_steps(cfg):
                key, path = sweep.arm_score(arm, step)
                label = f"{arm.name}@{step}"
                if not sweep.score_done(path):
                    bar.set_postfix_str(f"{label}: eval")
                    lora = sweep.lora_file(arm, step)
                    if not lora.is_file():
                        raise UserError(f"{label}: {lora} was not saved (did --max_time stop the run early?)")
                    t = time.perf_counter()
                    sweep.score(label, path, sweep.log(arm.name), lora)
                    record_throughput(throughput, "eval_request", _num_requests(path), time.perf_counter() - t)
                columns[label] = path
                bar.update(1)
    return report(sweep, columns)


def _num_requests(score_dir: Path) -> int:
    return json.loads((score_dir / "results.json").read_text(encoding="utf-8")).get("num_requests", 0)


def challenge_scores(results: dict[str, dict]) -> dict[str, dict]:
    """label -> open, closed and challenge score: HELM's mean win rates among the sweep's columns (eval/challenge.py)."""
    from eval.challenge import score_columns

    scored = score_columns(results)
    return {c: {"open": v["Score_open"], "closed": v["Score_hidden"], "challenge": v["Score_full"],
                "fatal": v["fatal"]} for c, v in scored.items()}


def write_chart(summary: dict, path: Path) -> None:
    """Challenge, open and closed score against the training step: one line per arm, the base as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    columns = summary["columns"]
    for ax, (key, title) in zip(axes, (("challenge", "Challenge score"), ("open", "Open score"), ("closed", "Closed score"))):
        for arm, info in summary["arms"].items():
            steps = [s for s in info["score_steps"] if f"{arm}@{s}" in columns]
            ax.plot(steps, [columns[f"{arm}@{s}"][key] for s in steps], marker="o", label=arm)
        if "base" in columns:
            ax.axhline(columns["base"][key], color="grey", linestyle="--", label="base")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("score (win rates among the columns)")
    axes[-1].legend(loc="best", fontsize=8)
    fig.suptitle(f"sweep {summary['name']}: winner {summary['winner']}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def report(sweep: Sweep, columns: dict[str, Path]) -> dict:
    """table.md, scores.png and sweep.json from the scored columns."""
    from eval.report import load_results, write_report

    cfg = sweep.cfg
    results = {label: load_results(path) for label, path in columns.items()}
    scores = challenge_scores(results)
    losses = {}
    for arm in cfg.arms:
        vl = val_losses(sweep.run_dir(arm))
        for step in arm.score_steps(cfg):
            if step in vl:
                losses[f"{arm.name}@{step}"] = vl[step]
    checkpoints = [c for c in results if c != "base"]
    picks = {
        "challenge score": max(results, key=lambda c: scores[c]["challenge"]),
        "open score alone": max(results, key=lambda c: scores[c]["open"]),
        "validation loss": min(losses, key=losses.get) if losses else None,
    }
    summary = {
        "name": cfg.name, "base": str(cfg.base), "eval": cfg.eval,
        "columns": {c: {"results": str(p / "results.json"), **scores[c], "val_loss": losses.get(c),
                        "seconds": results[c].get("seconds")} for c, p in columns.items()},
        "arms": {a.name: {"keys": sweep.keys[a.name], "run_dir": str(sweep.run_dir(a)),
                          "data_dir": str(sweep.data_dir(a)), "score_steps": a.score_steps(cfg)} for a in cfg.arms},
        "winner": picks["challenge score"], "picks": picks,
        "beats_base": picks["challenge score"] != "base" and bool(checkpoints),
    }
    md, _ = write_report(results, sweep.out, stem="table")
    lines = ["", f"**Winner (challenge score): {picks['challenge score']}**"
             + ("" if summary["beats_base"] else " (no finetuned checkpoint beats the base)"),
             f"- open score alone would pick: {picks['open score alone']}",
             f"- validation loss would pick: {picks['validation loss'] or 'n/a (no validation set)'}"]
    disagree = {v for v in picks.values() if v} - {picks["challenge score"]}
    if disagree:
        lines.append(f"- they disagree: {', '.join(sorted(disagree))} would not be the challenge's pick")
    text = md.read_text(encoding="utf-8").rstrip("\n") + "\n" + "\n".join(lines) + "\n"
    with atomic_path(md) as tmp:
        tmp.write_text(text, encoding="utf-8")
    write_chart(summary, sweep.out / "scores.png")
    write_json(summary, sweep.out / "sweep.json")
    print(text)
    return summary


def main(sweep_config: Path, dry_run: bool = False, out_dir: Optional[Path] = None) -> dict:
    """Runs (or continues) a sweep, or with --dry_run prints its plan.

    Args:
        sweep_config: The sweep YAML (see examples/sweep_demo.yaml): base, finetune, eval, score, arms. Also
            accepted as --config.
        dry_run: Print the arms, training steps, eval requests and a time estimate (from the throughput this sweep
            has measured so far), then stop.
        out_dir: Overrides the config's out_dir.
    """
    cfg = load_sweep_config(Path(sweep_config), out_dir)
    sweep = Sweep(cfg)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    if dry_run:
        p = plan(sweep)
        print_plan(sweep, p)
        return p
    t0 = time.perf_counter()
    summary = run(sweep)
    print(f"sweep finished in {time.perf_counter() - t0:.0f}s: wrote {cfg.out_dir / 'table.md'}, "
          f"{cfg.out_dir / 'scores.png'}, {cfg.out_dir / 'sweep.json'}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    cli(main, as_positional=False, args=alias_config_flag(sys.argv[1:], "sweep_config"))
