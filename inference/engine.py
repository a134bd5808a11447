"""The generation engine behind the server: one worker thread runs requests one at a time, in arrival order.

Request handlers submit :class:`Job` objects and read their events; only the worker touches the model and the
tokenizer (fast tokenizers are not safe to share between threads). A full queue refuses new jobs
(:class:`EngineBusy`) instead of letting latency grow without bound.

Events of a job, in order: ``("start", prompt_tokens)``, then ``("text", index, text)`` as each choice's text
becomes final (choices interleaved) and ``("finish", index, finish_reason, completion_tokens)`` per choice, then
``("end",)``; or ``("error", exception)``. A streamed and a whole response are built from the same events.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

logger = logging.getLogger(__name__)


SAMPLING_EPS = 1e-5


class EngineBusy(RuntimeError):
    """The request queue is full."""


class PromptError(ValueError):
    """The prompt cannot be served as asked (a client error, reported as such)."""


class PromptTooLong(PromptError):
    """Prompt tokens + max_new_tokens exceed the server's context limit."""


@dataclass
class SamplingParams:
    """Validated decoding parameters of one request (temperature 0 = greedy)."""

    max_new_tokens: int = 16
    fit_context: bool = False  # shorten max_new_tokens to what the context leaves after the prompt (a default)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    def generate_kwargs(self) -> dict:
        if self.temperature < SAMPLING_EPS:  # as vLLM: dividing logits by ~0 overflows, so this is greedy
            return {"do_sample": False, "temperature": None, "top_k": None, "top_p": None}
        return {"do_sample": True, "temperature": self.temperature, "top_k": self.top_k or None, "top_p": self.top_p}


@dataclass
class Job:
    """One request: a prompt (text, chat messages, or token ids) and how to continue it."""

    prompt: str | list[dict] | list[int]
    params: SamplingParams
    stream: bool = False
    events: queue.Queue = field(default_factory=queue.Queue)  # or anything with put(): the server hands its own
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, *event) -> None:
        self.events.put(event)


class Engine:
    """Owns the model and tokenizer; ``submit`` jobs, read ``job.events``."""

    def __init__(self, model, tokenizer, max_context: int, max_queue: int = 64):
        self.model = model
        self.tokenizer = tokenizer
        self.max_context = max_context
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._work, name="bmojo-engine", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Job:
        try:
            self._queue.put_nowait(job)
        except queue.Full as err:
            raise EngineBusy(f"the server is busy ({self._queue.maxsize} requests waiting); retry later") from err
        return job

    def close(self, timeout: float = 10.0) -> None:
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:  # the worker is stuck on a long queue; it is a daemon thread, let it go
            return
        self._thread.join(timeout)

    # ------------------------------------------------------------------ worker side
    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            if job.cancelled.is_set():
                continue
            try:
                with torch.inference_mode():
                    self._run(job)
                job.emit("end")
            except Exception as err:  # noqa: BLE001 - reported to the client, the worker keeps serving
                if not isinstance(err, PromptError):
                    logger.exception("generation failed")
                job.emit("error", err)

    def encode(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer(prompt).input_ids
        if prompt and isinstance(prompt[0], dict):
            return encode_chat(self.tokenizer, prompt)
        return list(prompt)

    def _run(self, job: Job) -> None:
        ids = self.encode(job.prompt)
        p = job.params
        if not ids:
            raise PromptTooLong("the prompt encodes to no tokens")
        if p.fit_context and len(ids) < self.max_context:
            p.max_new_tokens = min(p.max_new_tokens, self.max_context - len(ids))
        if len(ids) + p.max_new_tokens > self.max_context:
            raise PromptTooLong(
                f"this model's context limit is {self.max_context} tokens, but {len(ids) + p.max_new_tokens} "
                f"were requested ({len(ids)} in the prompt, {p.max_new_tokens} to generate)"
            )
        job.emit("start", len(ids))
        if p.seed is not None:
            torch.manual_seed(p.seed)
        # n copies of the prompt rather than num_return_sequences, which greedy decoding refuses.
        input_ids = torch.tensor([ids] * p.n, device=self.model.device)
        # One batched `generate` for the n choices, streamed or not: the watch below decides where each choice
        # ends and emits its text as it becomes final, so both modes give the same text and finish_reason.
        watch = _TextWatch(self.tokenizer, p.stop, p.n, len(ids), job)
        self.model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=p.max_new_tokens,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            stopping_criteria=StoppingCriteriaList([watch]),
            **p.generate_kwargs(),
        )
        watch.finish()


CHAT_MARK = "\ue000{}\ue001"  # private-use characters: no template writes them


def encode_chat(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of ``messages`` under the chat template, with message content always tokenized as plain text.

    The template is rendered with a marker in place of each content; its own text (roles, ``<eos>`` ...) is
    tokenized with special tokens, the content between with ``split_special_tokens`` so that a user writing
    ``<eos>`` or ``<|assistant|>`` gets those characters, not the control tokens.
    """
    marks = [CHAT_MARK.format(i) for i in range(len(messages))]
    marked = [{**m, "content": mark} for m, mark in zip(messages, marks)]
    text = tokenizer.apply_chat_template(marked, tokenize=False, add_generation_prompt=True)
    pieces = []
    for mark in marks:
        before, found, text = text.partition(mark)
        if not found or mark in text:
            raise PromptError("the chat template changes or repeats message content; cannot keep it plain text")
        pieces.append(before)
    ids: list[int] = []
    for piece, message in zip(pieces, messages):
        ids += tokenizer(piece, add_special_tokens=False).input_ids
        ids += tokenizer(message["content"], add_special_tokens=False, split_special_tokens=True).input_ids
    return ids + tokenizer(text, add_special_tokens=False).input_ids


def first_stop(text: str, stops: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


class _TextWatch(StoppingCriteria):
    """Follows each generated row: ends it at ``<eos>`` or at the first stop string in the *generated* text
    (never in the prompt), and emits its text as it becomes final.

    Text that could still become a stop string (a suffix that is a prefix of one) is held back until it cannot;
    an incomplete UTF-8 character is held back until its last byte arrives. A finished row is padded by
    ``generate`` while the others go on; those pads are not counted (``tokens`` stops at the row's end).
    """

    def __init__(self, tokenizer, stops: list[str], n: int, prompt_len: int, job: Job):
        self.tokenizer, self.stops, self.job = tokenizer, stops, job
        self.eos = tokenizer.eos_token_id
        self.tokens: list[list[int]] = [[] for _ in range(n)]
        self.sent = [0] * n
        self.reason: list[str | None] = [None] * n
        self.seen = prompt_len  # columns of input_ids already read

    def __call__(self, input_ids, scores, **kwargs):
        for row, new in enumerate(input_ids[:, self.seen :].tolist()):
            if self.reason[row] is None:
                self._advance(row, new)
        self.seen = input_ids.shape[1]
        done = [r is not None or self.job.cancelled.is_set() for r in self.reason]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def _advance(self, row: int, new: list[int]) -> None:
        tokens = self.tokens[row]
        for token in new:
            tokens.append(token)
            if token == self.eos:
                self.reason[row] = "stop"
                break
        text = self._text(row)
        cut = first_stop(text, self.stops)
        if cut is not None:
            self.reason[row] = "stop"
            self._send(row, text[:cut])
        elif self.reason[row] is None and not text.endswith("\ufffd"):
            hold = max((k for s in self.stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
            self._send(row, text[: len(text) - hold])
        elif self.reason[row] is not None:  # <eos>: all that came before it is final
            self._send(row, text)

    def _text(self, row: int) -> str:
        tokens = self.tokens[row]
        if tokens and tokens[-1] == self.eos:
            tokens = tokens[:-1]
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _send(self, row: int, upto: str) -> None:
        if len(upto) > self.sent[row]:
            self.job.emit("text", row, upto[self.sent[row] :])
            self.sent[row] = len(upto)

    def finish(self) -> None:
        """After ``generate``: rows still open ran out of tokens ("length"); send their held-back text."""
        for row, reason in enumerate(self.reason):
            if reason is None:
                self._send(row, self._text(row))
            self.job.emit("finish", row, reason or "length", len(self.tokens[row]))


__all__ = ["Engine", "EngineBusy", "Job", "PromptError", "PromptTooLong", "SamplingParams", "encode_chat"]
