#!/usr/bin/env bash
# Coverage-guided fuzzing of the GGUF reader for a bounded time: scripts/fuzz.sh [seconds] (default 60).
#
# Builds fuzz/ (a cargo-fuzz crate, its own workspace) with AddressSanitizer, overflow checks and
# debug assertions, seeds the corpus with small valid files (fuzz/seeds.py) and every input kept
# in fuzz/regressions/, and runs the gguf_reader target. Exits non-zero on a crash, a panic, a
# leak, or an allocation over MALLOC_LIMIT_MB; the input that did it is left in
# fuzz/artifacts/gguf_reader/. After the fix, keep it in fuzz/regressions/ (the unit tests of
# src/gguf/reader.rs read that folder). The toolchain is stable: RUSTC_BOOTSTRAP=1 lets
# cargo-fuzz use the unstable sanitizer flags.
set -euo pipefail

seconds="${1:-60}"
# Inputs are at most MAX_LEN bytes, so no allocation should come near this (a count trusted
# before it is checked asks for far more).
MAX_LEN="${MAX_LEN:-65536}"
MALLOC_LIMIT_MB="${MALLOC_LIMIT_MB:-64}"

cd "$(dirname "$0")/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

corpus=fuzz/corpus/gguf_reader
mkdir -p "$corpus"
if command -v python3 >/dev/null; then
  python3 fuzz/seeds.py "$corpus"
else
  echo "fuzz.sh: no python3, fuzzing without seeds" >&2
fi

# Every input that ever crashed the target starts the run (src/gguf/reader.rs tests them too).
cp fuzz/regressions/* "$corpus"/

export RUSTC_BOOTSTRAP=1
cargo fuzz build --debug-assertions gguf_reader
cargo fuzz run --debug-assertions gguf_reader "$corpus" -- \
  -max_total_time="$seconds" \
  -max_len="$MAX_LEN" \
  -malloc_limit_mb="$MALLOC_LIMIT_MB" \
  -rss_limit_mb=2048 \
  -dict=fuzz/gguf.dict \
  -print_final_stats=1
echo "fuzz.sh: no crash in ${seconds}s"
