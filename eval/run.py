"""Evaluate a checkpoint (or a challenge server) on the challenge's HELM tasks, offline.

    python eval/run.py --checkpoint_dir checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct \
        --tasks mmlu,truthfulqa,bbq,cnn_dm,gsm8k,bigbench --limit 20 --out out/eval/smollm2
    python eval/run.py --checkpoint_dir ... --suite full --budget 500 --out out/eval/smollm2_full
    python eval/run.py --checkpoint_dir BASE --lora_path RUN/step-000100/lit_model.pth.lora --backend vllm ...
    python eval/run.py --server_url http://127.0.0.1:8080,http://127.0.0.1:8081 ...

`--suite open|closed|full` runs the final ranking's exact HELM run entries (eval/suites.yaml, with their
max_eval_instances and perturbations; `--budget N` scales the instance counts to about N in all). A suite run whose
data is absent is listed under "skipped" in results.json and below the table, with the reason.

Writes <out>/results.json (every metric per run and per family), <out>/predictions.jsonl (one line per request),
<out>/results.md (the score table) and <out>/results.png (a bar chart).

Each family follows HELM's run specs (see the modules): the same prompts, in-context examples, eval instance
sampling (`--limit` is HELM's max_eval_instances: a seeded sample per run, the same for every model), stop
sequences, max tokens and metrics. MMLU, TruthfulQA and ETHICS also run HELM's canonical perturbations
(data_augmentation=canonical, as in the challenge's run specs) for the Robustness / Fairness rows, with HELM's own
word lists when <data_dir>/helm_perturbations has them.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Literal, Optional

from tqdm import tqdm

from eval import bbq, bigbench, cnn_dm, corr2cause, ethics, gsm8k, math_cot, mmlu, samsum, suites, truthfulqa
from eval.backends import HTTPBackend, InProcessBackend, mc_decided
from eval.helm import (
    EVAL_SPLITS, MULTIPLE_CHOICE_JOINT, NEURIPS_CONTEXT_WINDOW, adapt, downsample_eval_instances, with_instance_ids,
)
from eval.metrics import worst_case
from eval.perturbations import augment, canonical
from eval.report import write_report
from lit_gpt.utils import UserError, atomic_path, cli


wd = Path(__file__).parent.parent.resolve()
FAMILIES = {"mmlu": mmlu, "truthfulqa": truthfulqa, "bbq": bbq, "cnn_dm": cnn_dm, "gsm8k": gsm8k, "bigbench": bigbench,
            "samsum": samsum, "corr2cause": corr2cause, "ethics": ethics, "math": math_cot}
# The metric each family's robustness/fairness rows are computed on.
MAIN_METRIC = {"mmlu": "exact_match", "truthfulqa": "exact_match", "bbq": "exact_match", "cnn_dm": "rouge_2",
               "gsm8k": "final_number_exact_match", "bigbench": "exact_match", "samsum": "rouge_2",
               "corr2cause": "exact_match", "ethics": "exact_match", "math": "math_equiv_chain_of_thought"}
DEFAULT_TASKS = "mmlu,truthfulqa,bbq,cnn_dm,gsm8k,bigbench"
DEFAULT_PERTURBED = "mmlu,truthfulqa,ethics"
# HELM's own canonical-perturbation word lists, where the shared data has them (MANIFEST: helm_perturbations/).
HELM_MISSPELLINGS = "helm_perturbations/correct_to_misspelling.json"
HELM_DIALECT = "helm_perturbations/perturbations/dialect/SAE_to_AAVE_mapping.json"


def parse_list(value: str, known, what: str) -> list[str]:
    items = [t.strip() for t in value.split(",") if t.strip()]
    unknown = [t for t in items if t not in known]
    if unknown:
        raise UserError(f"unknown {what} {unknown}; choose from {', '.join(known)}")
    return items


def eval_instances(instances, limit, perturbations):
    """A run's eval instances as HELM's runner picks them: seeded max_eval_instances sampling, then perturbed copies."""
    instances = downsample_eval_instances(with_instance_ids(instances), limit)
    return augment(instances, perturbations) if perturbations else instances


def adapt_run(spec, instances, backend, context_window):
    """A run's request states, and for multiple-choice requests of several tokens the early stop that cannot change
    their score."""
    states = adapt(spec, instances, backend.count_tokens, context_window, backend.truncate)
    deciders = [
        mc_decided(s.output_mapping) if spec.method == MULTIPLE_CHOICE_JOINT and s.request.max_tokens > 1 else None
        for s in states
    ]
    return states, deciders


def score_run(name, family, states, completions, perturbations, pred_file):
    """Scores one HELM run's completions; returns its metrics."""
    module = FAMILIES[family]
    rows = []
    for s, c in zip(states, completions):
        s.completion = c
        scores = module.score(s)
        rows.append((s, scores))
        pred_file.write(json.dumps({
            "run": name, "id": s.instance.id, "perturbation": s.instance.perturbation, "completion": c,
            "num_train_instances": s.num_train_instances, **scores,
        }) + "\n")
    originals = [sc for s, sc in rows if s.instance.perturbation is None]
    metrics = {k: sum(sc[k] for sc in originals) / len(originals) for k in originals[0]} if originals else {}
    metrics["num_instances"] = len(originals)
    metrics["num_train_instances"] = sum(s.num_train_instances for s, _ in rows) / max(1, len(rows))
    if perturbations:
        kinds = {n: kind for n, (kind, _, _) in perturbations.items()}
        key = MAIN_METRIC[family]
        wc = worst_case([(s.instance.id, s.instance.perturbation, sc[key]) for s, sc in rows], kinds)
        metrics[f"{key} (robustness)"] = wc["robustness"]
        metrics[f"{key} (fairness)"] = wc["fairness"]
        metrics["num_perturbed_instances"] = sum(1 for s, _ in rows if s.instance.perturbation is not None)
    if hasattr(module, "summarize"):
        metrics.update(module.summarize([s for s, _ in rows]))
    return metrics


def evaluate_runs(jobs, backend, context_window, pred_file) -> dict[str, dict]:
    """jobs: (run name, family, eval instances, spec, perturbations). Every run's requests go to the backend in one
    batch (a suite's many small runs keep the engine's batch full; prompts sharing few-shot examples share the
    prefix cache), then each run is scored. Returns run name -> metrics."""
    adapted = []
    for name, family, instances, spec, perturbations in tqdm(jobs, desc="adapting", leave=False, file=sys.stderr):
        adapted.append((name, family, *adapt_run(spec, instances, backend, context_window), perturbations))
    requests = [s.request for _, _, states, _, _ in adapted for s in states]
    deciders = [d for _, _, _, ds, _ in adapted for d in ds]
    with tqdm(total=len(requests), desc="requests", unit="req", file=sys.stderr) as bar:
        completions = backend.complete(requests, bar.update, deciders)
    metrics, i = {}, 0
    for name, family, states, _, perturbations in adapted:
        metrics[name] = score_run(name, family, states, completions[i:i + len(states)], perturbations, pred_file)
        metrics[name]["num_requests"] = len(states)
        i += len(states)
    return metrics


class Skipped(Exception):
    """A suite run that cannot be evaluated here (its data or module is absent); the message says why."""


def family_loaders(data_dir: Path, mmlu_subjects: str, bigbench_tasks: str, temperature: float) -> dict:
    """family -> loader(selector=None) -> {run name: (instances, spec)}; a selector narrows what is read."""
    return {
        "mmlu": lambda sel=None: mmlu.scenarios(data_dir, sel or mmlu_subjects),
        "truthfulqa": lambda sel=None: truthfulqa.scenarios(data_dir),
        "bbq": lambda sel=None: bbq.scenarios(data_dir),
        "cnn_dm": lambda sel=None: cnn_dm.scenarios(data_dir, temperature=temperature),
        "gsm8k": lambda sel=None: gsm8k.scenarios(data_dir),
        "bigbench": lambda sel=None: bigbench.scenarios(data_dir, sel or bigbench_tasks),
        "samsum": lambda sel=None: samsum.scenarios(data_dir, temperature=temperature),
        "corr2cause": lambda sel=None: corr2cause.scenarios(data_dir),
        "ethics": lambda sel=None: ethics.scenarios(data_dir, sel or "all"),
        "math": lambda sel=None: math_cot.scenarios(data_dir),
    }


def suite_run_data(run: suites.SuiteRun, loaders: dict, cache: dict):
    """(instances, spec) of one suite run, or Skipped with the reason. Loads are cached per (family, selector)."""
    key = (run.family, run.selector)
    if key not in cache:
        try:
            cache[key] = loaders[run.family](run.selector)
        except FileNotFoundError as e:
            cache[key] = Skipped(f"data absent: {e}")
        except ValueError as e:
            raise UserError(f"{run.family}: {e}") from e
    runs = cache[key]
    if isinstance(runs, Skipped):
        raise runs
    if run.scenario not in runs:
        raise Skipped(f"data absent: the {run.family} data has no run {run.scenario}")
    instances, spec = runs[run.scenario]
    if not any(inst.split in EVAL_SPLITS for inst in instances):
        raise Skipped(f"data absent: no eval instances for {run.scenario}")
    if run.max_train_instances is not None:
        spec = replace(spec, max_train_instances=run.max_train_instances)
    return instances, spec


def family_means(runs: dict[str, dict]) -> dict[str, dict]:
    """HELM's group score: each metric's mean over the family's runs."""
    grouped: dict[str, dict[str, list[float]]] = {}
    for metrics in runs.values():
        fam = grouped.setdefault(metrics["family"], {})
        for k, v in metrics.items():
            if k != "family" and isinstance(v, (int, float)):
                fam.setdefault(k, []).append(v)
    out = {}
    for family, fam in grouped.items():
        out[family] = {k: sum(v) / len(v) for k, v in fam.items()}
        out[family]["num_runs"] = sum(1 for m in runs.values() if m["family"] == family)
    return out


def runs_to_evaluate(plan, families, perturbed, loaders, limit, skipped):
    """(run name, family, instances, spec, max eval instances, perturbed) of each run to evaluate: a suite's runs
    (those without data appended to `skipped`, with the reason), or every run of the --tasks families."""
    if plan:
        cache: dict = {}
        for run in plan:
            try:
                instances, spec = suite_run_data(run, loaders, cache)
            except Skipped as e:
                skipped.append({"run": run.name, "family": run.family, "reason": str(e)})
                continue
            yield run.name, run.family, instances, spec, min(run.max_eval_instances, limit or run.max_eval_instances), run.perturbed
        return
    for family in families:
        try:
            runs = loaders[family]()
        except (FileNotFoundError, ValueError) as e:
            raise UserError(f"{family}: {e}") from e
        for run_name, (instances, spec) in runs.items():
            yield run_name, family, instances, spec, limit, family in perturbed


def main(
    checkpoint_dir: Optional[Path] = None,
    server_url: Optional[str] = None,
    lora_path: Optional[Path] = None,
    tasks: str = DEFAULT_TASKS,
    suite: Optional[str] = None,
    budget: Optional[int] = None,
    limit: Optional[int] = None,
    out: Path = Path("out/eval"),
    data_dir: Path = wd.parent / "shared" / "data",
    perturb: str = DEFAULT_PERTURBED,
    misspellings_file: Optional[Path] = None,
    dialect_file: Optional[Path] = None,
    mmlu_subjects: str = "all",
    bigbench_tasks: str = "all",
    context_window: int = NEURIPS_CONTEXT_WINDOW,
    cnn_dm_temperature: float = 0.3,
    name: Optional[str] = None,
    device: str = "cpu",
    precision: Optional[str] = None,
    batch_tokens: int = 8192,
    seed: int = 1234,
    backend: Literal["ours", "vllm"] = "ours",
    clients_per_server: int = 4,
    dry_run: bool = False,
) -> dict:
    """Runs the challenge's HELM tasks on local data and writes results.json, predictions.jsonl, results.md and results.png.

    Args:
        checkpoint_dir: A converted (or merged) checkpoint dir to evaluate in this process.
        lora_path: A finetune run's LoRA weights (OUT/step-NNNNNN/lit_model.pth.lora) for --checkpoint_dir, its
            base: merged in memory, so a checkpoint is scored without writing a merged copy.
        server_url: Instead of a checkpoint: a challenge server (e.g. http://localhost:8080) to query as HELM does;
            several, comma-separated (one per GPU), share the requests with the same results as one.
        tasks: Comma-separated families: mmlu, truthfulqa, bbq, cnn_dm, gsm8k, bigbench, samsum, corr2cause, ethics,
            math. Ignored with --suite.
        suite: Instead of --tasks: the final ranking's runs, "open", "closed" or "full" (eval/suites.yaml: each run's
            max_eval_instances, in-context examples and perturbations as the challenge ran it).
        budget: With --suite: scale the runs' instance counts to about this many in all (at least one per run).
        limit: HELM's max_eval_instances: at most this many eval instances per run (per MMLU subject, per BIG-bench
            task), sampled with HELM's seed. Default: all (with --suite: the suite's counts, which this caps).
        out: Output directory.
        data_dir: The shared data directory (its MANIFEST.md describes the layout).
        perturb: Families that also run HELM's canonical perturbations (robustness and fairness rows); "" for none.
            With --suite, the suite's data_augmentation entries decide.
        misspellings_file: HELM's correct_to_misspelling.json, for HELM-identical misspellings. Default:
            <data_dir>/helm_perturbations/correct_to_misspelling.json if present, else our subset.
        dialect_file: HELM's SAE_to_AAVE_mapping.json, for HELM-identical dialect substitution. Default:
            <data_dir>/helm_perturbations/perturbations/dialect/SAE_to_AAVE_mapping.json if present, else our subset.
        mmlu_subjects: Comma-separated MMLU subjects, or "all" (every subject in <data_dir>/mmlu/test).
        bigbench_tasks: Comma-separated BIG-bench tasks (e.g. "snarks,logical_deduction/three_objects"), or "all".
        context_window: Tokens a prompt plus its completion may use; HELM drops in-context examples to fit.
            2048 is what the challenge's neurips/local deployment declares.
        cnn_dm_temperature: HELM's summarization runs (summarization_cnndm, sam_sum) sample at 0.3; 0 makes them greedy.
        name: Column title in the table. Default: the checkpoint dir's name or the server URL.
        device: Device for the in-process model.
        precision: "32-true", "bf16-true", ... Default: bf16-true on a GPU that has it, else 32-true.
        batch_tokens: Token budget of one batch when scoring single-token answers in process.
        seed: Seed of sampled generations (the summarization runs at temperature 0.3); servers get seed + the
            request's index in each request.
        backend: With --checkpoint_dir: "ours" (the submission's engine, in this process) or "vllm" (a submission
            server with BACKEND=vllm, started in the vLLM venv of `make vllm-venv` or $VLLM_VENV; --lora_path is then
            served as a vLLM LoRA adapter on the base, not merged). Settings of that server (EAGER=1,
            VLLM_CPU_KVCACHE_SPACE, ...) pass through the environment.
        clients_per_server: Requests in flight at each server (--server_url, --backend vllm).
        dry_run: Count the requests each run would make (no model is loaded) and print them, then stop.
    """
    if (checkpoint_dir is None) == (server_url is None):
        raise UserError("give exactly one of --checkpoint_dir and --server_url")
    if backend == "vllm" and server_url is not None:
        raise UserError("--backend vllm starts a vLLM server of its own: give --checkpoint_dir, not --server_url")
    if lora_path is not None and checkpoint_dir is None:
        raise UserError("--lora_path needs --checkpoint_dir (the base model the run trained on)")
    if limit is not None and limit < 1:
        raise UserError("--limit must be at least 1")
    if budget is not None and suite is None:
        raise UserError("--budget needs --suite")
    try:
        plan = suites.load(suite, budget) if suite else None
    except ValueError as e:
        raise UserError(str(e)) from e
    families = list(dict.fromkeys(r.family for r in plan)) if plan else parse_list(tasks, FAMILIES, "task")
    perturbed = set(parse_list(perturb, FAMILIES, "perturbed family")) if perturb and not plan else set()
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"--data_dir {str(data_dir)!r} does not exist")
    for f in (misspellings_file, dialect_file):
        if f is not None and not Path(f).is_file():
            raise UserError(f"{f}: no such file")
    if misspellings_file is None and (data_dir / HELM_MISSPELLINGS).is_file():
        misspellings_file = data_dir / HELM_MISSPELLINGS
    if dialect_file is None and (data_dir / HELM_DIALECT).is_file():
        dialect_file = data_dir / HELM_DIALECT

    perturbations = canonical(misspellings_file, dialect_file)
    loaders = family_loaders(data_dir, mmlu_subjects, bigbench_tasks, cnn_dm_temperature)
    skipped: list[dict] = []
    # Every run's eval instances before any model loads: a data error shows at once, and --dry_run needs no model.
    jobs = []
    for run_name, family, instances, spec, run_limit, run_perturbed in runs_to_evaluate(
            plan, families, perturbed, loaders, limit, skipped):
        p = perturbations if run_perturbed else None
        jobs.append((run_name, family, eval_instances(instances, run_limit, p), spec, p))
    if dry_run:
        counts = {n: sum(i.split in EVAL_SPLITS for i in inst) * spec.num_train_trials for n, _, inst, spec, _ in jobs}
        for n, c in counts.items():
            print(f"{c:6d}  {n}")
        print(f"{sum(counts.values()):6d}  requests in {len(counts)} runs ({len(skipped)} skipped without data)")
        return {"num_requests": sum(counts.values()), "runs": counts, "skipped": skipped}

    with open_backend(checkpoint_dir, server_url, lora_path, backend, device, precision, batch_tokens, seed,
                      clients_per_server, Path(out)) as source:
        if name is None and lora_path is not None:
            name = f"{Path(lora_path).parent.parent.name}/{Path(lora_path).parent.name}"  # run/step-NNNNNN
        name = name or (Path(checkpoint_dir).name if checkpoint_dir else server_url)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        results = {
            "name": name,
            "config": {"checkpoint_dir": str(checkpoint_dir) if checkpoint_dir else None, "server_url": server_url,
                       "lora_path": str(lora_path) if lora_path else None,
                       "backend": "server" if server_url else backend,
                       "tasks": families, "suite": suite, "budget": budget, "limit": limit, "perturb": sorted(perturbed),
                       "data_dir": str(data_dir), "context_window": context_window,
                       "cnn_dm_temperature": cnn_dm_temperature, "seed": seed,
                       "misspellings_file": str(misspellings_file) if misspellings_file else None,
                       "dialect_file": str(dialect_file) if dialect_file else None},
            "runs": {}, "families": {}, "skipped": skipped, "notes": [],
        }
        if "bbq" in families:
            missing = bbq.load(data_dir)[1]
            if missing:
                results["notes"].append(f"BBQ categories missing from {data_dir / 'bbq'}: {', '.join(missing)}")
        t0 = time.perf_counter()
        with atomic_path(out / "predictions.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as pred_file:
            metrics = evaluate_runs(jobs, source, context_window, pred_file)
        for run_name, family, _, _, _ in jobs:
            results["runs"][run_name] = {"family": family, **metrics[run_name]}
        results["families"] = family_means(results["runs"])
        results["seconds"] = time.perf_counter() - t0
        results["num_requests"] = sum(m["num_requests"] for m in metrics.values())
        with atomic_path(out / "results.json") as tmp:
            tmp.write_text(json.dumps(results, indent=2), encoding="utf-8")
        md, png = write_report({name: results}, out)
        print(md.read_text(encoding="utf-8"))
        print(f"wrote {out / 'results.json'}, {md}, {png} ({results['num_requests']} requests, "
              f"{results['seconds']:.0f}s)", file=sys.stderr)
        return results


@contextmanager
def open_backend(checkpoint_dir, server_url, lora_path, backend, device, precision, batch_tokens, seed,
                 clients_per_server, out: Path):
    """The backend answering the requests; with --backend vllm, a vLLM server for as long as the run lasts."""
    if server_url:
        yield HTTPBackend(server_url, clients_per_server=clients_per_server, seed=seed)
    elif backend == "vllm":
        from submission.launch import start_server, stop_server, vllm_python

        python = vllm_python()
        if python is None:
            raise UserError("--backend vllm: no vLLM venv (run `make vllm-venv`, or set VLLM_VENV)")
        out.mkdir(parents=True, exist_ok=True)
        env = {"BACKEND": "vllm", "CHECKPOINT_DIR": Path(checkpoint_dir).resolve(),
               **({"LORA_PATH": Path(lora_path).resolve()} if lora_path else {}),
               **({"PRECISION": precision} if precision else {})}
        proc, url = start_server(env, out / "vllm_server.log", python=python)
        try:
            yield HTTPBackend(url, clients_per_server=clients_per_server, seed=seed)
        finally:
            stop_server(proc)
    else:
        import torch

        torch.set_float32_matmul_precision("high")
        yield InProcessBackend(checkpoint_dir, device=device, precision=precision, batch_tokens=batch_tokens,
                               seed=seed, lora_path=lora_path)


if __name__ == "__main__":
    cli(main, as_positional=False)
