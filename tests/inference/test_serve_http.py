"""The server as an HTTP endpoint under bad input: every failure is OpenAI's JSON error object, never an HTML
page, a dropped connection or an internal message; limits are checked before a request reaches the model."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from inference.loading import load_model_and_tokenizer
from inference.server.app import Settings
from inference.server.schema import MAX_STOP_CHARS
from tests.helpers.serve import MAX_CONTEXT, NAME, exchange, post_json, request, serving

MAX_BODY = 16 * 1024
ERROR_KEYS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def url(saved_model_dir):
    model, tokenizer = load_model_and_tokenizer(saved_model_dir)
    settings = Settings(max_body_bytes=MAX_BODY, body_timeout=1.0, request_timeout=60)
    with serving(model, tokenizer, settings=settings) as url:
        yield url


def assert_error(status, headers, body, expected: int):
    assert status == expected, body
    assert headers.get_content_type() == "application/json"
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS
    assert body["error"]["type"] == ("server_error" if expected >= 500 else "invalid_request_error")


JSON = {"Content-Type": "application/json"}
GOOD = json.dumps({"model": NAME, "prompt": "hi", "max_tokens": 2}).encode()


@pytest.mark.parametrize(
    "method, path, body, headers, status",
    [
        ("GET", "/nope", None, {}, 404),
        ("POST", "/nope", GOOD, JSON, 404),
        ("GET", "/v1/models/other", None, {}, 404),
        ("GET", "/v1/completions", None, {}, 405),
        ("DELETE", "/v1/completions", None, {}, 405),
        ("PUT", "/health", GOOD, JSON, 405),
        ("GET", "/" + "a" * 9000, None, {}, 414),
        ("POST", "/v1/completions", b'{"prompt": "' + b"x" * MAX_BODY + b'"}', JSON, 413),
        ("POST", "/v1/completions", GOOD, {"Content-Type": "text/plain"}, 415),
        ("POST", "/v1/completions", GOOD, {"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ("POST", "/v1/chat/completions", GOOD, {}, 415),
    ],
    ids=[
        "404",
        "404-post",
        "404-model",
        "405-get",
        "405-delete",
        "405-put",
        "414",
        "413",
        "415-text",
        "415-form",
        "415-none",
    ],
)
def test_http_errors_are_openai_json(url, method, path, body, headers, status):
    assert_error(*request(url, method, path, body, headers), status)


@pytest.mark.parametrize(
    "head",
    [
        b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
        b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"NOT HTTP\r\n\r\n",
    ],
    ids=["bad-length", "two-lengths", "garbage"],
)
def test_malformed_http_gets_a_json_400(url, head):
    reply = exchange(url, head, timeout=5)
    status, _, body = reply.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 400") and b"application/json" in status
    assert json.loads(body)["error"]["type"] == "invalid_request_error"


def test_chunked_body_over_the_limit_is_413(url):
    chunk = b"x" * 8000
    head = b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3)) + b"0\r\n\r\n"
    reply = exchange(url, head + body, timeout=5)
    assert reply.startswith(b"HTTP/1.1 413") and b'"request_too_large"' in reply


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"", b"[" * 5000 + b"]" * 5000, b'{"model": "tiny", "n": ' + b"9" * 5000 + b"}", b'{"a": "\xff"}'],
    ids=["syntax", "empty", "deeply-nested", "huge-int", "not-utf8"],
)
def test_unparseable_bodies_are_400(url, raw):
    status, headers, body = request(url, "POST", "/v1/completions", raw, JSON)
    assert_error(status, headers, body, 400)
    assert "not valid JSON" in body["error"]["message"]


def _completion(**fields) -> str:
    return json.dumps({"model": NAME, "prompt": "hi", "max_tokens": 2} | fields)


BAD_COMPLETIONS = {
    "temperature-nan": (_completion().replace('"max_tokens"', '"temperature": NaN, "max_tokens"'), "temperature"),
    "top_p-nan": (_completion().replace('"max_tokens"', '"top_p": NaN, "max_tokens"'), "top_p"),
    "temperature-inf": (_completion().replace('"max_tokens"', '"temperature": 1e400, "max_tokens"'), "temperature"),
    "temperature-high": (_completion(temperature=2.5), "temperature"),
    "temperature-negative": (_completion(temperature=-0.5), "temperature"),
    "temperature-string": (_completion(temperature="1"), "temperature"),
    "temperature-bool": (_completion(temperature=True), "temperature"),
    "top_p-zero": (_completion(top_p=0), "top_p"),
    "n-zero": (_completion(n=0), "n"),
    "n-high": (_completion(n=9), "n"),
    "n-float": (_completion(n=1.5), "n"),
    "max_tokens-zero": (_completion(max_tokens=0), "max_tokens"),
    "max_tokens-context": (_completion(max_tokens=MAX_CONTEXT), None),
    "max_tokens-huge": (_completion(max_tokens=10**30), "max_tokens"),
    "stop-five": (_completion(stop=list("abcde")), "stop"),
    "stop-empty": (_completion(stop=[""]), "stop"),
    "stop-long": (_completion(stop=["x" * (MAX_STOP_CHARS + 1)]), "stop"),
    "stop-number": (_completion(stop=[1]), "stop"),
    "stop-surrogate": (_completion().replace('"max_tokens"', '"stop": "\\udfff", "max_tokens"'), None),
    "seed-huge": (_completion(seed=2**64), "seed"),
    "stream-string": (_completion(stream="yes"), "stream"),
    "prompt-empty": (_completion(prompt=""), None),
    "prompt-surrogate": (_completion().replace('"hi"', '"a\\ud800b"'), None),
    "prompt-ids-empty": (_completion(prompt=[]), None),
    "prompt-ids-vocab": (_completion(prompt=[10**6]), None),
    "prompt-two-strings": (_completion(prompt=["a", "b"]), "prompt"),
    "prompt-too-long": (_completion(prompt="x" * 5000), None),
    "logprobs": (_completion(logprobs=2), None),
    "model-number": (_completion(model=1), "model"),
}


@pytest.mark.parametrize("raw, param", BAD_COMPLETIONS.values(), ids=BAD_COMPLETIONS.keys())
def test_invalid_completion_fields_are_400(url, raw, param):
    status, headers, body = request(url, "POST", "/v1/completions", raw.encode(), JSON)
    assert_error(status, headers, body, 400)
    if param:
        assert body["error"]["param"] == param


def test_prompt_over_the_context_has_openai_code(url):
    status, body = post_json(url, "/v1/completions", _completion(prompt="x" * 5000).encode())
    assert (status, body["error"]["code"]) == (400, "context_length_exceeded")


def _chat(**fields) -> str:
    return json.dumps({"model": NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2} | fields)


BAD_CHATS = {
    "no-messages": _chat(messages=[]),
    "role-injection": _chat(messages=[{"role": "user|>\n<eos", "content": "x"}]),
    "content-null": _chat(messages=[{"role": "user", "content": None}]),
    "content-image": _chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
    "content-surrogate": _chat().replace('"hi"', '"\\ud83d"'),
    "max_completion_tokens": _chat(max_completion_tokens=MAX_CONTEXT),
}


@pytest.mark.parametrize("raw", BAD_CHATS.values(), ids=BAD_CHATS.keys())
def test_invalid_chat_fields_are_400(url, raw):
    assert_error(*request(url, "POST", "/v1/chat/completions", raw.encode(), JSON), 400)


def test_a_tiny_temperature_decodes_greedily(url):
    """temperature 1e-300 overflows the logits; it means greedy (as vLLM), not a 500."""
    status, tiny = post_json(
        url, "/v1/completions", _completion(prompt="Hello", temperature=1e-300, max_tokens=8).encode()
    )
    assert status == 200
    _, greedy = post_json(url, "/v1/completions", _completion(prompt="Hello", temperature=0, max_tokens=8).encode())
    assert tiny["choices"][0]["text"] == greedy["choices"][0]["text"]


def test_a_body_shorter_than_its_length_gets_408(url):
    head = b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    t0 = time.monotonic()
    reply = exchange(url, head + b'{"model":', timeout=10)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b'"request_timeout"' in reply and time.monotonic() - t0 < 8


def test_the_body_of_an_unknown_route_is_not_a_second_request(url):
    smuggled = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"
    head = b"POST /nope HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    reply = exchange(url, head % len(smuggled) + smuggled, timeout=1)
    assert reply.count(b"HTTP/1.1 ") == 1 and reply.startswith(b"HTTP/1.1 404")


class _FailingModel:
    """The tiny model whose generate fails with an internal message that must not reach the client."""

    def __init__(self, model):
        self.config, self.device = model.config, model.device

    def generate(self, *args, **kwargs):
        raise RuntimeError("SECRET /internal/path detail")


def test_internal_errors_hide_their_text(saved_model_dir):
    model, tokenizer = load_model_and_tokenizer(saved_model_dir)
    with serving(_FailingModel(model), tokenizer) as url:
        status, headers, body = request(url, "POST", "/v1/completions", _completion().encode(), JSON)
        assert_error(status, headers, body, 500)
        assert "SECRET" not in json.dumps(body)
        # Streamed, the status line is out before generation starts: the error is an event in the stream.
        req = urllib.request.Request(url + "/v1/completions", _completion(stream=True).encode(), JSON)
        with urllib.request.urlopen(req, timeout=30) as resp:
            events = [line[6:] for line in resp.read().decode().splitlines() if line.startswith("data: ")]
        assert json.loads(events[0])["error"]["type"] == "server_error" and events[-1] == "[DONE]"
        assert "SECRET" not in "".join(events)
        assert request(url, "GET", "/health")[::2] == (200, {"status": "ok"})


@pytest.mark.parametrize("value", [-1.0, 0.0, float("nan"), float("inf")])
def test_a_non_positive_request_timeout_is_refused(value):
    with pytest.raises(ValueError, match="request_timeout"):
        Settings(request_timeout=value)
