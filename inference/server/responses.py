"""OpenAI's response objects: whole completions, streamed chunks, model cards."""

from __future__ import annotations

import time
import uuid


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
