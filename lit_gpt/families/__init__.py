"""Model families: one `Family` record per transformers architecture, holding the names its checkpoints give the
weights, its config.json -> Config and its Config -> config.json (see lit_gpt.families.base.Family).

The architecture of a model is saved in its model_config.yaml (`Config.architecture`, set by the convert
scripts and the named configs). A model_config.yaml written before that field existed has none; its family is
then inferred from the config's other fields, as it always was (`infer_architecture`).

Adding a family: write lit_gpt/families/<family>.py with its weight-name table and its `Family` record, and list
the record in FAMILIES below. Conversion both ways, the PEFT export and the convert scripts' checks all read the
records; nothing else changes (named configs of the new family go in lit_gpt/config.py, with `architecture`).
"""

from __future__ import annotations

from typing import Optional

from lit_gpt.config import Config
from lit_gpt.families import falcon, gpt_neox, llama, phi, qwen
from lit_gpt.families.base import Family
from lit_gpt.utils import UserError

FAMILIES: tuple[Family, ...] = (
    llama.LLAMA, llama.MISTRAL, llama.QWEN2, llama.STABLELM, phi.PHI, gpt_neox.GPT_NEOX, falcon.FALCON, qwen.QWEN,
)
_BY_NAME = {f.name: f for f in FAMILIES}
_BY_ARCHITECTURE = {a: f for f in FAMILIES for a in (f.name, *f.aliases)}
_BY_MODEL_TYPE = {t: f for f in FAMILIES for t in f.model_types}


def family(architecture: str) -> Family:
    """The family of a transformers architecture name (or one of its aliases)."""
    if architecture not in _BY_ARCHITECTURE:
        raise UserError(f"unknown architecture {architecture!r}; supported: {', '.join(sorted(_BY_ARCHITECTURE))}")
    return _BY_ARCHITECTURE[architecture]


def family_of(config: Config) -> Family:
    """The family a config's model belongs to: its saved `architecture`, else the one its fields describe."""
    if config.architecture is None:
        return _BY_NAME[infer_architecture(config)]
    if config.architecture not in _BY_ARCHITECTURE:
        raise UserError(f"{config.name or 'the model config'}: unknown architecture {config.architecture!r} "
                        f"(model_config.yaml `architecture`); supported: {', '.join(sorted(_BY_ARCHITECTURE))}")
    return _BY_ARCHITECTURE[config.architecture]


def hf_family(hf: dict) -> Family:
    """The family of a config.json dict: its `architectures[0]`, else its `model_type`."""
    archs = hf.get("architectures") or []
    found = _BY_ARCHITECTURE.get(archs[0]) if archs else _BY_MODEL_TYPE.get(hf.get("model_type", ""))
    if found is None:
        name = (archs[0] if archs else None) or hf.get("model_type") or "no `architectures` or `model_type`"
        raise UserError(
            f"config.json: unsupported architecture {name!r}; supported: {', '.join(sorted(_BY_ARCHITECTURE))}"
        )
    return found


def infer_architecture(config: Config) -> str:
    """The architecture a config without a saved one describes (model_config.yaml files from before the field,
    and configs built without it). Qwen-1 cannot be told from Qwen2 here: both are Qwen2ForCausalLM."""
    if config.mlp_class_name == "LLaMAMLP":
        if config.norm_class_name == "LayerNorm":
            return "StableLmForCausalLM"
        if config.attn_bias and not config.bias:
            return "Qwen2ForCausalLM"
        if config.sliding_window_size is not None:
            return "MistralForCausalLM"
        return "LlamaForCausalLM"
    if config.lm_head_bias:
        return "PhiForCausalLM"
    if config.bias and not config.shared_attention_norm:
        return "GPTNeoXForCausalLM"
    return "FalconForCausalLM"


def hf_architecture(config: Config) -> str:
    """The transformers architecture a Hugging Face export of this config writes (Qwen-1 is written as Qwen2)."""
    f = family_of(config)
    return f.written_as or f.name


def can_hold(source: Family, architecture: str) -> bool:
    """Whether checkpoints of `source` hold models that export as `architecture` (`hf_architecture` of a config):
    the same weight names, or `source` is written as it (Qwen-1 checkpoints hold Qwen2 models)."""
    return source.weights is family(architecture).weights or source.written_as == architecture


def config_from_hf(hf: dict, name: str = "", hf_repo: Optional[dict] = None) -> Config:
    """The Config of a Hugging Face `config.json` (as a dict) for each supported architecture."""
    f = hf_family(hf)
    vocab = hf.get("vocab_size")
    return Config(name=name, hf_config=hf_repo or {}, architecture=f.name, vocab_size=vocab,
                  padded_vocab_size=vocab, **f.from_hf(hf))


def hf_config_from(config: Config, architecture: Optional[str] = None) -> dict:
    """A config.json dict with which `transformers.AutoModelForCausalLM` builds the same model as `config`."""
    arch = architecture or hf_architecture(config)
    f = _BY_NAME.get(arch)
    if f is None or f.to_hf is None:
        raise ValueError(f"cannot export to architecture {arch!r}")
    c = config
    rope_scaling = {"rope_type": "linear", "factor": c.rope_condense_ratio} if c.rope_condense_ratio != 1.0 else None
    out: dict = {
        "architectures": [arch], "vocab_size": c.padded_vocab_size, "hidden_size": c.n_embd,
        "num_hidden_layers": c.n_layer, "num_attention_heads": c.n_head, "max_position_embeddings": c.block_size,
        "tie_word_embeddings": c.tie_embeddings, "rope_scaling": rope_scaling, "rope_theta": c.rope_base,
    }
    return f.to_hf(c, out)
