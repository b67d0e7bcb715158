#!/usr/bin/env bash
# Coverage-guided fuzzing for a bounded time: scripts/fuzz.sh [seconds] [target] (default 60, all).
#
# Targets (fuzz/fuzz_targets/): gguf_reader (any bytes as a GGUF file), tokenizer (any bytes as
# text to encode and as ids to decode, on the vocabularies in fuzz/vocab/), model_config (any
# metadata values and types as a model config). With no target, all run within the given total
# time: half of it for gguf_reader, a quarter for each of the others.
#
# Builds fuzz/ (a cargo-fuzz crate, its own workspace) with AddressSanitizer, overflow checks and
# debug assertions, seeds the corpus (fuzz/seeds.py for the reader, a few texts for the
# tokenizer) plus every input kept in fuzz/regressions/ (the reader's) or
# fuzz/regressions-<target>/ (the others'), and runs. Exits non-zero on a crash, a panic, a leak, or an
# allocation over MALLOC_LIMIT_MB; the input that did it is left in fuzz/artifacts/<target>/.
# After the fix, keep it there (the reader's unit tests in src/gguf/reader.rs read
# fuzz/regressions/; every run of this script replays both) and add a unit test of the fix.
# The toolchain is stable: RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the unstable sanitizer flags.
set -euo pipefail

seconds="${1:-60}"
target="${2:-all}"
# Inputs are at most MAX_LEN bytes, so no allocation should come near this (a count trusted
# before it is checked asks for far more).
MAX_LEN="${MAX_LEN:-65536}"
MALLOC_LIMIT_MB="${MALLOC_LIMIT_MB:-64}"
TARGETS=(gguf_reader tokenizer model_config)

cd "$(dirname "$0")/.."

if [[ "$target" == all ]]; then
  reader_seconds=$(( seconds / 2 ))
  other_seconds=$(( (seconds - reader_seconds) / 2 ))
  "$0" "$(( reader_seconds > 0 ? reader_seconds : 1 ))" gguf_reader
  "$0" "$(( other_seconds > 0 ? other_seconds : 1 ))" tokenizer
  "$0" "$(( other_seconds > 0 ? other_seconds : 1 ))" model_config
  echo "fuzz.sh: no crash in any target (${seconds}s in all)"
  exit 0
fi
if [[ ! " ${TARGETS[*]} " == *" $target "* ]]; then
  echo "fuzz.sh: unknown target '$target' (known: ${TARGETS[*]} all)" >&2
  exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

corpus="fuzz/corpus/$target"
mkdir -p "$corpus"
args=()
case "$target" in
  gguf_reader)
    if command -v python3 >/dev/null; then
      python3 fuzz/seeds.py "$corpus"
    else
      echo "fuzz.sh: no python3, fuzzing without seeds" >&2
    fi
    # Every input that ever crashed the reader starts the run (src/gguf/reader.rs tests them too).
    find fuzz/regressions -maxdepth 1 -type f -exec cp {} "$corpus"/ \;
    args+=(-dict=fuzz/gguf.dict)
    ;;
  tokenizer)
    # a flags byte (bits 0-1: vocabulary gpt-2 / qwen2 / spm, bit 2: special, bits 3-4:
    # add_bos), then the text
    printf '\x00the cat sat on the mat, in the heat?' > "$corpus/seed_bpe_plain"
    printf '\x11the  cat\n\n sat  caf\xc3\xa9 !' > "$corpus/seed_bpe_qwen2"
    printf '\x04<|im_start|>user\nhi<|im_end|>\n<tool>' > "$corpus/seed_bpe_special"
    printf '\x02 the  cat\n\n\tsat  caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e' > "$corpus/seed_spm"
    printf '\x0e<s></s><unk>\xff\xfe' > "$corpus/seed_spm_special"
    ;;
esac
if [[ -d "fuzz/regressions-$target" ]]; then
  cp "fuzz/regressions-$target"/* "$corpus"/ 2>/dev/null || true
fi

export RUSTC_BOOTSTRAP=1
cargo fuzz build --debug-assertions "$target"
cargo fuzz run --debug-assertions "$target" "$corpus" -- \
  -max_total_time="$seconds" \
  -max_len="$MAX_LEN" \
  -malloc_limit_mb="$MALLOC_LIMIT_MB" \
  -rss_limit_mb=2048 \
  "${args[@]}" \
  -print_final_stats=1
echo "fuzz.sh: $target: no crash in ${seconds}s"
