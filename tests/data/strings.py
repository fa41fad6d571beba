"""Deterministic, varied test strings for comparing tokenizers (unicode, whitespace, code, numbers, special tokens)."""

import random

FRAGMENTS = [
    "Hello world", "The quick brown fox", "café naïve résumé", "Ångström", "Zürich straße", "你好，世界",
    "日本語のテキスト", "한국어 문장", "😀👍🏽", "👨\u200d👩\u200d👧", "🇫🇷", "Ελληνικά", "русский язык", "مرحبا بالعالم",
    "नमस्ते", "e\u0301", "\u00e9", "   ", "\t\t", "\n\n\n", " \n ", "\r\n", "def f(x):\n    return x**2  # square",
    "if (a != b) { x += 1; }", "for i in range(10):\n\tprint(i)", "<div class=\"a\">&amp;</div>", "SELECT * FROM t;",
    "12345", "3.14159", "1,000,000", "98765432109876543210", "0x1F", "2024-01-31", "$19.99", "50%",
    "<|im_start|>user", "<|im_start|>assistant\n", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "<unk>",
    "don't I'm we'll they'VE", "!!!???...", "https://example.com/a?b=c&d=e", "user@example.org",
    "\u2581under\u2581score", "x", "A", " leading space", "trailing space ", "MiXeD CaSe", "snake_case_name",
    "CamelCaseName", "---", "***",
]
SEPARATORS = ["", " ", " ", " ", "  ", "\n", "\t", ", "]
# printable ASCII, Latin-1/Extended-A/B, CJK, emoji, Cyrillic
CODE_POINT_RANGES = [(0x20, 0x7E), (0xA0, 0x24F), (0x4E00, 0x9FFF), (0x1F300, 0x1F64F), (0x0400, 0x04FF)]


def varied_strings(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = ["", " ", "a"]
    while len(out) < n:
        k = rng.randint(1, 6)
        out.append("".join(rng.choice(FRAGMENTS) + rng.choice(SEPARATORS) for _ in range(k)).rstrip(", "))
        if rng.random() < 0.1:  # random code points from several scripts
            out[-1] += "".join(chr(rng.randint(*rng.choice(CODE_POINT_RANGES))) for _ in range(rng.randint(1, 12)))
    return out[:n]
