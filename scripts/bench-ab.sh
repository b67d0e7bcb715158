#!/usr/bin/env bash
# On a machine with a GPU: benchmark files (made by tools/models.py as scripts/gpu-prepare.sh
# makes them) measured with two wheels in one call, the wheels taking turns on each file
# (A B A B ...), so that a change is compared with its base on the same card at the same time.
# Prints each run's table, then one summary line a run.
#
#   scripts/bench-ab.sh A.whl B.whl [DIR]   (files in DIR, default /tmp/rocmforge-bench)
#
# ROUNDS (default 2) turns per wheel and file; BENCH_ARGS as in bench-models.sh; MODELS (names
# as gpu-prepare.sh takes them, SHAPE-DTYPE, space-separated) picks the files, by default the
# four of GPU.md (qwen2-0.5b-Q8_0 qwen2-0.5b-Q4_0 llama-1b-Q8_0 llama-8b-Q4_0); gpu-prepare.sh
# makes those missing (VOCAB_DIR as there).
set -uo pipefail
A=$1
B=$2
DIR="${3:-/tmp/rocmforge-bench}"
PY="${PYTHON:-python3}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$DIR"
NAMES=(${MODELS:-qwen2-0.5b-Q8_0 qwen2-0.5b-Q4_0 llama-1b-Q8_0 llama-8b-Q4_0})
# The files: scripts/gpu-prepare.sh makes those not there yet (or, running already, is waited for).
missing=0
for name in "${NAMES[@]}"; do [ -f "$DIR/$name.gguf" ] || missing=1; done
if pgrep -f "gpu-prepare.sh" >/dev/null || [ "$missing" = 1 ]; then
  pgrep -f "gpu-prepare.sh" >/dev/null || DIR="$DIR" "$ROOT/scripts/gpu-prepare.sh" - "${NAMES[@]}" >/dev/null
  DIR="$DIR" "$ROOT/scripts/gpu-prepare.sh" --wait "${PREPARE_WAIT:-900}" >/dev/null
fi
for w in A B; do
  rm -rf "/tmp/rocmforge-wheel-$w"
  $PY -m pip install -q --no-deps --target "/tmp/rocmforge-wheel-$w" "${!w}" || exit 1
done
models=()
for name in "${NAMES[@]}"; do
  [ -f "$DIR/$name.gguf" ] || { echo "$name: no file (see $DIR/make-$name.log)" >&2; exit 1; }
  models+=("$DIR/$name.gguf")
done
summary=()
for m in "${models[@]}"; do
  for round in $(seq "${ROUNDS:-2}"); do
    for w in A B; do
      echo "== $w (${!w##*/}) round $round: $(basename "$m")"
      log=$(PYTHONPATH="/tmp/rocmforge-wheel-$w" $PY -m rocmforge.cli bench --model "$m" \
        ${BENCH_ARGS:--p 512 -n 128 -r 3} 2>&1)
      echo "$log"
      # table columns: model | size | params | test | t/s | % of roofline
      pp=$(echo "$log" | grep -E "\| pp[0-9]+ \|" | awk -F'|' '{print $6}' | tr -s ' ')
      tg=$(echo "$log" | grep -E "\| tg[0-9]+ \|" | awk -F'|' '{print $6 " (" $7 ")"}' | tr -s ' ')
      summary+=("$(printf '%-22s %s round %s  pp %10s  tg %s' "$(basename "$m")" "$w" "$round" "$pp" "$tg")")
    done
  done
done
echo
echo "== summary (A: ${A##*/}, B: ${B##*/})"
printf '%s\n' "${summary[@]}"
