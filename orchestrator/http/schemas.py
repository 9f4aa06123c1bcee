"""The OpenAI-compatible request bodies, with the fields hsi honours and clear refusals of the ones it does not."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

# Fields a client may send only with their neutral value: what each would need that hsi does not do (yet).
NEUTRAL: dict[str, tuple[tuple[Any, ...], str]] = {
    "temperature": ((None, 0), "only greedy decoding is honoured (temperature 0 or absent): sampling is not "
                               "private yet"),
    "top_p": ((None, 1), "only greedy decoding is honoured (top_p 1 or absent)"),
    "n": ((None, 1), "one choice per request (n 1 or absent)"),
    "presence_penalty": ((None, 0), "penalties are not supported (0 or absent)"),
    "frequency_penalty": ((None, 0), "penalties are not supported (0 or absent)"),
    "stop": ((None, [], ""), "stop sequences are not supported; generation stops at the end-of-sequence token "
                             "or max_tokens"),
    "logprobs": ((None, False), "log-probabilities are not returned: the zones return token ids only"),
    "top_logprobs": ((None, 0), "log-probabilities are not returned: the zones return token ids only"),
    "logit_bias": ((None, {}), "logit_bias is not supported"),
    "tools": ((None, []), "tool calls are not supported"),
    "tool_choice": ((None, "none"), "tool calls are not supported"),
    "functions": ((None, []), "function calls are not supported"),
    "function_call": ((None, "none"), "function calls are not supported"),
    "response_format": ((None, {"type": "text"}), "only text responses are supported"),
    "store": ((None, False), "completions are not stored"),
    "audio": ((None,), "audio output is not supported"),
    "modalities": ((None, ["text"]), "only the text modality is supported"),
}


class Strict(BaseModel):
    """A request body that refuses unknown fields (as OpenAI's API does)."""

    model_config = ConfigDict(extra="forbid")


class EmbeddingRequest(Strict):
    """`POST /v1/embeddings`: `input` (a text or a list of texts), `model`, `encoding_format`."""

    input: str | list[str]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, description="honoured only as the model's own dimension")
    user: str | None = Field(default=None, description="accepted, not used")

    @field_validator("input", mode="before")
    @classmethod
    def _texts(cls, v: Any) -> Any:
        if isinstance(v, list) and v and all(isinstance(x, int) or isinstance(x, list) for x in v):
            raise ValueError("token-id input is not supported; send text")
        return v

    @field_validator("input")
    @classmethod
    def _non_empty(cls, v: str | list[str]) -> str | list[str]:
        texts = [v] if isinstance(v, str) else v
        if not texts:
            raise ValueError("the list of inputs is empty")
        if any(not t for t in texts):
            raise ValueError("an input is an empty string")
        return v

    def texts(self) -> list[str]:
        """The inputs as a list."""
        return [self.input] if isinstance(self.input, str) else list(self.input)


class TextPart(Strict):
    """One text part of a message's content (other part types are refused)."""

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One chat message; keys OpenAI's SDK echoes back empty (`tool_calls: null`, ...) are accepted when empty."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    @model_validator(mode="after")
    def _no_extras(self) -> ChatMessage:
        used = [k for k, v in (self.model_extra or {}).items() if v not in (None, [], {}, "")]
        if used:
            raise ValueError(f"message fields {', '.join(sorted(used))} are not supported")
        return self

    def text(self) -> str:
        """The message's text (text parts joined by newlines)."""
        return self.content if isinstance(self.content, str) else "\n".join(p.text for p in self.content)

    def for_template(self) -> dict[str, str]:
        """The message as the chat template takes it (`developer` is OpenAI's new name for `system`)."""
        return {"role": "system" if self.role == "developer" else self.role, "content": self.text()}


class StreamOptions(Strict):
    """`stream_options`: a usage chunk before `[DONE]` (hsi also puts usage on the finishing chunk)."""

    include_usage: bool = False


class ChatRequest(Strict):
    """`POST /v1/chat/completions`: greedy generation from chat messages through the model's chat template."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = Field(default=None, description="accepted: greedy decoding is deterministic")
    user: str | None = Field(default=None, description="accepted, not used")
    parallel_tool_calls: bool | None = None
    metadata: dict[str, str] | None = Field(default=None, description="accepted, not used")
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: str | list[str] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    logit_bias: dict[str, float] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    store: bool | None = None
    audio: dict[str, Any] | None = None
    modalities: list[str] | None = None

    @field_validator(*NEUTRAL)
    @classmethod
    def _neutral(cls, v: Any, info: ValidationInfo) -> Any:
        allowed, why = NEUTRAL[str(info.field_name)]
        if not any(v is a or (v == a and not isinstance(v, bool)) for a in allowed):
            raise ValueError(why)
        return v

    @model_validator(mode="after")
    def _one_limit(self) -> ChatRequest:
        if self.max_tokens and self.max_completion_tokens and self.max_tokens != self.max_completion_tokens:
            raise ValueError("max_tokens and max_completion_tokens differ; send one")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        return self

    def limit(self) -> int | None:
        """The requested most new tokens (`max_completion_tokens` is the new name of `max_tokens`)."""
        return self.max_completion_tokens or self.max_tokens

    def template_messages(self) -> list[dict[str, str]]:
        """The messages as the chat template takes them."""
        return [m.for_template() for m in self.messages]
