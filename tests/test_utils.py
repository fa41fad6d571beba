import os
import stat
import subprocess
import sys

import pytest
import torch

from lit_gpt.utils import atomic_path, atomic_save, check_valid_checkpoint_dir, lazy_load, UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_atomic_save_writes_whole_file_with_normal_permissions(tmp_path):
    path = atomic_save({"x": torch.arange(3)}, tmp_path / "sub" / "a.pth")
    assert torch.equal(lazy_load(path)["x"], torch.arange(3))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == ["a.pth"]  # no temp file left


def test_atomic_path_keeps_the_previous_file_when_the_write_fails(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert path.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_lazy_load_names_a_corrupt_file(tmp_path):
    bad = tmp_path / "lit_model.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(UserError, match="lit_model.pth: not a readable PyTorch checkpoint"):
        lazy_load(bad)


def test_check_valid_checkpoint_dir_names_what_is_missing(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        check_valid_checkpoint_dir(tmp_path / "nope")
    with pytest.raises(UserError, match="has no lit_model.pth or model_config.yaml"):
        check_valid_checkpoint_dir(tmp_path)


def test_generate_cli_errors_are_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "generate/base.py", "--checkpoint_dir", str(tmp_path / "missing")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: checkpoint dir"), proc.stderr
