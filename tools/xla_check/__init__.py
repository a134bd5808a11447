"""The gate for the Trainium path: what a PyTorch/XLA (Neuron) step must satisfy, checkable on a CPU.

- :mod:`.steps`: the tiny hybrid model, its batches, and the training and decode steps under test;
- :mod:`.host_sync`: a dispatch mode that raises on any op that reads tensor values on the host (pure
  torch, used by the main test suite);
- ``python -m tools.xla_check``: runs the steps on an XLA device and checks the XLA metrics
  (needs torch-xla; ``make xla-check`` builds its venv).

It checks ``training/`` and ``inference/`` (the decode step is the export's) together, so it lives outside
both, in the repository's tools: run from a checkout, not installed.
"""
