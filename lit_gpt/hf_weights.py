"""Hugging Face checkpoints <-> lit_gpt.model.GPT weights: reading the weight files, and conversion both ways.

Each architecture's table from the Hugging Face weight name to ours lives in its record in lit_gpt.families
(with its config.json mapping); the same table drives both directions. A value is either our name, or (our name,
piece) where the piece says how the Hugging Face tensor relates to our fused QKV weight, laid out [all query
heads | all key heads | all value heads]:
- "q" / "k" / "v": a separate projection that is one third of ours (Llama, Mistral, Qwen2, Phi, StableLM);
- "grouped": a fused projection interleaved per query group, [q_1..q_r, k, v] for each of the n_query_groups
  groups (GPT-NeoX is the case r = 1, i.e. per head; Falcon-7b is one group; Falcon-40b is n_kv_heads groups).
Qwen-1's fused `c_attn` already has our layout, so it is a plain rename.

Conversion from Hugging Face reads the weight files lazily (one shard at a time, one tensor at a time) and keeps
separate q/k/v pieces only until all three of a layer have arrived, so a checkpoint converts in about one copy of
its weights in memory.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Iterator, Optional

import torch

from lit_gpt.config import Config
from lit_gpt.families import family, hf_architecture
from lit_gpt.families.base import GROUPED, K, Q, V
from lit_gpt.utils import UserError

# Buffers some checkpoints store that are not weights (recomputed by the model).
IGNORED_WEIGHTS = re.compile(r"(rotary_emb\.inv_freq|attention\.masked_bias|attention\.bias)$")


def _brief(e: Exception) -> str:
    """An exception as one line, for error messages (torch's load errors run to many paragraphs)."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def _template(name: str) -> str:
    """'model.layers.12.mlp.up_proj.weight' -> 'model.layers.{l}.mlp.up_proj.weight'."""
    return re.sub(r"\.(\d+)\.", ".{l}.", name, count=1)


def _layer(name: str) -> Optional[int]:
    m = re.search(r"\.(\d+)\.", name)
    return int(m.group(1)) if m else None


########################
# Fused-QKV layouts
########################
def _qkv_sizes(config: Config) -> tuple[int, int, int]:
    hs = config.head_size
    return config.n_head * hs, config.n_query_groups * hs, config.n_query_groups * hs


def grouped_to_lit(t: torch.Tensor, config: Config) -> torch.Tensor:
    """[q_1..q_r, k, v] per query group -> [all q | all k | all v] (rows; works for weights and biases)."""
    ng, hs = config.n_query_groups, config.head_size
    r = config.n_head // ng
    t = t.reshape(ng, r + 2, hs, *t.shape[1:])
    q, k, v = t[:, :r], t[:, r], t[:, r + 1]
    return torch.cat([x.reshape(-1, *t.shape[3:]) for x in (q, k, v)])


def lit_to_grouped(t: torch.Tensor, config: Config) -> torch.Tensor:
    ng, hs = config.n_query_groups, config.head_size
    r = config.n_head // ng
    q, k, v = t.split(_qkv_sizes(config))
    rest = t.shape[1:]
    q = q.reshape(ng, r, hs, *rest)
    k = k.reshape(ng, 1, hs, *rest)
    v = v.reshape(ng, 1, hs, *rest)
    return torch.cat((q, k, v), dim=1).reshape(-1, *rest)


########################
# Reading Hugging Face weight files lazily
########################
def hf_weight_files(checkpoint_dir: Path) -> list[Path]:
    """The weight files of a Hugging Face checkpoint: safetensors if present, else PyTorch .bin (sharded via the
    index json when there is one)."""
    for index_name, single, pattern in (
        ("model.safetensors.index.json", "model.safetensors", "*.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin", "pytorch_model*.bin"),
    ):
        index = checkpoint_dir / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise UserError(f"{index}: not a weight index json ({_brief(e)})") from e
            files = [checkpoint_dir / f for f in sorted(set(weight_map.values()))]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise UserError(f"{index} lists {missing[0]}, which is missing (download incomplete?)")
            return files
        if (checkpoint_dir / single).is_file():
            return [checkpoint_dir / single]
        files = sorted(p for p in checkpoint_dir.glob(pattern) if not p.name.startswith("consolidated"))
        if files:
            return files
    raise UserError(f"{checkpoint_dir}: no Hugging Face weights (*.safetensors or pytorch_model*.bin) found")


def iter_hf_weights(files: Iterable[Path], progress: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor of the files, reading one file and one tensor at a time."""
    from safetensors import safe_open
    from tqdm import tqdm

    files = list(files)
    for path in tqdm(files, desc="converting", unit="file", disable=not progress or len(files) < 2):
        if path.suffix == ".safetensors":
            try:
                f = safe_open(str(path), framework="pt")
                names = list(f.keys())
            except Exception as e:
                raise UserError(f"{path}: not a readable safetensors file ({_brief(e)})") from e
            for name in names:
                yield name, f.get_tensor(name)
            del f
        else:
            try:
                try:
                    sd = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
                except RuntimeError as e:
                    if "mmap" not in str(e):
                        raise
                    # Files written before torch 1.6 (not zip archives) cannot be memory-mapped.
                    sd = torch.load(path, weights_only=True, map_location="cpu")
            except Exception as e:
                raise UserError(f"{path}: not a readable PyTorch weight file ({_brief(e)})") from e
            if not isinstance(sd, dict):
                raise UserError(f"{path}: expected a state dict, got {type(sd).__name__}")
            for name in list(sd):
                yield name, sd.pop(name)


def _owned(t: torch.Tensor, dtype: Optional[torch.dtype]) -> torch.Tensor:
    """The tensor in `dtype`, not a view into a larger storage (torch.save would write the whole storage)."""
    if dtype is not None and t.is_floating_point() and t.dtype != dtype:
        return t.to(dtype)
    if t.untyped_storage().nbytes() != t.nbytes:
        return t.clone()
    return t


def expected_shapes(config: Config) -> dict[str, torch.Size]:
    from lit_gpt.model import GPT

    with torch.device("meta"):
        model = GPT(config)
    return {k: v.shape for k, v in model.state_dict().items()}


def check_state_dict(state_dict: dict, config: Config, source: str) -> None:
    """UserError unless `state_dict` has exactly the keys and shapes GPT(config) needs."""
    expected = expected_shapes(config)
    missing = [k for k in expected if k not in state_dict]
    extra = [k for k in state_dict if k not in expected]
    wrong = [f"{k} is {tuple(state_dict[k].shape)}, expected {tuple(s)}"
             for k, s in expected.items() if k in state_dict and state_dict[k].shape != s]
    problems = ([f"missing {missing[:3]}"] if missing else []) + ([f"unexpected {extra[:3]}"] if extra else []) + wrong[:3]
    if problems:
        name = config.name or "the model config"
        raise UserError(f"{source}: weights do not fit {name}: {'; '.join(problems)}")


def convert_hf_to_lit(
    weights: Iterable[tuple[str, torch.Tensor]], config: Config, architecture: str,
    dtype: Optional[torch.dtype] = None,
) -> dict[str, torch.Tensor]:
    """A lit_gpt state dict from Hugging Face (name, tensor) pairs of the given architecture."""
    table = family(architecture).weights
    sizes = _qkv_sizes(config)
    sd: dict[str, torch.Tensor] = {}
    pending: dict[str, dict[str, torch.Tensor]] = {}  # fused name -> the q/k/v pieces seen so far
    for hf_name, t in weights:
        target = table.get(_template(hf_name))
        if target is None:
            if IGNORED_WEIGHTS.search(hf_name):
                continue
            raise UserError(f"weight {hf_name!r} has no counterpart in lit_gpt for {architecture}")
        layer = _layer(hf_name)
        if isinstance(target, str):
            sd[target.format(l=layer)] = _owned(t, dtype)
            continue
        lit_name, piece = target[0].format(l=layer), target[1]
        if piece == GROUPED:
            if t.shape[0] != sum(sizes):
                raise UserError(f"{hf_name} has {t.shape[0]} rows, the config expects {sum(sizes)} "
                                f"({config.n_head} heads, {config.n_query_groups} query groups)")
            sd[lit_name] = _owned(grouped_to_lit(t, config), dtype)
            continue
        parts = pending.setdefault(lit_name, {})
        parts[piece] = t if dtype is None else t.to(dtype)
        if len(parts) == 3:
            for p, size in zip((Q, K, V), sizes):
                if parts[p].shape[0] != size:
                    raise UserError(f"{lit_name}: the {p} projection has {parts[p].shape[0]} rows, the config "
                                    f"expects {size}")
            sd[lit_name] = torch.cat([parts[Q], parts[K], parts[V]])
            del pending[lit_name]
    if pending:
        name, parts = next(iter(pending.items()))
        raise UserError(f"incomplete checkpoint: {name} got only the {sorted(parts)} projections")
    if "transformer.wte.weight" in sd and (config.tie_embeddings or "lm_head.weight" not in sd):
        # Tied checkpoints store the embedding once; untied configs of a tied checkpoint get it as the head.
        sd["lm_head.weight"] = sd["transformer.wte.weight"]
    return sd


def convert_lit_to_hf(
    state_dict: dict[str, torch.Tensor], config: Config, architecture: Optional[str] = None
) -> dict[str, torch.Tensor]:
    """Hugging Face weights (contiguous, unshared: ready for safetensors) from a lit_gpt state dict."""
    arch = architecture or hf_architecture(config)
    table = family(arch).export_table(config)
    sizes = _qkv_sizes(config)
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    storages: set[int] = set()  # safetensors refuses tensors that share memory (e.g. an untied copy of wte)
    for hf_pattern, target in table.items():
        layers = range(config.n_layer) if "{l}" in hf_pattern else [None]
        for layer in layers:
            lit_pattern, piece = (target, None) if isinstance(target, str) else target
            lit_name = lit_pattern.format(l=layer)
            if lit_name not in state_dict:
                continue
            if lit_name == "lm_head.weight" and config.tie_embeddings:
                used.add(lit_name)  # transformers ties it to the embedding on load
                continue
            t = state_dict[lit_name]
            if piece == GROUPED:
                t = lit_to_grouped(t, config)
            elif piece is not None:
                t = t.split(sizes)[(Q, K, V).index(piece)]
            t = t.contiguous()
            if piece is not None or t.untyped_storage().data_ptr() in storages:
                t = t.clone()
            storages.add(t.untyped_storage().data_ptr())
            out[hf_pattern.format(l=layer)] = t
            used.add(lit_name)
    left = [k for k in state_dict if k not in used]
    if left:
        raise ValueError(f"{arch} has no name for the weights {left[:5]} (adapter weights must be merged first)")
    return out
