"""scripts/download.py without the network: file selection, the hub calls it makes, and its errors."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lit_gpt.utils import UserError

from scripts.download import download_from_hub, select_files

ROOT = Path(__file__).resolve().parents[1]

# File lists as the Hub shows them for a few real repos (abridged).
MISTRAL = ["config.json", "generation_config.json", "pytorch_model-00001-of-00002.bin",
           "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json", "model-00001-of-00002.safetensors",
           "model-00002-of-00002.safetensors", "model.safetensors.index.json", "special_tokens_map.json",
           "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "README.md", ".gitattributes"]
MISTRAL_V03 = ["config.json", "consolidated.safetensors", "model-00001-of-00003.safetensors",
               "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors", "model.safetensors.index.json",
               "params.json", "tokenizer.model.v3", "tokenizer.json", "tokenizer_config.json"]
PYTHIA = ["config.json", "pytorch_model.bin", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
          "README.md"]
QWEN1 = ["config.json", "configuration_qwen.py", "modeling_qwen.py", "qwen.tiktoken", "tokenization_qwen.py",
         "generation_config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
         "model.safetensors.index.json", "tokenizer_config.json"]
LLAMA3 = ["config.json", "model.safetensors", "original/consolidated.00.pth", "original/tokenizer.model",
          "tokenizer.json", "tokenizer_config.json", "generation_config.json"]


def test_select_files_prefers_safetensors():
    assert select_files(MISTRAL) == [
        "config.json", "generation_config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer.model",
        "tokenizer_config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "model.safetensors.index.json"]


def test_select_files_skips_other_formats():
    chosen = select_files(MISTRAL_V03)
    assert "consolidated.safetensors" not in chosen and "params.json" not in chosen
    assert [f for f in chosen if f.endswith(".safetensors")] == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert select_files(LLAMA3) == ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                                    "model.safetensors"]


def test_select_files_falls_back_to_bin():
    assert select_files(PYTHIA) == ["config.json", "special_tokens_map.json", "tokenizer.json",
                                    "tokenizer_config.json", "pytorch_model.bin"]
    chosen = select_files(QWEN1)
    assert "qwen.tiktoken" in chosen and not any(f.endswith(".py") for f in chosen)


def test_select_files_errors():
    with pytest.raises(UserError, match="no \\*.safetensors or pytorch_model"):
        select_files(["config.json", "README.md"])
    with pytest.raises(UserError, match="no config.json"):
        select_files(["model.safetensors"])


class FakeHub:
    def __init__(self, files, source=None):
        self.files, self.source, self.calls = files, source, []

    def list_repo_files(self, repo_id, token=None):  # bound to the fake, so HfApi's self is not passed
        self.calls.append(("list", repo_id, token))
        return self.files

    def snapshot_download(self, repo_id, local_dir, allow_patterns, token=None):
        self.calls.append(("download", repo_id, Path(local_dir), sorted(allow_patterns), token))
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        for f in allow_patterns:
            if self.source is not None and (self.source / f).is_file():
                shutil.copy(self.source / f, Path(local_dir) / f)
        return str(local_dir)


def patch_hub(monkeypatch, hub: FakeHub) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", hub.list_repo_files)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)


def test_download_asks_for_the_selected_files(tmp_path, monkeypatch):
    hub = FakeHub(PYTHIA)
    patch_hub(monkeypatch, hub)
    target = download_from_hub(repo_id="EleutherAI/pythia-160m", checkpoint_dir=tmp_path, access_token="tok")
    assert target == tmp_path / "EleutherAI" / "pythia-160m"
    assert hub.calls == [("list", "EleutherAI/pythia-160m", "tok"),
                         ("download", "EleutherAI/pythia-160m", target, sorted(select_files(PYTHIA)), "tok")]


def test_download_and_convert(tmp_path, monkeypatch):
    from tiny_hf import make_hf_model

    source = tmp_path / "source"
    make_hf_model("llama").save_pretrained(source)
    patch_hub(monkeypatch, FakeHub(["config.json", "model.safetensors", "README.md"], source))
    target = download_from_hub(repo_id="org/tiny", checkpoint_dir=tmp_path / "checkpoints", convert=True)
    assert (target / "lit_model.pth").is_file() and (target / "model_config.yaml").is_file()


def test_network_failure_is_one_clear_error(tmp_path, monkeypatch):
    import httpx
    import huggingface_hub

    def offline(*args, **kwargs):
        raise httpx.ConnectError("[Errno -3] Temporary failure in name resolution\nmore detail")

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", offline)
    with pytest.raises(UserError) as e:
        download_from_hub(repo_id="org/name", checkpoint_dir=tmp_path)
    assert str(e.value) == ("could not reach the Hugging Face Hub for org/name "
                            "(ConnectError: [Errno -3] Temporary failure in name resolution)")


def test_bad_repo_id():
    with pytest.raises(UserError, match="expected ORG/NAME"):
        download_from_hub(repo_id="pythia-160m")


def test_cli_offline(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "scripts/download.py", "--repo_id", "EleutherAI/pythia-160m",
                           "--checkpoint_dir", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not reach the Hugging Face Hub"), proc.stderr
    assert not (tmp_path / "EleutherAI").exists()


def test_token_defaults_to_hf_token_env(tmp_path, monkeypatch):
    hub = FakeHub(PYTHIA)
    patch_hub(monkeypatch, hub)
    monkeypatch.setenv("HF_TOKEN", "from-env")
    download_from_hub(repo_id="EleutherAI/pythia-160m", checkpoint_dir=tmp_path)
    assert [call[-1] for call in hub.calls] == ["from-env", "from-env"]
