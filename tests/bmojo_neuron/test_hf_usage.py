"""What a HuggingFace user meets first: the `cache` argument, refusals instead of silent errors, warnings from
our own calls, and loading a saved run in a process that never imported bmojo_neuron."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import transformers

from bmojo_neuron.cache import BMojoCache
from bmojo_neuron.testing import HYBRID, tiny_model
from tests.helpers.cache import SHORT_WINDOWS

PAD = 256


def test_unknown_keyword_argument_raises_type_error():
    model = tiny_model(HYBRID, **SHORT_WINDOWS)
    ids = torch.randint(0, 256, (1, 5))
    with pytest.raises(TypeError, match="state"):
        model(ids, state=BMojoCache(model.config))  # e.g. a future rename of the cache argument
    with pytest.raises(TypeError, match="not_an_argument"):
        model.model(ids, not_an_argument=1)


def test_old_cache_name_still_works_with_a_deprecation_warning():
    model = tiny_model(HYBRID, **SHORT_WINDOWS)
    ids = torch.randint(0, 256, (1, 9))
    expected = model(ids[:, 5:], cache=_prefilled(model, ids[:, :5])).logits
    with pytest.warns(FutureWarning, match="past_key_values"):
        old = model(ids[:, 5:], past_key_values=_prefilled(model, ids[:, :5]), use_cache=True).logits
    torch.testing.assert_close(old, expected, rtol=0, atol=0)


def _prefilled(model, ids) -> BMojoCache:
    cache = BMojoCache(model.config)
    model(ids, cache=cache, use_cache=True)
    return cache


def test_decode_step_without_its_cache_is_refused():
    """A mask that covers past tokens with no cache to hold them used to decode from an empty state."""
    model = tiny_model(HYBRID, **SHORT_WINDOWS)
    ids = torch.randint(0, 256, (2, 7))
    with pytest.raises(RuntimeError, match=f"transformers {transformers.__version__}"):
        model(ids[:, -1:], attention_mask=torch.ones(2, 7, dtype=torch.long))


def test_generate_that_loses_its_cache_is_refused(monkeypatch):
    """Stand-in for a transformers release that passes the cache under a new name: the decode steps arrive
    without it, and generate must stop with an error instead of returning wrong tokens."""
    model = tiny_model(HYBRID, **SHORT_WINDOWS)
    original = type(model)._update_model_kwargs_for_generation

    def drop_cache(self, outputs, model_kwargs, *args, **kwargs):
        model_kwargs = original(self, outputs, model_kwargs, *args, **kwargs)
        model_kwargs.pop("cache", None)
        return model_kwargs

    monkeypatch.setattr(type(model), "_update_model_kwargs_for_generation", drop_cache)
    ids = torch.randint(0, 256, (1, 6))
    with pytest.raises(RuntimeError, match=f"without a cache.*transformers {transformers.__version__}"):
        model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=PAD, eos_token_id=None)


def test_generate_emits_no_deprecation_warnings():
    model = tiny_model(HYBRID, **SHORT_WINDOWS)
    ids = torch.randint(0, 256, (2, 6))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False, pad_token_id=PAD)
    deprecations = [w for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert not deprecations, [str(w.message)[:200] for w in deprecations]


def _run_fresh(code: str, cwd) -> subprocess.CompletedProcess:
    """``code`` in a new interpreter started outside the repository, so only the installed package is found."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_saved_run_loads_without_importing_the_package(saved_model_dir, tmp_path):
    """transformers' custom-code route (`auto_map`): AutoModelForCausalLM and pipeline in a fresh process."""
    ids = [72, 101, 108, 108, 111]
    with torch.no_grad():
        expected = (
            transformers.AutoModelForCausalLM.from_pretrained(saved_model_dir)
            .generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False, pad_token_id=PAD, eos_token_id=None)[0]
            .tolist()
        )
    out = _run_fresh(
        f"""
        import sys, torch
        from transformers import AutoModelForCausalLM, pipeline
        model = AutoModelForCausalLM.from_pretrained({str(saved_model_dir)!r}, trust_remote_code=True)
        tokens = model.generate(torch.tensor([{ids}]), max_new_tokens=6, do_sample=False, pad_token_id={PAD},
                                eos_token_id=None)[0].tolist()
        generator = pipeline("text-generation", model={str(saved_model_dir)!r}, trust_remote_code=True)
        text = generator("Hello", max_new_tokens=4, do_sample=False)[0]["generated_text"]
        print(type(model).__name__, tokens, text.startswith("Hello"))
        """,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == f"BMojoForCausalLM {expected} True"


def test_loading_without_trust_remote_code_says_what_to_do(saved_model_dir, tmp_path):
    out = _run_fresh(
        f"""
        from transformers import AutoModelForCausalLM
        AutoModelForCausalLM.from_pretrained({str(saved_model_dir)!r})
        """,
        cwd=tmp_path,
    )
    assert out.returncode != 0
    assert "trust_remote_code=True" in out.stderr
