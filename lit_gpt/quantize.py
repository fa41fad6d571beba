"""Loading a checkpoint layer by layer, optionally straight into bitsandbytes 4-bit layers (QLoRA).

`build_model(config, checkpoint_path, device, dtype, quantize)` creates the `GPT` on the meta device (no memory),
then materializes one tensor at a time from the memory-mapped checkpoint: a linear layer of the transformer blocks
is quantized as soon as its weight is read (on `device`, so on a GPU the full-precision weight of one layer at a
time passes through GPU memory), everything else is copied in `dtype`. The whole model never exists in full
precision.

Lightning's `BitsandbytesPrecision` only runs on CUDA; bitsandbytes' `Linear4bit` itself runs forward and backward
on CPU with fp32 compute, so this path serves both (and CI tests QLoRA on CPU). The LM head, embeddings and norms
stay in `dtype`, as in the QLoRA paper and HF's bitsandbytes integration.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Mapping, Optional, Union

import torch
import torch.nn as nn

from lit_gpt.config import Config
from lit_gpt.model import GPT, RotaryEmbedding
from lit_gpt.utils import UserError, lazy_load

# mode -> (bitsandbytes quant_type, double quantization of the absmax statistics)
QUANTIZE_MODES: dict[str, tuple[str, bool]] = {
    "bnb.nf4": ("nf4", False),
    "bnb.nf4-dq": ("nf4", True),
    "bnb.fp4": ("fp4", False),
    "bnb.fp4-dq": ("fp4", True),
}


def check_quantize(mode: Optional[str]) -> None:
    if mode is not None and mode not in QUANTIZE_MODES:
        raise UserError(f"--quantize {mode!r} is not supported; choose one of {', '.join(QUANTIZE_MODES)}")


def quantized_linear(
    weight: torch.Tensor, bias: Optional[torch.Tensor], mode: str, device: torch.device | str, compute_dtype: torch.dtype
) -> nn.Module:
    """A frozen bitsandbytes `Linear4bit` holding `weight` (out, in) quantized on `device`."""
    import bitsandbytes as bnb

    quant_type, double = QUANTIZE_MODES[mode]
    out_features, in_features = weight.shape
    with torch.device("cpu"):
        layer = bnb.nn.Linear4bit(
            in_features, out_features, bias=bias is not None, compute_dtype=compute_dtype,
            compress_statistics=double, quant_type=quant_type, device="meta",
        )
    # Params4bit quantizes when moved to a real device; this copy of the one layer's weight, made on `device` from
    # wherever `weight` lies (a memory-mapped checkpoint), is the only full-precision copy.
    w = weight.to(device=device, dtype=compute_dtype, copy=True)
    layer.weight = bnb.nn.Params4bit(
        w, requires_grad=False, compress_statistics=double, quant_type=quant_type, module=layer
    )
    layer.weight = layer.weight.to(device)
    if bias is not None:
        layer.bias = nn.Parameter(bias.to(device=device, dtype=compute_dtype, copy=True), requires_grad=False)
    return layer


def is_quantized(module: nn.Module) -> bool:
    return any(p.__class__.__name__ == "Params4bit" for p in module.parameters())


def build_model(
    config: Config,
    checkpoint_path: Union[Path, str, Mapping[str, torch.Tensor], None],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    quantize: Optional[str] = None,
) -> GPT:
    """A `GPT` with the checkpoint's weights on `device` in `dtype`, its block linears 4-bit if `quantize` is set.

    `checkpoint_path=None` gives random weights (benchmarks): each layer is initialized on `device` instead. A
    mapping is read as the state dict itself, name by name (bench/qlora_memory.py feeds 14B-shaped random weights
    through this same path without writing them to disk).
    """
    check_quantize(quantize)
    device = torch.device(device)
    state_dict = None
    if isinstance(checkpoint_path, Mapping):
        state_dict = checkpoint_path
    elif checkpoint_path is not None:
        state_dict = lazy_load(checkpoint_path)
        state_dict = state_dict.get("model", state_dict)

    with torch.device("meta"):
        model = GPT(config)

    def tensor(name: str, like: torch.Tensor, cast: bool = True) -> torch.Tensor:
        """The checkpoint's tensor, copied to `device` in `dtype` (`cast=False`: as stored, not copied)."""
        if state_dict is None:
            return _random_like(name, like, device, dtype)
        if name not in state_dict:
            raise UserError(f"{checkpoint_path}: missing {name!r} (the weights do not fit the model config)")
        t = state_dict[name]
        if tuple(t.shape) != tuple(like.shape):
            raise UserError(
                f"{checkpoint_path}: {name!r} has shape {tuple(t.shape)}, the config wants {tuple(like.shape)}"
            )
        if not cast:
            return t
        return t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype, copy=True)

    # 1) block linears -> quantized layers, one at a time.
    if quantize is not None:
        for name, module in list(model.named_modules()):
            if isinstance(module, nn.Linear) and name.startswith("transformer.h."):
                # as stored: quantized_linear makes the one full-precision copy (a second would add a layer's worth)
                w = tensor(f"{name}.weight", module.weight, cast=False)
                b = tensor(f"{name}.bias", module.bias, cast=False) if module.bias is not None else None
                parent_name, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent_name), child, quantized_linear(w, b, quantize, device, dtype))
                del w, b
                _release_freed_heap()

    # 2) every other parameter; the tied head shares the embedding's tensor.
    tied = config.tie_embeddings
    for mod_name, module in list(model.named_modules()):
        for p_name, p in list(module.named_parameters(recurse=False)):
            if not p.is_meta:
                continue
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if tied and full == "lm_head.weight":
                continue
            setattr(module, p_name, nn.Parameter(tensor(full, p), requires_grad=p.requires_grad))
    if tied:
        model.lm_head.weight = model.transformer.wte.weight

    # 3) non-persistent buffers are not in checkpoints: rebuild the rotary tables on the device.
    with torch.device(device):
        model.rope = RotaryEmbedding(config)
    leftovers = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftovers:
        raise RuntimeError(f"tensors left on the meta device: {leftovers[:5]}")
    return model


def _release_freed_heap() -> None:
    """Hands freed heap pages back to the OS (glibc's malloc_trim). Quantizing leaves holes between the small 4-bit
    tensors that glibc keeps resident: without this, loading a 7B model on CPU peaked ~2 GB above its size."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _random_like(name: str, like: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Random init for benchmarks: normal(0, 0.02) for matrices, ones for norm weights, zeros for biases."""
    if name.endswith("bias"):
        return torch.zeros(like.shape, device=device, dtype=dtype)
    if like.ndim == 1:
        return torch.ones(like.shape, device=device, dtype=dtype)
    return torch.empty(like.shape, device=device, dtype=dtype).normal_(0.0, 0.02)


def dequantized_weight(layer: nn.Module) -> torch.Tensor:
    """The (out, in) weight a 4-bit layer computes with (for tests and merging)."""
    import bitsandbytes as bnb

    return bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
