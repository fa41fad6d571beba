"""The Lit-GPT starter guide for the challenge (../shared/seeds/002_77040dd115395535.txt) runs as written: each of
its commands, on a tiny GPT-NeoX (StableLM-alpha's architecture) with the SmolLM2 tokenizer, with a local
`--source` where it would download and CPU-sized steps and precision on a CPU."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT.parent / "shared" / "seeds" / "002_77040dd115395535.txt"
MODEL = "checkpoints/stabilityai/stablelm-base-alpha-3b"
EVAL_EXTRA = "--limit 1 --data_dir {data}"

# (the guide's command, what this test adds to it)
COMMANDS = [
    ("python scripts/download.py --repo_id stabilityai/stablelm-base-alpha-3b", "--source {hub}"),
    (f"python scripts/convert_hf_checkpoint.py --checkpoint_dir {MODEL}", ""),
    (f'python generate/base.py --prompt "LLM efficiency competitions are fun, because" --checkpoint_dir {MODEL}',
     "--max_new_tokens 8"),
    (f"python scripts/prepare_dolly.py --checkpoint_dir {MODEL} --destination_path data/dolly-stablelm3b",
     "--source {dolly} --max_seq_length 2048"),
    (f'CUDA_VISIBLE_DEVICES=2 python finetune/lora.py --data_dir data/dolly-stablelm3b --checkpoint_dir "{MODEL}" '
     '--out_dir "out/stablelm3b/dolly/lora/experiment1" --precision "bf16-true"',
     "--max_steps 2 --micro_batch_size 2 --global_batch_size 2 --warmup_steps 1 --eval_iters 1 "
     "--eval_max_new_tokens 4"),
    (f'python eval/lm_eval_harness.py --checkpoint_dir "{MODEL}" --precision "bf16-true" '
     '--eval_tasks "[truthfulqa_mc,gsm8k]" --save_filepath "results-stablelm-3b.json"', EVAL_EXTRA),
    (f'python scripts/merge_lora.py --checkpoint_dir "{MODEL}/" '
     '--lora_path "out/stablelm3b/dolly/lora/experiment1/lit_model_lora_finetuned.pth" '
     '--out_dir "out/lora_merged/stablelm-base-alpha-3b/"', ""),
    (f"cp {MODEL}/*.json out/lora_merged/stablelm-base-alpha-3b/", ""),
    ('python eval/lm_eval_harness.py --checkpoint_dir "out/lora_merged/stablelm-base-alpha-3b" --precision '
     '"bf16-true" --eval_tasks "[truthfulqa_mc,gsm8k]" --save_filepath "results-stablelm-3b.json"', EVAL_EXTRA),
]
SETUP = ("git clone", "cd ", "pip install")  # the environment's setup, not the toolkit's commands


def guide_commands(text: str) -> list[str]:
    """The commands of the guide's ```bash / ```shell blocks, continuation lines joined, whitespace collapsed."""
    out = []
    for block in re.findall(r"```(?:bash|shell)\n(.*?)```", text, flags=re.S):
        for command in re.sub(r"\\\n\s*", " ", block).splitlines():
            command = " ".join(command.split())
            if command and not command.startswith(SETUP):
                out.append(command)
    return out


def test_the_list_is_the_guide():
    if not GUIDE.is_file():
        pytest.skip(f"{GUIDE} is absent")
    assert guide_commands(GUIDE.read_text(encoding="utf-8")) == [c for c, _ in COMMANDS]


def tiny_hub_repo(path: Path, tokenizer_dir: Path) -> Path:
    """A 'downloaded' stablelm-base-alpha-3b: a tiny random GPTNeoXForCausalLM with the SmolLM2 tokenizer."""
    transformers = pytest.importorskip("transformers")
    config = transformers.GPTNeoXConfig(
        vocab_size=49152, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        rotary_pct=0.25, max_position_embeddings=2048, use_parallel_residual=True, tie_word_embeddings=False)
    torch.manual_seed(0)
    transformers.GPTNeoXForCausalLM(config).save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        (path / name).write_bytes((tokenizer_dir / name).read_bytes())
    return path


def dolly_file(path: Path) -> Path:
    rows = [{"instruction": f"Name a use of the number {i}.", "context": "" if i % 2 else f"Context {i}.",
             "response": f"The number {i} counts things.", "category": "open_qa"} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_every_command_of_the_guide_runs(tmp_path, smollm2_checkpoint, shared_data):
    work = tmp_path / "lit-gpt"
    work.mkdir()
    for name in ("scripts", "generate", "finetune", "eval", "lit_gpt"):  # the guide runs from a checkout's root
        (work / name).symlink_to(ROOT / name)
    values = {"hub": tiny_hub_repo(tmp_path / "hub", smollm2_checkpoint), "dolly": dolly_file(tmp_path / "dolly.jsonl"),
              "data": shared_data}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for guide, extra in COMMANDS:
        command = f"{guide} {extra.format(**values)}".replace("python ", f"{sys.executable} ", 1)
        if not torch.cuda.is_available():
            command = command.replace('"bf16-true"', '"32-true"')
        proc = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{guide}\n{proc.stderr[-2000:]}"

    run = work / "out/stablelm3b/dolly/lora/experiment1"
    assert (run / "lit_model_lora_finetuned.pth").read_bytes() == (run / "final/lit_model.pth.lora").read_bytes()
    assert (work / "data/dolly-stablelm3b/train-00000.pt").is_file()
    assert (work / "out/lora_merged/stablelm-base-alpha-3b/lit_model.pth").is_file()
    results = json.loads((work / "results-stablelm-3b.json").read_text())
    assert {"truthfulqa", "gsm8k"} <= set(results)
