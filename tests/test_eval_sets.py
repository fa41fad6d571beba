"""lit_gpt/eval_sets.py: decontamination and the evaluation read each set with the same reader, so the items
decontamination indexes are the items the evaluation scores (the readers' layouts and errors: tests/test_eval_loaders.py
and each tests/test_eval_<family>.py)."""

from pathlib import Path

import pytest

from eval import bbq, bigbench, cnn_dm, corr2cause, ethics, gsm8k, math_cot, mmlu, samsum, truthfulqa
from eval.helm import TRAIN
from lit_gpt.decontaminate import normalize
from lit_gpt.eval_loaders import DEFAULT_EVAL_SETS, EVAL_LOADERS
from tests.test_eval_corr2cause import write_csv

# Each default evaluation set's family, and which of its instances decontamination indexes: "scored" where the
# in-context examples come from other files (MMLU dev, GSM8K train, CNN/DM validation), which are left to
# training; "all" where they are drawn from the scored file itself, so the whole file is indexed.
FAMILIES = {
    "mmlu": (mmlu, "scored"),
    "gsm8k": (gsm8k, "scored"),
    "truthfulqa": (truthfulqa, "all"),
    "bbq": (bbq, "all"),
    "cnn_dailymail": (cnn_dm, "scored"),
    "bigbench": (bigbench, "all"),
    "samsum": (samsum, "scored"),
    "ethics": (ethics, "all"),
    "math": (math_cot, "scored"),
    "corr2cause": (corr2cause, "all"),
}


def check_family(data_dir: Path, name: str) -> int:
    """Decontamination's items of set `name` against the instances its eval family builds from `data_dir` (every
    run, as the final ranking runs them): the same ids, each item's first text holding the instance's words."""
    module, indexed = FAMILIES[name]
    kind, rel = DEFAULT_EVAL_SETS[name]
    items = dict(EVAL_LOADERS[kind](data_dir / rel))
    instances = [i for insts, _ in module.scenarios(data_dir).values() for i in insts]
    assert all(i.source for i in instances), name
    want = {i.source for i in instances if indexed == "all" or i.split != TRAIN}
    got = set(items)
    if name == "ethics":  # the test and test_hard files of all five subsets are indexed; each run reads one of them
        files = {s.file for s in ethics.SUBSETS.values()}
        got = {i for i in got if i.rsplit(":", 1)[0] in files}
    assert got == want, (name, sorted(got - want)[:3], sorted(want - got)[:3])
    for inst in instances:
        if inst.source in items:
            item = set(normalize(items[inst.source][0]))
            shown = set(normalize(inst.input + "\n" + "\n".join(inst.references)))
            # the prompt shows the item, but for a few words: CNN/DM cuts articles at 512 words and the prompt
            # adds its summary; ETHICS and BBQ add template words ("Trait:", "Question:"), the item has "[SEP]"
            smaller = min(len(item), len(shown))
            assert len(item & shown) >= smaller - max(2, 0.1 * smaller), (name, inst.source)
    return len(want)


@pytest.mark.parametrize("name", [n for n in FAMILIES if n != "corr2cause"])
def test_decontamination_indexes_what_is_scored(shared_data, name):
    if not (shared_data / DEFAULT_EVAL_SETS[name][1]).exists():
        pytest.skip(f"no {name} in {shared_data}")
    assert check_family(shared_data, name) > 0


def test_corr2cause_indexes_what_is_scored(tmp_path):
    """corr2cause is not in the shared data (not downloadable offline): a small file in its layout."""
    write_csv(tmp_path)
    assert check_family(tmp_path, "corr2cause") > 0
