"""One `Tokenizer` over the three vocabularies our models ship: HF `tokenizer.json`, SentencePiece
`tokenizer.model`, and Qwen-1's tiktoken `qwen.tiktoken`.

Ids match transformers' tokenizer for the same files: special tokens written in the text become their ids,
BOS is added per `tokenizer_config.json` (else the family's rule), and decoding follows each library's decoder.
One deliberate exception: a `tokenizer.model` is run by SentencePiece itself (what Llama 2 / Mistral were trained
with, and HF's legacy slow tokenizer), so runs of whitespace can split differently from transformers 5, which
rebuilds a `tokenizers` BPE from the .model. A checkpoint with a `tokenizer.json` uses that file instead.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any, Optional

import torch

from lit_gpt.utils import UserError, read_json_object

# Qwen-1 (qwen.tiktoken): its split pattern and the special tokens numbered after the BPE ranks.
QWEN_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>") + tuple(f"<|extra_{i}|>" for i in range(205))
# Qwen-1 chat models speak ChatML but ship no jinja template; this renders their `make_context` format.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Tokens that close a chat turn: generation stops on them when the chat template writes them.
CHAT_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|end_of_turn|>")


def _read_json(path: Path) -> dict:
    return read_json_object(path) or {}


def _token_text(value: Any) -> Optional[str]:
    """`bos_token` and friends are a string or an AddedToken dict ({"content": ...})."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def read_bpe_ranks(path: Path) -> dict[bytes, int]:
    """A tiktoken BPE file (qwen.tiktoken): one '<base64 token> <rank>' a line; errors name the file and line."""
    import base64

    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except ValueError as e:
                raise UserError(f"{path}:{lineno}: expected '<base64 token> <rank>' ({e})") from e
    if not ranks:
        raise UserError(f"{path}: no BPE ranks")
    return ranks


def decode_sentencepiece(sp: Any, ids: list[int]) -> str:
    """Like HF's Llama decoder: pieces joined with '▁' as space, byte pieces fused, one leading space dropped.

    (SentencePiece's own decode drops control tokens and the space after them, which HF keeps.)
    """
    out: list[str] = []
    pending = bytearray()

    def flush() -> None:
        if pending:
            try:
                out.append(pending.decode("utf-8"))
            except UnicodeDecodeError:  # as the HF ByteFallback decoder: one U+FFFD per byte
                out.append("\ufffd" * len(pending))
            pending.clear()

    for i in ids:
        if sp.IsByte(i):
            pending.append(int(sp.IdToPiece(i)[3:5], 16))  # "<0xAB>"
            continue
        flush()
        out.append(sp.IdToPiece(i).replace("\u2581", " "))
    flush()
    text = "".join(out)
    return text[1:] if text.startswith(" ") else text


class Tokenizer:
    def __init__(self, checkpoint_dir: Path | str) -> None:
        checkpoint_dir = Path(checkpoint_dir)
        if not checkpoint_dir.is_dir():
            raise UserError(f"tokenizer dir {str(checkpoint_dir)!r} does not exist")
        self.checkpoint_dir = checkpoint_dir
        config = _read_json(checkpoint_dir / "tokenizer_config.json")
        generation = _read_json(checkpoint_dir / "generation_config.json")

        if (path := checkpoint_dir / "tokenizer.json").is_file():
            self._load_huggingface(path)
        elif (path := checkpoint_dir / "tokenizer.model").is_file():
            self._load_sentencepiece(path)
        elif (path := checkpoint_dir / "qwen.tiktoken").is_file():
            self._load_tiktoken(path)
        else:
            raise UserError(f"{checkpoint_dir} has no tokenizer.json, tokenizer.model or qwen.tiktoken")

        # Special token strings: tokenizer_config.json first, then what the vocabulary itself declares.
        self.special_tokens_map: dict[str, str] = dict(self._default_special_tokens)
        for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
            if name in config:
                text = _token_text(config[name])
                if text is None:
                    self.special_tokens_map.pop(name, None)
                else:
                    self.special_tokens_map[name] = text
        self.bos_id = self._id_of(self.special_tokens_map.get("bos_token"))
        self.eos_id = self._id_of(self.special_tokens_map.get("eos_token"))
        gen_bos, gen_eos = generation.get("bos_token_id"), generation.get("eos_token_id")
        gen_eos = [gen_eos] if isinstance(gen_eos, int) else list(gen_eos or [])
        if self.bos_id is None and isinstance(gen_bos, int):
            self.bos_id = gen_bos
        if self.eos_id is None and gen_eos:
            self.eos_id = gen_eos[0]
        for name, idx in (("bos_token", self.bos_id), ("eos_token", self.eos_id)):
            if idx is not None and name not in self.special_tokens_map:
                self.special_tokens_map[name] = self._piece(idx)

        template = config.get("chat_template")
        if template is None and (checkpoint_dir / "chat_template.jinja").is_file():
            template = (checkpoint_dir / "chat_template.jinja").read_text(encoding="utf-8")  # transformers >= 4.50
        if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        self.chat_template: Optional[str] = template if isinstance(template, str) else self._default_chat_template

        add_bos = config.get("add_bos_token")
        self.use_bos = bool(add_bos) if isinstance(add_bos, bool) else self._default_use_bos()
        if self.bos_id is None:
            self.use_bos = False

        self.stop_ids: set[int] = {i for i in [self.eos_id, *gen_eos] if i is not None}
        for token in CHAT_END_TOKENS:
            if self.chat_template and token in self.chat_template and (idx := self._id_of(token)) is not None:
                self.stop_ids.add(idx)
        self._jinja = None

    # ------------------------------------------------------------------ backends
    def _load_huggingface(self, path: Path) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        try:
            self.processor = HFTokenizer.from_file(str(path))
        except Exception as e:  # the Rust loader reports JSON and schema errors as a generic Exception
            raise UserError(f"{path}: not a valid tokenizer.json ({str(e).splitlines()[0]})") from e
        self.backend = "huggingface"
        self.vocab_size = self.processor.get_vocab_size(with_added_tokens=True)
        added = self.processor.get_added_tokens_decoder()
        self._special_ids = {i for i, tok in added.items() if tok.special}
        self._default_special_tokens = {}
        self._default_chat_template = None

    def _load_sentencepiece(self, path: Path) -> None:
        from sentencepiece import SentencePieceProcessor

        try:
            self.processor = SentencePieceProcessor(model_file=str(path))
        except Exception as e:
            raise UserError(f"{path}: not a valid SentencePiece model ({str(e).splitlines()[0]})") from e
        sp = self.processor
        self.backend = "sentencepiece"
        self.vocab_size = sp.vocab_size()
        # Control pieces (<s>, </s>) and <unk> are HF's special tokens: matched whole in text, never split.
        self._special_ids = {i for i in range(self.vocab_size) if sp.IsControl(i) or sp.IsUnknown(i)}
        specials = sorted((sp.IdToPiece(i) for i in self._special_ids), key=len, reverse=True)
        self._special_re = re.compile("(" + "|".join(map(re.escape, specials)) + ")") if specials else None
        self._default_special_tokens = {
            name: sp.IdToPiece(i)
            for name, i in (("bos_token", sp.bos_id()), ("eos_token", sp.eos_id()), ("unk_token", sp.unk_id()))
            if i >= 0
        }
        self._default_chat_template = None

    def _load_tiktoken(self, path: Path) -> None:
        import tiktoken

        ranks = read_bpe_ranks(path)
        first_special = max(ranks.values()) + 1
        specials = {token: first_special + i for i, token in enumerate(QWEN_SPECIAL_TOKENS)}
        try:
            self.processor = tiktoken.Encoding(
                name=path.stem, pat_str=QWEN_PATTERN, mergeable_ranks=ranks, special_tokens=specials
            )
        except Exception as e:
            raise UserError(f"{path}: not a usable tiktoken BPE file ({e})") from e
        self.backend = "tiktoken"
        self.vocab_size = first_special + len(specials)
        self._first_special = first_special
        self._special_ids = set(specials.values())
        self._tiktoken_specials = specials
        self._tiktoken_ids = {**{t.decode("utf-8", errors="replace"): i for t, i in ranks.items()}, **specials}
        # Qwen-1 has no BOS; <|endoftext|> ends documents.
        self._default_special_tokens = {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
        self._default_chat_template = CHATML_TEMPLATE

    def _default_use_bos(self) -> bool:
        if self.backend == "sentencepiece":  # Llama, Mistral: BOS on
            return True
        if self.backend == "tiktoken":  # Qwen-1: no BOS
            return False
        # tokenizer.json: add BOS exactly when its own post-processor would.
        with_special = self.processor.encode("a", add_special_tokens=True).ids
        return bool(with_special) and with_special[0] == self.bos_id and with_special != self._encode_ids("a")

    def _id_of(self, token: Optional[str]) -> Optional[int]:
        if token is None:
            return None
        if self.backend == "huggingface":
            return self.processor.token_to_id(token)
        if self.backend == "sentencepiece":
            idx = self.processor.PieceToId(token)
            return idx if self.processor.IdToPiece(idx) == token else None
        return self._tiktoken_ids.get(token)

    def _piece(self, idx: int) -> str:
        if self.backend == "huggingface":
            return self.processor.id_to_token(idx)
        if self.backend == "sentencepiece":
            return self.processor.IdToPiece(idx)
        return self.processor.decode_single_token_bytes(idx).decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ encoding
    def _encode_ids(self, text: str) -> list[int]:
        return self._encode_many([text])[0]

    def _encode_many(self, texts: list[str]) -> list[list[int]]:
        if self.backend == "huggingface":
            # encode_batch_fast (tokenizers >= 0.21) skips the character offsets nobody here reads: ~20% faster.
            encode = getattr(self.processor, "encode_batch_fast", self.processor.encode_batch)
            return [e.ids for e in encode(texts, add_special_tokens=False)]
        if self.backend == "tiktoken":
            # Qwen-1 normalizes to NFC and lets special tokens written in the text through.
            texts = [unicodedata.normalize("NFC", t) for t in texts]
            return self.processor.encode_batch(texts, allowed_special="all", disallowed_special=())
        return [self._encode_sentencepiece(t) for t in texts]

    def encode_batch_parts(self, texts: list[str]) -> list[list[list[int]]]:
        """Each text's ids (no BOS/EOS) as a list of parts whose concatenation is `encode_batch([text])[0]`.

        The texts are cut at the tokenizer's added tokens, which it matches whole before anything else, so each
        stretch between them encodes on its own; each distinct stretch is encoded once. A chat template's fixed
        text, a default system prompt, a prompt shared by several answers: encoded the first time only."""
        split = self._added_token_split()
        if split is None:
            return [[ids] for ids in self._encode_many(list(texts))]
        regex, added_ids = split
        memo: dict[str, int] = {}
        plans = []
        for text in texts:
            plan = []
            for k, part in enumerate(regex.split(text)):
                if k % 2:
                    plan.append(added_ids[part])
                elif part:
                    plan.append(memo.setdefault(part, len(memo)))
            plans.append(plan)
        encoded = self._encode_many(list(memo))
        return [[p if isinstance(p, list) else encoded[p] for p in plan] for plan in plans]

    def _added_token_split(self) -> Optional[tuple[re.Pattern, dict[str, list[int]]]]:
        """(a regex whose split keeps the added tokens at odd positions, each added token's [id]), or None where
        cutting the text at them could change the ids (tokens that strip neighbouring spaces, or match normalized
        text)."""
        if not hasattr(self, "_added_split"):
            self._added_split, tokens = None, {}
            if self.backend == "huggingface":
                added = list(self.processor.get_added_tokens_decoder().items())
                if added and not any(t.lstrip or t.rstrip or t.single_word or (t.normalized and not t.special)
                                     for _, t in added):
                    tokens = {t.content: [i] for i, t in added}
            elif self.backend == "tiktoken":
                tokens = {t: [i] for t, i in self._tiktoken_specials.items()}
            if tokens:
                alternatives = "|".join(map(re.escape, sorted(tokens, key=len, reverse=True)))
                regex = re.compile(f"({alternatives})")
                # Some pre-tokenizers treat the start of the text specially (Metaspace's prepend_scheme="first"):
                # check on a probe that encoding the stretches apart gives the ids of the whole.
                special = max(tokens, key=lambda t: self._encode_ids(t) == tokens[t])
                probe = f"Hi{special} there {special}\n two  words{special}x"
                parts = [tokens[p] if k % 2 else self._encode_ids(p) for k, p in enumerate(regex.split(probe)) if p]
                if [i for p in parts for i in p] == self._encode_ids(probe):
                    self._added_split = (regex, tokens)
        return self._added_split

    def _encode_sentencepiece(self, text: str) -> list[int]:
        sp = self.processor
        parts = self._special_re.split(text) if self._special_re else [text]
        ids: list[int] = []
        for i, part in enumerate(parts):
            if i % 2:  # a special token written in the text
                ids.append(sp.PieceToId(part))
            elif part:
                # As HF's legacy Llama tokenizer (how Llama 2 and Mistral ship): each chunk between special
                # tokens is encoded on its own, with SentencePiece's dummy-prefix space.
                ids.extend(sp.encode(part))
        return ids

    def _finish(self, ids: list[int], bos: Optional[bool], eos: bool) -> list[int]:
        if bos is None:
            bos = self.use_bos
        if bos:
            if self.bos_id is None:
                raise ValueError("this tokenizer has no BOS token")
            ids = [self.bos_id] + ids
        if eos:
            if self.eos_id is None:
                raise ValueError("this tokenizer has no EOS token")
            ids = ids + [self.eos_id]
        return ids

    def encode(self, text: str, bos: Optional[bool] = None, eos: bool = False, max_length: int = -1) -> torch.Tensor:
        ids = self._finish(self._encode_ids(text), bos, eos)
        if max_length > 0:
            ids = ids[:max_length]
        return torch.tensor(ids, dtype=torch.long)

    def encode_batch(self, texts: list[str], bos: Optional[bool] = None, eos: bool = False) -> list[list[int]]:
        return [self._finish(ids, bos, eos) for ids in self._encode_many(list(texts))]

    # ------------------------------------------------------------------ decoding
    def decode(self, ids: torch.Tensor | list[int], skip_special_tokens: bool = False) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            ids = [i for i in ids if i not in self._special_ids]
        if self.backend == "huggingface":
            return self.processor.decode(ids, skip_special_tokens=skip_special_tokens)
        if self.backend == "tiktoken":
            return self.processor.decode(ids, errors="replace")
        return decode_sentencepiece(self.processor, ids)

    def token_texts(self, ids: list[int]) -> list[str]:
        """The text each id adds to the decoded string; "" while a UTF-8 character is still incomplete."""
        ids = [int(i) for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)]
        texts: list[str] = []
        # Decode a short window and take what the newest id adds, so context-dependent decoders (the
        # leading space SentencePiece drops) and multi-token characters come out right, in linear time.
        prefix_start = read_start = 0
        for i in range(len(ids)):
            before = self.decode(ids[prefix_start:read_start])
            after = self.decode(ids[prefix_start:i + 1])
            if i + 1 < len(ids) and after.endswith("\ufffd"):
                texts.append("")  # wait for the rest of the character
                continue
            texts.append(after[len(before):] if after.startswith(before) else after)
            prefix_start, read_start = read_start, i + 1
        return texts

    # ------------------------------------------------------------------ chat
    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        if self.chat_template is None:
            raise ValueError(f"{self.checkpoint_dir} has no chat template (tokenizer_config.json 'chat_template')")
        if self._jinja is None:
            self._jinja = _compile_template(self.chat_template)
        return self._jinja.render(
            messages=messages, add_generation_prompt=add_generation_prompt, **self.special_tokens_map
        )


def _compile_template(template: str):
    """Compile a chat template the way transformers does (sandboxed, trim/lstrip blocks, its helper globals)."""
    from datetime import datetime

    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: Optional[int] = None, separators=None,
               sort_keys: bool = False) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise UserError(f"chat template line {e.lineno}: {e.message}") from e
