"""CPU seconds of decontamination's stages, normalization (Vocab.encode_many) and EvalIndex.match (and the index
build, once), in this checkout and in an older one, on bench/prepare.py's 10k-record mix against its six evaluation
sets: the cost of a change to lit_gpt/decontaminate.py without the tokenizer's noise around it.

    git archive f7e34fd | tar -x -C /tmp/old   # the code before the short-item match
    python bench/decontaminate_compare.py --old_root /tmp/old --shared_data ../shared/data
"""

import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.prepare import mix_config
from lit_gpt.utils import cli
from lit_gpt.mix import load_source


wd = Path(__file__).parent.parent.resolve()

def decontaminate_module(root: Path):
    """lit_gpt/decontaminate.py of the checkout at `root`, imported with that checkout's lit_gpt package."""
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k == "lit_gpt" or k.startswith("lit_gpt.")}
    try:
        # that checkout's lit_gpt package under its own name, so its modules import each other from there
        package = importlib.machinery.PathFinder.find_spec("lit_gpt", [str(root)])
        sys.modules["lit_gpt"] = importlib.util.module_from_spec(package)
        package.loader.exec_module(sys.modules["lit_gpt"])
        spec = importlib.util.spec_from_file_location(f"decontaminate_{abs(hash(root))}", root / "lit_gpt/decontaminate.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for k in [k for k in sys.modules if k == "lit_gpt" or k.startswith("lit_gpt.")]:
            del sys.modules[k]
        sys.modules.update(saved)
    return module


def main(old_root: Path = Path("/tmp/old"), shared_data: Path = wd.parent / "shared" / "data", rounds: int = 7) -> None:
    """Time normalization and matching, old code against new, in alternating rounds (medians of CPU seconds).

    Args:
        old_root: A checkout (or `git archive` export) of the older code.
        shared_data: The ../shared/data dir with the real datasets.
        rounds: Rounds, each running both in turn (the order alternates).
    """
    cfg = mix_config(shared_data)
    records = [r for s in cfg["sources"] for r in load_source(s, wd).records]
    texts = ["\n".join(t["content"] for t in r["turns"]) for r in records]
    sets = {name: {"kind": name, "paths": [Path(p)]} for name, p in cfg["decontaminate"]["eval_sets"].items()}
    runs, found = {}, {}
    with tempfile.TemporaryDirectory() as cache:
        for name, root in (("old", Path(old_root).resolve()), ("new", wd)):
            mod = decontaminate_module(root)
            vocab = mod.Vocab()
            c = time.process_time()
            index = mod.build_eval_index(sets, vocab, cache_dir=Path(cache))
            runs[name] = (vocab, index, {"build": [time.process_time() - c], "normalize": [], "match": []})
    for r in range(rounds):
        for name in ("old", "new") if r % 2 == 0 else ("new", "old"):
            vocab, index, times = runs[name]
            c = time.process_time()
            ids, lengths = vocab.encode_many(texts)
            times["normalize"].append(time.process_time() - c)
            c = time.process_time()
            found[name] = index.match(ids, lengths)
            times["match"].append(time.process_time() - c)
    print(f"{len(texts)} records, {rounds} rounds, median CPU seconds:")
    for name, (_, _, times) in runs.items():
        print(f"  {name}: index build (once) {times['build'][0]:.2f}, normalize {statistics.median(times['normalize']):.3f}, "
              f"match {statistics.median(times['match']):.3f}, "
              f"flagged {sum(f is not None for f in found[name])}")
    for i, (a, b) in enumerate(zip(found["old"], found["new"])):
        if (a is None) != (b is None):
            which = "new" if b is not None else "old"
            print(f"  flagged by {which} only: {runs[which][1].describe(found[which][i])} {texts[i][:120]!r}")


if __name__ == "__main__":
    cli(main)
