"""Saved runs load through transformers' custom-code mechanism, with no ``import bmojo_neuron`` first.

transformers looks up ``model_type="bmojo"`` only among the architectures registered in the running
process. For any other process, ``save_pretrained`` writes an ``auto_map`` into ``config.json`` and a
one-line module beside it that imports the classes from the installed package, so that

    AutoModelForCausalLM.from_pretrained(run_dir, trust_remote_code=True)
    pipeline("text-generation", model=run_dir, trust_remote_code=True)

work as for any custom architecture on the Hub. The module holds no model code: the installed
``bmojo-neuron`` is the code that runs, so a run folder never carries a stale copy of the model.
"""

from __future__ import annotations

from pathlib import Path

MODULE_NAME = "bmojo_auto"

AUTO_MAP = {
    "AutoConfig": f"{MODULE_NAME}.BMojoConfig",
    "AutoModel": f"{MODULE_NAME}.BMojoModel",
    "AutoModelForCausalLM": f"{MODULE_NAME}.BMojoForCausalLM",
}

_MODULE_SOURCE = '''"""Written by bmojo-neuron's save_pretrained: loads this run with ``trust_remote_code=True``.

The model's code is the installed package (``pip install bmojo-neuron``); this file only points at it.
"""

from bmojo_neuron import BMojoConfig, BMojoForCausalLM, BMojoModel

__all__ = ["BMojoConfig", "BMojoForCausalLM", "BMojoModel"]
'''


def write_auto_module(save_directory: str | Path) -> Path:
    """Write the module that ``AUTO_MAP`` names into ``save_directory``; returns its path."""
    path = Path(save_directory) / f"{MODULE_NAME}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_MODULE_SOURCE)
    return path
