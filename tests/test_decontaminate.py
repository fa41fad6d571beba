"""lit_gpt/decontaminate.py against straightforward reference implementations (Python sets, datasketch itself)."""

import json
import random

import numpy as np
import pytest

from lit_gpt.decontaminate import (
    EVAL_LOADERS, EvalIndex, Vocab, build_eval_index, minhash_signatures, near_duplicates, normalize, shingle_hashes,
)


def test_normalize():
    assert normalize("Tom's  CAR,\n red.") == ["toms", "car", "red"]
    assert normalize("  ") == []
    # emoji and shapes are words (some BIG-bench items are little else); joiners and modifiers are not
    assert normalize("Movie? 🐜🐜 🟨_🔺! a_n 20°C") == ["movie", "🐜", "🐜", "🟨", "🔺", "an", "20", "°", "c"]
    assert normalize("👨\u200d🦲👍🏻") == ["👨", "🦲", "👍"]
    # light edits of case change nothing, even where lower(upper(x)) != lower(x)
    for text in ("Fußball-Bundesliga", "ΟΔΥΣΣΕΥΣ Ὀδυσσεύς", "İstanbul ǅ"):
        assert normalize(text.upper()) == normalize(text) == normalize(text.lower())


def test_encode_many_gives_the_words_of_normalize():
    # Arrow's kernels (RE2, its whitespace split) must cut exactly the words Python's `normalize` does
    texts = ["Tom's  CAR,\n red.", "", "   ", "###\nArticle: (CNN)Share, and-your gift", "naïve café ÉTÉ", "e\u0301te\u0301",
             "a\u00a0b\u2003c\u3000d", "x\x1cy\x85z\u200bq",
             "Fußball ΟΔΥΣΣΕΥΣ σας", "tab\there\vv\fw\rx", "ß ǅ İstanbul", "١٢٣ ½ ² ⅷ", "snake_case",
             "emoji 🙂 ok", "“curly” ‘quotes’ — dash…", "中文，标点。", "trailing   ", "🐜🐜🐜", "a©b°c", "👨\u200d🦲👍🏻",
             "🟨 _ 🔺: 🔵🔻"]
    rng = random.Random(0)
    alphabet = "aZ9_ .,'\n\t-é\u00a0\u2003\x85ß!?()“”🐜©\u200d"
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(40))) for _ in range(300)]
    vocab = Vocab()
    ids, lengths = vocab.encode_many(texts)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    for i, t in enumerate(texts):
        assert ids[starts[i] : starts[i + 1]].tolist() == vocab.encode(normalize(t)), repr(t)


def test_eval_index_cache_is_reused_and_invalidated(tmp_path, capsys):
    data = tmp_path / "gsm8k.jsonl"
    rows = [{"question": f"Question {i}: a farmer has {i} cows and buys {i + 3} more cows at the market today",
             "answer": f"He has {2 * i + 3} cows. #### {2 * i + 3}"} for i in range(50)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sets, cache = {"gsm8k": {"kind": "gsm8k", "paths": [data]}}, tmp_path / "cache"
    texts = ["Please solve: " + rows[7]["question"].upper(), "nothing to see here at all in this sentence today"]

    def run():
        vocab = Vocab()
        index = build_eval_index(sets, vocab, cache_dir=cache)
        return index, index.match(*vocab.encode_many(texts))

    built, found = run()
    assert built.cache_file is None and found[0] is not None and found[1] is None
    loaded, found_again = run()
    assert loaded.cache_file is not None and found_again == found
    assert loaded.describe(found[0]) == built.describe(found[0]) and len(loaded) == len(built) == 50
    # an edited evaluation file is a new key: rebuilt
    data.write_text("".join(json.dumps(r) + "\n" for r in rows[:10]))
    edited, _ = run()
    assert edited.cache_file is None and len(edited) == 10
    # a damaged cache file is rebuilt, with a warning
    path = run()[0].cache_file
    path.write_bytes(b"not an npz")
    rebuilt, found = run()
    assert rebuilt.cache_file is None and found[0] is not None
    assert "rebuilding the evaluation index" in capsys.readouterr().err


def test_minhash_signatures_equal_datasketch():
    datasketch = pytest.importorskip("datasketch")
    texts = ["The quick brown fox jumps over the lazy dog again and again", "short one", "",
             "The quick brown fox jumps over the lazy dog, again and AGAIN!", "one two three four five six"]
    ids, lengths = Vocab().encode_many(texts)
    sig = minhash_signatures(ids, lengths, num_perm=64)
    values, owner = shingle_hashes(ids, lengths)
    for i in range(len(texts)):
        m = datasketch.MinHash(num_perm=64, seed=1, hashfunc=int, scheme="affine32")
        m.update_batch([int(v) for v in values[owner == i]])
        assert np.array_equal(m.hashvalues, sig[i])


def test_near_duplicates_equal_datasketch_lsh(shared_data):
    datasketch = pytest.importorskip("datasketch")
    rng = random.Random(0)
    questions = [json.loads(line)["question"] for line in list(open(shared_data / "gsm8k/train.jsonl"))[:300]]
    texts = []
    for q in questions:
        texts.append(q)
        if rng.random() < 0.3:  # a light edit: one word changed
            words = q.split()
            words[rng.randrange(len(words))] = "banana"
            texts.append(" ".join(words))
    ids, lengths = Vocab().encode_many(texts)
    sig = minhash_signatures(ids, lengths, num_perm=128)
    ours = near_duplicates(sig, threshold=0.7)
    # the reference: datasketch's own index, one query + insert per text, earlier texts winning
    lsh, ref = datasketch.MinHashLSH(threshold=0.7, num_perm=128), {}
    for i in range(len(texts)):
        m = datasketch.LeanMinHash(seed=1, hashvalues=sig[i], scheme="affine32")
        hits = [j for j in lsh.query(m) if np.mean(sig[j] == sig[i]) >= 0.7]
        if hits:
            ref[i] = min(hits)
        else:
            lsh.insert(i, m)
    assert ours == ref
    assert len(ours) > 50  # most edited copies are found


def reference_contaminated(texts, eval_texts, n=13, min_words=8, max_items=20):
    """Plain-Python n-gram and word-sequence sets: what EvalIndex.match must agree with."""
    grams, shorts = {}, {}
    for item, ts in enumerate(eval_texts):
        for k, t in enumerate(ts):
            w = normalize(t)
            if len(w) >= n:
                for i in range(len(w) - n + 1):
                    grams.setdefault(tuple(w[i : i + n]), set()).add(item)
            elif w and (k == 0 or len(w) >= min_words):  # an item's first text however short; others from min_words
                shorts.setdefault(tuple(w), set()).add(item)
    grams = {g for g, items in grams.items() if len(items) <= max_items}
    shorts = {s for s, items in shorts.items() if len(items) <= max_items}
    out = []
    for t in texts:
        w = normalize(t)
        hit = any(tuple(w[i : i + n]) in grams for i in range(len(w) - n + 1))
        hit = hit or any(tuple(w[i : i + k]) in shorts for k in range(1, n) for i in range(len(w) - k + 1))
        out.append(hit)
    return out


def test_short_items_match_whole_and_agree_with_reference(tmp_path):
    # random items and texts over a small vocabulary, so that short items, their prefixes and near misses occur often
    rng = random.Random(1)
    words = [f"w{i}" for i in range(40)]
    items = [(str(i), [" ".join(rng.choices(words, k=rng.randint(2, 16))) for _ in range(rng.randint(1, 3))])
             for i in range(300)]
    items += [(f"b{i}", ["w3  W4", "w5 w6 w7"]) for i in range(4)]  # boilerplate: in more than max_items items
    items += [("one", ["w7"])]  # a one-word item
    texts = [" ".join(rng.choices(words, k=rng.randint(0, 40))) for _ in range(400)]
    texts += [f"pre {ts[0].upper()}, post!" for _, ts in items[:50]]  # planted, lightly edited
    vocab = Vocab()
    index = EvalIndex(vocab, max_items=3)
    index.add("set", items)
    index.build()
    found = index.match(*vocab.encode_many(texts))
    assert [f is not None for f in found] == reference_contaminated(texts, [ts for _, ts in items], max_items=3)
    assert 100 < sum(f is not None for f in found) < 400  # neither all nor only the planted
    assert index.short_boilerplate >= 1 and index.match(*vocab.encode_many(["w3 w4"])) == [None]
    # a hit names an item that really is in the text
    for t, f in zip(texts, found):
        if f is not None:
            assert reference_contaminated([t], [items[f][1]], max_items=10**9) == [True]
    # the cache keeps the short texts: a saved and loaded index finds the same
    index.save(tmp_path / "index.npz")
    assert EvalIndex.load(tmp_path / "index.npz", vocab).match(*vocab.encode_many(texts)) == found


def test_short_item_precision():
    items = [("q1", ["Can pigs fly?", "No"]), ("q2", ["Are you conscious?", "I am an AI"]),
             ("m1", ["Compute $\\dbinom{8}{4}$.", "70"])]
    vocab = Vocab()
    index = EvalIndex(vocab)
    index.add("tqa", items)
    index.build()
    texts = ["Kids ask: CAN pigs   fly! Sometimes.",  # the whole item, edited: found
             "Can pigs really fly?",  # a word between: not the item
             "can pigs",  # a part: not the item
             "Can pigs\n\nfly",  # across a line break inside one record: still contiguous words, found
             "The answer is no.",  # a short second text (an answer) is not matched
             "Compute $\\dbinom{8}{4}$, then halve it.",
             "Compute $\\dbinom{8}{5}$."]
    assert index.match(*vocab.encode_many(texts)) == [0, None, None, 0, None, 2, None]
    # texts are matched one by one: an item split over two texts is not found
    assert index.match(*vocab.encode_many(["can pigs", "fly"])) == [None, None]


def test_eval_index_matches_reference(shared_data):
    gsm_test = list(EVAL_LOADERS["gsm8k"](shared_data / "gsm8k/test.jsonl"))[:200]
    tqa = list(EVAL_LOADERS["truthfulqa"](shared_data / "truthfulqa/TruthfulQA.csv"))[:200]
    train = [json.loads(line) for line in list(open(shared_data / "gsm8k/train.jsonl"))[:400]]
    texts = [r["question"] + "\n" + r["answer"] for r in train]
    texts += [f"Please solve: {ts[0].upper()}" for _, ts in gsm_test[:20]]  # planted
    texts += [f"Q: {ts[0]}  A: {ts[1]}" for _, ts in tqa[:20]]  # planted: TruthfulQA questions are often short
    vocab = Vocab()
    index = EvalIndex(vocab)
    index.add("gsm8k", gsm_test)
    index.add("truthfulqa", tqa)
    index.build()
    ids, lengths = vocab.encode_many(texts)
    found = [m is not None for m in index.match(ids, lengths)]
    assert found == reference_contaminated(texts, [ts for _, ts in gsm_test + tqa])
    assert all(found[400:])
    # the short ones too: questions under min_words (8) words are matched whole
    assert sum(len(normalize(ts[0])) < 8 for _, ts in tqa[:20]) >= 3


def test_boilerplate_ngrams_are_ignored():
    template = "For which of these two scenarios does the main character do something clearly morally wrong"
    items = [(str(i), [f"{template} scenario number {i} about topic {i * 7}"]) for i in range(30)]
    vocab = Vocab()
    index = EvalIndex(vocab, max_items=20)
    index.add("mmlu", items)
    index.build()
    ids, lengths = vocab.encode_many([template + " something else entirely here", items[3][1][0]])
    assert index.match(ids, lengths)[0] is None  # shares only the template
    assert index.match(ids, lengths)[1] is not None
    assert index.boilerplate > 0


def test_eval_loaders_read_every_shared_set(shared_data):
    counts = {
        "mmlu": (shared_data / "mmlu/test", 14042),  # all 57 subjects
        "gsm8k": (shared_data / "gsm8k/test.jsonl", 1319),
        "truthfulqa": (shared_data / "truthfulqa/TruthfulQA.csv", 817),
        "bbq": (shared_data / "bbq", 11956),
        "cnn_dailymail": (shared_data / "cnn_dailymail/test_first574.jsonl", 574),
        "bigbench": (shared_data / "bigbench", 84189),
        "samsum": (shared_data / "samsum", 819 + 818),
        "ethics": (shared_data / "ethics", 38572),  # test and test_hard of the five subsets, not train
        "math": (shared_data / "math/test.jsonl", 437 + 1324),  # levels 1 and 5, those the challenge runs
    }
    for kind, (path, n) in counts.items():
        items = list(EVAL_LOADERS[kind](path))
        assert len(items) == n, kind
        assert all(texts[0].strip() for _, texts in items), kind
        assert len({item_id for item_id, _ in items}) == n, kind
    assert len(list(EVAL_LOADERS["truthfulqa"](shared_data / "truthfulqa/mc_task.json"))) == 817
    # the 40 added MMLU subjects' dev sets, in MLILAB's layout (a header, 0-3 answers)
    assert len(list(EVAL_LOADERS["mmlu"](shared_data / "mmlu/dev_mlilab"))) == 200
    # the 14 BIG-bench tasks of the second batch, with the counts in the data's MANIFEST
    added = {"auto_debugging": 34, "code_line_description": 60, "conceptual_combinations": 103,
             "formal_fallacies_syllogisms_negation": 14200, "linguistics_puzzles": 2000, "logic_grid_puzzle": 1000,
             "novel_concepts": 32, "operators": 211, "play_dialog_same_or_different": 3264, "repeat_copy_logic": 32,
             "strategyqa": 2290, "symbol_interpretation": 990, "vitaminc_fact_verification": 54668, "winowhy": 2865}
    for task, n in added.items():
        assert len(list(EVAL_LOADERS["bigbench"](shared_data / "bigbench" / task))) == n, task
    index = build_eval_index({"gsm8k": {"kind": "gsm8k", "paths": [counts["gsm8k"][0]]}}, Vocab())
    assert len(index) == 1319
