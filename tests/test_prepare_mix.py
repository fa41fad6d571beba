"""scripts/prepare_mix.py: decontamination of a 5,000-record mix with planted evaluation items, dedup, sampling,
the manifest, and the shipped demo config."""

import csv
import json
import random
import re
from pathlib import Path

import pytest
import yaml

from lit_gpt.data import SplitDataset
from lit_gpt.utils import UserError
from scripts.prepare_mix import main as mix_main
from scripts.prepare_mix import setup as prepare_mix
from tests.test_decontaminate import reference_contaminated

ROOT = Path(__file__).resolve().parents[1]


def chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def light_edit(text: str, how: int) -> str:
    if how == 0:
        return text.upper()
    if how == 1:
        return re.sub(r"[^\w\s]", "", text)  # punctuation removed
    if how == 2:
        return re.sub(r" ", "   ", text).replace("\n", " \n\n ")  # whitespace
    return text.lower().replace(".", " !")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_planted_eval_items_are_removed_and_nothing_else(shared_data, tmp_path, smol_dir):
    rng = random.Random(0)
    # 4,900 clean records: GSM8K train, Dolly, MMLU dev; "clean" checked with the plain-Python reference
    gsm_train = [json.loads(line) for line in open(shared_data / "gsm8k/train.jsonl")]
    pool = [chat(r["question"], r["answer"]) for r in gsm_train[:5200]]
    pool += [chat(r["instruction"], r["response"]) for r in json.loads((shared_data / "dolly/dolly_sample12_litgpt_fixture.json").read_text())]
    for f in sorted((shared_data / "mmlu/dev").glob("*.csv")):
        for row in csv.reader(open(f, newline="")):
            pool.append(chat("Question: " + row[0] + "\n" + "\n".join(f"{'ABCD'[i]}. {o}" for i, o in enumerate(row[1:5])), row[5]))
    gsm_test = [json.loads(line) for line in open(shared_data / "gsm8k/test.jsonl")]
    mmlu_rows = [(f.name, row) for f in sorted((shared_data / "mmlu/test").glob("*.csv")) for row in csv.reader(open(f, newline=""))]
    eval_texts = [[r["question"], r["answer"]] for r in gsm_test]
    eval_texts += [[row[0], "\n".join(row[:5]), "\n".join([row[0]] + [f"{'ABCD'[i]}. {o}" for i, o in enumerate(row[1:5])])]
                   for _, row in mmlu_rows]
    texts = ["\n".join(m["content"] for m in r["messages"]) for r in pool]
    dirty = reference_contaminated(texts, eval_texts)
    clean = [r for r, d in zip(pool, dirty) if not d][:4900]
    assert len(clean) == 4900 and sum(dirty) < 60  # a few GSM8K train / MMLU dev items really overlap the test sets

    # 100 planted: 50 GSM8K test problems, 50 MMLU test questions in HELM's prompt shape; half lightly edited
    planted = []
    for k, r in enumerate(rng.sample(gsm_test, 50)):
        q = light_edit(r["question"], k % 4) if k % 2 else r["question"]
        planted.append(chat(q, r["answer"]))
    for k, (name, row) in enumerate(rng.sample(mmlu_rows, 50)):
        q = "Question: " + row[0] + "\n" + "\n".join(f"{'ABCD'[i]}. {o}" for i, o in enumerate(row[1:5])) + "\nAnswer:"
        planted.append(chat(light_edit(q, k % 4) if k % 2 else q, row[5]))
    write_jsonl(tmp_path / "clean.jsonl", clean)
    write_jsonl(tmp_path / "planted.jsonl", planted)
    cfg = {
        "seed": 3,
        "val_fraction": 0.02,
        "max_seq_length": 256,
        "sources": [{"name": "clean", "prepare": "jsonl", "source": str(tmp_path / "clean.jsonl"), "args": {"messages_key": "messages"}},
                    {"name": "planted", "prepare": "jsonl", "source": str(tmp_path / "planted.jsonl"), "args": {"messages_key": "messages"}}],
        "dedup": {"exact": True, "near": False},
        "decontaminate": {"eval_sets": {
            "gsm8k": str(shared_data / "gsm8k/test.jsonl"), "mmlu": str(shared_data / "mmlu/test"),
            "truthfulqa": str(shared_data / "truthfulqa/TruthfulQA.csv"), "bbq": str(shared_data / "bbq"),
            "cnn_dailymail": str(shared_data / "cnn_dailymail/test_first574.jsonl"), "bigbench": str(shared_data / "bigbench")}},
    }
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(cfg))
    manifest = prepare_mix(tmp_path / "mix.yaml", smol_dir, tmp_path / "out", num_workers=2)

    clean_m, planted_m = manifest["sources"]
    assert planted_m["contaminated"] == 100 and planted_m["contaminated_by"] == {"gsm8k": 50, "mmlu": 50}
    assert planted_m["records_out"] == 0
    assert clean_m["contaminated"] == 0
    assert clean_m["records_out"] == 4900 - clean_m["exact_duplicates"] - clean_m["tokenization_skipped"]
    dropped = [json.loads(line) for line in open(tmp_path / "out/dropped.jsonl")]
    contaminated = [d for d in dropped if d["reason"] == "contaminated"]
    assert sorted(int(d["id"].rsplit(":", 1)[1]) for d in contaminated) == list(range(1, 101))
    assert all(d["source"] == "planted" for d in contaminated)
    md = (tmp_path / "out/manifest.md").read_text()
    assert "| source | bbq | bigbench | cnn_dailymail | gsm8k | mmlu | truthfulqa |" in md  # safe_dump sorts keys
    assert "| planted | 0 | 0 | 0 | 50 | 50 | 0 |" in md
    assert len(SplitDataset(tmp_path / "out", "train")) + len(SplitDataset(tmp_path / "out", "val")) == clean_m["records_out"]

    # Again, in this process (tokenizing in a thread while deduplicating) with the evaluation index from the cache
    # the first run left: the same mix, example for example.
    assert manifest["decontaminate"]["index_from_cache"] is None
    again = prepare_mix(tmp_path / "mix.yaml", smol_dir, tmp_path / "again", num_workers=0)
    assert again["decontaminate"]["index_from_cache"]
    assert again["sources"] == manifest["sources"] and again["totals"] == manifest["totals"]
    for split in ("train", "val"):
        a, b = SplitDataset(tmp_path / "out", split), SplitDataset(tmp_path / "again", split)
        assert all((a[i]["input_ids"] == b[i]["input_ids"]).all() and (a[i]["labels"] == b[i]["labels"]).all()
                   for i in range(len(a))) and len(a) == len(b)


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
           "dedup": {"threshold": 0.8}}
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
    cfg = {"val_fraction": 0, "sources": [{"name": "a", "prepare": "jsonl", "source": str(tmp_path / "a.jsonl"), "args": {"messages_key": "messages"}}]}
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
    if (ROOT.parent / "shared/data/gsm8k").is_dir():
        assert m["decontaminate"]["eval_sets_missing"] == [] and m["decontaminate"]["eval_sets"]["gsm8k"]["items"] == 1319


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
