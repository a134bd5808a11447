"""The FastAPI app: the routes, and the bridge from async request handlers to the engine's one worker thread.

Handlers parse and validate the request (:mod:`.schema`) on the event loop, then submit a :class:`Job` to the
engine's bounded queue (full: 503) and await its events, which the worker hands over with
``call_soon_threadsafe``. No handler blocks the loop, so ``/health`` and the 503s answer while the model works.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from ..engine import Engine, EngineBusy, Job, PromptError, PromptTooLong
from . import errors, responses
from .errors import APIError
from .limits import RequestLimits
from .schema import ChatRequest, CompletionRequest, Limits

logger = logging.getLogger("bmojo.serve")


@dataclass(frozen=True)
class Settings:
    """The per-request limits of the HTTP side."""

    max_body_bytes: int = 1 << 20
    max_url_bytes: int = 8192
    body_timeout: float = 30.0  # seconds to receive the whole body (a client announcing more than it sends)
    request_timeout: float = 600.0  # seconds from submission to the last token

    def __post_init__(self):
        for name in ("max_body_bytes", "max_url_bytes", "body_timeout", "request_timeout"):
            value = getattr(self, name)
            if not value > 0 or value == float("inf"):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def prompt_char_limit(tokenizer, max_context: int, fallback: int) -> int:
    """The longest text that could fit in ``max_context`` tokens: no ordinary token decodes to more characters
    than its vocabulary entry has (byte-level and sentencepiece spellings are at least as long as the text)."""
    try:
        added = set(tokenizer.get_added_vocab())
        longest = max(len(t) for t in tokenizer.get_vocab() if t not in added)
    except (AttributeError, TypeError, ValueError):
        return fallback
    return min(fallback, max_context * longest)


class _LoopQueue:
    """``job.events`` for an async handler: the worker thread puts, the event loop gets."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.queue = loop, asyncio.Queue()

    def put(self, event: tuple) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the loop has closed (server stopped): nobody is waiting for these events
            pass


async def _read_json(request: Request, settings: Settings) -> dict:
    # application/json only: a web page can send text/plain cross-origin without a preflight, JSON it cannot.
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise APIError(415, f"the body must be sent as application/json, not {media or 'no Content-Type'}")
    try:
        raw = await asyncio.wait_for(request.body(), settings.body_timeout)
    except asyncio.TimeoutError as err:
        raise APIError(408, f"the request body did not arrive within {settings.body_timeout:g} s") from err
    try:
        body = json.loads(raw)
    except UnicodeDecodeError as err:
        raise APIError(400, "the request body is not valid JSON: it is not UTF-8") from err
    except json.JSONDecodeError as err:
        raise APIError(400, f"the request body is not valid JSON: {err}") from err
    except RecursionError as err:
        raise APIError(400, "the request body is not valid JSON: it is nested too deeply") from err
    except ValueError as err:  # an integer of more than sys.get_int_max_str_digits() digits
        raise APIError(400, "the request body is not valid JSON: a number in it is too long") from err
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    return body


def _events(job: Job, events: asyncio.Queue, deadline: float) -> AsyncIterator[tuple]:
    """The job's events up to ``end``; a worker error or the deadline becomes an :class:`APIError`."""

    async def gen():
        while True:
            try:
                event = await asyncio.wait_for(events.get(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError as err:
                job.cancelled.set()
                raise APIError(504, "generation timed out") from err
            if event[0] == "error":
                err = event[1]
                if isinstance(err, PromptError):
                    chat = isinstance(job.prompt, list) and job.prompt and isinstance(job.prompt[0], dict)
                    param = "messages" if chat else "prompt"
                    code = "context_length_exceeded" if isinstance(err, PromptTooLong) else None
                    raise APIError(400, str(err), param, code)
                raise APIError(500, "generation failed; see the server log")  # the worker logged the traceback
            if event[0] == "end":
                return
            yield event

    return gen()


_GONE = object()


async def _unless_gone(work, gone: asyncio.Future):
    """``await work``, or ``_GONE`` if the client disconnects first (``work`` is then cancelled)."""
    task = asyncio.ensure_future(work)
    await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        return task.result()
    task.cancel()
    return _GONE


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (the body is read by then, so only a disconnect can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(engine: Engine, model_name: str, settings: Settings | None = None) -> FastAPI:
    """The app serving ``engine`` as ``model_name``; the engine is closed when the app shuts down."""
    settings = settings or Settings()
    tokenizer, max_context = engine.tokenizer, engine.max_context
    limits = Limits(
        max_context=max_context,
        vocab_size=engine.model.config.vocab_size,
        max_prompt_chars=prompt_char_limit(tokenizer, max_context, settings.max_body_bytes),
    )
    has_chat = bool(getattr(tokenizer, "chat_template", None))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await asyncio.to_thread(engine.close)  # after uvicorn has let the in-flight requests finish

    app = FastAPI(title="bmojo-neuron", lifespan=lifespan, docs_url=None, redoc_url=None)
    errors.install(app)
    app.add_middleware(RequestLimits, max_body_bytes=settings.max_body_bytes, max_url_bytes=settings.max_url_bytes)
    app.state.model_name, app.state.has_chat, app.state.limits = model_name, has_chat, limits
    _add_routes(app, engine, model_name, settings, limits, has_chat)
    return app


def _add_routes(app: FastAPI, engine: Engine, model_name: str, settings: Settings, limits: Limits, has_chat: bool):
    """The OpenAI-style endpoints: health, model cards, completions and chat completions."""
    created = int(time.time())

    def check_model(name: str) -> None:
        if name != model_name:
            raise APIError(
                404, f"the model '{name}' does not exist; this server serves '{model_name}'", "model", "model_not_found"
            )

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [responses.model_card(model_name, created)]}

    @app.get("/v1/models/{name}")
    async def model(name: str):
        check_model(name)
        return responses.model_card(model_name, created)

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = CompletionRequest.model_validate(await _read_json(request, settings), context={"limits": limits})
        check_model(req.model)
        job = Job(req.prompt, req.sampling_params(16), req.stream)
        return await _answer(engine, settings, model_name, request, job, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        if not has_chat:
            raise APIError(404, "this model's tokenizer has no chat template; use /v1/completions", code="not_found")
        req = ChatRequest.model_validate(await _read_json(request, settings), context={"limits": limits})
        check_model(req.model)
        # Without max_tokens OpenAI generates up to the context's end; this server stops at 256 tokens.
        params = req.sampling_params(256, fit_context=True)
        return await _answer(engine, settings, model_name, request, Job(req.chat(), params, req.stream), chat=True)


async def _answer(engine: Engine, settings: Settings, model_name: str, request: Request, job: Job, chat: bool):
    """Submit ``job`` and answer the request: a streamed response, a whole one, or an error."""
    events = _LoopQueue(asyncio.get_running_loop())
    job.events = events
    try:
        engine.submit(job)
    except EngineBusy as err:
        raise APIError(503, str(err)) from err
    stream = _events(job, events.queue, time.monotonic() + settings.request_timeout)
    # Until the response starts, watch for the client leaving: its job is then dropped, queued or running.
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        start = await _unless_gone(anext(stream), gone)  # a prompt error arrives before any output: a 4xx
        if start is not _GONE and job.stream:
            gone.cancel()  # from here StreamingResponse watches the connection itself
            rid = responses.new_id("chatcmpl" if chat else "cmpl")
            body = _sse(stream, job, rid, model_name, chat)
            return StreamingResponse(body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        choices = _GONE if start is _GONE else await _unless_gone(_collect(stream), gone)
    except BaseException:
        job.cancelled.set()
        raise
    finally:
        gone.cancel()
    if choices is _GONE:
        job.cancelled.set()
        return APIError(499, "the client closed the request").response()  # for the access log only
    make = responses.chat_response if chat else responses.completion_response
    return make(responses.new_id("chatcmpl" if chat else "cmpl"), model_name, choices, start[1])


async def _collect(stream: AsyncIterator[tuple]) -> list[dict]:
    """The whole text of each choice: {"index", "text", "finish_reason", "tokens"} in index order."""
    texts: dict[int, list[str]] = {}
    choices = []
    async for event in stream:
        if event[0] == "text":
            texts.setdefault(event[1], []).append(event[2])
        elif event[0] == "finish":
            _, index, reason, tokens = event
            choices.append(
                {"index": index, "text": "".join(texts.get(index, [])), "finish_reason": reason, "tokens": tokens}
            )
    return sorted(choices, key=lambda c: c["index"])


async def _sse(stream: AsyncIterator[tuple], job: Job, rid: str, model: str, chat: bool) -> AsyncIterator[str]:
    """Server-sent events: chunks as the text arrives, then ``[DONE]``; an error after the headers is sent as
    an error object in the stream (the status is already 200)."""
    started: set[int] = set()

    def role(index: int) -> list[str]:
        if not chat or index in started:
            return []
        started.add(index)
        return [_data(responses.chat_chunk(rid, model, index, {"role": "assistant", "content": ""}, None))]

    try:
        async for event in stream:
            if event[0] == "text":
                _, index, text = event
                chunk = (
                    responses.chat_chunk(rid, model, index, {"content": text}, None)
                    if chat
                    else responses.completion_chunk(rid, model, index, text, None)
                )
            elif event[0] == "finish":
                _, index, reason, _ = event
                chunk = (
                    responses.chat_chunk(rid, model, index, {}, reason)
                    if chat
                    else responses.completion_chunk(rid, model, index, "", reason)
                )
            else:
                continue
            for line in [*role(index), _data(chunk)]:
                yield line
    except APIError as err:
        yield _data(err.body())
    finally:
        job.cancelled.set()  # a no-op once finished; stops the generation if the client went away
    yield "data: [DONE]\n\n"


def _data(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"
