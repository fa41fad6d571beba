"""Generate text from a checkpoint: `python generate/base.py --checkpoint_dir DIR --prompt "..."`."""

import sys
import time
from pathlib import Path
from typing import Optional

import torch


from lit_gpt.generation import generate, load_model
from lit_gpt.utils import UserError, cli


def main(
    checkpoint_dir: Path = Path("checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct"),
    prompt: str = "What is the capital of France?",
    max_new_tokens: int = 100,
    temperature: float = 0.0,
    top_k: Optional[int] = None,
    top_p: float = 1.0,
    chat: Optional[bool] = None,
    seed: int = 1234,
    device: str = "auto",
    precision: Optional[str] = None,
    quantize: Optional[str] = None,
) -> str:
    """Generates a continuation of a prompt with the KV cache, and prints it with its tokens/s.

    Args:
        checkpoint_dir: A converted (or merged) checkpoint dir.
        prompt: The prompt text.
        max_new_tokens: The most tokens to generate; generation also stops at EOS.
        temperature: 0 is greedy decoding; higher values sample more freely.
        top_k: Sample only among the k most likely tokens.
        top_p: Sample only among the most likely tokens whose probability mass reaches top_p.
        chat: Wrap the prompt in the checkpoint's chat template. Default: when the checkpoint has one.
        seed: Random seed for sampling.
        device: "cpu", "cuda", or "auto" (cuda when available).
        precision: "32-true", "bf16-true", "16-true". Default: bf16-true on a GPU that has it, else 32-true.
        quantize: Load the weights quantized: "bnb.nf4", "bnb.nf4-dq", "bnb.fp4", "bnb.fp4-dq".
    """
    if max_new_tokens < 1:
        raise UserError("--max_new_tokens must be at least 1")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    model, tokenizer = load_model(checkpoint_dir, device=device, precision=precision, quantize=quantize)
    print(f"Loaded {checkpoint_dir} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)

    if chat is None:
        chat = tokenizer.chat_template is not None
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}]) if chat else prompt
    # A chat template writes its own BOS where the model wants one.
    ids = tokenizer.encode(text, bos=False if chat else None)
    max_new_tokens = min(max_new_tokens, model.max_seq_length - ids.numel())
    if max_new_tokens < 1:
        raise UserError(f"the prompt ({ids.numel()} tokens) fills the model's context ({model.max_seq_length})")

    t0 = time.perf_counter()
    new_ids = []
    for tok in generate(model, ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                        stop_ids=tokenizer.stop_ids):
        if tok in tokenizer.stop_ids:
            break
        new_ids.append(tok)
    dt = time.perf_counter() - t0
    answer = tokenizer.decode(new_ids)
    print(answer)
    print(f"{len(new_ids)} tokens in {dt:.2f}s: {len(new_ids) / dt:.1f} tokens/s", file=sys.stderr)
    return answer


if __name__ == "__main__":
    torch.set_float32_matmul_precision("high")
    cli(main, as_positional=False)
