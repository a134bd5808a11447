"""OpenAI-compatible HTTP server for a saved B'MOJO model (FastAPI on uvicorn).

    python -m inference.serve --model DIR --host 127.0.0.1 --port 8000

Endpoints: ``GET /health``, ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions``
(when the tokenizer has a chat template); ``"stream": true`` answers with server-sent events ending with
``data: [DONE]``. Every error is JSON ``{"error": {"message", "type", "param", "code"}}``: 400 for invalid
requests (checked before they reach the model), 404/405/413/414/415 for wrong routes, methods, sizes and
content types, 503 when the queue is full. Requests run one at a time on a single worker, in arrival order.

This module parses the arguments and binds the port before importing torch, transformers or FastAPI, so
``--help``, usage errors and a taken port answer at once.
"""

from __future__ import annotations

import argparse
import errno
import math
import signal
import sys
from pathlib import Path

DTYPE_CHOICES = ("bfloat16", "float16", "float32")  # inference.loading.DTYPES (not imported: it pulls torch)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bmojo-serve",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="directory saved with save_pretrained (model + tokenizer)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port)")
    parser.add_argument("--model-name", default=None, help="name clients pass as 'model' (default: directory name)")
    parser.add_argument(
        "--max-context",
        type=int,
        default=None,
        help="prompt + completion token limit (default: config.max_position_embeddings)",
    )
    parser.add_argument("--max-queue", type=int, default=64, help="requests waiting for the worker before 503")
    parser.add_argument(
        "--request-timeout", type=float, default=600.0, help="seconds a request may wait and generate before 504"
    )
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (413 beyond)")
    parser.add_argument("--backlog", type=int, default=2048, help="pending TCP connections the kernel keeps")
    parser.add_argument(
        "--max-connections", type=int, default=1024, help="open connections before uvicorn answers 503 itself"
    )
    parser.add_argument("--keep-alive", type=int, default=5, help="seconds an idle keep-alive connection stays open")
    parser.add_argument("--warmup", type=int, default=2, help="short generations run before serving (0: none)")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="float32", help="weights' dtype")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 0 <= args.port <= 65535:
        parser.error("--port must be in [0, 65535]")
    if args.max_context is not None and args.max_context < 2:
        parser.error("--max-context must be >= 2")
    if not (math.isfinite(args.request_timeout) and args.request_timeout > 0):
        parser.error(f"--request-timeout must be a positive number of seconds, got {args.request_timeout}")
    for name in ("max_queue", "max_body_bytes", "backlog", "max_connections", "keep_alive"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if args.max_connections <= args.max_queue:
        parser.error("--max-connections must be larger than --max-queue (else the queue is never reached)")


def warm_up(engine, steps: int) -> None:
    """Run ``steps`` short generations of growing prompt length through the engine, with a progress bar."""
    from tqdm import tqdm

    from .engine import Job, SamplingParams

    longest = max(1, engine.max_context - 2)
    for step in tqdm(range(steps), desc="warm-up", unit="generation", file=sys.stderr, disable=steps == 0):
        length = min(longest, 8**step)
        prompt = [i % engine.model.config.vocab_size for i in range(length)]
        job = engine.submit(Job(prompt, SamplingParams(max_new_tokens=1, temperature=0.0)))
        while (event := job.events.get(timeout=600))[0] not in ("end", "error"):
            pass
        if event[0] == "error":
            raise RuntimeError(f"warm-up generation failed: {event[1]}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    from .server.run import bind  # the socket layer only; uvicorn is imported after the model loads

    try:
        sock = bind(args.host, args.port, args.backlog)
    except OSError as err:
        reason = "the address is already in use" if err.errno == errno.EADDRINUSE else (err.strerror or str(err))
        print(f"error: cannot listen on {args.host}:{args.port}: {reason}", file=sys.stderr)
        return 1
    print(f"loading {args.model} ...", file=sys.stderr, flush=True)
    try:
        return _serve(args, sock)
    finally:
        sock.close()


def _serve(args: argparse.Namespace, sock) -> int:
    import logging

    from .engine import Engine
    from .loading import ModelLoadError, load_model_and_tokenizer
    from .server.app import Settings, create_app
    from .server.run import ServerOptions, make_server, url_of

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        model, tokenizer = load_model_and_tokenizer(args.model, args.dtype)
    except ModelLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    name = args.model_name or Path(args.model).resolve().name
    engine = Engine(model, tokenizer, args.max_context or model.config.max_position_embeddings, args.max_queue)
    warm_up(engine, args.warmup)
    settings = Settings(max_body_bytes=args.max_body_bytes, request_timeout=args.request_timeout)
    app = create_app(engine, name, settings)
    options = ServerOptions(
        backlog=args.backlog,
        max_connections=args.max_connections,
        keep_alive=args.keep_alive,
        graceful_timeout=args.request_timeout,
        log_level=args.log_level,
    )
    server = make_server(app, options)
    print(f"serving {name} on {url_of(sock)} (chat: {app.state.has_chat})", file=sys.stderr, flush=True)
    # uvicorn handles SIGTERM/SIGINT while it runs (graceful stop) and then raises the signal again under the
    # handler it found; ignoring them here makes that a clean exit 0 instead of a kill or a KeyboardInterrupt.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    server.run(sockets=[sock])
    print("stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
