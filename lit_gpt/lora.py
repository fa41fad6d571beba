"""LoRA (Hu et al. 2021) by wrapping the base model's linear layers in place.

`inject_lora(model, LoRAConfig(...))` replaces the chosen `nn.Linear` modules (plain or bitsandbytes 4-bit) with a
`LoRALinear` that keeps the original layer as `.linear` and adds `scaling * B @ A @ dropout(x)`. The fused QKV layer
([all q heads | all k heads | all v heads]) gets one (A, B) pair per enabled part, so LoRA on query and value leaves
the key rows untouched, and each part has its own rank-r update as with separate q/k/v projections.

State-dict names: the base weight of a wrapped layer is `<layer>.linear.weight`; the LoRA parameters are
`<layer>.lora_A` / `<layer>.lora_B`. `lora_state_dict` keeps only the latter, `merged_state_dict` gives an
ordinary `GPT` state dict after `merge_lora`.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterator, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from lit_gpt.config import Config
from lit_gpt.training import HPARAMS_FILENAME


@dataclass
class LoRAConfig:
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    query: bool = True
    key: bool = False
    value: bool = True
    projection: bool = False
    mlp: bool = False
    head: bool = False

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ValueError(f"LoRA rank r must be positive, got {self.r}")
        if not (self.query or self.key or self.value or self.projection or self.mlp or self.head):
            raise ValueError("LoRA is enabled on no layer: set at least one of query/key/value/projection/mlp/head")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LoRAConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def asdict(self) -> dict[str, Any]:
        return asdict(self)


class LoRALinear(nn.Module):
    """`linear(x) + scaling * concat_over_parts(B_i @ A_i @ dropout(x))`, zero for the rows of disabled parts.

    `parts` lists the output row blocks of `linear` (e.g. the q, k, v blocks of the fused QKV) and `enabled` says
    which of them get a LoRA update. A plain layer is one part.
    """

    def __init__(
        self,
        linear: nn.Linear,
        r: int,
        alpha: float,
        dropout: float = 0.0,
        parts: Optional[list[int]] = None,
        enabled: Optional[list[bool]] = None,
    ) -> None:
        super().__init__()
        self.linear = linear
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.parts = list(parts) if parts is not None else [self.out_features]
        self.enabled = list(enabled) if enabled is not None else [True] * len(self.parts)
        if sum(self.parts) != self.out_features or len(self.enabled) != len(self.parts) or not any(self.enabled):
            raise ValueError(f"bad LoRA parts {self.parts}/{self.enabled} for out_features={self.out_features}")
        self.r, self.scaling = r, alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # LoRA weights live in the compute dtype; a 4-bit base weight is uint8, so take its compute dtype instead.
        weight = linear.weight
        dtype = weight.dtype if weight.is_floating_point() else getattr(linear, "compute_dtype", None) or torch.float32
        n_on = sum(self.enabled)
        self.lora_A = nn.Parameter(torch.empty(n_on * r, self.in_features, device=weight.device, dtype=dtype))
        self.lora_B = nn.Parameter(
            torch.empty(sum(p for p, e in zip(self.parts, self.enabled) if e), r, device=weight.device, dtype=dtype)
        )
        self.merged = False
        self.disabled = False  # set by `lora_disabled`: the base layer alone (a DPO reference without a second copy)
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        # As in the paper and PEFT: A random, B zero, so training starts from the base model.
        for i in range(sum(self.enabled)):
            nn.init.kaiming_uniform_(self.lora_A[i * self.r:(i + 1) * self.r], a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def _part_weights(self) -> Iterator[tuple[int, Optional[torch.Tensor], Optional[torch.Tensor]]]:
        """(rows, A_i, B_i) per part; A_i and B_i are None where the part has no update."""
        i, row = 0, 0
        for size, on in zip(self.parts, self.enabled):
            if on:
                yield size, self.lora_A[i * self.r:(i + 1) * self.r], self.lora_B[row:row + size]
                i, row = i + 1, row + size
            else:
                yield size, None, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        if self.merged or self.disabled:
            return y
        x = self.dropout(x).to(self.lora_A.dtype)
        # One A and B product per part, as separate q/k/v projections compute it (so PEFT gives the same numbers).
        pieces = [F.linear(F.linear(x, a), b) if a is not None else x.new_zeros(*x.shape[:-1], size)
                  for size, a, b in self._part_weights()]
        delta = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)
        return y + (delta * self.scaling).to(y.dtype)

    def delta_weight(self) -> torch.Tensor:
        """The (out_features, in_features) update `scaling * B @ A`, zero rows for disabled parts (fp32)."""
        rows = [b.float() @ a.float() if a is not None else self.lora_A.new_zeros(size, self.in_features).float()
                for size, a, b in self._part_weights()]
        return torch.cat(rows, dim=0) * self.scaling

    def merge(self) -> None:
        if self.merged:
            return
        self._check_mergeable()
        w = self.linear.weight
        w.data = (w.data.float() + self.delta_weight().to(w.device)).to(w.dtype)
        self.merged = True

    def unmerge(self) -> None:
        if not self.merged:
            return
        w = self.linear.weight
        w.data = (w.data.float() - self.delta_weight().to(w.device)).to(w.dtype)
        self.merged = False

    def _check_mergeable(self) -> None:
        if not self.linear.weight.is_floating_point():
            raise ValueError(
                "cannot merge LoRA into a quantized layer: load the base model in full precision "
                "(scripts/merge_lora.py does) and merge there"
            )

    def extra_repr(self) -> str:
        return f"r={self.r}, scaling={self.scaling}, parts={self.parts}, enabled={self.enabled}, merged={self.merged}"


def _targets(model: nn.Module, config: Config, lora: LoRAConfig) -> list[tuple[str, list[int], list[bool]]]:
    """(module name, parts, enabled) of every linear layer the LoRA config selects."""
    hs, nh, ng = config.head_size, config.n_head, config.n_query_groups
    out = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if name == "lm_head":
            if lora.head:
                out.append((name, [module.out_features], [True]))
        elif name.endswith(".attn.attn"):
            enabled = [lora.query, lora.key, lora.value]
            if any(enabled):
                out.append((name, [nh * hs, ng * hs, ng * hs], enabled))
        elif name.endswith(".attn.proj"):
            if lora.projection:
                out.append((name, [module.out_features], [True]))
        elif ".mlp." in name:
            if lora.mlp:
                out.append((name, [module.out_features], [True]))
    return out


def inject_lora(model: nn.Module, lora: LoRAConfig) -> nn.Module:
    """Wraps the selected linear layers of a `GPT` in `LoRALinear`, in place; returns the model."""
    config: Config = model.config
    for name, parts, enabled in _targets(model, config, lora):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        linear = getattr(parent, child)
        setattr(parent, child, LoRALinear(linear, lora.r, lora.alpha, lora.dropout, parts, enabled))
    return model


def lora_layers(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


@contextmanager
def lora_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Runs `model` as its base model: every unmerged LoRA layer skips its update inside the block."""
    layers = [m for m in lora_layers(model) if not m.merged]
    for m in layers:
        m.disabled = True
    try:
        yield model
    finally:
        for m in layers:
            m.disabled = False


def lora_filter(key: str, value: Any = None) -> bool:
    """True for LoRA parameter names (the signature of Fabric's `save(..., filter=...)`)."""
    return "lora_" in key


def mark_only_lora_as_trainable(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        p.requires_grad = lora_filter(name)


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if lora_filter(k)}


def load_lora_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "LoRA weights") -> None:
    """Loads LoRA-only weights, requiring that they cover exactly the model's LoRA parameters."""
    expected = {k for k, _ in model.named_parameters() if lora_filter(k)}
    given = set(state_dict)
    if expected != given:
        missing, extra = sorted(expected - given)[:3], sorted(given - expected)[:3]
        raise ValueError(
            f"{source} do not match the LoRA config (missing {missing}, unexpected {extra}): "
            "use the hyper-parameters the run was trained with"
        )
    model.load_state_dict(state_dict, strict=False)


def merge_lora(model: nn.Module) -> None:
    """Adds every LoRA update into its base weight (forward then skips the LoRA path).

    A LoRA head on tied embeddings would also change the input embedding, so the head is untied first and
    `model.config.tie_embeddings` becomes False.
    """
    head = getattr(model, "lm_head", None)
    if isinstance(head, LoRALinear) and head.linear.weight is model.transformer.wte.weight:
        head.linear.weight = nn.Parameter(head.linear.weight.detach().clone(), requires_grad=False)
        model.config.tie_embeddings = False
    for layer in lora_layers(model):
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    for layer in lora_layers(model):
        layer.unmerge()


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The ordinary `GPT` state dict of a merged LoRA model (LoRA tensors dropped, wrapper names removed)."""
    if any(not layer.merged for layer in lora_layers(model)):
        raise ValueError("call merge_lora(model) first")
    out = {}
    for k, v in model.state_dict().items():
        if lora_filter(k):
            continue
        out[k.replace(".linear.", ".")] = v
    return out



def find_hparams(lora_path: Path) -> Path:
    """A finetune run's hparams.yaml: beside its LoRA file (step-NNNNNN/, final/), else in the run dir above."""
    from lit_gpt.utils import UserError

    lora_path = Path(lora_path)
    for candidate in (lora_path.parent / HPARAMS_FILENAME, lora_path.parent.parent / HPARAMS_FILENAME):
        if candidate.is_file():
            return candidate
    raise UserError(
        f"{lora_path}: no {HPARAMS_FILENAME} beside it or in {lora_path.parent.parent} "
        "(the run's LoRA settings are needed; point --lora_path into a finetune/lora.py out_dir)"
    )


def read_lora_run(lora_path: Path) -> tuple[dict, Path]:
    """The hparams of the finetune run a LoRA file comes from, and their file (checked before any model loads)."""
    import yaml

    from lit_gpt.utils import UserError

    lora_path = Path(lora_path)
    if not lora_path.is_file():
        raise UserError(f"--lora_path {str(lora_path)!r}: no such file")
    hparams_path = find_hparams(lora_path)
    hparams = yaml.safe_load(hparams_path.read_text())
    if not isinstance(hparams, dict) or not isinstance(hparams.get("lora"), dict):
        raise UserError(f"{hparams_path}: no `lora` section (not written by finetune/lora.py?)")
    return hparams, hparams_path


def apply_lora_run(model: nn.Module, lora_path: Path, hparams: Optional[dict] = None) -> LoRAConfig:
    """Injects a finetune run's LoRA layers (settings from its hparams.yaml), loads its weights and merges them,
    in place: the model then computes what the merged checkpoint would, without a merged copy on disk."""
    from lit_gpt.utils import UserError, lazy_load

    if hparams is None:
        hparams = read_lora_run(lora_path)[0]
    lora = LoRAConfig.from_dict(hparams["lora"])
    inject_lora(model, lora)
    weights = lazy_load(lora_path)
    try:
        load_lora_state_dict(model, weights.get("model", weights), str(lora_path))
    except ValueError as e:
        raise UserError(str(e)) from e
    merge_lora(model)  # unties a LoRA head from tied embeddings (config.tie_embeddings becomes False)
    return lora


def load_merged_model(checkpoint_dir: Path, lora_path: Path, precision: Optional[str] = None, hparams: Optional[dict] = None):
    """The base checkpoint (in `precision`, default the base's own dtype) on the CPU with a run's LoRA merged in."""
    import torch

    from lit_gpt.quantize import build_model
    from lit_gpt.utils import CHECKPOINT_FILENAME, PRECISION_TO_DTYPE, UserError, lazy_load

    base_path = Path(checkpoint_dir) / CHECKPOINT_FILENAME
    if precision is None:
        dtype = next(v for v in lazy_load(base_path).values() if torch.is_tensor(v) and v.is_floating_point()).dtype
    elif precision in PRECISION_TO_DTYPE:
        dtype = PRECISION_TO_DTYPE[precision]
    else:
        raise UserError(f"--precision {precision!r}: choose one of {', '.join(PRECISION_TO_DTYPE)}")
    model = build_model(Config.from_checkpoint(checkpoint_dir), base_path, "cpu", dtype)
    apply_lora_run(model, lora_path, hparams)
    return model
