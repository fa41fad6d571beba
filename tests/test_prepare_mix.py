"""scripts/prepare_mix.py: decontamination of a 5,000-record mix with planted evaluation items, dedup, sampling,
the manifest, and the shipped demo config."""

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import yaml

from bench.decontaminate import chat, clean_mix, light_edit, plant, text_of
from lit_gpt.data import SplitDataset
from lit_gpt.decontaminate import Vocab, build_eval_index, default_cache_dir, normalize
from lit_gpt.eval_loaders import DEFAULT_EVAL_SETS, EVAL_LOADERS, default_eval_sets
from lit_gpt.utils import UserError
from scripts.prepare_mix import main as mix_main
from scripts.prepare_mix import setup as prepare_mix
from tests.test_decontaminate import reference_contaminated

ROOT = Path(__file__).resolve().parents[1]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def jsonl_source(name: str, path: Path) -> dict:
    return {"name": name, "prepare": "jsonl", "source": str(path), "args": {"messages_key": "messages"}}


def planted_mix(tmp_path: Path, clean: list[dict], carriers: list[dict], sets: dict[str, dict], per_set: int,
                short: int, rng: random.Random) -> tuple[Path, list[tuple[str, str, str]]]:
    """A mix config of the clean records and, in a second source, `per_set` items of each evaluation set plus up to
    `short` of its items under 8 words, each lightly edited into a carrier record. Returns it and the planted
    (set, item id, text) in order."""
    chosen = []
    for name, spec in sets.items():
        items = [(i, ts[0]) for p in spec["paths"] for i, ts in EVAL_LOADERS[spec["kind"]](p) if ts[0].strip()]
        shorts = [it for it in items if len(normalize(it[1])) < 8]
        picked = rng.sample(items, min(per_set, len(items))) + rng.sample(shorts, min(short, len(shorts)))
        chosen += [(name, i, t) for i, t in dict(picked).items()]
    planted = [plant(carriers[k % len(carriers)], light_edit(t, k % 4), k) for k, (_, _, t) in enumerate(chosen)]
    write_jsonl(tmp_path / "clean.jsonl", clean)
    write_jsonl(tmp_path / "planted.jsonl", planted)
    return tmp_path / "clean.jsonl", chosen


def check_planted_report(out: Path, manifest: dict, chosen: list[tuple[str, str, str]], sets: dict[str, dict]) -> None:
    """Every planted record dropped as contaminated, listed in dropped.jsonl with an item whose text it holds, and
    counted in the manifest under that item's set."""
    clean_m, planted_m = manifest["sources"]
    assert planted_m["contaminated"] == len(chosen) and planted_m["records_out"] == 0
    assert clean_m["contaminated"] == 0
    dropped = {d["id"]: d for d in map(json.loads, open(out / "dropped.jsonl")) if d["reason"] == "contaminated"}
    assert len(dropped) == len(chosen) and all(d["source"] == "planted" for d in dropped.values())
    texts = {(name, i): ts for name, spec in sets.items() for p in spec["paths"]
             for i, ts in EVAL_LOADERS[spec["kind"]](p)}
    by_set = Counter()
    for k, (name, item_id, text) in enumerate(chosen):
        d = dropped[f"{out.parent / 'planted.jsonl'}:{k + 1}"]
        by_set[d["eval_set"]] += 1
        # the item named is the planted one, or another whose text the planted text also holds (MMLU's
        # moral_scenarios come from ETHICS, for one)
        if (d["eval_set"], d["eval_item"]) != (name, item_id):
            assert reference_contaminated([text], [texts[d["eval_set"], d["eval_item"]]], max_items=10**9) == [True]
    assert planted_m["contaminated_by"] == dict(by_set) and manifest["totals"]["contaminated_by"] == dict(by_set)
    md = (out / "manifest.md").read_text()
    assert "| source | " + " | ".join(sets) + " |" in md
    assert "| planted | " + " | ".join(str(by_set[n]) for n in sets) + " |" in md


def test_planted_items_of_every_eval_set_are_removed_and_reported(shared_data, tmp_path, smol_dir):
    """Items of every evaluation set the final ranking scores (the defaults), short TruthfulQA / MATH / ETHICS /
    BIG-bench ones among them, lightly edited into a real ~5,000-record mix of training splits: all dropped and
    reported, and nothing else. (bench/decontaminate.py plants every item.)"""
    rng = random.Random(0)
    mix = clean_mix(shared_data)
    sets, missing = default_eval_sets(shared_data)
    vocab = Vocab()
    index = build_eval_index(sets, vocab, cache_dir=default_cache_dir())  # the cache prepare_mix then reads
    flagged = index.match(*vocab.encode_many(text_of(r) for r in mix))
    clean = [r for r, f in zip(mix, flagged) if f is None]
    # training splits do overlap the evaluation splits here and there (ETHICS train and test share scenarios)
    assert len(clean) > 4500
    cfg_path, chosen = planted_mix(tmp_path, clean[:-300], clean[-300:], sets, per_set=20, short=15, rng=rng)
    assert len(chosen) > 200 and sum(name == "truthfulqa" and len(normalize(t)) < 8 for name, _, t in chosen) >= 15
    cfg = {"seed": 3, "val_fraction": 0.02, "max_seq_length": 256,
           "sources": [jsonl_source("clean", cfg_path), jsonl_source("planted", tmp_path / "planted.jsonl")],
           "dedup": {"exact": True, "near": False}, "decontaminate": {"eval_data_dir": str(shared_data)}}
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(cfg))
    manifest = prepare_mix(tmp_path / "mix.yaml", smol_dir, tmp_path / "out", num_workers=0)
    assert manifest["decontaminate"]["index_from_cache"]  # built above: the same sets and settings
    assert manifest["decontaminate"]["eval_sets_missing"] == missing
    assert {n: e["items"] for n, e in manifest["decontaminate"]["eval_sets"].items()} == dict(index.counts)
    check_planted_report(tmp_path / "out", manifest, chosen, sets)
    clean_m = manifest["sources"][0]
    assert clean_m["records_out"] == len(clean) - 300 - clean_m["exact_duplicates"] - clean_m["tokenization_skipped"]
    assert len(SplitDataset(tmp_path / "out", "train")) + len(SplitDataset(tmp_path / "out", "val")) == clean_m["records_out"]


def test_planted_items_of_each_family_on_tiny_data(tmp_path, smol_dir):
    """The same on a few hand-written items of each new family (and short TruthfulQA questions), in an eval data dir
    laid out like ../shared/data, with the defaults: no shared data needed."""
    data = tmp_path / "data"
    files = {
        "samsum/test.csv": 'id,summary,dialogue\r\n1,Sean overslept.,"Sean: I overslept :/\r\nSam: Again??"\r\n',
        "ethics/justice/justice_test.csv": "label,scenario\n1,I deserve a raise because I worked hard.\n",
        "ethics/virtue/virtue_test_hard.csv": "label,scenario\n1,Martha was totally at ease with her. [SEP] trustful\n",
        "math/test.jsonl": json.dumps({"problem": "Compute $\\dbinom{8}{4}$.", "solution": "70", "level": "Level 1"}) + "\n",
        "corr2cause/test.jsonl": json.dumps({"input": "Premise: A correlates with B.\nHypothesis: A causes B.", "label": 0}) + "\n",
        "truthfulqa/TruthfulQA.csv": "Type,Category,Question,Best Answer\nA,Misc,Can pigs fly?,No\nA,Misc,Who are you?,An AI\n",
        "mmlu/test/econ_test.csv": "Inflation,up,down,flat,none,A\n",
    }
    for name, text in files.items():
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes(text.encode())
    carriers = [chat(f"Tell me about the ocean's creature number {i}, please.", f"It is creature {i}.") for i in range(20)]
    sets = default_eval_sets(data)[0]
    cfg_path, chosen = planted_mix(tmp_path, carriers[:12], carriers[12:], sets, 5, 5, random.Random(0))
    assert len(chosen) == 8
    cfg = {"val_fraction": 0,
           "sources": [jsonl_source("clean", cfg_path), jsonl_source("planted", tmp_path / "planted.jsonl")],
           "dedup": {"exact": True, "near": False}, "decontaminate": {"eval_data_dir": str(data), "cache": False}}
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(cfg))
    manifest = prepare_mix(tmp_path / "mix.yaml", smol_dir, tmp_path / "out", num_workers=1)
    check_planted_report(tmp_path / "out", manifest, chosen, sets)
    assert manifest["sources"][1]["contaminated_by"] == {"samsum": 1, "ethics": 2, "math": 1, "corr2cause": 1,
                                                         "truthfulqa": 2, "mmlu": 1}
    assert manifest["sources"][0]["records_out"] == 12
    assert sorted(manifest["decontaminate"]["eval_sets_missing"]) == ["bbq", "bigbench", "cnn_dailymail", "gsm8k"]
    assert "**Not checked (not found):** gsm8k, bbq, cnn_dailymail, bigbench" in (tmp_path / "out/manifest.md").read_text()


def test_dedup_sampling_and_determinism(tmp_path, smol_dir):
    rows = [chat(f"Tell me fact number {i} about the ocean and its many strange creatures.", f"Fact {i}: water is wet, number {i * 3}.")
            for i in range(40)]
    rows += [rows[0], rows[1]]  # exact duplicates
    rows.append(chat("TELL ME fact number 2 about the ocean, and its many strange creatures!", "Fact 2: water is wet, number 6."))
    write_jsonl(tmp_path / "a.jsonl", rows)
    write_jsonl(tmp_path / "b.jsonl", [chat(f"Unrelated question {i} about mountains and valleys far away?", f"Answer {i}.") for i in range(10)])
    cfg = {"seed": 1, "val_fraction": 0.1,
           "sources": [{"name": "a", "prepare": "jsonl", "source": str(tmp_path / "a.jsonl"), "args": {"messages_key": "messages"}, "weight": 0.5},
                       {"name": "b", "prepare": "jsonl", "source": str(tmp_path / "b.jsonl"), "args": {"messages_key": "messages"}, "records": 25}],
           "dedup": {"threshold": 0.8}, "decontaminate": {"eval_sets": {}}}
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(cfg))
    m1 = prepare_mix(tmp_path / "mix.yaml", smol_dir, tmp_path / "o1", num_workers=1)
    a, b = m1["sources"]
    assert a["exact_duplicates"] == 3  # two copies, and the case/punctuation variant (equal once normalized)
    assert a["available"] == 40 and a["selected"] == 20
    # 25 of 10 = every record twice + 5 of them a third time; the one val record is not repeated into train
    assert b["selected"] == 25 and b["val"] == 1 and b["train"] in (22, 23)
    kept = [json.loads(line) for line in open(tmp_path / "o1/records.jsonl")]
    val_ids = {r["id"] for r in kept if r["split"] == "val"}
    assert not val_ids & {r["id"] for r in kept if r["split"] == "train"}
    m2 = prepare_mix(tmp_path / "mix.yaml", smol_dir, tmp_path / "o2", num_workers=2)
    assert (tmp_path / "o1/records.jsonl").read_text() == (tmp_path / "o2/records.jsonl").read_text()
    assert m1["sources"] == m2["sources"]


def test_near_duplicates_dropped(tmp_path, smol_dir):
    base = ("The committee met on Tuesday to discuss the new budget for the school library and agreed to buy more books "
            "for the children. It also asked the head teacher to look for volunteers who could keep the library open "
            "after lessons, and it set aside a small sum for new chairs, two computers and a printer for the pupils.")
    rows = [chat("Summarize the meeting notes below.\n" + base, "They agreed to buy more library books."),
            chat("Summarize the meeting notes below.\n" + base.replace("Tuesday", "Monday"), "They agreed to buy more library books."),  # Jaccard ~0.9
            chat("What is the capital of France and why is it famous?", "Paris, for its art and history.")]
    write_jsonl(tmp_path / "a.jsonl", rows)
    cfg = {"val_fraction": 0, "sources": [{"name": "a", "prepare": "jsonl", "source": str(tmp_path / "a.jsonl"), "args": {"messages_key": "messages"}}],
           "decontaminate": {"eval_sets": {}}}
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(cfg))
    m = prepare_mix(tmp_path / "mix.yaml", smol_dir, tmp_path / "o", num_workers=1)
    assert m["sources"][0]["near_duplicates"] == 1 and m["sources"][0]["records_out"] == 2
    dropped = [json.loads(line) for line in open(tmp_path / "o/dropped.jsonl")]
    assert dropped[0]["reason"] == "near duplicate" and dropped[0]["of"].endswith(":1")


def test_demo_config_and_cli(tmp_path, monkeypatch, capsys, smol_dir):
    monkeypatch.chdir(ROOT)
    mix_main(["--config", "examples/mix_demo.yaml", "--checkpoint_dir", str(smol_dir), "--out_dir", str(tmp_path / "demo"),
              "--num_workers", "1"])
    m = json.loads((tmp_path / "demo/manifest.json").read_text())
    sample = m["sources"][0]
    assert sample["malformed"] == 2 and sample["exact_duplicates"] == 1 and sample["near_duplicates"] == 1
    assert len(SplitDataset(tmp_path / "demo", "train")) == m["totals"]["train_records"] > 50
    err = capsys.readouterr().err
    assert "examples/sample_instructions.jsonl:63: empty 'output'" in err
    # the defaults: every family the final ranking scores, those absent listed
    shared = ROOT.parent / "shared/data"
    d = m["decontaminate"]
    assert d["eval_sets_missing"] == [n for n, (_, rel) in DEFAULT_EVAL_SETS.items() if not (shared / rel).exists()]
    assert sorted(d["eval_sets_missing"] + list(d["eval_sets"])) == sorted(DEFAULT_EVAL_SETS)
    if (shared / "gsm8k").is_dir():
        assert d["eval_sets"]["gsm8k"]["items"] == 1319 and d["eval_sets"]["ethics"]["items"] == 38572


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    for text, msg in [("sources: []", "non-empty 'sources'"),
                      ("sources: [{prepare: nope, source: x}]", "unknown prepare kind"),
                      ("sources: [{dir: x, prepare: jsonl}]", "either 'dir'"),
                      ("sources: [{dir: x, weight: 1, records: 2}]", "not both"),
                      ("sources: [{dir: x}]\nshuffle: 1", "unknown key")]:
        bad.write_text(text)
        with pytest.raises(UserError, match=msg):
            prepare_mix(bad, tmp_path, tmp_path / "o")
    bad.write_text("sources: [{dir: " + str(tmp_path / "nowhere") + "}]")
    with pytest.raises(UserError, match="records.jsonl does not exist"):
        prepare_mix(bad, tmp_path, tmp_path / "o")
