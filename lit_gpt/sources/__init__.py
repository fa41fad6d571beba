"""The data sources the prepare scripts and mix configs know: one entry per source kind.

Each entry names the kind's loader (`load(files, **args, name=...) -> Loaded`, raw files to chat records, in
`lit_gpt/sources/<kind>.py`), the file patterns it reads from a local copy, and the Hugging Face dataset fetched when
there is none. `scripts/prepare_<kind>.py` is the kind's CLI; a mix config's `prepare: <kind>` runs the same loader.
A new source is a module here, one line below, and (for a CLI) a scripts/prepare_<kind>.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from lit_gpt.prepare import Loaded
from lit_gpt.sources import cnn_dailymail, dolly, flan, gsm8k, jsonl, lima, mmlu_style, oasst, preferences


@dataclass(frozen=True)
class Source:
    load: Callable[..., Loaded]
    patterns: list[str]  # files read from a local dir
    repo_id: Optional[str] = None  # the Hugging Face dataset downloaded without a local copy
    download_patterns: Optional[Callable[..., list[str]]] = None  # files fetched from repo_id, given the loader args

    def files_for(self, args: dict, local: bool) -> list[str]:
        return self.patterns if local or self.download_patterns is None else self.download_patterns(**args)


SOURCES: dict[str, Source] = {
    "dolly": Source(dolly.load, dolly.PATTERNS, dolly.REPO_ID),
    "oasst": Source(oasst.load, oasst.PATTERNS, oasst.REPO_ID),
    "lima": Source(lima.load, lima.PATTERNS, lima.REPO_ID),
    "flan": Source(flan.load, flan.PATTERNS, flan.REPO_ID, flan.download_patterns),
    "gsm8k": Source(gsm8k.load, gsm8k.PATTERNS, gsm8k.REPO_ID),
    "cnn_dailymail": Source(cnn_dailymail.load, cnn_dailymail.PATTERNS, cnn_dailymail.REPO_ID),
    "mmlu_style": Source(mmlu_style.load, mmlu_style.PATTERNS),
    "jsonl": Source(jsonl.load, jsonl.PATTERNS),
    "preferences": Source(preferences.load, preferences.PATTERNS),
}
