"""Tiny checkpoints and datasets for the LoRA / finetuning tests (random weights, synthetic learnable data)."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from lit_gpt.config import Config
from lit_gpt.data import write_shard
from lit_gpt.lora import LoRAConfig, inject_lora, lora_layers, lora_state_dict
from lit_gpt.model import GPT
from lit_gpt.utils import load_checkpoint


def make_checkpoint(path: Path, name: str = "tiny-llama", seed: int = 0, **overrides) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    config = Config.from_name(name, **overrides)
    torch.manual_seed(seed)
    model = GPT(config)
    # small weights so a random model starts near uniform predictions, like a real one
    for n, p in model.named_parameters():
        if p.ndim == 2:
            torch.nn.init.normal_(p, std=0.02)
    torch.save(model.state_dict(), path / "lit_model.pth")
    config.save(path)
    return path


def make_examples(n: int, vocab: int = 256, seed: int = 0, min_len: int = 4, max_len: int = 24) -> list[dict]:
    """Prompt: random tokens; response: each prompt token + 1 (learnable); loss only on the response."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(min_len, max_len + 1, (1,), generator=g))
        prompt = torch.randint(1, vocab - 1, (k,), generator=g)
        response = prompt + 1
        ids = torch.cat((prompt, response))
        labels = torch.cat((torch.full((k,), -100), response))
        out.append({"input_ids": ids, "labels": labels})
    return out


def make_dataset(path: Path, n_train: int = 64, n_val: int = 16, **kw) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    write_shard(make_examples(n_train, seed=1, **kw), path / "train-00000.pt")
    write_shard(make_examples(n_val, seed=2, **kw), path / "val-00000.pt")
    return path


def fake_run(run_dir: Path, ckpt: Path, lora: LoRAConfig) -> tuple[Path, GPT]:
    """A finetune/lora.py-style run dir with trained-looking LoRA weights; returns (lora file, the LoRA model)."""
    config = Config.from_checkpoint(ckpt)
    model = GPT(config)
    load_checkpoint(model, ckpt / "lit_model.pth")
    inject_lora(model, lora)
    torch.manual_seed(3)
    for layer in lora_layers(model):
        torch.nn.init.normal_(layer.lora_B, std=0.05)
    final = run_dir / "final"
    final.mkdir(parents=True)
    torch.save({"model": lora_state_dict(model)}, final / "lit_model.pth.lora")
    hp = {"checkpoint_dir": str(ckpt), "lora": lora.asdict()}
    (run_dir / "hparams.yaml").write_text(yaml.safe_dump(hp))
    return final / "lit_model.pth.lora", model.eval()


def make_preference_dataset(path: Path, n_train: int = 32, n_val: int = 8, vocab: int = 256) -> Path:
    """Pairs as scripts/prepare_preferences.py writes them (chosen at 2i, rejected at 2i+1): a random prompt, chosen
    reply = each prompt token + 1, rejected reply = random tokens; labels only on the reply."""
    import json

    path.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 1), ("val", n_val, 2)):
        g = torch.Generator().manual_seed(seed)
        examples = []
        for _ in range(n):
            k = int(torch.randint(3, 9, (1,), generator=g))
            prompt = torch.randint(1, vocab - 1, (k,), generator=g)
            for reply in (prompt + 1, torch.randint(1, vocab, (int(torch.randint(2, 9, (1,), generator=g)),), generator=g)):
                examples.append({"input_ids": torch.cat((prompt, reply)),
                                 "labels": torch.cat((torch.full((k,), -100), reply))})
        write_shard(examples, path / f"{split}-00000.pt")
    (path / "stats.json").write_text(json.dumps({"kind": "preferences"}))
    return path
