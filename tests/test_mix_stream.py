"""lit_gpt/mix_stream.py: the streamed mix keeps and drops the same records, writes the same shards, records.jsonl,
dropped.jsonl, stats.json and manifest as the in-memory path, on tiny mixes and on a real one."""

import json
from pathlib import Path

import numpy as np
import yaml

from bench.decontaminate import chat
from bench.prepare import mix_config
from lit_gpt.data import SplitDataset
from lit_gpt.prepare import ChunkedRecords, Loaded, chunked_records
from scripts.prepare_mix import setup as prepare_mix
from tests.test_prepare_mix import jsonl_source, write_jsonl


def outputs(out: Path) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.pop("timings_s")
    manifest["decontaminate"].pop("index_from_cache")  # the first run builds the evaluation index, the next reads it
    shards = {split: [(ex["input_ids"].tolist(), ex["labels"].tolist()) for ex in SplitDataset(out, split)]
              for split in ("train", "val")}
    return {"records": (out / "records.jsonl").read_text(), "dropped": (out / "dropped.jsonl").read_text(),
            "stats": json.loads((out / "stats.json").read_text()), "manifest": manifest, "shards": shards,
            "shard_files": sorted(p.name for p in out.glob("*.pt"))}


def assert_same_mix(config: Path, ckpt: Path, tmp: Path, chunk_size: int, engines=("stream",)) -> dict:
    prepare_mix(config, ckpt, tmp / "memory", num_workers=1, engine="memory")
    a = outputs(tmp / "memory")
    for engine in engines:
        prepare_mix(config, ckpt, tmp / engine, engine=engine, chunk_size=chunk_size, tasks=3)
        b = outputs(tmp / engine)
        for key in a:
            assert a[key] == b[key], (engine, key)
        assert not list((tmp / engine).glob(".stream-*"))  # the spill files are gone
    return a


def test_chunked_records_hand_on_chunks_and_keep_the_last():
    chunks = []
    with chunked_records(chunks.append, 3):
        lo = Loaded()
        for i in range(7):
            lo.add(f"f:{i}", "s", [{"role": "user", "content": "q"}, {"role": "assistant", "content": f"a{i}"}])
            lo.records[-1]["n"] = i  # loaders annotate the record just added
        assert len(lo.records) == 7 and lo.records[-1]["n"] == 6
        lo.records.flush()
    assert isinstance(lo.records, ChunkedRecords) and [len(c) for c in chunks] == [3, 3, 1]
    assert [r["n"] for c in chunks for r in c] == list(range(7))
    assert isinstance(Loaded().records, list) and not isinstance(Loaded().records, ChunkedRecords)


def test_same_mix_as_in_memory_on_tiny_data(tmp_path, smol_dir):
    """Exact, case-variant and near duplicates across chunk boundaries and sources, a contaminated record, one
    that loses its answer to truncation, a malformed line, a prepared dir, down- and upsampling, a val split."""
    base = ("The committee met on Tuesday to discuss the new budget for the school library and agreed to buy more "
            "books for the children. It also asked the head teacher to look for volunteers who could keep the library "
            "open after lessons, and it set aside a small sum for new chairs, two computers and a printer for the pupils.")
    rows = [chat(f"Tell me fact number {i} about the ocean and its many strange creatures.", f"Fact {i}: wet, {i * 3}.")
            for i in range(30)]
    rows += [rows[0], rows[11], chat("TELL ME fact number 2 about the ocean, and its many strange creatures!", "Fact 2: wet, 6.")]
    rows += [chat("Summarize.\n" + base, "Books."), chat("Summarize.\n" + base.replace("Tuesday", "Monday"), "Books.")]
    rows += [chat("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                  "How many clips did Natalia sell altogether in April and May?", "72")]
    rows += [chat("word " * 300, "too late")]  # no answer token within max_seq_length
    write_jsonl(tmp_path / "a.jsonl", rows)
    (tmp_path / "a.jsonl").write_text((tmp_path / "a.jsonl").read_text() + "{not json\n")
    write_jsonl(tmp_path / "b.jsonl", [chat(f"Unrelated question {i} about mountains and valleys far away?", f"Answer {i}.")
                                       for i in range(10)] + [rows[5]])
    write_jsonl(tmp_path / "gsm.jsonl", [{"question": "Natalia sold clips to 48 of her friends in April, and then she "
                                          "sold half as many clips in May. How many clips did Natalia sell altogether "
                                          "in April and May?", "answer": "#### 72"}])
    first = {"sources": [jsonl_source("b", tmp_path / "b.jsonl")], "val_fraction": 0, "decontaminate": {"eval_sets": {}}}
    (tmp_path / "first.yaml").write_text(yaml.safe_dump(first))
    prepare_mix(tmp_path / "first.yaml", smol_dir, tmp_path / "prepared", engine="memory")
    cfg = {"seed": 3, "val_fraction": 0.1, "max_seq_length": 128,
           "sources": [{**jsonl_source("a", tmp_path / "a.jsonl"), "weight": 0.7},
                       {"name": "b", "dir": str(tmp_path / "prepared"), "records": 25}],
           "decontaminate": {"eval_sets": {"gsm8k": str(tmp_path / "gsm.jsonl")}}}
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(cfg))
    out = assert_same_mix(tmp_path / "mix.yaml", smol_dir, tmp_path, chunk_size=4, engines=("stream", "datatrove"))
    a, b = out["manifest"]["sources"]
    assert (a["contaminated"], a["exact_duplicates"], a["near_duplicates"], a["malformed"]) == (1, 3, 1, 1)
    assert b["exact_duplicates"] == 1 and b["selected"] == 25 and a["tokenization_skipped"] >= 1
    reasons = [json.loads(line)["reason"] for line in out["dropped"].splitlines()]
    assert reasons[:1] == ["contaminated"] and "exact duplicate" in reasons and "near duplicate" in reasons
    # determinism: a second streamed run is the same to the byte
    prepare_mix(tmp_path / "mix.yaml", smol_dir, tmp_path / "again", chunk_size=5)
    assert outputs(tmp_path / "again") == outputs(tmp_path / "stream")


def test_same_mix_as_in_memory_on_real_data(shared_data, tmp_path, smol_dir):
    """bench/prepare.py's real mix (GSM8K, CNN/DM, OASST, Dolly, MMLU dev), cut to ~2,900 records, sampled by weight
    and count, decontaminated against the six open evaluation sets, plus 40 CNN/DM test items: the streamed and the
    datatrove engines keep, drop and attribute exactly what the in-memory path does."""
    cfg = mix_config(shared_data)
    cfg["sources"][0]["args"] = {"max_records": 1500}
    cfg["sources"][0]["weight"] = 0.8
    cfg["sources"][1]["records"] = 300
    cfg["sources"][4]["weight"] = 1.5
    cfg["sources"][5]["args"]["max_records"] = 600
    cfg["sources"].append({"name": "leak", "prepare": "cnn_dailymail", "args": {"max_records": 40},  # test items
                           "source": str(shared_data / "cnn_dailymail/test_first574.jsonl")})
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(cfg))
    out = assert_same_mix(tmp_path / "mix.yaml", smol_dir, tmp_path, chunk_size=700, engines=("stream", "datatrove"))
    totals = out["manifest"]["totals"]
    assert totals["records_in"] > 2500 and totals["records_out"] > 2000
    assert totals["exact_duplicates"] + totals["near_duplicates"] > 0
    assert out["manifest"]["sources"][-1]["contaminated_by"] == {"cnn_dailymail": 40}  # the same items, every engine
    assert np.sum([len(x) for x, _ in out["shards"]["train"]]) == out["stats"]["train"]["tokens"]
