"""The project's byte-level tokenizer: needs no download, decodes any UTF-8 text exactly.

Token ids:

==========  ===============================================================
0 .. 255    the bytes 0x00 .. 0xFF (id == byte value)
256         ``<pad>``
257         ``<bos>``
258         ``<eos>`` (ends a document and an assistant turn)
259         ``<unk>`` (never produced by encoding: every byte has its id)
260 .. 262  ``<|system|>``, ``<|user|>``, ``<|assistant|>`` (chat roles)
==========  ===============================================================

Bytes come first so that a byte's id is its value; specials follow. The chat template writes each
message as ``<|role|>\\n{content}<eos>\\n`` after one ``<bos>``; a role without a special token
(``tool`` ...) is spelt out in bytes, so any role works.

Internally this is the GPT-2 byte-level scheme (each byte is mapped to a printable character, and a
BPE model with no merges maps each character to one id), built with the ``tokenizers`` library and
wrapped in :class:`transformers.PreTrainedTokenizerFast`, so ``save_pretrained`` /
``AutoTokenizer.from_pretrained`` and ``apply_chat_template`` work as for any HF tokenizer.
"""

from __future__ import annotations

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

NUM_BYTES = 256
PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN = "<pad>", "<bos>", "<eos>", "<unk>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, *ROLE_TOKENS)

# Jinja template rendered by `apply_chat_template`. `<|{{ role }}|>` becomes the role's special token when
# one exists (the tokenizer matches added tokens in the text) and plain bytes otherwise.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(NUM_BYTES):
        if b in printable:
            chars[b] = chr(b)
        else:  # non-printable bytes are moved above 255 so every byte gets a visible character
            chars[b] = chr(NUM_BYTES + extra)
            extra += 1
    return chars


def byte_level_tokenizer(model_max_length: int = 1_000_000) -> PreTrainedTokenizerFast:
    """Build the byte-level tokenizer (263 tokens, ids documented in the module docstring)."""
    vocab = {char: byte for byte, char in _bytes_to_unicode().items()}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    # No regex split: with no merges, splitting would not change the ids, only cost time.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    # Register the specials here, in order, so their ids are fixed (the wrapper would add them in its own order).
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        additional_special_tokens=list(ROLE_TOKENS),
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        # Left padding: a batch of prompts for a causal model must end where generation starts (saved with the
        # tokenizer, so batched `generate` does not warn about right padding).
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    # The id table above is a contract (the model's vocab_size and inference rely on it).
    assert ids == list(range(NUM_BYTES, NUM_BYTES + len(SPECIAL_TOKENS))), ids
    return tokenizer


__all__ = ["byte_level_tokenizer", "CHAT_TEMPLATE", "SPECIAL_TOKENS", "NUM_BYTES"]
