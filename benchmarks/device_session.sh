#!/usr/bin/env bash
# One device-machine run: GPU tests, `mxquant verify`, and the GPU benchmarks, each step's log
# and JSON under $OUT/s, packed into $OUT/session.tgz after every step (the device tool brings
# back at most 8 files, so the one archive is what to read). Steps are named on the command line:
#   bash benchmarks/device_session.sh gpucheck convprof tests verify training small_m quantize fp4 convert sweep gluon focus checks host
#   fp4tests fp4sweep grouped nvfp4 nvfree
# Run after `bash .whl/install-carried.sh && export PYTHONPATH=/tmp/site:$PWD && python3 -m pip
# install -q --no-deps --no-build-isolation -e .` (see the developers' guide). `python3 -m pip`,
# not `pip`: on the device image `pip` is /usr/local/bin/pip and `python3` a venv's, so a bare
# `pip install -e .` registers mxquant where python3 does not look (2026-12-05: every test failed
# to import). A failing step is logged and the next one still runs; the exit code is the
# number of failed steps.
set -u
OUT=${OUT:-device-out}
S="$OUT/s"
mkdir -p "$S"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$S/gpu.txt" 2>&1
failed=0
pack() { tar czf "$OUT/session.tgz" -C "$S" . ; }
step() {  # step NAME TIMEOUT_S CMD...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$S/$name.log" 2>&1
  local rc=$?
  echo "step $name rc=$rc $((SECONDS - t0))s" | tee -a "$S/steps.txt"
  [ $rc -eq 0 ] || failed=$((failed + 1))
  pack
}
gpu_tests() {  # the cuda-marked tests in 6 processes over the test files (one process took > 280 s)
  local i=0 rc=0 f s
  rm -f "$S"/shard*
  for f in tests/test_*.py; do echo "$f" >> "$S/shard$((i % 6))"; i=$((i + 1)); done
  for s in 0 1 2 3 4 5; do
    python3 -m pytest -q -rfE -m cuda -p no:cacheprovider $(cat "$S/shard$s") --junitxml="$S/tests$s.xml" \
      > "$S/tests$s.log" 2>&1 &
  done
  for s in 0 1 2 3 4 5; do wait -n || { r=$?; [ $r -eq 5 ] || rc=$r; }; done  # 5: a shard with no cuda test
  tail -qn 1 "$S"/tests?.log
  return $rc
}
k_shards() {  # k_shards NAME FILE EXPR...: FILE's CUDA tests in one process per -k EXPR, logs $S/NAME<i>.log
  local name=$1 file=$2 rc=0 i=0 k; shift 2
  for k in "$@"; do
    python3 -m pytest -q -rfE -m cuda -p no:cacheprovider "$file" -k "$k" > "$S/$name$i.log" 2>&1 &
    i=$((i + 1))
  done
  for k in "$@"; do wait -n || rc=$?; done  # (5, an expression that selects nothing, fails too)
  tail -qn 1 "$S/$name"?.log
  return $rc
}
focus_tests() {  # the Gluon kernel's CUDA tests (tests/test_triton_training.py) in 5 processes
  k_shards focus tests/test_triton_training.py "shapes and float32" "shapes and bfloat16" \
    "shapes and float16 and not bfloat16" "strided" "not (shapes or strided)"
}
fp4_tests() {  # tests/test_triton_fp4.py's CUDA cases in 3 processes
  k_shards fp4tests tests/test_triton_fp4.py "mxfp4" "nvfp4" "not (mxfp4 or nvfp4)"
}
checks() {  # focus_tests and a full `mxquant verify --backend triton` side by side (both correctness, no timing)
  local rc=0
  python3 -u -m mxquant verify --backend triton > "$S/verify.log" 2>&1 &
  local v=$!
  ( focus_tests ) || rc=$?
  wait $v || rc=$?
  tail -n 3 "$S/verify.log"
  return $rc
}
gpu_check() {  # every CUDA test under pytest-xdist beside `mxquant verify --jobs 4` (201 s on an H100, tenth session).
  # pytest-xdist is not on the device image: carry it, after ../shared/device/carry-wheels.sh, with
  # python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --platform any -d .whl \
  #   pytest-xdist==3.6.1 execnet==2.1.1
  local rc=0
  python3 -u -m mxquant verify --backend triton --jobs 4 > "$S/verify.log" 2>&1 &
  local v=$!
  python3 -m pytest -q -rfE -m cuda -n 11 -p no:cacheprovider tests --junitxml="$S/tests.xml" > "$S/tests.log" 2>&1 \
    || rc=$?
  wait $v || rc=$?
  tail -n 4 "$S/tests.log" "$S/verify.log"
  return $rc
}
for s in "$@"; do
  case $s in
    gpucheck) export -f gpu_check; export S; step gpucheck 520 bash -c gpu_check ;;  # all correctness, 16 cores
    tests)    export -f gpu_tests; export S; step tests 330 bash -c gpu_tests ;;
    verify)   step verify 540 python3 -u -m mxquant verify --backend triton --jobs 8 ;;  # serially 189 of 210 checks in 338 s (eighth session); gpucheck runs it too
    checks)   export -f k_shards focus_tests checks; export S; step checks 370 bash -c checks ;;
    focus)    export -f k_shards focus_tests; export S; step focus 300 bash -c focus_tests ;;  # 200 s cut the shape cases off
    host)     step host 60 python3 benchmarks/host_split.py --out "$S" ;;
    training) step training 150 python3 benchmarks/bench_training.py --out "$S" --rep-ms 50 ;;
    small_m)  step small_m 150 python3 benchmarks/bench_small_m.py --out "$S" ;;
    quantize) step quantize 240 python3 benchmarks/bench_quantize.py --out "$S" --rep-ms 50 --no-dequantize ;;
    fp4)      step fp4 180 python3 benchmarks/bench_fp4.py --out "$S" --rep-ms 50 ;;
    convert)  step convert 240 python3 benchmarks/bench_convert.py --device cuda --gb 2 --workdir /tmp/conv ;;
    convprof) step convprof 200 python3 benchmarks/profile_convert.py --device cuda --gb 2 --jobs 1 2 3 --out "$S" ;;  # per-stage seconds, per-thread CPU, cProfile
    sweep)    step sweep 200 python3 -u benchmarks/sweep_training.py "$S/sweep.json" ;;
    fp4tests) export -f k_shards fp4_tests; export S; step fp4tests 300 bash -c fp4_tests ;;  # one process: > 200 s, cut off twice
    nvfp4)    step nvfp4 150 python3 -m pytest -q -rfE -m cuda -p no:cacheprovider tests/test_triton_fp4.py -k "nvfp4 or thresholds or register" ;;
    grouped)  step grouped 120 python3 -m pytest -q -rfE -m cuda -p no:cacheprovider tests/test_triton_training.py -k "token or grouped" ;;
    fp4sweep) step fp4sweep 240 python3 -u benchmarks/sweep_fp4_tokens.py "$S/fp4_tokens.json" ;;
    nvfree)   step nvfree 300 python3 -u benchmarks/sweep_nvfp4_division_free.py "$S/nvfree.json" ;;  # NVFP4 2-byte kernels A/B
    gluon)    step gluon 130 python3 -u benchmarks/sweep_gluon.py "$S/gluon.json" ;;
    *) echo "unknown step $s" | tee -a "$S/steps.txt"; failed=$((failed + 1)) ;;
  esac
done
pack
exit $failed
