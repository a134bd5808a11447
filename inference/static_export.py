"""Static-shape graphs of a B'MOJO model: prefill at bucketed lengths and a one-token decode step.

The command line is :mod:`inference.export` (``python -m inference.export`` / ``bmojo-export``)::

    python -m inference.export --model DIR --out OUT --target cpu     # torch.export, saved as .pt2
    python -m inference.export --model DIR --out OUT --target neuron  # torch_neuronx.trace (Neuron host only)

:class:`StaticBMojo` is the one wrapper both targets trace. Its state is the :class:`BMojoCache` as a flat
list of tensors of fixed shapes, so the decode graph is compiled once and reused for every token:

- ``prefill(input_ids (B, L), attention_mask (B, L)) -> (logits (B, vocab), *state)`` for each bucket ``L``;
  prompts are left-padded to the next bucket;
- ``decode(input_ids (B, 1), *state) -> (logits (B, vocab), *state)``.

``OUT`` receives ``prefill_<L>.<ext>``, ``decode.<ext>``, ``manifest.json`` (buckets, state names, shapes and
dtypes) and the tokenizer. :class:`ExportedBMojo` loads a CPU export and generates greedily with it.

Neuron: ``--target neuron`` needs ``torch-neuronx`` (the AWS Neuron SDK, on trn1/trn2/inf2 hosts; its
packages on the public index are placeholders). Each graph is compiled by ``torch_neuronx.trace`` and
saved with ``torch.jit.save``; load them with ``torch.jit.load`` on the Neuron host. On the device the ops
dispatcher picks the NKI kernels. This path is not runnable on the development machines.

Models with ``attention`` (unbounded) layers are not exported: their key/value cache grows with the context,
which a static decode graph cannot hold. Every other layer type has a constant-size state.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from bmojo_neuron.cache import BMojoCache

DEFAULT_BUCKETS = (64, 128, 256, 512)


class StaticBMojo(nn.Module):
    """Static-shape entry points of a ``BMojoForCausalLM`` (see the module docstring)."""

    def __init__(self, model, batch_size: int = 1):
        super().__init__()
        if not BMojoCache(model.config).constant_size:
            raise ValueError(
                "models with 'attention' layers have a growing key/value cache and cannot be exported with static "
                "shapes; use sliding_attention, ssm, bmojo_f or bmojo layers"
            )
        self.model = model
        self.batch_size = batch_size
        template = self.empty_cache()
        self.layer_names = [list(layer.tensors) for layer in template.layers]
        self.state_names = template.state_names()
        self.state_specs = [(tuple(t.shape), str(t.dtype).removeprefix("torch.")) for t in template.to_tensors()]

    def empty_cache(self) -> BMojoCache:
        cache = BMojoCache(self.model.config)
        cache.allocate(self.batch_size, self.model.dtype, self.model.device)
        return cache

    def cache_from(self, state) -> BMojoCache:
        """A cache whose tensors are ``state`` (order of ``state_names``)."""
        cache = BMojoCache(self.model.config)
        it = iter(state)
        cache.positions = next(it)
        for layer, names in zip(cache.layers, self.layer_names):
            layer.tensors = {name: next(it) for name in names}
            layer.dtype = self.model.dtype
        return cache

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        cache = self.empty_cache()
        out = self.model(input_ids, attention_mask=attention_mask, cache=cache, use_cache=True, logits_to_keep=1)
        return (out.logits[:, -1], *cache.to_tensors())

    def decode(self, input_ids: torch.Tensor, *state: torch.Tensor):
        cache = self.cache_from(state)
        out = self.model(input_ids, cache=cache, use_cache=True)
        return (out.logits[:, -1], *cache.to_tensors())

    def example_prefill(self, length: int):
        ids = torch.zeros(self.batch_size, length, dtype=torch.long, device=self.model.device)
        return ids, torch.ones_like(ids)

    def example_decode(self):
        ids = torch.zeros(self.batch_size, 1, dtype=torch.long, device=self.model.device)
        return (ids, *self.empty_cache().to_tensors())


class _Prefill(nn.Module):
    def __init__(self, static: StaticBMojo):
        super().__init__()
        self.static = static

    def forward(self, input_ids, attention_mask):
        return self.static.prefill(input_ids, attention_mask)


class _Decode(nn.Module):
    def __init__(self, static: StaticBMojo):
        super().__init__()
        self.static = static

    def forward(self, input_ids, *state):
        return self.static.decode(input_ids, *state)


def export(
    model, tokenizer, out_dir: str | Path, target: str = "cpu", buckets=DEFAULT_BUCKETS, batch_size: int = 1
) -> Path:
    """Trace prefill (one graph per bucket) and decode, save them with a manifest and the tokenizer.

    A failure removes ``out_dir`` if this call created it (no empty or half-written export is left).
    """
    if target not in ("cpu", "neuron"):
        raise ValueError(f"target must be 'cpu' or 'neuron', got {target!r}")
    buckets = sorted(set(int(b) for b in buckets))
    if not buckets or buckets[0] < 1:
        raise ValueError(f"buckets must be positive lengths, got {buckets}")
    out = Path(out_dir)
    created = not out.exists()
    try:
        return _export(model, tokenizer, out, target, buckets, batch_size)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _export(model, tokenizer, out: Path, target: str, buckets: list[int], batch_size: int) -> Path:
    static = StaticBMojo(model.eval(), batch_size)
    trace = _neuron_trace if target == "neuron" else _torch_export
    ext = "pt" if target == "neuron" else "pt2"
    if target == "neuron":
        _import_torch_neuronx()  # before creating anything: the usual failure off a Neuron host
    out.mkdir(parents=True, exist_ok=True)
    graphs = [(f"prefill_{length}", _Prefill(static), static.example_prefill(length)) for length in buckets]
    graphs.append(("decode", _Decode(static), static.example_decode()))
    with torch.no_grad():
        for name, module, example in tqdm(graphs, desc=f"tracing for {target}", unit="graph"):
            trace(module, example, out / f"{name}.{ext}")
    manifest = {
        "target": target,
        "format": ext,
        "buckets": buckets,
        "batch_size": batch_size,
        "vocab_size": model.config.vocab_size,
        "dtype": str(model.dtype).removeprefix("torch."),
        "state": [
            {"name": n, "shape": list(s), "dtype": d} for n, (s, d) in zip(static.state_names, static.state_specs)
        ],
        "eos_token_id": tokenizer.eos_token_id if tokenizer is not None else None,
        "pad_token_id": tokenizer.pad_token_id if tokenizer is not None else None,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    model.config.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def _torch_export(module: nn.Module, example: tuple, path: Path) -> None:
    torch.export.save(torch.export.export(module, example), path)


def _import_torch_neuronx():
    try:
        import torch_neuronx  # noqa: PLC0415 - optional, only on Neuron hosts
    except ImportError as err:
        raise RuntimeError(
            "--target neuron needs torch-neuronx (AWS Neuron SDK), available on trn1/trn2/inf2 hosts from the "
            "Neuron pip index (https://pip.repos.neuron.amazonaws.com); use --target cpu here"
        ) from err
    return torch_neuronx


def _neuron_trace(module: nn.Module, example: tuple, path: Path) -> None:
    torch.jit.save(_import_torch_neuronx().trace(module, example), path)


class ExportedBMojo:
    """Runs a ``--target cpu`` export: greedy generation with the saved prefill and decode graphs."""

    def __init__(self, export_dir: str | Path):
        path = Path(export_dir)
        manifest_file = path / "manifest.json"
        if not manifest_file.is_file():
            raise FileNotFoundError(f"{path} has no manifest.json; create it with python -m inference.export")
        self.manifest = json.loads(manifest_file.read_text())
        if self.manifest["target"] != "cpu":
            raise ValueError("this runner loads --target cpu exports; load Neuron graphs with torch.jit.load")
        self.buckets = self.manifest["buckets"]
        self.prefills = {L: torch.export.load(path / f"prefill_{L}.pt2").module() for L in self.buckets}
        self.decode_step = torch.export.load(path / "decode.pt2").module()

    def prefill(self, input_ids: torch.Tensor):
        """input_ids: (batch, P) unpadded prompt -> (logits (batch, vocab), state)."""
        length = input_ids.shape[1]
        bucket = next((b for b in self.buckets if b >= length), self.buckets[-1])
        head = input_ids[:, :bucket]
        pad = bucket - head.shape[1]
        ids = torch.nn.functional.pad(head, (pad, 0), value=self.manifest["pad_token_id"] or 0)
        mask = torch.nn.functional.pad(torch.ones_like(head), (pad, 0))
        logits, *state = self.prefills[bucket](ids, mask)
        for i in range(bucket, length):  # a prompt longer than the largest bucket: feed the rest step by step
            logits, *state = self.decode_step(input_ids[:, i : i + 1], *state)
        return logits, state

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Greedy continuation: (batch, P) -> (batch, max_new_tokens) token ids."""
        logits, state = self.prefill(input_ids)
        tokens = []
        for _ in range(max_new_tokens):
            token = logits.argmax(-1, keepdim=True)
            tokens.append(token)
            logits, *state = self.decode_step(token, *state)
        return torch.cat(tokens, 1)


__all__ = ["DEFAULT_BUCKETS", "ExportedBMojo", "StaticBMojo", "export"]
