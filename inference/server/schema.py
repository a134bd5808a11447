"""The OpenAI request bodies as pydantic models, with this server's limits; validated before the worker sees them.

Supported: ``/v1/completions`` (one prompt: a string, a one-string list or a list of token ids) and
``/v1/chat/completions`` with ``max_tokens`` (or ``max_completion_tokens``), ``temperature``, ``top_p``,
``top_k`` (as vLLM), ``n``, ``stop``, ``seed`` and ``stream``. Fields OpenAI defines but this server does
not implement are rejected when set to a non-default value (``logprobs``, ``echo``, penalties, tools ...);
unknown fields are ignored, as OpenAI clients send extras such as ``user``.

Numbers are strict (``"3"`` is not an integer, ``true`` is not a number) and finite (NaN and infinities, which
Python's JSON parser accepts, are refused). Limits that depend on the served model (context, vocabulary, the
longest prompt text) come from :class:`Limits`, passed as the validation context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..engine import SamplingParams

MAX_N = 8
MAX_STOP = 4
MAX_STOP_CHARS = 128  # a stop string is matched against the text at every step: keep that cheap
MAX_MESSAGES = 256
INT64 = 2**63 - 1
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
# Fields that change the output in ways this server does not implement, with the values that mean "off".
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


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the served model."""

    max_context: int  # prompt + completion tokens
    vocab_size: int
    max_prompt_chars: int  # longer text cannot fit in max_context tokens (or is refused to bound the work)


def _text(value: str, what: str) -> str:
    """Refuse lone surrogates (valid in JSON escapes, not encodable as UTF-8, so the tokenizer would fail)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"{what} holds a lone surrogate (\\u{ord(err.object[err.start]):04x}), not valid text"
        ) from err
    return value


def _too_long(message: str) -> PydanticCustomError:
    """A prompt that cannot fit: reported with OpenAI's code ``context_length_exceeded``."""
    return PydanticCustomError(CONTEXT_LENGTH_EXCEEDED, message)


def _limits(info: ValidationInfo) -> Limits:
    limits = (info.context or {}).get("limits")
    if not isinstance(limits, Limits):
        raise TypeError("validate requests with context={'limits': Limits(...)}")
    return limits


Float = Annotated[float, Field(strict=True, allow_inf_nan=False)]
StopList = Annotated[
    list[Annotated[StrictStr, Field(min_length=1, max_length=MAX_STOP_CHARS)]], Field(max_length=MAX_STOP)
]


class _Sampling(BaseModel):
    """The decoding fields both endpoints share."""

    model_config = ConfigDict(extra="ignore")

    model: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    max_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    temperature: Annotated[Float, Field(ge=0.0, le=2.0)] = 1.0
    top_p: Annotated[Float, Field(gt=0.0, le=1.0)] = 1.0
    top_k: Annotated[StrictInt, Field(ge=-1, le=2**31)] = 0  # vLLM's -1 means "off", as 0 does
    n: Annotated[StrictInt, Field(ge=1, le=MAX_N)] = 1
    stop: Annotated[StrictStr, Field(min_length=1, max_length=MAX_STOP_CHARS)] | StopList | None = None
    seed: Annotated[StrictInt, Field(ge=-INT64 - 1, le=INT64)] | None = None
    stream: StrictBool = False

    @model_validator(mode="before")
    @classmethod
    def _unsupported(cls, body):
        if isinstance(body, dict):
            for name, off in UNSUPPORTED.items():
                if name in body and body[name] not in off:
                    raise ValueError(f"'{name}' is not supported by this server")
        return body

    @field_validator("max_tokens", "max_completion_tokens", check_fields=False)
    @classmethod
    def _below_context(cls, value: int | None, info: ValidationInfo):
        limit = _limits(info).max_context
        if value is not None and value >= limit:
            raise ValueError(f"must be below the context limit of {limit} tokens")
        return value

    @field_validator("stop")
    @classmethod
    def _stop_text(cls, value):
        for s in [value] if isinstance(value, str) else value or []:
            _text(s, "a stop string")
        return value

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def sampling_params(self, default_max_tokens: int, fit_context: bool = False) -> SamplingParams:
        """``fit_context``: without max_tokens, generate at most the default and what the context leaves."""
        return SamplingParams(
            max_new_tokens=self.max_tokens or default_max_tokens,
            fit_context=fit_context and self.max_tokens is None,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=max(self.top_k, 0),
            n=self.n,
            stop=self.stops,
            seed=self.seed,
        )


class CompletionRequest(_Sampling):
    """``POST /v1/completions``."""

    prompt: StrictStr | Annotated[list[StrictStr], Field(min_length=1, max_length=1)] | list[StrictInt]

    @model_validator(mode="after")
    def _prompt(self, info: ValidationInfo):
        limits = _limits(info)
        prompt = self.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            prompt = self.prompt = prompt[0]
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("prompt must not be empty")
            if len(prompt) > limits.max_prompt_chars:
                raise _too_long(f"prompt is over {limits.max_prompt_chars} characters, more than the context holds")
            _text(prompt, "prompt")
            return self
        if not prompt:
            raise ValueError("prompt must be a non-empty string, a one-string list or a list of token ids")
        if not all(0 <= t < limits.vocab_size for t in prompt):
            raise ValueError(f"token ids in prompt must be in [0, {limits.vocab_size})")
        if len(prompt) + (self.max_tokens or 1) > limits.max_context:
            raise _too_long(f"prompt tokens + max_tokens are over the context limit of {limits.max_context}")
        return self


class TextPart(BaseModel):
    type: Literal["text"]
    text: StrictStr


class Message(BaseModel):
    """One chat message. Roles are OpenAI's: the chat template writes the role into the prompt, so a free-form
    role could spell out special tokens."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[TextPart]

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: Annotated[list[Message], Field(min_length=1, max_length=MAX_MESSAGES)]
    max_completion_tokens: Annotated[StrictInt, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _messages(self, info: ValidationInfo):
        limits = _limits(info)
        if self.max_completion_tokens is not None:  # the newer name wins, as in OpenAI's API
            self.max_tokens = self.max_completion_tokens
        total = 0
        for i, message in enumerate(self.messages):
            total += len(_text(message.text, f"messages[{i}].content"))
        if total > limits.max_prompt_chars:
            raise _too_long(f"the messages are over {limits.max_prompt_chars} characters, more than the context holds")
        return self

    def chat(self) -> list[dict]:
        return [{"role": m.role, "content": m.text} for m in self.messages]
