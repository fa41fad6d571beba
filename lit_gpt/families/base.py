"""The `Family` record, and what the family modules share: reading config.json values, refusing what a family
cannot express."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from lit_gpt.config import Config
from lit_gpt.utils import UserError

# How a Hugging Face tensor relates to our fused QKV weight [all query heads | all key heads | all value heads]:
# "q" / "k" / "v": a separate projection that is one third of ours; "grouped": a fused projection interleaved per
# query group, [q_1..q_r, k, v] for each of the n_query_groups groups.
Q, K, V, GROUPED = "q", "k", "v", "grouped"

SEPARATE_QKV = {  # the q/k/v projections (and their biases) of transformers' Llama-style attention
    "model.layers.{l}.self_attn.q_proj.weight": ("transformer.h.{l}.attn.attn.weight", Q),
    "model.layers.{l}.self_attn.k_proj.weight": ("transformer.h.{l}.attn.attn.weight", K),
    "model.layers.{l}.self_attn.v_proj.weight": ("transformer.h.{l}.attn.attn.weight", V),
    "model.layers.{l}.self_attn.q_proj.bias": ("transformer.h.{l}.attn.attn.bias", Q),
    "model.layers.{l}.self_attn.k_proj.bias": ("transformer.h.{l}.attn.attn.bias", K),
    "model.layers.{l}.self_attn.v_proj.bias": ("transformer.h.{l}.attn.attn.bias", V),
}


@dataclass(frozen=True, eq=False)
class Family:
    """One transformers architecture: the names its checkpoints give the weights, and its config.json <-> Config.

    - `name`: the architecture, as config.json's `architectures[0]` names it; saved as `Config.architecture`.
    - `weights`: Hugging Face weight name -> ours (`{l}` stands for the layer index). A value is our name, or
      (our name, piece) with a piece of Q, K, V, GROUPED. It holds every name the family's checkpoints may have.
    - `from_hf(hf)`: the Config fields a config.json dict describes (the caller adds the names and vocabulary);
      UserError for what lit_gpt.model cannot compute.
    - `to_hf(config, out)`: `out` (the config.json fields every architecture shares) completed into this
      architecture's config.json; ValueError where it cannot express the config. None: not written (see
      `written_as`).
    - `written_as`: the architecture exports write instead (Qwen-1 models are written as Qwen2, which computes the
      same function without trust_remote_code).
    - `aliases`: other `architectures` names read as this family; `model_types`: the `model_type` of config.json
      files that name no architecture.
    - `export_weights(config)`: the table to write when it depends on the config (Falcon's two decoder layouts).
    - `module_renames`: Hugging Face modules named otherwise than their weights (PEFT targets modules).
    """

    name: str
    weights: dict
    from_hf: Callable[[dict], dict]
    to_hf: Optional[Callable[[Config, dict], dict]] = None
    written_as: Optional[str] = None
    aliases: tuple[str, ...] = ()
    model_types: tuple[str, ...] = ()
    export_weights: Optional[Callable[[Config], dict]] = None
    module_renames: dict = field(default_factory=dict)

    def export_table(self, config: Config) -> dict:
        """The weight-name table a Hugging Face export of `config` uses."""
        return self.export_weights(config) if self.export_weights is not None else self.weights


def rope_from_hf(hf: dict, default_partial: float = 1.0) -> tuple[float, float, float]:
    """(rope_base, rotary_percentage, condense_ratio) from either the old flat keys or transformers 5's
    `rope_parameters`."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    base = hf.get("rope_theta", hf.get("rotary_emb_base", params.get("rope_theta", 10000.0)))
    partial = hf.get("partial_rotary_factor", hf.get("rotary_pct", params.get("partial_rotary_factor", default_partial)))
    kind = scaling.get("rope_type", scaling.get("type")) or params.get("rope_type") or "default"
    condense = 1.0
    if kind == "linear":
        condense = float(scaling.get("factor", params.get("factor", 1.0)))
    elif kind != "default":
        raise UserError(f"config.json: rope scaling {kind!r} is not supported (only linear)")
    return float(base), float(partial), condense


def gelu_from_hf(act: str) -> str:
    """Our `gelu_approximate` for a config.json activation name."""
    if act == "gelu":
        return "none"
    if act in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return "tanh"
    raise UserError(f"config.json: activation {act!r} is not supported for this architecture")


def gelu_to_hf(config: Config, tanh: str = "gelu_new") -> str:
    return tanh if config.gelu_approximate == "tanh" else "gelu"


def require(ok: bool, what: str) -> None:
    """UserError unless `ok`: config.json asks for something lit_gpt.model does not compute."""
    if not ok:
        raise UserError(f"config.json: {what} is not supported by lit_gpt.model")


def unsupported(config: Config, arch: str, what: str) -> ValueError:
    return ValueError(f"{config.name or 'this model'}: {arch} cannot express {what}")


def check_head_size(config: Config, arch: str) -> None:
    """Architectures without a `head_dim` field need head_size = n_embd / n_head."""
    c = config
    if c.head_size * c.n_head != c.n_embd:
        raise unsupported(c, arch, f"head_size={c.head_size} with n_embd/n_head={c.n_embd // c.n_head}")
