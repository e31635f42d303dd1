#!/usr/bin/env bash
# A virtual environment for tests that need packages the main environment must not hold (vLLM's
# CPU build pins its own torch; Triton would change what the main suite sees), built once into
# the user's cache and reused. Prints the environment's python on stdout (progress on stderr).
#
#   NAME=... PINS="pkg==v ..." [REMOVE="pkg ..."] [CHECK="python code"] [SYSTEM_SITE=1] \
#       bash .ci/cached-venv.sh
#
# The folder name carries a hash of PINS, REMOVE, the Python version (and SYSTEM_SITE when set):
# changing one builds a new environment. SYSTEM_SITE=1 makes a venv that also sees the main
# environment's packages (mxquant, torch). A build that did not finish leaves no `.ready` marker
# and is redone; a lock makes a second build of the same environment wait for the first.
set -euo pipefail
: "${NAME:?}" "${PINS:?}"
REMOVE=${REMOVE:-}
CHECK=${CHECK:-pass}
PY=${PYTHON:-python3}

extra=""
[ "${SYSTEM_SITE:-0}" = 1 ] && extra="system-site"
key=$(printf '%s\n' "$PINS" "$REMOVE" "$("$PY" -c 'import sys; print(sys.version)')" $extra | sha256sum | cut -c1-12)
root=${MXQUANT_VENV_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/mxquant}
venv=$root/$NAME-$key

if [ -f "$venv/.ready" ]; then
    echo "$venv/bin/python"
    exit 0
fi
mkdir -p "$root"
exec 9>"$root/.$NAME.lock"
flock 9  # another build of the same environment (a second pytest) waits for this one
if [ ! -f "$venv/.ready" ]; then
    start=$SECONDS
    log=$root/$NAME-build.log
    echo "building $venv (once; log: $log)" >&2
    exec 8>&2  # the trap runs where stderr goes to the log
    trap 'echo "cached-venv.sh: build of $NAME failed; the end of $log:" >&8; tail -n 30 "$log" >&8' ERR
    rm -rf "$venv"
    {
        if [ -n "$extra" ]; then "$PY" -m venv --system-site-packages "$venv"; else "$PY" -m venv "$venv"; fi
        "$venv/bin/python" -m pip install -q $PINS
        if [ -n "$REMOVE" ]; then "$venv/bin/python" -m pip uninstall -q -y $REMOVE; fi
        "$venv/bin/python" -c "$CHECK"
    } > "$log" 2>&1
    "$venv/bin/python" -m pip freeze > "$venv/.ready"
    trap - ERR
    echo "built $venv in $((SECONDS - start)) s" >&2
fi
echo "$venv/bin/python"
