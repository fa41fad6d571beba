"""The scripts/prepare_*.py scripts on the real files in ../shared/data: shards decode back to the source fields,
labels cover exactly the assistant turns, stats.json adds up, OASST threads are right, bad input is reported."""

import csv
import json
from pathlib import Path

import pytest

from lit_gpt.data import IGNORE_INDEX, SplitDataset
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.utils import UserError
from lit_gpt import sources
from scripts import prepare_cnn_dailymail, prepare_dolly, prepare_flan, prepare_gsm8k, prepare_jsonl, prepare_lima
from scripts import prepare_mmlu_style, prepare_oasst

COMMON = dict(val_fraction=0.1, seed=1, max_seq_length=2048, num_workers=1)


def examples_with_records(out_dir: Path):
    """(example, record) pairs in shard order: records.jsonl lists the kept records split by split, in order."""
    records = [json.loads(line) for line in open(out_dir / "records.jsonl", encoding="utf-8")]
    pairs = []
    for split in ("train", "val"):
        recs = [r for r in records if r["split"] == split]
        ds = SplitDataset(out_dir, split)
        assert len(ds) == len(recs)
        pairs += list(zip(ds, recs))
    return pairs


def check_prepared(checkpoint_dir: Path, out_dir: Path, stats: dict, source_records: int, end: str = "<|im_end|>") -> list:
    tok = Tokenizer(checkpoint_dir)
    on_disk = json.loads((out_dir / "stats.json").read_text())
    assert on_disk == json.loads(json.dumps(stats))
    assert stats["read"] == source_records
    assert stats["records"] == stats["read"] - stats["skipped"]["total"]
    assert stats["records"] == stats["train"]["records"] + stats["val"]["records"]
    pairs = examples_with_records(out_dir)
    assert len(pairs) == stats["records"]
    tokens, truncated = 0, 0
    for ex, rec in pairs:
        ids, labels = ex["input_ids"].tolist(), ex["labels"].tolist()
        tokens += len(ids)
        assert all(y in (IGNORE_INDEX, x) for x, y in zip(ids, labels))
        # -100 exactly on the non-assistant tokens: the labelled ids decode to the assistant turns alone
        label_text = tok.decode([y for y in labels if y != IGNORE_INDEX])
        expected = "".join(t["content"] + end for t in rec["turns"] if t["role"] == "assistant")
        if len(ids) == stats["max_seq_length"]:  # truncated: a prefix of it
            truncated += 1
            assert expected.startswith(label_text.rstrip("\ufffd"))
            continue
        assert label_text == expected
        text = tok.decode(ids)
        for t in rec["turns"]:
            assert t["content"] in text
    assert truncated == stats["truncated"]
    assert tokens == stats["tokens"]
    return pairs


def test_gsm8k_train(shared_data, tmp_path, smol_dir):
    src = shared_data / "gsm8k/train.jsonl"
    stats = prepare_gsm8k.setup(source=src, checkpoint_dir=smol_dir, out_dir=tmp_path, max_records=150, **COMMON)
    pairs = check_prepared(smol_dir, tmp_path, stats, 150)
    rows = [json.loads(line) for line in open(src)][:150]
    by_question = {r["question"].strip(): r["answer"].strip() for r in rows}
    for _, rec in pairs:  # decodes back to the source fields
        assert by_question[rec["turns"][0]["content"]] == rec["turns"][1]["content"]
    assert stats["skipped"]["total"] == 0


def test_parquet_source_gives_the_jsonl_records(shared_data, tmp_path):
    """Hub datasets mostly ship parquet: the same rows as parquet load to the same records as the JSONL."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    src = shared_data / "gsm8k/train.jsonl"
    rows = [json.loads(line) for line in open(src)][:30]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    from_parquet = sources.gsm8k.load([tmp_path / "train.parquet"])
    from_jsonl = sources.gsm8k.load([src], max_records=30)
    assert from_parquet.read == from_jsonl.read == 30
    assert [r["turns"] for r in from_parquet.records] == [r["turns"] for r in from_jsonl.records]


def test_gsm8k_clean_answer_format():
    raw = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nAltogether 48+24 = <<48+24=72>>72.\n#### 72"
    assert sources.gsm8k.format_answer(raw, "clean") == "Natalia sold 48/2 = 24 clips in May.\nAltogether 48+24 = 72.\nThe answer is 72."


def test_dolly_json_array(shared_data, tmp_path, smol_dir):
    src = shared_data / "dolly/dolly_sample12_litgpt_fixture.json"
    stats = prepare_dolly.setup(source=src, checkpoint_dir=smol_dir, out_dir=tmp_path, **COMMON)
    pairs = check_prepared(smol_dir, tmp_path, stats, 12)
    rows = json.loads(src.read_text())
    for _, rec in pairs:
        row = rows[int(rec["id"].rsplit("#", 1)[1])]
        assert rec["turns"][0]["content"].startswith(row["instruction"].strip())
        if row["context"].strip():
            assert rec["turns"][0]["content"].endswith(row["context"].strip())
        assert rec["turns"][1]["content"] == row["response"].strip()


def test_cnn_dailymail(shared_data, tmp_path, smol_dir):
    src = shared_data / "cnn_dailymail/validation_first668.jsonl"
    stats = prepare_cnn_dailymail.setup(source=src, checkpoint_dir=smol_dir, out_dir=tmp_path, max_records=12, **COMMON)
    pairs = check_prepared(smol_dir, tmp_path, stats, 12)
    rows = {json.loads(line)["highlights"].strip(): json.loads(line)["article"].strip() for line in list(open(src))[:12]}
    for _, rec in pairs:
        user, answer = rec["turns"][0]["content"], rec["turns"][1]["content"]
        assert user == f"###\nArticle: {rows[answer]}\n\nSummarize the above article in 3 sentences."


def test_mmlu_style_helm_prompt(shared_data, tmp_path, smol_dir):
    src = shared_data / "mmlu/dev"
    stats = prepare_mmlu_style.setup(source=src, checkpoint_dir=smol_dir, out_dir=tmp_path, **COMMON)
    pairs = check_prepared(smol_dir, tmp_path, stats, 85)
    f = src / "philosophy_dev.csv"
    row = next(csv.reader(open(f, newline="")))
    rec = next(r for _, r in pairs if r["id"] == f"{f}:1")
    assert rec["turns"][0]["content"] == (
        "The following are multiple choice questions (with answers) about philosophy.\n\n"
        f"Question: {row[0].strip()}\nA. {row[1]}\nB. {row[2]}\nC. {row[3]}\nD. {row[4]}\nAnswer:")
    assert rec["turns"][1]["content"] == row[5]


def test_oasst_threads(shared_data, tmp_path, smol_dir):
    src = shared_data / "oasst/en_100_tree.jsonl"
    stats = prepare_oasst.setup(source=src, checkpoint_dir=smol_dir, out_dir=tmp_path, **COMMON)
    pairs = check_prepared(smol_dir, tmp_path, stats, 100)
    # trees 1, 7, 30, 46 and 93 were written by a model (synthetic: true): reported, not used
    assert stats["skipped"]["reasons"] == {"synthetic prompt": 5}
    by_id = {r["id"]: r for _, r in pairs}
    # hand-checked: tree 2 (ea201f57...): rank-0 answer, its first follow-up prompt, that prompt's rank-0 answer
    starts = [t["content"][:40] for t in by_id[f"{src}:2"]["turns"]]
    assert starts == ["How to protect my eyes when I have to st", "Your eyes are not designed to stare at o",
                      "Are blue light blocking glasses also eff", "There is no scientific research to prove"]
    # tree 3 (44f6d71c...): the rank-0 branch, not the rank-1 / rank-2 ones
    starts = [t["content"][:40] for t in by_id[f"{src}:3"]["turns"]]
    assert starts == ["What differences are there between ChatG", "Both ChatGPT and InstructGPT are auto-re",
                      "Can you provide me some sample code to a", "Sure. Here is some sample code in Python"]
    assert [t["role"] for t in by_id[f"{src}:3"]["turns"]] == ["user", "assistant"] * 2
    # every thread follows parent links in the source trees
    parent = {}

    def walk(node):
        for child in node.get("replies", []):
            parent[child["message_id"]] = node["message_id"]
            walk(child)

    for line in open(src):
        walk(json.loads(line)["prompt"])
    for _, rec in pairs:
        ids = rec["message_ids"]
        assert ids[0] not in parent
        assert all(parent[b] == a for a, b in zip(ids, ids[1:]))


def test_oasst_language_rank_deleted_and_flat_format(shared_data, tmp_path):
    trees = [json.loads(line) for line in open(shared_data / "oasst/en_100_tree.jsonl")]
    t2, t3 = trees[1], trees[2]
    t2["prompt"]["lang"] = "de"  # not English: skipped
    best = min(t3["prompt"]["replies"], key=lambda r: r["rank"])
    best["deleted"] = True  # the rank-0 answer is gone: the rank-1 one is used
    second = sorted(t3["prompt"]["replies"], key=lambda r: r["rank"])[1]
    path = tmp_path / "trees.jsonl"
    path.write_text("\n".join(json.dumps(t) for t in (t2, t3)) + "\n")
    out = sources.oasst.load([path])
    assert out.read == 2 and dict(out.skipped) == {"other language": 1}
    assert out.records[0]["turns"][1]["content"] == second["text"].strip()
    assert len(sources.oasst.load([path], lang=None).records) == 2

    # the flat HF message list (parent_id links) gives the same threads as the nested trees
    rows = []

    def flatten(node, parent_id, tree_id):
        rows.append({k: v for k, v in node.items() if k != "replies"} | {"parent_id": parent_id, "message_tree_id": tree_id})
        for child in node.get("replies", []):
            flatten(child, node["message_id"], tree_id)

    for t in trees[:20]:
        flatten(t["prompt"], None, t["message_tree_id"])
    flat = tmp_path / "messages.jsonl"
    flat.write_text("\n".join(json.dumps(r) for r in rows[::-1]) + "\n")  # children before parents
    nested = tmp_path / "nested.jsonl"
    nested.write_text("\n".join(json.dumps(t) for t in trees[:20]) + "\n")
    a, b = sources.oasst.load([nested]), sources.oasst.load([flat])
    assert a.read == b.read == 20
    assert sorted(r["message_ids"] for r in a.records) == sorted(r["message_ids"] for r in b.records)


def test_malformed_records_are_reported_with_file_and_line(tmp_path, capsys, smol_dir):
    src = tmp_path / "bad.jsonl"
    src.write_text("\n".join([
        json.dumps({"instruction": "Say hi.", "response": "Hi!"}),
        '{"instruction": "broken", ',
        json.dumps({"instruction": "No answer field."}),
        json.dumps({"instruction": "Empty answer.", "response": "   "}),
        json.dumps({"instruction": "Number answer.", "response": 42}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"instruction": "Fine too.", "response": "Yes."}),
    ]) + "\n")
    stats = prepare_dolly.setup(source=src, checkpoint_dir=smol_dir, out_dir=tmp_path / "out", **COMMON)
    err = capsys.readouterr().err
    for line, reason in [(2, "bad JSON line"), (3, "missing field 'response'"), (4, "empty 'response'"),
                         (5, "field 'response' is not a string: got int"), (6, "record is not a JSON object")]:
        assert f"{src}:{line}: {reason}" in err
        assert any(m.startswith(f"{src}:{line}: {reason}") for m in stats["skipped"]["examples"])
    assert stats["read"] == 7 and stats["records"] == 2 and stats["skipped"]["total"] == 5
    assert stats["skipped"]["reasons"] == {"bad JSON line": 1, "missing field 'response'": 1, "empty 'response'": 1,
                                           "field 'response' is not a string": 1, "record is not a JSON object": 1}

    csv_path = tmp_path / "bad_test.csv"
    csv_path.write_text('"Q1?",a,b,c,d,B\n"Q2, multi\nline?",a,b,c,d,E\nQ3?,a,b\n"Q4?",a,b,c,d,A\n')
    out = sources.mmlu_style.load([csv_path])
    assert out.read == 4 and len(out.records) == 2
    assert out.messages == [f"{csv_path}:2: bad answer letter: 'E' is not one of ABCD",
                            f"{csv_path}:4: wrong number of columns: expected question, 2+ options and an answer letter, got 3 columns"]


def test_lima_jsonl_and_flan(tmp_path):
    lima = tmp_path / "train.jsonl"
    lima.write_text("\n".join(json.dumps(r) for r in [
        {"conversations": ["Hi?", "Hello!", "How are you?", "Fine."], "source": "x"},
        {"conversations": ["Only a question"], "source": "x"},
        {"conversations": "not a list"},
    ]) + "\n")
    out = sources.lima.load([lima])
    assert [t["role"] for t in out.records[0]["turns"]] == ["user", "assistant", "user", "assistant"]
    assert dict(out.skipped) == {"no assistant turn": 1, "field 'conversations' is not a list of strings": 1}

    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"messages": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}) + "\n")
    assert sources.jsonl.load([chats], messages_key="messages").records[0]["turns"][1] == {"role": "assistant", "content": "A"}

    flan = tmp_path / "flan.jsonl"
    rows = [{"inputs": f"Q{i}", "targets": f"A{i}", "task_source": src, "task_name": f"task{i % 2}", "template_type": tt}
            for i, (src, tt) in enumerate([("Flan2021", "zs_opt"), ("T0", "fs_opt"), ("NIv2", "zs_noopt"), ("CoT", "zs_opt"),
                                           ("Dialog", "zs_opt"), ("Flan2021", "zs_opt"), ("Flan2021", "zs_noopt"), ("Flan2021", "fs_opt")])]
    flan.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    all_ = sources.flan.load([flan])
    assert all_.read == 8 and {r["task"].split("/")[0] for r in all_.records} == set(sources.flan.SUBMIXES)
    capped = sources.flan.load([flan], submixes=("flan2021",), max_records=1)
    assert [r["turns"][0]["content"] for r in capped.records] == ["Q0", "Q5"]  # one per task
    assert capped.extra["filtered"] == {"other submix": 4, "over max_records for its task": 2}
    zs = sources.flan.load([flan], template_types=("zs_opt",))
    assert len(zs.records) == 4


def test_download_without_network_names_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="could not download dataset 'databricks/databricks-dolly-15k'.*--source"):
        prepare_dolly.setup(checkpoint_dir=tmp_path, out_dir=tmp_path / "out")
    with pytest.raises(UserError, match="does not exist"):
        prepare_dolly.setup(source=tmp_path / "missing.jsonl", checkpoint_dir=tmp_path, out_dir=tmp_path / "out")


def test_destination_path_is_out_dir():
    """The starter guide's `--destination_path` names --out_dir, in both spellings, for every prepare script."""
    from lit_gpt.prepare import prepare_cli

    def setup(out_dir: Path = Path("default")) -> Path:
        """Args:
        out_dir: where it goes.
        """
        return out_dir

    assert prepare_cli(setup, ["--destination_path", "data/a"]) == Path("data/a")
    assert prepare_cli(setup, ["--destination_path=data/b"]) == Path("data/b")
    assert prepare_cli(setup, ["--out_dir", "data/c"]) == Path("data/c")
    for module in (prepare_cnn_dailymail, prepare_dolly, prepare_flan, prepare_gsm8k, prepare_jsonl, prepare_lima,
                   prepare_mmlu_style, prepare_oasst):
        assert "prepare_cli(setup)" in Path(module.__file__).read_text(), module.__name__
