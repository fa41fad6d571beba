"""Model hyper-parameters: one `Config` dataclass and a table of named configs.

Every supported family is described by the same handful of switches (norm, MLP, residual layout, rotary
fraction, biases, query groups, ...), so adding a model is adding a dict, not a class.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Literal, Optional

import yaml

CONFIG_FILENAME = "model_config.yaml"


@dataclass
class Config:
    name: str = ""
    hf_config: dict = field(default_factory=dict)  # {"org": ..., "name": ...} of the Hub repo
    # The transformers architecture of the Hub checkpoint (lit_gpt.families): which names its weights have and
    # which config.json an export writes. None (model_config.yaml files from before the field): inferred from the
    # fields below. Left out of ==: two configs that differ only in it build the same model (Qwen-1 and Qwen2).
    architecture: Optional[str] = field(default=None, compare=False)
    block_size: int = 4096  # longest context the model was trained for
    vocab_size: int = 50254  # tokenizer vocabulary
    padding_multiple: int = 512
    padded_vocab_size: Optional[int] = None  # rows of the embedding / lm_head
    n_layer: int = 16
    n_head: int = 32
    n_embd: int = 4096
    head_size: Optional[int] = None
    n_query_groups: Optional[int] = None  # None: MHA; 1: MQA; otherwise GQA
    rotary_percentage: float = 1.0
    rope_base: float = 10000.0
    rope_condense_ratio: float = 1.0  # linear position interpolation
    parallel_residual: bool = False  # NeoX/Falcon/Phi: attention and MLP read the same input
    shared_attention_norm: bool = False  # parallel residual with one norm for both branches
    bias: bool = True  # bias on every linear layer
    attn_bias: bool = False  # bias on the QKV projection only (Qwen)
    lm_head_bias: bool = False
    norm_class_name: Literal["LayerNorm", "RMSNorm"] = "LayerNorm"
    norm_eps: float = 1e-5
    mlp_class_name: Literal["GptNeoxMLP", "LLaMAMLP"] = "GptNeoxMLP"
    gelu_approximate: str = "none"
    intermediate_size: Optional[int] = None
    sliding_window_size: Optional[int] = None  # Mistral: each query sees at most this many keys
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            self.name = self.hf_config.get("name", self.name)
        if self.head_size is None:
            if self.n_embd % self.n_head:
                raise ValueError(f"{self.name}: n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
            self.head_size = self.n_embd // self.n_head
        if self.padded_vocab_size is None:
            m = self.padding_multiple
            self.padded_vocab_size = ((self.vocab_size + m - 1) // m) * m
        else:
            self.vocab_size = min(self.vocab_size, self.padded_vocab_size)
        if self.n_query_groups is None:
            self.n_query_groups = self.n_head
        if self.n_head % self.n_query_groups:
            raise ValueError(f"{self.name}: n_head={self.n_head} is not divisible by n_query_groups={self.n_query_groups}")
        if self.intermediate_size is None:
            if self.mlp_class_name == "LLaMAMLP":
                raise ValueError(f"{self.name}: LLaMAMLP needs intermediate_size")
            self.intermediate_size = 4 * self.n_embd
        if self.shared_attention_norm and not self.parallel_residual:
            raise ValueError(f"{self.name}: shared_attention_norm needs parallel_residual")

    @property
    def rope_n_elem(self) -> int:
        return int(self.rotary_percentage * self.head_size)

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "Config":
        if name not in name_to_config:
            close = [n for n in name_to_config if name.lower() in n.lower() or n.lower() in name.lower()]
            hint = f" Did you mean one of {close}?" if close else f" Known names: {', '.join(sorted(name_to_config))}."
            raise ValueError(f"Unknown model name {name!r}.{hint}")
        return cls(**{**name_to_config[name], **overrides})

    @classmethod
    def from_file(cls, path: Path | str, **overrides: Any) -> "Config":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no model config file")
        with open(path, encoding="utf-8") as f:
            data = json.load(f) if path.suffix == ".json" else yaml.safe_load(f)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of config fields")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown config fields {sorted(unknown)}")
        return cls(**{**data, **overrides})

    @classmethod
    def from_checkpoint(cls, checkpoint_dir: Path | str, **overrides: Any) -> "Config":
        """The config saved beside the weights, else the named config matching the directory name."""
        checkpoint_dir = Path(checkpoint_dir)
        path = checkpoint_dir / CONFIG_FILENAME
        if path.is_file():
            return cls.from_file(path, **overrides)
        if checkpoint_dir.name in name_to_config:
            return cls.from_name(checkpoint_dir.name, **overrides)
        raise FileNotFoundError(
            f"{checkpoint_dir}: no {CONFIG_FILENAME}, and {checkpoint_dir.name!r} is not a known model name"
        )

    def save(self, checkpoint_dir: Path | str) -> Path:
        path = Path(checkpoint_dir) / CONFIG_FILENAME
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            yaml.safe_dump(asdict(self), f, sort_keys=False)
        tmp.replace(path)
        return path


def config_fields_differ(a: Config, b: Config, ignore: Iterable[str] = ()) -> dict[str, tuple]:
    """Fields where two configs disagree (for warnings and tests)."""
    ignore = set(ignore)
    da, db = asdict(a), asdict(b)
    return {f.name: (da[f.name], db[f.name]) for f in fields(Config) if f.name not in ignore and da[f.name] != db[f.name]}


def _hf(org: str, name: str) -> dict:
    return {"org": org, "name": name}


# The real hyper-parameters of each model, as published in its Hub config.json.
configs: list[dict] = []

########################
# Meta Llama 2
########################
_llama = dict(
    architecture="LlamaForCausalLM",
    vocab_size=32000, padding_multiple=64, rotary_percentage=1.0, parallel_residual=False, bias=False,
    norm_class_name="RMSNorm", norm_eps=1e-5, mlp_class_name="LLaMAMLP", block_size=4096,
)
configs += [
    dict(name="Llama-2-7b-hf", hf_config=_hf("meta-llama", "Llama-2-7b-hf"), **_llama,
         n_layer=32, n_head=32, n_embd=4096, intermediate_size=11008),
    dict(name="Llama-2-13b-hf", hf_config=_hf("meta-llama", "Llama-2-13b-hf"), **_llama,
         n_layer=40, n_head=40, n_embd=5120, intermediate_size=13824),
]

########################
# OpenLLaMA
########################
configs += [
    dict(name="open_llama_3b", hf_config=_hf("openlm-research", "open_llama_3b"),
         **{**_llama, "block_size": 2048, "norm_eps": 1e-6},
         n_layer=26, n_head=32, n_embd=3200, intermediate_size=8640),
    dict(name="open_llama_7b", hf_config=_hf("openlm-research", "open_llama_7b"),
         **{**_llama, "block_size": 2048, "norm_eps": 1e-6},
         n_layer=32, n_head=32, n_embd=4096, intermediate_size=11008),
]

########################
# Mistral
########################
configs.append(
    dict(name="Mistral-7B-v0.1", hf_config=_hf("mistralai", "Mistral-7B-v0.1"),
         **{**_llama, "architecture": "MistralForCausalLM", "block_size": 32768},
         n_layer=32, n_head=32, n_embd=4096, n_query_groups=8, intermediate_size=14336,
         sliding_window_size=4096),
)

########################
# Qwen (first generation): fused c_attn with bias, tiktoken vocabulary
########################
_qwen1 = dict(
    architecture="QWenLMHeadModel",
    vocab_size=151851, padded_vocab_size=151936, rotary_percentage=1.0, parallel_residual=False, bias=False,
    attn_bias=True, norm_class_name="RMSNorm", norm_eps=1e-6, mlp_class_name="LLaMAMLP", rope_base=10000,
)
configs += [
    # Qwen-7B's config.json says intermediate_size=22016; the MLP uses half of it per branch.
    dict(name="Qwen-7B", hf_config=_hf("Qwen", "Qwen-7B"), **_qwen1, block_size=8192,
         n_layer=32, n_head=32, n_embd=4096, intermediate_size=11008),
    dict(name="Qwen-14B", hf_config=_hf("Qwen", "Qwen-14B"), **{**_qwen1, "padded_vocab_size": 152064}, block_size=2048,
         n_layer=40, n_head=40, n_embd=5120, intermediate_size=13696),
]

########################
# Qwen2.5
########################
_qwen25 = dict(
    architecture="Qwen2ForCausalLM",
    vocab_size=151643, rotary_percentage=1.0, parallel_residual=False, bias=False, attn_bias=True,
    norm_class_name="RMSNorm", norm_eps=1e-6, mlp_class_name="LLaMAMLP", rope_base=1000000, block_size=32768,
)
configs += [
    dict(name="Qwen2.5-0.5B", hf_config=_hf("Qwen", "Qwen2.5-0.5B"), **_qwen25, padded_vocab_size=151936,
         n_layer=24, n_head=14, n_embd=896, n_query_groups=2, intermediate_size=4864, tie_embeddings=True),
    dict(name="Qwen2.5-7B", hf_config=_hf("Qwen", "Qwen2.5-7B"), **{**_qwen25, "block_size": 131072},
         padded_vocab_size=152064,
         n_layer=28, n_head=28, n_embd=3584, n_query_groups=4, intermediate_size=18944),
    dict(name="Qwen2.5-14B", hf_config=_hf("Qwen", "Qwen2.5-14B"), **{**_qwen25, "norm_eps": 1e-5, "block_size": 131072},
         padded_vocab_size=152064,
         n_layer=48, n_head=40, n_embd=5120, n_query_groups=8, intermediate_size=13824),
]

########################
# TII Falcon
########################
configs.append(
    dict(name="falcon-7b", hf_config=_hf("tiiuae", "falcon-7b"), architecture="FalconForCausalLM",
         block_size=2048, vocab_size=65024,
         padded_vocab_size=65024, n_layer=32, n_head=71, n_embd=4544, n_query_groups=1, rotary_percentage=1.0,
         parallel_residual=True, shared_attention_norm=True, bias=False, tie_embeddings=True),
)

########################
# EleutherAI Pythia (GPT-NeoX)
########################
_pythia = dict(architecture="GPTNeoXForCausalLM",
               block_size=2048, vocab_size=50254, padding_multiple=128, rotary_percentage=0.25,
               parallel_residual=True, bias=True)
for _name, _n_layer, _n_embd, _n_head, _extra in [
    ("pythia-70m", 6, 512, 8, {}),
    ("pythia-160m", 12, 768, 12, {}),
    ("pythia-410m", 24, 1024, 16, {}),
    ("pythia-1b", 16, 2048, 8, {}),
    ("pythia-1.4b", 24, 2048, 16, {}),
    ("pythia-2.8b", 32, 2560, 32, {}),
    ("pythia-6.9b", 32, 4096, 32, {"padding_multiple": 256}),
    ("pythia-12b", 36, 5120, 40, {"padding_multiple": 512}),
]:
    configs.append(dict(name=_name, hf_config=_hf("EleutherAI", _name),
                        **{**_pythia, **_extra}, n_layer=_n_layer, n_embd=_n_embd, n_head=_n_head))

########################
# StabilityAI StableLM
########################
configs += [
    # The alpha models are GPT-NeoX.
    dict(name="stablelm-base-alpha-3b", hf_config=_hf("stabilityai", "stablelm-base-alpha-3b"),
         architecture="GPTNeoXForCausalLM", block_size=4096,
         vocab_size=50254, padded_vocab_size=50688, n_layer=16, n_head=32, n_embd=4096, rotary_percentage=0.25,
         parallel_residual=True, bias=True),
    dict(name="stablelm-base-alpha-7b", hf_config=_hf("stabilityai", "stablelm-base-alpha-7b"),
         architecture="GPTNeoXForCausalLM", block_size=4096,
         vocab_size=50254, padded_vocab_size=50432, n_layer=16, n_head=48, n_embd=6144, rotary_percentage=0.25,
         parallel_residual=True, bias=True),
    # StableLM-3B-4E1T (the `StableLmForCausalLM` architecture): LayerNorm, SwiGLU, partial rotary.
    dict(name="stablelm-3b-4e1t", hf_config=_hf("stabilityai", "stablelm-3b-4e1t"),
         architecture="StableLmForCausalLM", block_size=4096,
         vocab_size=50254, padded_vocab_size=50304, n_layer=32, n_head=32, n_embd=2560, rotary_percentage=0.25,
         parallel_residual=False, bias=False, norm_class_name="LayerNorm", mlp_class_name="LLaMAMLP",
         intermediate_size=6912),
]

########################
# Microsoft Phi
########################
configs.append(
    dict(name="phi-2", hf_config=_hf("microsoft", "phi-2"), architecture="PhiForCausalLM",
         block_size=2048, vocab_size=50257,
         padded_vocab_size=51200, n_layer=32, n_head=32, n_embd=2560, rotary_percentage=0.4,
         parallel_residual=True, shared_attention_norm=True, bias=True, lm_head_bias=True,
         gelu_approximate="tanh"),
)

########################
# HuggingFaceTB SmolLM2
########################
_smollm2 = dict(architecture="LlamaForCausalLM",
                vocab_size=49152, padded_vocab_size=49152, block_size=8192, rotary_percentage=1.0,
                parallel_residual=False, bias=False, norm_class_name="RMSNorm", norm_eps=1e-5,
                mlp_class_name="LLaMAMLP", tie_embeddings=True)
for _suffix in ("", "-Instruct"):
    configs += [
        dict(name=f"SmolLM2-135M{_suffix}", hf_config=_hf("HuggingFaceTB", f"SmolLM2-135M{_suffix}"), **_smollm2,
             n_layer=30, n_head=9, n_embd=576, n_query_groups=3, intermediate_size=1536, rope_base=100000),
        dict(name=f"SmolLM2-360M{_suffix}", hf_config=_hf("HuggingFaceTB", f"SmolLM2-360M{_suffix}"), **_smollm2,
             n_layer=32, n_head=15, n_embd=960, n_query_groups=5, intermediate_size=2560, rope_base=100000),
        dict(name=f"SmolLM2-1.7B{_suffix}", hf_config=_hf("HuggingFaceTB", f"SmolLM2-1.7B{_suffix}"), **_smollm2,
             n_layer=24, n_head=32, n_embd=2048, n_query_groups=32, intermediate_size=8192, rope_base=130000),
    ]

########################
# Tiny debug configs: random weights, for tests and smoke runs. No `architecture`: it follows the fields, which
# tests override freely.
########################
configs += [
    dict(name="tiny-llama", block_size=128, vocab_size=256, padded_vocab_size=256, n_layer=2, n_head=4,
         n_embd=64, n_query_groups=2, bias=False, norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP",
         intermediate_size=128),
    dict(name="tiny-neox", block_size=128, vocab_size=256, padded_vocab_size=256, n_layer=2, n_head=4,
         n_embd=64, rotary_percentage=0.25, parallel_residual=True, bias=True),
]

name_to_config: dict[str, dict] = {c["name"]: c for c in configs}
