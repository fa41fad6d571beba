"""Writing a lit_gpt checkpoint as a llama.cpp GGUF file (Llama-family layouts), with the `gguf` package's writer.

The inverse of lit_gpt.gguf, from its tables: llama.cpp's tensor names, the q/k row permutation (llama.cpp rotates
adjacent pairs where HF and we rotate halves), and the tokenizer metadata its reader rebuilds a tokenizer from
(byte-level BPE vocabulary, merges, token types, special ids, `add_bos_token`, the chat template).
Weights are written as f32, f16 or q8_0; 1-D tensors (norms) stay f32 as llama.cpp's converter keeps them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from lit_gpt.config import Config
from lit_gpt.gguf import (
    GGUF_BLOCK, GGUF_FIXED, GGUF_QKV, SPLIT_PRE_NAMES, TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL, TOKEN_TYPE_UNUSED,
    TOKEN_TYPE_USER_DEFINED, permute_qk,
)
from lit_gpt.utils import UserError, atomic_path

GGUF_DTYPES = ("f32", "f16", "q8_0")
ARCH = "llama"


def check_exportable(config: Config) -> None:
    """UserError unless llama.cpp's `llama` architecture computes the same function as `config`."""
    problems = []
    if config.norm_class_name != "RMSNorm":
        problems.append(f"norm_class_name={config.norm_class_name}")
    if config.mlp_class_name != "LLaMAMLP":
        problems.append(f"mlp_class_name={config.mlp_class_name}")
    if config.parallel_residual:
        problems.append("parallel_residual")
    if config.bias or config.attn_bias or config.lm_head_bias:
        problems.append("biases")
    if config.rotary_percentage != 1.0:
        problems.append(f"rotary_percentage={config.rotary_percentage}")
    if config.sliding_window_size is not None:
        problems.append(f"sliding_window_size={config.sliding_window_size}")
    if problems:
        raise UserError(f"{config.name}: GGUF export supports the Llama layout only (not {', '.join(problems)})")


def gguf_tensors(state_dict: dict[str, torch.Tensor], config: Config) -> dict[str, torch.Tensor]:
    """{llama.cpp name: float32 tensor} for our state dict, q/k rows permuted as llama.cpp expects."""
    out: dict[str, torch.Tensor] = {}
    for gguf_name, ours in GGUF_FIXED.items():
        if ours == "lm_head.weight" and config.tie_embeddings:
            continue  # llama.cpp uses token_embd as the head when output.weight is absent
        out[gguf_name] = state_dict[ours]
    sizes = (config.n_head * config.head_size, config.n_query_groups * config.head_size,
             config.n_query_groups * config.head_size)
    for i in range(config.n_layer):
        for part, ours in GGUF_BLOCK.items():
            out[f"blk.{i}.{part}.weight"] = state_dict[f"transformer.h.{i}.{ours}.weight"]
        q, k, v = state_dict[f"transformer.h.{i}.attn.attn.weight"].split(sizes)
        pieces = {"q": permute_qk(q, config.n_head), "k": permute_qk(k, config.n_query_groups), "v": v}
        for part, piece in GGUF_QKV.items():
            out[f"blk.{i}.{part}.weight"] = pieces[piece]
    return {k: v.detach().to(torch.float32).contiguous() for k, v in out.items()}


def encode_tensor(t: torch.Tensor, dtype: str) -> tuple[np.ndarray, Any]:
    """(array, GGMLQuantizationType) of one tensor in the file's dtype (1-D tensors stay f32)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    a = t.numpy()
    if a.ndim == 1 or dtype == "f32":
        return a, GGMLQuantizationType.F32
    if dtype == "f16" or a.shape[-1] % 32:  # q8_0 blocks are 32 values of a row; llama.cpp falls back to f16
        return a.astype(np.float16), GGMLQuantizationType.F16
    return quantize(a, GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0


def pre_tokenizer_name(pre: Optional[dict]) -> str:
    """llama.cpp's `tokenizer.ggml.pre` for a tokenizer.json pre-tokenizer (how text is split before BPE)."""
    if pre is None:
        raise UserError("tokenizer.json has no pre_tokenizer: not a byte-level BPE tokenizer")
    kind = pre.get("type")
    if kind == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"  # llama.cpp's name for GPT-2's split
    steps = pre.get("pretokenizers", []) if kind == "Sequence" else []
    types = [s.get("type") for s in steps]
    if types == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"  # digits one by one, then GPT-2's split
    if types == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        regex = (steps[0].get("pattern") or {}).get("Regex")
        if regex in SPLIT_PRE_NAMES:
            return SPLIT_PRE_NAMES[regex]
    raise UserError(f"tokenizer.json pre_tokenizer {json.dumps(pre)[:120]} has no llama.cpp counterpart here")


def tokenizer_metadata(checkpoint_dir: Path, n_vocab: int) -> dict[str, Any]:
    """The `tokenizer.*` metadata of a checkpoint's byte-level BPE tokenizer.json (+ tokenizer_config.json)."""
    from lit_gpt.tokenizer import Tokenizer

    path = Path(checkpoint_dir) / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"{checkpoint_dir}: GGUF export needs a byte-level BPE tokenizer.json (SentencePiece "
                        "tokenizer.model files are not supported yet)")
    tj = json.loads(path.read_text(encoding="utf-8"))
    model = tj.get("model") or {}
    if model.get("type") != "BPE":
        raise UserError(f"{path}: model type {model.get('type')!r}, GGUF export supports BPE only")
    tokens: list[Optional[str]] = [None] * n_vocab
    types = [TOKEN_TYPE_NORMAL] * n_vocab
    for token, i in model["vocab"].items():
        if i < n_vocab:
            tokens[i] = token
    for added in tj.get("added_tokens") or []:
        i = added["id"]
        if i < n_vocab:
            tokens[i] = added["content"]
            types[i] = TOKEN_TYPE_CONTROL if added.get("special") else TOKEN_TYPE_USER_DEFINED
    for i, t in enumerate(tokens):
        if t is None:  # rows of a padded embedding: llama.cpp's converter names them the same way
            tokens[i], types[i] = f"[PAD{i}]", TOKEN_TYPE_UNUSED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]

    tok = Tokenizer(checkpoint_dir)
    meta: dict[str, Any] = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre_tokenizer_name(tj.get("pre_tokenizer")),
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.add_bos_token": bool(tok.use_bos),
        "tokenizer.ggml.add_eos_token": False,
    }
    ids = {"bos": tok.bos_id, "eos": tok.eos_id, "unknown": tok._id_of(tok.special_tokens_map.get("unk_token")),
           "padding": tok._id_of(tok.special_tokens_map.get("pad_token"))}
    for key, idx in ids.items():
        if idx is not None:
            meta[f"tokenizer.ggml.{key}_token_id"] = int(idx)
    if tok.chat_template:
        meta["tokenizer.chat_template"] = tok.chat_template
    return meta


def write_gguf(
    state_dict: dict[str, torch.Tensor], config: Config, checkpoint_dir: Path, path: Path, dtype: str = "f16",
) -> Path:
    """Writes `path` (atomically): hyper-parameters, tokenizer and weights of a Llama-layout checkpoint."""
    import gguf

    if dtype not in GGUF_DTYPES:
        raise UserError(f"--dtype {dtype!r}: choose one of {', '.join(GGUF_DTYPES)}")
    check_exportable(config)
    tensors = gguf_tensors(state_dict, config)
    token_meta = tokenizer_metadata(checkpoint_dir, tensors["token_embd.weight"].shape[0])
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]
    path = Path(path)
    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(str(tmp), ARCH)
        w.add_name(config.name)
        if config.hf_config.get("org"):
            w.add_organization(config.hf_config["org"])
        w.add_context_length(config.block_size)
        w.add_embedding_length(config.n_embd)
        w.add_block_count(config.n_layer)
        w.add_feed_forward_length(config.intermediate_size)
        w.add_head_count(config.n_head)
        w.add_head_count_kv(config.n_query_groups)
        if config.head_size * config.n_head != config.n_embd:
            w.add_key_length(config.head_size)
            w.add_value_length(config.head_size)
        w.add_rope_dimension_count(config.head_size)
        w.add_rope_freq_base(float(config.rope_base))
        if config.rope_condense_ratio != 1.0:
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(float(config.rope_condense_ratio))
        w.add_layer_norm_rms_eps(float(config.norm_eps))
        w.add_vocab_size(tensors["token_embd.weight"].shape[0])
        w.add_file_type(file_type)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for key, value in token_meta.items():
            if isinstance(value, list):
                w.add_array(key, value)
            elif isinstance(value, bool):
                w.add_bool(key, value)
            elif isinstance(value, int):
                w.add_uint32(key, value)
            else:
                w.add_string(key, value)
        for name, t in tensors.items():
            data, qtype = encode_tensor(t, dtype)
            w.add_tensor(name, data, raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path
