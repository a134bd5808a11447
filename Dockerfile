# syntax=docker/dockerfile:1
# B'MOJO on AWS Trainium / Inferentia, from the AWS Neuron PyTorch deep learning containers.
#
#   docker build -t bmojo-serve .                                   # inference image (default)
#   docker build --build-arg IMAGE=training -t bmojo-train .        # training image
#   docker build --build-arg NEURON_SDK=2.26.1 --build-arg TORCH_VERSION=2.8.0 --build-arg PYTHON_TAG=py311 .
#
#   docker run --device=/dev/neuron0 -p 8000:8000 -v /path/to/model:/opt/ml/model bmojo-serve
#   docker run --device=/dev/neuron0 -v $PWD/runs:/opt/bmojo/runs bmojo-train bmojo-train --help
#
# Default base: public.ecr.aws/neuron/pytorch-inference-neuronx:2.8.0-neuronx-py311-sdk2.26.1-ubuntu22.04
# (transformers 5 needs torch >= 2.6: Neuron SDK 2.24 or newer). The base images carry the Neuron runtime,
# torch-neuronx and the compiler; this file adds the bmojo-neuron package and its entry points
# (bmojo-train, bmojo-serve, bmojo-generate, bmojo-export, bmojo-demo, bmojo-nki-lint).
#
# Neuron device stacks (nki_kernels/sdk.py; the SDK's Python packages come from the Neuron package index,
# https://pip.repos.neuron.amazonaws.com - on the public PyPI the same names are placeholders):
#   TorchNeuron (primary, NKI kernels as torch custom ops): Neuron SDK >= 2.33, PyTorch 2.13/2.14
#     (torch-neuronx 2.13.3.0 / 2.14.3.0), Python 3.12-3.14, Trn2/Trn3. Build on a TorchNeuron DLC with
#     --build-arg BASE_IMAGE=<TorchNeuron training DLC of SDK 2.33+> (see the Neuron DLC list).
#   PyTorch/XLA + torch-neuronx (legacy, the default base below): Neuron SDK <= 2.31, PyTorch <= 2.9.
#   Inferentia2 / Trn1 (NeuronCore-v2): current NKI does not target them; serving there runs torch ops only.
ARG IMAGE=inference
ARG TORCH_VERSION=2.8.0
ARG NEURON_SDK=2.26.1
ARG PYTHON_TAG=py311
ARG BASE_OS=ubuntu22.04
ARG BASE_IMAGE=public.ecr.aws/neuron/pytorch-${IMAGE}-neuronx:${TORCH_VERSION}-neuronx-${PYTHON_TAG}-sdk${NEURON_SDK}-${BASE_OS}
FROM ${BASE_IMAGE}

ARG IMAGE
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV BMOJO_IMAGE=${IMAGE} \
    MODEL_DIR=/opt/ml/model \
    PORT=8000 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/bmojo
COPY pyproject.toml README.md ./
COPY bmojo_neuron ./bmojo_neuron
COPY nki_kernels ./nki_kernels
COPY training ./training
COPY inference ./inference

# Keep the image's Neuron builds of torch/torch-xla: pin pip to the installed versions while it installs
# the package and its pure-Python dependencies. Then check that the entry points run.
RUN { python -m pip freeze | grep -iE '^(torch|torch-neuronx|torch-xla|libneuronxla|nki|neuronx-cc)==' || true; } > /tmp/neuron-pins.txt \
    && python -m pip install --constraint /tmp/neuron-pins.txt . \
    && rm /tmp/neuron-pins.txt \
    && bmojo-serve --help > /dev/null \
    && bmojo-generate --help > /dev/null \
    && bmojo-export --help > /dev/null \
    && python -c "import bmojo_neuron, inference, training"

EXPOSE 8000
# Inference image: serve $MODEL_DIR on $PORT. Training image: print the trainer's options
# (run `bmojo-train ...` with your arguments instead).
CMD ["/bin/bash", "-c", "if [ \"$BMOJO_IMAGE\" = training ]; then exec bmojo-train --help; else exec bmojo-serve --model \"$MODEL_DIR\" --host 0.0.0.0 --port \"$PORT\"; fi"]
