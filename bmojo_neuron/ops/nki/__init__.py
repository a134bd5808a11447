"""The NKI kernels of :mod:`nki_kernels` as the dispatcher's ``sim`` and ``nki`` implementations.

- :mod:`.sim`: the kernels on the CPU (interpreter, or ``nki.simulate`` with the SDK): ``<op>_sim``;
- :mod:`.device`: the kernels on a Neuron device (TorchNeuron or PyTorch/XLA stack): ``<op>_nki``.

Neither is imported here: :mod:`..dispatch` imports one when its mode is first asked for, since each needs
optional dependencies (NumPy interpreter, Neuron SDK).
"""
