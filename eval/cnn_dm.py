"""CNN/DailyMail as HELM runs it: `summarization_cnndm` (5-shot, 3-sentence summaries, ROUGE-2).

HELM's scenario: articles and highlights have newlines replaced by spaces and are whitespace-tokenized; articles
are cut to their first 512 words; in-context candidates are train articles of 50-150 words. Prompt blocks are
"###\\nArticle: <article>\\n\\nSummarize the above article in 3 sentences.\\n<summary>\\n"; generation stops at "###",
at most 128 tokens, temperature 0.3.
The shared data has no train split (only the first 668 validation and 574 test articles), so the in-context pool is
drawn from validation and the eval instances from test (HELM samples eval instances from validation + test).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from eval.helm import GENERATION, TEST, TRAIN, AdapterSpec, Instance, RequestState
from eval.metrics import rouge
from lit_gpt.eval_sets import read_cnn_dailymail

DOC_MAX_LENGTH, SAMPLING_MIN_LENGTH, SAMPLING_MAX_LENGTH = 512, 50, 150


def clean_and_truncate(text: str, max_length: Optional[int] = None) -> str:
    return " ".join(text.replace("\n", " ").split()[:max_length])


def read_jsonl(path: Path, split: str) -> list[Instance]:
    instances = []
    for r in read_cnn_dailymail(path):
        article = clean_and_truncate(r["article"], DOC_MAX_LENGTH)
        if split == TRAIN and not SAMPLING_MIN_LENGTH <= len(article.split()) <= SAMPLING_MAX_LENGTH:
            continue
        instances.append(Instance(article, (clean_and_truncate(r["highlights"]),), (0,), split, source=r["item_id"]))
    return instances


def spec(temperature: float = 0.3) -> AdapterSpec:
    """HELM's get_summarization_adapter_spec(num_sents=3, max_tokens=128, temperature=0.3)."""
    return AdapterSpec(
        method=GENERATION, instructions="", input_prefix="###\nArticle: ", input_suffix="\n\n",
        output_prefix="Summarize the above article in 3 sentences.\n", output_suffix="\n",
        max_train_instances=5, num_outputs=1, max_tokens=128, temperature=temperature, stop_sequences=("###",),
    )


def scenarios(
    data_dir: Path,
    train_file: str = "cnn_dailymail/validation_first668.jsonl",
    test_file: str = "cnn_dailymail/test_first574.jsonl",
    temperature: float = 0.3,
) -> dict[str, tuple[list[Instance], AdapterSpec]]:
    paths = [Path(data_dir) / train_file, Path(data_dir) / test_file]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no CNN/DailyMail jsonl")
    instances = read_jsonl(paths[0], TRAIN) + read_jsonl(paths[1], TEST)
    return {"summarization_cnndm": (instances, spec(temperature))}


def remove_braces(text: str) -> str:
    if text.startswith("{"):
        text = text[1:]
    if text.endswith("}"):
        text = text[:-1]
    return text


def score(state: RequestState) -> dict[str, float]:
    pred = remove_braces((state.completion or "").strip())
    refs = [remove_braces(r) for r in state.instance.references]
    return {name: max(rouge(r, pred, kind) for r in refs)
            for name, kind in (("rouge_1", "rouge1"), ("rouge_2", "rouge2"), ("rouge_l", "rougeL"))}
