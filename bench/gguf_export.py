"""How close transformers' GGUF loader and llama.cpp come to our model on our GGUF export, per dtype.

    python bench/gguf_export.py --checkpoint_dir checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct --out /tmp/gguf

For f32, f16 and q8_0: whether greedy decoding (argmax, --new_tokens) gives our tokens, and over prompt +
continuation the share of positions whose argmax agrees and the largest logit difference, against our fp32 model
on the original weights ("ours") and on the weights as the file stores them, read back by lit_gpt.gguf ("stored").
llama.cpp rows need llama-cpp-python (`make llama-cpp`).
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch


from lit_gpt.generation import generate, load_model
from lit_gpt.utils import cli
from lit_gpt.convert_gguf import convert_gguf_checkpoint
from lit_gpt.convert_lit import convert_lit_checkpoint


def compare(logits: torch.Tensor, ref: torch.Tensor) -> dict:
    return {"agree": round(float((logits.argmax(-1) == ref.argmax(-1)).float().mean()), 4),
            "max_diff": round(float((logits - ref).abs().max()), 5)}


def hf_greedy(model, ids: list[int], n: int) -> list[int]:
    """Argmax decoding of a transformers model with its KV cache (generate()'s defaults add logits processors)."""
    new, past, step = [], None, torch.tensor([ids])
    with torch.no_grad():
        for _ in range(n):
            out = model(step, past_key_values=past, use_cache=True)
            new.append(int(out.logits[0, -1].argmax()))
            past, step = out.past_key_values, torch.tensor([[new[-1]]])
    return new


def transformers_run(path: Path, ids: list[int], seq: torch.Tensor, n: int) -> tuple[list[int], torch.Tensor]:
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    new = hf_greedy(hf, ids, n)
    with torch.no_grad():
        return new, hf(seq.unsqueeze(0)).logits[0]


def llama_cpp_run(path: Path, ids: list[int], seq: torch.Tensor, n: int) -> tuple[list[int], torch.Tensor]:
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=512, logits_all=True, verbose=False, n_threads=2)
    try:
        llm.eval(ids)
        new = []
        for _ in range(n):
            new.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
            llm.eval([new[-1]])
        llm.reset()
        llm.eval(seq.tolist())
        return new, torch.from_numpy(np.array(llm.scores[:llm.n_tokens]))
    finally:
        llm.close()


def main(checkpoint_dir: Path, out: Path = Path("/tmp/gguf_export"), new_tokens: int = 32,
         prompt: str = "Write a short poem about the sea.") -> dict:
    """Prints one JSON line per (dtype, runtime).

    Args:
        checkpoint_dir: A Llama-layout checkpoint with a byte-level BPE tokenizer.json.
        out: Where the exports (and their read-back checkpoints) go.
        new_tokens: Greedy tokens to compare.
        prompt: The user message, rendered with the chat template.
    """
    model, tok = load_model(checkpoint_dir, device="cpu", precision="32-true")
    ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": prompt}]))
    ours_new = list(generate(model, ids, new_tokens, stop_ids=()))
    seq = torch.cat([ids, torch.tensor(ours_new)])
    with torch.no_grad():
        ours = model(seq.unsqueeze(0))[0]
    runtimes = {"transformers": transformers_run}
    try:
        import llama_cpp  # noqa: F401

        runtimes["llama.cpp"] = llama_cpp_run
    except ImportError:
        print("llama-cpp-python is not installed: no llama.cpp rows", file=sys.stderr)
    rows = {}
    for dtype in ("f32", "f16", "q8_0"):
        path = convert_lit_checkpoint(checkpoint_dir=checkpoint_dir, output_dir=Path(out) / dtype, format="gguf",
                                      dtype=dtype)
        stored_model, _ = load_model(convert_gguf_checkpoint(gguf_path=path, checkpoint_dir=Path(out) / f"{dtype}-read"),
                                     device="cpu", precision="32-true")
        with torch.no_grad():
            stored = stored_model(seq.unsqueeze(0))[0]
        for name, run in runtimes.items():
            new, logits = run(path, ids.tolist(), seq, new_tokens)
            row = {"dtype": dtype, "runtime": name, "size_mb": round(path.stat().st_size / 1e6, 1),
                   "greedy_same": new == ours_new,
                   "greedy_same_prefix": next((i for i, (a, b) in enumerate(zip(new, ours_new)) if a != b), len(new)),
                   "vs_ours": compare(logits, ours), "vs_stored": compare(logits, stored)}
            rows[f"{dtype}/{name}"] = row
            print(json.dumps(row))
    return rows


if __name__ == "__main__":
    cli(main, as_positional=False)
