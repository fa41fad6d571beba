"""SAMSum as the challenge's HELM fork runs it: `sam_sum` (dialogue summaries in one sentence, ROUGE-2).

Follows perlitz/private-helm (the challenge's fork; commits as the search tool's read_file reports them):
- src/helm/benchmark/scenarios/sam_sum_scenario.py @ cc8ae7d85f12bf12e7b0568f24f31258a97ff0c2 (the same at
  7515cbfc953aae3a8421eeb759805eca60e6d399 but for the TSV's URL): every row of samsum.tsv (columns `dialogue`,
  `summary`) is one VALID-split instance, the dialogue its input and the summary its one correct reference. No row is
  a train instance, so the prompts have no in-context examples although the spec allows five, and the scenario
  truncates nothing: a dialogue is cut only by the adapter's window fitting (prompt + 128 tokens within the model's
  2048, truncated from the right), which `eval.helm.construct_prompt` does for every run.
- src/helm/benchmark/run_specs.py @ 12a854a42f2f95d7a4b6089abbbd545c6219f6b4, get_sam_sum_spec:
  get_summarization_adapter_spec(num_sents=1, max_tokens=128, temperature=0.3), i.e. the prompt
  "###\\nArticle: <dialogue>\\n\\nSummarize the above article in 1 sentence.", stop "###", one sampled output.
- neurIPS_eval_scripts/eval_metrics.py @ 06490d2aa0fb2584c6b8d23d338e5c396b9734d2 ranks "sam_sum - ROUGE-2":
  the SummarizationMetric's rouge_2 (src/helm/benchmark/metrics/summarization_metrics.py @
  b663ad5a130a53cc62d4434ed918e2a2aefbf81f: rouge-score with stemming, braces removed, best reference), the same
  computation as CNN/DailyMail's, so `score` is eval.cnn_dm's.

Data: the fork's samsum.tsv (a gist, unreachable offline) is not public, so which SAMSum rows it held is unknown
(its runs evaluate up to 1,250). We read <data_dir>/samsum/test.csv and then val.csv (the official test and
validation splits, 819 + 818 rows, columns id,summary,dialogue), in file order, all as eval instances as the fork
does. Their line breaks are "\\r\\n" throughout, where the official JSON mixes "\\n" and "\\r\\n": both are
normalised to "\\n".
"""

from __future__ import annotations

from pathlib import Path

from eval.cnn_dm import score  # noqa: F401  (ROUGE-1/2/L exactly as summarization_cnndm)
from eval.helm import GENERATION, VALID, AdapterSpec, Instance
from lit_gpt.eval_sets import read_samsum

FILES = ("samsum/test.csv", "samsum/val.csv")


def read_csv(path: Path) -> list[Instance]:
    return [Instance(r["dialogue"], (r["summary"],), (0,), VALID, source=r["item_id"]) for r in read_samsum(path)]


def spec(temperature: float = 0.3) -> AdapterSpec:
    """HELM's get_summarization_adapter_spec(num_sents=1, max_tokens=128, temperature=0.3)."""
    return AdapterSpec(
        method=GENERATION, instructions="", input_prefix="###\nArticle: ", input_suffix="\n\n",
        output_prefix="Summarize the above article in 1 sentence.\n", output_suffix="\n",
        max_train_instances=5, num_outputs=1, max_tokens=128, temperature=temperature, stop_sequences=("###",),
    )


def scenarios(
    data_dir: Path, files: tuple[str, ...] = FILES, temperature: float = 0.3
) -> dict[str, tuple[list[Instance], AdapterSpec]]:
    paths = [Path(data_dir) / f for f in files]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no SAMSum CSV")
    return {"sam_sum": ([inst for p in paths for inst in read_csv(p)], spec(temperature))}
