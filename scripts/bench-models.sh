#!/usr/bin/env bash
# On a machine with a GPU and the wheel installed: make the four benchmark models of the
# llama.cpp comparison table (random weights, real shapes) and run `rocmforge bench` on each.
#
#   scripts/bench-models.sh [DIR]   (models are written to DIR, default /tmp/rocmforge-bench)
#
# The models are written by tools/models.py. Needs the gguf package and llama.cpp's vocabulary
# files (ggml-vocab-qwen2.gguf, ggml-vocab-llama-bpe.gguf) in $VOCAB_DIR (default: the test-data
# cache, `python tools/models.py vocab-dir`).
# BENCH_ARGS are passed to every `rocmforge bench` (default: -p 512 -n 128 -r 3).
set -uo pipefail
DIR="${1:-/tmp/rocmforge-bench}"
PY="${PYTHON:-python3}"
MODELS="$(cd "$(dirname "$0")/.." && pwd)/tools/models.py"
VOCAB_DIR="${VOCAB_DIR:-$($PY "$MODELS" vocab-dir)}"
mkdir -p "$DIR"
status=0
for spec in "qwen2-0.5b Q8_0" "qwen2-0.5b Q4_0" "llama-1b Q8_0" "llama-8b Q4_0"; do
  set -- $spec
  out="$DIR/$1-$2.gguf"
  if [ ! -f "$out" ]; then
    $PY "$MODELS" make-model --shape "$1" --dtype "$2" \
      --vocab-dir "$VOCAB_DIR" "$out" >/dev/null || { status=1; continue; }
  fi
  $PY -m rocmforge.cli bench --model "$out" ${BENCH_ARGS:--p 512 -n 128 -r 3} || status=1
  echo
done
exit $status
