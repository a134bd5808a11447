"""A burst of 64 clients at once against a busy worker: every client gets an HTTP answer, the queue takes as
many as it holds and the rest get OpenAI's 503 at once (the listen backlog must not drop connections first)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from inference.loading import load_model_and_tokenizer
from tests.helpers.serve import NAME, serving

CLIENTS = 64
QUEUE = 4


class _BlockingModel:
    """Stands in for the model: ``generate`` waits until released, so the worker stays busy."""

    def __init__(self, model):
        self.config, self.device = model.config, model.device
        self.release = threading.Event()
        self.calls = 0

    def generate(self, input_ids, **kwargs):
        self.calls += 1
        self.release.wait(60)
        return input_ids


def test_a_64_client_burst_gets_queue_slots_or_503(saved_model_dir):
    model, tokenizer = load_model_and_tokenizer(saved_model_dir)
    blocking = _BlockingModel(model)
    body = json.dumps({"model": NAME, "prompt": "hi", "max_tokens": 2})
    with serving(blocking, tokenizer, max_queue=QUEUE) as url:
        parts = urlsplit(url)
        start = threading.Barrier(CLIENTS)
        answered = threading.Semaphore(0)

        def one(_):
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
            start.wait()
            try:
                conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                result = resp.status, resp.getheader("Content-Type"), json.loads(resp.read())
            finally:
                conn.close()
                answered.release()
            return result

        with ThreadPoolExecutor(CLIENTS) as pool:
            futures = [pool.submit(one, i) for i in range(CLIENTS)]
            # All but the queued and the running requests are answered while the worker is still blocked.
            for _ in range(CLIENTS - QUEUE - 1):
                assert answered.acquire(timeout=60)
            blocking.release.set()
            results = [f.result(timeout=60) for f in futures]

    statuses = [status for status, _, _ in results]
    assert set(statuses) <= {200, 503} and QUEUE <= statuses.count(200) <= QUEUE + 1
    busy = [body for status, _, body in results if status == 503]
    assert all(body["error"]["code"] == "server_busy" for body in busy)
    assert all(ctype == "application/json" for _, ctype, _ in results)


def test_a_request_whose_client_left_is_not_generated(saved_model_dir):
    """A waiting request whose client disconnects is dropped from the queue, not run for nobody."""
    model, tokenizer = load_model_and_tokenizer(saved_model_dir)
    blocking = _BlockingModel(model)
    body = json.dumps({"model": NAME, "prompt": "hi", "max_tokens": 2})
    with serving(blocking, tokenizer, max_queue=QUEUE) as url:
        parts = urlsplit(url)
        running = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        running.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        deadline = time.monotonic() + 30
        while blocking.calls == 0 and time.monotonic() < deadline:  # the worker holds the first request
            time.sleep(0.02)
        leaving = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        leaving.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        time.sleep(0.5)
        leaving.close()
        time.sleep(0.5)
        blocking.release.set()
        assert running.getresponse().status == 200
        running.close()
        time.sleep(0.5)
    assert blocking.calls == 1
