"""The HTTP API's request bodies: what they accept, and the field each refusal names."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator.http.schemas import NEUTRAL, ChatRequest, EmbeddingRequest

CHAT: dict[str, Any] = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Hi"}]}


def refused(model: type[ChatRequest] | type[EmbeddingRequest], body: dict[str, Any]) -> tuple[str, str]:
    """The (field, message) of the first error validating `body`."""
    with pytest.raises(ValidationError) as e:
        model.model_validate(body)
    err = e.value.errors()[0]
    return ".".join(str(p) for p in err["loc"]), err["msg"]


def test_embedding_input_is_a_text_or_a_list_of_texts() -> None:
    assert EmbeddingRequest.model_validate({"model": "m", "input": "a"}).texts() == ["a"]
    body = EmbeddingRequest.model_validate({"model": "m", "input": ["a", "b"], "encoding_format": "base64"})
    assert body.texts() == ["a", "b"] and body.encoding_format == "base64"
    assert EmbeddingRequest.model_validate({"model": "m", "input": "a"}).encoding_format == "float"


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"model": "m", "input": [1, 2, 3]}, "input", "token-id input is not supported"),
    ({"model": "m", "input": [[1, 2]]}, "input", "token-id input is not supported"),
    ({"model": "m", "input": []}, "input", "empty"),
    ({"model": "m", "input": ["a", ""]}, "input", "empty string"),
    ({"model": "m", "input": "a", "encoding_format": "int8"}, "encoding_format", "float"),
    ({"model": "m", "input": "a", "colour": "red"}, "colour", "Extra inputs"),
    ({"input": "a"}, "model", "required"),
])
def test_embedding_refusals_name_the_field(body: dict[str, Any], field: str, words: str) -> None:
    where, msg = refused(EmbeddingRequest, body)
    assert where == field and words in msg


def test_chat_defaults_are_greedy_and_unlimited() -> None:
    body = ChatRequest.model_validate(CHAT)
    assert body.limit() is None and not body.stream
    assert body.template_messages() == [{"role": "user", "content": "Hi"}]


def test_chat_honours_neutral_values_of_unhonoured_fields() -> None:
    body = ChatRequest.model_validate({**CHAT, "temperature": 0, "top_p": 1.0, "n": 1, "stop": None, "seed": 7,
                                       "logprobs": False, "tool_choice": "none", "response_format": {"type": "text"},
                                       "presence_penalty": 0.0, "max_completion_tokens": 5, "user": "u"})
    assert body.limit() == 5


@pytest.mark.parametrize(("field", "value"), [
    ("temperature", 0.7), ("top_p", 0.9), ("n", 2), ("presence_penalty", 0.5), ("frequency_penalty", 1.0),
    ("stop", ["\n"]), ("stop", "END"), ("logprobs", True), ("top_logprobs", 3), ("logit_bias", {"42": 5.0}),
    ("tools", [{"type": "function", "function": {"name": "f"}}]), ("tool_choice", "auto"),
    ("response_format", {"type": "json_object"}), ("store", True),
])
def test_chat_refuses_what_it_does_not_honour(field: str, value: Any) -> None:
    where, msg = refused(ChatRequest, {**CHAT, field: value})
    assert where == field
    assert NEUTRAL[field][1] in msg


def test_sampling_refusal_says_why() -> None:
    _, msg = refused(ChatRequest, {**CHAT, "temperature": 1})
    assert "only greedy decoding is honoured" in msg and "not private yet" in msg


@pytest.mark.parametrize(("body", "field", "words"), [
    ({**CHAT, "messages": []}, "messages", "at least 1"),
    ({**CHAT, "messages": [{"role": "tool", "content": "x"}]}, "messages.0.role", "'system'"),
    ({**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]},
     "messages.0.content", ""),
    ({**CHAT, "messages": [{"role": "assistant", "content": "x", "tool_calls": [{"id": "1"}]}]}, "messages.0",
     "tool_calls are not supported"),
    ({**CHAT, "max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
    ({**CHAT, "max_tokens": 4, "max_completion_tokens": 5}, "", "differ"),
    ({**CHAT, "stream_options": {"include_usage": True}}, "", "only allowed with stream"),
    ({**CHAT, "frobnicate": 1}, "frobnicate", "Extra inputs"),
])
def test_chat_malformed_bodies(body: dict[str, Any], field: str, words: str) -> None:
    where, msg = refused(ChatRequest, body)
    assert where.startswith(field) and words in msg


def test_echoed_assistant_messages_with_empty_sdk_fields_are_accepted() -> None:
    echoed = {"role": "assistant", "content": "Hello!", "refusal": None, "tool_calls": None, "audio": None,
              "function_call": None, "annotations": []}
    body = ChatRequest.model_validate({**CHAT, "messages": [{"role": "developer", "content": "Be brief."},
                                                            CHAT["messages"][0], echoed,
                                                            {"role": "user", "content": [
                                                                {"type": "text", "text": "More"},
                                                                {"type": "text", "text": "please"}]}]})
    assert body.template_messages() == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                                        {"role": "assistant", "content": "Hello!"},
                                        {"role": "user", "content": "More\nplease"}]
