"""The OpenAI-compatible server, driven by the ``openai`` client over 127.0.0.1."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import torch

from inference.loading import load_model_and_tokenizer
from tests.helpers.serve import MAX_CONTEXT, NAME, post_json, request, serving


@pytest.fixture(scope="module")
def url(saved_model_dir):
    model, tokenizer = load_model_and_tokenizer(saved_model_dir)
    with serving(model, tokenizer) as url:
        yield url


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def reference(saved_model_dir):
    """A separate copy of the model, for the expected outputs."""
    model, tokenizer = load_model_and_tokenizer(saved_model_dir)

    def greedy(ids, max_new_tokens):
        ids = torch.tensor([ids])
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)

    return tokenizer, greedy


def test_health_and_models(url, client):
    assert request(url, "GET", "/health")[::2] == (200, {"status": "ok"})
    assert [m.id for m in client.models.list().data] == [NAME]


def test_completion_matches_generate(client, reference):
    tokenizer, greedy = reference
    resp = client.completions.create(model=NAME, prompt="Hello", max_tokens=12, temperature=0)
    expected = greedy(tokenizer("Hello").input_ids, 12)
    assert resp.choices[0].text == expected
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert resp.usage.prompt_tokens == len(tokenizer("Hello").input_ids)
    assert 1 <= resp.usage.completion_tokens <= 12


def test_streaming_completion_equals_the_whole(client):
    whole = client.completions.create(model=NAME, prompt="Stream me", max_tokens=10, temperature=0)
    chunks = list(client.completions.create(model=NAME, prompt="Stream me", max_tokens=10, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_chat_completion_and_stream(client, reference):
    tokenizer, greedy = reference
    messages = [{"role": "user", "content": "Hi there"}]
    resp = client.chat.completions.create(model=NAME, messages=messages, max_tokens=8, temperature=0)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert resp.choices[0].message.content == greedy(tokenizer(text, add_special_tokens=False).input_ids, 8)
    assert resp.choices[0].message.role == "assistant"
    chunks = list(
        client.chat.completions.create(model=NAME, messages=messages, max_tokens=8, temperature=0, stream=True)
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == resp.choices[0].message.content


def test_sampling_n_and_seed(client):
    kwargs = dict(model=NAME, prompt="abc", max_tokens=8, temperature=1.0, top_p=0.95, n=3, seed=7)
    first = client.completions.create(**kwargs)
    assert sorted(c.index for c in first.choices) == [0, 1, 2]
    again = client.completions.create(**kwargs)
    assert [c.text for c in first.choices] == [c.text for c in again.choices]


@pytest.mark.parametrize("stream", [False, True])
def test_stop_string_cuts_the_text(client, stream):
    full = client.completions.create(model=NAME, prompt="Stop", max_tokens=16, temperature=0).choices[0].text
    assert len(full) >= 3
    stop = full[2:4] if len(full) >= 4 else full[2:]
    cut = full.find(stop)
    resp = client.completions.create(
        model=NAME, prompt="Stop", max_tokens=16, temperature=0, stop=[stop], stream=stream
    )
    if stream:
        chunks = list(resp)
        text, reason = "".join(c.choices[0].text for c in chunks), chunks[-1].choices[0].finish_reason
    else:
        text, reason = resp.choices[0].text, resp.choices[0].finish_reason
    assert (text, reason) == (full[:cut], "stop")


def test_errors_are_json_with_4xx(url, client):
    status, body = post_json(url, "/v1/completions", b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    with pytest.raises(openai.NotFoundError) as err:
        client.completions.create(model="gpt-4", prompt="x", max_tokens=2)
    assert err.value.body["code"] == "model_not_found"
    for bad in [
        dict(temperature=3.0),
        dict(top_p=0),
        dict(n=0),
        dict(max_tokens=0),
        dict(max_tokens="3"),
        dict(stop=[""]),
        dict(logprobs=2),
    ]:
        with pytest.raises(openai.BadRequestError):
            client.completions.create(model=NAME, prompt="x", **{"max_tokens": 2, **bad})
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=NAME, prompt="x" * 60, max_tokens=10)
    assert err.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=NAME, messages=[], max_tokens=2)
    assert request(url, "GET", "/nope")[0] == 404
    assert request(url, "GET", "/v1/completions")[0] == 405
    status, body = post_json(url, "/v1/completions", b"[1, 2]")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"


def test_load_200_requests_8_concurrent(client):
    def one(i):
        if i % 3 == 0:
            r = client.chat.completions.create(
                model=NAME, messages=[{"role": "user", "content": f"q{i}"}], max_tokens=4, temperature=0.7, seed=i
            )
            return r.choices[0].message.content is not None
        if i % 3 == 1:
            chunks = list(client.completions.create(model=NAME, prompt=f"p{i}", max_tokens=4, stream=True))
            return chunks[-1].choices[0].finish_reason is not None
        return client.completions.create(model=NAME, prompt=f"p{i}", max_tokens=4).choices[0].text is not None

    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(200), timeout=120))
    assert results == [True] * 200
    assert time.monotonic() - t0 < 120


class _BlockingModel:
    """Stands in for the model: ``generate`` waits until released."""

    def __init__(self):
        self.release = threading.Event()
        self.device = torch.device("cpu")

    def generate(self, input_ids, **kwargs):
        self.release.wait(30)
        return input_ids


def test_full_queue_answers_503(saved_model_dir):
    from inference.engine import Engine, EngineBusy, Job, SamplingParams

    _, tokenizer = load_model_and_tokenizer(saved_model_dir)
    model = _BlockingModel()
    engine = Engine(model, tokenizer, max_context=64, max_queue=1)
    try:
        running = engine.submit(Job("a", SamplingParams(max_new_tokens=1)))
        assert running.events.get(timeout=10)[0] == "start"  # the worker holds it; the queue is empty again
        engine.submit(Job("b", SamplingParams(max_new_tokens=1)))
        with pytest.raises(EngineBusy):
            engine.submit(Job("c", SamplingParams(max_new_tokens=1)))
    finally:
        model.release.set()
        engine.close()


def test_serve_main_rejects_a_bad_model_dir(tmp_path, capsys):
    from inference.serve import main

    assert main(["--model", str(tmp_path / "missing"), "--port", "0"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_chat_without_max_tokens_fills_the_context(client):
    """The default of 256 tokens does not fit in a 64-token context: it is shortened, not refused."""
    messages = [{"role": "user", "content": "Hi"}]
    resp = client.chat.completions.create(model=NAME, messages=messages, temperature=0)
    assert resp.usage.total_tokens <= MAX_CONTEXT
    assert resp.choices[0].finish_reason == "stop" or resp.usage.total_tokens == MAX_CONTEXT
