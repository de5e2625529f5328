"""OpenAI-shaped request and response bodies; FastAPI builds /openapi.json from them.

Requests ignore fields this server does not know (clients send many optional
ones); fields it knows but cannot honour (``n > 1``, ``logprobs``) are refused.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


SEED_LIMIT = 2**63  # what a 64-bit signed seed holds; -1 means "random" (llama.cpp's API)


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Request):
    type: Literal["text"]
    text: str


class RequestMessage(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Request):
    include_usage: bool = False


class _Sampling(_Request):
    model: str = Field(min_length=1, description="the id from GET /v1/models")
    max_tokens: int | None = Field(None, ge=1, description="tokens to generate at most")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="0 = greedy (the default)")
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: str | list[str] | None = Field(None, description="up to 4 strings that end the reply")
    seed: int | None = Field(None, ge=-1, lt=SEED_LIMIT,
                             description="seeds the sampler (0 <= seed < 2**63; -1 = random, as llama.cpp)")
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1, description="only one choice per request")
    logprobs: bool | int | None = Field(None, description="not supported: only false / null")
    logit_bias: dict[str, float] | None = Field(None, description="not supported: only {} / null")
    presence_penalty: float | None = Field(None, description="not supported: only 0 / null")
    frequency_penalty: float | None = Field(None, description="not supported: only 0 / null")
    response_format: dict[str, Any] | None = Field(None, description='only {"type": "text"}')
    cache_salt: str | None = Field(None, min_length=1, max_length=1024,
                                   description="vLLM's: prefix blocks and conversations are shared only "
                                               "between requests with the same salt")
    user: str | None = None

    def sampler_seed(self) -> int | None:
        """The seed to sample with: None for no seed or -1 (random)."""
        return None if self.seed is None or self.seed == -1 else self.seed

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(_Sampling):
    messages: list[RequestMessage] = Field(min_length=1)
    tools: list[Any] | None = Field(None, description="not supported: only [] / null")
    tool_choice: str | dict[str, Any] | None = Field(None, description='not supported: only "none" / null')
    max_completion_tokens: int | None = Field(None, ge=1, description="wins over max_tokens")

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_Sampling):
    prompt: str | list[int] = Field(min_length=1, description="text, or token ids")
    echo: bool | None = Field(None, description="not supported: only false / null")

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


# -- responses ------------------------------------------------------------------


class PromptTokensDetails(BaseModel):
    cached_tokens: int = Field(description="prompt tokens served from the KV blocks, not prefilled")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class TextChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class TextCompletion(BaseModel):
    """A ``/v1/completions`` answer; streamed chunks have the same shape."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "blockpool"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
