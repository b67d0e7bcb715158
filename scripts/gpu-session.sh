#!/usr/bin/env bash
# On a GPU machine: a session's measurements in device calls of under 10 minutes each, run
# one right after another on the same warm machine (the llama.cpp build and the files that phase
# 1 starts in the background are there for the others):
#
#   scripts/gpu-session.sh 1   start gpu-prepare.sh (llama-bench and the eight files of
#                              bench/README.md), then the whole GPU suite on NEW (gpu-check.sh all),
#                              and with SHIM (what scripts/hip-shim-build.sh built) the rocm
#                              build's whole suite through the HIP shim, with its greedy
#                              generation against the cuda build's on qwen2-0.5b Q4_0
#   scripts/gpu-session.sh 2   bench-ab.sh BASE vs NEW on the eight files (or MODELS; pp512,
#                              tg128) and both wheels' per-kernel ncu times of a qwen2-0.5b Q4_0
#                              step, then bench/generate_speed.py with NEW on the four files of
#                              GPU.md
#   scripts/gpu-session.sh 3   bench-llamacpp.sh with NEW on the eight files, then llama-8b Q4_K_M
#                              at depth (-d 4096,16384: tg128 and pp4096) against llama-bench,
#                              then the other families' files (gemma3-270m and qwen3-8b Q4_K_M)
#   scripts/gpu-session.sh 4   the decode tuning fields that matter for the K-quant and IQ4 files
#                              (tg128 with each `--tuning` of TUNINGS), and an ncu per-kernel
#                              profile of llama-8b Q4_K_M's decode (ncu-kernels.py)
#   scripts/gpu-session.sh 5   the real gemma-3-270m file: reassembled from GEMMA_PARTS (its
#                              pieces part*, `split -b 48M -d -a 1 FILE part`: a device call
#                              carries at most 64 MiB, so each piece travels in a call of its
#                              own, named alone in `carry`, and stays on the warm machine),
#                              sha256 checked, into DIR and the test-data cache; then its
#                              llama.cpp agreement tests on the GPU, a generation, and tg128 /
#                              pp512 against llama-bench
#   scripts/gpu-session.sh 6   the sampler: tg128 greedy, then sampled (temperature 0.8, top-k
#                              40, top-p 0.95, min-p 0.05) with each `sample_block` of BLOCKS, on
#                              the four files of GPU.md; then an ncu profile of one sampling
#                              launch on qwen2-0.5b Q4_0 (--set full: its duration, occupancy,
#                              warp stalls)
#
# NEW, BASE: rocmforge wheel files (pip's file names; BASE only for phase 2). LLAMACPP: the
# archive scripts/llamacpp-pack.sh writes. The gguf package, if not installed, is taken from a
# gguf-*.whl next to NEW. VOCAB_DIR as in bench-models.sh. scripts/gpu-pack.sh makes all of
# these (and SHIM) in one folder to carry, and prints the environment to set. Each phase prints
# a short summary; logs and tables go to $OUT (default gpu-session/).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
OUT="${OUT:-gpu-session}"
DIR="${DIR:-/tmp/rocmforge-bench}"
export DIR
mkdir -p "$OUT"
FOUR=(qwen2-0.5b-Q8_0 qwen2-0.5b-Q4_0 llama-1b-Q8_0 llama-8b-Q4_0)
# The four first: gpu-prepare makes the files in this order, and phase 2 starts with them.
EIGHT=("${FOUR[@]}" llama-8b-Q4_K_M qwen2-7b-Q4_K_M llama-8b-Q6_K llama-8b-IQ4_XS)
FAMILIES=(gemma3-270m-Q4_K_M qwen3-8b-Q4_K_M)
tg128() {  # FILE [bench args...]: "t/s | roofline" of `rocmforge bench`'s tg128 on FILE
  timeout 60 $PY -m rocmforge.cli bench -m "$1" -p 0 -n 128 -r 3 "${@:2}" 2>&1 \
    | grep "tg128" | awk -F'|' '{print $6 "|" $7}'
}
install_new() {
  local deps=()
  $PY -c "import gguf" 2>/dev/null || deps+=($(ls "$(dirname "$NEW")"/gguf-*.whl 2>/dev/null | head -1))
  $PY -m pip install -q --no-deps --force-reinstall --no-index "$NEW" "${deps[@]}"
}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
case "${1:-}" in
  1)
    install_new || exit 1  # (first: tools/models.py, which writes the files, needs gguf)
    "$ROOT/scripts/gpu-prepare.sh" "${LLAMACPP:--}" "${EIGHT[@]}" "${FAMILIES[@]}"
    WHEELS="$(dirname "$NEW")" LOGS="$OUT/check" SLICE_TIMEOUT="${SLICE_TIMEOUT:-480}" \
      "$ROOT/scripts/gpu-check.sh" all 2>&1 | tail -15
    if [ -n "${SHIM:-}" ]; then
      for _ in $(seq 60); do [ -f "$DIR/qwen2-0.5b-Q4_0.gguf" ] && break; sleep 2; done
      MODEL="$DIR/qwen2-0.5b-Q4_0.gguf" LOGS="$OUT/shim" SLICE_TIMEOUT="${SHIM_TIMEOUT:-240}" \
        "$ROOT/scripts/hip-shim-gpu.sh" "$SHIM" all 2>&1 | tail -8
    fi
    ;;
  2)
    install_new || exit 1
    MODELS="${MODELS:-${EIGHT[*]}}" ROUNDS="${ROUNDS:-1}" PREPARE_WAIT=240 \
      timeout 330 "$ROOT/scripts/bench-ab.sh" "$BASE" "$NEW" "$DIR" >"$OUT/bench-ab.txt" 2>&1
    sed -n '/== summary/,$p' "$OUT/bench-ab.txt"
    # Which kernels a difference is in: a qwen2-0.5b Q4_0 step with each wheel (bench-ab.sh
    # unpacked them), kernel by kernel
    for w in A B; do
      PYTHONPATH="/tmp/rocmforge-wheel-$w" timeout 60 ncu --csv --metrics gpu__time_duration.sum -c 400 \
        $PY -m rocmforge.cli bench -m "$DIR/qwen2-0.5b-Q4_0.gguf" -p 0 -n 2 -r 1 >"$OUT/ncu-$w.csv" 2>/dev/null
    done
    $PY "$ROOT/scripts/ncu-kernels.py" "$OUT/ncu-A.csv" "$OUT/ncu-B.csv" --top 16
    for m in "${FOUR[@]}"; do
      timeout 70 $PY "$ROOT/bench/generate_speed.py" "$DIR/$m.gguf" 2>&1 | tee -a "$OUT/generate_speed.txt" | grep "|"
    done
    ;;
  3)
    install_new || exit 1
    timeout 360 "$ROOT/scripts/bench-llamacpp.sh" "$LLAMACPP" "${EIGHT[@]}" 2>&1 | tee "$OUT/llamacpp.txt"
    BENCH_ARGS="-p 4096 -n 128 -d 4096,16384" timeout 180 "$ROOT/scripts/bench-llamacpp.sh" "$LLAMACPP" \
      llama-8b-Q4_K_M 2>&1 | tee "$OUT/llamacpp-depth.txt"
    timeout 150 "$ROOT/scripts/bench-llamacpp.sh" "$LLAMACPP" "${FAMILIES[@]}" 2>&1 | tee "$OUT/llamacpp-families.txt"
    ;;
  4)
    install_new || exit 1
    for m in llama-8b-Q4_K_M llama-8b-Q6_K llama-8b-IQ4_XS; do
      for t in "" ${TUNINGS:-matvec_rows=8 matvec_rows=16 matvec_stream=0 stream_stages=2}; do
        echo "$m [${t:-defaults}] $(tg128 "$DIR/$m.gguf" --tuning "$t")" | tee -a "$OUT/tuning.txt"
      done
    done
    timeout 120 ncu --csv --metrics gpu__time_duration.sum,dram__bytes_read.sum \
      -k regex:"matvec|attn|rms|argmax|add" -c 400 \
      $PY -m rocmforge.cli bench -m "$DIR/llama-8b-Q4_K_M.gguf" -p 0 -n 2 -r 1 >"$OUT/ncu-q4km.csv" 2>/dev/null
    $PY "$ROOT/scripts/ncu-kernels.py" "$OUT/ncu-q4km.csv" --top 14
    ;;
  5)
    install_new || exit 1
    # into the test-data cache, where `models.py fetch-gemma3` checks its sha256 (and, with
    # the file in place, fetches nothing)
    cached="$($PY "$ROOT/tools/models.py" vocab-dir)/gemma-3-270m-q4_k_m.gguf"
    mkdir -p "$(dirname "$cached")" "$DIR"
    [ -f "$cached" ] || cat "${GEMMA_PARTS:?the folder of the pieces}"/part* >"$cached"
    $PY "$ROOT/tools/models.py" fetch-gemma3 || { rm -f "$cached"; exit 1; }
    real="$DIR/gemma3-270m-real.gguf"
    ln -sf "$cached" "$real"
    ROCMFORGE_TEST_DEVICES=gpu timeout 240 $PY -m pytest -q -p no:cacheprovider \
      "$ROOT/tests_py/test_model_vs_llamacpp.py" -k gemma3_270m 2>&1 | tee "$OUT/gemma-tests.txt" | tail -3
    timeout 60 $PY -m rocmforge.cli generate --model "$real" --device gpu --max-tokens 48 --temperature 0 \
      "Write one sentence about the sea." 2>&1 | tee "$OUT/gemma-generate.txt" | tail -4
    timeout 150 "$ROOT/scripts/bench-llamacpp.sh" "$LLAMACPP" gemma3-270m-real 2>&1 | tee "$OUT/llamacpp-gemma.txt"
    ;;
  6)
    install_new || exit 1
    pgrep -f gpu-prepare.sh >/dev/null || "$ROOT/scripts/gpu-prepare.sh" - "${FOUR[@]}"
    "$ROOT/scripts/gpu-prepare.sh" --wait 240 >/dev/null
    for m in "${FOUR[@]}"; do
      for run in greedy ${BLOCKS:-auto 512 256}; do
        if [ "$run" = greedy ]; then args=(); else args=(--sampled --tuning "sample_block=$run"); fi
        echo "$m [${args[*]:-greedy}] $(tg128 "$DIR/$m.gguf" "${args[@]}")" | tee -a "$OUT/sampler.txt"
      done
    done
    timeout 90 ncu --set full -k regex:sample_f32 -s 3 -c 1 -o "$OUT/sample" \
      $PY -m rocmforge.cli bench -m "$DIR/qwen2-0.5b-Q4_0.gguf" -p 0 -n 8 -r 1 --sampled >/dev/null 2>&1
    ncu -i "$OUT/sample.ncu-rep" --page details >"$OUT/sample-details.txt" 2>&1
    grep -E "Duration|Registers Per|Achieved Occupancy|Block Size|Grid Size|Warp Cycles Per Issued" \
      "$OUT/sample-details.txt"
    ;;
  *)
    echo "usage: NEW=... [BASE=...] [LLAMACPP=...] [SHIM=...] $0 1|2|3|4|5|6" >&2
    exit 2
    ;;
esac
