"""Stage the submission's Docker build context: the code, the server and a merged checkpoint.

    python scripts/package_submission.py --checkpoint_dir out/lora/merged --out_dir build/submission
    docker build -t submission build/submission && docker run --gpus all -p 8080:80 submission

The context holds `Dockerfile` (from submission/), `lit_gpt/`, `submission/` and `checkpoint/` (the weights, config
and tokenizer files; hard-linked where the filesystem allows, so staging a multi-GB checkpoint is instant). The vLLM
image builds from the same context (`docker build -f OUT/submission/Dockerfile.vllm OUT`).
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

from lit_gpt.utils import UserError, check_valid_checkpoint_dir, cli


wd = Path(__file__).parent.parent.resolve()
# What the server reads from a checkpoint dir (lit_gpt.generation.load_model and lit_gpt.tokenizer.Tokenizer).
CHECKPOINT_FILES = (
    "lit_model.pth", "model_config.yaml", "tokenizer.json", "tokenizer.model", "qwen.tiktoken",
    "tokenizer_config.json", "generation_config.json", "special_tokens_map.json",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "qwen.tiktoken")
MARKER = ".submission-build"  # marks a dir this script made, so it may replace it


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed
        shutil.copy2(src, dst)


def main(checkpoint_dir: Path, out_dir: Path = Path("build/submission")) -> Path:
    """Stages the Docker build context of the submission.

    Args:
        checkpoint_dir: A converted or merged checkpoint dir (lit_model.pth, model_config.yaml, tokenizer files),
            e.g. the `merged/` dir of a finetune run after scripts/merge_lora.py.
        out_dir: The build context to write; replaced if it is one this script made earlier.
    """
    checkpoint_dir = check_valid_checkpoint_dir(checkpoint_dir)
    if not any((checkpoint_dir / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(f"{checkpoint_dir} has no tokenizer file ({', '.join(TOKENIZER_FILES)})")
    out_dir = Path(out_dir)
    if out_dir.exists() and not (out_dir / MARKER).is_file():
        raise UserError(f"{out_dir} exists and was not made by this script: choose another --out_dir")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(wd / "lit_gpt", staging / "lit_gpt", ignore=ignore)
        shutil.copytree(wd / "submission", staging / "submission", ignore=ignore)
        shutil.copy2(wd / "submission" / "Dockerfile", staging / "Dockerfile")
        (staging / "checkpoint").mkdir()
        for name in CHECKPOINT_FILES:
            if (checkpoint_dir / name).is_file():
                _link_or_copy(checkpoint_dir / name, staging / "checkpoint" / name)
        (staging / MARKER).write_text(f"staged from {checkpoint_dir.resolve()}\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)

    size = sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file())
    print(f"Staged {out_dir} ({size / 1e9:.2f} GB). Next:", file=sys.stderr)
    print(f"  docker build -t submission {out_dir}", file=sys.stderr)
    print("  docker run --gpus all -p 8080:80 submission   # then: curl localhost:8080/health", file=sys.stderr)
    return out_dir


if __name__ == "__main__":
    cli(main, as_positional=False)
