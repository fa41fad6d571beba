"""scripts/prepare_preferences.py: pairs from OASST trees and from JSONL, malformed records as file:line, the shards
(prompt shared, labels on the final reply only), and prepare_mix.py on pair sources."""

import json
from pathlib import Path

import pytest
import yaml

from finetune.dpo import Pairs
from lit_gpt.data import SplitDataset
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.utils import UserError
from scripts.prepare_mix import setup as prepare_mix
from lit_gpt.sources.preferences import load
from scripts.prepare_preferences import setup as prepare_preferences

ROOT = Path(__file__).resolve().parents[1]


def msg(text, role, rank=None, replies=(), **kw):
    return {"message_id": text[:12], "text": text, "role": role, "lang": "en", "rank": rank, "replies": list(replies), **kw}


def tree(root):
    return {"message_tree_id": root["message_id"], "tree_state": "ready_for_export", "prompt": root}


TREE = tree(msg("How do plants make food?", "prompter", replies=[
    msg("Plants use photosynthesis: light, water and CO2 become sugar.", "assistant", 0, replies=[
        msg("Where does it happen in the plant?", "prompter", replies=[
            msg("Mostly in the chloroplasts of leaf cells.", "assistant", 1),
            msg("In the chloroplasts, inside the leaves.", "assistant", 0),
        ]),
    ]),
    msg("They eat soil.", "assistant", 2),
    msg("Sunlight, mostly.", "assistant", 1),
    msg("DELETED reply ranked last", "assistant", 3, deleted=True),
]))


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_oasst_pairs_best_against_worst_with_the_thread_as_prompt(tmp_path):
    single = tree(msg("Hi there", "prompter", replies=[msg("Hello!", "assistant", 0)]))
    f = write_jsonl(tmp_path / "t.trees.jsonl", [TREE, single])
    out = load([f])
    assert [r["id"] for r in out.records] == [f"{f}:1#0", f"{f}:1#1"]
    first, second = out.records
    assert first["turns"] == [{"role": "user", "content": "How do plants make food?"},
                              {"role": "assistant", "content": "Plants use photosynthesis: light, water and CO2 become sugar."}]
    assert first["rejected"] == "They eat soil."  # rank 2: the deleted rank-3 reply is not usable
    assert [t["content"] for t in second["turns"]] == [
        "How do plants make food?", "Plants use photosynthesis: light, water and CO2 become sugar.",
        "Where does it happen in the plant?", "In the chloroplasts, inside the leaves."]
    assert second["rejected"] == "Mostly in the chloroplasts of leaf cells."
    assert out.messages == [f"{f}:2: no prompt with two ranked usable replies"]


def test_jsonl_pairs_and_malformed_records_by_line(tmp_path):
    hh_prompt = "\n\nHuman: What is 2+2?\n\nAssistant: Why?\n\nHuman: Just tell me."
    rows = [
        {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Dog."},
        {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
         "chosen": [{"role": "assistant", "content": "Paris."}], "rejected": [{"role": "assistant", "content": "Rome."}]},
        {"chosen": hh_prompt + "\n\nAssistant: 4.", "rejected": hh_prompt + "\n\nAssistant: 5."},
        "{not json",
        {"prompt": "x", "chosen": "same", "rejected": "same"},
        {"prompt": "x", "chosen": "a"},
        {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: c\n\nAssistant: d"},
        {"prompt": "x", "chosen": "", "rejected": "b"},
    ]
    f = write_jsonl(tmp_path / "p.jsonl", rows)
    out = load([f])
    assert [r["id"] for r in out.records] == [f"{f}:1", f"{f}:2", f"{f}:3"]
    assert out.records[1]["turns"][0] == {"role": "system", "content": "Be brief."}
    assert out.records[1]["rejected"] == "Rome."
    hh = out.records[2]
    assert [t["role"] for t in hh["turns"]] == ["user", "assistant", "user", "assistant"]
    assert hh["turns"][-1]["content"] == "4." and hh["rejected"] == "5."
    assert [m.split(": ", 1)[0] for m in out.messages] == [f"{f}:{n}" for n in (4, 5, 6, 7, 8)]
    assert "same text" in out.messages[1] and "missing field 'rejected'" in out.messages[2]
    assert "differ before the last reply" in out.messages[3]


def test_shards_share_the_prompt_and_label_only_the_final_reply(tmp_path, smol_dir):
    src = write_jsonl(tmp_path / "t.trees.jsonl", [TREE])
    stats = prepare_preferences(source=src, checkpoint_dir=smol_dir, out_dir=tmp_path / "out", val_fraction=0.0)
    assert stats["kind"] == "preferences" and stats["pairs"] == 2
    tok = Tokenizer(smol_dir)
    data = SplitDataset(tmp_path / "out", "train")
    assert len(data) == 4
    records = [json.loads(line) for line in open(tmp_path / "out" / "records.jsonl")]
    for i, rec in enumerate(records):
        chosen, rejected = data[2 * i], data[2 * i + 1]
        for ex, reply in ((chosen, rec["turns"][-1]["content"]), (rejected, rec["rejected"])):
            labelled = (ex["labels"] != -100).nonzero()[:, 0]
            assert labelled.diff().eq(1).all()  # one run: earlier assistant turns of the thread are prompt
            assert tok.decode(ex["labels"][labelled].tolist()) == reply + "<|im_end|>"
        n = int((chosen["labels"] != -100).nonzero()[0])
        assert chosen["input_ids"][:n].equal(rejected["input_ids"][:n])
        assert tok.decode(chosen["input_ids"][:n].tolist()).endswith("<|im_start|>assistant\n")
    pairs = Pairs(str(tmp_path / "out"), "train", max_seq_length=40, max_prompt_length=16)
    batch = pairs.batch([0, 1])
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"].shape[1] <= 40
    assert (batch["targets"] != -100).any(1).all()  # long prompts cut from the left leave the replies


def test_prepare_mix_takes_pair_sources_with_dedup_and_decontamination(tmp_path, smol_dir):
    q = "Do goldfish have a memory of only three seconds?"  # a TruthfulQA question, in a rejected reply
    rows = [{"prompt": f"Tell me fact number {i} about the ocean, please.", "chosen": f"Fact {i}: it is deep and salty.",
             "rejected": f"No idea about number {i}."} for i in range(6)]
    rows.append(dict(rows[0]))  # an exact duplicate
    rows.append({"prompt": "Say something about fish memory today.", "chosen": "They remember for months.",
                 "rejected": f"{q} Yes, only three seconds, everyone knows it."})
    write_jsonl(tmp_path / "pairs.jsonl", rows)
    prepare_preferences(source=tmp_path / "pairs.jsonl", checkpoint_dir=smol_dir, out_dir=tmp_path / "prepared",
                        val_fraction=0.0)
    cfg = {"seed": 1, "val_fraction": 0.0, "sources": [{"name": "prepared", "dir": str(tmp_path / "prepared")}],
           "dedup": {"exact": True, "near": False},
           "decontaminate": {"eval_sets": {"truthfulqa": str(ROOT / "examples/eval_data/truthfulqa/TruthfulQA.csv")},
                             "cache": False}}
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(cfg))
    manifest = prepare_mix(mix_config=tmp_path / "mix.yaml", checkpoint_dir=smol_dir, out_dir=tmp_path / "mix",
                           num_workers=1)
    src = manifest["sources"][0]
    assert (src["contaminated"], src["exact_duplicates"], src["records_out"]) == (1, 1, 6)
    assert json.loads((tmp_path / "mix" / "stats.json").read_text())["kind"] == "preferences"
    assert len(Pairs(str(tmp_path / "mix"), "train")) == 6

    sft = write_jsonl(tmp_path / "sft.jsonl", [{"instruction": "Hi", "response": "Hello"}])
    cfg["sources"].append({"name": "sft", "prepare": "jsonl", "source": str(sft)})
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(UserError, match="mixes preference-pair sources with SFT sources"):
        prepare_mix(mix_config=tmp_path / "mix.yaml", checkpoint_dir=smol_dir, out_dir=tmp_path / "mix2")
