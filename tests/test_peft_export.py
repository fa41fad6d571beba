"""LoRA -> PEFT adapter: `peft.PeftModel.from_pretrained` on the HF export of the base computes our unmerged LoRA
model's logits."""

from pathlib import Path

import pytest
import torch

from lit_gpt.config import Config
from lit_gpt.lora import LoRAConfig
from lit_gpt.model import GPT
from lit_gpt.utils import load_checkpoint
from scripts.convert_lit_checkpoint import convert_lit_checkpoint
from tests.lora_fixtures import fake_run, make_checkpoint

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

EVERY_LAYER = dict(query=True, key=True, value=True, projection=True, mlp=True, head=True)


def peft_logits(base: Path, lora_path: Path, tmp_path: Path, idx: torch.Tensor) -> torch.Tensor:
    hf_dir, adapter_dir = tmp_path / "hf", tmp_path / "adapter"
    convert_lit_checkpoint(checkpoint_dir=base, output_dir=hf_dir)
    convert_lit_checkpoint(checkpoint_dir=base, output_dir=adapter_dir, format="peft", lora_path=lora_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, attn_implementation="sdpa")
    model = peft.PeftModel.from_pretrained(hf, adapter_dir).eval()
    with torch.no_grad():
        return model(idx).logits


def base_logits(ckpt: Path, idx: torch.Tensor) -> torch.Tensor:
    model = GPT(Config.from_checkpoint(ckpt)).eval()
    load_checkpoint(model, ckpt / "lit_model.pth")
    with torch.no_grad():
        return model(idx)


def test_smollm2_adapter_on_every_layer(tmp_path, smollm2_checkpoint):
    lora = LoRAConfig(r=4, alpha=8, dropout=0.0, **EVERY_LAYER)
    lora_path, ours = fake_run(tmp_path / "run", smollm2_checkpoint, lora)
    idx = torch.randint(0, 49152, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ours(idx)
    del ours
    got = peft_logits(smollm2_checkpoint, lora_path, tmp_path, idx)
    torch.testing.assert_close(got, expected)
    # the adapter matters: without it the logits are far off
    assert (base_logits(smollm2_checkpoint, idx) - expected).abs().max() > 1.0


@pytest.mark.parametrize("name, parts", [
    ("tiny-llama", dict(query=True, value=True)),  # separate q/k/v projections, k left out
    ("tiny-neox", dict(query=True, key=False, value=True, projection=True, mlp=True, head=True)),  # fused, grouped
])
def test_tiny_models(tmp_path, name, parts):
    ckpt = make_checkpoint(tmp_path / "base", name)
    lora_path, ours = fake_run(tmp_path / "run", ckpt, LoRAConfig(r=2, alpha=6, dropout=0.0, **parts))
    idx = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ours(idx)
    torch.testing.assert_close(peft_logits(ckpt, lora_path, tmp_path, idx), expected)
    assert not torch.allclose(base_logits(ckpt, idx), expected)
    # --format hf with --lora_path exports the merged model (merging changes rounding, hence the tolerance)
    convert_lit_checkpoint(checkpoint_dir=ckpt, output_dir=tmp_path / "merged", lora_path=lora_path)
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(merged.eval()(idx).logits, expected, atol=1e-5, rtol=1e-5)


def test_peft_needs_lora_path(tmp_path):
    from lit_gpt.utils import UserError

    ckpt = make_checkpoint(tmp_path / "base")
    with pytest.raises(UserError, match="--lora_path"):
        convert_lit_checkpoint(checkpoint_dir=ckpt, output_dir=tmp_path / "out", format="peft")
