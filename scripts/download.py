"""Download a model from the Hugging Face Hub: only its config, tokenizer and weight files.

    python scripts/download.py --repo_id Qwen/Qwen2.5-7B [--convert true]

Files go to checkpoints/ORG/NAME. Gated models (Llama 2, Mistral) need a token: set HF_TOKEN or pass
--access_token. Safetensors weights are preferred; .bin weights are fetched only when a repo has no safetensors.
"""

import os
import shutil
import sys
from pathlib import Path
from typing import Optional


from lit_gpt.utils import UserError, cli

CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "qwen.tiktoken")


def select_files(repo_files: list[str]) -> list[str]:
    """The files of a repo worth downloading: config, tokenizer, and one format of weights (safetensors first).

    Only top-level files: subfolders hold other formats (onnx/, original/ consolidated Meta weights, ...).
    """
    top = [f for f in repo_files if "/" not in f]
    wanted = [f for f in top if f in CONFIG_FILES + TOKENIZER_FILES]
    safetensors = [f for f in top if f.endswith(".safetensors") and not f.startswith("consolidated")]
    if safetensors:
        weights = safetensors + [f for f in top if f == "model.safetensors.index.json"]
    else:
        weights = [f for f in top if f.startswith("pytorch_model") and (f.endswith(".bin") or f.endswith(".bin.index.json"))]
    if not weights:
        raise UserError("the repo has no *.safetensors or pytorch_model*.bin weights at its top level")
    if "config.json" not in wanted:
        raise UserError("the repo has no config.json: not a transformers model")
    return sorted(wanted) + sorted(weights)


def _hub_error(repo_id: str, e: Exception) -> UserError:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if isinstance(e, GatedRepoError):
        return UserError(f"{repo_id} is gated: accept its license on huggingface.co and set HF_TOKEN (or --access_token)")
    if isinstance(e, RepositoryNotFoundError):
        return UserError(f"{repo_id}: no such repo on the Hugging Face Hub (or it is private: set HF_TOKEN)")
    first_line = (str(e).strip().splitlines() or [""])[0]
    return UserError(f"could not reach the Hugging Face Hub for {repo_id} ({type(e).__name__}: {first_line})")


def download_from_hub(
    *,
    repo_id: str,
    checkpoint_dir: Path = Path("checkpoints"),
    access_token: Optional[str] = None,
    convert: bool = False,
    dtype: Optional[str] = None,
    source: Optional[Path] = None,
) -> Path:
    """Download the files a model needs from the Hugging Face Hub into checkpoint_dir/ORG/NAME.

    Args:
        repo_id: The Hub repo, e.g. "Qwen/Qwen2.5-7B".
        checkpoint_dir: The root the repo's directory is created under.
        access_token: Hugging Face token for gated or private repos (default: the HF_TOKEN environment variable).
        convert: Also convert the weights to lit_gpt's format (scripts/convert_hf_checkpoint.py).
        dtype: With --convert, the dtype to store the weights in (default: as downloaded).
        source: A local copy of the repo (e.g. a snapshot dir) to take the same files from instead of the Hub.
    """
    access_token = access_token or os.getenv("HF_TOKEN")  # read here, so --help never prints it
    if repo_id.count("/") != 1:
        raise UserError(f"--repo_id {repo_id!r}: expected ORG/NAME, e.g. Qwen/Qwen2.5-7B")
    target = Path(checkpoint_dir) / repo_id
    files = copy_local(Path(source), target) if source is not None else fetch(repo_id, target, access_token)
    print(f"downloaded {len(files)} files to {target}", file=sys.stderr)

    if convert:
        from lit_gpt.convert_hf import convert_hf_checkpoint

        convert_hf_checkpoint(checkpoint_dir=target, dtype=dtype)
    else:
        print(f"next: python scripts/convert_hf_checkpoint.py --checkpoint_dir {target}", file=sys.stderr)
    return target


def fetch(repo_id: str, target: Path, access_token: Optional[str]) -> list[str]:
    """Downloads the files `select_files` picks from the Hub repo into `target`."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()  # its retry warnings would bury our one-line error
    try:
        files = select_files(HfApi().list_repo_files(repo_id, token=access_token))
        snapshot_download(repo_id, local_dir=target, allow_patterns=files, token=access_token)
    except UserError as e:
        raise UserError(f"{repo_id}: {e}") from e
    except Exception as e:  # any hub or network failure is the user's to fix (network, token, name)
        raise _hub_error(repo_id, e) from e
    return files


def copy_local(source: Path, target: Path) -> list[str]:
    """Copies the files `select_files` picks from a local copy of the repo into `target`."""
    if not source.is_dir():
        raise UserError(f"--source {str(source)!r} is not a directory")
    try:
        files = select_files([p.name for p in source.iterdir() if p.is_file()])
    except UserError as e:
        raise UserError(f"--source {source}: {e}") from e
    if source.resolve() != target.resolve():
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            shutil.copyfile(source / name, target / name)
    return files


if __name__ == "__main__":
    cli(download_from_hub)
