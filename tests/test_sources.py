"""lit_gpt/sources: every registered source kind runs through prepare_mix as a `prepare:` spec on a small raw file in
its own layout (the registry, its file patterns and each loader's `name=` argument all take part)."""

import csv
import json
from pathlib import Path

import pytest
import yaml

from lit_gpt.sources import SOURCES
from scripts.prepare_mix import setup as prepare_mix

TOPICS = ["volcanoes erupting under the sea", "the migration of arctic terns", "baking sourdough bread at home",
          "how compilers allocate registers"]


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def oasst_tree(i: int, topic: str) -> dict:
    reply = {"message_id": f"r{i}", "role": "assistant", "lang": "en", "rank": 0, "text": f"Here is how {topic} works."}
    worse = {"message_id": f"w{i}", "role": "assistant", "lang": "en", "rank": 1, "text": f"No idea about {topic}."}
    return {"message_tree_id": f"t{i}", "tree_state": "ready_for_export",
            "prompt": {"message_id": f"p{i}", "role": "prompter", "lang": "en", "text": f"Explain {topic} to me.",
                       "replies": [reply, worse]}}


def mmlu_csv(path: Path) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([[f"Which is true of {t}?", "One", "Two", "Three", "Four", "B"] for t in TOPICS])


# kind -> (file name, writer of the file, loader args); one record per topic, each kind in its own layout
RAW = {
    "dolly": ("dolly.jsonl", lambda: jsonl([{"instruction": f"Tell me about {t}.", "context": "", "response": f"{t} is a topic."} for t in TOPICS]), {}),
    "oasst": ("x.trees.jsonl", lambda: jsonl([oasst_tree(i, t) for i, t in enumerate(TOPICS)]), {}),
    "lima": ("train.jsonl", lambda: jsonl([{"conversations": [f"What about {t}?", f"Plenty: {t}."]} for t in TOPICS]), {}),
    "flan": ("flan.jsonl", lambda: jsonl([{"inputs": f"Summarize {t}.", "targets": f"{t}, briefly.", "task_source": "flan",
                                            "task_name": f"task{i}", "template_type": "zs_opt"} for i, t in enumerate(TOPICS)]), {}),
    "gsm8k": ("train.jsonl", lambda: jsonl([{"question": f"How many facts about {t}?", "answer": f"Count them.\n#### {i}"}
                                             for i, t in enumerate(TOPICS)]), {"answer_format": "clean"}),
    "cnn_dailymail": ("cnn.jsonl", lambda: jsonl([{"article": f"A long article on {t}.", "highlights": f"{t} news."} for t in TOPICS]), {}),
    "mmlu_style": ("qa_test.csv", None, {}),
    "jsonl": ("data.jsonl", lambda: jsonl([{"instruction": f"Describe {t}.", "response": f"{t}: described."} for t in TOPICS]), {}),
    "preferences": ("pairs.jsonl", lambda: jsonl([{"prompt": f"Explain {t}.", "chosen": f"Gladly, {t} is this.",
                                                    "rejected": "No."} for t in TOPICS]), {}),
}


def test_every_registered_kind_has_a_raw_fixture():
    assert set(RAW) == set(SOURCES)


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_each_kind_runs_through_prepare_mix(kind, tmp_path, smol_dir):
    filename, write, args = RAW[kind]
    raw = tmp_path / "raw" / filename
    raw.parent.mkdir()
    mmlu_csv(raw) if write is None else raw.write_text(write())
    assert any(raw.match(p) for p in SOURCES[kind].patterns), f"{filename} is not a file the {kind} source reads"
    cfg = {"seed": 1, "val_fraction": 0.25, "decontaminate": {"eval_sets": {}},
           "sources": [{"name": f"my_{kind}", "prepare": kind, "source": str(raw.parent), "args": args}]}
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(cfg))
    manifest = prepare_mix(tmp_path / "mix.yaml", smol_dir, tmp_path / "out", num_workers=1)
    (source,) = manifest["sources"]
    assert (source["name"], source["read"], source["records_out"]) == (f"my_{kind}", len(TOPICS), len(TOPICS))
    kept = [json.loads(line) for line in open(tmp_path / "out" / "records.jsonl")]
    assert {r["source"] for r in kept} == {f"my_{kind}"} and len(kept) == len(TOPICS)
