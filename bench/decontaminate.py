"""Decontamination on a real, clean 5,000-record mix of the training splits in ../shared/data: what the short-item
rule costs (the records it drops that no n-gram or longer-text match would have), shown for inspection by hand; and
whether every item of every evaluation set, planted with a light edit (case, punctuation, spacing) into the mix, is
caught and attributed to its set.

    python bench/decontaminate.py --shared_data ../shared/data

The mix: GSM8K train 1,500, MATH train 1,500 (every subject), ETHICS train 1,000 (deontology, justice, virtue,
utilitarianism: 250 each, in the shape of HELM's prompts), CNN/DM validation 668, OASST trees (best thread each),
Dolly 12, MMLU dev (85 + 200): about 5,000 records; none of it is an evaluation split. The planted run puts one item
in each record of the mix, 5,000 at a time, until every item of every set has been planted.
"""

import json
import random
import time
from collections import Counter
from pathlib import Path

import regex

from lit_gpt.decontaminate import EvalIndex, Vocab, build_eval_index, default_cache_dir, normalize
from lit_gpt.eval_loaders import EVAL_LOADERS, default_eval_sets
from lit_gpt.utils import cli


wd = Path(__file__).parent.parent.resolve()

def chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def clean_mix(shared: Path, seed: int = 0) -> list[dict]:
    """About 5,000 chat records from the shared data's training splits (see the module docstring)."""
    import csv

    from lit_gpt.sources import oasst
    from lit_gpt.sources.mmlu_style import multiple_choice_prompt, parse_row

    rng = random.Random(seed)
    gsm = [json.loads(line) for line in open(shared / "gsm8k/train.jsonl", encoding="utf-8")]
    out = [chat(r["question"], r["answer"]) for r in rng.sample(gsm, 1500)]
    math = sorted((shared / "math/train").glob("*/*.json"))
    for f in rng.sample(math, 1500):
        r = json.loads(f.read_text(encoding="utf-8"))
        out.append(chat(r["problem"], r["solution"]))
    for subset, file in (("deontology", "deontology_train.csv"), ("justice", "justice_train.csv"),
                         ("virtue", "virtue_train.csv"), ("utilitarianism", "util_train.csv")):
        rows = list(csv.reader(open(shared / "ethics" / subset / file, encoding="utf-8", newline="")))
        for row in rng.sample(rows[1:], 250):
            if subset == "deontology":
                out.append(chat(f"{row[1]}\nExcuse: {row[2]}\nIs the excuse reasonable?", "Yes" if row[0] == "1" else "No"))
            elif subset == "utilitarianism":
                out.append(chat(f"Scenario 1: {row[0]}\nScenario 2: {row[1]}\nWhich is more pleasant?", "Scenario 1"))
            else:
                out.append(chat(f"{row[1]}\nIs this reasonable?", "Yes" if row[0] == "1" else "No"))
    for r in map(json.loads, open(shared / "cnn_dailymail/validation_first668.jsonl", encoding="utf-8")):
        out.append(chat("Summarize the article.\n" + r["article"], r["highlights"]))
    for r in oasst.load([shared / "oasst/en_100_tree.jsonl"]).records:
        out.append({"messages": [{"role": t["role"], "content": t["content"]} for t in r["turns"]]})
    for r in json.loads((shared / "dolly/dolly_sample12_litgpt_fixture.json").read_text(encoding="utf-8")):
        out.append(chat(f"{r['instruction']}\n{r['context']}".strip(), r["response"]))
    for f in sorted((shared / "mmlu/dev").glob("*.csv")) + sorted((shared / "mmlu/dev_mlilab").glob("*.csv")):
        for n, row in enumerate(csv.reader(open(f, encoding="utf-8", newline=""))):
            if row[0] == "question" and n == 0:
                continue
            q, options, answer = parse_row(row if row[5] in "ABCD" else row[:5] + ["ABCD"[int(row[5])]])
            out.append(chat(multiple_choice_prompt(q, options), answer))
    return out


def light_edit(text: str, how: int) -> str:
    """Case, punctuation or spacing changed; never a word split (that would be another text, not a light edit)."""
    if how == 0:
        return text.upper()
    if how == 1:
        return regex.sub(r"\p{P}+", "", text)  # punctuation removed (symbols such as emoji and ° are content)
    if how == 2:
        return text.replace(" ", "   ").replace("\n", " \n\n ")  # whitespace
    return text.lower().replace(".", "!").replace(",", ";")  # punctuation changed


def plant(record: dict, item: str, where: int) -> dict:
    """The record with `item` put before or after its first turn's text."""
    first = record["messages"][0]["content"]
    content = f"{item}\n\n{first}" if where % 2 else f"{first}\n\nHere is one more: {item}"
    return {"messages": [{**record["messages"][0], "content": content}] + record["messages"][1:]}


def text_of(record: dict) -> str:
    return "\n".join(m["content"] for m in record["messages"])


def rule_of(record_words: list[str], item_texts: list[str], n: int, min_words: int) -> tuple[str, str]:
    """Which rule matched a record against an item, by plain-Python search: an n-gram ("ngram"), a whole text of
    min_words or more ("whole"), or a shorter whole first text (the short-item rule: "short"); and the words matched."""
    joined = " " + " ".join(record_words) + " "
    grams = {tuple(record_words[i : i + n]) for i in range(len(record_words) - n + 1)}
    for k, t in enumerate(item_texts):
        w = normalize(t)
        for i in range(len(w) - n + 1):
            if tuple(w[i : i + n]) in grams:
                return "ngram", " ".join(w[i : i + n])
        if 0 < len(w) < n and f" {' '.join(w)} " in joined and (k == 0 or len(w) >= min_words):
            return "whole" if len(w) >= min_words else "short", " ".join(w)
    return "?", ""


def main(shared_data: Path = wd.parent / "shared" / "data", show: int = 60, show_other: int = 3, seed: int = 0) -> None:
    """Count the short-item rule's drops on a clean real mix, and plant every evaluation item into it.

    Args:
        shared_data: The ../shared/data dir with the real datasets.
        show: How many of the short-item rule's drops to print, with the item and the record's words around it.
        show_other: How many of the other rules' drops to print, per rule and evaluation set.
        seed: Seed of the mix's sampling and of the planting.
    """
    sets, missing = default_eval_sets(shared_data)
    t = time.perf_counter()
    vocab = Vocab()
    index: EvalIndex = build_eval_index(sets, vocab, cache_dir=default_cache_dir())
    print(f"evaluation index ({', '.join(sets)}; missing: {', '.join(missing) or 'none'}): {len(index)} items, "
          f"{len(index.hashes):,} n-grams, {len(index.short_hashes):,} short texts, {time.perf_counter() - t:.1f} s")
    items = {name: list(EVAL_LOADERS[s["kind"]](s["paths"][0])) for name, s in sets.items()}
    texts_of = {(name, item_id): texts for name, its in items.items() for item_id, texts in its}

    mix = clean_mix(shared_data, seed)
    t = time.perf_counter()
    found = index.match(*vocab.encode_many(text_of(r) for r in mix))
    print(f"\nclean mix: {len(mix)} records, {sum(f is not None for f in found)} flagged "
          f"({time.perf_counter() - t:.2f} s to match)")
    rules, shown = Counter(), Counter()
    for r, f in zip(mix, found):
        if f is None:
            continue
        key = index.describe(f)
        rule, matched = rule_of(normalize(text_of(r)), texts_of[key], index.n, index.min_words)
        rules[rule, key[0]] += 1
        # every drop of the short-item rule, and a few of each other kind, for inspection by hand
        if shown[rule, key[0]] < (show if rule == "short" else show_other):
            shown[rule, key[0]] += 1
            words = " ".join(normalize(text_of(r)))
            at = words.find(matched)
            print(f"  {rule} [{key[0]} {key[1]}] matched: {matched!r}\n"
                  f"      record: ...{words[max(0, at - 100) : at + len(matched) + 100]}...")
    print("flagged, by rule and set:", dict(rules))

    # every item of every set, planted (first text, lightly edited) into the mix's records that are clean
    carriers = [r for r, f in zip(mix, found) if f is None]
    rng = random.Random(seed)
    planted = [(name, item_id, texts[0]) for name, its in items.items() for item_id, texts in its if texts[0].strip()]
    rng.shuffle(planted)
    caught, wrong_set, misses = Counter(), Counter(), []
    t = time.perf_counter()
    for s in range(0, len(planted), len(carriers)):
        batch = planted[s : s + len(carriers)]
        records = [plant(carriers[k], light_edit(text, k % 4), k) for k, (_, _, text) in enumerate(batch)]
        for (name, item_id, text), f in zip(batch, index.match(*vocab.encode_many(text_of(r) for r in records))):
            if f is None:
                misses.append((name, item_id, text))
            else:
                caught[name] += 1
                wrong_set[name] += index.describe(f)[0] != name
    total = Counter(name for name, _, _ in planted)
    print(f"\nplanted every item, {len(carriers)} records at a time ({time.perf_counter() - t:.1f} s):")
    for name in total:
        print(f"  {name}: {caught[name]}/{total[name]} caught ({wrong_set[name]} attributed to another set)")
    for name, item_id, text in misses[:show]:
        print(f"  missed [{name} {item_id}]: {text[:160]!r}")
    print(f"missed: {len(misses)} of {len(planted)}")


if __name__ == "__main__":
    cli(main)
