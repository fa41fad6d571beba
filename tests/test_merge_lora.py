import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lit_gpt.config import Config
from lit_gpt.lora import LoRAConfig
from lit_gpt.model import GPT
from lit_gpt.utils import UserError, check_valid_checkpoint_dir, load_checkpoint
from scripts.merge_lora import setup as merge
from tests.lora_fixtures import fake_run, make_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("tied", [False, True])
def test_merged_checkpoint_reproduces_the_lora_model(tmp_path, tied):
    ckpt = make_checkpoint(tmp_path / "base", tie_embeddings=tied)
    (ckpt / "tokenizer.json").write_text("{}")  # travels along
    lora = LoRAConfig(r=4, alpha=8, dropout=0.1, query=True, key=True, value=True, projection=True, mlp=True, head=True)
    lora_path, lora_model = fake_run(tmp_path / "run", ckpt, lora)
    out = merge(checkpoint_dir=ckpt, lora_path=lora_path, out_dir=tmp_path / "merged")
    check_valid_checkpoint_dir(out)
    assert (out / "tokenizer.json").is_file()
    config = Config.from_checkpoint(out)
    assert config.tie_embeddings is False  # a LoRA head cannot stay tied to the input embedding
    merged = GPT(config).eval()
    load_checkpoint(merged, out / "lit_model.pth")
    x = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(merged(x), lora_model(x), atol=1e-5, rtol=1e-5)
    # the base checkpoint is untouched
    base = GPT(Config.from_checkpoint(ckpt)).eval()
    load_checkpoint(base, ckpt / "lit_model.pth")
    with torch.no_grad():
        assert not torch.allclose(base(x), merged(x))


def test_merge_reads_hparams_beside_the_file_and_rejects_a_mismatch(tmp_path):
    ckpt = make_checkpoint(tmp_path / "base")
    lora_path, _ = fake_run(tmp_path / "run", ckpt, LoRAConfig(r=4, query=True, value=True))
    # hparams beside the file win over the run dir's
    bad = {"checkpoint_dir": str(ckpt), "lora": LoRAConfig(r=4, query=True, value=True, mlp=True).asdict()}
    (lora_path.parent / "hparams.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(UserError, match="do not match the LoRA config"):
        merge(checkpoint_dir=ckpt, lora_path=lora_path, out_dir=tmp_path / "merged")
    (lora_path.parent / "hparams.yaml").unlink()
    (tmp_path / "run" / "hparams.yaml").unlink()
    with pytest.raises(UserError, match="no hparams.yaml"):
        merge(checkpoint_dir=ckpt, lora_path=lora_path, out_dir=tmp_path / "merged")


def test_cli(tmp_path):
    ckpt = make_checkpoint(tmp_path / "base")
    lora_path, _ = fake_run(tmp_path / "run", ckpt, LoRAConfig(r=2, query=True, value=True))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "merge_lora.py"), "--checkpoint_dir", str(ckpt), "--lora_path",
         str(lora_path), "--out_dir", str(tmp_path / "merged")], capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    check_valid_checkpoint_dir(tmp_path / "merged")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "merge_lora.py"), "--checkpoint_dir", str(ckpt), "--lora_path",
         str(tmp_path / "missing.lora"), "--out_dir", str(tmp_path / "m2")], capture_output=True, text=True,
    )
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: --lora_path")
