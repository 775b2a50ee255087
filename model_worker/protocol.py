"""OpenAI wire-format schemas (pydantic) for /v1/completions, /v1/chat/completions,
/v1/models and the error body. Only schemas: no logic, no web framework.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

Number = StrictFloat | StrictInt


class _Request(BaseModel):
    # Unknown OpenAI fields (user, metadata, ...) are accepted and ignored, like vLLM does.
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        """An explicit ``null`` means "the default", as OpenAI's API takes it."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data

    model: StrictStr
    max_tokens: StrictInt | None = None
    # OpenAI's current name of max_tokens (chat); the openai client sends it
    max_completion_tokens: StrictInt | None = None
    temperature: Number = 1.0
    top_p: Number = 1.0
    n: StrictInt = 1
    stream: StrictBool = False
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = None
    stream_options: dict[str, Any] | None = None
    # OpenAI fields this worker does not implement: accepted only at their default or neutral
    # value (serving answers 400 otherwise), never silently ignored
    echo: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    best_of: Any = None
    suffix: Any = None
    tools: Any = None
    tool_choice: Any = None
    response_format: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    logit_bias: Any = None

    def stop_list(self) -> tuple[str, ...]:
        """The stop strings as a tuple (empty strings dropped)."""
        if self.stop is None:
            return ()
        items = [self.stop] if isinstance(self.stop, str) else self.stop
        return tuple(s for s in items if s)

    def include_usage(self) -> bool:
        """Whether a streamed response ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.get("include_usage"))


class CompletionRequest(_Request):
    """``POST /v1/completions``: one prompt (a string or a one-element list of strings)."""

    prompt: StrictStr | list[StrictStr]


class TextPart(BaseModel):
    """A text content part of a chat message."""

    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    """One chat turn."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: StrictStr | list[TextPart]

    def text(self) -> str:
        """The content as plain text."""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatCompletionRequest(_Request):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)


class Usage(BaseModel):
    """Token counts of one request."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


FinishReason = Literal["stop", "length"]


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: FinishReason | None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason | None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "surgecast"
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """OpenAI-style error: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorDetail
