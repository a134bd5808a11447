"""Inference for B'MOJO models: ``generate`` (CLI), ``serve`` (OpenAI-compatible HTTP server), ``export``
(static-shape wrapper for torch.export and AWS Neuron)."""
