#!/usr/bin/env bash
# On a machine with a GPU and a built wheel: install the wheel, run a slice of the GPU test
# suite (or the benchmarks), print a short summary.
#
#   scripts/gpu-check.sh [ops] [sanitize] [racecheck] [bench] [model] [soak] [all]   (default: ops)
#     ops       every op test on device="gpu" (the test_ops_* tables, test_gpu_*.py)
#     sanitize  the same tables on small shapes under compute-sanitizer memcheck (NVIDIA); the
#               deliberate out-of-memory tests are left out (memcheck reports the failed
#               allocation as an API error) and so is the GIL timing test
#     racecheck the op tables on small shapes under compute-sanitizer racecheck (shared-memory
#               hazards between the threads of a block)
#     soak      tests_py/test_soak.py in its long form (20,000 tokens, 50 loads) and
#               test_gpu_memory.py (out of memory at load, nothing allocated while generating)
#     all       the whole of tests_py with ROCMFORGE_TEST_DEVICES=gpu
#     bench     bench/ops_bench.py (kernel times, GB/s, TFLOP/s; torch SDPA when installed)
#     model     tests_py/test_gpu_model.py (if present) and test_model.py on device="gpu"
#
# Wheels are taken from $WHEELS (default: dist/ and target/wheels/ and the current directory):
# rocmforge-*.whl, plus gguf-*.whl when the gguf package is not installed. Logs go to $LOGS
# (default: gpu-check-logs/); SLICE_TIMEOUT (seconds) stops a slice that runs longer.
# Exit status: non-zero if any slice failed.
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS="${LOGS:-gpu-check-logs}"
mkdir -p "$LOGS"
modes=("$@")
[ ${#modes[@]} -eq 0 ] && modes=(ops)
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1

find_wheel() {  # newest $1-*.whl in the wheel directories
  local d
  for d in ${WHEELS:-dist target/wheels .}; do ls -t "$d"/$1-*.whl 2>/dev/null; done | head -1
}
wheel=$(find_wheel rocmforge)
if [ -n "$wheel" ]; then
  deps=()
  $PY -c "import gguf" 2>/dev/null || deps+=($(find_wheel gguf))
  $PY -m pip install -q --no-deps --force-reinstall --no-index "$wheel" "${deps[@]}" || exit 1
fi
$PY - <<'PY' | tee "$LOGS/devices.txt"
import rocmforge as rf
for d in rf.devices():
    print("device:", {k: v for k, v in d.items()})
PY
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/nvidia-smi: /'

summary=()
status=0
run_slice() {  # name, command...
  local name=$1; shift
  local start=$SECONDS
  timeout "${SLICE_TIMEOUT:-0}" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  [ $rc -eq 124 ] && echo "(stopped after ${SLICE_TIMEOUT}s: SLICE_TIMEOUT)" >>"$LOGS/$name.log"
  local last
  last=$(grep -E "passed|failed|error" "$LOGS/$name.log" | grep -E "^=*.*(passed|failed)" | tail -1)
  [ -z "$last" ] && last=$(tail -1 "$LOGS/$name.log")
  summary+=("$(printf '%-9s rc=%-3s %4ss  %s' "$name" "$rc" $((SECONDS - start)) "$last")")
  [ $rc -ne 0 ] && status=1
  return 0
}

# The op tables on device="gpu" only, and the GPU-only tests.
export ROCMFORGE_TEST_DEVICES=gpu
GPU_TESTS="$(ls tests_py/test_ops_*.py tests_py/test_gpu_*.py | tr '\n' ' ')"
# The long shapes of the op tables: left out under the sanitizer (it slows kernels 10-100x).
SMALL_ONLY="not 2048 and not 4099 and not 1999 and not 1024"

for mode in "${modes[@]}"; do
  case "$mode" in
    ops)
      run_slice ops $PY -m pytest $GPU_TESTS -q -rfE -p no:cacheprovider
      ;;
    sanitize)
      if command -v compute-sanitizer >/dev/null; then
        export ROCMFORGE_TEST_SMALL=1
        run_slice sanitize compute-sanitizer --tool memcheck --error-exitcode 3 \
          --print-limit 20 $PY -m pytest $GPU_TESTS -q -rfE -p no:cacheprovider \
          -k "not gil and not out_of_memory and not test_gpu_memory and $SMALL_ONLY"
        unset ROCMFORGE_TEST_SMALL
        grep -E "ERROR SUMMARY" "$LOGS/sanitize.log" | tail -1 | sed 's/^/sanitize: /'
      else
        summary+=("sanitize  skipped: compute-sanitizer not found")
      fi
      ;;
    racecheck)
      if command -v compute-sanitizer >/dev/null; then
        export ROCMFORGE_TEST_SMALL=1
        run_slice racecheck compute-sanitizer --tool racecheck --error-exitcode 3 \
          --print-limit 20 $PY -m pytest tests_py/test_ops_*.py -q -rfE -p no:cacheprovider \
          -k "not gil and not out_of_memory and $SMALL_ONLY"
        unset ROCMFORGE_TEST_SMALL
        grep -E "RACECHECK SUMMARY|ERROR SUMMARY" "$LOGS/racecheck.log" | tail -1 | sed 's/^/racecheck: /'
      else
        summary+=("racecheck skipped: compute-sanitizer not found")
      fi
      ;;
    soak)
      run_slice soak env ROCMFORGE_SOAK_TOKENS="${ROCMFORGE_SOAK_TOKENS:-20000}" \
        ROCMFORGE_SOAK_LOADS="${ROCMFORGE_SOAK_LOADS:-50}" \
        $PY -m pytest tests_py/test_soak.py tests_py/test_gpu_memory.py -q -s -rfE -p no:cacheprovider
      grep -oE "(soak|loads) on .*" "$LOGS/soak.log" | sed 's/^/soak: /'
      ;;
    all)
      run_slice all $PY -m pytest tests_py -q -rfEs -p no:cacheprovider
      ;;
    bench)
      run_slice bench $PY bench/ops_bench.py ${BENCH_ARGS:-} --json "$LOGS/bench.json"
      sed -n '/^| case/,$p' "$LOGS/bench.log"
      ;;
    model)
      if [ -f tests_py/test_gpu_model.py ]; then
        run_slice model $PY -m pytest tests_py/test_gpu_model.py tests_py/test_model.py -q -rfE \
          -p no:cacheprovider
      fi
      ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
done

echo
echo "== gpu-check summary =="
printf '%s\n' "${summary[@]}"
grep -h "^FAILED\|^ERROR" "$LOGS"/*.log 2>/dev/null | head -30
exit $status
