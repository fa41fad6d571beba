"""Our model as an lm-evaluation-harness `LM`, so any lm-eval task runs on a lit checkpoint.

    # lm-eval lives in its own venv (it pulls datasets/pandas/...); see `make lmeval-venv`
    /tmp/lmeval-venv/bin/python eval/lm_eval_harness.py --checkpoint_dir DIR --tasks mmlu_local --limit 30

`LitScorer` does the work with plain PyTorch and tokenizes as lm-eval's `hf` model does (the context's trailing
spaces move to the continuation; the continuation's ids are those of context+continuation after the context's;
an empty context is replaced by the BOS/EOS id; inputs longer than the context window keep their last tokens), so
the two give the same numbers on the same weights. Requests sharing a context whose continuations are one token
(multiple choice) share one forward pass. `LitLM` adapts it to lm-eval's API and is registered as `lit_gpt`.

`mmlu_local` is an lm-eval task group built from the shared data's MMLU CSVs (lm-eval's own `mmlu` downloads
from the Hub): lm-eval's default MMLU prompt ("<question>\\nA. ..\\nD. ..\\nAnswer:", choices " A".." D"),
few-shot examples from dev, accuracy.
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
from pathlib import Path
from typing import Optional

import torch

from lit_gpt.utils import UserError, cli, write_json


wd = Path(__file__).parent.parent.resolve()

class LitScorer:
    def __init__(self, model, tokenizer, batch_size: int = 16, max_length: Optional[int] = None, add_bos: bool = False):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.device = model.transformer.wte.weight.device
        self.batch_size = batch_size
        self.max_length = max_length or model.max_seq_length
        self.add_bos = add_bos

    @property
    def prefix_token_id(self) -> int:
        bos = getattr(self.tokenizer, "bos_id", None)
        return bos if bos is not None else self.tokenizer.eos_id

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, bos=self.add_bos).tolist()

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation, context = context[-n_spaces:] + continuation, context[:-n_spaces]
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        return ctx, whole[len(ctx):]

    @torch.inference_mode()
    def _logprobs(self, seqs: list[list[int]], keep: list[int]) -> list[torch.Tensor]:
        """log-softmax over the vocabulary at the last `keep[i]` positions of each sequence (right-padded batches).

        The head runs only on the kept positions: over a 49k vocabulary it costs as much as a fifth of the model per
        position, and multiple choice needs one position per question."""
        out: list[Optional[torch.Tensor]] = [None] * len(seqs)
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        vocab = self.model.config.vocab_size  # the HF model's logits have this many columns
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            T = len(seqs[batch[0]])
            idx = torch.zeros(len(batch), T, dtype=torch.long)
            for row, i in enumerate(batch):
                idx[row, : len(seqs[i])] = torch.tensor(seqs[i])
            # Right padding needs no mask: real tokens never attend to the pads after them.
            hidden = self.model(idx.to(self.device), return_hidden=True)
            rows = [hidden[row, len(seqs[i]) - keep[i] : len(seqs[i])] for row, i in enumerate(batch)]
            logits = self.model.lm_head(torch.cat(rows))[..., :vocab].float()
            logp = torch.log_softmax(logits, dim=-1).cpu()
            for chunk, i in zip(logp.split([keep[i] for i in batch]), batch):
                out[i] = chunk
        return out

    def loglikelihood(self, pairs: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        """(sum of the continuation's log-probabilities, whether greedy decoding gives the continuation)."""
        encoded = []
        for context, continuation in pairs:
            ctx, cont = self.encode_pair(context, continuation) if context else ([self.prefix_token_id], self.encode(continuation))
            if not cont:
                raise ValueError(f"continuation {continuation!r} encodes to no tokens")
            encoded.append((ctx, cont))
        # One forward per distinct input: single-token continuations of one context share it.
        inputs: dict[tuple, int] = {}  # input -> the most trailing positions any request needs
        keys = []
        for ctx, cont in encoded:
            whole = (ctx + cont)[-(self.max_length + 1):]
            key = tuple(whole[:-1])
            keys.append(key)
            inputs[key] = max(inputs.get(key, 0), len(cont))
        order = {key: n for n, key in enumerate(inputs)}
        logps = self._logprobs([list(k) for k in inputs], list(inputs.values()))
        results = []
        for (ctx, cont), key in zip(encoded, keys):
            logp = logps[order[key]][-len(cont):]
            target = torch.tensor(cont)
            picked = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            results.append((float(picked.sum()), bool((logp.argmax(-1) == target).all())))
        return results

    def loglikelihood_rolling(self, texts: list[str]) -> list[float]:
        """Log-probability of each whole text, in windows of max_length tokens (lm-eval's rolling windows, context 1)."""
        out = []
        for text in texts:
            ids = self.encode(text)
            total = 0.0
            pred_start = 0
            tokens = [self.prefix_token_id] + ids
            while pred_start < len(ids):
                pred_end = min(len(ids), pred_start + self.max_length)
                window_start = max(0, pred_end - self.max_length)
                window = tokens[window_start : pred_end + 1]
                n = pred_end - pred_start
                logp = self._logprobs([window[:-1]], [n])[0]
                target = torch.tensor(window[-n:])
                total += float(logp[-n:].gather(-1, target.unsqueeze(-1)).sum())
                pred_start = pred_end
            out.append(total)
        return out

    def generate_until(self, requests: list[tuple[str, dict]]) -> list[str]:
        from lit_gpt.generation import find_stop
        from lit_gpt.generation import generate

        out = []
        for context, kwargs in requests:
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.get("max_gen_toks", 256))
            temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample", False) else 0.0
            ids = self.encode(context)[-(self.max_length - max_new):]
            new: list[int] = []
            text = ""
            for tok in generate(self.model, torch.tensor(ids), max_new, temperature=temperature,
                                stop_ids=self.tokenizer.stop_ids):
                if tok in self.tokenizer.stop_ids:
                    break
                new.append(tok)
                text = self.tokenizer.decode(new)
                cut = find_stop(text, until)
                if cut >= 0:
                    text = text[:cut]
                    break
            out.append(text)
        return out


def make_lm_class():
    """lm-eval's LM subclass (built on demand: lm-eval is an optional dependency), registered as `lit_gpt`."""
    from lm_eval.api.model import LM
    from lm_eval.api.registry import MODEL_REGISTRY, register_model

    if "lit_gpt" in MODEL_REGISTRY:
        return MODEL_REGISTRY["lit_gpt"]

    @register_model("lit_gpt")
    class LitLM(LM):
        def __init__(self, checkpoint_dir: Optional[str] = None, device: str = "cpu", batch_size: int = 16,
                     precision: Optional[str] = None, scorer: Optional[LitScorer] = None, **kwargs) -> None:
            super().__init__()
            if scorer is None:
                from lit_gpt.generation import load_model

                model, tokenizer = load_model(checkpoint_dir, device=device, precision=precision)
                scorer = LitScorer(model, tokenizer, batch_size=int(batch_size))
            self.scorer = scorer

        @classmethod
        def create_from_arg_string(cls, arg_string: str, additional_config: Optional[dict] = None):
            args = dict(kv.split("=", 1) for kv in arg_string.split(",") if kv)
            args.update({k: v for k, v in (additional_config or {}).items() if v is not None and k in ("device", "batch_size")})
            return cls(**args)

        def loglikelihood(self, requests) -> list[tuple[float, bool]]:
            return self.scorer.loglikelihood([req.args for req in requests])

        def loglikelihood_rolling(self, requests) -> list[float]:
            return self.scorer.loglikelihood_rolling([req.args[0] for req in requests])

        def generate_until(self, requests) -> list[str]:
            return self.scorer.generate_until([req.args for req in requests])

    return LitLM


def write_mmlu_local_tasks(data_dir: Path, out_dir: Path, subjects: Optional[list[str]] = None) -> str:
    """lm-eval task YAMLs (one per subject, group `mmlu_local`) over the local MMLU CSVs; returns the group name."""
    import yaml

    from eval.mmlu import subjects as all_subjects

    out_dir.mkdir(parents=True, exist_ok=True)
    names = subjects or all_subjects(data_dir)
    tasks = []
    for subject in names:
        files = {}
        for split in ("dev", "test"):
            src = Path(data_dir) / "mmlu" / split / f"{subject}_{split}.csv"
            if not src.is_file():
                raise UserError(f"{src}: no such MMLU file")
            dst = out_dir / f"{subject}_{split}.jsonl"
            with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as g:
                for row in csv.reader(f):
                    g.write(json.dumps({"question": row[0], "choices": row[1:5], "answer": "ABCD".index(row[5])}) + "\n")
            files[split] = str(dst)
        task = f"mmlu_local_{subject}"
        tasks.append(task)
        config = {
            "task": task,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": files},
            "test_split": "test",
            "fewshot_split": "dev",
            "fewshot_config": {"sampler": "first_n"},
            "output_type": "multiple_choice",
            "doc_to_text": "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:",
            "doc_to_choice": ["A", "B", "C", "D"],
            "doc_to_target": "answer",
            "description": f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0},
        }
        (out_dir / f"{task}.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    group = {"group": "mmlu_local", "task": tasks,
             "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}], "metadata": {"version": 1.0}}
    (out_dir / "mmlu_local.yaml").write_text(yaml.safe_dump(group, sort_keys=False), encoding="utf-8")
    return "mmlu_local"


# The starter guide's task names (lm-eval before 0.4) -> today's lm-eval tasks, and -> our offline HELM families
# (eval/run.py), which run when lm-eval is not installed.
LEGACY_TASKS = {"truthfulqa_mc": "truthfulqa_mc1,truthfulqa_mc2"}
OFFLINE_FAMILIES = {"truthfulqa_mc": "truthfulqa", "truthfulqa": "truthfulqa", "gsm8k": "gsm8k", "mmlu": "mmlu",
                    "mmlu_local": "mmlu", "bbq": "bbq"}


def main(
    checkpoint_dir: Optional[Path] = None,
    hf_dir: Optional[Path] = None,
    tasks: str = "mmlu_local",
    eval_tasks: Optional[list[str]] = None,
    limit: Optional[int] = None,
    num_fewshot: Optional[int] = None,
    batch_size: int = 16,
    precision: Optional[str] = None,
    data_dir: Path = wd.parent / "shared" / "data",
    out: Optional[Path] = None,
    save_filepath: Optional[Path] = None,
) -> dict:
    """Runs lm-eval tasks on a lit checkpoint (through `LitLM`) or, for comparison, on an HF export with lm-eval's `hf` model.

    Without lm-eval installed, the starter guide's tasks (truthfulqa_mc, gsm8k; also mmlu, bbq) run on our
    offline HELM-style evaluators (eval/run.py) over --data_dir instead, and the results say so.

    Args:
        checkpoint_dir: A lit checkpoint dir (lit_model.pth, model_config.yaml, tokenizer files).
        hf_dir: Instead: a transformers model dir, run with lm-eval's own `hf` model (fp32, CPU).
        tasks: Comma-separated lm-eval task names; `mmlu_local` is the shared data's MMLU (17 subjects).
        eval_tasks: The Lit-GPT starter guide's form of --tasks, a list: "[truthfulqa_mc,gsm8k]".
        limit: At most this many documents per task.
        num_fewshot: Few-shot examples per prompt (lm-eval's default for the task when unset).
        batch_size: Sequences per forward pass.
        precision: "32-true", "bf16-true", ... for the lit model. Default: bf16-true on a GPU that has it, else 32-true.
        data_dir: The shared data directory (for mmlu_local and the offline evaluators).
        out: Where to write the results JSON. Default: print only.
        save_filepath: The starter guide's name for --out.
    """
    names = list(eval_tasks) if eval_tasks else [t for t in tasks.split(",") if t]
    out = save_filepath or out
    if (checkpoint_dir is None) == (hf_dir is None):
        raise UserError("give exactly one of --checkpoint_dir and --hf_dir")
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        return offline(names, checkpoint_dir, limit, precision, data_dir, out)
    names = ",".join(LEGACY_TASKS.get(t, t) for t in names).split(",")
    include = Path(tempfile.mkdtemp(prefix="lm_eval_tasks_"))
    if "mmlu_local" in names:
        write_mmlu_local_tasks(Path(data_dir), include)
    manager = TaskManager(include_path=str(include))
    if checkpoint_dir is not None:
        lm = make_lm_class()(checkpoint_dir=str(checkpoint_dir), batch_size=batch_size, precision=precision)
        model_args = None
    else:
        lm = "hf"
        model_args = f"pretrained={hf_dir},dtype=float32,device=cpu"
    results = lm_eval.simple_evaluate(model=lm, model_args=model_args, tasks=names, limit=limit,
                                      num_fewshot=num_fewshot, batch_size=batch_size, task_manager=manager,
                                      log_samples=False)
    summary = {name: {k: v for k, v in r.items() if isinstance(v, (int, float))} for name, r in results["results"].items()}
    return write_summary(summary, out)


def offline(names: list[str], checkpoint_dir: Optional[Path], limit: Optional[int], precision: Optional[str],
            data_dir: Path, out: Optional[Path]) -> dict:
    """The guide's tasks on eval/run.py's offline evaluators (lm-eval is not installed)."""
    unknown = [t for t in names if t not in OFFLINE_FAMILIES]
    if unknown or checkpoint_dir is None:
        raise UserError(f"lm-eval is not installed (needed for {', '.join(unknown) or '--hf_dir'}): use its own "
                        f"venv (see the module docstring); without it only {', '.join(OFFLINE_FAMILIES)} run, offline")
    from eval.run import main as run_eval

    families = ",".join(dict.fromkeys(OFFLINE_FAMILIES[t] for t in names))
    print(f"lm-eval is not installed: running {families} with the offline HELM-style evaluators (eval/run.py)",
          file=sys.stderr)
    run_dir = Path(tempfile.mkdtemp(prefix="lm_eval_offline_")) if out is None else Path(out).with_suffix(".d")
    results = run_eval(checkpoint_dir=checkpoint_dir, tasks=families, limit=limit, out=run_dir, data_dir=data_dir,
                       perturb="", precision=precision)
    summary = {"backend": "lit_gpt eval/run.py (HELM prompts and metrics; lm-eval not installed)",
               **{family: metrics for family, metrics in results["families"].items()}}
    return write_summary(summary, out)


def write_summary(summary: dict, out: Optional[Path]) -> dict:
    text = json.dumps(summary, indent=1)
    print(text)
    if out:
        write_json(summary, out)
    return summary


if __name__ == "__main__":
    cli(main, as_positional=False)
