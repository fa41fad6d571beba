"""Small helpers shared by the scripts: checkpoint I/O, atomic writes, precision defaults and CLI errors."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

from lit_gpt.config import CONFIG_FILENAME

CHECKPOINT_FILENAME = "lit_model.pth"


class UserError(Exception):
    """A problem with the user's input (path, name, file content): shown as one line, without a traceback."""


def check_valid_checkpoint_dir(checkpoint_dir: Path | str, need_weights: bool = True) -> Path:
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise UserError(
            f"checkpoint dir {str(checkpoint_dir)!r} does not exist: download and convert a model first "
            "(scripts/download.py, then scripts/convert_hf_checkpoint.py)"
        )
    missing = [n for n in ([CHECKPOINT_FILENAME] if need_weights else []) + [CONFIG_FILENAME]
               if not (checkpoint_dir / n).is_file()]
    if missing:
        raise UserError(
            f"checkpoint dir {str(checkpoint_dir)!r} has no {' or '.join(missing)}: "
            "run scripts/convert_hf_checkpoint.py on it first"
        )
    return checkpoint_dir


def lazy_load(path: Path | str) -> dict[str, torch.Tensor]:
    """A state dict whose tensors stay on disk (memory-mapped) until used."""
    path = Path(path)
    try:
        return torch.load(path, mmap=True, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file")
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e


def load_checkpoint(model: torch.nn.Module, path: Path | str, strict: bool = True) -> None:
    state_dict = lazy_load(path)
    state_dict = state_dict.get("model", state_dict)
    try:
        model.load_state_dict(state_dict, strict=strict, assign=False)
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not fit the model config ({str(e).splitlines()[0]})") from e


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it onto `path` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp creates the file owner-only (0600); give it the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_save(obj: Any, path: Path | str) -> Path:
    """torch.save that never leaves a partial file at `path`: a crash keeps the previous version."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    return Path(path)


def write_json(obj: object, path: Path | str) -> None:
    """Pretty-printed UTF-8 JSON, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def default_precision(device: Optional[str] = None) -> str:
    """bf16-true on a GPU that supports it; 32-true elsewhere (bf16 matmuls are ~500x slower on an AVX2 CPU)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-true"
    return "32-true"


PRECISION_TO_DTYPE = {
    "32-true": torch.float32, "bf16-true": torch.bfloat16, "16-true": torch.float16,
    "bf16-mixed": torch.float32, "16-mixed": torch.float32,
}


def num_parameters(module: torch.nn.Module, requires_grad: Optional[bool] = None) -> int:
    seen, total = set(), 0
    for p in module.parameters():
        if id(p) in seen or (requires_grad is not None and p.requires_grad != requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def cli(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """jsonargparse CLI whose user errors print one line (`error: ...`) and exit 2, not a traceback."""
    from jsonargparse import CLI

    try:
        return CLI(fn, *args, **kwargs)
    except (UserError, FileNotFoundError, NotADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    except ValueError as e:
        # Our own validation (unknown model name, bad config field) raises ValueError with a full sentence.
        if os.environ.get("LIT_GPT_TRACEBACK"):
            raise
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)


def alias_config_flag(argv: list[str], name: str) -> list[str]:
    """jsonargparse reserves --config for its own argument files (and drops a parameter of that name): a script whose
    YAML is its main input takes it as --NAME, with --config accepted as the alias users type."""
    return [f"--{name}" if a == "--config" else f"--{name}=" + a[9:] if a.startswith("--config=") else a for a in argv]


def config_path(value: Any, config_dir: Path) -> Path:
    """A path in a YAML config: relative to the working dir, or else (where only that exists) to the config's dir."""
    p = Path(str(value)).expanduser()
    if p.is_absolute() or p.exists() or not (config_dir / p).exists():
        return p
    return config_dir / p


def read_yaml_config(path: Path, what: str) -> Any:
    """A config file's YAML, or a one-line UserError naming the file (`what`: "mix config", "sweep config")."""
    return read_data_file(path, f"{what} {str(path)!r} does not exist")


def read_data_file(path: Path, missing: str) -> Any:
    """A .json file's JSON or another file's YAML; `missing` is the error when it is absent, and a parse error names
    the file."""
    import yaml

    if not path.is_file():
        raise UserError(missing)
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise UserError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({e})") from e


def read_json_object(path: Path) -> Optional[dict]:
    """A JSON object file (config.json, tokenizer_config.json), None where it is absent; a one-line UserError naming
    the file where it is not valid JSON or not an object."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data
