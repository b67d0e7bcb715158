#!/usr/bin/env bash
# On a GPU machine with the rocmforge wheel installed: rocmforge and llama.cpp on the same
# random-weight files in one call. Builds llama-bench from the source scripts/llamacpp-pack.sh
# packed and writes the files with tools/models.py, both through scripts/gpu-prepare.sh (in the
# background: rocmforge runs once the files are there, llama.cpp once it is built), runs `rocmforge bench` and `llama-bench -ngl 99 -fa 1` on
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
ARGS=(${BENCH_ARGS:--p 512 -n 128})
mkdir -p "$DIR"
# The build and the files: scripts/gpu-prepare.sh (started here unless one is running already).
pgrep -f "gpu-prepare.sh" >/dev/null || DIR="$DIR" "$ROOT/scripts/gpu-prepare.sh" "$SRC" "$@" >/dev/null
LB="$DIR/llamacpp-build/bin/llama-bench"
for _ in $(seq $(( ${PREPARE_WAIT:-900} / 5 ))); do [ -f "$DIR/models.done" ] && break; sleep 5; done
for m in "$@"; do
  [ -f "$DIR/$m.gguf" ] || { echo "$m: make-model failed" >&2; continue; }
  $PY -m rocmforge.cli bench -m "$DIR/$m.gguf" -r 3 "${ARGS[@]}" --json >"$DIR/$m.rocmforge.json" \
    || echo "$m: rocmforge bench failed" >&2
done
DIR="$DIR" "$ROOT/scripts/gpu-prepare.sh" --wait "${PREPARE_WAIT:-900}" >/dev/null
[ -x "$LB" ] || { tail -20 "$DIR/build.log"; exit 1; }
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
