"""The byte-level tokenizer: exact round trip, fixed ids, chat template, save/load."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from bmojo_neuron.tokenization import NUM_BYTES, SPECIAL_TOKENS, byte_level_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return byte_level_tokenizer()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain ascii",
        "Héllo wörld, 日本語, emoji 🤖🏳️‍🌈",
        "\x00\x01\x7f control\tand\nnewlines\r\n",
        "  leading and trailing  ",
    ],
)
def test_exact_round_trip_and_byte_ids(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == list(text.encode("utf-8")), "a byte's id must be its value"
    assert tokenizer.decode(ids) == text


def test_special_token_ids_are_fixed(tokenizer):
    assert len(tokenizer) == NUM_BYTES + len(SPECIAL_TOKENS)
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (
        256,
        257,
        258,
        259,
    )
    assert tokenizer.convert_tokens_to_ids(["<|system|>", "<|user|>", "<|assistant|>"]) == [260, 261, 262]


def test_chat_template(tokenizer):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<bos><|user|>\nHi<eos>\n<|assistant|>\nHello<eos>\n<|assistant|>\n"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[:2] == [257, 261] and ids[-2:] == [262, 10]


def test_save_and_autotokenizer_round_trip(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "round trip ✓ <eos>"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.chat_template == tokenizer.chat_template
    assert loaded.eos_token_id == tokenizer.eos_token_id
