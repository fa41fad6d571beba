"""lit_gpt -> GGUF: transformers' GGUF loader and llama.cpp (when llama-cpp-python is installed: `make llama-cpp`)
load the export of the embedded SmolLM2 and decode greedily as our model does; our reader reads it back exactly."""

import gc
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.gguf_export import hf_greedy
from lit_gpt.generation import generate, load_model
from lit_gpt.utils import UserError
from scripts.convert_gguf_checkpoint import convert_gguf_checkpoint
from scripts.convert_lit_checkpoint import convert_lit_checkpoint
from tests.lora_fixtures import make_checkpoint

N_NEW = 16
# q8_0 in llama.cpp also rounds the activations to 8 bits inside each matmul, so its logits are not our model's
# (on the same q8_0 weights) to float precision: the stated tolerance is the share of positions where the most
# likely next token agrees, and the largest logit difference (logits here span about +-30).
Q8_LLAMA_CPP_MIN_AGREEMENT = 0.85
Q8_LLAMA_CPP_MAX_LOGIT_DIFF = 3.0


@pytest.fixture(scope="module")
def exports(smollm2_checkpoint, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("gguf")
    return {dt: convert_lit_checkpoint(checkpoint_dir=smollm2_checkpoint, output_dir=out / dt, format="gguf", dtype=dt)
            for dt in ("f32", "f16", "q8_0")}


@pytest.fixture(scope="module")
def reference(smollm2_checkpoint) -> dict:
    """Our model's greedy continuation of a chat prompt, and its logits over prompt + continuation."""
    model, tok = load_model(smollm2_checkpoint, device="cpu", precision="32-true")
    prompt = tok.apply_chat_template([{"role": "user", "content": "Write a short poem about the sea."}])
    ids = tok.encode(prompt)
    new = list(generate(model, ids, N_NEW, stop_ids=()))
    seq = torch.cat([ids, torch.tensor(new)])
    with torch.no_grad():
        logits = model(seq.unsqueeze(0))[0]
    return {"prompt": prompt, "ids": ids.tolist(), "new": new, "seq": seq, "logits": logits}


def read_back(path: Path, tmp_path: Path) -> dict:
    """Our model on the weights as the file stores them (dequantized by lit_gpt.gguf), like `reference`."""
    ckpt = convert_gguf_checkpoint(gguf_path=path, checkpoint_dir=tmp_path / "read")
    model, _ = load_model(ckpt, device="cpu", precision="32-true")
    return model


def test_round_trip_through_our_reader(exports, smollm2_checkpoint, tmp_path):
    ckpt = convert_gguf_checkpoint(gguf_path=exports["f32"], checkpoint_dir=tmp_path / "back")
    before = torch.load(smollm2_checkpoint / "lit_model.pth", weights_only=True)
    after = torch.load(ckpt / "lit_model.pth", weights_only=True)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    for name in ("tokenizer_config.json", "generation_config.json"):
        assert (ckpt / name).read_text() == (smollm2_checkpoint / name).read_text(), name


@pytest.mark.parametrize("dtype", ["f32", "f16", "q8_0"])
def test_transformers_loads_the_export(exports, reference, tmp_path, dtype):
    transformers = pytest.importorskip("transformers")
    path = exports[dtype]
    if dtype == "f32":  # the tokenizer metadata is the same in every file
        tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        assert tok(reference["prompt"])["input_ids"] == reference["ids"]
        assert "<|im_start|>" in tok.chat_template
    hf = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    with torch.no_grad():
        logits = hf(reference["seq"].unsqueeze(0)).logits[0]
    if dtype == "f32":
        torch.testing.assert_close(logits, reference["logits"])
        assert hf_greedy(hf, reference["ids"], N_NEW) == reference["new"]
    else:  # transformers dequantizes f16 / q8_0 to fp32: our model on the same rounded weights
        ours = read_back(path, tmp_path)
        with torch.no_grad():
            torch.testing.assert_close(logits, ours(reference["seq"].unsqueeze(0))[0])
        if dtype == "f16":
            assert hf_greedy(hf, reference["ids"], N_NEW) == reference["new"]


@pytest.mark.parametrize("dtype", ["f32", "f16", "q8_0"])
def test_llama_cpp_loads_the_export(exports, reference, tmp_path, dtype):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make llama-cpp)")
    llm = llama_cpp.Llama(str(exports[dtype]), n_ctx=256, logits_all=True, verbose=False, n_threads=2)
    try:
        assert llm.tokenize(reference["prompt"].encode(), add_bos=False, special=True) == reference["ids"]
        llm.eval(reference["seq"].tolist())
        logits = torch.from_numpy(np.array(llm.scores[:llm.n_tokens]))
        llm.reset()
        llm.eval(reference["ids"])
        new = []
        for _ in range(N_NEW):
            new.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
            llm.eval([new[-1]])
    finally:
        llm.close()
        gc.collect()
    if dtype != "q8_0":
        assert new == reference["new"]
        return
    with torch.no_grad():
        ours = read_back(exports[dtype], tmp_path)(reference["seq"].unsqueeze(0))[0]
    agreement = float((logits.argmax(-1) == ours.argmax(-1)).float().mean())
    assert agreement >= Q8_LLAMA_CPP_MIN_AGREEMENT
    assert float((logits - ours).abs().max()) <= Q8_LLAMA_CPP_MAX_LOGIT_DIFF


def test_non_llama_layouts_are_refused(tmp_path):
    ckpt = make_checkpoint(tmp_path / "neox", "tiny-neox")
    with pytest.raises(UserError, match="Llama layout"):
        convert_lit_checkpoint(checkpoint_dir=ckpt, output_dir=tmp_path / "out", format="gguf")
