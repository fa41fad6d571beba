"""HELM's adaptation machinery, re-implemented: instances, few-shot selection, prompt construction and requests.

Each scenario module (mmlu.py, bbq.py, ...) turns local data into `Instance`s in the order HELM's scenario would,
and picks an `AdapterSpec` with the values of HELM's run spec. Everything below follows
helm/benchmark/{runner.py, adaptation/adapters/in_context_learning_adapter.py,
adaptation/adapters/multiple_choice_joint_adapter.py, adaptation/prompt.py} so that the prompt text, the sampled
in-context examples and the selected eval instances are the ones HELM would produce from the same data.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field, replace
from itertools import cycle
from typing import Callable, Optional

TRAIN, VALID, TEST = "train", "valid", "test"
EVAL_SPLITS = (VALID, TEST)
MULTIPLE_CHOICE_JOINT = "multiple_choice_joint"
GENERATION = "generation"
# The challenge's model deployment (neurips/local) declares a 2048-token window; HELM drops in-context examples
# until prompt + max_tokens fits in it.
NEURIPS_CONTEXT_WINDOW = 2048


@dataclass(frozen=True)
class Instance:
    input: str
    references: tuple[str, ...]
    correct: tuple[int, ...]  # indices of the correct references
    split: str
    id: str = ""
    perturbation: Optional[str] = None  # None for the original; the perturbation's name otherwise
    tags: tuple = ()  # scenario-specific data the metric needs (BBQ letters)
    # The record it was built from (lit_gpt.eval_sets' item_id, as decontamination reports it): no part of equality.
    source: str = field(default="", compare=False)

    @property
    def first_correct(self) -> Optional[str]:
        return self.references[self.correct[0]] if self.correct else None


@dataclass(frozen=True)
class AdapterSpec:
    """The fields of HELM's AdapterSpec that shape a prompt and a request (same defaults)."""

    method: str = GENERATION
    instructions: str = ""
    input_prefix: str = "Input: "
    input_suffix: str = "\n"
    reference_prefix: str = "A. "
    reference_suffix: str = "\n"
    output_prefix: str = "Output: "
    output_suffix: str = "\n"
    instance_prefix: str = "\n"
    max_train_instances: int = 5
    num_outputs: int = 5
    num_train_trials: int = 1
    sample_train: bool = True
    temperature: float = 1.0
    max_tokens: int = 100
    stop_sequences: tuple[str, ...] = ()


@dataclass(frozen=True)
class Request:
    """What HELM sends to a model (the fields the challenge API carries)."""

    prompt: str
    max_tokens: int
    temperature: float
    stop_sequences: tuple[str, ...] = ()
    num_completions: int = 1
    top_k_per_token: int = 1
    top_p: float = 1.0
    echo_prompt: bool = False


@dataclass
class RequestState:
    instance: Instance
    request: Request
    output_mapping: Optional[dict[str, str]] = None  # MC joint: letter -> reference text
    num_train_instances: int = 0
    completion: Optional[str] = None


def format_instructions(instructions: str) -> str:
    return instructions + "\n" if instructions else instructions


def multiple_choice_joint_spec(instructions: str, input_noun: Optional[str], output_noun: str, **kwargs) -> AdapterSpec:
    """HELM's get_multiple_choice_adapter_spec(method=multiple_choice_joint): one generated token, greedy."""
    return AdapterSpec(
        method=MULTIPLE_CHOICE_JOINT,
        instructions=format_instructions(instructions),
        input_prefix=f"{input_noun}: " if input_noun is not None else "",
        input_suffix="\n" if input_noun is not None else "",
        output_prefix=f"{output_noun}: ",
        output_suffix="\n",
        max_train_instances=kwargs.pop("max_train_instances", 5),
        num_outputs=5,
        max_tokens=1,
        temperature=0.0,
        stop_sequences=("\n",),
        **kwargs,
    )


def generation_spec(
    instructions: str = "",
    input_noun: Optional[str] = None,
    output_noun: Optional[str] = None,
    max_train_instances: int = 5,
    max_tokens: int = 5,
    stop_sequences: Optional[tuple[str, ...]] = None,
    temperature: float = 0.0,
) -> AdapterSpec:
    """HELM's get_generation_adapter_spec: `Noun: ` prefixes, '\\n' as the default stop."""

    def prefix(noun: Optional[str]) -> str:
        return f"{noun}: " if noun is not None else ""

    return AdapterSpec(
        method=GENERATION,
        instructions=format_instructions(instructions),
        input_prefix=prefix(input_noun),
        input_suffix="\n",
        output_prefix=prefix(output_noun),
        output_suffix="\n",
        max_train_instances=max_train_instances,
        num_outputs=1,
        max_tokens=max_tokens,
        temperature=temperature,
        stop_sequences=("\n",) if stop_sequences is None else tuple(stop_sequences),
    )


def with_instance_ids(instances: list[Instance]) -> list[Instance]:
    """HELM numbers every instance of a scenario (all splits, scenario order) as id0, id1, ...; perturbations
    seed their RNG with it."""
    return [replace(inst, id=f"id{i}") for i, inst in enumerate(instances)]


def downsample_eval_instances(instances: list[Instance], max_eval_instances: Optional[int]) -> list[Instance]:
    """All train instances plus at most `max_eval_instances` eval ones, chosen like HELM's runner:
    `np.random.seed(0); np.random.choice(eval_instances, k, replace=False)` (a permutation's first k)."""
    train = [inst for inst in instances if inst.split == TRAIN]
    evals = [inst for inst in instances if inst.split in EVAL_SPLITS]
    if max_eval_instances is not None and len(evals) > max_eval_instances:
        import numpy as np

        order = np.random.RandomState(0).permutation(len(evals))[:max_eval_instances]
        evals = [evals[i] for i in order]
    return train + evals


def sample_examples(train: list[Instance], seed: int, max_train_instances: int, sample_train: bool = True) -> list[Instance]:
    """HELM's in-context example selection: labels sorted by frequency (ties shuffled), one instance per label
    in turn, each drawn at random without replacement; unlabeled instances fill the rest."""
    rng = random.Random(seed)  # HELM calls random.seed(seed) and then the module functions: same stream
    k = min(len(train), max_train_instances)
    if not sample_train:
        return train[k * seed : k * (seed + 1)]
    unlabeled: list[Instance] = []
    by_label: dict[str, list[Instance]] = defaultdict(list)
    for inst in train:
        if inst.first_correct:
            by_label[inst.first_correct].append(inst)
        else:
            unlabeled.append(inst)
    counts_to_labels: dict[int, list[str]] = defaultdict(list)
    for label, insts in sorted(by_label.items()):
        counts_to_labels[len(insts)].append(label)
    sorted_labels: list[str] = []
    for count in sorted(counts_to_labels, reverse=True):
        labels = counts_to_labels[count]
        rng.shuffle(labels)
        sorted_labels.extend(labels)
    examples: list[Instance] = []
    labels_iter = cycle(sorted_labels)
    while k > 0:
        label = next(labels_iter, None)
        if not label:
            break
        pool = by_label[label]
        if not pool:
            continue
        examples.append(pool.pop(rng.randrange(len(pool))))
        k -= 1
    examples += rng.sample(unlabeled, k)
    return examples


def letter(i: int) -> str:
    return chr(ord("A") + i)


def example_block(spec: AdapterSpec, inst: Instance, include_output: bool) -> str:
    """One instance as it appears in the prompt (HELM's construct_example_prompt of either adapter)."""
    text = spec.input_prefix + inst.input + spec.input_suffix
    if spec.method == MULTIPLE_CHOICE_JOINT:
        output = "n/a"
        for i, ref in enumerate(inst.references):
            text += spec.reference_prefix.replace("A", letter(i), 1) + ref + spec.reference_suffix
            if i in inst.correct and output == "n/a":
                output = letter(i)
    else:
        output = inst.first_correct if inst.first_correct is not None else "n/a"
    if include_output:
        return text + spec.output_prefix + output + spec.output_suffix
    return text + spec.output_prefix.rstrip()


def join_prompt(spec: AdapterSpec, train_blocks: list[str], eval_block: str) -> str:
    blocks = ([spec.instructions] if spec.instructions else []) + train_blocks + [eval_block]
    return spec.instance_prefix.join(blocks)


def construct_prompt(
    spec: AdapterSpec,
    train: list[Instance],
    inst: Instance,
    count_tokens: Optional[Callable[[str], int]] = None,
    context_window: int = NEURIPS_CONTEXT_WINDOW,
    truncate: Optional[Callable[[str, int], str]] = None,
) -> tuple[str, int]:
    """(prompt, number of in-context examples kept). With `count_tokens`, drops in-context examples from the end
    until prompt + max_tokens fits `context_window`, then truncates from the right, as HELM does."""
    train_blocks = [example_block(spec, t, include_output=True) for t in train]
    eval_block = example_block(spec, inst, include_output=False)
    prompt = join_prompt(spec, train_blocks, eval_block)
    if count_tokens is None:
        return prompt, len(train_blocks)
    while train_blocks:
        if count_tokens(prompt) + spec.max_tokens <= context_window:
            return prompt, len(train_blocks)
        train_blocks = train_blocks[:-1]
        prompt = join_prompt(spec, train_blocks, eval_block)
    if count_tokens(prompt) + spec.max_tokens > context_window and truncate is not None:
        prompt = truncate(prompt, context_window - spec.max_tokens)
    return prompt, 0


def make_request(spec: AdapterSpec, prompt: str) -> Request:
    if spec.method == MULTIPLE_CHOICE_JOINT:
        # HELM's joint adapter asks for the top `num_outputs` logprobs of one greedy token and no stop sequence.
        return Request(prompt, spec.max_tokens, spec.temperature, (), 1, spec.num_outputs)
    return Request(prompt, spec.max_tokens, spec.temperature, tuple(spec.stop_sequences), 1, 1)


def adapt(
    spec: AdapterSpec,
    instances: list[Instance],
    count_tokens: Optional[Callable[[str], int]] = None,
    context_window: int = NEURIPS_CONTEXT_WINDOW,
    truncate: Optional[Callable[[str, int], str]] = None,
) -> list[RequestState]:
    """One RequestState per eval instance (and train trial), as HELM's adapter builds them."""
    train = [inst for inst in instances if inst.split == TRAIN]
    evals = [inst for inst in instances if inst.split in EVAL_SPLITS]
    states = []
    for trial in range(spec.num_train_trials):
        shots = sample_examples(train, trial, spec.max_train_instances, spec.sample_train)
        for inst in evals:
            prompt, n = construct_prompt(spec, shots, inst, count_tokens, context_window, truncate)
            mapping = {letter(i): ref for i, ref in enumerate(inst.references)} if spec.method == MULTIPLE_CHOICE_JOINT else None
            states.append(RequestState(inst, make_request(spec, prompt), mapping, n))
    return states
