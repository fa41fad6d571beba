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


def test_encode_many_gives_the_words_of_normalize():
    # Arrow's kernels (RE2, its whitespace split) must cut exactly the words Python's `normalize` does
    texts = ["Tom's  CAR,\n red.", "", "   ", "###\nArticle: (CNN)Share, and-your gift", "naïve café ÉTÉ", "e\u0301te\u0301",
             "a\u00a0b\u2003c\u3000d", "x\x1cy\x85z\u200bq", "tab\there\vv\fw\rx", "ß ǅ İstanbul", "١٢٣ ½ ² ⅷ", "snake_case",
             "emoji 🙂 ok", "“curly” ‘quotes’ — dash…", "中文，标点。", "trailing   "]
    rng = random.Random(0)
    alphabet = "aZ9_ .,'\n\t-é\u00a0\u2003\x85ß!?()“”"
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
    """Plain-Python n-gram sets: what EvalIndex.match must agree with."""
    grams, shorts = {}, {}
    for item, ts in enumerate(eval_texts):
        for t in ts:
            w = normalize(t)
            if len(w) >= n:
                for i in range(len(w) - n + 1):
                    grams.setdefault(tuple(w[i : i + n]), set()).add(item)
            elif len(w) >= min_words:
                shorts.setdefault(len(w), set()).add(tuple(w))
    grams = {g for g, items in grams.items() if len(items) <= max_items}
    out = []
    for t in texts:
        w = normalize(t)
        hit = any(tuple(w[i : i + n]) in grams for i in range(len(w) - n + 1))
        hit = hit or any(tuple(w[i : i + k]) in s for k, s in shorts.items() for i in range(len(w) - k + 1))
        out.append(hit)
    return out


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
    assert all(found[400:420])
    # items whose texts are all shorter than min_words (8) cannot be told from ordinary phrases: not matched
    long_enough = [any(len(normalize(t)) >= 8 for t in ts) for _, ts in tqa[:20]]
    assert found[420:] == long_enough and sum(long_enough) >= 15


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
        "mmlu": (shared_data / "mmlu/test", 4972),
        "gsm8k": (shared_data / "gsm8k/test.jsonl", 1319),
        "truthfulqa": (shared_data / "truthfulqa/TruthfulQA.csv", 817),
        "bbq": (shared_data / "bbq", 11956),
        "cnn_dailymail": (shared_data / "cnn_dailymail/test_first574.jsonl", 574),
        "bigbench": (shared_data / "bigbench", 2440),
    }
    for kind, (path, n) in counts.items():
        items = list(EVAL_LOADERS[kind](path))
        assert len(items) == n, kind
        assert all(any(t.strip() for t in texts) for _, texts in items), kind
    assert len(list(EVAL_LOADERS["truthfulqa"](shared_data / "truthfulqa/mc_task.json"))) == 817
    index = build_eval_index({"gsm8k": {"kind": "gsm8k", "paths": [counts["gsm8k"][0]]}}, Vocab())
    assert len(index) == 1319
