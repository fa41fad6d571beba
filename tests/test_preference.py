"""lit_gpt/preference.py against TRL's DPOTrainer (DPO and IPO on a tiny HF model), ORPO against its paper's formula,
and the adapters-off reference against a separate frozen copy."""

import copy
import math
from pathlib import Path

import pytest
import torch

from lit_gpt.batching import pad_collate
from lit_gpt.config import Config
from lit_gpt.hf_weights import convert_lit_to_hf
from lit_gpt.lora import LoRAConfig, inject_lora, lora_layers
from lit_gpt.model import GPT
from lit_gpt.preference import preference_loss, reference_logps, sequence_logps
from lit_gpt.utils import load_checkpoint
from tests.lora_fixtures import make_checkpoint

# (prompt, chosen, rejected) token ids of different lengths, so padding and per-token normalisation matter
PAIRS = [([3, 4, 5], [6, 7], [8]), ([9, 10], [11], [12, 13, 14]), ([15, 16, 17, 18], [19, 20, 21], [22, 23])]
CPU = torch.device("cpu")


def lit_batch(pairs=PAIRS) -> dict:
    def side(prompt, reply):
        return {"input_ids": torch.tensor(prompt + reply), "labels": torch.tensor([-100] * len(prompt) + reply)}

    return pad_collate([side(p, c) for p, c, _ in pairs] + [side(p, r) for p, _, r in pairs])


def to_lit(hf, path: Path) -> GPT:
    from scripts.convert_hf_checkpoint import convert_hf_checkpoint

    hf.save_pretrained(path)
    convert_hf_checkpoint(checkpoint_dir=path)
    model = GPT(Config.from_checkpoint(path))
    load_checkpoint(model, path / "lit_model.pth")
    return model


@pytest.fixture(scope="module")
def trl_setup(tmp_path_factory):
    trl = pytest.importorskip("trl")
    transformers = pytest.importorskip("transformers")
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers

    from tests.tiny_hf import make_hf_model

    root = tmp_path_factory.mktemp("trl")
    ref = make_hf_model("llama", seed=0)
    policy = copy.deepcopy(ref)
    with torch.no_grad():  # the policy has moved away from the reference
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    lit_policy, lit_ref = to_lit(policy, root / "policy"), to_lit(ref, root / "ref")
    vocab = {"<pad>": 0, "<eos>": 1, **{f"w{i}": i for i in range(2, 256)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>")
    data = Dataset.from_dict({"prompt": ["w5 w6"], "chosen": [" w7"], "rejected": [" w8"]})  # unused: batches are ours
    collator = trl.trainer.dpo_trainer.DataCollatorForPreference(pad_token_id=0)
    batch = collator([{"prompt_ids": p, "chosen_ids": c, "rejected_ids": r} for p, c, r in PAIRS])

    def trainer(loss_type: str, beta: float):
        args = trl.DPOConfig(output_dir=str(root / loss_type), beta=beta, loss_type=[loss_type], report_to="none",
                             use_cpu=True, bf16=False, dataloader_num_workers=0)
        return trl.DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=data, processing_class=tok)

    return trainer, batch, lit_policy, lit_ref


@pytest.mark.parametrize("loss_type, beta", [("sigmoid", 0.1), ("sigmoid", 2.0), ("ipo", 0.3)])
def test_dpo_and_ipo_equal_trl(trl_setup, loss_type, beta):
    make_trainer, batch, lit_policy, lit_ref = trl_setup
    tr = make_trainer(loss_type, beta)
    tr.model.train()
    tr.model.zero_grad(set_to_none=True)
    trl_loss = tr._compute_loss(tr.model, batch, return_outputs=False)
    trl_loss.backward()
    trl_policy = torch.cat(tr.compute_ref_log_probs(tr.model, batch))
    trl_ref = torch.cat(tr.compute_ref_log_probs(tr.ref_model, batch))
    metrics = {k: v[-1] for k, v in tr._metrics["train"].items()}

    lit_policy.zero_grad(set_to_none=True)
    b = lit_batch()
    logps, n_tokens = sequence_logps(lit_policy, b, CPU)
    with torch.no_grad():
        ref = sequence_logps(lit_ref, b, CPU)[0]
    losses, chosen, rejected = preference_loss(loss_type, beta, logps, n_tokens, ref)
    losses.mean().backward()

    torch.testing.assert_close(logps.detach(), trl_policy)
    torch.testing.assert_close(ref, trl_ref)
    torch.testing.assert_close(losses.mean().detach(), trl_loss.detach())
    assert abs(trl_loss.item() - math.log(2)) > 1e-3  # not the trivial policy == reference point
    assert float((chosen - rejected).mean()) == pytest.approx(metrics["rewards/margins"], abs=1e-6)
    assert float((chosen > rejected).float().mean()) == pytest.approx(metrics["rewards/accuracies"])
    grads = convert_lit_to_hf({n: p.grad for n, p in lit_policy.named_parameters()}, lit_policy.config)
    hf_grads = {n: p.grad for n, p in tr.model.named_parameters()}
    assert grads.keys() == hf_grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(g, hf_grads[name], msg=name)


def test_orpo_equals_the_paper_formula():
    # mean token probabilities 0.6 (chosen, 3 tokens) and 0.2 (rejected, 5 tokens), two identical pairs
    logps = torch.tensor([3 * math.log(0.6)] * 2 + [5 * math.log(0.2)] * 2, requires_grad=True)
    n_tokens = torch.tensor([3, 3, 5, 5])
    lam = 0.5
    losses, chosen, rejected = preference_loss("orpo", lam, logps, n_tokens)
    odds_c, odds_r = 0.6 / 0.4, 0.2 / 0.8
    l_sft = -math.log(0.6)  # the chosen reply's mean token NLL
    l_or = -math.log(1 / (1 + math.exp(-math.log(odds_c / odds_r))))  # -log sigmoid(log odds ratio)
    torch.testing.assert_close(losses, torch.full((2,), l_sft + lam * l_or))
    torch.testing.assert_close(chosen, torch.full((2,), lam * math.log(0.6)))
    losses.sum().backward()
    assert logps.grad[:2].lt(0).all() and logps.grad[2:].gt(0).all()  # raises chosen, lowers rejected


def test_reference_with_adapters_off_equals_a_frozen_copy(tmp_path):
    ckpt = make_checkpoint(tmp_path / "ckpt")
    config = Config.from_checkpoint(ckpt)
    frozen = GPT(config).eval()
    load_checkpoint(frozen, ckpt / "lit_model.pth")
    model = copy.deepcopy(frozen)
    inject_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.0, query=True, value=True, mlp=True, head=True))
    torch.manual_seed(0)
    for layer in lora_layers(model):
        torch.nn.init.normal_(layer.lora_B, std=0.5)  # a trained adapter
    batch = lit_batch()
    ref = reference_logps(model, batch, CPU)
    with torch.no_grad():
        torch.testing.assert_close(ref, sequence_logps(frozen, batch, CPU)[0])
        policy = sequence_logps(model, batch, CPU)[0]  # the adapters are back on after the reference
    assert (policy - ref).abs().max() > 1e-2
    with pytest.raises(ValueError, match="reference"):
        preference_loss("sigmoid", 0.1, policy, torch.ones(6))
