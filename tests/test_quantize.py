import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("bitsandbytes")

from lit_gpt.config import Config
from lit_gpt.lora import LoRAConfig, inject_lora, mark_only_lora_as_trainable
from lit_gpt.model import GPT
from lit_gpt.quantize import build_model, dequantized_weight, is_quantized, quantized_linear
from lit_gpt.utils import UserError


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    config = Config.from_name("tiny-llama", tie_embeddings=True)
    model = GPT(config)
    for p in model.parameters():
        if p.ndim == 2:
            torch.nn.init.normal_(p, std=0.05)
    path = tmp_path / "lit_model.pth"
    torch.save(model.state_dict(), path)
    return config, model.eval(), path


def test_build_model_loads_exact_weights_without_random_init(checkpoint):
    config, ref, path = checkpoint
    model = build_model(config, path).eval()
    x = torch.randint(0, 256, (2, 10))
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))
    assert model.lm_head.weight is model.transformer.wte.weight  # tying survives layer-by-layer loading


def test_build_model_reports_a_mismatching_checkpoint(checkpoint, tmp_path):
    config, _, path = checkpoint
    with pytest.raises(UserError, match="shape"):
        build_model(Config.from_name("tiny-llama", n_embd=32, n_head=2, n_query_groups=1), path)


@pytest.mark.parametrize("mode", ["bnb.nf4", "bnb.nf4-dq", "bnb.fp4", "bnb.fp4-dq"])
def test_quantized_linear_matches_its_dequantized_weight(mode):
    torch.manual_seed(0)
    w = torch.randn(96, 64) * 0.05
    layer = quantized_linear(w, None, mode, "cpu", torch.float32)
    x = torch.randn(5, 64, requires_grad=True)
    y = layer(x)
    wq = dequantized_weight(layer)
    torch.testing.assert_close(y, x @ wq.T, atol=1e-4, rtol=1e-4)
    assert (wq - w).abs().mean() < 0.2 * w.abs().mean()  # 4-bit, blockwise absmax: a coarse copy of w
    y.sum().backward()  # backward through the frozen 4-bit weight to the input
    torch.testing.assert_close(x.grad, wq.sum(0).expand(5, -1), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mode", ["bnb.nf4", "bnb.nf4-dq"])
def test_qlora_trains_a_tiny_model_and_loss_falls(checkpoint, mode):
    config, ref, path = checkpoint
    torch.manual_seed(0)
    model = build_model(config, path, quantize=mode)
    block_linears = [m for n, m in model.named_modules() if n.startswith("transformer.h.") and isinstance(m, torch.nn.Linear)]
    assert block_linears and all(is_quantized(m) for m in block_linears)
    assert model.lm_head.weight.dtype == torch.float32  # head and embeddings stay in full precision
    with torch.no_grad():
        x = torch.randint(0, 256, (2, 10))
        assert (model(x) - ref(x)).abs().max() < 0.5 * ref(x).abs().max()  # close to the fp32 model
    inject_lora(model, LoRAConfig(r=8, alpha=16, dropout=0.0, query=True, value=True, mlp=True))
    mark_only_lora_as_trainable(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    # a learnable task: the next token is the current one + 1
    seq = torch.randint(0, 255, (4, 1)) + torch.arange(0, 17).unsqueeze(0)
    seq = seq % 256
    losses = []
    for _ in range(25):
        logits = model(seq[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), seq[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.65 * losses[0], losses


@pytest.mark.parametrize("quantize", [None, "bnb.nf4"])
def test_build_model_reads_a_state_dict_mapping_as_it_reads_the_file(checkpoint, quantize):
    """bench/qlora_memory.py feeds random weights through this path: a mapping gives the model the file gives,
    and block weights stored in bf16 are quantized from their one fp32 copy (not rounded twice)."""
    config, _, path = checkpoint
    sd = {k: v.to(torch.bfloat16) for k, v in torch.load(path, weights_only=True).items()}
    torch.save(sd, path)
    from_file = build_model(config, path, quantize=quantize).eval()
    from_mapping = build_model(config, dict(sd), quantize=quantize).eval()
    if quantize:  # before any forward: bitsandbytes repacks a 4-bit weight for its CPU kernel at the first no-grad call
        expected = quantized_linear(sd["transformer.h.0.attn.attn.weight"].float(), None, quantize, "cpu", torch.float32)
        assert torch.equal(dequantized_weight(from_mapping.transformer.h[0].attn.attn), dequantized_weight(expected))
    assert from_mapping.lm_head.weight.dtype == torch.float32
    x = torch.randint(0, 256, (2, 10))
    with torch.no_grad():
        assert torch.equal(from_file(x), from_mapping(x))
