#!/usr/bin/env bash
# One device-machine run: GPU tests, `mxquant verify`, and the GPU benchmarks, each step's log
# and JSON under $OUT (the device tool brings $OUT back). Steps are named on the command line:
#   bash benchmarks/device_session.sh tests verify training small_m quantize fp4 convert
# Run after `bash .whl/install-carried.sh && export PYTHONPATH=/tmp/site:$PWD && pip install
# -q --no-deps --no-build-isolation -e .` (see the developers' guide). A failing step is logged
# and the next one still runs; the exit code is the number of failed steps.
set -u
OUT=${OUT:-device-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/gpu.txt" 2>&1
failed=0
step() {  # step NAME TIMEOUT_S CMD...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "step $name rc=$rc $((SECONDS - t0))s" | tee -a "$OUT/steps.txt"
  [ $rc -eq 0 ] || failed=$((failed + 1))
}
for s in "$@"; do
  case $s in
    tests)    step tests 280 python3 -m pytest -q -rfE -m cuda -p no:cacheprovider tests/ --junitxml="$OUT/tests.xml" ;;
    verify)   step verify 60 python3 -m mxquant verify --backend triton ;;
    training) step training 180 python3 benchmarks/bench_training.py --out "$OUT" --rep-ms 50 ;;
    small_m)  step small_m 150 python3 benchmarks/bench_small_m.py --out "$OUT" ;;
    quantize) step quantize 240 python3 benchmarks/bench_quantize.py --out "$OUT" --rep-ms 50 --no-dequantize ;;
    fp4)      step fp4 180 python3 benchmarks/bench_fp4.py --out "$OUT" --rep-ms 50 ;;
    convert)  step convert 240 python3 benchmarks/bench_convert.py --device cuda --gb 2 --workdir /tmp/conv ;;
    *) echo "unknown step $s" | tee -a "$OUT/steps.txt"; failed=$((failed + 1)) ;;
  esac
done
exit $failed
