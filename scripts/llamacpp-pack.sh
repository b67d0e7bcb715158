#!/usr/bin/env bash
# On a machine with network: llama.cpp's source as the llama-cpp-python sdist vendors it,
# trimmed to what a CUDA build of llama-bench needs, packed into one file to carry to a GPU
# machine for scripts/bench-llamacpp.sh.
#
#   scripts/llamacpp-pack.sh [OUT.tar.xz]   (default: dist/llamacpp.tar.xz; LLAMA_CPP_PYTHON
#                                            picks the sdist version, default 0.3.36)
# Needs pip, cmake and scikit-build-core (the sdist's metadata step runs cmake).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-dist/llamacpp.tar.xz}"
VERSION="${LLAMA_CPP_PYTHON:-0.3.36}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --no-binary llama-cpp-python --no-build-isolation \
  "llama-cpp-python==$VERSION" -d "$tmp"
tar xzf "$tmp"/llama_cpp_python-"$VERSION".tar.gz -C "$tmp"
src="$tmp/llama_cpp_python-$VERSION/vendor"
mv "$src/llama.cpp" "$src/llamacpp"
# Docs, models, tests, examples and the web UI are not built (the UI is the server's: build
# with -DLLAMA_BUILD_SERVER=OFF); of the ggml backends only the CPU and CUDA ones are.
(cd "$src/llamacpp" && rm -rf docs models media tests examples tools/ui &&
  find ggml/src -maxdepth 1 -type d -name 'ggml-*' ! -name ggml-cpu ! -name ggml-cuda -exec rm -rf {} +)
mkdir -p "$(dirname "$OUT")"
tar cJf "$OUT" -C "$src" llamacpp
echo "$OUT: $(du -h "$OUT" | cut -f1) (llama.cpp of llama-cpp-python $VERSION)"
