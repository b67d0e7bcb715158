#!/usr/bin/env bash
# On a GPU machine with the rocmforge wheel installed: rocmforge and llama.cpp on the same
# random-weight files in one call. Builds llama-bench from the source scripts/llamacpp-pack.sh
# packed (in the background, while the files are written), writes the files with
# tools/models.py (in parallel), runs `rocmforge bench` and `llama-bench -ngl 99 -fa 1` on
# each, and prints one table with both engines, the ratios and the tg roofline share.
#
#   scripts/bench-llamacpp.sh LLAMACPP.tar.xz SHAPE-DTYPE...
#     e.g. llama-8b-Q4_K_M qwen2-7b-Q4_K_M llama-8b-Q6_K llama-8b-IQ4_XS llama-8b-Q4_0
#          (shapes and dtypes of `python tools/models.py make-model`)
#
# BENCH_ARGS (default: -p 512 -n 128) go to both engines, with -r 3; DIR holds the files
# (default /tmp/rocmforge-bench; a file already there is reused) and the llama.cpp build
# (DIR/llamacpp-build). VOCAB_DIR as in bench-models.sh. Logs: DIR/*.json, DIR/build.log.
set -uo pipefail
SRC=$(realpath "$1"); shift
DIR="${DIR:-/tmp/rocmforge-bench}"
PY="${PYTHON:-python3}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VOCAB_DIR="${VOCAB_DIR:-$($PY "$ROOT/tools/models.py" vocab-dir)}"
ARGS=(${BENCH_ARGS:--p 512 -n 128})
mkdir -p "$DIR"
# A scripts/gpu-prepare.sh still building or writing into DIR: wait for it rather than race it.
if pgrep -f "gpu-prepare.sh" >/dev/null; then
  DIR="$DIR" "$ROOT/scripts/gpu-prepare.sh" --wait "${PREPARE_WAIT:-900}" >/dev/null
fi
LB="$DIR/llamacpp-build/bin/llama-bench"
if [ ! -x "$LB" ]; then
  (cd "$DIR" && rm -rf llamacpp && tar xJf "$SRC" &&
   cmake -S llamacpp -B llamacpp-build -G Ninja -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" \
     -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_OPENSSL=OFF \
     -DGGML_NATIVE=OFF -DCMAKE_BUILD_TYPE=Release && nice cmake --build llamacpp-build --target llama-bench) \
    >"$DIR/build.log" 2>&1 &
  build=$!
fi
makers=()
for m in "$@"; do
  [ -f "$DIR/$m.gguf" ] && continue
  shape=${m%-*}; dtype=${m##*-}; [[ $shape == qwen2* ]] && vocab=qwen2 || vocab=llama-bpe
  ($PY "$ROOT/tools/models.py" make-model --shape "$shape" --dtype "$dtype" \
     --vocab "$VOCAB_DIR/ggml-vocab-$vocab.gguf" "$DIR/part-$m.gguf" >/dev/null &&
   mv "$DIR/part-$m.gguf" "$DIR/$m.gguf") &
  makers+=($!)
done
[ ${#makers[@]} -gt 0 ] && wait "${makers[@]}"
for m in "$@"; do
  [ -f "$DIR/$m.gguf" ] || { echo "$m: make-model failed" >&2; continue; }
  $PY -m rocmforge.cli bench -m "$DIR/$m.gguf" -r 3 "${ARGS[@]}" --json >"$DIR/$m.rocmforge.json" \
    || echo "$m: rocmforge bench failed" >&2
done
[ -n "${build:-}" ] && { wait "$build" || { tail -20 "$DIR/build.log"; exit 1; }; }
for m in "$@"; do
  [ -f "$DIR/$m.gguf" ] && "$LB" -m "$DIR/$m.gguf" -ngl 99 -fa 1 -r 3 "${ARGS[@]}" -o json \
    >"$DIR/$m.llamacpp.json" 2>/dev/null || echo "$m: llama-bench failed" >&2
done
$PY - "$DIR" "$@" <<'PY'
import json, sys
d, models = sys.argv[1], sys.argv[2:]
def load(p):
    try:
        return json.load(open(p))
    except (OSError, ValueError):
        return None
def key(t):
    return (t.get("n_prompt", 0), t.get("n_gen", 0), t.get("n_depth", 0))
print("| file | test | rocmforge t/s | llama.cpp t/s | ratio | rocmforge tg % of roofline |")
print("| --- | --- | ---: | ---: | ---: | ---: |")
for m in models:
    r, l = load(f"{d}/{m}.rocmforge.json"), load(f"{d}/{m}.llamacpp.json") or []
    if r is None:
        print(f"| {m} | (rocmforge failed) | | | | |"); continue
    theirs = {key(t): t["avg_ts"] for t in l}
    for t in r["tests"]:
        ours, other = t["avg_ts"], theirs.get(key(t))
        roof = f"{100 * ours / t['roofline_ts']:.1f}% of {t['roofline_ts']:,.0f}" if t.get("roofline_ts") else ""
        print(f"| {m} | {t['test']} | {ours:,.1f} | {'' if other is None else f'{other:,.1f}'} | "
              f"{'' if other is None else f'{ours / other:.2f}x'} | {roof} |")
PY
