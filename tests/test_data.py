"""Prompt formatting, label masking and tokenization of lit_gpt/data.py, on real tokenizers."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from lit_gpt.data import (
    IGNORE_INDEX, Encoder, SplitDataset, alpaca_segments, check_turns, encode_records, write_dataset,
)

ROOT = Path(__file__).resolve().parents[1]

RECORDS = [
    {"turns": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."},
               {"role": "user", "content": "And 3+3?"}, {"role": "assistant", "content": "It is 6."}]},
    {"turns": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " hi\n"},
               {"role": "assistant", "content": "  Hello there, how can I help?  "}]},
    {"turns": [{"role": "user", "content": "Write code:\n\n  indented"}, {"role": "assistant", "content": "def f():\n    return 'ünïcødé ✓'"}]},
]


@pytest.fixture
def neox_dir(shared_data, tmp_path) -> Path:
    d = tmp_path / "neox"
    d.mkdir()
    shutil.copy(shared_data / "tokenizers/gpt-neox-20b/20B_tokenizer.json", d / "tokenizer.json")
    (d / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}))
    return d


@pytest.fixture
def mistral_dir(shared_data, tmp_path) -> Path:
    d = tmp_path / "mistral"
    d.mkdir()
    shutil.copy(shared_data / "tokenizers/mistral-7b-v0.1/tokenizer.model", d / "tokenizer.model")
    return d


def assistant_label_text(tok, turns, end: str) -> str:
    return "".join(t["content"].strip() + end for t in turns if t["role"] == "assistant")


def check_examples(enc: Encoder, examples, records, end: str) -> None:
    tok = enc.tokenizer
    for ex, r in zip(examples, records):
        ids, labels = ex["input_ids"].tolist(), ex["labels"].tolist()
        assert len(ids) == len(labels)
        # every label is either -100 or the input token at that position
        assert all(y in (IGNORE_INDEX, x) for x, y in zip(ids, labels))
        # the labelled tokens decode to exactly the assistant turns plus their end-of-turn token
        assert tok.decode([y for y in labels if y != IGNORE_INDEX]) == assistant_label_text(tok, r["turns"], end)
        # and the whole example decodes to the rendered conversation (EOS after each answer with Alpaca)
        segments = enc.segments(check_turns(r["turns"]))
        text = "".join(t + (end if target and enc.template == "alpaca" else "") for t, target in segments)
        assert tok.decode(ids) == text
        if enc.template == "chat":  # piecewise tokenization equals tokenizing the rendered text whole
            assert ids == tok.encode_batch([text], bos=False)[0]


def test_chat_template_masks_every_non_assistant_token(smol_dir):
    enc = Encoder(smol_dir)
    assert enc.template == "chat"
    examples, stats = encode_records(RECORDS, smol_dir, num_workers=1)
    assert stats["records"] == 3 and stats["mismatch"] == 0 and not stats["skipped"]
    check_examples(enc, examples, RECORDS, "<|im_end|>")
    # the user and system turns are in the input but carry no label
    ids, labels = examples[1]["input_ids"], examples[1]["labels"]
    prompt = enc.tokenizer.decode(ids[labels == IGNORE_INDEX].tolist())
    assert "Be brief." in prompt and "hi" in prompt and "Hello there" not in prompt


def test_alpaca_template_without_chat_template(neox_dir):
    enc = Encoder(neox_dir)
    assert enc.template == "alpaca"
    examples, stats = encode_records(RECORDS, neox_dir, num_workers=1)
    assert stats["mismatch"] == 0
    check_examples(enc, examples, RECORDS, "<|endoftext|>")
    text = enc.tokenizer.decode(examples[0]["input_ids"].tolist())
    assert text.startswith("Below is an instruction that describes a task.")
    assert "### Instruction:\nWhat is 2+2?\n\n### Response:\n4.<|endoftext|>\n\n### Instruction:\nAnd 3+3?" in text
    # a system turn replaces the preamble
    assert enc.tokenizer.decode(examples[1]["input_ids"].tolist()).startswith("Be brief.\n\n### Instruction:\nhi")


def test_sentencepiece_alpaca_labels_exact(mistral_dir):
    enc = Encoder(mistral_dir)
    examples, _ = encode_records(RECORDS, mistral_dir, num_workers=1)
    for ex, r in zip(examples, RECORDS):
        ids, labels = ex["input_ids"].tolist(), ex["labels"].tolist()
        assert ids[0] == enc.tokenizer.bos_id and labels[0] == IGNORE_INDEX
        assert enc.tokenizer.decode([y for y in labels if y != IGNORE_INDEX]).replace("</s>", "|") == \
            "".join(t["content"].strip() + "|" for t in r["turns"] if t["role"] == "assistant")


def test_truncation_and_prompt_only_records_are_counted(neox_dir):
    long = {"turns": [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "ok"}]}
    long_answer = {"turns": [{"role": "user", "content": "Count."}, {"role": "assistant", "content": "one two " * 200}]}
    examples, stats = encode_records([long, long_answer, RECORDS[0]], neox_dir, max_seq_length=64, num_workers=1)
    assert stats["truncated"] == 2
    assert [i for i, _ in stats["skipped"]] == [0]  # no response token left within 64 tokens
    assert "no response tokens" in stats["skipped"][0][1]
    assert len(examples) == 2 and all(len(e["input_ids"]) <= 64 for e in examples)
    assert (examples[0]["labels"] != IGNORE_INDEX).any()


def test_several_processes_give_the_same_examples(neox_dir):
    records = RECORDS * 40
    one, s1 = encode_records(records, neox_dir, num_workers=1, chunk_size=7)
    two, s2 = encode_records(records, neox_dir, num_workers=2, chunk_size=7)
    assert s1 == s2 and len(one) == len(two) == 120
    for a, b in zip(one, two):
        assert torch.equal(torch.as_tensor(a["input_ids"]), torch.as_tensor(b["input_ids"]))
        assert torch.equal(torch.as_tensor(a["labels"]), torch.as_tensor(b["labels"]))


def test_bad_turns_are_rejected_with_a_reason():
    with pytest.raises(ValueError, match="empty assistant"):
        check_turns([{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}])
    with pytest.raises(ValueError, match="must be a string"):
        check_turns([{"role": "user", "content": "q"}, {"role": "assistant", "content": 4}])
    with pytest.raises(ValueError, match="alternating"):
        check_turns([{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}])
    with pytest.raises(ValueError, match="no assistant"):
        check_turns([{"role": "user", "content": "q"}])
    assert [t for t, target in alpaca_segments(check_turns(RECORDS[0]["turns"])) if target] == ["4.", "It is 6."]


def test_written_dataset_reads_back(neox_dir, tmp_path):
    examples, stats = encode_records(RECORDS, neox_dir, num_workers=1)
    write_dataset(tmp_path / "ds", {"train": examples[:2], "val": examples[2:]}, {"records": 3})
    train, val = SplitDataset(tmp_path / "ds", "train"), SplitDataset(tmp_path / "ds", "val")
    assert len(train) == 2 and len(val) == 1
    assert torch.equal(train[1]["labels"], torch.as_tensor(examples[1]["labels"]).long())
    assert json.loads((tmp_path / "ds" / "stats.json").read_text()) == {"records": 3}
