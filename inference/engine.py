"""The generation engine behind the server: one worker thread runs requests one at a time, in arrival order.

HTTP threads submit :class:`Job` objects and read their events; only the worker touches the model and the
tokenizer (fast tokenizers are not safe to share between threads). A full queue refuses new jobs
(:class:`EngineBusy`) instead of letting latency grow without bound.

Events of a job, in order: ``("start", prompt_tokens)``, then per choice ``("text", index, text)``* and
``("finish", index, finish_reason, completion_tokens)``, then ``("end",)``; or ``("error", exception)``.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

logger = logging.getLogger(__name__)


class EngineBusy(RuntimeError):
    """The request queue is full."""


class PromptTooLong(ValueError):
    """Prompt tokens + max_new_tokens exceed the server's context limit."""


@dataclass
class SamplingParams:
    """Validated decoding parameters of one request (temperature 0 = greedy)."""

    max_new_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    def generate_kwargs(self) -> dict:
        if self.temperature == 0:
            return {"do_sample": False, "temperature": None, "top_k": None, "top_p": None}
        return {"do_sample": True, "temperature": self.temperature, "top_k": self.top_k or None, "top_p": self.top_p}


@dataclass
class Job:
    """One request: a prompt (text, chat messages, or token ids) and how to continue it."""

    prompt: str | list[dict] | list[int]
    params: SamplingParams
    stream: bool = False
    events: queue.Queue = field(default_factory=queue.Queue)
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
        self._queue.put(None)
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
                if not isinstance(err, PromptTooLong):
                    logger.exception("generation failed")
                job.emit("error", err)

    def encode(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer(prompt).input_ids
        if prompt and isinstance(prompt[0], dict):
            text = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            return self.tokenizer(text, add_special_tokens=False).input_ids
        return list(prompt)

    def _run(self, job: Job) -> None:
        ids = self.encode(job.prompt)
        p = job.params
        if not ids:
            raise PromptTooLong("the prompt encodes to no tokens")
        if len(ids) + p.max_new_tokens > self.max_context:
            raise PromptTooLong(
                f"this model's context limit is {self.max_context} tokens, but {len(ids) + p.max_new_tokens} "
                f"were requested ({len(ids)} in the prompt, {p.max_new_tokens} to generate)"
            )
        job.emit("start", len(ids))
        if p.seed is not None:
            torch.manual_seed(p.seed)
        input_ids = torch.tensor([ids], device=self.model.device)
        if job.stream:
            for index in range(p.n):
                self._stream_one(job, input_ids, index)
        else:
            self._batch(job, input_ids)

    def _generate(self, job: Job, input_ids, extra: list[StoppingCriteria] = (), **kwargs):
        p = job.params
        return self.model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=p.max_new_tokens,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            stopping_criteria=StoppingCriteriaList([_WhenSet(job.cancelled), *extra]),
            **p.generate_kwargs(),
            **kwargs,
        )

    def _batch(self, job: Job, input_ids) -> None:
        """All ``n`` choices in one batched ``generate``; text cut at the first stop string."""
        p = job.params
        kwargs = {"num_return_sequences": p.n}
        if p.stop:
            kwargs.update(stop_strings=p.stop, tokenizer=self.tokenizer)
        out = self._generate(job, input_ids, **kwargs)
        for index, row in enumerate(out[:, input_ids.shape[1] :].tolist()):
            tokens, hit_eos = self._until_eos(row)
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            cut = _first_stop(text, p.stop)
            if cut is not None:
                text = text[:cut]
            job.emit("text", index, text)
            reason = "stop" if hit_eos or cut is not None else "length"
            job.emit("finish", index, reason, len(tokens) + hit_eos)

    def _stream_one(self, job: Job, input_ids, index: int) -> None:
        streamer = _StopStringStreamer(self.tokenizer, job.params.stop, lambda text: job.emit("text", index, text))
        out = self._generate(job, input_ids, extra=[_WhenSet(streamer.stopped)], streamer=streamer)
        tokens, hit_eos = self._until_eos(out[0, input_ids.shape[1] :].tolist())
        stopped = streamer.stopped.is_set()
        if not stopped:
            streamer.flush()
        reason = "stop" if hit_eos or stopped else "length"
        job.emit("finish", index, reason, len(tokens) + hit_eos)

    def _until_eos(self, tokens: list[int]) -> tuple[list[int], bool]:
        eos = self.tokenizer.eos_token_id
        if eos is not None and eos in tokens:
            return tokens[: tokens.index(eos)], True
        return tokens, False


def _first_stop(text: str, stops: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


class _WhenSet(StoppingCriteria):
    """Stops every row once ``flag`` is set (client gone, or a stop string streamed)."""

    def __init__(self, flag: threading.Event):
        self.flag = flag

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.flag.is_set(), dtype=torch.bool, device=input_ids.device)


class _StopStringStreamer(BaseStreamer):
    """Decodes a single sequence as it is generated and emits text, never past a stop string.

    Text that could still become a stop string (a suffix that is a prefix of one) is held back until it
    cannot; an incomplete UTF-8 character is held back until its last byte arrives.
    """

    def __init__(self, tokenizer, stops: list[str], emit):
        self.tokenizer, self.stops, self.emit = tokenizer, stops, emit
        self.tokens: list[int] = []
        self.sent = 0
        self.prompt_seen = False
        self.stopped = threading.Event()

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # the first call carries the prompt
            self.prompt_seen = True
            return
        if self.stopped.is_set():
            return
        self.tokens += value.reshape(-1).tolist()
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return
        cut = _first_stop(text, self.stops)
        if cut is not None:
            self._send(text[:cut])
            self.stopped.set()
            return
        hold = max((k for s in self.stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        self._send(text[: len(text) - hold])

    def _send(self, upto: str) -> None:
        if len(upto) > self.sent:
            self.emit(upto[self.sent :])
            self.sent = len(upto)

    def flush(self) -> None:
        self._send(self.tokenizer.decode(self.tokens, skip_special_tokens=True))

    def end(self) -> None: ...


__all__ = ["Engine", "EngineBusy", "Job", "PromptTooLong", "SamplingParams"]
