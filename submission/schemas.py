"""Request and response models of the challenge's HTTP API (pydantic v2).

The request models accept every field that HELM's `neurips/local` client (`HTTPModelClient`, `HTTPModelTokenizer`)
sends and every field of the organizers' own request models (`num_samples`, `top_k`, `seed`), so both kinds of client
work unchanged. Unknown fields are ignored, as the organizers' models did. Bounds that depend on the loaded model
(context length, vocabulary) are checked by the server and answered with the same 422 error format.
"""

from __future__ import annotations

from typing import Annotated, Optional

from pydantic import AfterValidator, BaseModel, Field

# Generous static bounds, so that absurd values are rejected before any work (and the OpenAPI schema states them).
MAX_NEW_TOKENS = 1 << 20
MAX_TOP_K_PER_TOKEN = 1000
MAX_STOP_SEQUENCES = 64
MAX_SAMPLES = 64


def _valid_unicode(text: str) -> str:
    # JSON may carry lone surrogates ("\ud800"): they are not text and no tokenizer can encode them.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains a lone UTF-16 surrogate, which is not valid Unicode text")
    return text


Text = Annotated[str, AfterValidator(_valid_unicode)]


class ProcessRequest(BaseModel):
    prompt: Text = Field(min_length=1, max_length=1 << 24, description="The prompt text. Longer than the context: truncated from the left.")
    num_samples: int = Field(1, ge=1, le=MAX_SAMPLES, description="Organizers' field; one completion is returned.")
    num_return_sequences: Optional[int] = Field(
        None, ge=1, le=MAX_SAMPLES, description="HELM's field; one completion is returned (HELM reads only one)."
    )
    max_new_tokens: int = Field(50, ge=0, le=MAX_NEW_TOKENS, description="0 with echo_prompt scores the prompt only.")
    top_k: Optional[int] = Field(200, ge=0, description="Sample among the k most likely tokens; 0 or null: no limit.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    temperature: float = Field(0.8, ge=0.0, le=100.0, description="At or below 1e-5: greedy decoding.")
    seed: Optional[int] = Field(None, ge=-(1 << 63), le=(1 << 64) - 1, description="Makes sampling reproducible.")
    echo_prompt: Optional[bool] = Field(False, description="Return the prompt tokens (with logprobs) before the completion.")
    top_k_per_token: int = Field(1, ge=0, le=MAX_TOP_K_PER_TOKEN, description="Entries of each token's top_logprob.")
    stop_sequences: list[Text] = Field(
        default_factory=list, max_length=MAX_STOP_SEQUENCES, description="Generation ends at any of them (cut from text)."
    )


class Token(BaseModel):
    text: str
    logprob: float
    top_logprob: dict[str, float]


class ProcessResponse(BaseModel):
    text: str
    tokens: list[Token]
    logprob: float
    request_time: float


class TokenizeRequest(BaseModel):
    text: Text
    truncation: bool = True
    max_length: int = Field(2048, ge=1, description="With truncation: keep at most this many (leading) tokens.")


class TokenizeResponse(BaseModel):
    tokens: list[int]
    request_time: float


class DecodeRequest(BaseModel):
    tokens: list[Annotated[int, Field(ge=0)]] = Field(max_length=1 << 22)


class DecodeResponse(BaseModel):
    text: str
    request_time: float
