"""bmojo-neuron: B'MOJO language models (fading + eidetic memory) for Trainium, Inferentia and CPU.

Importing this package registers ``model_type="bmojo"`` with ``AutoConfig``, ``AutoModel`` and
``AutoModelForCausalLM``.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_bmojo import LAYER_TYPES, BMojoConfig, expand_layer_pattern
from .modeling_bmojo import BMojoForCausalLM, BMojoModel, BMojoPreTrainedModel

__version__ = "0.1.0"

AutoConfig.register("bmojo", BMojoConfig, exist_ok=True)
AutoModel.register(BMojoConfig, BMojoModel, exist_ok=True)
AutoModelForCausalLM.register(BMojoConfig, BMojoForCausalLM, exist_ok=True)

__all__ = [
    "LAYER_TYPES",
    "BMojoConfig",
    "BMojoForCausalLM",
    "BMojoModel",
    "BMojoPreTrainedModel",
    "expand_layer_pattern",
]
