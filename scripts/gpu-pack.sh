#!/usr/bin/env bash
# On a machine with the package registries and no GPU: everything a GPU session carries, in
# one folder (default .gpu, which git ignores: name it in the device call's `carry`), for
# scripts/gpu-session.sh there:
#   DIR/new/rocmforge-*.whl, DIR/new/gguf-*.whl  this checkout's wheel, and the gguf package
#   DIR/base/rocmforge-*.whl                     with BASE=REV: that commit's wheel (the A of
#                                                bench-ab.sh), built in a worktree of its own
#   DIR/hip-shim/                                scripts/hip-shim-build.sh's folder (needs the
#                                                ROCm headers: see .ci/run's packages)
#   DIR/llamacpp.tar.xz                          scripts/llamacpp-pack.sh's archive
#   DIR/cache/rocmforge/test-data/               llama.cpp's vocabulary files (the files'
#                                                tokenizers; XDG_CACHE_HOME=DIR/cache there)
# The shim and the wheels are rebuilt each run (incremental builds; this checkout's wheel is
# the shim's ordinary build, built once); the rest is kept once there. Prints the folder's size
# (a call carries at most 64 MiB with the working tree) and the environment the device calls
# take.
#
#   scripts/gpu-pack.sh [DIR]        e.g. BASE=90676b8 scripts/gpu-pack.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-.gpu}"
mkdir -p "$DIR/new"
DIR="$(realpath "$DIR")"
log=$(mktemp)
tree=""
site=""
cleanup() {
  rm -f "$log"
  [ -z "$site" ] || rm -rf "$site"
  if [ -n "$tree" ]; then git worktree remove --force "$tree/src" 2>/dev/null; rm -rf "$tree"; fi
}
trap cleanup EXIT
step() {  # what, command...: run it, show its last lines if it fails
  local what=$1; shift
  echo "== $what"
  "$@" >"$log" 2>&1 || { tail -20 "$log"; echo "gpu-pack: $what failed" >&2; exit 1; }
}

# The shim's folder holds the ordinary build too (its cuda/ wheel): that is the wheel.
step "HIP shim, the rocm build and the wheel of $(git rev-parse --short HEAD)" \
  scripts/hip-shim-build.sh "$DIR/hip-shim"
grep -E "exports|needs" "$log"
rm -f "$DIR"/new/rocmforge-*.whl
cp "$DIR"/hip-shim/cuda/rocmforge-*.whl "$DIR/new/"
ls "$DIR"/new/gguf-*.whl >/dev/null 2>&1 || python3 -m pip download -q --no-deps "gguf>=0.17" -d "$DIR/new"

if [ -n "${BASE:-}" ]; then
  tree=$(mktemp -d)
  git worktree add -q --detach "$tree/src" "$BASE"
  rm -rf "$DIR/base" && mkdir -p "$DIR/base"
  # a target folder of its own (BASE_TARGET keeps it between runs): a shared one can keep the
  # other commit's generated sources
  step "wheel of $BASE" env -C "$tree/src" CARGO_TARGET_DIR="${BASE_TARGET:-$tree/target}" \
    maturin build --release -q -o "$DIR/base"
fi

[ -f "$DIR/llamacpp.tar.xz" ] || step "llama.cpp source" scripts/llamacpp-pack.sh "$DIR/llamacpp.tar.xz"
# (tools/models.py imports rocmforge and gguf: the wheels just built, unpacked)
site=$(mktemp -d)
PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --no-deps --target "$site" "$DIR"/new/*.whl
for vocab in qwen2 llama-bpe; do
  step "vocabulary $vocab" env PYTHONPATH="$site" XDG_CACHE_HOME="$DIR/cache" \
    python3 tools/models.py fetch-vocab "$vocab"
done

echo "== $DIR: $(du -sh "$DIR" | cut -f1)"
ls "$DIR"/new/*.whl "$DIR"/base/*.whl "$DIR"/hip-shim/*/*.whl 2>/dev/null
name=$(basename "$DIR")
echo "on the device, from the repository root:"
echo "  export XDG_CACHE_HOME=\$PWD/$name/cache VOCAB_DIR=\$PWD/$name/cache/rocmforge/test-data \\"
echo "    NEW=\$(ls \$PWD/$name/new/rocmforge-*.whl) LLAMACPP=\$PWD/$name/llamacpp.tar.xz SHIM=\$PWD/$name/hip-shim"
[ -n "${BASE:-}" ] && echo "  export BASE=\$(ls \$PWD/$name/base/rocmforge-*.whl)"
exit 0
