import base64
import json
import re
import unicodedata
from pathlib import Path

import pytest
import torch

from lit_gpt.tokenizer import QWEN_PATTERN, QWEN_SPECIAL_TOKENS, Tokenizer
from lit_gpt.utils import UserError
from tests.data.strings import varied_strings

STRINGS = varied_strings(300)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


def assert_token_texts_join(tok: Tokenizer, texts: list[str]) -> None:
    for text in texts:
        ids = tok.encode(text, bos=False).tolist()
        assert "".join(tok.token_texts(ids)) == tok.decode(ids), text


# ---------------------------------------------------------------- HF tokenizer.json (GPT-NeoX-20B)
def test_huggingface_neox_matches_transformers(shared_data, tmp_path):
    transformers = pytest.importorskip("transformers")
    src = shared_data / "tokenizers" / "gpt-neox-20b" / "20B_tokenizer.json"
    (tmp_path / "tokenizer.json").symlink_to(src)
    # as EleutherAI/gpt-neox-20b ships it
    write_json(tmp_path / "tokenizer_config.json", {
        "add_bos_token": False, "add_eos_token": False, "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "tokenizer_class": "GPTNeoXTokenizer",
    })
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(src), bos_token="<|endoftext|>",
                                              eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok = Tokenizer(tmp_path)
    assert tok.backend == "huggingface"
    assert tok.vocab_size == 50277
    assert (tok.bos_id, tok.eos_id, tok.use_bos, tok.stop_ids) == (0, 0, False, {0})
    assert tok.chat_template is None

    batch = tok.encode_batch(STRINGS)
    for text, batch_ids in zip(STRINGS, batch):
        expected = hf(text, add_special_tokens=False)["input_ids"]
        ids = tok.encode(text)
        assert ids.dtype == torch.long and ids.tolist() == expected, text
        assert batch_ids == expected
        for skip in (False, True):
            assert tok.decode(ids, skip_special_tokens=skip) == hf.decode(expected, skip_special_tokens=skip)
    assert tok.encode("Hello", eos=True).tolist() == hf("Hello", add_special_tokens=False)["input_ids"] + [0]
    assert tok.encode("Hello world, GSM8K!").tolist() == [12092, 1533, 13, 443, 6955, 25, 44, 2]
    assert_token_texts_join(tok, STRINGS)


# ---------------------------------------------------------------- SentencePiece tokenizer.model (Mistral)
def _sentencepiece_agrees_with_hf(text: str) -> bool:
    """transformers 5 rebuilds a `tokenizers` BPE from the .model that merges whitespace runs and a space at the
    start of a chunk differently from SentencePiece; elsewhere the two agree."""
    return not re.search(r"(^|\s|<s>|</s>|<unk>)\s", text) and "\u2581" not in text


@pytest.fixture
def mistral_dir(shared_data, tmp_path) -> Path:
    (tmp_path / "tokenizer.model").symlink_to(shared_data / "tokenizers" / "mistral-7b-v0.1" / "tokenizer.model")
    # the fields of mistralai/Mistral-7B-v0.1's tokenizer_config.json that matter here
    write_json(tmp_path / "tokenizer_config.json", {
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "pad_token": None, "legacy": True, "clean_up_tokenization_spaces": False,
        "spaces_between_special_tokens": False, "tokenizer_class": "LlamaTokenizer",
    })
    return tmp_path


def test_sentencepiece_mistral_matches_transformers(mistral_dir):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("google.protobuf")  # transformers needs it to read a .model
    hf = transformers.LlamaTokenizer.from_pretrained(mistral_dir)
    tok = Tokenizer(mistral_dir)
    assert tok.backend == "sentencepiece"
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.use_bos, tok.stop_ids) == (32000, 1, 2, True, {2})

    comparable = [t for t in STRINGS if _sentencepiece_agrees_with_hf(t)]
    assert len(comparable) > 100
    for text in comparable:
        assert tok.encode(text).tolist() == hf(text)["input_ids"], text
        assert tok.encode(text, bos=False).tolist() == hf(text, add_special_tokens=False)["input_ids"], text
    for text in STRINGS:
        ids = tok.encode(text, bos=False).tolist()
        # a literal '▁' decodes as a space; text after a special token gains the dummy-prefix space (legacy)
        if not re.search("\u2581|<s>|</s>|<unk>", text):
            assert tok.decode(ids) == text, text  # byte fallback: lossless
        for some_ids in (ids, hf(text)["input_ids"], [1] + ids + [2]):
            for skip in (False, True):
                assert tok.decode(some_ids, skip_special_tokens=skip) == hf.decode(some_ids, skip_special_tokens=skip)
    expected = [22557, 1526, 28725, 420, 10439, 28783, 28796, 28808]  # MANIFEST.md's smoke check
    assert tok.encode("Hello world, GSM8K!", bos=False).tolist() == expected
    assert tok.encode_batch(STRINGS[:50]) == [tok.encode(t).tolist() for t in STRINGS[:50]]
    assert tok.encode("hi", eos=True).tolist()[-1] == 2
    assert tok.encode("Hello world", max_length=2).tolist() == [1, 22557]
    assert_token_texts_join(tok, STRINGS)


def test_sentencepiece_encodes_as_transformers_sentencepiece_backend(mistral_dir):
    """transformers' own SentencePiece tokenizer (the legacy slow LlamaTokenizer of transformers 4) agrees with us on
    every string, whitespace runs included. (Its decode leaves byte-fallback pieces such as <0x0A> undecoded, so
    decoding is compared with the fast tokenizer above.)"""
    backend = pytest.importorskip("transformers.tokenization_utils_sentencepiece")
    hf = backend.SentencePieceBackend(vocab_file=str(mistral_dir / "tokenizer.model"), legacy=True,
                                      bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok = Tokenizer(mistral_dir)
    for text in STRINGS:
        assert tok.encode(text, bos=False).tolist() == hf.encode(text, add_special_tokens=False), text


def test_sentencepiece_runs_sentencepiece(mistral_dir):
    """Where transformers 5's rebuilt BPE and SentencePiece differ (whitespace runs), we give SentencePiece's ids."""
    spm = pytest.importorskip("sentencepiece")
    sp = spm.SentencePieceProcessor(model_file=str(mistral_dir / "tokenizer.model"))
    tok = Tokenizer(mistral_dir)
    for text in ("    return x", "a  b\t\tc", " leading"):
        assert tok.encode(text, bos=False).tolist() == sp.encode(text)
    # special tokens in the text split it; each chunk keeps SentencePiece's dummy prefix (legacy behaviour)
    assert tok.encode("</s>Hi", bos=False).tolist() == [2] + sp.encode("Hi")


def test_default_bos_rules_without_config(mistral_dir, tmp_path):
    (mistral_dir / "tokenizer_config.json").unlink()
    tok = Tokenizer(mistral_dir)
    assert (tok.use_bos, tok.bos_id, tok.eos_id) == (True, 1, 2)  # Llama/Mistral family rule


# ---------------------------------------------------------------- tiktoken qwen.tiktoken (Qwen-1)
@pytest.fixture
def qwen_dir(tmp_path) -> Path:
    """A tiny qwen.tiktoken in the real format (base64 token, space, rank), trained on a small corpus."""
    from tiktoken._educational import bpe_train

    corpus = "\n".join(varied_strings(60, seed=1))
    ranks = bpe_train(corpus, vocab_size=500, pat_str=QWEN_PATTERN, visualise=None)
    lines = [f"{base64.b64encode(token).decode()} {rank}" for token, rank in sorted(ranks.items(), key=lambda x: x[1])]
    (tmp_path / "qwen.tiktoken").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_tiktoken_qwen(qwen_dir):
    from tiktoken._educational import SimpleBytePairEncoding

    tok = Tokenizer(qwen_dir)
    assert tok.backend == "tiktoken"
    assert tok.vocab_size == 500 + len(QWEN_SPECIAL_TOKENS)
    assert tok.bos_id is None and tok.use_bos is False
    special = {name: 500 + i for i, name in enumerate(QWEN_SPECIAL_TOKENS)}
    assert special["<|im_end|>"] == 502 and special["<|extra_204|>"] == 500 + 207
    assert tok.eos_id == special["<|endoftext|>"]
    assert tok.stop_ids == {special["<|endoftext|>"], special["<|im_end|>"]}

    lines = (qwen_dir / "qwen.tiktoken").read_text().splitlines()
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in lines)}
    reference = SimpleBytePairEncoding(pat_str=QWEN_PATTERN, mergeable_ranks=ranks)
    for text in STRINGS:
        plain = text.replace("<|", "< |")  # the reference knows no special tokens
        ids = tok.encode(plain).tolist()
        assert ids == reference.encode(unicodedata.normalize("NFC", plain), visualise=None), plain
        assert tok.decode(ids) == unicodedata.normalize("NFC", plain)
    assert tok.encode_batch(STRINGS[:50]) == [tok.encode(t).tolist() for t in STRINGS[:50]]
    ids = tok.encode("<|im_start|>user\nhi<|im_end|>\n<|extra_204|>").tolist()
    assert ids[0] == special["<|im_start|>"] and special["<|im_end|>"] in ids and ids[-1] == special["<|extra_204|>"]
    assert tok.decode(ids) == "<|im_start|>user\nhi<|im_end|>\n<|extra_204|>"
    assert tok.decode(ids, skip_special_tokens=True) == "user\nhi\n"
    assert tok.encode("e\u0301").tolist() == tok.encode("\u00e9").tolist()  # Qwen normalizes to NFC
    assert_token_texts_join(tok, STRINGS)
    # Qwen-1 chat models use ChatML
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert prompt == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                      "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_tiktoken_bad_line(tmp_path):
    (tmp_path / "qwen.tiktoken").write_text("IQ== 0\nnot-base64!! 1\n")
    with pytest.raises(UserError, match=r"qwen.tiktoken:2"):
        Tokenizer(tmp_path)


# ---------------------------------------------------------------- config rules, chat templates, errors
def _word_level_dir(tmp_path: Path, post_processor_bos: bool = False) -> Path:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers, processors

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<|im_end|>": 3, "hello": 4, "world": 5}
    t = HFTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.add_special_tokens(["<unk>", "<s>", "</s>", "<|im_end|>"])
    if post_processor_bos:
        t.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tmp_path.mkdir(parents=True, exist_ok=True)
    t.save(str(tmp_path / "tokenizer.json"))
    return tmp_path


def test_config_rules(tmp_path):
    d = _word_level_dir(tmp_path)
    write_json(d / "tokenizer_config.json", {
        "bos_token": {"content": "<s>", "lstrip": False, "normalized": False, "rstrip": False, "special": True},
        "eos_token": "</s>", "add_bos_token": True,
        "chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": "{{ bos_token }}"}],
    })
    write_json(d / "generation_config.json", {"bos_token_id": 1, "eos_token_id": [2, 3]})
    tok = Tokenizer(d)
    assert (tok.bos_id, tok.eos_id, tok.use_bos, tok.stop_ids) == (1, 2, True, {2, 3})
    assert tok.encode("hello world").tolist() == [1, 4, 5]
    assert tok.encode("hello world", bos=False, eos=True).tolist() == [4, 5, 2]
    assert tok.encode("hello </s>world", bos=False).tolist() == [4, 2, 5]  # special tokens written in text
    assert tok.encode_batch(["hello", "world hello"]) == [[1, 4], [1, 5, 4]]
    assert tok.decode([1, 4, 2], skip_special_tokens=True) == "hello"
    assert tok.apply_chat_template([]) == "<s>"


def test_bos_from_post_processor_and_generation_config(tmp_path):
    d = _word_level_dir(tmp_path, post_processor_bos=True)
    write_json(d / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2})
    tok = Tokenizer(d)
    assert (tok.bos_id, tok.eos_id, tok.use_bos, tok.stop_ids) == (1, 2, True, {2})
    assert tok.encode("hello").tolist() == [1, 4]
    with pytest.raises(ValueError, match="no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])


def test_chat_template_renders_like_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer as HFTokenizer

    # exercises trim_blocks/lstrip_blocks, loop controls, raise_exception and the special-token variables
    template = (
        "{{ bos_token }}\n"
        "{% for message in messages %}\n"
        "    {% if message['role'] == 'tool' %}{{ raise_exception('no tools') }}{% endif %}\n"
        "    {% if message['role'] == 'skip' %}{% continue %}{% endif %}\n"
        "    {% if message['role'] == 'user' %}\n"
        "[INST] {{ message['content'] | trim }} [/INST]\n"
        "    {% else %}\n"
        "{{ message['content'] }}{{ eos_token }}\n"
        "    {% endif %}\n"
        "{% endfor %}\n"
        "{% if add_generation_prompt %}ANSWER:{% endif %}"
    )
    d = _word_level_dir(tmp_path)
    write_json(d / "tokenizer_config.json", {"bos_token": "<s>", "eos_token": "</s>", "chat_template": template})
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=HFTokenizer.from_file(str(d / "tokenizer.json")),
                                              bos_token="<s>", eos_token="</s>")
    hf.chat_template = template
    tok = Tokenizer(d)
    messages = [{"role": "user", "content": " hi \n"}, {"role": "skip", "content": "x"},
                {"role": "assistant", "content": "héllo 👋"}, {"role": "user", "content": "bye"}]
    for gen in (True, False):
        assert tok.apply_chat_template(messages, add_generation_prompt=gen) == hf.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=gen)
    import jinja2

    with pytest.raises(jinja2.exceptions.TemplateError, match="no tools"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}])


def test_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Tokenizer(tmp_path / "nope")
    with pytest.raises(UserError, match="no tokenizer.json, tokenizer.model or qwen.tiktoken"):
        Tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE", "vocab": ')
    with pytest.raises(UserError, match=r"tokenizer.json: not a valid tokenizer.json"):
        Tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(UserError, match=r"tokenizer.model: not a valid SentencePiece model"):
        Tokenizer(tmp_path)
    d = _word_level_dir(tmp_path / "ok")
    (d / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(UserError, match=r"tokenizer_config.json: not valid JSON"):
        Tokenizer(d)


def test_chat_template_from_chat_template_jinja(smollm2_checkpoint, tmp_path):
    """transformers >= 4.50 saves the template beside tokenizer_config.json instead of inside it."""
    import shutil

    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(smollm2_checkpoint / name, tmp_path / name)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    template = config.pop("chat_template")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    assert Tokenizer(tmp_path).chat_template is None
    (tmp_path / "chat_template.jinja").write_text(template)
    tok = Tokenizer(tmp_path)
    messages = [{"role": "user", "content": "Hi"}]
    assert tok.apply_chat_template(messages) == Tokenizer(smollm2_checkpoint).apply_chat_template(messages)


# ---------------------------------------------------------------- encode_batch_parts
def test_encode_batch_parts_concatenate_to_the_whole_encoding(smol_dir, qwen_dir):
    # texts with special tokens inside words, at the ends, doubled, and stretches repeated across texts
    for directory, specials in ((smol_dir, ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]),
                                (qwen_dir, ["<|im_start|>", "<|im_end|>", "<|endoftext|>"])):
        tok = Tokenizer(directory)
        texts = []
        for i, s in enumerate(STRINGS[:120]):
            a, b = specials[i % 3], specials[(i + 1) % 3]
            texts += [f"{a}system\nBe brief.{b}\n{a}user\n{s}{b}", f"{s}{a}{b}{s[:5]}", s, f"x{a}" + s + a]
        parts = tok.encode_batch_parts(texts)
        assert tok._added_token_split() is not None
        assert [[i for p in ps for i in p] for ps in parts] == tok.encode_batch(texts, bos=False)
        assert len(parts[0]) >= 5  # cut at the special tokens


def test_encode_batch_parts_with_a_start_sensitive_pre_tokenizer(tmp_path):
    # Metaspace(prepend_scheme="first") marks only the text's first word: stretches between special tokens would
    # be marked too if encoded apart, so the tokenizer must not cut there
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    tok.decoder = decoders.Metaspace(prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<|sep|>"], show_progress=False)
    tok.train_from_iterator(STRINGS[:100] * 3, trainer)
    tok.save(str(tmp_path / "tokenizer.json"))
    ours = Tokenizer(tmp_path)
    texts = [f"hello<|sep|>world {s}<|sep|>{s}" for s in STRINGS[:50]]
    whole = ours.encode_batch(texts, bos=False)
    parts = ours.encode_batch_parts(texts)
    assert ours._added_token_split() is None
    assert [[i for p in ps for i in p] for ps in parts] == whole
