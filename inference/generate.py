"""Generate text from a saved B'MOJO model, streaming tokens to the terminal.

    python -m inference.generate --model DIR --prompt "Once upon a time" --max-new-tokens 64
    python -m inference.generate --model DIR --prompt "Hi!" --chat --temperature 0.8 --top-p 0.9 --seed 0

``--temperature 0`` (the default) decodes greedily; a positive temperature samples, optionally restricted
by ``--top-k`` / ``--top-p``. Decoding uses the model's constant-size cache (``BMojoCache``).
"""

from __future__ import annotations

import argparse
import math
import sys

from .loading import DTYPES, ModelLoadError, load_model_and_tokenizer

# torch and transformers are imported after the arguments are parsed (see main): --help answers at once.


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (required options, flags, None)."""

    def _get_help_string(self, action):
        if action.required or action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bmojo-generate", description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter
    )
    parser.add_argument(
        "--model", required=True, metavar="DIR", help="directory saved with save_pretrained (model + tokenizer)"
    )
    parser.add_argument(
        "--prompt", required=True, metavar="TEXT", help="text to continue (or the user message with --chat)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=64, metavar="N", help="tokens to generate at most")
    parser.add_argument("--temperature", type=float, default=0.0, metavar="T", help="0 = greedy")
    parser.add_argument(
        "--top-k", type=int, default=0, metavar="K", help="sample from the k most likely tokens (0 = all)"
    )
    parser.add_argument("--top-p", type=float, default=1.0, metavar="P", help="nucleus sampling mass (1 = off)")
    parser.add_argument(
        "--seed", type=int, default=None, metavar="N", help="random seed of sampling (default: not seeded)"
    )
    parser.add_argument("--chat", action="store_true", help="wrap the prompt with the tokenizer's chat template")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="weights' dtype")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.max_new_tokens < 1:
        parser.error("--max-new-tokens must be >= 1")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        parser.error("--temperature must be a finite number >= 0")
    if args.top_k < 0:
        parser.error("--top-k must be >= 0")
    if not 0 < args.top_p <= 1:  # (NaN fails this too)
        parser.error("--top-p must be in (0, 1]")
    if not args.prompt:
        parser.error("--prompt must not be empty")


def sampling_kwargs(temperature: float, top_k: int, top_p: float) -> dict:
    """``generate`` arguments of a decoding strategy (temperature 0 = greedy)."""
    if temperature == 0:
        return {"do_sample": False, "temperature": None, "top_k": None, "top_p": None}
    return {"do_sample": True, "temperature": temperature, "top_k": top_k or None, "top_p": top_p}


def encode_prompt(tokenizer, prompt: str, chat: bool):
    """The prompt's token ids, (1, length)."""
    if chat:
        if not tokenizer.chat_template:
            raise ModelLoadError("--chat needs a tokenizer with a chat template")
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    return tokenizer(prompt, return_tensors="pt").input_ids


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    print(f"loading {args.model} ...", file=sys.stderr, flush=True)
    import torch
    from transformers import TextStreamer

    try:
        model, tokenizer = load_model_and_tokenizer(args.model, args.dtype)
        input_ids = encode_prompt(tokenizer, args.prompt, args.chat)
    except ModelLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.seed is not None:
        torch.manual_seed(args.seed)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    with torch.inference_mode():
        model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=args.max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            streamer=streamer,
            **sampling_kwargs(args.temperature, args.top_k, args.top_p),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
