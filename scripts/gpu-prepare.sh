#!/usr/bin/env bash
# On a GPU machine: build llama.cpp's llama-bench and write the benchmark files in the background,
# so that one device call can run the test suite while they are made and the next call (on the
# same warm machine) finds them ready. Starts itself detached (setsid): it outlives the call that
# started it and runs until the machine is given back.
#
#   scripts/gpu-prepare.sh [LLAMACPP.tar.xz] [SHAPE-DTYPE ...]    start (returns at once)
#   scripts/gpu-prepare.sh --wait SECONDS                         wait for the markers
#
# LLAMACPP.tar.xz: what scripts/llamacpp-pack.sh packed ("-": no llama.cpp build). Files (default:
# the eight of bench/README.md's table) are written by tools/models.py make-model into DIR
# (default /tmp/rocmforge-bench, the folder scripts/bench-llamacpp.sh and bench-ab.sh read), four
# at a time, with the vocabularies of VOCAB_DIR as in bench-models.sh. Markers: DIR/build.done,
# DIR/models.done; logs: DIR/build.log, DIR/make-*.log, DIR/prepare.log.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${DIR:-/tmp/rocmforge-bench}"
PY="${PYTHON:-python3}"
mkdir -p "$DIR"
if [ "${1:-}" = "--wait" ]; then
  for _ in $(seq $(( ${2:-600} / 5 ))); do
    [ -f "$DIR/models.done" ] && [ -f "$DIR/build.done" ] && break
    sleep 5
  done
  cat "$DIR/build.done" "$DIR/models.done" 2>/dev/null
  ls "$DIR"/*.gguf 2>/dev/null
  [ -f "$DIR/models.done" ] && [ -f "$DIR/build.done" ]
  exit
fi
if [ -z "${GPU_PREPARE_DETACHED:-}" ]; then
  rm -f "$DIR/build.done" "$DIR/models.done"
  GPU_PREPARE_DETACHED=1 setsid nohup "$0" "$@" >"$DIR/prepare.log" 2>&1 </dev/null &
  echo "gpu-prepare: started in the background (markers in $DIR)"
  exit 0
fi
SRC="${1:--}"; [ $# -gt 0 ] && shift
MODELS=("$@")
[ ${#MODELS[@]} -eq 0 ] && MODELS=(llama-8b-Q4_K_M qwen2-7b-Q4_K_M llama-8b-Q6_K llama-8b-IQ4_XS
  llama-8b-Q4_0 qwen2-0.5b-Q8_0 qwen2-0.5b-Q4_0 llama-1b-Q8_0)
VOCAB_DIR="${VOCAB_DIR:-$($PY "$ROOT/tools/models.py" vocab-dir)}"
{
  if [ "$SRC" != "-" ] && [ ! -x "$DIR/llamacpp-build/bin/llama-bench" ]; then
    src=$(realpath "$SRC")
    (cd "$DIR" && rm -rf llamacpp && tar xJf "$src" &&
     cmake -S llamacpp -B llamacpp-build -G Ninja -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" \
       -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_OPENSSL=OFF \
       -DGGML_NATIVE=OFF -DCMAKE_BUILD_TYPE=Release &&
     nice -n 19 cmake --build llamacpp-build --target llama-bench -j 10) >"$DIR/build.log" 2>&1
  fi
  echo "build: $(ls "$DIR/llamacpp-build/bin/llama-bench" 2>/dev/null || echo none)" >"$DIR/build.done"
} &
pids=()
for m in "${MODELS[@]}"; do
  [ -f "$DIR/$m.gguf" ] && continue
  shape=${m%-*}; dtype=${m##*-}
  (nice -n 10 $PY "$ROOT/tools/models.py" make-model --shape "$shape" --dtype "$dtype" \
     --vocab-dir "$VOCAB_DIR" "$DIR/part-$m.gguf" >"$DIR/make-$m.log" 2>&1 &&
   mv "$DIR/part-$m.gguf" "$DIR/$m.gguf") &
  pids+=($!)
  [ ${#pids[@]} -ge 4 ] && { wait "${pids[0]}"; pids=("${pids[@]:1}"); }
done
wait
echo "models: $(ls "$DIR"/*.gguf 2>/dev/null | wc -l) files" >"$DIR/models.done"
