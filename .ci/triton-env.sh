#!/usr/bin/env bash
# A venv that sees the main environment (mxquant, torch) plus Triton 3.6, for running the Triton
# kernels under Triton's interpreter on the CPU (tests/test_triton_interpreter.py). The main
# environment holds no triton on purpose. Built once into the user's cache by cached-venv.sh.
set -euo pipefail
NAME=triton-3.6.0 PINS="triton==3.6.0" SYSTEM_SITE=1 CHECK="import triton" \
    exec bash "$(dirname "$0")/cached-venv.sh"
