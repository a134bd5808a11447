"""The OpenAI-compatible request and response formats: validation of request bodies, response objects.

Supported: ``/v1/completions`` (one prompt: a string, a one-string list or a list of token ids) and
``/v1/chat/completions`` with ``max_tokens`` (or ``max_completion_tokens``), ``temperature``, ``top_p``,
``top_k`` (as vLLM), ``n``, ``stop``, ``seed`` and ``stream``. Fields OpenAI defines but this server does
not implement are rejected when set to a non-default value (``logprobs``, ``echo``, penalties, tools ...);
unknown fields are ignored, as OpenAI clients send extras such as ``user``.
"""

from __future__ import annotations

import time
import uuid

from .engine import SamplingParams

MAX_N = 8
MAX_STOP = 4
# Fields that change the output in ways this server does not implement, with the value that means "off".
UNSUPPORTED = {
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "echo": (None, False),
    "suffix": (None, ""),
    "best_of": (None, 1),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "logit_bias": (None, {}),
    "tools": (None, []),
    "functions": (None, []),
    "response_format": (None, {"type": "text"}),
}


class APIError(Exception):
    """An error reported to the client as ``{"error": {...}}`` with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _number(body: dict, name: str, default: float, lo: float, hi: float, lo_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise APIError(400, f"'{name}' must be a number", name)
    if value > hi or value < lo or (lo_open and value == lo):
        bound = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
        raise APIError(400, f"'{name}' must be in {bound}, got {value}", name)
    return float(value)


def _integer(body: dict, name: str, default: int | None, lo: int, hi: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise APIError(400, f"'{name}' must be an integer", name)
    if value < lo or (hi is not None and value > hi):
        raise APIError(400, f"'{name}' must be in [{lo}, {hi if hi is not None else 'inf'}], got {value}", name)
    return value


def _check_model(body: dict, model_name: str) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise APIError(400, "'model' is required and must be a string", "model")
    if model != model_name:
        raise APIError(
            404, f"the model '{model}' does not exist; this server serves '{model_name}'", "model", "model_not_found"
        )


def sampling_params(body: dict, default_max_tokens: int) -> SamplingParams:
    """Validate the decoding fields shared by both endpoints."""
    for name, off in UNSUPPORTED.items():
        if name in body and body[name] not in off:
            raise APIError(400, f"'{name}' is not supported by this server", name, "unsupported_parameter")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or len(stop) > MAX_STOP or not all(isinstance(s, str) and s for s in stop):
        raise APIError(400, f"'stop' must be a non-empty string or a list of up to {MAX_STOP} of them", "stop")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise APIError(400, "'stream' must be a boolean", "stream")
    top_k = _integer(body, "top_k", 0, -1)
    return SamplingParams(
        max_new_tokens=_integer({"max_tokens": max_tokens}, "max_tokens", default_max_tokens, 1),
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0, lo_open=True),
        top_k=max(top_k, 0),  # vLLM uses -1 for "off"
        n=_integer(body, "n", 1, 1, MAX_N),
        stop=stop,
        seed=_integer(body, "seed", None, -(2**63), 2**63 - 1),
    )


def parse_completion(body: dict, model_name: str, vocab_size: int):
    """``/v1/completions`` body -> (prompt, SamplingParams, stream)."""
    _check_model(body, model_name)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        if not all(0 <= t < vocab_size for t in prompt):
            raise APIError(400, f"token ids in 'prompt' must be in [0, {vocab_size})", "prompt")
    elif not isinstance(prompt, str) or not prompt:
        raise APIError(400, "'prompt' must be a non-empty string, a one-string list or a list of token ids", "prompt")
    return prompt, sampling_params(body, 16), body.get("stream", False)


def parse_chat(body: dict, model_name: str, default_max_tokens: int):
    """``/v1/chat/completions`` body -> (messages, SamplingParams, stream)."""
    _check_model(body, model_name)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list", "messages")
    clean = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise APIError(400, f"messages[{i}] must be an object with a 'role'", "messages")
        content = message.get("content")
        if isinstance(content, list):  # content parts: only text is supported
            if not all(
                isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
            ):
                raise APIError(400, f"messages[{i}].content: only text parts are supported", "messages")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise APIError(400, f"messages[{i}].content must be a string", "messages")
        clean.append({"role": message["role"], "content": content})
    return clean, sampling_params(body, default_max_tokens), body.get("stream", False)


# ----------------------------------------------------------------------------------------------- responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_response(rid: str, model: str, choices: list[dict], prompt_tokens: int) -> dict:
    """choices: [{"index", "text", "finish_reason", "tokens"}]."""
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": c["index"], "text": c["text"], "logprobs": None, "finish_reason": c["finish_reason"]}
            for c in choices
        ],
        "usage": usage(prompt_tokens, sum(c["tokens"] for c in choices)),
    }


def chat_response(rid: str, model: str, choices: list[dict], prompt_tokens: int) -> dict:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": c["index"],
                "message": {"role": "assistant", "content": c["text"]},
                "logprobs": None,
                "finish_reason": c["finish_reason"],
            }
            for c in choices
        ],
        "usage": usage(prompt_tokens, sum(c["tokens"] for c in choices)),
    }


def completion_chunk(rid: str, model: str, index: int, text: str, finish_reason: str | None) -> dict:
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}],
    }


def chat_chunk(rid: str, model: str, index: int, delta: dict, finish_reason: str | None) -> dict:
    return {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def model_card(model: str, created: int) -> dict:
    return {"id": model, "object": "model", "created": created, "owned_by": "bmojo-neuron"}


__all__ = ["APIError", "parse_chat", "parse_completion", "sampling_params"]
