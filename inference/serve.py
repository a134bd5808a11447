"""OpenAI-compatible HTTP server for a saved B'MOJO model (standard library ``http.server``, no extra deps).

    python -m inference.serve --model DIR --host 127.0.0.1 --port 8000

Endpoints: ``GET /health``, ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions``
(when the tokenizer has a chat template); ``"stream": true`` answers with server-sent events ending with
``data: [DONE]``. Errors are JSON ``{"error": {"message", "type", "param", "code"}}`` with a 4xx status
(bad JSON, unknown model, bad parameters, prompt over the context limit) or 503 when the queue is full.
Requests run one at a time on a single worker (see :mod:`inference.engine`), in arrival order.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from . import openai_api as api
from .engine import Engine, EngineBusy, Job, PromptTooLong
from .loading import DTYPES, ModelLoadError, load_model_and_tokenizer

logger = logging.getLogger("bmojo.serve")
MAX_BODY_BYTES = 1 << 20


class BMojoHTTPServer(ThreadingHTTPServer):
    """Holds the engine and the served model's name; one thread per connection."""

    daemon_threads = True

    def __init__(self, address, engine: Engine, model_name: str, request_timeout: float = 600.0):
        super().__init__(address, Handler)
        self.engine = engine
        self.model_name = model_name
        self.request_timeout = request_timeout
        self.created = int(time.time())
        self.has_chat = bool(getattr(engine.tokenizer, "chat_template", None))

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def shutdown(self) -> None:
        super().shutdown()
        self.engine.close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: BMojoHTTPServer

    def log_message(self, format, *args):  # route the access log through logging
        logger.info("%s - %s", self.address_string(), format % args)

    # ------------------------------------------------------------------ routing
    def do_GET(self):
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/health":
            return self._json(200, {"status": "ok"})
        if path == "/v1/models":
            return self._json(
                200, {"object": "list", "data": [api.model_card(self.server.model_name, self.server.created)]}
            )
        if path == f"/v1/models/{self.server.model_name}":
            return self._json(200, api.model_card(self.server.model_name, self.server.created))
        if path in ("/v1/completions", "/v1/chat/completions"):
            return self._error(api.APIError(405, f"use POST for {path}", type="invalid_request_error"))
        return self._error(api.APIError(404, f"no route {path}", code="not_found"))

    def do_POST(self):
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            if path == "/v1/completions":
                body = self._read_json()
                prompt, params, stream = api.parse_completion(
                    body, self.server.model_name, self.server.engine.model.config.vocab_size
                )
                return self._generate(Job(prompt, params, stream), chat=False)
            if path == "/v1/chat/completions":
                if not self.server.has_chat:
                    raise api.APIError(
                        404, "this model's tokenizer has no chat template; use /v1/completions", code="not_found"
                    )
                body = self._read_json()
                messages, params, stream = api.parse_chat(body, self.server.model_name, 256)
                return self._generate(Job(messages, params, stream), chat=True)
            raise api.APIError(404, f"no route {path}", code="not_found")
        except api.APIError as err:
            return self._error(err)

    # ------------------------------------------------------------------ plumbing
    def _read_json(self) -> dict:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise api.APIError(411, "a Content-Length header is required")
        if int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            raise api.APIError(413, f"request body over {MAX_BODY_BYTES} bytes")
        raw = self.rfile.read(int(length))
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise api.APIError(400, f"the request body is not valid JSON: {err}") from err
        if not isinstance(body, dict):
            raise api.APIError(400, "the request body must be a JSON object")
        return body

    def _json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, err: api.APIError) -> None:
        if err.status >= 500:
            err.type = "server_error"
        self._json(err.status, err.body())

    def _events(self, job: Job):
        """The job's events; cancels it and raises on timeout."""
        deadline = time.monotonic() + self.server.request_timeout
        while True:
            try:
                event = job.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty as err:
                job.cancelled.set()
                raise api.APIError(504, "generation timed out", type="server_error") from err
            if event[0] == "error":
                err = event[1]
                if isinstance(err, PromptTooLong):
                    raise api.APIError(
                        400,
                        str(err),
                        "messages" if isinstance(job.prompt, list) else "prompt",
                        "context_length_exceeded",
                    )
                raise api.APIError(500, f"generation failed: {err}", type="server_error")
            yield event
            if event[0] == "end":
                return

    def _generate(self, job: Job, chat: bool) -> None:
        try:
            self.server.engine.submit(job)
        except EngineBusy as err:
            raise api.APIError(503, str(err), type="server_error", code="server_busy") from err
        rid = api.new_id("chatcmpl" if chat else "cmpl")
        events = self._events(job)
        try:
            start = next(events)  # validation errors (prompt too long) arrive before any output
            if job.stream:
                self._stream(job, events, rid, chat)
                return
            texts: dict[int, list[str]] = {}
            choices = []
            for event in events:
                if event[0] == "text":
                    texts.setdefault(event[1], []).append(event[2])
                elif event[0] == "finish":
                    _, index, reason, tokens = event
                    choices.append(
                        {
                            "index": index,
                            "text": "".join(texts.get(index, [])),
                            "finish_reason": reason,
                            "tokens": tokens,
                        }
                    )
            make = api.chat_response if chat else api.completion_response
            self._json(200, make(rid, self.server.model_name, choices, start[1]))
        finally:
            job.cancelled.set()  # no-op once finished; stops the generation if the client went away

    def _stream(self, job: Job, events, rid: str, chat: bool) -> None:
        model = self.server.model_name
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        started = set()
        try:
            for event in events:
                if event[0] == "text":
                    index, text = event[1], event[2]
                    if chat and index not in started:
                        started.add(index)
                        self._sse(api.chat_chunk(rid, model, index, {"role": "assistant", "content": ""}, None))
                    chunk = (
                        api.chat_chunk(rid, model, index, {"content": text}, None)
                        if chat
                        else api.completion_chunk(rid, model, index, text, None)
                    )
                    self._sse(chunk)
                elif event[0] == "finish":
                    index, reason = event[1], event[2]
                    if chat and index not in started:
                        self._sse(api.chat_chunk(rid, model, index, {"role": "assistant", "content": ""}, None))
                    chunk = (
                        api.chat_chunk(rid, model, index, {}, reason)
                        if chat
                        else api.completion_chunk(rid, model, index, "", reason)
                    )
                    self._sse(chunk)
        except api.APIError as err:  # headers are sent: report the error in the stream
            self._sse(err.body())
        except (BrokenPipeError, ConnectionResetError):
            return
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _sse(self, payload: dict) -> None:
        self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
        self.wfile.flush()


def create_server(
    model,
    tokenizer,
    host: str = "127.0.0.1",
    port: int = 8000,
    model_name: str = "bmojo",
    max_context: int | None = None,
    max_queue: int = 64,
    request_timeout: float = 600.0,
) -> BMojoHTTPServer:
    """A ready server (call ``serve_forever``); ``port=0`` picks a free port (see ``server.url``)."""
    limit = max_context or model.config.max_position_embeddings
    engine = Engine(model, tokenizer, max_context=limit, max_queue=max_queue)
    return BMojoHTTPServer((host, port), engine, model_name, request_timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bmojo-serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="directory saved with save_pretrained (model + tokenizer)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model-name", default=None, help="name clients pass as 'model' (default: directory name)")
    parser.add_argument(
        "--max-context",
        type=int,
        default=None,
        help="prompt + completion token limit (default: config.max_position_embeddings)",
    )
    parser.add_argument("--max-queue", type=int, default=64, help="requests waiting before 503")
    parser.add_argument("--request-timeout", type=float, default=600.0, help="seconds before a request gives up")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be in [0, 65535]")
    if args.max_queue < 1 or (args.max_context is not None and args.max_context < 2):
        parser.error("--max-queue must be >= 1 and --max-context >= 2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        model, tokenizer = load_model_and_tokenizer(args.model, args.dtype)
    except ModelLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    name = args.model_name or Path(args.model).resolve().name
    server = create_server(
        model, tokenizer, args.host, args.port, name, args.max_context, args.max_queue, args.request_timeout
    )
    logger.info("serving %s on %s (chat: %s)", name, server.url, server.has_chat)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
