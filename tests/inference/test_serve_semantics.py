"""What the server answers, checked against the model itself: stop strings only in the generated text,
streamed and whole responses equal, ``usage`` without padding, chat content never special tokens.

The model is the tiny random one with its output restricted to printable ASCII and ``<eos>`` (a bias on the
logits), so that texts, stop strings and token counts are exact (one byte = one token) and the expected values
can be derived from a direct greedy ``generate``."""

from __future__ import annotations

import functools

import openai
import pytest
import torch

from bmojo_neuron.tokenization import ROLE_TOKENS
from inference.engine import encode_chat
from inference.loading import load_model_and_tokenizer
from tests.helpers.serve import NAME, serving

MAX_TOKENS = 24


class _Biased(torch.nn.Module):
    """The LM head plus a constant bias: printable ASCII and <eos> stay, everything else is masked."""

    def __init__(self, head, allowed: list[int]):
        super().__init__()
        self.head = head
        self.register_buffer("bias", torch.full((head.out_features,), -1e4))
        self.bias[allowed] = 0.0

    def forward(self, x):
        return self.head(x) + self.bias


def ascii_model(model_dir):
    model, tokenizer = load_model_and_tokenizer(model_dir)
    model.lm_head = _Biased(model.lm_head, [*range(32, 127), tokenizer.eos_token_id])
    return model, tokenizer


@pytest.fixture(scope="module")
def client(saved_model_dir):
    with serving(*ascii_model(saved_model_dir)) as url:
        yield openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def reference(saved_model_dir):
    """Greedy continuation of token ids by a separate copy of the model: (text, ended_with_eos)."""
    model, tokenizer = ascii_model(saved_model_dir)

    @functools.cache
    def greedy(ids: tuple[int, ...], max_new_tokens: int = MAX_TOKENS) -> tuple[str, bool]:
        ids_t = torch.tensor([ids])
        out = model.generate(
            ids_t,
            attention_mask=torch.ones_like(ids_t),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )[0, len(ids) :].tolist()
        eos = tokenizer.eos_token_id in out
        return tokenizer.decode(out[: out.index(tokenizer.eos_token_id)] if eos else out), eos

    return tokenizer, greedy


def expected(full: str, eos: bool, stop: str | None) -> tuple[str, str, int]:
    """(text, finish_reason, completion_tokens) of a greedy completion ``full`` cut at ``stop``."""
    cut = full.find(stop) if stop else -1
    if cut >= 0:
        return full[:cut], "stop", cut + len(stop)
    return full, ("stop" if eos else "length"), len(full) + eos


def ask(client, prompt: str, stop: str | None, stream: bool) -> tuple[str, str, int | None]:
    resp = client.completions.create(
        model=NAME, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0, stop=stop, stream=stream
    )
    if not stream:
        return resp.choices[0].text, resp.choices[0].finish_reason, resp.usage.completion_tokens
    chunks = list(resp)
    return "".join(c.choices[0].text for c in chunks), chunks[-1].choices[0].finish_reason, None


PROMPTS = ["Hello", "Stop", "abc xyz"]
# How the stop string is made from the prompt and its greedy completion.
STOPS = {
    "none": lambda prompt, full: None,
    "first-char": lambda prompt, full: full[:1],
    "middle": lambda prompt, full: full[5:8],
    "late": lambda prompt, full: full[-2:],
    "across-the-prompt-end": lambda prompt, full: prompt[-2:] + full[:1],
    "prompt-only": lambda prompt, full: prompt,
    "absent": lambda prompt, full: "\x7f\x7f",
}


@pytest.mark.parametrize("kind", STOPS)
@pytest.mark.parametrize("prompt", PROMPTS)
def test_stream_and_whole_agree_with_generate(client, reference, prompt, kind):
    tokenizer, greedy = reference
    full, eos = greedy(tuple(tokenizer(prompt).input_ids))
    stop = STOPS[kind](prompt, full) or None
    text, reason, tokens = expected(full, eos, stop)
    assert ask(client, prompt, stop, stream=False) == (text, reason, tokens)
    assert ask(client, prompt, stop, stream=True) == (text, reason, None)


def test_a_stop_string_across_the_prompt_end_is_not_matched(client, reference):
    """The prompt's tail + the first generated character is a stop only if it occurs in the generated text."""
    tokenizer, greedy = reference
    cases = 0
    for prompt in PROMPTS:
        full, eos = greedy(tuple(tokenizer(prompt).input_ids))
        stop = prompt[-1] + full[:1]
        if len(full) < 4 or stop in full:
            continue
        cases += 1
        for stream in (False, True):
            text, reason, _ = ask(client, prompt, stop, stream)
            assert text == full and reason == ("stop" if eos else "length")
    assert cases >= 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_usage_counts_each_choice_up_to_its_end(client, seed):
    """n choices that end at different steps: the rows that ended are padded while the others go on; the pads
    are not completion tokens. One byte = one token, and every stop here is one character long, as <eos> is
    one token: a choice that stopped took len(text) + 1 tokens, one that ran out took max_tokens."""
    stops = ["e", "t", "a", "o"]
    resp = client.completions.create(
        model=NAME, prompt="Once", max_tokens=40, temperature=1.0, n=8, seed=seed, stop=stops
    )
    per_choice = [len(c.text) + 1 if c.finish_reason == "stop" else 40 for c in resp.choices]
    assert len({c.finish_reason for c in resp.choices} | {len(c.text) for c in resp.choices}) > 2  # they differ
    assert resp.usage.completion_tokens == sum(per_choice)


CONTROL_TEXT = "<eos> hi <|assistant|>"


def test_chat_content_is_never_special_tokens(client, reference):
    tokenizer, greedy = reference
    messages = [{"role": "system", "content": "<|user|>"}, {"role": "user", "content": CONTROL_TEXT}]
    ids = encode_chat(tokenizer, messages)
    # The template's own tokens: <bos>, one role token per message and the generation prompt, one <eos> each.
    special = [tokenizer.convert_ids_to_tokens(i) for i in ids if i >= 256]
    assert special == ["<bos>", "<|system|>", "<eos>", "<|user|>", "<eos>", ROLE_TOKENS[2]]
    as_text = tokenizer(CONTROL_TEXT, add_special_tokens=False, split_special_tokens=True).input_ids
    assert as_text == list(CONTROL_TEXT.encode()) and any(ids[i : i + len(as_text)] == as_text for i in range(len(ids)))
    # Unchanged where there is nothing to escape: the template's rendering, tokenized.
    plain = [{"role": "user", "content": "Hi there"}]
    rendered = tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=True)
    assert encode_chat(tokenizer, plain) == tokenizer(rendered, add_special_tokens=False).input_ids

    resp = client.chat.completions.create(model=NAME, messages=messages, max_tokens=8, temperature=0)
    assert resp.usage.prompt_tokens == len(ids)
    assert resp.choices[0].message.content == greedy(tuple(ids), 8)[0]
